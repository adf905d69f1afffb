//! The vocabulary of seccomp profiles: actions, architectures, operators, flags, and the
//! syscall names each architecture knows.
//!
//! Syscall tables come from the `syscalls` crate (generated from the Linux sources, per
//! architecture), indexed once into a name -> architecture-set map so a lookup is one hash.

use std::sync::OnceLock;

use rustc_hash::FxHashMap;

/// The nine `SCMP_ACT_*` actions runtimes accept (case-sensitive).
pub const ACTIONS: [&str; 9] = [
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
];

/// The seven `SCMP_CMP_*` argument operators.
pub const OPERATORS: [&str; 7] = [
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
];

/// Filter flags the OCI runtime spec defines.
pub const FLAGS: [&str; 4] = [
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
];

/// A syscall table we know, as a bit in [`ArchSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
enum Table {
    X86 = 1 << 0,
    X86_64 = 1 << 1,
    Arm = 1 << 2,
    Aarch64 = 1 << 3,
    Mips = 1 << 4,
    Mips64 = 1 << 5,
    Powerpc = 1 << 6,
    Powerpc64 = 1 << 7,
    S390x = 1 << 8,
    Riscv64 = 1 << 9,
    Loongarch64 = 1 << 10,
}

/// A set of syscall tables, as a bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArchSet(u16);

impl ArchSet {
    /// True when the two sets share a table.
    pub fn intersects(self, other: ArchSet) -> bool {
        self.0 & other.0 != 0
    }
    /// True when no table is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    fn with(self, t: Table) -> ArchSet {
        ArchSet(self.0 | t as u16)
    }
    /// The union of two sets.
    pub fn union(self, other: ArchSet) -> ArchSet {
        ArchSet(self.0 | other.0)
    }
}

/// What we know about one `SCMP_ARCH_*` name.
#[derive(Debug, Clone, Copy)]
pub struct ArchInfo {
    /// The `SCMP_ARCH_*` name.
    pub name: &'static str,
    /// The syscall table(s) its names resolve against; empty when we have none, in which
    /// case per-architecture checks are skipped for it.
    pub tables: ArchSet,
    /// runc has no mapping for it and refuses the profile.
    pub runc_unsupported: bool,
}

const fn arch(name: &'static str, tables: u16, runc_unsupported: bool) -> ArchInfo {
    ArchInfo {
        name,
        tables: ArchSet(tables),
        runc_unsupported,
    }
}

/// Every `SCMP_ARCH_*` name libseccomp knows (no `SCMP_ARCH_NATIVE`: runc and crun refuse it).
/// x32 and the MIPS n32 ABIs resolve against their 64-bit siblings' names, s390 against
/// s390x: the `syscalls` crate has no separate tables for them, and their name sets match.
pub const ARCHES: [ArchInfo; 23] = [
    arch("SCMP_ARCH_X86", Table::X86 as u16, false),
    arch("SCMP_ARCH_X86_64", Table::X86_64 as u16, false),
    arch("SCMP_ARCH_X32", Table::X86_64 as u16, false),
    arch("SCMP_ARCH_ARM", Table::Arm as u16, false),
    arch("SCMP_ARCH_AARCH64", Table::Aarch64 as u16, false),
    arch("SCMP_ARCH_MIPS", Table::Mips as u16, false),
    arch("SCMP_ARCH_MIPSEL", Table::Mips as u16, false),
    arch("SCMP_ARCH_MIPS64", Table::Mips64 as u16, false),
    arch("SCMP_ARCH_MIPSEL64", Table::Mips64 as u16, false),
    arch("SCMP_ARCH_MIPS64N32", Table::Mips64 as u16, false),
    arch("SCMP_ARCH_MIPSEL64N32", Table::Mips64 as u16, false),
    arch("SCMP_ARCH_PPC", Table::Powerpc as u16, false),
    arch("SCMP_ARCH_PPC64", Table::Powerpc64 as u16, false),
    arch("SCMP_ARCH_PPC64LE", Table::Powerpc64 as u16, false),
    arch("SCMP_ARCH_S390", Table::S390x as u16, false),
    arch("SCMP_ARCH_S390X", Table::S390x as u16, false),
    arch("SCMP_ARCH_RISCV64", Table::Riscv64 as u16, false),
    arch("SCMP_ARCH_LOONGARCH64", Table::Loongarch64 as u16, false),
    arch("SCMP_ARCH_PARISC", 0, true),
    arch("SCMP_ARCH_PARISC64", 0, true),
    arch("SCMP_ARCH_M68K", 0, true),
    arch("SCMP_ARCH_SH", 0, true),
    arch("SCMP_ARCH_SHEB", 0, true),
];

/// Look up an `SCMP_ARCH_*` name.
pub fn arch_info(name: &str) -> Option<&'static ArchInfo> {
    ARCHES.iter().find(|a| a.name == name)
}

/// Names of 32-bit ARM calls that the kernel's syscall table (and so the `syscalls` crate)
/// lacks. Docker's default profile names several of them.
///
/// - `breakpoint`, `cacheflush`, `usr26`, `usr32`, `set_tls`, `get_tls`: the ARM-private
///   calls `__ARM_NR_BASE + 1..=6` of the kernel's `arch/arm/include/uapi/asm/unistd.h`, which
///   libseccomp's `src/syscalls.csv` names (numbers `0xf0001..=0xf0006`);
/// - `sync_file_range2`: the alias that header defines for `arm_sync_file_range` (341).
///   libseccomp knows the name from PowerPC's table, so this only keeps it from being
///   reported as absent on ARM.
const ARM_EXTRA: [&str; 7] = [
    "breakpoint",
    "cacheflush",
    "usr26",
    "usr32",
    "set_tls",
    "get_tls",
    "sync_file_range2",
];

/// A name as the `syscalls` crate spells it, without the `r#` of a raw identifier: x86's
/// `break` is a Rust keyword, so the crate names it `r#break`.
fn unraw(name: &'static str) -> &'static str {
    name.strip_prefix("r#").unwrap_or(name)
}

/// A syscall name known to at least one architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syscall {
    /// The name, as the tables spell it (a `'static` copy: keep it without allocating).
    pub name: &'static str,
    /// The tables that know it.
    pub arches: ArchSet,
    /// A dense number, `0..syscall_count()`, for per-syscall arrays instead of hash maps.
    pub id: u16,
}

fn index() -> &'static FxHashMap<&'static str, Syscall> {
    static INDEX: OnceLock<FxHashMap<&'static str, Syscall>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut map: FxHashMap<&'static str, Syscall> = FxHashMap::default();
        map.reserve(1024);
        let mut add = |name: &'static str, t: Table| {
            let id = u16::try_from(map.len()).unwrap_or(u16::MAX);
            let e = map.entry(name).or_insert(Syscall {
                name,
                arches: ArchSet::default(),
                id,
            });
            e.arches = e.arches.with(t);
        };
        macro_rules! table {
            ($module:ident, $t:expr) => {
                for s in syscalls::$module::Sysno::iter() {
                    add(unraw(s.name()), $t);
                }
            };
        }
        table!(x86, Table::X86);
        table!(x86_64, Table::X86_64);
        table!(arm, Table::Arm);
        table!(aarch64, Table::Aarch64);
        table!(mips, Table::Mips);
        table!(mips64, Table::Mips64);
        table!(powerpc, Table::Powerpc);
        table!(powerpc64, Table::Powerpc64);
        table!(s390x, Table::S390x);
        table!(riscv64, Table::Riscv64);
        table!(loongarch64, Table::Loongarch64);
        for name in ARM_EXTRA {
            add(name, Table::Arm);
        }
        map
    })
}

/// The tables that know a syscall name, or `None` when no architecture knows it.
pub fn syscall_arches(name: &str) -> Option<ArchSet> {
    index().get(name).map(|s| s.arches)
}

/// Everything the tables know about a syscall name.
pub fn lookup_syscall(name: &str) -> Option<Syscall> {
    index().get(name).copied()
}

/// How many distinct syscall names the tables know (the bound of [`Syscall::id`]).
pub fn syscall_count() -> usize {
    index().len()
}

/// The known syscall name closest to `name` (edit distance at most 2), for "did you mean".
pub fn closest_syscall(name: &str) -> Option<&'static str> {
    index()
        .keys()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_common_and_arch_specific_names() {
        assert!(syscall_arches("read").is_some());
        assert!(syscall_arches("mseal").is_some());
        assert!(syscall_arches("set_tls").is_some());
        assert!(syscall_arches("not_a_syscall").is_none());
        assert!(syscall_arches("r#break").is_none());
        let arm = arch_info("SCMP_ARCH_ARM").unwrap().tables;
        let x86_64 = arch_info("SCMP_ARCH_X86_64").unwrap().tables;
        assert!(syscall_arches("_llseek").unwrap().intersects(arm));
        assert!(!syscall_arches("_llseek").unwrap().intersects(x86_64));
        assert!(syscall_arches("arch_prctl").unwrap().intersects(x86_64));
        let x86 = arch_info("SCMP_ARCH_X86").unwrap().tables;
        assert!(syscall_arches("break").unwrap().intersects(x86));
        assert!(syscall_arches("get_tls").unwrap().intersects(arm));
    }

    #[test]
    fn suggests_near_names() {
        assert_eq!(closest_syscall("opnat"), Some("openat"));
        assert_eq!(closest_syscall("completely_unrelated_thing"), None);
    }

    #[test]
    fn no_native_arch() {
        assert!(arch_info("SCMP_ARCH_NATIVE").is_none());
        assert!(arch_info("x86_64").is_none());
        assert!(arch_info("SCMP_ARCH_SH").unwrap().runc_unsupported);
    }
}

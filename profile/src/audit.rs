//! Kernel seccomp audit records, as a node's logs hold them: what a profile logged or
//! blocked, decoded by the record's own architecture.
//!
//! Two forms carry the same fields:
//! - auditd's log (`/var/log/audit/audit.log`):
//!   `type=SECCOMP msg=audit(1700000000.123:456): ... pid=1234 comm="curl" exe="/usr/bin/curl" sig=0 arch=c000003e syscall=41 compat=0 ip=0x7f00 code=0x7ffc0000`
//! - the kernel's own line, through syslog or the journal (`/var/log/syslog`,
//!   `/var/log/messages`): `... kernel: [12.345678] audit: type=1326 audit(1700000000.123:456): ...`
//!
//! The syscall is named by the record's `arch=` (an `AUDIT_ARCH_*` value), not by the
//! machine that reads the log: a 32-bit process on x86_64 logs `arch=40000003` with i386
//! numbers, an x32 process `arch=c000003e` with the x32 bit set in the number. Names come
//! from the same tables the validator uses ([`crate::tables`], the `syscalls` crate). The
//! action is decoded from `code=` (`SECCOMP_RET_*`, with the errno of an ERRNO).

/// The architecture of a record, by its `AUDIT_ARCH_*` value (and, for x32, the number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AuditArch {
    /// `SCMP_ARCH_X86_64`.
    X86_64,
    /// `SCMP_ARCH_X86` (i386, also 32-bit processes on x86_64).
    X86,
    /// `SCMP_ARCH_X32` (x86_64's ILP32 ABI: x86_64's `arch=` with bit 30 in the number).
    X32,
    /// `SCMP_ARCH_AARCH64`.
    Aarch64,
    /// `SCMP_ARCH_ARM`.
    Arm,
    /// `SCMP_ARCH_PPC64LE`.
    Ppc64le,
    /// `SCMP_ARCH_PPC64`.
    Ppc64,
    /// `SCMP_ARCH_S390X`.
    S390x,
    /// `SCMP_ARCH_RISCV64`.
    Riscv64,
}

/// `__X32_SYSCALL_BIT`.
const X32_BIT: u64 = 0x4000_0000;

impl AuditArch {
    /// The architecture of `arch=` (hex, without `0x`) and the raw syscall number.
    fn from_record(arch: u32, nr: u64) -> Option<AuditArch> {
        Some(match arch {
            0xc000_003e if nr & X32_BIT != 0 => AuditArch::X32,
            0xc000_003e => AuditArch::X86_64,
            0x4000_0003 => AuditArch::X86,
            0xc000_00b7 => AuditArch::Aarch64,
            0x4000_0028 => AuditArch::Arm,
            0xc000_0015 => AuditArch::Ppc64le,
            0x8000_0015 => AuditArch::Ppc64,
            0x8000_0016 => AuditArch::S390x,
            0xc000_00f3 => AuditArch::Riscv64,
            _ => return None,
        })
    }

    /// The `SCMP_ARCH_*` name a profile uses for it.
    pub fn scmp_name(self) -> &'static str {
        match self {
            AuditArch::X86_64 => "SCMP_ARCH_X86_64",
            AuditArch::X86 => "SCMP_ARCH_X86",
            AuditArch::X32 => "SCMP_ARCH_X32",
            AuditArch::Aarch64 => "SCMP_ARCH_AARCH64",
            AuditArch::Arm => "SCMP_ARCH_ARM",
            AuditArch::Ppc64le => "SCMP_ARCH_PPC64LE",
            AuditArch::Ppc64 => "SCMP_ARCH_PPC64",
            AuditArch::S390x => "SCMP_ARCH_S390X",
            AuditArch::Riscv64 => "SCMP_ARCH_RISCV64",
        }
    }

    /// The name of syscall `nr` on this architecture (`nr` as the record has it: with the
    /// x32 bit for x32).
    pub fn syscall_name(self, nr: u64) -> Option<&'static str> {
        let n = usize::try_from(nr).ok()?;
        let name = match self {
            AuditArch::X86_64 => syscalls::x86_64::Sysno::new(n)?.name(),
            AuditArch::X86 => syscalls::x86::Sysno::new(n)?.name(),
            AuditArch::X32 => return x32_name(nr & !X32_BIT),
            AuditArch::Aarch64 => syscalls::aarch64::Sysno::new(n)?.name(),
            AuditArch::Arm => syscalls::arm::Sysno::new(n)?.name(),
            AuditArch::Ppc64le | AuditArch::Ppc64 => syscalls::powerpc64::Sysno::new(n)?.name(),
            AuditArch::S390x => syscalls::s390x::Sysno::new(n)?.name(),
            AuditArch::Riscv64 => syscalls::riscv64::Sysno::new(n)?.name(),
        };
        let name = name.strip_prefix("r#").unwrap_or(name);
        Some(match (self, name) {
            // The generic table's 79 is `newfstatat` to the kernel and libseccomp (what
            // profiles name), `fstatat` to the `syscalls` crate.
            (AuditArch::Aarch64 | AuditArch::Riscv64, "fstatat") => "newfstatat",
            _ => name,
        })
    }
}

/// x32's calls of their own, numbered from 512 (the kernel's `syscall_64.tbl`, ABI `x32`);
/// below 512 x32 shares x86_64's numbers.
const X32_OWN: [&str; 36] = [
    "rt_sigaction",
    "rt_sigreturn",
    "ioctl",
    "readv",
    "writev",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "execve",
    "ptrace",
    "rt_sigpending",
    "rt_sigtimedwait",
    "rt_sigqueueinfo",
    "sigaltstack",
    "timer_create",
    "mq_notify",
    "kexec_load",
    "waitid",
    "set_robust_list",
    "get_robust_list",
    "vmsplice",
    "move_pages",
    "preadv",
    "pwritev",
    "rt_tgsigqueueinfo",
    "recvmmsg",
    "sendmmsg",
    "process_vm_readv",
    "process_vm_writev",
    "setsockopt",
    "getsockopt",
    "io_setup",
    "io_submit",
    "execveat",
    "preadv2",
    "pwritev2",
];

fn x32_name(nr: u64) -> Option<&'static str> {
    match nr {
        512..=547 => X32_OWN.get(usize::try_from(nr - 512).ok()?).copied(),
        _ => {
            let name = syscalls::x86_64::Sysno::new(usize::try_from(nr).ok()?)?.name();
            Some(name.strip_prefix("r#").unwrap_or(name))
        }
    }
}

/// What the filter did (`code=`, `SECCOMP_RET_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AuditAction {
    /// `SCMP_ACT_KILL_PROCESS`.
    KillProcess,
    /// `SCMP_ACT_KILL_THREAD` (`SCMP_ACT_KILL`).
    KillThread,
    /// `SCMP_ACT_TRAP`.
    Trap,
    /// `SCMP_ACT_ERRNO` with its errno.
    Errno(u16),
    /// `SCMP_ACT_NOTIFY`.
    Notify,
    /// `SCMP_ACT_TRACE` with its message.
    Trace(u16),
    /// `SCMP_ACT_LOG`: allowed, and logged.
    Log,
    /// `SCMP_ACT_ALLOW` (logged only when the kernel is told to log allowed calls).
    Allow,
}

impl AuditAction {
    /// From `code=`.
    pub fn from_code(code: u32) -> Option<AuditAction> {
        let data = (code & 0xffff) as u16;
        Some(match code & 0xffff_0000 {
            0x8000_0000 => AuditAction::KillProcess,
            0x0000_0000 => AuditAction::KillThread,
            0x0003_0000 => AuditAction::Trap,
            0x0005_0000 => AuditAction::Errno(data),
            0x7fc0_0000 => AuditAction::Notify,
            0x7ff0_0000 => AuditAction::Trace(data),
            0x7ffc_0000 => AuditAction::Log,
            0x7fff_0000 => AuditAction::Allow,
            _ => return None,
        })
    }

    /// The `SCMP_ACT_*` name.
    pub fn scmp_name(self) -> &'static str {
        match self {
            AuditAction::KillProcess => "SCMP_ACT_KILL_PROCESS",
            AuditAction::KillThread => "SCMP_ACT_KILL_THREAD",
            AuditAction::Trap => "SCMP_ACT_TRAP",
            AuditAction::Errno(_) => "SCMP_ACT_ERRNO",
            AuditAction::Notify => "SCMP_ACT_NOTIFY",
            AuditAction::Trace(_) => "SCMP_ACT_TRACE",
            AuditAction::Log => "SCMP_ACT_LOG",
            AuditAction::Allow => "SCMP_ACT_ALLOW",
        }
    }

    /// Whether the call went ahead (LOG and ALLOW).
    pub fn allowed(self) -> bool {
        matches!(self, AuditAction::Log | AuditAction::Allow)
    }
}

/// One seccomp record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompRecord {
    /// `audit(SECONDS.MILLIS:SERIAL)`: milliseconds since the epoch.
    pub time_ms: u64,
    /// The record's serial number (unique per boot with its time).
    pub serial: u64,
    /// The process.
    pub pid: u32,
    /// Its command name (hex-encoded values decoded).
    pub comm: String,
    /// Its executable.
    pub exe: String,
    /// The raw `arch=` value.
    pub arch_code: u32,
    /// The architecture, when known.
    pub arch: Option<AuditArch>,
    /// The raw syscall number.
    pub syscall_nr: u64,
    /// The syscall's name on `arch`, when known.
    pub syscall: Option<&'static str>,
    /// The raw `code=`.
    pub code: u32,
    /// The action, when known.
    pub action: Option<AuditAction>,
}

/// The value of `key=` in `fields` (space-separated `k=v`, values quoted or bare).
fn field<'a>(fields: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = fields;
    while let Some(at) = rest.find(key) {
        let before_ok = at == 0 || rest.as_bytes()[at - 1] == b' ';
        let after = &rest[at + key.len()..];
        if before_ok && let Some(value) = after.strip_prefix('=') {
            if let Some(quoted) = value.strip_prefix('"') {
                return quoted.split('"').next();
            }
            return value.split(' ').next();
        }
        rest = after;
    }
    None
}

/// A string field: quoted as is, or (audit's encoding of untrusted strings with spaces or
/// quotes) hex without quotes.
fn text_field(fields: &str, key: &str) -> Option<String> {
    let at = fields
        .find(&format!(" {key}="))
        .map(|i| i + 1)
        .or_else(|| fields.starts_with(&format!("{key}=")).then_some(0))?;
    let value = &fields[at + key.len() + 1..];
    if let Some(quoted) = value.strip_prefix('"') {
        return quoted.split('"').next().map(str::to_owned);
    }
    let raw = value.split(' ').next()?;
    if raw == "(null)" {
        return Some(String::new());
    }
    let bytes = hex::decode(raw).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

fn hex_u32(s: &str) -> Option<u32> {
    u32::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// Parse one log line; `None` when it is not a seccomp record (or is malformed).
pub fn parse_line(line: &str) -> Option<SeccompRecord> {
    // auditd: "type=SECCOMP msg=audit(...)"; the kernel: "type=1326 audit(...)".
    let at = line
        .find("type=SECCOMP msg=audit(")
        .map(|i| i + "type=SECCOMP msg=audit(".len())
        .or_else(|| {
            line.find("type=1326 audit(")
                .map(|i| i + "type=1326 audit(".len())
        })?;
    let rest = &line[at..];
    let (stamp, fields) = rest.split_once("):")?;
    let (time, serial) = stamp.split_once(':')?;
    let (secs, millis) = time.split_once('.').unwrap_or((time, "0"));
    let time_ms = secs
        .parse::<u64>()
        .ok()?
        .checked_mul(1000)?
        .checked_add(millis.get(..3.min(millis.len()))?.parse::<u64>().ok()?)?;
    let serial = serial.parse().ok()?;
    let fields = fields.trim_start();
    let arch_code = hex_u32(field(fields, "arch")?)?;
    let syscall_nr: u64 = field(fields, "syscall")?.parse().ok()?;
    let code = hex_u32(field(fields, "code")?)?;
    let arch = AuditArch::from_record(arch_code, syscall_nr);
    Some(SeccompRecord {
        time_ms,
        serial,
        pid: field(fields, "pid")?.parse().ok()?,
        comm: text_field(fields, "comm").unwrap_or_default(),
        exe: text_field(fields, "exe").unwrap_or_default(),
        arch_code,
        arch,
        syscall_nr,
        syscall: arch.and_then(|a| a.syscall_name(syscall_nr)),
        code,
        action: AuditAction::from_code(code),
    })
}

//! Every syscall name the installed libseccomp resolves is one the validator accepts.
//!
//! runc and crun resolve a profile's names with libseccomp, so a name it knows is a name a
//! working profile may use, and calling it unknown rejects that profile. The resolver is
//! `scmp_sys_resolver` (Debian's `seccomp` package); it turns one number into a name per run,
//! so the test enumerates what the library knows by resolving windows of numbers back to
//! names (see [`windows`]), then validates a small profile naming each name found. It skips
//! loudly when the resolver is not installed.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::collections::BTreeSet;
use std::io::Write;
use std::ops::RangeInclusive;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use seccomp_profile::tables::ARCHES;
use seccomp_profile::{Options, Severity, validate};

const RESOLVER: &str = "scmp_sys_resolver";

/// The architecture whose pseudo-syscall numbers are resolved (see [`windows`]).
const PSEUDO_ARCH: &str = "x86_64";

/// A found name this close to the end a window grows towards means the library may number
/// calls beyond it.
const MARGIN: i64 = 8;

/// Where an architecture's real numbers start: the kernel ABI offsets libseccomp keeps.
fn base(arch: &str) -> i64 {
    match arch {
        "x32" => 0x4000_0000, // __X32_SYSCALL_BIT
        "mips" | "mipsel" => 4000,
        "mips64" | "mipsel64" => 5000,
        "mips64n32" | "mipsel64n32" => 6000,
        _ => 0,
    }
}

/// The numbers resolved on `arch`, as windows; a window whose numbers are negative grows
/// downwards.
///
/// - Real numbers above the base: Linux 6.17's tables end at 469, x32's own calls are
///   512..=547.
/// - On 32-bit ARM, the private calls from `__ARM_NR_BASE` (`0xf0000`).
/// - On [`PSEUDO_ARCH`] only, libseccomp's pseudo-syscall numbers: the socketcall and ipc
///   multiplexed calls (`-101..`, `-201..`) and `__PNR_*` (`-10001..`). A name libseccomp
///   knows resolves on every architecture, to the call's number there or, where the call
///   does not exist, to its pseudo number, which is the same everywhere; so one
///   architecture's windows name nearly every call. Not all: a few pseudo numbers belong to
///   two names (2.5.4 gives `switch_endian` and `sys_debug_setcontext` both -10191) and
///   resolve back to one, so the other architectures' real windows are scanned too.
fn windows(arch: &str) -> Vec<RangeInclusive<i64>> {
    let base = base(arch);
    let top = if arch == "x32" { 580 } else { 500 };
    let mut windows = vec![base..=base + top];
    if arch == "arm" {
        windows.push(0xf0000..=0xf001f);
    }
    if arch == PSEUDO_ARCH {
        windows.extend([-131..=-100, -231..=-200, -10320..=-10000]);
    }
    windows
}

/// `scmp_sys_resolver -a arch -- what`: its answer, `None` when it refuses (an architecture
/// this libseccomp does not know), or why it cannot be started.
fn resolve(arch: &str, what: &str) -> std::io::Result<Option<String>> {
    let out = Command::new(RESOLVER)
        .args(["-a", arch, "--", what])
        .output()?;
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(out.status.success().then_some(answer))
}

/// A number that resolved.
#[derive(Debug)]
struct Found {
    arch: String,
    number: i64,
    name: String,
}

/// Resolve every `(arch, number)`, on a few threads: each is a process start (about a
/// millisecond), and there are thousands.
fn resolve_all(jobs: &[(&str, i64)]) -> Vec<Found> {
    let threads = std::thread::available_parallelism().map_or(2, |n| (n.get() * 2).min(8));
    let next = AtomicUsize::new(0);
    let found = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while let Some(&(arch, number)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let name = resolve(arch, &number.to_string())
                        .unwrap()
                        .unwrap_or_else(|| panic!("{RESOLVER} -a {arch} -- {number} failed"));
                    if name != "UNKNOWN" {
                        let arch = arch.to_owned();
                        found.lock().unwrap().push(Found { arch, number, name });
                    }
                }
            });
        }
    });
    found.into_inner().unwrap()
}

/// The validator's architectures that this libseccomp knows, as `-a` spells them; `None`
/// when the resolver cannot be run.
fn known_arches() -> Option<Vec<String>> {
    let mut arches = Vec::new();
    for info in &ARCHES {
        let arch = info.name["SCMP_ARCH_".len()..].to_ascii_lowercase();
        match resolve(&arch, "read") {
            Err(e) => {
                // Straight to stderr: the test harness swallows `eprintln!` of a passing test.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: cannot run {RESOLVER} ({e}); install Debian's `seccomp` package \
                     (apt-get install -y seccomp) to check the syscall tables against libseccomp"
                );
                return None;
            }
            Ok(None) => eprintln!("note: this libseccomp does not know {}", info.name),
            Ok(Some(read)) => {
                let number: i64 = read.parse().unwrap();
                assert!(
                    windows(&arch)[0].contains(&number),
                    "{arch}: read is {number}, outside {:?}: is its base wrong?",
                    windows(&arch)[0]
                );
                arches.push(arch);
            }
        }
    }
    Some(arches)
}

#[test]
fn every_name_libseccomp_resolves_is_accepted() {
    let Some(arches) = known_arches() else {
        return;
    };
    assert!(arches.len() >= 15, "libseccomp knows only {arches:?}");
    let jobs: Vec<(&str, i64)> = arches
        .iter()
        .flat_map(|arch| {
            windows(arch)
                .into_iter()
                .flatten()
                .map(move |n| (arch.as_str(), n))
        })
        .collect();
    let found = resolve_all(&jobs);

    for arch in &arches {
        for window in windows(arch) {
            let near_end = found.iter().find(|f| {
                f.arch == *arch
                    && window.contains(&f.number)
                    && if *window.end() < 0 {
                        f.number < window.start() + MARGIN
                    } else {
                        f.number > window.end() - MARGIN
                    }
            });
            assert!(
                near_end.is_none(),
                "{near_end:?} is near the end of {window:?}: widen it"
            );
        }
    }
    let names: BTreeSet<&str> = found.iter().map(|f| f.name.as_str()).collect();
    let on_pseudo_arch: BTreeSet<&str> = found
        .iter()
        .filter(|f| f.arch == PSEUDO_ARCH)
        .map(|f| f.name.as_str())
        .collect();
    // What the pseudo windows missed must be a number they cover that resolves back to
    // another name; anything else means a window is too narrow.
    for name in names.difference(&on_pseudo_arch) {
        let number: i64 = resolve(PSEUDO_ARCH, name)
            .unwrap()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            windows(PSEUDO_ARCH).iter().any(|w| w.contains(&number)),
            "{PSEUDO_ARCH} resolves {name:?} to {number}, outside every window: widen them"
        );
    }
    assert!(names.len() > 400, "only {} names found", names.len());

    let refused: Vec<String> = names
        .iter()
        .filter_map(|name| {
            let profile = format!(
                r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{{"names":["{name}"],"action":"SCMP_ACT_ALLOW"}}]}}"#
            );
            let report = validate(profile.as_bytes(), &Options::default());
            let errors: Vec<String> = report
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .map(|d| d.to_string())
                .collect();
            (!errors.is_empty()).then(|| format!("{name}: {}", errors.join("; ")))
        })
        .collect();
    assert!(
        refused.is_empty(),
        "the validator refuses names libseccomp resolves:\n{}",
        refused.join("\n")
    );
    eprintln!(
        "checked {} names libseccomp resolves ({} of {} numbers on {})",
        names.len(),
        found.len(),
        jobs.len(),
        arches.join(" ")
    );
}

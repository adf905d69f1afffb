//! Validation speed on real profiles: Docker's default profile (target: under 100 µs) and
//! the seed's small profile, with a plain `serde_json::Value` parse of the same file as a
//! yardstick for the machine's speed. Reads them from the shared fixtures (`SECCOMP_FIXTURES` or
//! `../shared/fixtures`); skips with a message when they are absent.

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use seccomp_profile::{Options, validate};

fn fixture(rel: &str) -> Option<Vec<u8>> {
    let dir = std::env::var_os("SECCOMP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    match std::fs::read(dir.join(rel)) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("SKIPPED: {rel} not readable under {} ({e})", dir.display());
            None
        }
    }
}

fn bench(c: &mut Criterion) {
    let options = Options::default();
    for (name, rel) in [
        (
            "validate/docker-default",
            "profiles/accept/valid-docker-default.json",
        ),
        ("validate/seed-myprofile", "seed/myprofile.json"),
    ] {
        let Some(bytes) = fixture(rel) else { continue };
        // Warm the syscall index outside the measurement, as a long-running server would.
        assert!(validate(&bytes, &options).is_valid());
        c.bench_function(name, |b| {
            b.iter(|| validate(std::hint::black_box(&bytes), &options))
        });
    }
    // A yardstick measured in the same run: how long merely parsing Docker's default profile
    // into a serde_json::Value takes on this machine (virtual machines here vary by ~30%).
    if let Some(bytes) = fixture("profiles/accept/valid-docker-default.json") {
        c.bench_function("reference/serde_json-value/docker-default", |b| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(std::hint::black_box(&bytes)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

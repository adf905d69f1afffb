//! Secure by default, as the binary runs: on an address other than loopback, without TLS and
//! authentication, the registry refuses to start and says which flags fix it; the check comes
//! before anything is opened, so no data directory is created.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::process::Command;

#[test]
fn a_non_loopback_address_without_tls_and_authentication_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Port 0 on every address: bound for an instant, never served, nothing is sent.
    let out = Command::new(env!("CARGO_BIN_EXE_seccomp-registry"))
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&data)
        .env_remove("SECCOMP_INSECURE")
        .env_remove("SECCOMP_TLS_CERT")
        .env_remove("SECCOMP_AUTH_TOKENS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("without TLS and authentication"),
        "{stderr}"
    );
    assert!(stderr.contains("--insecure"), "{stderr}");
    assert!(stderr.contains("--tls-cert"), "{stderr}");
    assert!(!data.exists(), "nothing was opened");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("listening on"),
        "nothing was bound: {stdout}"
    );
}

//! `seccompctl` against a registry with TLS and tokens (certificates from `seccompctl certs`):
//! the right CA and token work; a plaintext URL, another CA, no token and a wrong token each
//! fail with an error that says what to change.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::path::Path;

use assert_cmd::Command;
use seccomp_server::security::SecurityArgs;
use tokio::sync::oneshot;

fn ctl(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("seccompctl").unwrap();
    cmd.current_dir(dir)
        .env_remove("SECCOMP_OUTPUT")
        .env_remove("SECCOMP_CA")
        .env_remove("SECCOMP_TOKEN")
        .env_remove("SECCOMP_TOKEN_FILE");
    cmd
}

fn run(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), text)
}

#[test]
fn the_secure_path_works_and_every_mistake_says_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = run(ctl(dir.path()).args(["certs", "--dir", "pki", "--node", "n1"]));
    assert_eq!(code, 0, "{out}");
    for file in [
        "ca.crt",
        "server.crt",
        "server.key",
        "node-n1.crt",
        "admin.token",
        "auth.yaml",
    ] {
        assert!(dir.path().join("pki").join(file).is_file(), "{file}");
    }
    let (code, _) = run(ctl(dir.path()).args(["certs", "--dir", "other"]));
    assert_eq!(code, 0);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let pki = dir.path().join("pki");
    let mut config = seccomp_registry::Config::new(dir.path().join("data"));
    config.security = SecurityArgs {
        tls_cert: Some(pki.join("server.crt")),
        tls_key: Some(pki.join("server.key")),
        auth_tokens: Some(pki.join("auth.yaml")),
        ..SecurityArgs::default()
    }
    .security()
    .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = runtime.spawn(seccomp_registry::run(config, listener, async {
        let _ = stopped.await;
    }));
    let https = format!("https://127.0.0.1:{port}");
    let http = format!("http://127.0.0.1:{port}");

    let list = |url: &str, extra: &[&str]| {
        let mut cmd = ctl(dir.path());
        cmd.args(["--registry", url])
            .args(extra)
            .args(["profile", "list"]);
        run(&mut cmd)
    };
    let (code, out) = list(
        &https,
        &["--ca", "pki/ca.crt", "--token-file", "pki/admin.token"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("NAME"), "{out}");

    for (url, extra, expected_code, says) in [
        (&http, &[][..], 2, "an https:// URL and --ca FILE"),
        (
            &https,
            &[][..],
            2,
            "needs the CA that signed the server's certificate (--ca FILE)",
        ),
        (
            &https,
            &["--ca", "other/ca.crt", "--token-file", "pki/admin.token"][..],
            2,
            "is --ca the CA that signed",
        ),
        (
            &https,
            &["--ca", "pki/ca.crt"][..],
            1,
            "UNAUTHENTICATED: no credentials",
        ),
        (
            &https,
            &["--ca", "pki/ca.crt", "--token", "not-the-admin-token-0123"][..],
            1,
            "the bearer token is not valid",
        ),
        (
            &https,
            &["--ca", "pki/ca.crt", "--token-file", "pki/missing.token"][..],
            2,
            "cannot read the token file",
        ),
    ] {
        let (code, out) = list(url, extra);
        assert_eq!(code, expected_code, "{url} {extra:?}: {out}");
        assert!(out.contains(says), "{url} {extra:?}: {out}");
        assert!(
            !out.contains("not-the-admin-token-0123"),
            "the token was printed: {out}"
        );
    }
    let _ = stop.send(());
    runtime
        .block_on(async { tokio::time::timeout(std::time::Duration::from_secs(30), task).await })
        .unwrap()
        .unwrap()
        .unwrap();
}

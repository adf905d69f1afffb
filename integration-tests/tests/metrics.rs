#![allow(clippy::unwrap_used)]
//! `--metrics-listen` on the three real binaries: each serves `/healthz`, `/readyz` (ready
//! once it serves; the agent once its stream is up) and `/metrics`, and the numbers move
//! while a profile is published and rolled out.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use integration_tests::{Stack, Tuning, poll};

const DEADLINE: Duration = Duration::from_secs(60);

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `GET path` on `addr`: the status code and the body, or `None` when nothing answers.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((code, body))
}

/// The value of the sample `series` (name and labels, exactly as exposed), 0 when absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn scrape(addr: SocketAddr) -> String {
    let (code, body) = get(addr, "/metrics").unwrap();
    assert_eq!(code, 200, "{body}");
    body
}

#[test]
fn every_binary_serves_health_and_metrics_that_move_with_a_rollout() {
    let (registry, distributor, agent) = (free_addr(), free_addr(), free_addr());
    let flag = |addr: SocketAddr| vec!["--metrics-listen".to_owned(), addr.to_string()];
    let stack = Stack::start_tuned(
        &[("node-1", &["os=linux"])],
        Tuning {
            registry_args: flag(registry),
            distributor_args: flag(distributor),
            agent_args: flag(agent),
            ..Tuning::default()
        },
    );
    for (name, addr) in [
        ("registry", registry),
        ("distributor", distributor),
        ("agent", agent),
    ] {
        poll(&format!("the {name} to be ready"), DEADLINE, || {
            (get(addr, "/readyz")?.0 == 200).then_some(())
        });
        assert_eq!(get(addr, "/healthz").unwrap().0, 200, "{name}");
    }
    let before_d = scrape(distributor);
    let before_a = scrape(agent);
    let sent = "seccomp_distributor_desired_sets_sent_total";
    let applied = r#"seccomp_agent_applies_total{result="applied"}"#;

    let file = stack.dir.path().join("web.json");
    std::fs::write(&file, b"{\"defaultAction\":\"SCMP_ACT_ERRNO\"}\n").unwrap();
    stack.ctl_ok(&["profile", "publish", "web", file.to_str().unwrap()]);
    stack.ctl_ok(&[
        "rollout",
        "create",
        "web",
        "--selector",
        "os=linux",
        "--waves",
        "100%",
        "--wait",
    ]);

    let r = scrape(registry);
    assert_eq!(
        sample(&r, r#"seccomp_registry_publishes_total{result="created"}"#),
        1.0,
        "{r}"
    );
    assert_eq!(sample(&r, "seccomp_registry_profiles"), 1.0, "{r}");
    assert_eq!(sample(&r, "seccomp_registry_versions"), 1.0, "{r}");
    assert!(
        sample(&r, "seccomp_registry_validation_duration_seconds_count") >= 1.0,
        "{r}"
    );
    assert!(
        sample(
            &r,
            r#"grpc_server_requests_total{method="/seccomp.registry.v1.Registry/Publish",code="0"}"#
        ) >= 1.0,
        "{r}"
    );

    let d = poll(
        "the distributor's metrics to show the completed rollout",
        DEADLINE,
        || {
            let d = scrape(distributor);
            (sample(&d, r#"seccomp_distributor_rollouts{state="Completed"}"#) == 1.0).then_some(d)
        },
    );
    assert!(sample(&d, sent) > sample(&before_d, sent), "{d}");
    assert_eq!(
        sample(&d, "seccomp_distributor_agents_connected"),
        1.0,
        "{d}"
    );
    assert_eq!(
        sample(&d, r#"seccomp_distributor_nodes{state="Applied"}"#),
        1.0,
        "{d}"
    );
    assert!(
        sample(&d, "seccomp_distributor_node_confirmation_seconds_count") >= 1.0,
        "{d}"
    );
    assert!(
        sample(
            &d,
            r#"grpc_server_requests_total{method="/seccomp.distributor.v1.Distributor/CreateRollout",code="0"}"#
        ) >= 1.0,
        "{d}"
    );

    let a = scrape(agent);
    assert!(sample(&a, applied) > sample(&before_a, applied), "{a}");
    assert!(
        sample(&a, "seccomp_agent_files_written_total") >= 1.0,
        "{a}"
    );
    assert!(sample(&a, "seccomp_agent_files_managed") >= 1.0, "{a}");
    assert_eq!(sample(&a, "seccomp_agent_connected"), 1.0, "{a}");
    assert!(
        sample(&a, "seccomp_agent_last_sync_timestamp_seconds") > 1.7e9,
        "{a}"
    );
}

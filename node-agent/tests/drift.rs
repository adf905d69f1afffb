#![allow(clippy::unwrap_used)]
//! Drift: files changed behind the agent's back are found by a scan, repaired by re-applying
//! the last desired set (also after a restart), and signalled by the inotify watcher.

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::time::Duration;

use common::{Node, ROOT, file, profile, profile_text};
use seccomp_node_agent::watch::{ChangeWatcher, DriftTrigger, Trigger};
use seccomp_node_agent::{DriftKind, ErrorCode, ObservedKind};

const WEB: &str = r#"{"defaultAction":"SCMP_ACT_ERRNO"}"#;

#[test]
fn a_manual_edit_and_chmod_are_detected_and_repaired() {
    let node = Node::new();
    let mut applier = node.applier();
    let desired = vec![
        profile("web.json", WEB),
        profile("other.json", &profile_text("other")),
    ];
    applier.apply("r1", &desired).unwrap();
    assert!(applier.check_drift().is_empty());
    assert!(
        applier.repair().is_none(),
        "nothing drifted, nothing to report"
    );

    let on_disk = node.path(&desired[0].path);
    std::fs::write(&on_disk, r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
    std::fs::set_permissions(&on_disk, std::fs::Permissions::from_mode(0o666)).unwrap();

    let drift = applier.check_drift();
    assert_eq!(drift.len(), 1, "{drift:#?}");
    assert_eq!(drift[0].observed.path, desired[0].path);
    assert_eq!(drift[0].kinds, vec![DriftKind::Content, DriftKind::Mode]);
    assert_eq!(drift[0].observed.mode, 0o666);

    let report = applier.repair().unwrap();
    assert!(report.repaired, "{report:#?}");
    assert_eq!(report.revision, "r1");
    assert_eq!(
        report.drifted, drift,
        "the report carries what was found before repair"
    );
    assert_eq!(std::fs::read_to_string(&on_disk).unwrap(), WEB);
    assert_eq!(common::stat_cli(&on_disk), "644 root root");
    let after = report
        .observed
        .iter()
        .find(|o| o.path == desired[0].path)
        .unwrap();
    assert_eq!(
        (after.sha256.as_str(), after.mode),
        (desired[0].sha256.as_str(), 0o644)
    );
    assert!(applier.check_drift().is_empty());
    assert_eq!(applier.revision(), "r1");
}

#[test]
fn a_chown_and_a_deletion_are_detected_and_repaired() {
    let node = Node::new();
    let mut applier = node.applier();
    let owned = file("owned.json", WEB, 0o640, "seccompuser", "seccompgroup");
    let deleted = profile("deleted.json", WEB);
    applier
        .apply("r1", &[owned.clone(), deleted.clone()])
        .unwrap();

    std::os::unix::fs::chown(node.path(&owned.path), Some(0), Some(0)).unwrap();
    std::fs::remove_file(node.path(&deleted.path)).unwrap();
    let drift = applier.check_drift();
    let kinds: Vec<_> = drift
        .iter()
        .map(|d| (d.observed.path.as_str(), d.kinds.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (
                owned.path.as_str(),
                vec![DriftKind::Owner, DriftKind::Group]
            ),
            (deleted.path.as_str(), vec![DriftKind::Missing]),
        ]
    );
    assert!(!drift[1].observed.exists);

    let report = applier.repair().unwrap();
    assert!(report.repaired);
    assert!(applier.check_drift().is_empty());
    assert_eq!(
        std::fs::read_to_string(node.path(&deleted.path)).unwrap(),
        WEB
    );
}

#[test]
fn a_symlink_in_place_of_a_file_is_reported_and_not_followed() {
    let node = Node::new();
    let mut applier = node.applier();
    let desired = profile("web.json", WEB);
    applier.apply("r1", std::slice::from_ref(&desired)).unwrap();
    let outside = node.tmp.path().join("outside");
    std::fs::write(&outside, "precious").unwrap();
    std::fs::remove_file(node.path(&desired.path)).unwrap();
    symlink(&outside, node.path(&desired.path)).unwrap();

    let report = applier.repair().unwrap();
    assert_eq!(report.drifted[0].kinds, vec![DriftKind::WrongKind]);
    assert_eq!(report.drifted[0].observed.kind, Some(ObservedKind::Symlink));
    assert!(!report.repaired);
    assert_eq!(report.errors[0].code, ErrorCode::Symlink);
    assert_eq!(report.errors[0].path, desired.path);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
}

#[test]
fn drift_is_repaired_after_a_restart_without_the_distributor() {
    let node = Node::new();
    let desired = profile("web.json", WEB);
    node.applier()
        .apply("r1", std::slice::from_ref(&desired))
        .unwrap();
    std::fs::write(node.path(&desired.path), "garbage").unwrap();

    let mut applier = node.applier();
    let report = applier.repair().unwrap();
    assert!(report.repaired);
    assert_eq!(
        std::fs::read_to_string(node.path(&desired.path)).unwrap(),
        WEB
    );
}

#[tokio::test]
async fn the_watcher_signals_a_change_under_the_allowed_root() {
    let node = Node::new();
    let mut applier = node.applier();
    let desired = profile("web.json", WEB);
    applier.apply("r1", std::slice::from_ref(&desired)).unwrap();
    let (watcher, mut changes) = ChangeWatcher::channel(&applier.allowed_root_on_disk()).unwrap();
    assert!(changes.try_recv().is_err(), "nothing changed yet");

    std::fs::write(node.path(&desired.path), "edited").unwrap();
    let signal = tokio::time::timeout(Duration::from_secs(10), changes.recv()).await;
    assert_eq!(signal.unwrap(), Some(()), "no signal within the deadline");
    assert!(!applier.check_drift().is_empty());
    drop(watcher);

    // The watch is recursive: a fresh watcher (so no earlier event is pending) sees a write in
    // a subdirectory.
    std::fs::create_dir(node.path(&format!("{ROOT}/sub"))).unwrap();
    let (_watcher, mut changes) = ChangeWatcher::channel(&applier.allowed_root_on_disk()).unwrap();
    std::fs::write(node.path(&format!("{ROOT}/sub/x.json")), "{}").unwrap();
    let signal = tokio::time::timeout(Duration::from_secs(10), changes.recv()).await;
    assert_eq!(signal.unwrap(), Some(()), "no signal within the deadline");
}

#[tokio::test]
async fn the_trigger_fires_on_a_signal_and_periodically() {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut trigger = DriftTrigger::new(Some(rx), Duration::from_millis(50));
    tx.try_send(()).unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), trigger.next())
        .await
        .unwrap();
    assert_eq!(first, Trigger::Changed);
    let second = tokio::time::timeout(Duration::from_secs(10), trigger.next())
        .await
        .unwrap();
    assert_eq!(second, Trigger::Periodic);
    // Without a watcher it still scans periodically.
    drop(tx);
    let third = tokio::time::timeout(Duration::from_secs(10), trigger.next())
        .await
        .unwrap();
    assert_eq!(third, Trigger::Periodic);
}

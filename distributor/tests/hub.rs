//! The agent-facing state machine without a network: when a node is sent its set, stale
//! nonces, replaced sessions, and what makes a node Applied.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::time::Duration;

use seccomp_distributor::hub::{self, DesiredMsg, Hello, Hub, Outbound};
use seccomp_rollout::fileset::{EffectiveSet, Fleet};
use seccomp_rollout::nci::{self, FileType, NodeConfigItem, ProfileRef, Target};
use seccomp_rollout::node::{FileError, NodeState, ObservedFile, ObservedKind};
use seccomp_rollout::selector::{self, Selector};
use tokio::sync::watch;

fn nci(name: &str, content: &str, sel: &str) -> NodeConfigItem {
    let t = Target::new(selector::parse(sel).unwrap());
    nci::render(
        ProfileRef {
            name: "web",
            version: 1,
            content: content.as_bytes(),
        },
        &t,
        Some(name),
        None,
    )
    .unwrap()
}

fn hello(node: &str, labels: &str, revision: &str, observed: Vec<ObservedFile>) -> Hello {
    Hello {
        node: node.into(),
        labels: selector::parse(labels).unwrap(),
        agent_version: "test".into(),
        current_revision: revision.into(),
        observed,
    }
}

/// What a perfect agent would observe after applying `set`.
fn observe(set: &EffectiveSet) -> Vec<ObservedFile> {
    set.files
        .iter()
        .map(|f| ObservedFile {
            path: f.path.clone(),
            exists: true,
            kind: if f.kind == FileType::File {
                ObservedKind::File
            } else {
                ObservedKind::Directory
            },
            sha256: f.sha256.clone().unwrap_or_default(),
            size: f.content.as_ref().map_or(0, |c| c.len() as u64),
            mode: f.mode,
            uid: 0,
            gid: 0,
            owner: "root".into(),
            group: "root".into(),
        })
        .collect()
}

/// The newest message of a session, which must be a Desired not seen before.
fn desired(rx: &mut watch::Receiver<Option<Outbound>>) -> DesiredMsg {
    assert!(rx.has_changed().unwrap(), "a new message");
    match rx.borrow_and_update().clone() {
        Some(Outbound::Desired(d)) => d,
        other => panic!("expected a Desired, got {other:?}"),
    }
}

/// Whether the session got nothing new.
fn nothing_new(rx: &watch::Receiver<Option<Outbound>>) -> bool {
    !rx.has_changed().unwrap_or(false)
}

fn state(hub: &Hub, node: &str) -> NodeState {
    hub.nodes(&Selector::new())
        .into_iter()
        .find(|n| n.name == node)
        .unwrap()
        .state
}

#[test]
fn sends_on_hello_applies_on_ack_and_resends_on_change() {
    let hub = Hub::new(
        Fleet::new(&[nci("a", "{}", "os=linux")]).unwrap(),
        Duration::from_secs(30),
    );
    let (tx, mut rx) = hub::outbox();
    let s = hub.hello(hello("n1", "os=linux", "", vec![]), tx);
    let d = desired(&mut rx);
    assert_eq!(d.set.files.len(), 2);
    assert_eq!(state(&hub, "n1"), NodeState::Applying);

    // A stale nonce is ignored.
    hub.ack("n1", s, &d.revision, "999", observe(&d.set));
    assert_eq!(state(&hub, "n1"), NodeState::Applying);
    hub.ack("n1", s, &d.revision, &d.nonce, observe(&d.set));
    assert_eq!(state(&hub, "n1"), NodeState::Applied);

    // An ack whose observations differ from the desired files is a failure, not success.
    let mut wrong = observe(&d.set);
    wrong[1].mode = 0o600;
    hub.set_fleet(Fleet::new(&[nci("a", "{\"v\":2}", "os=linux")]).unwrap());
    let d2 = desired(&mut rx);
    assert_ne!(d2.revision, d.revision);
    hub.ack("n1", s, &d2.revision, &d2.nonce, wrong);
    assert_eq!(state(&hub, "n1"), NodeState::Failed);

    // A change that does not touch this node's set sends nothing.
    hub.set_fleet(
        Fleet::new(&[
            nci("a", "{\"v\":2}", "os=linux"),
            nci("b", "{}", "os=windows"),
        ])
        .unwrap(),
    );
    assert!(nothing_new(&rx));
}

#[test]
fn reconnect_with_the_same_revision_sends_nothing() {
    let hub = Hub::new(
        Fleet::new(&[nci("a", "{}", "os=linux")]).unwrap(),
        Duration::from_secs(30),
    );
    let (tx, mut rx) = hub::outbox();
    let s = hub.hello(hello("n1", "os=linux", "", vec![]), tx);
    let d = desired(&mut rx);
    hub.ack("n1", s, &d.revision, &d.nonce, observe(&d.set));
    hub.disconnect("n1", s);

    let (tx2, rx2) = hub::outbox();
    hub.hello(hello("n1", "os=linux", &d.revision, observe(&d.set)), tx2);
    assert!(nothing_new(&rx2), "nothing is resent when the agent has it");
    assert_eq!(state(&hub, "n1"), NodeState::Applied);

    // Same revision, but a file is not what it should be: resend.
    let (tx3, mut rx3) = hub::outbox();
    let mut changed = observe(&d.set);
    changed[1].sha256 = "00".into();
    hub.hello(hello("n1", "os=linux", &d.revision, changed), tx3);
    desired(&mut rx3);
}

#[test]
fn a_new_session_replaces_the_old_one() {
    let hub = Hub::new(
        Fleet::new(&[nci("a", "{}", "os=linux")]).unwrap(),
        Duration::from_secs(30),
    );
    let (tx1, mut rx1) = hub::outbox();
    let s1 = hub.hello(hello("n1", "os=linux", "", vec![]), tx1);
    let d1 = desired(&mut rx1);
    let (tx2, mut rx2) = hub::outbox();
    let s2 = hub.hello(hello("n1", "os=linux", "", vec![]), tx2);
    let d2 = desired(&mut rx2);
    assert!(
        matches!(&*rx1.borrow(), Some(Outbound::Replaced)),
        "the old session is told it was replaced"
    );
    assert!(rx1.has_changed().is_err(), "the old session's stream ends");
    // Answers on the old session are ignored.
    hub.ack("n1", s1, &d1.revision, &d1.nonce, observe(&d1.set));
    assert_eq!(state(&hub, "n1"), NodeState::Applying);
    hub.ack("n1", s2, &d2.revision, &d2.nonce, observe(&d2.set));
    assert_eq!(state(&hub, "n1"), NodeState::Applied);
}

#[test]
fn nack_drift_and_unknown() {
    let hub = Hub::new(
        Fleet::new(&[nci("a", "{}", "os=linux")]).unwrap(),
        Duration::from_millis(0),
    );
    let (tx, mut rx) = hub::outbox();
    let s = hub.hello(hello("n1", "os=linux", "", vec![]), tx);
    let d = desired(&mut rx);
    let err = FileError {
        path: "/var/lib/kubelet/seccomp/web.json".into(),
        code: "unknown-owner".into(),
        message: "no user".into(),
    };
    hub.nack("n1", s, &d.nonce, vec![err], vec![]);
    let view = hub.nodes(&Selector::new()).pop().unwrap();
    assert_eq!(view.state, NodeState::Failed);
    assert_eq!(view.file_state(&view.desired.files[1]), NodeState::Failed);

    hub.set_fleet(Fleet::new(&[nci("a", "{\"v\":1}", "os=linux")]).unwrap());
    let d = desired(&mut rx);
    hub.ack("n1", s, &d.revision, &d.nonce, observe(&d.set));
    assert_eq!(state(&hub, "n1"), NodeState::Applied);
    let mut edited = observe(&d.set);
    edited[1].sha256 = "beef".into();
    hub.drift("n1", s, edited, false, vec![]);
    assert_eq!(state(&hub, "n1"), NodeState::Drifted);
    hub.drift("n1", s, observe(&d.set), true, vec![]);
    assert_eq!(state(&hub, "n1"), NodeState::Applied);

    // Gone longer than the grace period (zero here): Unknown.
    hub.disconnect("n1", s);
    assert_eq!(state(&hub, "n1"), NodeState::Unknown);
}

#[test]
fn an_agent_that_does_not_read_holds_only_the_newest_set() {
    let hub = Hub::new(
        Fleet::new(&[nci("a", "{}", "os=linux")]).unwrap(),
        Duration::from_secs(30),
    );
    let (tx, mut rx) = hub::outbox();
    let s = hub.hello(hello("n1", "os=linux", "", vec![]), tx);
    // Three generations while the stream does not read: one message waits, the newest.
    for v in 1..=3 {
        hub.set_fleet(Fleet::new(&[nci("a", &format!("{{\"v\":{v}}}"), "os=linux")]).unwrap());
    }
    let d = desired(&mut rx);
    assert!(nothing_new(&rx), "one message, not four");
    let content = d.set.files[1].content.as_deref().unwrap();
    assert_eq!(content, "{\"v\":3}");
    // Answering it is answering the node's current set.
    hub.ack("n1", s, &d.revision, &d.nonce, observe(&d.set));
    assert_eq!(state(&hub, "n1"), NodeState::Applied);
}

fn known(
    name: &str,
    revision: &str,
    observed: Vec<ObservedFile>,
) -> seccomp_distributor::store::KnownNode {
    seccomp_distributor::store::KnownNode {
        name: name.into(),
        labels: selector::parse("os=linux").unwrap(),
        agent_version: "test".into(),
        last_seen_ms: 0,
        revision: revision.into(),
        observed,
        errors: Vec::new(),
    }
}

#[test]
fn a_node_on_another_replica_counts_as_its_record_says_and_a_local_session_wins() {
    let fleet = Fleet::new(&[nci("a", "{}", "os=linux")]).unwrap();
    let set = fleet.effective(&selector::parse("os=linux").unwrap());
    let hub = Hub::new(fleet, Duration::from_millis(50));
    // Reported by another replica: connected there, not yet applied, then applied.
    hub.remote("n1", Some(known("n1", "", vec![])), true);
    let view = &hub.nodes(&Selector::new())[0];
    assert!(view.connected);
    assert_eq!(view.state, NodeState::Pending);
    hub.remote("n1", Some(known("n1", &set.revision, observe(&set))), true);
    assert_eq!(state(&hub, "n1"), NodeState::Applied);
    // Never stored again by this replica.
    assert!(hub.take_changed().is_empty());
    assert!(hub.take_presence().is_empty());
    // Gone from that replica and silent past the grace period: Unknown, not connected.
    hub.remote("n1", Some(known("n1", &set.revision, observe(&set))), false);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while state(&hub, "n1") != NodeState::Unknown {
        assert!(std::time::Instant::now() < deadline, "n1 never Unknown");
        std::thread::yield_now();
    }
    assert!(!hub.nodes(&Selector::new())[0].connected);
    // Its agent here: what it says wins over another replica's record of it.
    let (tx, mut rx) = hub::outbox();
    let s = hub.hello(hello("n1", "os=linux", "", vec![]), tx);
    let d = desired(&mut rx);
    hub.remote("n1", Some(known("n1", &set.revision, observe(&set))), false);
    assert_eq!(state(&hub, "n1"), NodeState::Applying);
    assert_eq!(hub.take_presence().get("n1"), Some(&true));
    hub.ack("n1", s, &d.revision, &d.nonce, observe(&d.set));
    hub.disconnect("n1", s);
    assert_eq!(hub.take_presence().get("n1"), Some(&false));
    // Forgotten everywhere (no record, not connected): forgotten here.
    hub.remote("n1", None, false);
    assert!(hub.nodes(&Selector::new()).is_empty());
}

#[test]
fn a_fleet_change_for_some_nodes_sends_to_those_only() {
    use seccomp_rollout::fileset::Scope;
    use std::collections::BTreeSet;
    use std::sync::Arc;
    let v1 = nci("a", "{}", "os=linux");
    let v2 = nci("a", "{\"v\":2}", "os=linux");
    let scoped = |targeted: &[&str]| {
        let t: Arc<BTreeSet<String>> = Arc::new(targeted.iter().map(|s| (*s).to_owned()).collect());
        Fleet::scoped([(&v2, Scope::Only(Arc::clone(&t))), (&v1, Scope::Except(t))]).unwrap()
    };
    let hub = Hub::new(scoped(&[]), Duration::from_secs(30));
    let mut rxs = Vec::new();
    for n in ["n1", "n2", "n3"] {
        let (tx, mut rx) = hub::outbox();
        hub.hello(hello(n, "os=linux", "", vec![]), tx);
        let d = desired(&mut rx);
        assert_eq!(d.set.files.len(), 2, "{n}");
        rxs.push(rx);
    }
    let first = rxs[0].borrow().clone();
    // n2 enters the wave: only n2 is sent a set.
    hub.set_fleet_for(scoped(&["n2"]), &["n2".to_owned()].into());
    assert!(nothing_new(&rxs[0]) && nothing_new(&rxs[2]));
    let d = desired(&mut rxs[1]);
    let expected = scoped(&["n2"]).effective_for("n2", &selector::parse("os=linux").unwrap());
    assert_eq!(d.revision, expected.revision);
    assert!(matches!(first, Some(Outbound::Desired(_))));
    // Named but with the same set: nothing sent.
    hub.set_fleet_for(scoped(&["n2"]), &["n1".to_owned()].into());
    assert!(nothing_new(&rxs[0]));
}

//! Hostile agents: arbitrary sequences of `seccomp.agent.v1` messages (no Hello first, other
//! nodes' names, invalid names, too many labels, acknowledgements of revisions never sent,
//! paths outside the root, invalid file types, huge strings), several streams at once,
//! dropped mid-sequence, against a distributor with a rollout in progress. None of it may
//! panic anything in the process, and afterwards the distributor still serves and a
//! well-behaved agent still gets and confirms its set.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{AutoAgent, Behaviour};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use seccomp_proto::agent::v1 as agent;
use seccomp_proto::distributor::v1 as pb;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

use agent::agent_message::Message;

/// Panics anywhere in this test process (the servers run in it).
static PANICS: AtomicUsize = AtomicUsize::new(0);

const PATH: &str = "/var/lib/kubelet/seccomp/web.json";
/// Replaced, when sent, by the revision of the last Desired the stream received.
const DESIRED: &str = "@desired";

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9.-]{1,20}",
        any::<String>(),
        Just(DESIRED.to_owned()),
        Just("x".repeat(100_000)),
    ]
}

fn node_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("n1".to_owned()),
        2 => Just("n2".to_owned()),
        1 => text(),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(PATH.to_owned()),
        Just("/etc/passwd".to_owned()),
        Just("/var/lib/kubelet/seccomp/../../../etc/shadow".to_owned()),
        "/var/lib/kubelet/seccomp/[a-z]{1,8}\\.json",
        any::<String>(),
    ]
}

fn observed() -> impl Strategy<Value = agent::ObservedFile> {
    (
        path(),
        any::<bool>(),
        prop_oneof![0..5i32, any::<i32>()],
        text(),
        any::<u64>(),
        any::<u32>(),
        (any::<u32>(), any::<u32>(), text(), text()),
    )
        .prop_map(
            |(path, exists, r#type, sha256, size, mode, (uid, gid, owner, group))| {
                agent::ObservedFile {
                    path,
                    exists,
                    r#type,
                    sha256,
                    size,
                    mode,
                    uid,
                    gid,
                    owner,
                    group,
                }
            },
        )
}

fn file_error() -> impl Strategy<Value = agent::FileError> {
    (path(), text(), text()).prop_map(|(path, code, message)| agent::FileError {
        path,
        code,
        message,
    })
}

fn labels() -> impl Strategy<Value = HashMap<String, String>> {
    prop_oneof![
        Just([("os".to_owned(), "linux".to_owned())].into()),
        prop::collection::hash_map(text(), text(), 0..4),
        // More than the 128 labels a node may have.
        prop::collection::hash_map("[a-z]{1,12}", "[a-z]{0,12}", 129..140),
    ]
}

/// One step of a hostile stream.
#[derive(Debug, Clone)]
enum Step {
    Send(Message),
    /// Wait (at most a second) for a Desired, to acknowledge it with its own revision.
    AwaitDesired,
}

fn message() -> impl Strategy<Value = Message> {
    let files = || prop::collection::vec(observed(), 0..4);
    let errors = || prop::collection::vec(file_error(), 0..3);
    prop_oneof![
        (node_name(), labels(), text(), text(), files()).prop_map(
            |(node_name, labels, agent_version, current_revision, observed)| {
                Message::Hello(agent::Hello {
                    node_name,
                    labels,
                    agent_version,
                    current_revision,
                    observed,
                })
            }
        ),
        (text(), text(), files()).prop_map(|(revision, nonce, observed)| {
            Message::Ack(agent::Ack {
                revision,
                nonce,
                observed,
            })
        }),
        (text(), text(), text(), errors(), files()).prop_map(
            |(revision, nonce, last_good_revision, errors, observed)| {
                Message::Nack(agent::Nack {
                    revision,
                    nonce,
                    last_good_revision,
                    errors,
                    observed,
                })
            }
        ),
        (text(), files(), any::<bool>(), errors(), files()).prop_map(
            |(revision, observed, repaired, errors, current)| {
                Message::Drift(agent::Drift {
                    revision,
                    observed,
                    repaired,
                    errors,
                    current,
                })
            }
        ),
        (
            prop::collection::vec(
                (
                    text(),
                    text(),
                    text(),
                    any::<u64>(),
                    any::<Option<(i64, i32)>>()
                ),
                0..4
            ),
            any::<u64>()
        )
            .prop_map(|(events, dropped)| {
                Message::SeccompEvents(agent::SeccompEvents {
                    events: events
                        .into_iter()
                        .map(
                            |(container_id, exe, syscall, count, time)| agent::SeccompEvent {
                                container_id,
                                exe,
                                arch: "SCMP_ARCH_X86_64".to_owned(),
                                syscall,
                                action: "SCMP_ACT_LOG".to_owned(),
                                count,
                                first_seen: time.map(|(seconds, nanos)| prost_types::Timestamp {
                                    seconds,
                                    nanos,
                                }),
                                last_seen: time.map(|(seconds, nanos)| prost_types::Timestamp {
                                    seconds,
                                    nanos,
                                }),
                            },
                        )
                        .collect(),
                    dropped,
                })
            }),
        (text(), any::<Option<(i64, i32)>>()).prop_map(|(revision, time)| {
            Message::Heartbeat(agent::Heartbeat {
                revision,
                time: time.map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
            })
        }),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        6 => message().prop_map(Step::Send),
        1 => Just(Step::AwaitDesired),
    ];
    prop::collection::vec(step, 1..10)
}

fn fill_in(message: &mut Message, desired: &str) {
    let put = |s: &mut String| {
        if s == DESIRED {
            desired.clone_into(s);
        }
    };
    match message {
        Message::Hello(h) => put(&mut h.current_revision),
        Message::Ack(a) => put(&mut a.revision),
        Message::Nack(n) => put(&mut n.revision),
        Message::Drift(d) => put(&mut d.revision),
        Message::Heartbeat(h) => put(&mut h.revision),
        Message::SeccompEvents(_) => {}
    }
}

/// Play `steps` on a stream of their own; the stream ends (dropped) after the last.
async fn play(url: String, steps: Vec<Step>) {
    let Ok(mut client) = agent::agent_sync_client::AgentSyncClient::connect(url).await else {
        return;
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (mut steps, mut first) = (steps.into_iter(), None);
    // The call returns once the server answers the headers, which may wait for a message.
    if let Some(Step::Send(m)) = steps.next() {
        first = Some(m);
    }
    if let Some(m) = first {
        let _ = tx.send(agent::AgentMessage { message: Some(m) });
    }
    let call = tokio::time::timeout(
        Duration::from_secs(5),
        client.sync(UnboundedReceiverStream::new(rx)),
    )
    .await;
    let Ok(Ok(response)) = call else { return };
    let mut incoming = response.into_inner();
    let mut desired = String::new();
    // Whether the stream goes on; a Desired's revision noted.
    let take = |m: Option<Result<agent::DistributorMessage, tonic::Status>>,
                desired: &mut String|
     -> bool {
        match m {
            Some(Ok(agent::DistributorMessage {
                message: Some(agent::distributor_message::Message::Desired(d)),
            })) => {
                *desired = d.revision;
                true
            }
            Some(Ok(_)) => true,
            // The server ended the stream (a refusal, a replacement): nothing more to say.
            _ => false,
        }
    };
    for step in steps {
        // What arrived meanwhile (a zero timeout polls once).
        while let Ok(m) = tokio::time::timeout(Duration::ZERO, incoming.next()).await {
            if !take(m, &mut desired) {
                return;
            }
        }
        match step {
            Step::AwaitDesired => {
                if let Ok(m) = tokio::time::timeout(Duration::from_secs(1), incoming.next()).await
                    && !take(m, &mut desired)
                {
                    return;
                }
            }
            Step::Send(mut m) => {
                fill_in(&mut m, &desired);
                if tx.send(agent::AgentMessage { message: Some(m) }).is_err() {
                    return;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_agent_messages_never_panic_the_distributor() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let tmp = tempfile::tempdir().unwrap();
    let reg = common::registry(&tmp.path().join("registry")).await;
    let dist = common::distributor_with(&tmp.path().join("distributor"), &reg.url, |c| {
        c.hello_deadline = Duration::from_millis(500);
    })
    .await;
    common::publish(&reg.url, "web", br#"{"defaultAction":"SCMP_ACT_ERRNO"}"#).await;
    let mut dc = pb::distributor_client::DistributorClient::connect(dist.url.clone())
        .await
        .unwrap();
    dc.create_rollout(pb::CreateRolloutRequest {
        profile: "web".into(),
        target: Some(pb::Target {
            selector: [("os".to_owned(), "linux".to_owned())].into(),
            path: PATH.into(),
            ..Default::default()
        }),
        strategy: Some(pb::Strategy {
            waves: vec!["50%".into(), "100%".into()],
            ..Default::default()
        }),
        // Before any agent connected.
        allow_empty: true,
        ..Default::default()
    })
    .await
    .unwrap();

    // Deterministic, so a failure reproduces; two streams at a time.
    let mut runner = TestRunner::deterministic();
    let strategy = (steps(), steps());
    for case in 0..64 {
        let (a, b) = strategy.new_tree(&mut runner).unwrap().current();
        let description = format!("case {case}: {a:?} / {b:?}");
        let (ra, rb) = tokio::join!(
            tokio::spawn(play(dist.url.clone(), a)),
            tokio::spawn(play(dist.url.clone(), b)),
        );
        ra.unwrap();
        rb.unwrap();
        assert_eq!(
            PANICS.load(Ordering::SeqCst),
            0,
            "a panic after {}",
            &description[..description.len().min(2000)]
        );
    }

    // Every hostile stream has ended (so every message was handled): nothing panicked,
    // health says SERVING, and the distributor still works for an agent that behaves.
    common::eventually(
        "the hostile streams to end",
        Duration::from_secs(20),
        || {
            let url = dist.url.clone();
            async move {
                let mut c = pb::distributor_client::DistributorClient::connect(url)
                    .await
                    .unwrap();
                let nodes = c
                    .list_nodes(pb::ListNodesRequest::default())
                    .await
                    .unwrap()
                    .into_inner()
                    .nodes;
                nodes.iter().all(|n| !n.connected)
            }
        },
    )
    .await;
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
    let channel = tonic::transport::Endpoint::from_shared(dist.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let _good = AutoAgent::start(&dist.url, "n-good", &[("os", "linux")], Behaviour::Apply).await;
    common::eventually("n-good to confirm its set", Duration::from_secs(20), || {
        let url = dist.url.clone();
        async move {
            let n = common::node(&url, "n-good").await;
            n.connected && !n.revision.is_empty() && n.revision == n.desired_revision
        }
    })
    .await;
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
    dist.stop().await;
    reg.stop().await;
}

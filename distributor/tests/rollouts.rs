//! Staged rollouts end to end: the real registry and distributor in-process on loopback, and
//! four scripted agents (`common::AutoAgent`) in three zones. Waves go in zone-then-name
//! order, a refused version rolls back touching only the first wave, manual rollback restores
//! older content, pause/resume/abort do what they say, an agent that disconnects pauses the
//! rollout, a missing confirmation fails a node at the deadline, and a restarted distributor
//! resumes a rollout without re-sending finished nodes anything.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

mod common;

use std::time::Duration;

use common::{AutoAgent, Behaviour, Server, distributor_with, eventually, publish, registry};
use seccomp_proto::distributor::v1 as pb;
use tonic::transport::Channel;

type Client = pb::distributor_client::DistributorClient<Channel>;

const V1: &[u8] = b"{\"defaultAction\":\"SCMP_ACT_ERRNO\"}\n";
const V2: &[u8] = b"{\"defaultAction\":\"SCMP_ACT_LOG\"}\n";
const V3: &[u8] = b"{\"defaultAction\":\"SCMP_ACT_ALLOW\"}\n";
const WAIT: Duration = Duration::from_secs(15);

/// Nodes and zones; the wave order is n2, n3 (zone a), n1 (zone b), n4 (zone c).
const NODES: [(&str, &str); 4] = [("n1", "b"), ("n2", "a"), ("n3", "a"), ("n4", "c")];

struct Fixture {
    _tmp: tempfile::TempDir,
    registry: Server,
    dist: Server,
    dc: Client,
    agents: Vec<AutoAgent>,
}

fn labels(zone: &str) -> [(&str, &str); 2] {
    [("kubernetes.io/os", "linux"), ("zone", zone)]
}

async fn start_agents(url: &str, behaviour: &Behaviour) -> Vec<AutoAgent> {
    let mut agents = Vec::new();
    for (name, zone) in NODES {
        agents.push(AutoAgent::start(url, name, &labels(zone), behaviour.clone()).await);
    }
    agents
}

/// Registry with V1, V2 and V3 of `web`, a distributor, four agents behaving as `behaviour`.
async fn fixture(behaviour: Behaviour) -> Fixture {
    fixture_with(behaviour, |_| {}).await
}

/// [`fixture`] with the distributor's configuration adjusted by `tune`.
async fn fixture_with(
    behaviour: Behaviour,
    tune: impl FnOnce(&mut seccomp_distributor::Config),
) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let registry = registry(&tmp.path().join("registry")).await;
    for content in [V1, V2, V3] {
        publish(&registry.url, "web", content).await;
    }
    let dist = distributor_with(&tmp.path().join("distributor"), &registry.url, |c| {
        c.unknown_after = Duration::from_millis(500);
        tune(c);
    })
    .await;
    let agents = start_agents(&dist.url, &behaviour).await;
    let dc = Client::connect(dist.url.clone()).await.unwrap();
    // Every node is known before anything is rolled out.
    eventually("four nodes", WAIT, || {
        let mut dc = dc.clone();
        async move {
            let nodes = dc
                .list_nodes(pb::ListNodesRequest::default())
                .await
                .unwrap()
                .into_inner()
                .nodes;
            nodes.len() == 4
        }
    })
    .await;
    Fixture {
        _tmp: tmp,
        registry,
        dist,
        dc,
        agents,
    }
}

fn strategy(waves: &[&str]) -> pb::Strategy {
    pb::Strategy {
        waves: waves.iter().map(|w| (*w).to_owned()).collect(),
        max_unavailable: "100%".into(),
        ..Default::default()
    }
}

fn manual(mut s: pb::Strategy) -> pb::Strategy {
    s.pause = Some(pb::strategy::Pause::Manual(true));
    s
}

async fn create(dc: &mut Client, version: u64, strategy: pb::Strategy) -> pb::Rollout {
    dc.create_rollout(pb::CreateRolloutRequest {
        profile: "web".into(),
        version,
        target: Some(pb::Target {
            selector: [("kubernetes.io/os".to_owned(), "linux".to_owned())].into(),
            ..Default::default()
        }),
        strategy: Some(strategy),
        nci_name: None,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .rollout
    .unwrap()
}

async fn get(dc: &Client, id: &str) -> pb::GetRolloutResponse {
    dc.clone()
        .get_rollout(pb::GetRolloutRequest {
            id: id.into(),
            include_nodes: true,
        })
        .await
        .unwrap()
        .into_inner()
}

/// Wait until rollout `id` is in `state`; returns it.
async fn wait_for(dc: &Client, id: &str, state: pb::RolloutState) -> pb::Rollout {
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let r = get(dc, id).await.rollout.unwrap();
        if r.state == state as i32 {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "rollout {id} never reached {state:?}; it is {:?}, history {:#?}",
            pb::RolloutState::try_from(r.state),
            r.history
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn agent<'a>(f: &'a Fixture, name: &str) -> &'a AutoAgent {
    f.agents.iter().find(|a| a.node == name).unwrap()
}

/// Nodes whose agent was ever sent `content`.
fn reached(agents: &[AutoAgent], content: &[u8]) -> Vec<String> {
    agents
        .iter()
        .filter(|a| a.received().iter().any(|c| c == content))
        .map(|a| a.node.clone())
        .collect()
}

/// The last content each agent was sent, by node order of `NODES`.
fn last_content(agents: &[AutoAgent]) -> Vec<Vec<u8>> {
    agents
        .iter()
        .map(|a| {
            a.log
                .lock()
                .unwrap()
                .last()
                .cloned()
                .unwrap_or_default()
                .concat()
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn states(r: &pb::Rollout) -> Vec<pb::RolloutState> {
    r.history
        .iter()
        .map(|t| pb::RolloutState::try_from(t.state).unwrap())
        .collect()
}

async fn stop(f: Fixture) {
    for a in f.agents {
        a.disconnect();
    }
    f.dist.stop().await;
    f.registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_waves_go_in_zone_order_with_manual_pauses() {
    let mut f = fixture(Behaviour::Apply).await;
    let r = create(&mut f.dc, 1, manual(strategy(&["1", "50%", "100%"]))).await;

    let paused = wait_for(&f.dc, &r.id, pb::RolloutState::Paused).await;
    assert_eq!(paused.current_wave, 1);
    assert_eq!(
        reached(&f.agents, V1),
        ["n2"],
        "wave 1 is the first node of zone a"
    );
    let counts = paused.nodes.unwrap();
    assert_eq!((counts.total, counts.applied, counts.pending), (4, 1, 3));
    // Another rollout of the same NCI waits for this one.
    let err =
        f.dc.create_rollout(pb::CreateRolloutRequest {
            profile: "web".into(),
            version: 2,
            target: Some(pb::Target {
                selector: [("kubernetes.io/os".to_owned(), "linux".to_owned())].into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(&r.id), "{err:?}");

    f.dc.resume_rollout(pb::ResumeRolloutRequest { id: r.id.clone() })
        .await
        .unwrap();
    let paused = wait_for(&f.dc, &r.id, pb::RolloutState::Paused).await;
    assert_eq!(paused.current_wave, 2);
    assert_eq!(
        sorted(reached(&f.agents, V1)),
        ["n2", "n3"],
        "wave 2 is zone a"
    );

    f.dc.resume_rollout(pb::ResumeRolloutRequest { id: r.id.clone() })
        .await
        .unwrap();
    let done = wait_for(&f.dc, &r.id, pb::RolloutState::Completed).await;
    assert_eq!(done.current_wave, 3);
    assert_eq!(sorted(reached(&f.agents, V1)), ["n1", "n2", "n3", "n4"]);
    use pb::RolloutState::*;
    assert_eq!(
        states(&done),
        [
            Pending,
            Progressing,
            Paused,
            Progressing,
            Paused,
            Progressing,
            Completed
        ],
        "{:#?}",
        done.history
    );
    assert!(
        done.history[3].reason.contains("resumed by"),
        "{:#?}",
        done.history
    );
    assert_eq!(
        done.stable_version, None,
        "the first rollout has no stable version"
    );
    // Every node got the version exactly once.
    for a in &f.agents {
        assert_eq!(
            a.received().iter().filter(|c| c.as_slice() == V1).count(),
            1,
            "{}",
            a.node
        );
    }
    // Resuming a finished rollout is refused.
    let err =
        f.dc.resume_rollout(pb::ResumeRolloutRequest { id: r.id.clone() })
            .await
            .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    stop(f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_version_is_rolled_back_touching_only_the_first_wave() {
    let mut f = fixture(Behaviour::Refuse(V2.to_vec())).await;
    let v1 = create(&mut f.dc, 1, strategy(&["100%"])).await;
    wait_for(&f.dc, &v1.id, pb::RolloutState::Completed).await;

    let bad = create(&mut f.dc, 2, strategy(&["1", "50%", "100%"])).await;
    assert_eq!(bad.stable_version, Some(1));
    let done = wait_for(&f.dc, &bad.id, pb::RolloutState::RolledBack).await;
    use pb::RolloutState::*;
    assert_eq!(
        states(&done),
        [Pending, Progressing, RollingBack, RolledBack],
        "{:#?}",
        done.history
    );
    let why = &done.history[2].reason;
    assert!(why.contains("1 node(s) failed (n2), threshold 0"), "{why}");
    assert!(why.contains("version 1"), "{why}");
    assert_eq!(
        reached(&f.agents, V2),
        ["n2"],
        "only the first wave saw the bad version"
    );
    // n2 is back on version 1 (RolledBack waits for its agent to acknowledge that set);
    // the others were never sent anything after version 1.
    assert_eq!(last_content(&f.agents), vec![V1.to_vec(); 4]);
    assert_eq!(
        done.history[3].reason, "1 touched node(s) back on version 1",
        "{:#?}",
        done.history
    );
    for name in ["n1", "n3", "n4"] {
        assert_eq!(
            agent(&f, name).desired_count(),
            2,
            "{name}: the empty set, then v1"
        );
    }
    let n2 = common::node(&f.dist.url, "n2").await;
    let file = n2
        .files
        .iter()
        .find(|x| x.path.ends_with("web.json"))
        .unwrap();
    assert_eq!(
        (file.version, file.rollout_id.as_str()),
        (1, v1.id.as_str())
    );
    assert_eq!(n2.state, pb::NodeState::Applied as i32);
    let nodes = get(&f.dc, &bad.id).await.nodes;
    assert_eq!(nodes.len(), 4);
    let touched: Vec<_> = nodes
        .iter()
        .filter(|n| n.state != pb::NodeState::Pending as i32)
        .collect();
    assert_eq!(touched.len(), 1);
    assert_eq!(touched[0].node_name, "n2");
    stop(f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_rollback_restores_older_content() {
    let mut f = fixture(Behaviour::Apply).await;
    let v1 = create(&mut f.dc, 1, strategy(&["100%"])).await;
    wait_for(&f.dc, &v1.id, pb::RolloutState::Completed).await;
    let v2 = create(&mut f.dc, 2, strategy(&["100%"])).await;
    wait_for(&f.dc, &v2.id, pb::RolloutState::Completed).await;
    assert_eq!(last_content(&f.agents), vec![V2.to_vec(); 4]);

    let back =
        f.dc.rollback(pb::RollbackRequest {
            profile: "web".into(),
            to_version: None,
            nci_name: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rollouts;
    assert_eq!(back.len(), 1);
    let back = &back[0];
    assert!(back.rollback);
    assert_eq!((back.version, back.revision), (1, 3));
    assert_eq!(back.strategy.as_ref().unwrap().waves, ["100%"]);
    wait_for(&f.dc, &back.id, pb::RolloutState::Completed).await;
    assert_eq!(
        last_content(&f.agents),
        vec![V1.to_vec(); 4],
        "the old bytes everywhere"
    );

    // Forward again to an explicit version.
    let fwd =
        f.dc.rollback(pb::RollbackRequest {
            profile: "web".into(),
            to_version: Some(3),
            nci_name: Some("seccomp-web".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rollouts;
    wait_for(&f.dc, &fwd[0].id, pb::RolloutState::Completed).await;
    assert_eq!(last_content(&f.agents), vec![V3.to_vec(); 4]);

    let err =
        f.dc.rollback(pb::RollbackRequest {
            profile: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    stop(f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_abort() {
    let mut f = fixture(Behaviour::Apply).await;
    let mut s = strategy(&["1", "100%"]);
    s.pause = Some(pb::strategy::Pause::Duration(prost_types::Duration {
        seconds: 3600,
        nanos: 0,
    }));
    let r = create(&mut f.dc, 1, s).await;
    // Wave 1 done: waiting for the hour's pause.
    eventually("the timed pause", WAIT, || {
        let dc = f.dc.clone();
        let id = r.id.clone();
        async move { get(&dc, &id).await.rollout.unwrap().next_wave_at.is_some() }
    })
    .await;
    let paused =
        f.dc.pause_rollout(pb::PauseRolloutRequest {
            id: r.id.clone(),
            reason: "checking dashboards".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    assert_eq!(paused.state, pb::RolloutState::Paused as i32);
    assert!(
        paused
            .history
            .last()
            .unwrap()
            .reason
            .contains("checking dashboards")
    );
    // It stays paused with one node.
    let until = tokio::time::Instant::now() + Duration::from_millis(1000);
    while tokio::time::Instant::now() < until {
        let now = get(&f.dc, &r.id).await.rollout.unwrap();
        assert_eq!(now.state, pb::RolloutState::Paused as i32);
        assert_eq!(reached(&f.agents, V1), ["n2"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Resuming goes on now: the rest of the hour's pause is skipped.
    f.dc.resume_rollout(pb::ResumeRolloutRequest { id: r.id.clone() })
        .await
        .unwrap();
    wait_for(&f.dc, &r.id, pb::RolloutState::Completed).await;

    // Abort between waves: the first wave keeps the new version, the rest keep the old.
    let r2 = create(&mut f.dc, 2, manual(strategy(&["1", "100%"]))).await;
    wait_for(&f.dc, &r2.id, pb::RolloutState::Paused).await;
    let aborted =
        f.dc.abort_rollout(pb::AbortRolloutRequest {
            id: r2.id.clone(),
            reason: "wrong version".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    assert_eq!(aborted.state, pb::RolloutState::Aborted as i32);
    assert_eq!(
        last_content(&f.agents),
        [V1.to_vec(), V2.to_vec(), V1.to_vec(), V1.to_vec()]
    );
    let err =
        f.dc.abort_rollout(pb::AbortRolloutRequest {
            id: r2.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    // Pausing an aborted rollout is refused too.
    let err =
        f.dc.pause_rollout(pb::PauseRolloutRequest {
            id: r2.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    stop(f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_disconnects_pauses_the_rollout_until_it_returns() {
    let mut f = fixture(Behaviour::Apply).await;
    let r = create(&mut f.dc, 1, manual(strategy(&["1", "100%"]))).await;
    wait_for(&f.dc, &r.id, pb::RolloutState::Paused).await;
    // n4 (last in order) goes away before wave 2.
    let i = f.agents.iter().position(|a| a.node == "n4").unwrap();
    let gone = f.agents.remove(i);
    let applied = gone.disconnect();
    f.dc.resume_rollout(pb::ResumeRolloutRequest { id: r.id.clone() })
        .await
        .unwrap();
    let paused = wait_for(&f.dc, &r.id, pb::RolloutState::Paused).await;
    let why = &paused.history.last().unwrap().reason;
    assert!(why.contains("n4") && why.contains("unknown"), "{why}");
    // The rest of wave 2 goes on converging while the rollout waits for n4.
    eventually("wave 2 reaching n1 and n3", WAIT, || {
        let got = sorted(reached(&f.agents, V1));
        async move { got == ["n1", "n2", "n3"] }
    })
    .await;

    f.agents
        .push(AutoAgent::resume(&f.dist.url, "n4", &labels("c"), Behaviour::Apply, applied).await);
    let done = wait_for(&f.dc, &r.id, pb::RolloutState::Completed).await;
    assert!(
        done.history
            .iter()
            .any(|t| t.reason.contains("unknown nodes are back")),
        "{:#?}",
        done.history
    );
    assert_eq!(last_content(&f.agents), vec![V1.to_vec(); 4]);
    stop(f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_confirms_fails_at_the_deadline() {
    let mut f = fixture(Behaviour::Silent).await;
    let mut s = strategy(&["1", "100%"]);
    s.progress_deadline = Some(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    s.auto_rollback = Some(false);
    let r = create(&mut f.dc, 1, s).await;
    let done = wait_for(&f.dc, &r.id, pb::RolloutState::Aborted).await;
    let why = &done.history.last().unwrap().reason;
    assert!(
        why.contains("n2") && why.contains("automatic rollback is off"),
        "{why}"
    );
    let nodes = get(&f.dc, &r.id).await.nodes;
    let n2 = nodes.iter().find(|n| n.node_name == "n2").unwrap();
    assert_eq!(n2.state, pb::NodeState::Failed as i32);
    assert!(n2.message.contains("progress deadline"), "{}", n2.message);
    assert_eq!(reached(&f.agents, V1), ["n2"], "the failure did not spread");
    stop(f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_distributor_resumes_without_resending() {
    let mut f = fixture(Behaviour::Apply).await;
    let r = create(&mut f.dc, 1, manual(strategy(&["1", "100%"]))).await;
    wait_for(&f.dc, &r.id, pb::RolloutState::Paused).await;
    let n2_sent = agent(&f, "n2").desired_count();

    // Stop the distributor (its agents' streams end) and start it again on the same data.
    let applied: Vec<_> = f
        .agents
        .drain(..)
        .map(|a| (a.node.clone(), a.disconnect()))
        .collect();
    f.dist.stop().await;
    let dir = f._tmp.path().join("distributor");
    f.dist = distributor_with(&dir, &f.registry.url, |c| {
        // Long enough that only the agents' return settles it.
        c.unknown_after = Duration::from_secs(60);
    })
    .await;
    f.dc = Client::connect(f.dist.url.clone()).await.unwrap();
    let again = get(&f.dc, &r.id).await.rollout.unwrap();
    assert_eq!(
        (again.state, again.current_wave),
        (pb::RolloutState::Paused as i32, 1),
        "the same place after the restart"
    );
    // Before the nodes it knew are back, a new rollout waits: it must not start its waves
    // on the few nodes that happen to have reconnected (here: none).
    let other =
        f.dc.create_rollout(pb::CreateRolloutRequest {
            profile: "web".into(),
            version: 3,
            target: Some(pb::Target {
                selector: [("kubernetes.io/os".to_owned(), "linux".to_owned())].into(),
                path: "/var/lib/kubelet/seccomp/other.json".into(),
                ..Default::default()
            }),
            strategy: Some(strategy(&["100%"])),
            nci_name: Some("seccomp-other".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    assert_eq!(other.state, pb::RolloutState::Pending as i32);
    for (name, state) in applied {
        let zone = NODES.iter().find(|(n, _)| *n == name).unwrap().1;
        f.agents.push(
            AutoAgent::resume(&f.dist.url, &name, &labels(zone), Behaviour::Apply, state).await,
        );
    }
    let other = wait_for(&f.dc, &other.id, pb::RolloutState::Completed).await;
    assert_eq!(
        other.nodes.unwrap().applied,
        4,
        "once settled, on every node"
    );
    f.dc.resume_rollout(pb::ResumeRolloutRequest { id: r.id.clone() })
        .await
        .unwrap();
    wait_for(&f.dc, &r.id, pb::RolloutState::Completed).await;
    for (name, _) in NODES {
        let n = common::node(&f.dist.url, name).await;
        let file = n
            .files
            .iter()
            .find(|x| x.path.ends_with("web.json"))
            .unwrap();
        assert_eq!(file.version, 1, "{name}");
        assert_eq!(n.state, pb::NodeState::Applied as i32, "{name}");
    }
    // n2 is only sent the set with the other rollout's file in it, never again the set it
    // had applied before the restart.
    let sets = agent(&f, "n2").log.lock().unwrap().clone();
    assert!(
        !sets.contains(&vec![V1.to_vec()]),
        "n2 finished before the restart and is not sent that set again (it had {n2_sent} sets before): {sets:?}"
    );
    assert_eq!(sets.len(), 1, "{sets:?}");
    stop(f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_labels_no_longer_match_leaves_the_rollout() {
    let mut f = fixture(Behaviour::Apply).await;
    let r = create(&mut f.dc, 1, manual(strategy(&["1", "100%"]))).await;
    wait_for(&f.dc, &r.id, pb::RolloutState::Paused).await;
    // n2 (wave 1) comes back as a Windows node.
    let i = f.agents.iter().position(|a| a.node == "n2").unwrap();
    let applied = f.agents.remove(i).disconnect();
    let windows = [("kubernetes.io/os", "windows"), ("zone", "a")];
    f.agents
        .push(AutoAgent::resume(&f.dist.url, "n2", &windows, Behaviour::Apply, applied).await);
    eventually("n2 out of the rollout", WAIT, || {
        let dc = f.dc.clone();
        let id = r.id.clone();
        async move {
            !get(&dc, &id)
                .await
                .nodes
                .iter()
                .any(|n| n.node_name == "n2")
        }
    })
    .await;
    f.dc.resume_rollout(pb::ResumeRolloutRequest { id: r.id.clone() })
        .await
        .unwrap();
    let done = wait_for(&f.dc, &r.id, pb::RolloutState::Completed).await;
    assert_eq!(done.nodes.unwrap().total, 3);
    let n2 = agent(&f, "n2");
    assert_eq!(
        n2.log.lock().unwrap().last().cloned(),
        Some(Vec::new()),
        "n2 was sent the empty set: nothing selects it any more"
    );
    stop(f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joins_mid_rollout_gets_the_stable_version_first() {
    let mut f = fixture(Behaviour::Apply).await;
    let v1 = create(&mut f.dc, 1, strategy(&["100%"])).await;
    wait_for(&f.dc, &v1.id, pb::RolloutState::Completed).await;
    let r = create(&mut f.dc, 2, manual(strategy(&["1", "100%"]))).await;
    wait_for(&f.dc, &r.id, pb::RolloutState::Paused).await;

    let late = AutoAgent::start(&f.dist.url, "n5", &labels("a"), Behaviour::Apply).await;
    eventually("n5 gets version 1", WAIT, || {
        let got = late.received();
        async move { got.iter().any(|c| c == V1) }
    })
    .await;
    assert!(
        !late.received().iter().any(|c| c == V2),
        "not the candidate yet"
    );
    f.agents.push(late);
    f.dc.resume_rollout(pb::ResumeRolloutRequest { id: r.id.clone() })
        .await
        .unwrap();
    let done = wait_for(&f.dc, &r.id, pb::RolloutState::Completed).await;
    assert_eq!(done.nodes.unwrap().total, 5);
    assert_eq!(
        last_content(&f.agents),
        vec![V2.to_vec(); 5],
        "the last wave took n5 too"
    );
    stop(f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_come_in_pages() {
    let mut f = fixture(Behaviour::Apply).await;
    for version in [1, 2, 3] {
        let r = create(&mut f.dc, version, strategy(&["100%"])).await;
        wait_for(&f.dc, &r.id, pb::RolloutState::Completed).await;
    }
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page =
            f.dc.list_rollouts(pb::ListRolloutsRequest {
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.rollouts.len() <= 2);
        ids.extend(page.rollouts.into_iter().map(|r| r.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(ids, ["r3", "r2", "r1"], "newest first, each once");
    let err =
        f.dc.list_rollouts(pb::ListRolloutsRequest {
            page_token: "bogus".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let first =
        f.dc.list_nodes(pb::ListNodesRequest {
            page_size: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = first.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["n1", "n2", "n3"]);
    assert_eq!(first.next_page_token, "n3");
    let rest =
        f.dc.list_nodes(pb::ListNodesRequest {
            page_size: 3,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = rest.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["n4"]);
    assert!(rest.next_page_token.is_empty());
    stop(f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_reports_where_it_loses_its_path() {
    let mut f = fixture(Behaviour::Apply).await;
    let all = create(&mut f.dc, 1, strategy(&["100%"])).await;
    wait_for(&f.dc, &all.id, pb::RolloutState::Completed).await;
    let zone_a =
        f.dc.create_rollout(pb::CreateRolloutRequest {
            profile: "web".into(),
            version: 2,
            target: Some(pb::Target {
                selector: [("zone".to_owned(), "a".to_owned())].into(),
                priority: Some(200),
                ..Default::default()
            }),
            strategy: Some(strategy(&["100%"])),
            nci_name: Some("seccomp-web-zone-a".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    wait_for(&f.dc, &zone_a.id, pb::RolloutState::Completed).await;
    let lost = get(&f.dc, &all.id).await.rollout.unwrap().conflicts;
    assert_eq!(lost.len(), 1, "{lost:?}");
    let c = &lost[0];
    assert_eq!(c.path, "/var/lib/kubelet/seccomp/web.json");
    assert_eq!(
        (
            c.winning_nci.as_str(),
            c.winning_priority,
            c.winning_rollout_id.as_str()
        ),
        ("seccomp-web-zone-a", 200, zone_a.id.as_str())
    );
    assert_eq!(
        (c.node_count, c.sample_nodes.clone()),
        (2, vec!["n2".to_owned(), "n3".to_owned()])
    );
    assert_eq!(
        last_content(&f.agents),
        [V1, V2, V2, V1].map(<[u8]>::to_vec)
    );
    stop(f).await;
}

/// Waves move on the confirmations themselves: with the engine's periodic look an hour away,
/// a four-wave rollout still completes, each wave started by the acknowledgements that
/// finished the one before (no wave waits for a timer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_advance_on_confirmations_not_on_a_timer() {
    let mut f = fixture_with(Behaviour::Apply, |c| {
        c.engine_tick = Duration::from_secs(3600);
    })
    .await;
    let r = create(&mut f.dc, 1, strategy(&["1", "2", "3", "100%"])).await;
    let done = wait_for(&f.dc, &r.id, pb::RolloutState::Completed).await;
    let started: Vec<&str> = done
        .history
        .iter()
        .map(|t| t.reason.as_str())
        .filter(|reason| reason.starts_with("wave "))
        .collect();
    assert_eq!(
        started.len(),
        4,
        "every wave started, each by confirmations: {started:?}"
    );
    assert_eq!(done.nodes.unwrap().applied, 4);
    stop(f).await;
}

//! Safe changes over the real registry, distributor and scripted agents: the guards refuse a
//! selector that matches no node and a change that takes a file away (and nothing on any
//! node changes); a plan lists exactly what the rollout then does, over a fleet with
//! several NCIs, priorities and a conflict; a removal goes through the waves like any change,
//! and an abort or an automatic rollback puts the file back.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{AutoAgent, Behaviour, Dist, distributor, eventually, publish, registry, wait_state};
use seccomp_proto::distributor::v1 as pb;

const WEB: &str = "/var/lib/kubelet/seccomp/web.json";
const WAIT: Duration = Duration::from_secs(20);

fn selector(terms: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    terms
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn web(version: u64, terms: &[(&str, &str)], waves: &[&str]) -> pb::CreateRolloutRequest {
    pb::CreateRolloutRequest {
        profile: "web".into(),
        version,
        target: Some(pb::Target {
            selector: selector(terms),
            ..Default::default()
        }),
        strategy: Some(pb::Strategy {
            waves: waves.iter().map(|w| (*w).to_owned()).collect(),
            max_unavailable: "100%".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn create(dc: &mut Dist, req: pb::CreateRolloutRequest) -> String {
    dc.create_rollout(req)
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap()
        .id
}

/// Per node, per file path: the NCI and version the distributor gives it, and whether the
/// agent confirmed it.
type Files = BTreeMap<String, BTreeMap<String, (String, u64, bool)>>;

async fn files(dc: &mut Dist) -> Files {
    let nodes = dc
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes;
    nodes
        .into_iter()
        .map(|n| {
            let files = n
                .files
                .into_iter()
                .filter(|f| f.version != 0)
                .map(|f| {
                    let applied = f.state == pb::NodeState::Applied as i32;
                    (f.path, (f.nci_name, f.version, applied))
                })
                .collect();
            (n.name, files)
        })
        .collect()
}

/// Until every node confirmed what it is given; then what that is.
async fn settled(dc: &Dist) -> Files {
    let last = std::sync::Mutex::new(Files::new());
    eventually("every node to confirm its files", WAIT, || {
        let mut dc = dc.clone();
        let last = &last;
        async move {
            let now = files(&mut dc).await;
            let done = now.values().flat_map(|f| f.values()).all(|(_, _, ok)| *ok);
            *last.lock().unwrap() = now;
            done
        }
    })
    .await;
    last.into_inner().unwrap()
}

fn action_name(a: i32) -> &'static str {
    match pb::PlanAction::try_from(a).unwrap() {
        pb::PlanAction::Add => "add",
        pb::PlanAction::Update => "update",
        pb::PlanAction::Remove => "remove",
        pb::PlanAction::Unchanged => "unchanged",
        pb::PlanAction::Unspecified => "?",
    }
}

/// The actions that turn `before` into `after`, per node and path (as the plan names them).
fn outcome(before: &Files, after: &Files) -> BTreeMap<(String, String), &'static str> {
    let mut out = BTreeMap::new();
    for (node, b) in before {
        let empty = BTreeMap::new();
        let a = after.get(node).unwrap_or(&empty);
        for path in b.keys().chain(a.keys()) {
            let action = match (b.get(path), a.get(path)) {
                (None, Some(_)) => "add",
                (Some(_), None) => "remove",
                (Some(x), Some(y)) if (&x.0, x.1) == (&y.0, y.1) => "unchanged",
                _ => "update",
            };
            out.insert((node.clone(), path.clone()), action);
        }
    }
    out
}

async fn listed(dc: &Dist) -> usize {
    dc.clone()
        .list_rollouts(pb::ListRolloutsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .rollouts
        .len()
}

async fn plan(dc: &Dist, req: pb::CreateRolloutRequest) -> pb::PlanRolloutResponse {
    dc.clone()
        .plan_rollout(pb::PlanRolloutRequest {
            change: Some(pb::plan_rollout_request::Change::Create(req)),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removals_are_planned_guarded_staged_and_undone() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry(&tmp.path().join("registry")).await;
    let dist = distributor(&tmp.path().join("distributor"), &reg.url).await;
    let v1 = publish(&reg.url, "web", b"{\"defaultAction\":\"SCMP_ACT_ERRNO\"}\n").await;
    let v2 = publish(&reg.url, "web", b"{\"defaultAction\":\"SCMP_ACT_LOG\"}\n").await;
    publish(
        &reg.url,
        "other",
        b"{\"defaultAction\":\"SCMP_ACT_ALLOW\"}\n",
    )
    .await;
    // Waves take zone a first: node-3 is the first node of any wave.
    let labels: [(&str, Vec<(&str, &str)>); 3] = [
        ("node-1", vec![("os", "linux"), ("zone", "b")]),
        (
            "node-2",
            vec![("os", "linux"), ("zone", "b"), ("special", "yes")],
        ),
        ("node-3", vec![("os", "linux"), ("zone", "a")]),
    ];
    let mut agents = BTreeMap::new();
    for (name, l) in &labels {
        agents.insert(
            *name,
            AutoAgent::start(&dist.url, name, l, Behaviour::Apply).await,
        );
    }
    let mut dc = pb::distributor_client::DistributorClient::connect(dist.url.clone())
        .await
        .unwrap();

    // web v1 everywhere; `override` writes the same path at a higher priority on node-2 (a
    // conflict that web loses there), and another profile everywhere.
    let first = create(&mut dc, web(v1, &[("os", "linux")], &["100%"])).await;
    wait_state(&dc, &first, pb::RolloutState::Completed).await;
    let mut over = web(0, &[("special", "yes")], &["100%"]);
    over.profile = "other".into();
    over.nci_name = Some("override".into());
    over.target.as_mut().unwrap().path = WEB.into();
    over.target.as_mut().unwrap().priority = Some(200);
    let over = create(&mut dc, over).await;
    wait_state(&dc, &over, pb::RolloutState::Completed).await;
    let mut other = web(0, &[("os", "linux")], &["100%"]);
    other.profile = "other".into();
    let other = create(&mut dc, other).await;
    wait_state(&dc, &other, pb::RolloutState::Completed).await;
    let start = settled(&dc).await;
    assert_eq!(start["node-2"][WEB].0, "override");
    let sent: Vec<usize> = agents.values().map(AutoAgent::desired_count).collect();
    let stored = listed(&dc).await;

    // A typo'd selector matches nothing: refused, naming the key that exists.
    let err = dc
        .create_rollout(web(v2, &[("kubernetes.io/os", "linux")], &["100%"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("did you mean os?"),
        "{}",
        err.message()
    );
    // A narrower selector takes web.json from node-3: refused, naming it.
    let err = dc
        .create_rollout(web(v2, &[("zone", "b")], &["1", "100%"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("1 node(s)") && err.message().contains("node-3 loses"),
        "{}",
        err.message()
    );
    // Neither stored anything nor sent any node anything.
    assert_eq!(listed(&dc).await, stored);
    assert_eq!(files(&mut dc).await, start);
    let now: Vec<usize> = agents.values().map(AutoAgent::desired_count).collect();
    assert_eq!(now, sent);

    // The plan of the narrowing: node-1 goes to v2, node-2 keeps the override's file (web
    // still loses there), node-3 loses web.json, in wave 1.
    let p = plan(&dc, web(v2, &[("zone", "b")], &["1", "100%"])).await;
    assert_eq!((p.removal_nodes, p.matching_nodes), (1, 2));
    assert_eq!(p.rollouts.len(), 1);
    assert_eq!(p.rollouts[0].wave_sizes, [1, 2]);
    assert_eq!(p.rollouts[0].stable_version, Some(v1));
    let by_node: BTreeMap<&str, &pb::PlannedNode> =
        p.nodes.iter().map(|n| (n.node_name.as_str(), n)).collect();
    assert_eq!(action_name(by_node["node-1"].action), "update");
    assert_eq!(action_name(by_node["node-2"].action), "unchanged");
    assert_eq!(action_name(by_node["node-3"].action), "remove");
    assert_eq!(by_node["node-3"].wave, 1);
    assert_eq!(by_node["node-1"].wave, 2);
    let web1 = by_node["node-1"]
        .files
        .iter()
        .find(|f| f.path == WEB)
        .unwrap();
    assert_eq!((web1.from_version, web1.to_version), (Some(v1), Some(v2)));
    assert_eq!(p.sink_changes.len(), 1);
    assert_eq!(
        (p.sink_changes[0].from_version, p.sink_changes[0].to_version),
        (Some(v1), Some(v2))
    );
    // Planning stored and sent nothing.
    assert_eq!(listed(&dc).await, stored);

    // Staged: with a manual pause after wave 1, exactly node-3 has lost the file.
    let mut staged = web(v2, &[("zone", "b")], &["1", "100%"]);
    staged.allow_removal = true;
    staged.strategy.as_mut().unwrap().pause = Some(pb::strategy::Pause::Manual(true));
    let staged = create(&mut dc, staged).await;
    assert_eq!(
        (first.as_str(), staged.as_str()),
        ("r1", "r4"),
        "refused and planned changes take no rollout id"
    );
    wait_state(&dc, &staged, pb::RolloutState::Paused).await;
    let mid = settled(&dc).await;
    assert!(!mid["node-3"].contains_key(WEB), "{mid:?}");
    assert_eq!(mid["node-1"][WEB], ("seccomp-web".to_owned(), v1, true));
    let view = dc
        .get_rollout(pb::GetRolloutRequest {
            id: staged.clone(),
            include_nodes: true,
        })
        .await
        .unwrap()
        .into_inner();
    let rows: BTreeMap<&str, &pb::RolloutNode> = view
        .nodes
        .iter()
        .map(|n| (n.node_name.as_str(), n))
        .collect();
    assert!(rows["node-3"].removal);
    assert_eq!(rows["node-3"].state, pb::NodeState::Applied as i32);
    assert!(!rows["node-1"].removal);
    assert_eq!(view.rollout.unwrap().nodes.unwrap().total, 3);

    // Abort puts it back on node-3.
    dc.abort_rollout(pb::AbortRolloutRequest {
        id: staged,
        reason: String::new(),
    })
    .await
    .unwrap();
    let back = settled(&dc).await;
    assert_eq!(back, start, "after the abort every node has what it had");

    // The plan, then the rollout: the plan named exactly what changed.
    let mut req = web(v2, &[("zone", "b")], &["100%"]);
    req.allow_removal = true;
    let p = plan(&dc, req.clone()).await;
    let done = create(&mut dc, req).await;
    wait_state(&dc, &done, pb::RolloutState::Completed).await;
    let end = settled(&dc).await;
    let planned: BTreeMap<(String, String), &'static str> = p
        .nodes
        .iter()
        .flat_map(|n| {
            n.files
                .iter()
                .map(|f| ((n.node_name.clone(), f.path.clone()), action_name(f.action)))
        })
        .collect();
    assert_eq!(planned, outcome(&back, &end));
    assert!(!end["node-3"].contains_key(WEB));
    assert_eq!(end["node-1"][WEB], ("seccomp-web".to_owned(), v2, true));

    // A removal that fails (node-1 stops answering) rolls back: node-1 is given web.json again.
    let applied = agents.remove("node-1").unwrap().disconnect();
    let silent = AutoAgent::resume(
        &dist.url,
        "node-1",
        &labels[0].1,
        Behaviour::Silent,
        applied,
    )
    .await;
    let mut failing = web(v2, &[("zone", "b"), ("special", "yes")], &["100%"]);
    failing.allow_removal = true;
    failing.strategy.as_mut().unwrap().progress_deadline = Some(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    let failing = create(&mut dc, failing).await;
    common::wait_states(
        &dc,
        &failing,
        &[pb::RolloutState::RollingBack, pb::RolloutState::Aborted],
    )
    .await;
    let given = files(&mut dc).await;
    assert_eq!(
        (given["node-1"][WEB].0.as_str(), given["node-1"][WEB].1),
        ("seccomp-web", v2),
        "the rollback gives node-1 its file back"
    );
    // And once node-1 answers again, it has it.
    let applied = silent.disconnect();
    let back_agent =
        AutoAgent::resume(&dist.url, "node-1", &labels[0].1, Behaviour::Apply, applied).await;
    let restored = settled(&dc).await;
    assert_eq!(
        restored["node-1"][WEB],
        ("seccomp-web".to_owned(), v2, true)
    );
    back_agent.leave();
    for a in agents.into_values() {
        a.leave();
    }
    dist.stop().await;
    reg.stop().await;
}

async fn retire(dc: &mut Dist, waves: &[&str], manual: bool) -> Result<String, tonic::Status> {
    let r = dc
        .retire_nci(pb::RetireNciRequest {
            nci_name: "seccomp-web".into(),
            strategy: Some(pb::Strategy {
                waves: waves.iter().map(|w| (*w).to_owned()).collect(),
                max_unavailable: "100%".into(),
                pause: manual.then_some(pb::strategy::Pause::Manual(true)),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    Ok(r.into_inner().rollout.unwrap().id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retiring_an_nci_takes_its_file_off_in_waves_and_abort_or_rollback_gives_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry(&tmp.path().join("registry")).await;
    let dir = tmp.path().join("distributor");
    let dist = distributor(&dir, &reg.url).await;
    let v1 = publish(&reg.url, "web", b"{\"defaultAction\":\"SCMP_ACT_ERRNO\"}\n").await;
    let linux = [("os", "linux")];
    let a = AutoAgent::start(&dist.url, "node-a", &linux, Behaviour::Apply).await;
    let b = AutoAgent::start(&dist.url, "node-b", &linux, Behaviour::Apply).await;
    let mut dc = pb::distributor_client::DistributorClient::connect(dist.url.clone())
        .await
        .unwrap();
    let yaml = dir.join("gitops/seccomp-web.yaml");

    // Nothing to retire before a version completed.
    assert_eq!(
        retire(&mut dc, &["100%"], false).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    let first = create(&mut dc, web(v1, &linux, &["100%"])).await;
    wait_state(&dc, &first, pb::RolloutState::Completed).await;
    let start = settled(&dc).await;
    eventually("the YAML sink to hold the NCI", WAIT, || async {
        yaml.exists()
    })
    .await;

    // The plan: both nodes lose the file, and the sinks delete the NCI.
    let p = dc
        .plan_rollout(pb::PlanRolloutRequest {
            change: Some(pb::plan_rollout_request::Change::Retire(
                pb::RetireNciRequest {
                    nci_name: "seccomp-web".into(),
                    strategy: Some(pb::Strategy {
                        waves: vec!["1".into(), "100%".into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.removal_nodes, 2);
    assert_eq!(p.rollouts[0].wave_sizes, [1, 1]);
    assert!(p.nodes.iter().all(|n| action_name(n.action) == "remove"));
    assert_eq!(action_name(p.sink_changes[0].action), "remove");
    assert_eq!(listed(&dc).await, 1, "planning stores nothing");

    // In waves: after wave 1 only node-a has lost it; abort gives it back.
    let staged = retire(&mut dc, &["1", "100%"], true).await.unwrap();
    wait_state(&dc, &staged, pb::RolloutState::Paused).await;
    let mid = settled(&dc).await;
    assert!(!mid["node-a"].contains_key(WEB), "{mid:?}");
    assert!(mid["node-b"].contains_key(WEB), "{mid:?}");
    assert!(
        yaml.exists(),
        "the sinks keep the NCI until the retirement completes"
    );
    dc.abort_rollout(pb::AbortRolloutRequest {
        id: staged,
        reason: String::new(),
    })
    .await
    .unwrap();
    assert_eq!(settled(&dc).await, start);

    // To the end: no node has it, the YAML sink deleted it, and it cannot be retired twice.
    let done = retire(&mut dc, &["100%"], false).await.unwrap();
    wait_state(&dc, &done, pb::RolloutState::Completed).await;
    let end = settled(&dc).await;
    assert!(end.values().all(|f| !f.contains_key(WEB)), "{end:?}");
    eventually("the YAML sink to delete the NCI", WAIT, || async {
        !yaml.exists()
    })
    .await;
    let again = retire(&mut dc, &["100%"], false).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    assert!(
        again.message().contains("already retired"),
        "{}",
        again.message()
    );

    // A rollback brings the version back everywhere.
    let back = dc
        .rollback(pb::RollbackRequest {
            profile: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rollouts;
    wait_state(&dc, &back[0].id, pb::RolloutState::Completed).await;
    assert_eq!(settled(&dc).await, start);
    a.leave();
    b.leave();
    dist.stop().await;
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_move_to_another_path_leaves_no_node_without_the_old_file() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry(&tmp.path().join("registry")).await;
    let dist = distributor(&tmp.path().join("distributor"), &reg.url).await;
    let v1 = publish(&reg.url, "web", b"{\"defaultAction\":\"SCMP_ACT_ERRNO\"}\n").await;
    let v2 = publish(&reg.url, "web", b"{\"defaultAction\":\"SCMP_ACT_LOG\"}\n").await;
    let linux = [("os", "linux")];
    let a = AutoAgent::start(&dist.url, "node-a", &linux, Behaviour::Apply).await;
    let b = AutoAgent::start(&dist.url, "node-b", &linux, Behaviour::Apply).await;
    let mut dc = pb::distributor_client::DistributorClient::connect(dist.url.clone())
        .await
        .unwrap();
    let first = create(&mut dc, web(v1, &linux, &["100%"])).await;
    wait_state(&dc, &first, pb::RolloutState::Completed).await;

    // v2 at another path: node-a, in wave 1, has the new file and not the old one.
    let moved = "/var/lib/kubelet/seccomp/moved.json";
    let mut req = web(v2, &linux, &["1", "100%"]);
    req.target.as_mut().unwrap().path = moved.into();
    req.strategy.as_mut().unwrap().pause = Some(pb::strategy::Pause::Manual(true));
    let refused = dc.create_rollout(req.clone()).await.unwrap_err();
    assert!(
        refused.message().contains("removes a file from 2 node(s)"),
        "{}",
        refused.message()
    );
    req.allow_removal = true;
    let id = create(&mut dc, req).await;
    wait_state(&dc, &id, pb::RolloutState::Paused).await;
    let mid = settled(&dc).await;
    assert_eq!(mid["node-a"].keys().collect::<Vec<_>>(), [moved]);
    assert_eq!(mid["node-b"].keys().collect::<Vec<_>>(), [WEB]);

    // Aborted: node-a keeps the new file and gets the old one back.
    dc.abort_rollout(pb::AbortRolloutRequest {
        id,
        reason: String::new(),
    })
    .await
    .unwrap();
    let end = settled(&dc).await;
    assert_eq!(end["node-a"][moved].1, v2);
    assert_eq!(end["node-a"][WEB].1, v1);
    assert_eq!(end["node-b"].keys().collect::<Vec<_>>(), [WEB]);
    a.leave();
    b.leave();
    dist.stop().await;
    reg.stop().await;
}

//! What keeps rollouts moving when parts of the distributor misbehave: a sink that never
//! answers (a black-holed API server) does not hold up any rollout, and an engine that
//! panics is restarted from the store while health says NOT_SERVING, after which rollouts go
//! on.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{AutoAgent, Behaviour, distributor_with, publish, registry};
use seccomp_distributor::BoxFuture;
use seccomp_distributor::sinks::NciSink;
use seccomp_proto::distributor::v1 as pb;
use seccomp_rollout::nci::NodeConfigItem;
use tokio_stream::StreamExt;

const PROFILE: &[u8] = b"{\"defaultAction\":\"SCMP_ACT_ERRNO\"}\n";
const WAIT: Duration = Duration::from_secs(20);

/// A sink whose every sync waits forever, as one to a black-holed API server does.
struct BlackHole;

impl NciSink for BlackHole {
    fn describe(&self) -> String {
        "black hole".to_owned()
    }
    fn sync<'a>(
        &'a self,
        _ncis: &'a [NodeConfigItem],
    ) -> BoxFuture<'a, seccomp_distributor::Result<()>> {
        Box::pin(std::future::pending())
    }
}

async fn completed(dc: &mut common::Dist) {
    let rollout = dc
        .create_rollout(pb::CreateRolloutRequest {
            profile: "web".into(),
            target: Some(pb::Target {
                selector: [("os".to_owned(), "linux".to_owned())].into(),
                ..Default::default()
            }),
            strategy: Some(pb::Strategy {
                waves: vec!["1".into(), "100%".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    common::wait_state(dc, &rollout.id, pb::RolloutState::Completed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_never_answers_holds_up_no_rollout() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry(&tmp.path().join("registry")).await;
    publish(&reg.url, "web", PROFILE).await;
    let dist = distributor_with(&tmp.path().join("distributor"), &reg.url, |c| {
        c.sinks.push(Arc::new(BlackHole));
    })
    .await;
    let _agents = [
        AutoAgent::start(&dist.url, "n1", &[("os", "linux")], Behaviour::Apply).await,
        AutoAgent::start(&dist.url, "n2", &[("os", "linux")], Behaviour::Apply).await,
    ];
    let mut dc = pb::distributor_client::DistributorClient::connect(dist.url.clone())
        .await
        .unwrap();
    completed(&mut dc).await;
    dist.stop().await;
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_engine_is_restarted_and_health_says_so_meanwhile() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry(&tmp.path().join("registry")).await;
    publish(&reg.url, "web", PROFILE).await;
    let handle: Arc<std::sync::Mutex<Option<Arc<seccomp_distributor::service::Distributor>>>> =
        Arc::default();
    let slot = Arc::clone(&handle);
    let dist = distributor_with(&tmp.path().join("distributor"), &reg.url, move |c| {
        c.on_start = Some(Arc::new(move |d| {
            *slot.lock().unwrap() = Some(d);
        }));
    })
    .await;
    let _agents = [
        AutoAgent::start(&dist.url, "n1", &[("os", "linux")], Behaviour::Apply).await,
        AutoAgent::start(&dist.url, "n2", &[("os", "linux")], Behaviour::Apply).await,
    ];
    let channel = tonic::transport::Endpoint::from_shared(dist.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, serving);

    let distributor = handle
        .lock()
        .unwrap()
        .clone()
        .expect("the distributor started");
    distributor.inject_engine_panic();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(seen.contains(&not_serving) && seen.last() == Some(&serving)) {
        let next = tokio::time::timeout_at(deadline, watch.next())
            .await
            .expect("health goes NOT_SERVING, then SERVING")
            .unwrap()
            .unwrap();
        seen.push(next.status);
    }
    let mut dc = pb::distributor_client::DistributorClient::new(channel);
    completed(&mut dc).await;
    dist.stop().await;
    reg.stop().await;
}

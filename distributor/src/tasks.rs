//! The background tasks of a running distributor: the leader's (the rollout engine under
//! supervision, the sinks, the audit pruning), started once for a lone distributor and at
//! every election won for a replica; and a replica's own (the etcd watch, its agents'
//! facts and presence, the commands passed to it, and the election), see [`crate::replica`].

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::hub::Hub;
use crate::leader;
use crate::replica::Replica;
use crate::service::Distributor;
use crate::store::EtcdSettings;

/// The leader's tasks, while they run.
pub(crate) struct LeaderTasks {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl LeaderTasks {
    /// Start the engine, the sinks, and (with a retention) the audit pruning.
    pub(crate) fn start(
        distributor: &Arc<Distributor>,
        health: &seccomp_server::grpc::HealthReporter,
        readiness: &seccomp_server::metrics::Readiness,
        audit_retention: Option<Duration>,
    ) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = vec![tokio::spawn(supervise_engine(
            Arc::clone(distributor),
            health.clone(),
            readiness.clone(),
            stopped.clone(),
        ))];
        let d = Arc::clone(distributor);
        let until = crate::stopped(stopped.clone());
        tasks.push(tokio::spawn(async move { d.run_sinks(until).await }));
        if let Some(retention) = audit_retention {
            let d = Arc::clone(distributor);
            tasks.push(tokio::spawn(seccomp_server::retention::prune_until(
                retention,
                move |before| d.prune_audit(before),
                crate::stopped(stopped),
            )));
        }
        LeaderTasks { stop, tasks }
    }

    /// Stop them between rounds, and wait until they did.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Run the rollout engine until `stop` says true. A panic in it is logged, health goes
/// NOT_SERVING (so load balancers and probes see it), the rollouts are read from the store
/// again (the panic may have left a half-made change in memory), and the engine restarts;
/// health is SERVING again once it runs.
async fn supervise_engine(
    distributor: Arc<Distributor>,
    health: seccomp_server::grpc::HealthReporter,
    ready: seccomp_server::metrics::Readiness,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let task = {
            let distributor = Arc::clone(&distributor);
            let stop = crate::stopped(stop.clone());
            tokio::spawn(async move { distributor.run_engine(stop).await })
        };
        match task.await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                tracing::error!(error = %e, "the rollout engine panicked; restarting it from the store");
                seccomp_server::grpc::set_not_serving(&health, &crate::SERVICES).await;
                ready.set(false);
                // Not at once: a panic that comes back at every tick must not spin.
                tokio::time::sleep(ENGINE_RESTART).await;
                if *stop.borrow() {
                    return;
                }
                match distributor.reload().await {
                    Ok(()) => {
                        seccomp_server::grpc::set_serving(&health, &crate::SERVICES).await;
                        ready.set(true);
                    }
                    Err(e) => tracing::error!(error = %e, "cannot reload the rollouts; retrying"),
                }
            }
            Err(_) => return,
        }
    }
}

/// How long the engine waits before it restarts after a panic.
const ENGINE_RESTART: Duration = Duration::from_secs(1);

/// What a replica's tasks work on.
pub(crate) struct Context {
    pub(crate) replica: Arc<Replica>,
    pub(crate) distributor: Arc<Distributor>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) health: seccomp_server::grpc::HealthReporter,
    pub(crate) readiness: seccomp_server::metrics::Readiness,
    pub(crate) audit_retention: Option<Duration>,
    pub(crate) settings: crate::ReplicaSettings,
}

/// A replica's tasks, while they run.
pub(crate) struct Replication {
    stop: CancellationToken,
    election: JoinHandle<()>,
    facts: JoinHandle<()>,
    others: Vec<JoinHandle<()>>,
    replica: Arc<Replica>,
}

/// Start a replica's tasks: follow etcd, store its agents' facts, keep its presence, run
/// passed commands while leading, and take part in the election.
pub(crate) async fn start(context: Context, etcd: &EtcdSettings) -> Result<Replication> {
    // Watches and campaigns last: a client without a request timeout.
    let unbounded = crate::store::etcd::election_client(etcd).await?;
    let stop = CancellationToken::new();
    let replica = Arc::clone(&context.replica);
    // What the mirror was read with (the watch starts after it).
    replica.take_all_nodes(&context.hub);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut others = Vec::new();
    {
        let r = Arc::clone(&replica);
        let (client, stop) = (unbounded.clone(), stop.clone());
        others.push(tokio::spawn(async move {
            r.backend().follow(client, tx, stop).await
        }));
    }
    {
        let r = Arc::clone(&replica);
        let (d, h) = (Arc::clone(&context.distributor), Arc::clone(&context.hub));
        others.push(tokio::spawn(async move { r.apply_changes(d, h, rx).await }));
    }
    {
        let r = Arc::clone(&replica);
        let stop = stop.clone();
        others.push(tokio::spawn(async move {
            r.backend().keep_presence(stop).await
        }));
    }
    {
        let r = Arc::clone(&replica);
        let stop = stop.clone();
        others.push(tokio::spawn(async move { r.run_commands(stop).await }));
    }
    let facts = {
        let r = Arc::clone(&replica);
        let (d, h) = (Arc::clone(&context.distributor), Arc::clone(&context.hub));
        let stop = stop.clone();
        tokio::spawn(async move { r.store_node_facts(d, h, stop).await })
    };
    let election = tokio::spawn(elect(context, unbounded, stop.clone()));
    Ok(Replication {
        stop,
        election,
        facts,
        others,
        replica,
    })
}

impl Replication {
    /// Stop: the leader (if this is it) stops its engine, stores its state and resigns;
    /// the agents' last facts are stored and this replica's presence taken back.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.election.await;
        let _ = self.facts.await;
        self.replica.backend().revoke_presence().await;
        for task in self.others {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Label this pod as leading or not, if asked to (`--leader-pod`); a failure is logged.
async fn label(pod: Option<&seccomp_k8s::LeaderPod>, leading: bool) {
    let Some(pod) = pod else { return };
    match tokio::time::timeout(Duration::from_secs(5), pod.set(leading)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("{e}"),
        Err(_) => tracing::warn!("no answer labelling this pod"),
    }
}

/// Campaign; while elected run the leader's tasks; when deposed, follow again and campaign
/// again; on `stop`, resign.
async fn elect(c: Context, client: etcd_client::Client, stop: CancellationToken) {
    let pod = c.settings.leader_pod.as_ref();
    let election = &c.settings.election;
    let prefix = c.replica.backend().prefix().to_owned();
    // A label left by an earlier run of this pod.
    label(pod, false).await;
    loop {
        let leadership = match leader::campaign(&client, &prefix, election, &stop).await {
            Ok(Some(leadership)) => leadership,
            Ok(None) => return,
            // etcd unreachable, or the lease lost while waiting: campaign again.
            Err(e) => {
                tracing::warn!(error = %e, "campaigning again in a second");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if let Err(e) = c
            .replica
            .lead(leadership.fence(), &c.distributor, &c.hub)
            .await
        {
            // etcd went away between the election and reading the state: let another
            // replica (or this one, later) try.
            tracing::error!(error = %e, "cannot lead: the state could not be read; following");
            c.replica.follow(&c.distributor, &c.hub).await;
            leadership.abandon().await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        }
        tracing::info!(replica = %election.replica_id, "leading: the rollout engine runs here");
        label(pod, true).await;
        let tasks = LeaderTasks::start(&c.distributor, &c.health, &c.readiness, c.audit_retention);
        tokio::select! {
            () = stop.cancelled() => {}
            () = leadership.deposed() => {}
        }
        tasks.stop().await;
        if stop.is_cancelled() {
            if let Err(e) = c.distributor.persist().await {
                tracing::error!(error = %e, "the last rollout states could not be stored");
            }
            if !leadership.is_deposed() {
                leadership.resign().await;
            }
            c.replica.stand_down();
            label(pod, false).await;
            return;
        }
        label(pod, false).await;
        c.replica.follow(&c.distributor, &c.hub).await;
        leadership.abandon().await;
        tracing::warn!(replica = %election.replica_id, "no longer the leader: the engine stopped here; serving as a follower");
    }
}

//! Distributor replicas that all serve (#18): every replica holds agent streams and answers
//! the management API; one of them, elected ([`crate::leader`]), runs the rollout engine,
//! the sinks and the audit pruning. What they share goes through etcd:
//!
//! - **Rollout records** are written by the leader only (fenced); every other replica
//!   follows them by watch ([`EtcdBackend::follow`]) and computes its agents' desired sets
//!   from them, so an agent gets the same set whichever replica it is on.
//! - **Node facts**: each replica stores what its agents report (node records, coalesced
//!   per node and sent in transactions of up to 128 keys, [`Distributor::persist_nodes`]),
//!   and says which agents are connected to it (`conn/<replica>/<node>` keys on its
//!   presence lease, so a replica that dies takes them with it). Every replica takes the
//!   others' facts into its hub ([`Hub::remote`]): the leader's engine sees every node's
//!   confirmations, and any replica can list nodes and rollouts with counts.
//! - **Commands** (create, pause, resume, abort, roll back, retire) taken by a replica that
//!   does not lead are put under `commands/` ([`Replica::forward`]); the leader picks them
//!   up by watch, takes each away in a fenced transaction (so it runs once, and never on a
//!   deposed leader), runs it as if called itself, and puts the answer under `results/`,
//!   which the asking replica reads and deletes. A command no leader took within the wait
//!   is taken back: the caller hears it was not applied. Both keys live on the asking
//!   replica's lease.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::BoxFuture;
use crate::error::{Error, Result};
use crate::hub::Hub;
use crate::leader::Fence;
use crate::service::Distributor;
use crate::store::etcd::{Change, EtcdBackend};

/// How a command ended on the leader: a gRPC status code (0 for OK), its message, and the
/// encoded reply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    /// The status code (`tonic::Code` as a number).
    pub code: i32,
    /// The status message.
    pub message: String,
    /// The reply, protobuf-encoded, hex in the stored form.
    #[serde(with = "hex_bytes")]
    pub body: Vec<u8>,
}

/// A command one replica passed to the leader.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Command {
    /// The rpc (`CreateRollout`, ...).
    method: String,
    /// The caller the asking replica verified.
    actor: String,
    /// The request, protobuf-encoded.
    #[serde(with = "hex_bytes")]
    body: Vec<u8>,
    /// The asking replica's presence lease: the answer goes on it.
    lease: i64,
}

/// What runs a command on the leader (the gRPC layer: it decodes the request and calls the
/// same code as a call made to the leader itself).
pub trait Execute: Send + Sync + 'static {
    /// Run `method` with the encoded request `body` for `actor`.
    fn execute<'a>(
        &'a self,
        method: &'a str,
        actor: &'a str,
        body: &'a [u8],
    ) -> BoxFuture<'a, Outcome>;
}

/// This replica's part among the replicas.
pub struct Replica {
    id: String,
    backend: Arc<EtcdBackend>,
    leading: AtomicBool,
    /// Commands this replica passed on, waiting for their answers.
    waiting: Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>,
    next: AtomicU64,
    /// How long a passed command waits for the leader.
    wait: Duration,
    executor: OnceLock<Arc<dyn Execute>>,
    /// Commands for this replica to run while it leads.
    to_run: mpsc::UnboundedSender<String>,
    to_run_rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
}

/// How long node facts are gathered before they are stored (a burst of confirmations goes
/// in few transactions), and the longest between two looks when nothing woke the flusher.
const GATHER: Duration = Duration::from_millis(20);
const FLUSH_AT_LEAST: Duration = Duration::from_secs(1);

impl Replica {
    /// Replica `id` over `backend` (whose presence lease it uses); passed commands wait up
    /// to `wait` for the leader.
    pub fn new(id: String, backend: Arc<EtcdBackend>, wait: Duration) -> Arc<Self> {
        let (to_run, rx) = mpsc::unbounded_channel();
        Arc::new(Replica {
            id,
            backend,
            leading: AtomicBool::new(false),
            waiting: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            wait,
            executor: OnceLock::new(),
            to_run,
            to_run_rx: Mutex::new(Some(rx)),
        })
    }

    /// This replica's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The backend it shares the state through.
    pub fn backend(&self) -> &Arc<EtcdBackend> {
        &self.backend
    }

    /// Whether this replica leads now (its engine runs, and it runs commands itself).
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    /// What runs the commands passed to this replica while it leads (set once).
    pub fn set_executor(&self, executor: Arc<dyn Execute>) {
        let _ = self.executor.set(executor);
    }

    /// This replica was elected: writes are fenced by `fence`, the state is read again
    /// (the previous leader's last writes included), every node taken from it, and the
    /// commands waiting for a leader are run.
    pub async fn lead(&self, fence: Fence, distributor: &Distributor, hub: &Hub) -> Result<()> {
        self.backend.set_fence(Some(fence));
        self.backend.load().await?;
        self.take_all_nodes(hub);
        distributor.begin_term().await?;
        self.leading.store(true, Ordering::Release);
        for id in self.backend.command_ids() {
            let _ = self.to_run.send(id);
        }
        Ok(())
    }

    /// This replica no longer leads: unfenced (only node facts and presence are written),
    /// and the rollouts read again from etcd (memory may hold what etcd refused).
    pub async fn follow(&self, distributor: &Distributor, hub: &Hub) {
        self.stand_down();
        match self.backend.load().await {
            Ok(()) => {
                self.take_all_nodes(hub);
                if let Err(e) = distributor.reload().await {
                    tracing::error!(error = %e, "cannot read the rollouts again");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the state again after stepping down")
            }
        }
    }

    /// On the way out, after resigning: nothing is fenced any more (the agents' last facts
    /// are still stored), and nothing is followed.
    pub fn stand_down(&self) {
        self.leading.store(false, Ordering::Release);
        self.backend.set_fence(None);
    }

    /// Take every node the mirror has into the hub (at start: the nodes connected to other
    /// replicas then send no event).
    pub fn take_all_nodes(&self, hub: &Hub) {
        for name in self.backend.node_names() {
            let (record, elsewhere) = self.backend.node(&name);
            hub.remote(&name, record, elsewhere);
        }
    }

    /// Apply what other replicas changed, as the backend's watch reports it, until the
    /// channel closes: records followed (unless leading), nodes taken into the hub,
    /// commands queued to run (when leading), answers handed to their callers.
    pub async fn apply_changes(
        &self,
        distributor: Arc<Distributor>,
        hub: Arc<Hub>,
        mut changes: mpsc::UnboundedReceiver<Change>,
    ) {
        while let Some(first) = changes.recv().await {
            let mut rollouts = BTreeSet::new();
            let mut nodes = BTreeSet::new();
            let mut reloaded = false;
            let mut next = Some(first);
            while let Some(change) = next.take() {
                match change {
                    Change::Rollout(n) => {
                        rollouts.insert(n);
                    }
                    Change::Node(name) | Change::Presence(name) => {
                        nodes.insert(name);
                    }
                    Change::Command(id) => {
                        if self.is_leading() {
                            let _ = self.to_run.send(id);
                        }
                    }
                    Change::Answer(id, value) => {
                        let waiter = self
                            .waiting
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&id);
                        if let Some(tx) = waiter {
                            let _ = tx.send(value);
                        }
                    }
                    Change::Reloaded => reloaded = true,
                }
                next = changes.try_recv().ok();
            }
            if reloaded {
                self.take_all_nodes(&hub);
            } else {
                for name in &nodes {
                    let (record, elsewhere) = self.backend.node(name);
                    hub.remote(name, record, elsewhere);
                }
            }
            // The leader is the only writer of records: it has them already.
            if self.is_leading() {
                continue;
            }
            let followed = if reloaded {
                distributor.reload().await
            } else if rollouts.is_empty() {
                Ok(())
            } else {
                let numbers: Vec<u64> = rollouts.into_iter().collect();
                distributor.follow_rollouts(&numbers).await
            };
            if let Err(e) = followed {
                tracing::error!(error = %e, "cannot follow the rollouts another replica changed");
            }
        }
    }

    /// Store what the agents connected here report, and which are connected, soon after it
    /// changes (gathered for [`GATHER`]), until `stop`.
    pub async fn store_node_facts(
        &self,
        distributor: Arc<Distributor>,
        hub: Arc<Hub>,
        stop: CancellationToken,
    ) {
        let mut changes = hub.subscribe();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = changes.changed() => {}
                () = tokio::time::sleep(FLUSH_AT_LEAST) => {}
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(GATHER) => {}
            }
            self.store_once(&distributor, &hub).await;
        }
        // What the last agents said on the way out.
        self.store_once(&distributor, &hub).await;
    }

    async fn store_once(&self, distributor: &Distributor, hub: &Hub) {
        let presence = hub.take_presence();
        for (name, connected) in &presence {
            self.backend.set_present(name, *connected);
        }
        if let Err(e) = distributor.persist_nodes().await {
            tracing::warn!(error = %e, "node facts not stored yet; trying again");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // An agent that left may be on another replica already: what that one stored (while
        // the session here still held) counts now.
        for (name, connected) in presence {
            if !connected {
                let (record, elsewhere) = self.backend.node(&name);
                hub.remote(&name, record, elsewhere);
            }
        }
    }

    /// Run the commands passed to this replica while it leads, one at a time, until the
    /// channel closes (`stop`).
    pub async fn run_commands(&self, stop: CancellationToken) {
        let Some(mut rx) = self
            .to_run_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        loop {
            let id = tokio::select! {
                () = stop.cancelled() => return,
                id = rx.recv() => match id {
                    Some(id) => id,
                    None => return,
                },
            };
            if let Err(e) = self.run_command(&id).await {
                tracing::warn!(command = %id, error = %e, "a passed command did not run");
            }
        }
    }

    async fn run_command(&self, id: &str) -> Result<()> {
        let (Some(fence), true) = (self.backend.fence(), self.is_leading()) else {
            return Ok(());
        };
        let Some(value) = self.backend.command(id) else {
            return Ok(());
        };
        // Taken away first, fenced: it runs once, and only here.
        if !self.backend.take_command(id, Some(&fence)).await? {
            return Ok(());
        }
        let outcome = match serde_json::from_slice::<Command>(&value) {
            Ok(c) => match self.executor.get() {
                Some(executor) => {
                    tracing::info!(command = %id, method = %c.method, actor = %c.actor, "running a command passed by another replica");
                    let outcome = executor.execute(&c.method, &c.actor, &c.body).await;
                    (outcome, c.lease)
                }
                None => (
                    Outcome {
                        code: tonic_code::UNAVAILABLE,
                        message: "the leader cannot run passed commands yet".into(),
                        body: Vec::new(),
                    },
                    c.lease,
                ),
            },
            Err(e) => {
                tracing::warn!(command = %id, error = %e, "an unreadable command was dropped");
                return Ok(());
            }
        };
        let answer = serde_json::to_vec(&outcome.0).map_err(|e| Error::Storage(e.to_string()))?;
        self.backend.put_answer(id, answer, outcome.1).await
    }

    /// Pass a command to the leader and wait for its answer (see the module's docs).
    pub async fn forward(&self, method: &str, actor: &str, body: Vec<u8>) -> Result<Outcome> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let id = format!("{}/{nanos:032}-{n}", self.id);
        let command = Command {
            method: method.to_owned(),
            actor: actor.to_owned(),
            body,
            lease: self.backend.presence_lease(),
        };
        let value = serde_json::to_vec(&command).map_err(|e| Error::Storage(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), tx);
        let unwait = || {
            self.waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        };
        if let Err(e) = self.backend.put_command(&id, value).await {
            unwait();
            return Err(Error::Unavailable(format!(
                "{method} not passed to the leader: {e}; it was not applied"
            )));
        }
        let answer = match tokio::time::timeout(self.wait, rx).await {
            Ok(Ok(answer)) => answer,
            _ => {
                unwait();
                // Taken back if no leader took it: then it certainly did not run.
                return Err(match self.backend.take_command(&id, None).await {
                    Ok(true) => Error::Unavailable(format!(
                        "no leader took {method} within {:?}: it was not applied; try again",
                        self.wait
                    )),
                    _ => Error::Unavailable(format!(
                        "the leader took {method} but did not answer within {:?}: it may or \
                         may not have been applied: look before retrying",
                        self.wait
                    )),
                });
            }
        };
        if let Err(e) = self.backend.delete_answer(&id).await {
            tracing::debug!(command = %id, error = %e, "answer left for its lease to take");
        }
        serde_json::from_slice(&answer)
            .map_err(|e| Error::Storage(format!("the leader's answer to {method}: {e}")))
    }
}

/// Bytes as a hex string in JSON.
mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

/// The status codes this module names (as numbers, so it needs no tonic).
pub mod tonic_code {
    /// `UNAVAILABLE`.
    pub const UNAVAILABLE: i32 = 14;
}

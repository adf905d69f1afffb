//! The distributor's operations, transport-free: create staged rollouts (fetching the version
//! from the registry through a [`ProfileSource`]), drive them ([`Distributor::tick`], run by
//! the engine task on every node change and on a timer), pause, resume, abort and roll back,
//! report rollouts and nodes, render NCIs.
//!
//! What each node gets, per NCI name, follows from the newest rollout of that name:
//! Completed: its content everywhere it matches; reverted (rolling or rolled back): the
//! stable content (the last completed rollout's) everywhere; otherwise (in progress, paused,
//! aborted): its content on the nodes its waves targeted, the stable content elsewhere. The
//! sinks (YAML directory, cluster) hold one content per NCI, so they get the stable content
//! until a rollout completes.
//!
//! Every change of a rollout record is written to the store (and flushed) before the nodes are sent anything
//! it implies, so a distributor killed at any point resumes with the same targeted nodes.

//!
//! Layout, by what each part does:
//! - [`desired`]: what is desired: the NCIs in force, the variants the agents get, the
//!   records the sinks get;
//! - [`commands`]: the commands: create, pause, resume, abort, roll back, render;
//! - [`plan`]: what a change would do to every node and sink, and the guards on it (no
//!   matching node, removals);
//! - [`driver`]: what moves rollouts on: the engine tick, settling after a restart, node
//!   sightings, sink syncs and their retries;
//! - [`audit`]: the audit log of commands and refused calls;
//! - [`views`]: what callers see: rollouts with node counts, waves and conflicts, pages,
//!   watch events, which rollout a node's file came from.

mod audit;
mod commands;
mod desired;
mod driver;
mod events;
mod plan;
mod views;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use seccomp_rollout::nci::{self, NodeConfigItem, Target};
use seccomp_rollout::policy::Policy;
use seccomp_rollout::record::RolloutRecord;
use seccomp_rollout::strategy::Strategy;

use crate::BoxFuture;
use crate::clock::Clock;
use crate::error::Result;
use crate::hub::Hub;
use crate::sinks::NciSink;
use crate::store::RolloutStore;

pub use audit::AuditPage;
pub use events::{EventPage, EventQuery, EventView};
pub use plan::{Plan, PlannedNode, PlannedRollout, SinkChange, Versions, version_of};
pub use views::{ConflictView, Counts, FileSources, NodeRow, RolloutView, WatchCursor, WatchEvent};

/// A profile version fetched from the registry.
#[derive(Debug, Clone)]
pub struct FetchedProfile {
    /// Name.
    pub name: String,
    /// Version number.
    pub version: u64,
    /// Exact bytes.
    pub content: Vec<u8>,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Deprecated versions may not be rolled out.
    pub deprecated: bool,
}

/// A pod (or other user) that names a profile file on a node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileUser {
    /// The node.
    pub node: String,
    /// The node path it names.
    pub path: String,
    /// Who: `namespace/pod`.
    pub user: String,
}

/// Who uses profile files on nodes (the cluster's pods, `--check-pods`), asked before a
/// change takes a file away.
pub trait ProfileUsers: Send + Sync + 'static {
    /// Of `files` (node name to the node paths it is to lose), the users of one.
    fn users<'a>(
        &'a self,
        files: &'a std::collections::BTreeMap<String, Vec<String>>,
    ) -> BoxFuture<'a, Result<Vec<FileUser>>>;
}

/// Where profile versions come from (the registry over gRPC, or a test double).
pub trait ProfileSource: Send + Sync + 'static {
    /// Fetch `name` at `version`, or its latest version when `None`.
    fn fetch<'a>(
        &'a self,
        name: &'a str,
        version: Option<u64>,
    ) -> BoxFuture<'a, Result<FetchedProfile>>;
}

impl FetchedProfile {
    /// The NCI that puts this version on the nodes `target` selects (see [`nci::render`]).
    pub fn render(
        &self,
        target: &Target,
        nci_name: Option<&str>,
        rollout_id: Option<&str>,
    ) -> Result<NodeConfigItem> {
        let profile = nci::ProfileRef {
            name: &self.name,
            version: self.version,
            content: &self.content,
        };
        Ok(nci::render(profile, target, nci_name, rollout_id)?)
    }
}

/// How a distributor behaves, besides what it is connected to.
#[derive(Clone)]
pub struct Settings {
    /// After a restart, how long targeted nodes have to reconnect before they count as
    /// Unknown.
    pub settle: Duration,
    /// What NCIs may put on nodes.
    pub policy: Policy,
    /// The time deadlines and timers run on.
    pub clock: Arc<dyn Clock>,
    /// Nodes whose agents have been gone this long are forgotten.
    pub forget_nodes_after: Duration,
    /// Finished rollouts nothing reads any more are forgotten this long after they
    /// finished; `None` keeps them all.
    pub history_retention: Option<Duration>,
    /// Asked before a change takes a file from a node; `None`: nobody is asked.
    pub profile_users: Option<Arc<dyn ProfileUsers>>,
    /// Counted when served (`--metrics-listen`).
    pub metrics: Option<Arc<crate::metrics::DistributorMetrics>>,
    /// How often the engine looks at the rollouts when nothing changed (for deadlines,
    /// timed pauses, and nodes that went silent); every change is acted on at once.
    pub engine_tick: Duration,
    /// The seccomp events agents report (shared with the agent service, which records
    /// them).
    pub events: Arc<crate::events::EventStore>,
}

/// What a rollout asks for.
#[derive(Debug, Clone)]
pub struct RolloutRequest {
    /// Profile name.
    pub profile: String,
    /// Version; `None` for the latest.
    pub version: Option<u64>,
    /// Where and how.
    pub target: Target,
    /// How it proceeds.
    pub strategy: Strategy,
    /// NCI name; `None` for `seccomp-<profile>`.
    pub nci_name: Option<String>,
    /// Who asks.
    pub actor: String,
    /// Create it even when its selector matches no known node.
    pub allow_empty: bool,
    /// Create it even when it takes a file away from some node.
    pub allow_removal: bool,
    /// Take files away even from nodes where a pod names them.
    pub force: bool,
}

/// What a retirement asks for.
#[derive(Debug, Clone)]
pub struct RetireRequest {
    /// The NCI whose file goes away.
    pub nci_name: String,
    /// How it proceeds.
    pub strategy: Strategy,
    /// Who asks.
    pub actor: String,
    /// Take the file away even from nodes where a pod names it.
    pub force: bool,
}

/// What a rollback asks for.
#[derive(Debug, Clone)]
pub struct RollbackRequest {
    /// Profile whose NCIs go back.
    pub profile: String,
    /// Version to return to; `None` for each NCI's stable version.
    pub to_version: Option<u64>,
    /// Only this NCI.
    pub nci_name: Option<String>,
    /// Who asks.
    pub actor: String,
    /// Go back even when that takes a file away from some node.
    pub allow_removal: bool,
    /// Take files away even from nodes where a pod names them.
    pub force: bool,
}

/// What the nodes and the sinks should have, from the stored rollouts.
/// Per NCI name: its newest rollout, and that rollout's stable one when it has one.
type InForce = Vec<(Arc<RolloutRecord>, Option<Arc<RolloutRecord>>)>;

/// The distributor.
pub struct Distributor {
    store: RolloutStore,
    hub: Arc<Hub>,
    source: Arc<dyn ProfileSource>,
    sinks: Vec<Arc<dyn NciSink>>,
    /// What NCIs may put on nodes.
    policy: Policy,
    /// The time deadlines and timers run on.
    clock: Arc<dyn Clock>,
    /// Nodes whose agents have been gone this long are forgotten.
    forget_nodes_after: Duration,
    /// See [`Settings::history_retention`].
    history_retention: Option<Duration>,
    /// See [`Settings::profile_users`].
    profile_users: Option<Arc<dyn ProfileUsers>>,
    /// See [`Settings::metrics`].
    metrics: Option<Arc<crate::metrics::DistributorMetrics>>,
    /// See [`Settings::engine_tick`].
    engine_tick: Duration,
    /// See [`Settings::events`].
    events: Arc<crate::events::EventStore>,
    /// When finished rollouts were last looked at for forgetting.
    history_pruned: std::sync::Mutex<Option<Instant>>,
    /// Stored rollouts whose NCIs the policy refuses (found at start; new ones are checked
    /// when they are made): never served.
    refused: BTreeSet<String>,
    /// Every change of rollout records goes through this lock, so NCI revisions are
    /// sequential and the engine never races a caller.
    write: tokio::sync::Mutex<()>,
    /// Bumped whenever a rollout record changed, for watchers.
    changes: tokio::sync::watch::Sender<u64>,
    /// After a restart the agents need a moment to reconnect. Until every node known before
    /// the restart is back, or this time has passed, rollouts only record what nodes report:
    /// no node is Unknown for being absent, no wave starts or ends.
    settle_until: std::sync::Mutex<Instant>,
    /// How long settling lasts at most (see `settle_until`).
    settle: Duration,
    /// Set once settled (see `settle_until`).
    settled: AtomicBool,
    /// The nodes connected shortly before this process started (persisted), waited for.
    expected: std::sync::Mutex<BTreeSet<String>>,
    /// How many nodes the hub knew at the last record of connected nodes, and when that was.
    sightings: std::sync::Mutex<(usize, Option<Instant>)>,
    /// A record changed what nodes get but the fleet was not rebuilt (its write failed):
    /// flush and rebuild at the next tick.
    stale: AtomicBool,
    /// Ids of the rollouts whose NCIs the sinks last got.
    synced: std::sync::Mutex<Option<Vec<String>>>,
    /// After a failed sink sync, no new attempt before this.
    sink_retry_at: std::sync::Mutex<Option<Instant>>,
    /// Tests: make the next tick panic.
    panic_next_tick: AtomicBool,
    /// The variants the fleet was last built from.
    fleet_variants: std::sync::Mutex<Option<desired::Variants>>,
}

/// How often the connected nodes are recorded.
const SIGHTING_EVERY: Duration = Duration::from_secs(30);

/// After a restart, the distributor waits for the nodes seen connected within this much of
/// the last sighting before it stopped.
const RECENT: Duration = Duration::from_secs(5 * 60);

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How long to wait before syncing a sink again after it failed.
const SINK_RETRY: Duration = Duration::from_secs(10);

/// How long one sink may take to sync.
const SINK_TIMEOUT: Duration = Duration::from_secs(60);

impl Distributor {
    /// Now, on the clock deadlines run on.
    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// A distributor over `store`, serving agents through `hub` and writing NCIs to `sinks`.
    /// Loads the NCIs in force. Targeted nodes that have not reconnected within
    /// `settings.settle` count as Unknown.
    pub fn new(
        store: RolloutStore,
        hub: Arc<Hub>,
        source: Arc<dyn ProfileSource>,
        sinks: Vec<Arc<dyn NciSink>>,
        settings: Settings,
    ) -> Result<Self> {
        let expected = store.recent_nodes(millis(RECENT))?;
        hub.restore(store.nodes()?);
        let settle = settings.settle;
        let mut refused = BTreeSet::new();
        for r in store.all()? {
            if let Err(e) = settings.policy.check(&r.nci) {
                tracing::error!(rollout = %r.id, error = %e, "a stored rollout breaks the policy; it is not served");
                refused.insert(r.id.clone());
            }
        }
        let d = Distributor {
            store,
            hub,
            source,
            sinks,
            policy: settings.policy,
            clock: settings.clock,
            forget_nodes_after: settings.forget_nodes_after,
            history_retention: settings.history_retention,
            profile_users: settings.profile_users,
            metrics: settings.metrics,
            engine_tick: settings.engine_tick,
            events: settings.events,
            history_pruned: std::sync::Mutex::new(None),
            refused,
            write: tokio::sync::Mutex::new(()),
            changes: tokio::sync::watch::Sender::new(0),
            settle_until: std::sync::Mutex::new(Instant::now() + settle),
            settle,
            settled: AtomicBool::new(false),
            sightings: std::sync::Mutex::new((0, None)),
            expected: std::sync::Mutex::new(expected),
            stale: AtomicBool::new(false),
            synced: std::sync::Mutex::new(None),
            sink_retry_at: std::sync::Mutex::new(None),
            panic_next_tick: AtomicBool::new(false),
            fleet_variants: std::sync::Mutex::new(None),
        };
        d.refresh_fleet()?;
        Ok(d)
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Wakes whenever a rollout may have changed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

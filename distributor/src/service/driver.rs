//! What moves rollouts on: [`Distributor::tick`] runs [`engine::step`] for every active
//! rollout (on each hub change, gathered for at most a tick's length, and every 500 ms for
//! deadlines and timed pauses, see [`Distributor::run_engine`]), persists
//! what changed before anything is sent, rebuilds the fleet when what nodes get changed,
//! and then syncs the sinks outside the lock (retrying a failed sink later). After a restart
//! it waits for the nodes seen connected before ("settling"), and it records which nodes are
//! connected so the next restart knows whom to wait for.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use seccomp_rollout::engine::{self, Live};
use seccomp_rollout::nci::NodeConfigItem;
use seccomp_rollout::node::NodeState;
use seccomp_rollout::record::RolloutRecord;

use super::{Distributor, SIGHTING_EVERY, SINK_RETRY, SINK_TIMEOUT};
use crate::error::Result;

/// The longest the engine gathers changes before it acts on them (see
/// [`Distributor::run_engine`]).
const COALESCE_AT_MOST: Duration = Duration::from_millis(50);
/// A pause between node changes this long ends a gathering: the burst is over.
const QUIET: Duration = Duration::from_millis(2);

/// How soon newly connected nodes are recorded as seen, per known node, and at most.
const NEW_NODES_EVERY_PER_NODE: Duration = Duration::from_micros(100);
const NEW_NODES_EVERY: Duration = Duration::from_secs(1);

impl Distributor {
    /// Bring every sink in line with the NCIs in force (skipped when they did not change
    /// since the last successful sync). A failing sink is logged and retried at the next
    /// change; agents do not wait for sinks.
    pub async fn sync_sinks(&self) -> Result<()> {
        let records = self.sink_records()?;
        let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        if self
            .synced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            == Some(&ids)
        {
            return Ok(());
        }
        let retry_at = *self.sink_retry_at.lock().unwrap_or_else(|e| e.into_inner());
        if retry_at.is_some_and(|at| Instant::now() < at) {
            return Ok(());
        }
        let ncis: Vec<NodeConfigItem> = records.iter().map(|r| r.nci.clone()).collect();
        let mut all_ok = true;
        for sink in &self.sinks {
            // A black-holed API server must not hold the sinks up forever either.
            match tokio::time::timeout(SINK_TIMEOUT, sink.sync(&ncis)).await {
                Ok(Ok(())) => {
                    tracing::info!(sink = %sink.describe(), ncis = ncis.len(), "sink in sync")
                }
                Ok(Err(e)) => {
                    all_ok = false;
                    self.count_sink_error(sink.as_ref());
                    tracing::error!(sink = %sink.describe(), error = %e, "sink sync failed")
                }
                Err(_) => {
                    all_ok = false;
                    self.count_sink_error(sink.as_ref());
                    tracing::error!(sink = %sink.describe(), timeout = ?SINK_TIMEOUT, "sink sync timed out")
                }
            }
        }
        if all_ok {
            *self.synced.lock().unwrap_or_else(|e| e.into_inner()) = Some(ids);
            *self.sink_retry_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
        } else {
            *self.sink_retry_at.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Instant::now() + SINK_RETRY);
        }
        Ok(())
    }

    fn count_sink_error(&self, sink: &dyn crate::sinks::NciSink) {
        if let Some(m) = &self.metrics {
            m.sink_errors
                .get_or_create(&crate::metrics::SinkLabels {
                    sink: sink.describe(),
                })
                .inc();
        }
    }

    /// Record, for the nodes of `after` that reached Applied in this step, how long they
    /// took from being targeted.
    fn count_confirmations(&self, before: &RolloutRecord, after: &RolloutRecord, now_ms: u64) {
        let Some(m) = &self.metrics else {
            return;
        };
        for (name, n) in &after.nodes {
            let was = before.nodes.get(name).map(|b| b.state);
            if n.state == NodeState::Applied && was != Some(NodeState::Applied) {
                let ms = now_ms.saturating_sub(n.targeted_at_ms);
                m.confirmation.observe(ms as f64 / 1000.0);
            }
        }
    }

    /// Move every active rollout on (see [`engine::step`]): called by the engine task on
    /// every node change and on a timer. The sinks follow on a task of their own
    /// ([`Distributor::run_sinks`]), so a slow or dead cluster API never stalls rollouts.
    pub async fn tick(&self) -> Result<()> {
        if self.panic_next_tick.swap(false, Ordering::AcqRel) {
            panic!("engine fault injected for a test");
        }
        let _w = self.write.lock().await;
        self.tick_locked().await
    }

    /// Keep the sinks in line with the NCIs in force until `stop` resolves: at every change
    /// of the records and, after a failure, again once the retry delay has passed.
    pub async fn run_sinks(&self, stop: impl Future<Output = ()>) {
        let mut changes = self.subscribe();
        tokio::pin!(stop);
        loop {
            // Shutdown does not wait for a sink that hangs (each write is atomic, so one cut
            // short leaves the old file or the new one).
            tokio::select! {
                () = &mut stop => return,
                synced = self.sync_sinks() => {
                    if let Err(e) = synced {
                        tracing::error!(error = %e, "sinks");
                    }
                }
            }
            tokio::select! {
                () = &mut stop => return,
                _ = changes.changed() => {}
                () = tokio::time::sleep(SINK_RETRY) => {}
            }
        }
    }

    /// Make everything stored durable (on shutdown, after the engine stopped).
    pub async fn persist(&self) -> Result<()> {
        self.store.flush().await
    }

    /// Make the next engine tick panic (for tests of the engine's supervision).
    #[doc(hidden)]
    pub fn inject_engine_panic(&self) {
        self.panic_next_tick.store(true, Ordering::Release);
    }

    /// Forget everything in memory and read the rollouts from the store again (after the
    /// engine panicked mid-tick, its cache may hold a half-made change).
    pub async fn reload(&self) -> Result<()> {
        let _w = self.write.lock().await;
        self.store.reload()?;
        self.refresh_fleet()?;
        self.stale.store(false, Ordering::Release);
        self.bump();
        Ok(())
    }

    /// This replica was elected (#18): read the rollouts from the store again (it holds
    /// what the previous leader wrote), and settle as after a restart: the agents of a
    /// replica that died need a moment to reconnect to another before they count as
    /// Unknown, and the time without a leader does not count against nodes or waves.
    pub async fn begin_term(&self) -> Result<()> {
        let expected = self.store.recent_nodes(super::millis(super::RECENT))?;
        *self.expected.lock().unwrap_or_else(|e| e.into_inner()) = expected;
        *self.settle_until.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now() + self.settle;
        self.settled.store(false, Ordering::Release);
        *self.synced.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.reload().await
    }

    /// Another replica changed the rollout records `numbers` (#18): take them from the
    /// store, rebuild what nodes get, and tell watchers.
    pub async fn follow_rollouts(&self, numbers: &[u64]) -> Result<()> {
        let _w = self.write.lock().await;
        self.store.refresh(numbers)?;
        self.refresh_fleet()?;
        self.bump();
        Ok(())
    }

    /// Store what the agents connected here reported and make it durable (a replica that
    /// does not lead does this instead of the engine's tick, so the leader sees it).
    pub async fn persist_nodes(&self) -> Result<()> {
        self.store.put_nodes(&self.hub.take_changed())?;
        self.store.write_lazy(false)?;
        self.store.flush_given().await
    }

    /// Whether the agents known before a restart had their chance to reconnect. The first
    /// time it is true, the rollouts' deadlines restart: time the distributor was down or
    /// settling does not count against nodes or waves.
    async fn settle(&self) -> Result<bool> {
        if self.settled.load(Ordering::Acquire) {
            return Ok(true);
        }
        // With the cluster's nodes: nothing moves before they are listed.
        if !self.hub.cluster_ready() {
            return Ok(false);
        }
        let (back, expected) = {
            let expected = self.expected.lock().unwrap_or_else(|e| e.into_inner());
            (
                expected.iter().all(|n| self.hub.is_known(n)),
                expected.len(),
            )
        };
        let until = *self.settle_until.lock().unwrap_or_else(|e| e.into_inner());
        if !(back || Instant::now() >= until) {
            return Ok(false);
        }
        let now = self.now_ms();
        for shared in self.store.current()?.into_values() {
            if !shared.state.is_active() {
                continue;
            }
            let mut r = (*shared).clone();
            r.progress_at_ms = r.progress_at_ms.max(now);
            for n in r.nodes.values_mut() {
                if matches!(n.state, NodeState::Applying | NodeState::Pending) {
                    n.since_ms = n.since_ms.max(now);
                }
            }
            self.store.put_lazy(&r)?;
        }
        self.settled.store(true, Ordering::Release);
        if expected > 0 {
            tracing::info!(
                nodes = expected,
                back,
                "settled after the restart; rollouts go on"
            );
        }
        Ok(true)
    }

    /// Record which nodes are connected, soon after a node is new and otherwise every
    /// [`SIGHTING_EVERY`], so a restarted distributor knows whom to wait for. "Soon" grows
    /// with the fleet ([`NEW_NODES_EVERY_PER_NODE`], at most [`NEW_NODES_EVERY`]): each
    /// write is the whole list, and while thousands of agents connect, writing it at every
    /// tick took a third of the engine's time.
    fn remember_nodes(&self) -> Result<()> {
        let count = self.hub.node_count();
        let mut last = self.sightings.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.1.is_none_or(|at| at.elapsed() >= SIGHTING_EVERY);
        let soon = (NEW_NODES_EVERY_PER_NODE * u32::try_from(count).unwrap_or(u32::MAX))
            .min(NEW_NODES_EVERY);
        let grew = count > last.0 && last.1.is_none_or(|at| at.elapsed() >= soon);
        if !(due || grew) {
            return Ok(());
        }
        let names = self.hub.connected_names();
        self.store.saw_nodes(&names, self.now_ms())?;
        *last = (count, Some(Instant::now()));
        // Nodes gone for longer than --forget-nodes-after are forgotten, here and on disk.
        let gone = self.hub.forget_gone(self.forget_nodes_after);
        if !gone.is_empty() {
            tracing::info!(nodes = gone.len(), first = %gone[0], "forgot nodes whose agents have been gone too long");
            self.store.remove_nodes(&gone)?;
        }
        Ok(())
    }

    /// Forget the finished rollouts past `--history-retention` that nothing reads any more
    /// (see [`seccomp_rollout::record::expired`]); looked at every tenth of the retention,
    /// at most hourly.
    async fn forget_old_rollouts(&self) -> Result<()> {
        let Some(retention) = self.history_retention else {
            return Ok(());
        };
        {
            let mut last = self
                .history_pruned
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let every = seccomp_server::retention::interval(retention);
            if last.is_some_and(|at| at.elapsed() < every) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let before = self.now_ms().saturating_sub(super::millis(retention));
        let all = self.store.all()?;
        let ids = seccomp_rollout::record::expired(all.iter().map(|r| &**r), before);
        if ids.is_empty() {
            return Ok(());
        }
        self.store.forget(&ids).await?;
        tracing::info!(rollouts = ids.len(), first = %ids[0], "forgot finished rollouts past the history retention");
        self.bump();
        Ok(())
    }

    pub(super) async fn tick_locked(&self) -> Result<()> {
        // What agents reported goes to the store, so a restart still knows offline nodes.
        self.store.put_nodes(&self.hub.take_changed())?;
        self.store.write_lazy(false)?;
        self.remember_nodes()?;
        self.forget_old_rollouts().await?;
        if self.stale.load(Ordering::Acquire) {
            self.store.flush().await?;
            self.refresh_fleet()?;
            self.stale.store(false, Ordering::Release);
        }
        let settled = self.settle().await?;
        let mut scope = false;
        let mut changed = false;
        for shared in self.store.current()?.into_values() {
            if !shared.state.is_active() {
                continue;
            }
            let mut r = (*shared).clone();
            let live = self.live(&r);
            let live_names: HashSet<&str> = live.iter().map(|l| l.name.as_str()).collect();
            // A targeted node whose labels no longer match leaves the rollout: it gets what
            // its new labels select, like any other node. (Asked of the hub now, not of the
            // snapshot above: an agent may have connected since.)
            let selector = &r.nci.spec.nodeconfigselector;
            let moved: Vec<String> = r
                .nodes
                .keys()
                .filter(|n| {
                    !live_names.contains(n.as_str()) && self.hub.matches(n, selector) == Some(false)
                })
                .cloned()
                .collect();
            for name in &moved {
                tracing::info!(rollout = %r.id, node = %name, "node no longer matches the target; it leaves the rollout");
                r.nodes.remove(name);
            }
            let before = r.state;
            let now = self.now_ms();
            let step = engine::step(&mut r, &live, now, settled);
            self.count_confirmations(&shared, &r, now);
            // Nodes leaving the rollout change what nodes get, like a step's scope change.
            let rescoped = step.scope || !moved.is_empty();
            if rescoped {
                // Until the fleet is rebuilt below; if the write fails, the next tick retries.
                self.stale.store(true, Ordering::Release);
            }
            if r.state != before {
                let reason = r.history.last().map_or("", |t| t.reason.as_str());
                tracing::info!(rollout = %r.id, from = %before, to = %r.state, reason, "rollout state");
            }
            if rescoped || step.durable {
                self.store.put(&r).await?;
            } else if step.changed {
                // Handed over, not copied again: the record has one entry per node.
                self.store.put_lazy_owned(r)?;
            }
            scope |= rescoped;
            changed |= step.changed || rescoped;
        }
        if scope {
            self.refresh_fleet()?;
            self.stale.store(false, Ordering::Release);
        }
        if changed {
            self.bump();
        }
        Ok(())
    }

    /// Run [`Distributor::tick`] on every node change and at least every
    /// [`Settings::engine_tick`](super::Settings::engine_tick) until `stop` resolves. A
    /// change is acted on at once, unless the engine just ran and changes keep coming: then
    /// they are gathered for as long as its last tick took (at most [`COALESCE_AT_MOST`],
    /// and only until a [`QUIET`] pause between changes) and taken in one tick, so that
    /// while thousands of confirmations stream in, the engine, whose tick costs time linear
    /// in the nodes of the active rollouts, takes at most about half a core and leaves the
    /// rest to the streams, and the last confirmation of a burst is acted on at once.
    pub async fn run_engine(&self, stop: impl Future<Output = ()>) {
        let mut nodes = self.hub.subscribe();
        tokio::pin!(stop);
        loop {
            let started = Instant::now();
            if let Err(e) = self.tick().await {
                tracing::error!(error = %e, "rollout engine");
            }
            let took = started.elapsed();
            tokio::select! {
                () = &mut stop => return,
                _ = nodes.changed() => {}
                () = tokio::time::sleep(self.engine_tick) => {}
            }
            // Gather while changes keep coming, until the gathering time is up; a pause of
            // QUIET between changes (the end of a burst) ends it at once.
            let until = tokio::time::Instant::from_std(started + took + took.min(COALESCE_AT_MOST));
            loop {
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep_until(until) => break,
                    more = tokio::time::timeout(QUIET, nodes.changed()) => {
                        if more.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// The nodes `r` changes, as the engine sees them: those its selector matches, and
    /// those only its stable rollout's selector matches (they lose the stable file: a
    /// removal, confirmed once the agent applied a set without it).
    pub(super) fn live(&self, r: &RolloutRecord) -> Vec<Live> {
        // A retirement gives no node anything: every node with the file loses it.
        let adds = !r.retires();
        let mut live: Vec<Live> = if adds {
            self.hub
                .each_matching(&r.nci.spec.nodeconfigselector, |name, labels, n| {
                    let (state, message) = n.state_for_nci(&r.nci_name);
                    Live {
                        name: name.to_owned(),
                        labels: Arc::clone(labels),
                        state,
                        message,
                        removal: false,
                    }
                })
        } else {
            Vec::new()
        };
        let stable = r
            .stable_id
            .as_deref()
            .and_then(|id| self.store.get_shared(id).ok());
        if let Some(stable) = stable.filter(|s| !s.retires()) {
            let paths = super::plan::file_paths(&stable);
            let matching: HashSet<String> = live.iter().map(|l| l.name.clone()).collect();
            let removals =
                self.hub
                    .each_matching(&stable.nci.spec.nodeconfigselector, |name, labels, n| {
                        if matching.contains(name) {
                            return None;
                        }
                        // Until targeted (and while going back) it holds the stable file.
                        let (state, message) = if r.nodes.contains_key(name) && !r.reverted {
                            n.state_for_removal(&paths)
                        } else {
                            n.state_for_nci(&r.nci_name)
                        };
                        Some(Live {
                            name: name.to_owned(),
                            labels: Arc::clone(labels),
                            state,
                            message,
                            removal: true,
                        })
                    });
            live.extend(removals.into_iter().flatten());
        }
        live
    }
}

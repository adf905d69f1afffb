//! The rollout engine's decisions, without I/O or a clock: given a rollout record, the nodes
//! that match its target as the hub sees them now, and the time, [`step`] moves the rollout
//! on (DESIGN.md section 5) and says what changed. The service persists the record and
//! rebuilds the fleet when [`Step::scope`] is set.
//!
//! Rules, in the order `step` applies them:
//! - Every targeted node's state is refreshed from the hub. A node Applying for longer than
//!   `progress_deadline` is Failed (and stays Failed until it confirms). A targeted node the
//!   hub does not know is Unknown once the distributor has settled. Until then (after a
//!   restart, while agents reconnect) nothing else happens: no deadline runs and no wave
//!   starts, grows or ends on a partial fleet.
//! - Pending starts wave 1.
//! - While Progressing or Paused, more Failed nodes than `failure_threshold` fail the
//!   rollout: RollingBack with `auto_rollback` (touched nodes go back to the stable version;
//!   untouched nodes never had anything else), Aborted without. A wave that goes
//!   `progress_deadline` without any node reaching Applied fails it too.
//! - Unknown targeted nodes pause the rollout (unless a caller waived them by resuming); it
//!   goes on by itself when they return.
//! - Progressing targets the next nodes in [`order_nodes`] order until the wave's cumulative
//!   share is reached, never letting Applying + Failed nodes exceed `max_unavailable`. Nodes
//!   already Unknown when a wave would take them are left out (of the shares too); they get
//!   the version like new nodes once the rollout completes. A wave
//!   is done when every targeted node is Applied (or Failed within the threshold, or a waived
//!   Unknown); then the next wave starts at once, after a timed pause, or after a resume.
//! - RollingBack ends RolledBack when every touched node is Applied on the stable content (an
//!   Unknown one gets it when its agent returns), or Aborted when some node is still not back
//!   after `progress_deadline`.

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::node::NodeState;
use crate::record::{NodeRecord, PauseCause, RolloutRecord, RolloutState};
use crate::selector::Labels;
use crate::strategy::{Pause, order_by_zone};

/// Actor recorded for the engine's own transitions.
pub const ENGINE: &str = "distributor";

/// Start of the message of a node failed by the deadline (so it stays Failed).
const TIMED_OUT: &str = "no confirmation within the progress deadline";

/// A node that matches the rollout's target, as the hub sees it now.
#[derive(Debug, Clone)]
pub struct Live {
    /// Node name.
    pub name: String,
    /// Its labels (for the wave order), shared with the hub's copy.
    pub labels: Arc<Labels>,
    /// Its state with respect to the rollout's NCI.
    pub state: NodeState,
    /// Detail (errors) for Failed and Drifted.
    pub message: String,
    /// It matches only the NCI's stable rollout, not this one: targeting it takes the
    /// stable file away (a narrower selector, a retired profile).
    pub removal: bool,
}

/// What a step changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Step {
    /// The record changed.
    pub changed: bool,
    /// It changed in a way that must be on disk before anything is sent (a transition, new
    /// targeted nodes).
    pub durable: bool,
    /// The nodes' desired content changed: rebuild the fleet and sync the sinks.
    pub scope: bool,
}

impl Step {
    fn durable(&mut self) {
        self.changed = true;
        self.durable = true;
    }
    fn scope(&mut self) {
        self.durable();
        self.scope = true;
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A duration for people: `300s`, `1.5s`, `250ms`.
pub fn human(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn names(list: &[impl AsRef<str>]) -> String {
    const SHOWN: usize = 5;
    let mut s = list
        .iter()
        .take(SHOWN)
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > SHOWN {
        s.push_str(&format!(" and {} more", list.len() - SHOWN));
    }
    s
}

/// What touched nodes return to, for messages.
pub fn stable_text(r: &RolloutRecord) -> String {
    match r.stable_version {
        Some(v) => format!("version {v}"),
        None => "no file (there is no earlier completed version, or it was retired)".to_owned(),
    }
}

/// Start wave `wave` (1-based).
pub fn start_wave(r: &mut RolloutRecord, wave: u32, now_ms: u64) {
    r.current_wave = wave;
    r.progress_at_ms = now_ms;
    r.next_wave_at_ms = None;
    let total = r.strategy.waves.len();
    let reason = format!(
        "wave {wave} of {total} started ({} of the matching nodes)",
        r.strategy
            .waves
            .get(wave as usize - 1)
            .map_or_else(String::new, ToString::to_string)
    );
    r.transition(RolloutState::Progressing, reason, ENGINE, now_ms);
}

/// Fail the rollout: roll back, or abort when automatic rollback is off.
pub fn fail(r: &mut RolloutRecord, reason: &str, now_ms: u64) {
    if r.strategy.auto_rollback {
        let touched = r.nodes.len();
        let back = stable_text(r);
        r.reverted = true;
        r.next_wave_at_ms = None;
        r.transition(
            RolloutState::RollingBack,
            format!("{reason}: returning {touched} touched node(s) to {back}"),
            ENGINE,
            now_ms,
        );
    } else {
        r.transition(
            RolloutState::Aborted,
            format!("{reason}; automatic rollback is off, so nodes keep what they have"),
            ENGINE,
            now_ms,
        );
    }
}

/// Move `r` on. Until `settled` (after a restart, while agents reconnect) only the targeted
/// nodes' states are refreshed, and a targeted node missing from `live` is left as it was;
/// once settled it is Unknown.
pub fn step(r: &mut RolloutRecord, live: &[Live], now_ms: u64, settled: bool) -> Step {
    let mut out = Step::default();
    if r.state.is_terminal() {
        return out;
    }
    refresh_nodes(r, live, now_ms, settled, &mut out);
    if !settled {
        // After a restart, until the agents had their chance to reconnect: the fleet seen so
        // far is partial, so no wave may start, grow or end on it.
        return out;
    }
    if r.state == RolloutState::Pending {
        start_wave(r, 1, now_ms);
        out.durable();
    }
    // Each pass either returns or starts another wave, so this ends after at most one pass
    // per wave.
    loop {
        match r.state {
            RolloutState::RollingBack => {
                rolling_back(r, now_ms, &mut out);
                return out;
            }
            RolloutState::Progressing | RolloutState::Paused => {}
            _ => return out,
        }
        let failed: Vec<&str> = r
            .nodes
            .iter()
            .filter(|(_, n)| n.state == NodeState::Failed)
            .map(|(name, _)| name.as_str())
            .collect();
        if failed.len() > r.strategy.failure_threshold as usize {
            let reason = format!(
                "{} node(s) failed ({}), threshold {}",
                failed.len(),
                names(&failed),
                r.strategy.failure_threshold
            );
            fail(r, &reason, now_ms);
            out.scope();
            return out;
        }
        let unknown: Vec<String> = r
            .nodes
            .iter()
            .filter(|(name, n)| n.state == NodeState::Unknown && !r.waived.contains(*name))
            .map(|(name, _)| name.clone())
            .collect();
        if r.state == RolloutState::Paused {
            if r.paused == Some(PauseCause::UnknownNodes) && unknown.is_empty() {
                r.transition(
                    RolloutState::Progressing,
                    "the unknown nodes are back",
                    ENGINE,
                    now_ms,
                );
                r.progress_at_ms = now_ms;
                out.durable();
            } else {
                return out;
            }
        }
        if !unknown.is_empty() {
            let reason = format!(
                "node(s) {} unknown: waiting for their agents (resume to go on without them)",
                names(&unknown)
            );
            r.transition(RolloutState::Paused, reason, ENGINE, now_ms);
            r.paused = Some(PauseCause::UnknownNodes);
            out.durable();
            return out;
        }
        if !progress(r, live, now_ms, &mut out) {
            return out;
        }
    }
}

/// RollingBack ends RolledBack once every touched node is back (an Unknown node gets the
/// stable content when its agent returns, so it does not hold the rollback up), or Aborted
/// when some node is still not back after `progress_deadline`.
fn rolling_back(r: &mut RolloutRecord, now_ms: u64, out: &mut Step) {
    let stuck: Vec<&str> = r
        .nodes
        .iter()
        .filter(|(_, n)| !matches!(n.state, NodeState::Applied | NodeState::Unknown))
        .map(|(name, _)| name.as_str())
        .collect();
    let back = stable_text(r);
    if stuck.is_empty() {
        let unknown: Vec<&str> = r
            .nodes
            .iter()
            .filter(|(_, n)| n.state == NodeState::Unknown)
            .map(|(name, _)| name.as_str())
            .collect();
        let mut reason = format!(
            "{} touched node(s) back on {back}",
            r.nodes.len() - unknown.len()
        );
        if !unknown.is_empty() {
            reason.push_str(&format!(
                "; {} unknown, sent {back} when their agents return",
                names(&unknown)
            ));
        }
        r.transition(RolloutState::RolledBack, reason, ENGINE, now_ms);
        out.durable();
        return;
    }
    let started = r.history.last().map_or(now_ms, |t| t.at_ms);
    if now_ms.saturating_sub(started) > millis(r.strategy.progress_deadline) {
        let reason = format!(
            "the rollback did not finish within {}: {} not back on {back}",
            human(r.strategy.progress_deadline),
            names(&stuck)
        );
        r.transition(RolloutState::Aborted, reason, ENGINE, now_ms);
        out.durable();
    }
}

fn refresh_nodes(r: &mut RolloutRecord, live: &[Live], now_ms: u64, settled: bool, out: &mut Step) {
    // FxHash: this runs on every tick over every matching node.
    let by_name: HashMap<&str, &Live> = live.iter().map(|l| (l.name.as_str(), l)).collect();
    let deadline = r.strategy.progress_deadline;
    let rolling_back = r.state == RolloutState::RollingBack;
    for (name, rec) in &mut r.nodes {
        let (mut state, mut message) = match by_name.get(name.as_str()) {
            Some(l) => (l.state, l.message.clone()),
            None if settled => (
                NodeState::Unknown,
                "its agent is not connected to this distributor".to_owned(),
            ),
            None => continue,
        };
        let waiting = matches!(state, NodeState::Applying | NodeState::Pending);
        // Deadlines run only once settled: time spent down or reconnecting does not count.
        if waiting && !rolling_back && settled {
            let timed_out = rec.state == NodeState::Failed && rec.message.starts_with(TIMED_OUT);
            let overdue = matches!(rec.state, NodeState::Applying | NodeState::Pending)
                && now_ms.saturating_sub(rec.since_ms) > millis(deadline);
            if timed_out || overdue {
                state = NodeState::Failed;
                message = if timed_out {
                    rec.message.clone()
                } else {
                    format!("{TIMED_OUT} ({})", human(deadline))
                };
            }
        }
        if rec.state != state {
            if state == NodeState::Applied {
                r.progress_at_ms = now_ms;
            }
            rec.state = state;
            rec.since_ms = now_ms;
            out.changed = true;
        }
        if rec.message != message {
            rec.message = message;
            out.changed = true;
        }
    }
}

/// Target nodes and finish waves. Returns true when a new wave started (run another pass).
fn progress(r: &mut RolloutRecord, live: &[Live], now_ms: u64, out: &mut Step) -> bool {
    // Nodes whose agents are already gone are left out of the waves (and of the shares):
    // once the rollout completes they get the version when they return, like a new node.
    let untargeted: Vec<(&str, &Labels)> = live
        .iter()
        .filter(|l| !r.nodes.contains_key(&l.name) && l.state != NodeState::Unknown)
        .map(|l| (l.name.as_str(), &*l.labels))
        .collect();
    let removal: HashMap<&str, bool> = live.iter().map(|l| (l.name.as_str(), l.removal)).collect();
    let total = r.nodes.len() + untargeted.len();
    let plan = r.strategy.plan(total);
    let waves = plan.len() as u32;
    let wave = r.current_wave.clamp(1, waves);
    let goal = plan[wave as usize - 1];
    let busy = r
        .nodes
        .values()
        .filter(|n| {
            matches!(
                n.state,
                NodeState::Applying | NodeState::Pending | NodeState::Failed
            )
        })
        .count();
    let budget = r
        .strategy
        .max_unavailable
        .resolve(total)
        .saturating_sub(busy);
    let need = goal.saturating_sub(r.nodes.len());
    let take = need.min(budget);
    if take > 0 {
        for name in order_by_zone(untargeted).into_iter().take(take) {
            let removal = removal.get(name.as_str()).copied().unwrap_or(false);
            r.nodes.insert(
                name,
                NodeRecord {
                    targeted_at_ms: now_ms,
                    state: NodeState::Applying,
                    since_ms: now_ms,
                    message: String::new(),
                    removal,
                },
            );
        }
        out.scope();
        return false;
    }
    let waived = &r.waived;
    let settled = r.nodes.iter().all(|(name, n)| match n.state {
        NodeState::Applied | NodeState::Failed => true,
        NodeState::Unknown => waived.contains(name),
        _ => false,
    });
    if !(settled && r.nodes.len() >= goal) {
        let stalled =
            now_ms.saturating_sub(r.progress_at_ms) > millis(r.strategy.progress_deadline);
        if stalled {
            let reason = format!(
                "wave {wave} made no progress for {}",
                human(r.strategy.progress_deadline)
            );
            fail(r, &reason, now_ms);
            out.scope();
        }
        return false;
    }
    if wave >= waves {
        let failed = r
            .nodes
            .values()
            .filter(|n| n.state == NodeState::Failed)
            .count();
        let mut reason = if r.retires() {
            format!("the file is gone from all {total} node(s) that had it")
        } else {
            format!("all {total} matching node(s) reached version {}", r.version)
        };
        if failed > 0 {
            reason = format!(
                "{reason} but {failed} failed (threshold {})",
                r.strategy.failure_threshold
            );
        }
        r.transition(RolloutState::Completed, reason, ENGINE, now_ms);
        out.scope();
        return false;
    }
    match r.strategy.pause {
        Pause::None => {
            start_wave(r, wave + 1, now_ms);
            out.durable();
            true
        }
        Pause::Duration(d) => match r.next_wave_at_ms {
            None => {
                r.next_wave_at_ms = Some(now_ms.saturating_add(millis(d)));
                out.durable();
                false
            }
            Some(at) if now_ms >= at => {
                start_wave(r, wave + 1, now_ms);
                out.durable();
                true
            }
            Some(_) => false,
        },
        Pause::Manual => {
            let reason = format!(
                "wave {wave} of {waves} done: resume to start wave {}",
                wave + 1
            );
            r.transition(RolloutState::Paused, reason, ENGINE, now_ms);
            r.paused = Some(PauseCause::BetweenWaves);
            out.durable();
            false
        }
    }
}

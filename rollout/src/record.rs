//! A rollout as stored: its state, strategy, wave, every node a wave targeted with its last
//! known state, the pending pause and the history of transitions. The engine ([`crate::engine`])
//! moves a record on; the distributor persists it (any backend: the record is plain serde).
//!
//! Records written before staged rollouts existed have no state or strategy; they read as
//! `Completed` single-wave rollouts, which is what they were.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::nci::NodeConfigItem;
use crate::node::NodeState;
use crate::strategy::Strategy;

/// The state of a rollout (DESIGN.md section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RolloutState {
    /// Created; no wave started yet.
    Pending,
    /// A wave is being applied.
    Progressing,
    /// Waiting for a resume, a timed pause, or unknown nodes to return.
    Paused,
    /// Every matching node applied the version.
    Completed,
    /// Touched nodes are returning to the stable version.
    RollingBack,
    /// Every touched node is back on the stable version.
    RolledBack,
    /// Stopped on request, superseded, or failed with automatic rollback off.
    Aborted,
}

impl RolloutState {
    /// Pending, Progressing, Paused and RollingBack: the engine still drives it.
    pub fn is_active(self) -> bool {
        !self.is_terminal()
    }

    /// Completed, RolledBack and Aborted.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RolloutState::Completed | RolloutState::RolledBack | RolloutState::Aborted
        )
    }
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a rollout is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PauseCause {
    /// Someone called PauseRollout.
    Requested,
    /// A wave finished and the strategy waits for a manual resume.
    BetweenWaves,
    /// Targeted nodes are Unknown; the rollout goes on by itself when they return.
    UnknownNodes,
}

/// A targeted node as the rollout last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// When a wave first targeted it (ms since the epoch).
    pub targeted_at_ms: u64,
    /// Its state within the rollout.
    pub state: NodeState,
    /// When it entered that state.
    pub since_ms: u64,
    /// Detail for Failed, Drifted and Unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Targeted to lose the stable file (it matched only the stable rollout's selector):
    /// an abort gives it back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removal: bool,
}

fn completed() -> RolloutState {
    RolloutState::Completed
}

fn one_wave() -> Strategy {
    Strategy::immediate()
}

/// A transition in a rollout's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionRecord {
    /// State entered (`Progressing`, `Completed`, ...).
    pub state: String,
    /// Why.
    pub reason: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Who asked ("distributor" for automatic transitions).
    pub actor: String,
}

/// One rollout as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// `r<number>`.
    pub id: String,
    /// Revision of its NCI (1 for the first rollout of that NCI name).
    pub revision: u64,
    /// Profile name.
    pub profile: String,
    /// Profile version.
    pub version: u64,
    /// Content digest.
    pub digest: String,
    /// The NCI it writes.
    pub nci_name: String,
    /// The rendered NCI.
    pub nci: NodeConfigItem,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Who created it.
    pub created_by: String,
    /// Transitions, oldest first.
    pub history: Vec<TransitionRecord>,
    /// How it proceeds.
    #[serde(default = "one_wave")]
    pub strategy: Strategy,
    /// Where it is.
    #[serde(default = "completed")]
    pub state: RolloutState,
    /// 1-based wave being applied or last applied; 0 before the first.
    #[serde(default)]
    pub current_wave: u32,
    /// Why it is paused (when `state` is Paused).
    #[serde(default)]
    pub paused: Option<PauseCause>,
    /// When a timed pause between waves ends (ms since the epoch).
    #[serde(default)]
    pub next_wave_at_ms: Option<u64>,
    /// When the current wave last made progress (a node reached Applied, or it started).
    #[serde(default)]
    pub progress_at_ms: u64,
    /// The rollout whose content is this NCI's stable version: the newest one that completed
    /// before this one was created. `None`: no stable version; going back removes the file.
    #[serde(default)]
    pub stable_id: Option<String>,
    /// That rollout's profile version.
    #[serde(default)]
    pub stable_version: Option<u64>,
    /// Created by a rollback.
    #[serde(default)]
    pub rollback: bool,
    /// The touched nodes went back to the stable content (RollingBack, RolledBack, or an
    /// abort during either).
    #[serde(default)]
    pub reverted: bool,
    /// Every node a wave targeted, by name.
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Unknown nodes a caller chose to go on without (ResumeRollout while they were Unknown).
    #[serde(default)]
    pub waived: BTreeSet<String>,
}

/// The most transitions a record keeps: its first and the newest (a rollout paused and
/// resumed for ever must not grow without end).
pub const MAX_HISTORY: usize = 200;

/// What a new rollout puts on nodes: a profile version and the NCI rendered from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// Profile name.
    pub profile: String,
    /// Profile version.
    pub version: u64,
    /// `sha256:<hex>` of the version's bytes.
    pub digest: String,
    /// The rendered NCI.
    pub nci: NodeConfigItem,
}

impl RolloutRecord {
    /// A Pending rollout of `content`, created by `actor` at `now_ms`: revision 1 of its NCI,
    /// no stable version, nothing targeted, no history yet.
    pub fn new(id: String, content: Content, strategy: Strategy, actor: &str, now_ms: u64) -> Self {
        RolloutRecord {
            id,
            revision: 1,
            profile: content.profile,
            version: content.version,
            digest: content.digest,
            nci_name: content.nci.metadata.name.clone(),
            nci: content.nci,
            created_at_ms: now_ms,
            created_by: actor.to_owned(),
            history: Vec::new(),
            strategy,
            state: RolloutState::Pending,
            current_wave: 0,
            paused: None,
            next_wave_at_ms: None,
            progress_at_ms: now_ms,
            stable_id: None,
            stable_version: None,
            rollback: false,
            reverted: false,
            nodes: BTreeMap::new(),
            waived: BTreeSet::new(),
        }
    }

    /// Record entering `state` for `reason`.
    pub fn transition(
        &mut self,
        state: RolloutState,
        reason: impl Into<String>,
        actor: &str,
        at_ms: u64,
    ) {
        self.state = state;
        if state != RolloutState::Paused {
            self.paused = None;
        }
        self.history.push(TransitionRecord {
            state: state.to_string(),
            reason: reason.into(),
            at_ms,
            actor: actor.to_owned(),
        });
        // Bounded: the first transition (how it was created) and the newest ones.
        if self.history.len() > MAX_HISTORY {
            self.history
                .drain(1..self.history.len() - (MAX_HISTORY - 1));
        }
    }

    /// Give a record prepared under a placeholder id its real one (in its NCI's labels too).
    pub fn take_id(&mut self, id: String) {
        self.nci = self.nci.relabelled(&id);
        self.id = id;
    }

    /// Whether it retires its NCI: it puts no file on any node (version 0, no file entry),
    /// so the nodes that had the NCI's file lose it.
    pub fn retires(&self) -> bool {
        !self
            .nci
            .spec
            .files
            .iter()
            .any(|f| f.kind == crate::nci::FileType::File)
    }

    /// When it last changed.
    pub fn updated_at_ms(&self) -> u64 {
        self.history.last().map_or(self.created_at_ms, |t| t.at_ms)
    }
}

/// The ids of the rollouts (`records`, oldest first) that may be forgotten: finished
/// (terminal) before `before_ms`, and none of what is still read — the newest rollout of
/// each NCI (it decides what nodes hold), the rollout it names as stable (what going back
/// restores), and the newest completed rollout of each NCI (the next rollout's stable one).
pub fn expired<'a>(
    records: impl IntoIterator<Item = &'a RolloutRecord>,
    before_ms: u64,
) -> Vec<String> {
    let records: Vec<&RolloutRecord> = records.into_iter().collect();
    let mut kept: BTreeSet<&str> = BTreeSet::new();
    let mut newest: BTreeMap<&str, &RolloutRecord> = BTreeMap::new();
    let mut completed: BTreeMap<&str, &RolloutRecord> = BTreeMap::new();
    for r in &records {
        newest.insert(&r.nci_name, r);
        if r.state == RolloutState::Completed {
            completed.insert(&r.nci_name, r);
        }
    }
    for r in newest.values() {
        kept.insert(&r.id);
        if let Some(stable) = &r.stable_id {
            kept.insert(stable);
        }
    }
    kept.extend(completed.values().map(|r| r.id.as_str()));
    records
        .iter()
        .filter(|r| {
            r.state.is_terminal() && r.updated_at_ms() < before_ms && !kept.contains(r.id.as_str())
        })
        .map(|r| r.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use super::*;
    use crate::nci::{ProfileRef, Target, render};

    fn finished(id: &str, nci: &str, state: RolloutState, at_ms: u64) -> RolloutRecord {
        let mut r = record(id);
        r.nci_name = nci.into();
        r.transition(state, "done", "t", at_ms);
        r
    }

    fn record(id: &str) -> RolloutRecord {
        let nci = render(
            ProfileRef {
                name: "web",
                version: 1,
                content: b"{}",
            },
            &Target::new(BTreeMap::new()),
            None,
            None,
        )
        .unwrap();
        let content = Content {
            profile: "web".into(),
            version: 1,
            digest: "sha256:x".into(),
            nci,
        };
        RolloutRecord::new(id.into(), content, Strategy::default(), "t", 0)
    }

    #[test]
    fn only_old_finished_rollouts_nothing_reads_any_more_expire() {
        use RolloutState::{Aborted, Completed, Progressing, RolledBack};
        let mut r6 = finished("r6", "a", Aborted, 10);
        r6.stable_id = Some("r3".into());
        let records = [
            finished("r1", "a", Completed, 10),   // superseded: expires
            finished("r2", "a", RolledBack, 10),  // expires
            finished("r3", "a", Completed, 10),   // the newest one's stable: kept
            finished("r4", "b", Completed, 10),   // the newest of b: kept
            finished("r5", "a", Completed, 90),   // newest completed of a, and recent: kept
            r6,                                   // the newest of a: kept
            finished("r7", "c", Completed, 10),   // superseded by r9 (completed): expires
            finished("r8", "c", Progressing, 10), // active: kept
            finished("r9", "c", Completed, 20),   // newest completed and newest of c: kept
        ];
        assert_eq!(expired(&records, 50), ["r1", "r2", "r7"]);
        // Nothing finished before the cutoff: nothing goes.
        assert!(expired(&records, 5).is_empty());
    }

    #[test]
    fn history_keeps_its_first_and_newest_transitions_only() {
        let mut r = record("r1");
        r.transition(RolloutState::Pending, "created", "t", 0);
        for i in 1..=1000u64 {
            r.transition(RolloutState::Paused, format!("pause {i}"), "t", i);
        }
        assert_eq!(r.history.len(), MAX_HISTORY);
        assert_eq!(r.history[0].reason, "created");
        assert_eq!(r.history.last().unwrap().reason, "pause 1000");
        assert_eq!(
            r.history[1].reason,
            format!("pause {}", 1000 - MAX_HISTORY as u64 + 2)
        );
    }
}

//! A node as the rollout domain sees it: what its agent observed on disk, the errors it
//! reported, its state (DESIGN.md section 5), and how that state follows for one desired
//! file and for one NCI. The distributor's session hub fills in [`NodeView`]s from agent
//! messages; the engine and the views only read them.

use std::sync::Arc;
use std::time::SystemTime;

use crate::fileset::{EffectiveFile, EffectiveSet};
use crate::nci::FileType;
use crate::selector::Labels;

/// What kind of thing an agent saw at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ObservedKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// Something else.
    Other,
}

/// One path as an agent observed it on disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObservedFile {
    /// Absolute path.
    pub path: String,
    /// Whether anything is there.
    pub exists: bool,
    /// What is there.
    pub kind: ObservedKind,
    /// Hex sha256 of the content (files).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Owner name, when the host knows it.
    pub owner: String,
    /// Group name, when the host knows it.
    pub group: String,
}

/// A path an agent could not apply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileError {
    /// The path.
    pub path: String,
    /// Stable code (`symlink`, `unknown-owner`, ...).
    pub code: String,
    /// For a person.
    pub message: String,
}

/// A node's state, as DESIGN section 5 defines it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum NodeState {
    /// Nothing sent yet.
    Pending,
    /// Sent, no answer yet.
    Applying,
    /// Acknowledged for the exact revision, and every observed file equals the desired one.
    Applied,
    /// Refused, failed, or what is on disk differs after an acknowledgement.
    Failed,
    /// Changed on disk after apply.
    Drifted,
    /// The agent has been gone longer than the grace period.
    Unknown,
}

/// One node as clients see it.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Labels from the agent.
    pub labels: Labels,
    /// Agent version.
    pub agent_version: String,
    /// Whether a session is open.
    pub connected: bool,
    /// Last message from the agent.
    pub last_seen: SystemTime,
    /// Revision the agent confirmed.
    pub revision: String,
    /// The set it should have.
    pub desired: Arc<EffectiveSet>,
    /// What it reported.
    pub observed: Vec<ObservedFile>,
    /// Errors of its last Nack or Drift.
    pub errors: Vec<FileError>,
    /// Overall state.
    pub state: NodeState,
    /// Drift reports received since the agent connected.
    pub drift_reports: u64,
}

/// What a node's state with respect to one file or NCI follows from, borrowed: the hub
/// computes rollout states under its lock from this, without copying the node.
#[derive(Debug, Clone, Copy)]
pub struct NodeFacts<'a> {
    /// Overall state.
    pub state: NodeState,
    /// Revision the agent confirmed.
    pub revision: &'a str,
    /// The set it should have.
    pub desired: &'a EffectiveSet,
    /// What it reported.
    pub observed: &'a [ObservedFile],
    /// Errors of its last Nack or Drift.
    pub errors: &'a [FileError],
}

impl NodeView {
    /// The facts its per-file and per-NCI states follow from.
    pub fn facts(&self) -> NodeFacts<'_> {
        NodeFacts {
            state: self.state,
            revision: &self.revision,
            desired: &self.desired,
            observed: &self.observed,
            errors: &self.errors,
        }
    }

    /// See [`NodeFacts::file_state`].
    pub fn file_state(&self, file: &EffectiveFile) -> NodeState {
        self.facts().file_state(file)
    }

    /// See [`NodeFacts::state_for_nci`].
    pub fn state_for_nci(&self, nci_name: &str) -> (NodeState, String) {
        self.facts().state_for_nci(nci_name)
    }

    /// See [`NodeFacts::state_for_removal`].
    pub fn state_for_removal(&self, paths: &[&str]) -> (NodeState, String) {
        self.facts().state_for_removal(paths)
    }
}

impl NodeFacts<'_> {
    /// The state of one desired path on this node: Applied once the agent acknowledged the
    /// node's current set and observes exactly this entry.
    pub fn file_state(&self, file: &EffectiveFile) -> NodeState {
        if self.state == NodeState::Unknown || self.state == NodeState::Pending {
            return self.state;
        }
        if self.errors.iter().any(|e| e.path == file.path) {
            return NodeState::Failed;
        }
        // Applied means the agent answered the last set it was sent with an Ack for this
        // exact revision, and observes the desired entry: matching bytes left from before
        // (the same content sent again, say by a rollback) are not enough.
        if self.state == NodeState::Applying {
            return NodeState::Applying;
        }
        let acked = self.revision == self.desired.revision;
        match self.observed.iter().find(|o| o.path == file.path) {
            Some(o) if acked && observed_matches(file, o) => NodeState::Applied,
            _ if self.state == NodeState::Drifted => NodeState::Drifted,
            _ => NodeState::Failed,
        }
    }

    /// The state of this node with respect to the NCI `nci_name`, with the errors that explain it:
    /// that of the files it wins on the node (the worst); when it wins none (it lost a path to
    /// another NCI, or wants the file gone), whether the agent acknowledged the node's current
    /// set.
    pub fn state_for_nci(&self, nci_name: &str) -> (NodeState, String) {
        let n = *self;
        // Asked for every node on every engine tick: no allocation unless there are errors.
        let mine = || {
            n.desired
                .files
                .iter()
                .filter(move |f| f.source == nci_name && f.kind == FileType::File)
        };
        let state = match mine().map(|f| n.file_state(f)).max_by_key(|s| severity(*s)) {
            Some(s) => s,
            None => match n.state {
                NodeState::Unknown | NodeState::Applying | NodeState::Pending => n.state,
                _ if n.revision == n.desired.revision => NodeState::Applied,
                // The set was refused over another NCI's entry: not applied, not this NCI's fault.
                _ => NodeState::Applying,
            },
        };
        let message = match state {
            NodeState::Failed | NodeState::Drifted => {
                let ours = |path: &str| {
                    mine().next().is_none() || mine().any(|f: &EffectiveFile| f.path == path)
                };
                n.errors
                    .iter()
                    .filter(|e| ours(&e.path))
                    .map(|e| format!("{}: {} ({})", e.path, e.message, e.code))
                    .collect::<Vec<_>>()
                    .join("; ")
            }
            _ => String::new(),
        };
        let message = if message.is_empty() && state == NodeState::Failed {
            "what is on disk differs from what was sent".to_owned()
        } else {
            message
        };
        (state, message)
    }

    /// The state of this node as one that is to lose the files at `paths` (a removal): Applied
    /// once the agent acknowledged the node's current set (which no longer has them) and
    /// reports none of them still there; Failed when it refused a path or one is still on
    /// disk; a path another NCI now writes is that NCI's, not a removal.
    pub fn state_for_removal(&self, paths: &[&str]) -> (NodeState, String) {
        let gone: Vec<&str> = paths
            .iter()
            .copied()
            .filter(|p| !self.desired.files.iter().any(|f| f.path == *p))
            .collect();
        let errors: Vec<String> = self
            .errors
            .iter()
            .filter(|e| gone.contains(&e.path.as_str()))
            .map(|e| format!("{}: {} ({})", e.path, e.message, e.code))
            .collect();
        if !errors.is_empty() {
            return (NodeState::Failed, errors.join("; "));
        }
        match self.state {
            NodeState::Unknown | NodeState::Applying | NodeState::Pending => {
                return (self.state, String::new());
            }
            _ => {}
        }
        if self.revision != self.desired.revision {
            return (NodeState::Applying, String::new());
        }
        let left: Vec<&str> = self
            .observed
            .iter()
            .filter(|o| o.exists && gone.contains(&o.path.as_str()))
            .map(|o| o.path.as_str())
            .collect();
        if left.is_empty() {
            (NodeState::Applied, String::new())
        } else {
            (
                NodeState::Failed,
                format!(
                    "still on disk after the agent applied a set without it: {}",
                    left.join(", ")
                ),
            )
        }
    }
}

/// Whether an observation shows exactly the desired entry. Owners and groups match by name,
/// or by numeric id when the desired value is numeric. An existing directory is left as the
/// host has it, so only its presence counts.
pub fn observed_matches(desired: &EffectiveFile, o: &ObservedFile) -> bool {
    let principal = |want: &str, name: &str, id: u32| want == name || want == id.to_string();
    match desired.kind {
        FileType::Directory => o.exists && o.kind == ObservedKind::Directory,
        FileType::File => {
            o.exists
                && o.kind == ObservedKind::File
                && desired.sha256.as_deref() == Some(o.sha256.as_str())
                && desired.mode == o.mode
                && principal(&desired.owner, &o.owner, o.uid)
                && principal(&desired.group, &o.group, o.gid)
        }
    }
}

/// Whether every entry of `set` is observed exactly as desired.
pub fn all_match(set: &EffectiveSet, observed: &[ObservedFile]) -> bool {
    set.files.iter().all(|f| {
        observed
            .iter()
            .find(|o| o.path == f.path)
            .is_some_and(|o| observed_matches(f, o))
    })
}

/// Which state dominates when a node's files differ: the worst.
fn severity(s: NodeState) -> u8 {
    match s {
        NodeState::Applied => 0,
        NodeState::Pending => 1,
        NodeState::Applying => 2,
        NodeState::Drifted => 3,
        NodeState::Unknown => 4,
        NodeState::Failed => 5,
    }
}

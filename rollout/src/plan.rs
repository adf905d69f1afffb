//! What a change does to a node before it does it: the node's effective set with the NCIs as
//! they are, against its set once the change has completed, compared path by path. The
//! distributor plans a rollout with the same sets it serves ([`crate::fileset::Fleet`]),
//! so a plan lists exactly what the rollout then changes.

use std::collections::BTreeMap;

use crate::fileset::{Conflict, EffectiveFile, EffectiveSet};
use crate::nci::FileType;

/// What happens to a file, or to a node (its most consequential file change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Nothing on disk changes.
    Unchanged,
    /// A file appears.
    Add,
    /// A file's bytes, mode, owner or group change.
    Update,
    /// A file goes away.
    Remove,
}

impl Action {
    /// Lowercase, as plans print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Unchanged => "unchanged",
            Action::Add => "add",
            Action::Update => "update",
            Action::Remove => "remove",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file as one side of a plan has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    /// The NCI whose entry wins the path.
    pub nci: String,
    /// Hex sha256 of the content.
    pub sha256: String,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub owner: String,
    /// Group.
    pub group: String,
}

impl Side {
    fn of(f: &EffectiveFile) -> Self {
        Side {
            nci: f.source.clone(),
            sha256: f.sha256.clone().unwrap_or_default(),
            mode: f.mode,
            owner: f.owner.clone(),
            group: f.group.clone(),
        }
    }

    /// Whether the disk would hold the same thing (whichever NCI wins).
    fn same_on_disk(&self, other: &Side) -> bool {
        self.sha256 == other.sha256
            && self.mode == other.mode
            && self.owner == other.owner
            && self.group == other.group
    }
}

/// One path of a node's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// Absolute path.
    pub path: String,
    /// What happens to it.
    pub action: Action,
    /// What the node has now (`None` for an addition).
    pub before: Option<Side>,
    /// What it will have (`None` for a removal).
    pub after: Option<Side>,
}

/// What a change does to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeChange {
    /// The most consequential of its file actions (a removal over an update over an
    /// addition); `Unchanged` when no file changes.
    pub action: Action,
    /// Every file path of either side, sorted; unchanged ones included (their winner may
    /// change).
    pub files: Vec<FileChange>,
    /// Conflicts the change makes on this node.
    pub conflicts_added: Vec<Conflict>,
    /// Conflicts it ends.
    pub conflicts_gone: Vec<Conflict>,
}

impl NodeChange {
    /// The paths it removes.
    pub fn removed(&self) -> impl Iterator<Item = &str> {
        self.files
            .iter()
            .filter(|f| f.action == Action::Remove)
            .map(|f| f.path.as_str())
    }
}

/// Compare a node's set now (`before`) with its set after the change (`after`). Only files
/// count: the directory entries NCIs carry are created when needed and never taken away
/// from under a file.
pub fn compare(before: &EffectiveSet, after: &EffectiveSet) -> NodeChange {
    let files = |s: &EffectiveSet| -> BTreeMap<String, Side> {
        s.files
            .iter()
            .filter(|f| f.kind == FileType::File)
            .map(|f| (f.path.clone(), Side::of(f)))
            .collect()
    };
    let (mut old, new) = (files(before), files(after));
    let mut changes = Vec::new();
    for (path, after) in new {
        let before = old.remove(&path);
        let action = match &before {
            None => Action::Add,
            Some(b) if b.same_on_disk(&after) => Action::Unchanged,
            Some(_) => Action::Update,
        };
        changes.push(FileChange {
            path,
            action,
            before,
            after: Some(after),
        });
    }
    changes.extend(old.into_iter().map(|(path, before)| FileChange {
        path,
        action: Action::Remove,
        before: Some(before),
        after: None,
    }));
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    let action = changes
        .iter()
        .map(|c| c.action)
        .max()
        .unwrap_or(Action::Unchanged);
    NodeChange {
        action,
        files: changes,
        conflicts_added: after
            .conflicts
            .iter()
            .filter(|c| !before.conflicts.contains(c))
            .cloned()
            .collect(),
        conflicts_gone: before
            .conflicts
            .iter()
            .filter(|c| !after.conflicts.contains(c))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::fileset::Fleet;
    use crate::nci::{ProfileRef, Target, render};
    use crate::selector::Labels;

    fn nci(
        name: &str,
        content: &str,
        path: &str,
        priority: i32,
        mode: u32,
    ) -> crate::nci::NodeConfigItem {
        render(
            ProfileRef {
                name: "web",
                version: 1,
                content: content.as_bytes(),
            },
            &Target {
                path: Some(path.into()),
                priority,
                mode,
                ..Target::new([("os".to_owned(), "linux".to_owned())].into())
            },
            Some(name),
            None,
        )
        .unwrap()
    }

    fn set(ncis: &[crate::nci::NodeConfigItem]) -> EffectiveSet {
        let labels: Labels = [("os".to_owned(), "linux".to_owned())].into();
        Fleet::new(ncis).unwrap().effective(&labels)
    }

    const A: &str = "/var/lib/kubelet/seccomp/a.json";
    const B: &str = "/var/lib/kubelet/seccomp/b.json";

    #[test]
    fn each_path_is_added_updated_removed_or_unchanged_and_the_node_takes_the_weightiest() {
        let before = set(&[
            nci("one", "{}", A, 100, 0o644),
            nci("two", "{}", B, 100, 0o644),
        ]);
        // Same again: unchanged, and an empty plan of files that change.
        let same = compare(&before, &before);
        assert_eq!(same.action, Action::Unchanged);
        assert!(same.files.iter().all(|f| f.action == Action::Unchanged));

        // `one` moves from a to b at a higher priority: a is removed, b updated (other
        // bytes), and the node's action is the removal.
        let after = set(&[
            nci("one", "[]", B, 200, 0o644),
            nci("two", "{}", B, 100, 0o644),
        ]);
        let c = compare(&before, &after);
        assert_eq!(c.action, Action::Remove);
        let actions: Vec<(&str, Action)> = c
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.action))
            .collect();
        assert_eq!(actions, [(A, Action::Remove), (B, Action::Update)]);
        assert_eq!(c.files[1].before.as_ref().unwrap().nci, "two");
        assert_eq!(c.files[1].after.as_ref().unwrap().nci, "one");
        assert_eq!(c.removed().collect::<Vec<_>>(), [A]);
        // `two` now loses b to `one`: a conflict appears.
        assert_eq!(c.conflicts_added.len(), 1);
        assert_eq!(c.conflicts_added[0].loser, "two");
        assert!(c.conflicts_gone.is_empty());
        // And back: the conflict goes, a is added.
        let back = compare(&after, &before);
        assert_eq!(back.action, Action::Update);
        assert_eq!(back.files[0].action, Action::Add);
        assert_eq!(back.conflicts_gone.len(), 1);

        // A mode is a change on disk too.
        let chmod = compare(
            &before,
            &set(&[
                nci("one", "{}", A, 100, 0o600),
                nci("two", "{}", B, 100, 0o644),
            ]),
        );
        assert_eq!(chmod.action, Action::Update);
        // Only additions: add.
        let add = compare(&set(&[]), &before);
        assert_eq!(add.action, Action::Add);
    }
}

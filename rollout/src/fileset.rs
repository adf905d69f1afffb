//! The effective file set of a node: every NCI whose selector matches the node's labels;
//! where two write the same path, the higher `priority` wins, and on equal priority the NCI
//! whose name sorts last. Losers are reported as conflicts (only when the entries differ:
//! every profile NCI carries the same directory entry, which is no conflict). The set has a
//! revision, sha256 over its sorted entries.
//!
//! Built for fleets: [`Fleet`] indexes the NCIs once by one selector term each, so finding a
//! node's NCIs costs a few hash lookups per node label instead of a scan of every NCI, and
//! nodes that match the same NCIs share one computed set.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::nci::{FileType, NodeConfigItem, format_mode, parse_mode};
use crate::selector::{Labels, Selector};

/// One file or directory of a node's effective set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveFile {
    /// Absolute path (directories without the trailing `/`).
    pub path: String,
    /// File or directory.
    pub kind: FileType,
    /// Exact content (files only), shared with the NCI it came from.
    pub content: Option<Arc<str>>,
    /// Hex sha256 of the content (files only).
    pub sha256: Option<String>,
    /// Permission bits.
    pub mode: u32,
    /// Owner name or id.
    pub owner: String,
    /// Group name or id.
    pub group: String,
    /// The NCI it comes from.
    pub source: String,
}

/// A path one NCI loses to another on this node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Conflict {
    /// The contested path.
    pub path: String,
    /// The NCI whose entry is written.
    pub winner: String,
    /// Its priority.
    pub winner_priority: i32,
    /// The NCI whose entry is not.
    pub loser: String,
    /// Its priority.
    pub loser_priority: i32,
}

/// What one node should have on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveSet {
    /// Entries sorted by path.
    pub files: Vec<EffectiveFile>,
    /// `sha256:<hex>` over the sorted entries; equal sets have equal revisions.
    pub revision: String,
    /// Paths lost by some NCI, sorted.
    pub conflicts: Vec<Conflict>,
    /// Names of the NCIs that match the node, sorted.
    pub matched: Vec<String>,
}

/// The most content one node's set may carry: the node agent decodes a desired set of up to
/// 64 MiB (`seccomp_node_agent::sync::MAX_DESIRED_BYTES`), and the rest is room for the
/// message's other fields.
pub const MAX_SET_BYTES: usize = 60 << 20;

impl EffectiveSet {
    /// The bytes of content it carries.
    pub fn content_bytes(&self) -> usize {
        self.files
            .iter()
            .map(|f| f.content.as_ref().map_or(0, |c| c.len()))
            .sum()
    }
}

/// Which of the nodes an NCI's selector matches actually get it. Staged rollouts give one NCI
/// name two variants at once: the candidate content for the nodes a wave targeted, and the
/// stable content for the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every matching node.
    #[default]
    All,
    /// Only these nodes (by name).
    Only(Arc<BTreeSet<String>>),
    /// Every matching node except these.
    Except(Arc<BTreeSet<String>>),
}

impl Scope {
    /// Whether the node called `name` is in scope.
    pub fn includes(&self, name: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(names) => names.contains(name),
            Scope::Except(names) => !names.contains(name),
        }
    }
}

/// An NCI prepared for matching and resolution.
#[derive(Debug)]
struct Prepared {
    name: String,
    priority: i32,
    selector: Selector,
    scope: Scope,
    files: Vec<EffectiveFile>,
}

/// Per label key: NCIs anchored on "key exists", and per value.
#[derive(Debug, Default)]
struct KeyPostings {
    exists: Vec<u32>,
    by_value: FxHashMap<String, Vec<u32>>,
}

/// NCIs indexed for computing many nodes' sets.
#[derive(Debug)]
pub struct Fleet {
    ncis: Vec<Prepared>,
    postings: FxHashMap<String, KeyPostings>,
    match_all: Vec<u32>,
}

fn entry_path(path: &str) -> String {
    if path.len() > 1 {
        path.trim_end_matches('/').to_owned()
    } else {
        path.to_owned()
    }
}

fn prepare(nci: &NodeConfigItem, scope: Scope) -> Result<Prepared> {
    let name = &nci.metadata.name;
    let mut files = Vec::with_capacity(nci.spec.files.len());
    for f in &nci.spec.files {
        let mode = parse_mode(&f.mode)
            .map_err(|e| Error::invalid(format!("NCI \"{name}\" path \"{}\": {e}", f.path)))?;
        let (content, sha256) = match (f.kind, &f.content) {
            (FileType::File, Some(c)) => (
                Some(Arc::<str>::from(c.as_str())),
                Some(hex::encode(Sha256::digest(c.as_bytes()))),
            ),
            (FileType::File, None) => {
                return Err(Error::invalid(format!(
                    "NCI \"{name}\" file \"{}\" has no content",
                    f.path
                )));
            }
            (FileType::Directory, _) => (None, None),
        };
        files.push(EffectiveFile {
            path: entry_path(&f.path),
            kind: f.kind,
            content,
            sha256,
            mode,
            owner: f.owner.clone(),
            group: f.group.clone(),
            source: name.clone(),
        });
    }
    Ok(Prepared {
        name: name.clone(),
        priority: nci.spec.priority,
        selector: nci.spec.nodeconfigselector.clone(),
        scope,
        files,
    })
}

/// Whether two entries would put the same thing on disk.
fn same_entry(a: &EffectiveFile, b: &EffectiveFile) -> bool {
    a.kind == b.kind
        && a.sha256 == b.sha256
        && a.mode == b.mode
        && a.owner == b.owner
        && a.group == b.group
}

/// `sha256:<hex>` over the entries (already sorted by path).
pub fn revision(files: &[EffectiveFile]) -> String {
    let mut h = Sha256::new();
    for f in files {
        let kind = match f.kind {
            FileType::File => "file",
            FileType::Directory => "directory",
        };
        for part in [
            f.path.as_str(),
            kind,
            &format_mode(f.mode),
            &f.owner,
            &f.group,
            f.sha256.as_deref().unwrap_or(""),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(b"\n");
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

impl Fleet {
    /// Index `ncis`, each for every node it matches. Fails on an NCI with an invalid mode or
    /// a file without content.
    pub fn new(ncis: &[NodeConfigItem]) -> Result<Self> {
        Self::scoped(ncis.iter().map(|n| (n, Scope::All)))
    }

    /// Index NCIs that each reach only the nodes of their [`Scope`] among those they match.
    pub fn scoped<'a>(ncis: impl IntoIterator<Item = (&'a NodeConfigItem, Scope)>) -> Result<Self> {
        let mut prepared = Vec::new();
        let mut postings: FxHashMap<String, KeyPostings> = FxHashMap::default();
        let mut match_all = Vec::new();
        for (i, (nci, scope)) in ncis.into_iter().enumerate() {
            let p = prepare(nci, scope)?;
            let id = u32::try_from(i).map_err(|_| Error::invalid("too many NCIs"))?;
            // Anchor on the first term; the others are checked per candidate.
            match p.selector.iter().next() {
                None => match_all.push(id),
                Some((k, v)) => {
                    let entry = postings.entry(k.clone()).or_default();
                    if v.is_empty() {
                        entry.exists.push(id);
                    } else {
                        entry.by_value.entry(v.clone()).or_default().push(id);
                    }
                }
            }
            prepared.push(p);
        }
        Ok(Fleet {
            ncis: prepared,
            postings,
            match_all,
        })
    }

    /// Indexes of the NCIs that reach the node `name` with `labels`, ascending.
    pub fn matching(&self, name: &str, labels: &Labels) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .match_all
            .iter()
            .copied()
            .filter(|&id| self.ncis[id as usize].scope.includes(name))
            .collect();
        for (k, v) in labels {
            let Some(p) = self.postings.get(k.as_str()) else {
                continue;
            };
            let candidates = p
                .exists
                .iter()
                .chain(p.by_value.get(v.as_str()).into_iter().flatten());
            for &id in candidates {
                let nci = &self.ncis[id as usize];
                if crate::selector::matches(&nci.selector, labels) && nci.scope.includes(name) {
                    out.push(id);
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// Resolve the set for a list of matching NCIs (as [`Fleet::matching`] returns).
    pub fn resolve(&self, matched: &[u32]) -> EffectiveSet {
        // Winner per path: higher priority, then the name that sorts last.
        let mut by_path: BTreeMap<&str, Vec<(&Prepared, &EffectiveFile)>> = BTreeMap::new();
        for &id in matched {
            let nci = &self.ncis[id as usize];
            for f in &nci.files {
                by_path.entry(f.path.as_str()).or_default().push((nci, f));
            }
        }
        let mut files = Vec::with_capacity(by_path.len());
        let mut conflicts = Vec::new();
        for (path, mut entries) in by_path {
            entries.sort_by(|(a, _), (b, _)| (b.priority, &b.name).cmp(&(a.priority, &a.name)));
            let (winner, file) = entries[0];
            for (loser, other) in &entries[1..] {
                if !same_entry(file, other) {
                    conflicts.push(Conflict {
                        path: path.to_owned(),
                        winner: winner.name.clone(),
                        winner_priority: winner.priority,
                        loser: loser.name.clone(),
                        loser_priority: loser.priority,
                    });
                }
            }
            files.push(file.clone());
        }
        conflicts.sort();
        let mut names: Vec<String> = matched
            .iter()
            .map(|&i| self.ncis[i as usize].name.clone())
            .collect();
        names.sort();
        EffectiveSet {
            revision: revision(&files),
            files,
            conflicts,
            matched: names,
        }
    }

    /// The set of the node `name` with `labels`.
    pub fn effective_for(&self, name: &str, labels: &Labels) -> EffectiveSet {
        self.resolve(&self.matching(name, labels))
    }

    /// The set of a node named in no [`Scope`] (every NCI of scope `All` or `Except`).
    pub fn effective(&self, labels: &Labels) -> EffectiveSet {
        self.effective_for("", labels)
    }

    /// The sets of many nodes; nodes matching the same NCIs share one `Arc`.
    pub fn effective_all<'n>(
        &self,
        nodes: impl IntoIterator<Item = (&'n str, &'n Labels)>,
    ) -> BTreeMap<&'n str, Arc<EffectiveSet>> {
        let mut memo: FxHashMap<Vec<u32>, Arc<EffectiveSet>> = FxHashMap::default();
        let mut out = BTreeMap::new();
        for (name, labels) in nodes {
            let matched = self.matching(name, labels);
            let set = match memo.get(&matched) {
                Some(s) => Arc::clone(s),
                None => {
                    let s = Arc::new(self.resolve(&matched));
                    memo.insert(matched, Arc::clone(&s));
                    s
                }
            };
            out.insert(name, set);
        }
        out
    }
}

/// The set of one node, without building an index (for a single node or a test).
pub fn effective_set(ncis: &[NodeConfigItem], labels: &Labels) -> Result<EffectiveSet> {
    Ok(Fleet::new(ncis)?.effective(labels))
}

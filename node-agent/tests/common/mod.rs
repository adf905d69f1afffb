//! Fixtures shared by the integration tests: a fake node (host root with its own
//! `/etc/passwd` and `/etc/group`, plus a state directory) in a temp dir.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use seccomp_node_agent::{Applied, Applier, Config, DesiredFile, ErrorCode, Rejected};

/// The allowed root, as a node path.
pub const ROOT: &str = "/var/lib/kubelet/seccomp";

/// uid and gid of the host-only `seccompuser` and `seccompgroup`.
pub const SECCOMP_ID: u32 = 65534;

pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    seccompuser:x:65534:65534:only on this host:/nonexistent:/usr/sbin/nologin\n\
    daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n";
pub const GROUP: &str = "root:x:0:\nseccompgroup:x:65534:\ndaemon:x:1:\n";

/// A fake node: `<tmp>/host` is the host root, `<tmp>/state` the agent's state directory.
pub struct Node {
    pub tmp: tempfile::TempDir,
    pub host: PathBuf,
    pub state: PathBuf,
}

impl Node {
    /// A host root with `etc/passwd`, `etc/group` and an existing allowed root (0755).
    pub fn new() -> Self {
        let node = Self::bare();
        std::fs::create_dir_all(node.host.join("var/lib/kubelet/seccomp")).unwrap();
        std::fs::set_permissions(node.path(ROOT), std::fs::Permissions::from_mode(0o755)).unwrap();
        node
    }

    /// Like [`new`](Self::new) but only `/var/lib/kubelet` exists.
    pub fn bare() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host");
        let state = tmp.path().join("state");
        std::fs::create_dir_all(host.join("etc")).unwrap();
        std::fs::create_dir_all(host.join("var/lib/kubelet")).unwrap();
        std::fs::write(host.join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(host.join("etc/group"), GROUP).unwrap();
        Self { tmp, host, state }
    }

    pub fn config(&self) -> Config {
        Config {
            host_root: self.host.clone(),
            allowed_root: ROOT.to_owned(),
            state_dir: self.state.clone(),
        }
    }

    pub fn applier(&self) -> Applier {
        Applier::open(self.config()).unwrap()
    }

    /// Where a node path is on this machine.
    pub fn path(&self, node_path: &str) -> PathBuf {
        self.host.join(node_path.trim_start_matches('/'))
    }

    /// Everything under the temp dir (host root and state) with type, size, mode, owner,
    /// inode, mtime and content hash: equal snapshots mean nothing was written.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        snapshot_into(self.tmp.path(), &mut out);
        out
    }

    /// [`snapshot`](Self::snapshot) without the allowed root's tree and the state directory:
    /// what the agent must never change.
    pub fn snapshot_outside(&self) -> BTreeMap<PathBuf, String> {
        let (root, state) = (self.path(ROOT), &self.state);
        self.snapshot()
            .into_iter()
            .filter(|(p, _)| !p.starts_with(&root) && !p.starts_with(state))
            .collect()
    }

    /// The agent's temp files left anywhere under the host root or state dir (node files and
    /// the state directory's files are named alike but for the prefix).
    pub fn temp_leftovers(&self) -> Vec<PathBuf> {
        self.snapshot()
            .into_keys()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(seccomp_server::atomic::is_temp_name)
            })
            .collect()
    }
}

fn snapshot_into(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let content = if meta.is_file() {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&std::fs::read(&path).unwrap(), &mut hasher);
            std::hash::Hasher::finish(&hasher)
        } else {
            0
        };
        out.insert(
            path.clone(),
            format!(
                "{:?} {} {:o} {}:{} ino={} mtime={}.{} content={:x}",
                meta.file_type(),
                meta.size(),
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.ino(),
                meta.mtime(),
                meta.mtime_nsec(),
                content
            ),
        );
        if meta.is_dir() {
            snapshot_into(&path, out);
        }
    }
}

/// A seccomp profile the validator accepts, with a tag that makes its bytes unique.
pub fn profile_text(tag: &str) -> String {
    format!(
        "{{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{{\"names\":[\"read\",\"write\"],\"action\":\"SCMP_ACT_ALLOW\"}}],\"comment\":\"{tag}\"}}\n"
    )
}

/// A file entry under the allowed root.
pub fn file(name: &str, content: &str, mode: u32, owner: &str, group: &str) -> DesiredFile {
    DesiredFile::file(
        format!("{ROOT}/{name}"),
        content.as_bytes(),
        mode,
        owner,
        group,
    )
}

/// A profile as the distributor sends it by default: 0644 root:root.
pub fn profile(name: &str, content: &str) -> DesiredFile {
    file(name, content, 0o644, "root", "root")
}

/// `stat -c '%a %U %G' path`, names from this machine's own passwd and group.
pub fn stat_cli(path: &Path) -> String {
    let out = std::process::Command::new("stat")
        .args(["-c", "%a %U %G"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The name this machine gives an id in `/etc/passwd` or `/etc/group`, as `stat` prints it.
pub fn machine_name(file: &str, id: u32) -> String {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let _ = fields.next()?;
            (fields.next()? == id.to_string()).then(|| name.to_owned())
        })
        .unwrap_or_else(|| id.to_string())
}

/// Applies `desired`, expects a refusal naming `path` with `code`, and checks that nothing in
/// the host root or the state directory changed.
pub fn assert_refused(
    node: &Node,
    desired: &[DesiredFile],
    path: &str,
    code: ErrorCode,
) -> Rejected {
    assert_refused_by(&mut node.applier(), node, desired, path, code)
}

/// [`assert_refused`] with a given applier; its revision stays what it was.
pub fn assert_refused_by(
    applier: &mut Applier,
    node: &Node,
    desired: &[DesiredFile],
    path: &str,
    code: ErrorCode,
) -> Rejected {
    let before = node.snapshot();
    let revision = applier.revision().to_owned();
    let rejected = applier.apply("refused", desired).unwrap_err();
    assert!(
        rejected
            .errors
            .iter()
            .any(|e| e.path == path && e.code == code && e.message.contains(path)),
        "expected {code} naming {path:?}, got {:#?}",
        rejected.errors
    );
    assert_eq!(node.snapshot(), before, "a refused set must write nothing");
    assert_eq!(applier.revision(), revision);
    rejected
}

pub fn applied(result: Result<Applied, Rejected>) -> Applied {
    result.unwrap_or_else(|rejected| panic!("refused: {:#?}", rejected.errors))
}

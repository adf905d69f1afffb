//! What the agent makes of the seccomp records it reads (#19): each attributed to a
//! container by `/proc/<pid>/cgroup` while the process still exists, and aggregated by
//! (container, executable, architecture, syscall, action) with a count and the first and
//! last time seen, bounded, so a noisy workload cannot make the agent's memory or its
//! messages grow without end.
//!
//! Pids are reused, so the container of a pid is cached with the process's start time
//! (field 22 of `/proc/<pid>/stat`): a new process under an old pid is looked up again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use seccomp_profile::audit::SeccompRecord;

/// One aggregated kind of event.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventKey {
    /// The container's id (64 hex digits), empty when the process was not in one or was
    /// gone before it was looked up.
    pub container: String,
    /// The executable.
    pub exe: String,
    /// The `SCMP_ARCH_*` architecture, or `arch=<hex>` when unknown.
    pub arch: String,
    /// The syscall's name, or `#<number>` when the architecture's table lacks it.
    pub syscall: String,
    /// The `SCMP_ACT_*` action (with `(errno)` for ERRNO), or `code=<hex>` when unknown.
    pub action: String,
}

/// How often, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCount {
    /// Records aggregated.
    pub count: u64,
    /// The first record's time, ms since the epoch.
    pub first_ms: u64,
    /// The last record's time.
    pub last_ms: u64,
}

/// The container id in a `/proc/<pid>/cgroup` file: the last 64-hex-digit run of a path
/// (containerd `cri-containerd-<id>.scope`, CRI-O `crio-<id>.scope`, Docker
/// `docker-<id>.scope`, or cgroupfs `/kubepods/.../<id>`).
pub fn container_of_cgroup(text: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines() {
        let path = line.rsplit(':').next().unwrap_or("");
        for part in path.split(['/', '-', '.']) {
            if part.len() == 64 && part.bytes().all(|b| b.is_ascii_hexdigit()) {
                found = Some(part.to_ascii_lowercase());
            }
        }
    }
    found
}

/// A process's start time (clock ticks since boot, `/proc/<pid>/stat` field 22).
fn start_time(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may hold spaces: count from its end.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Events gathered since the last [`Aggregator::take`].
pub struct Aggregator {
    proc_root: PathBuf,
    /// pid → (start time, container).
    containers: HashMap<u32, (u64, String)>,
    events: BTreeMap<EventKey, EventCount>,
    max_kinds: usize,
    /// Records dropped because `max_kinds` kinds were already held.
    pub dropped: u64,
}

/// The most pids whose containers are remembered (older ones are looked up again).
const MAX_PIDS: usize = 4096;

impl Aggregator {
    /// An aggregator reading processes under `proc_root` (`/proc`, or the host's under the
    /// host root), holding at most `max_kinds` kinds of event between two takes.
    pub fn new(proc_root: impl Into<PathBuf>, max_kinds: usize) -> Self {
        Aggregator {
            proc_root: proc_root.into(),
            containers: HashMap::new(),
            events: BTreeMap::new(),
            max_kinds,
            dropped: 0,
        }
    }

    fn container(&mut self, pid: u32) -> String {
        let dir = self.proc_root.join(pid.to_string());
        let Some(started) = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|s| start_time(&s))
        else {
            // Gone already: not attributed (a cached entry may belong to a dead process).
            return String::new();
        };
        if let Some((at, id)) = self.containers.get(&pid)
            && *at == started
        {
            return id.clone();
        }
        let id = read_cgroup(&dir).unwrap_or_default();
        if self.containers.len() >= MAX_PIDS {
            self.containers.clear();
        }
        self.containers.insert(pid, (started, id.clone()));
        id
    }

    /// Count `r`.
    pub fn add(&mut self, r: &SeccompRecord) {
        let key = EventKey {
            container: self.container(r.pid),
            exe: r.exe.clone(),
            arch: r.arch.map_or_else(
                || format!("arch={:x}", r.arch_code),
                |a| a.scmp_name().to_owned(),
            ),
            syscall: r
                .syscall
                .map_or_else(|| format!("#{}", r.syscall_nr), str::to_owned),
            action: match r.action {
                Some(seccomp_profile::audit::AuditAction::Errno(e)) => {
                    format!("SCMP_ACT_ERRNO({e})")
                }
                Some(a) => a.scmp_name().to_owned(),
                None => format!("code={:#x}", r.code),
            },
        };
        if let Some(c) = self.events.get_mut(&key) {
            c.count += 1;
            c.first_ms = c.first_ms.min(r.time_ms);
            c.last_ms = c.last_ms.max(r.time_ms);
            return;
        }
        if self.events.len() >= self.max_kinds {
            self.dropped += 1;
            return;
        }
        self.events.insert(
            key,
            EventCount {
                count: 1,
                first_ms: r.time_ms,
                last_ms: r.time_ms,
            },
        );
    }

    /// The events gathered since the last take, and how many records were dropped.
    pub fn take(&mut self) -> (BTreeMap<EventKey, EventCount>, u64) {
        (
            std::mem::take(&mut self.events),
            std::mem::take(&mut self.dropped),
        )
    }
}

fn read_cgroup(dir: &Path) -> Option<String> {
    container_of_cgroup(&std::fs::read_to_string(dir.join("cgroup")).ok()?)
}

//! The seccomp events node agents report (#19): the kernel's records of what a profile
//! logged or denied, read by each agent from the logs it follows (`--audit-log`) and sent
//! aggregated over its stream. The distributor merges them per node, container, executable,
//! architecture, syscall and action, bounded in count ([`EventSettings::max`]) and in age
//! ([`EventSettings::retention`], by the last time seen), and in memory only: they are
//! evidence for the next version of a profile, not state a rollout depends on, and a
//! restarted distributor collects them anew.
//!
//! A container id is told by pod and profile file when the cluster's pods are watched
//! (`--check-pods`): looked up when the event first arrives, as the container may be gone
//! by the time anyone asks. Which profile and version a file is comes from the node's
//! effective set when the events are listed (see `Distributor::seccomp_events`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A pod's `namespace/name` and the profile file (a node path) a container of it runs
/// under, when that is a `Localhost` profile.
pub type PodFile = (String, Option<String>);

/// Which pod a container runs in, and the profile file it runs under (a node path).
pub trait ContainerPods: Send + Sync {
    /// The pod and file of the container with this id, when known.
    fn pod_of(&self, container_id: &str) -> Option<PodFile>;
}

impl ContainerPods for seccomp_k8s::PodIndex {
    fn pod_of(&self, container_id: &str) -> Option<PodFile> {
        self.container(container_id).map(|c| (c.pod, c.path))
    }
}

/// How many events are kept, and how long.
#[derive(Debug, Clone, Copy)]
pub struct EventSettings {
    /// Events last seen longer ago than this are forgotten.
    pub retention: Duration,
    /// Most kinds of event kept; further new kinds are counted as dropped until older ones
    /// expire.
    pub max: usize,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            retention: Duration::from_secs(7 * 24 * 3600),
            max: 100_000,
        }
    }
}

/// One kind of event as an agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    /// The container's id, empty when the agent could not tell.
    pub container: String,
    /// The executable.
    pub exe: String,
    /// `SCMP_ARCH_*`.
    pub arch: String,
    /// The syscall's name.
    pub syscall: String,
    /// `SCMP_ACT_*`.
    pub action: String,
    /// Records.
    pub count: u64,
    /// First and last record, ms since the epoch.
    pub first_ms: u64,
    /// See `first_ms`.
    pub last_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    node: String,
    container: String,
    exe: String,
    arch: String,
    syscall: String,
    action: String,
}

#[derive(Debug, Clone)]
struct Value {
    count: u64,
    first_ms: u64,
    last_ms: u64,
    pod: String,
    path: String,
}

/// One kind of event on one node, as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The node.
    pub node: String,
    /// The container's id, or empty.
    pub container: String,
    /// `namespace/name`, or empty when not known.
    pub pod: String,
    /// The profile file the pod names for the container, or empty.
    pub path: String,
    /// The executable.
    pub exe: String,
    /// `SCMP_ARCH_*`.
    pub arch: String,
    /// The syscall.
    pub syscall: String,
    /// `SCMP_ACT_*`.
    pub action: String,
    /// Records.
    pub count: u64,
    /// First and last record, ms since the epoch.
    pub first_ms: u64,
    /// See `first_ms`.
    pub last_ms: u64,
}

#[derive(Default)]
struct Inner {
    events: HashMap<Key, Value>,
    /// Records the agents did not send, and kinds not kept here.
    dropped: u64,
    /// When expired events were last removed.
    pruned_ms: u64,
}

/// The events of every node, bounded.
pub struct EventStore {
    settings: EventSettings,
    pods: Option<Arc<dyn ContainerPods>>,
    inner: Mutex<Inner>,
}

/// Expired events are looked for at most this often.
const PRUNE_EVERY_MS: u64 = 60_000;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Wall-clock now, ms since the epoch (events carry the kernel's times, so retention runs
/// on the wall clock, not the distributor's monotonic one).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis)
}

impl EventStore {
    /// An empty store; containers are told by pod through `pods` when given.
    pub fn new(settings: EventSettings, pods: Option<Arc<dyn ContainerPods>>) -> Self {
        EventStore {
            settings,
            pods,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Merge what `node`'s agent reported (it dropped `dropped` records), at `now_ms`.
    pub fn record(&self, node: &str, reported: Vec<Reported>, dropped: u64, now_ms: u64) {
        let horizon = now_ms.saturating_sub(millis(self.settings.retention));
        // Told by pod outside the lock: the pod index has a lock of its own.
        let told: Vec<(Reported, Option<PodFile>)> = reported
            .into_iter()
            .filter(|r| r.last_ms >= horizon && r.count > 0)
            .map(|r| {
                let pod = match (&self.pods, r.container.is_empty()) {
                    (Some(pods), false) => pods.pod_of(&r.container),
                    _ => None,
                };
                (r, pod)
            })
            .collect();
        let mut st = self.lock();
        st.dropped = st.dropped.saturating_add(dropped);
        // A pass over every kind costs time linear in the store: once a minute, or once a
        // second while the store is full (not at every message of a fleet).
        let since = now_ms.saturating_sub(st.pruned_ms);
        if since >= PRUNE_EVERY_MS || (st.events.len() >= self.settings.max && since >= 1000) {
            st.events.retain(|_, v| v.last_ms >= horizon);
            st.pruned_ms = now_ms;
        }
        for (r, pod) in told {
            let key = Key {
                node: node.to_owned(),
                container: r.container,
                exe: r.exe,
                arch: r.arch,
                syscall: r.syscall,
                action: r.action,
            };
            if let Some(v) = st.events.get_mut(&key) {
                v.count = v.count.saturating_add(r.count);
                v.first_ms = v.first_ms.min(r.first_ms);
                v.last_ms = v.last_ms.max(r.last_ms);
                if v.pod.is_empty()
                    && let Some((pod, path)) = pod
                {
                    v.pod = pod;
                    v.path = path.unwrap_or_default();
                }
                continue;
            }
            if st.events.len() >= self.settings.max {
                st.dropped = st.dropped.saturating_add(r.count);
                continue;
            }
            let (pod, path) =
                pod.map_or_else(Default::default, |(p, f)| (p, f.unwrap_or_default()));
            st.events.insert(
                key,
                Value {
                    count: r.count,
                    first_ms: r.first_ms,
                    last_ms: r.last_ms,
                    pod,
                    path,
                },
            );
        }
    }

    /// The events kept that `keep` accepts (by node and last seen), most recently seen
    /// first, and the records dropped so far.
    pub fn list(&self, mut keep: impl FnMut(&str, u64) -> bool) -> (Vec<StoredEvent>, u64) {
        let st = self.lock();
        let mut out: Vec<StoredEvent> = st
            .events
            .iter()
            .filter(|(k, v)| keep(&k.node, v.last_ms))
            .map(|(k, v)| StoredEvent {
                node: k.node.clone(),
                container: k.container.clone(),
                pod: v.pod.clone(),
                path: v.path.clone(),
                exe: k.exe.clone(),
                arch: k.arch.clone(),
                syscall: k.syscall.clone(),
                action: k.action.clone(),
                count: v.count,
                first_ms: v.first_ms,
                last_ms: v.last_ms,
            })
            .collect();
        let dropped = st.dropped;
        drop(st);
        out.sort_by(|a, b| {
            b.last_ms
                .cmp(&a.last_ms)
                .then_with(|| (&a.node, &a.syscall, &a.arch).cmp(&(&b.node, &b.syscall, &b.arch)))
        });
        (out, dropped)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ev(container: &str, syscall: &str, count: u64, first: u64, last: u64) -> Reported {
        Reported {
            container: container.into(),
            exe: "/usr/bin/app".into(),
            arch: "SCMP_ARCH_X86_64".into(),
            syscall: syscall.into(),
            action: "SCMP_ACT_LOG".into(),
            count,
            first_ms: first,
            last_ms: last,
        }
    }

    struct OnePod;
    impl ContainerPods for OnePod {
        fn pod_of(&self, id: &str) -> Option<PodFile> {
            (id == "c1").then(|| {
                (
                    "web/api-0".into(),
                    Some("/var/lib/kubelet/seccomp/web.json".into()),
                )
            })
        }
    }

    #[test]
    fn reports_merge_per_node_and_kind_with_counts_and_times() {
        let now = 10_000_000;
        let store = EventStore::new(EventSettings::default(), Some(Arc::new(OnePod)));
        store.record(
            "a",
            vec![ev("c1", "getppid", 2, now - 50, now - 40)],
            0,
            now,
        );
        store.record(
            "a",
            vec![ev("c1", "getppid", 3, now - 60, now - 10)],
            1,
            now,
        );
        store.record("b", vec![ev("c9", "getppid", 1, now - 5, now - 5)], 0, now);
        let (all, dropped) = store.list(|_, _| true);
        assert_eq!(dropped, 1);
        assert_eq!(all.len(), 2);
        // Most recent first.
        assert_eq!((all[0].node.as_str(), all[0].count), ("b", 1));
        assert_eq!(all[0].pod, "", "c9 is in no known pod");
        let a = &all[1];
        assert_eq!((a.count, a.first_ms, a.last_ms), (5, now - 60, now - 10));
        assert_eq!(
            (a.pod.as_str(), a.path.as_str()),
            ("web/api-0", "/var/lib/kubelet/seccomp/web.json")
        );
        let (only_b, _) = store.list(|node, _| node == "b");
        assert_eq!(only_b.len(), 1);
    }

    #[test]
    fn the_store_is_bounded_in_count_and_age() {
        let now = 100 * 24 * 3600 * 1000;
        let settings = EventSettings {
            retention: Duration::from_secs(3600),
            max: 2,
        };
        let store = EventStore::new(settings, None);
        // Older than the retention: never kept.
        store.record("a", vec![ev("", "read", 1, 0, now - 3_601_000)], 0, now);
        assert!(store.list(|_, _| true).0.is_empty());
        store.record(
            "a",
            vec![ev("", "read", 1, now, now), ev("", "write", 1, now, now)],
            0,
            now,
        );
        store.record("a", vec![ev("", "open", 4, now, now)], 0, now);
        let (kept, dropped) = store.list(|_, _| true);
        assert_eq!(kept.len(), 2);
        assert_eq!(dropped, 4, "the third kind did not fit");
        // Full, and pruned a moment ago: the new kind waits (no pass over the store at every
        // message).
        store.record("a", vec![ev("", "close", 1, now, now)], 0, now + 10);
        assert_eq!(store.list(|_, _| true).1, 5);
        // An hour later the old ones expired and a new kind fits.
        let later = now + 3_601_000;
        store.record("a", vec![ev("", "open", 1, later, later)], 0, later);
        let (kept, _) = store.list(|_, _| true);
        assert_eq!(
            kept.iter().map(|e| e.syscall.as_str()).collect::<Vec<_>>(),
            ["open"]
        );
    }
}

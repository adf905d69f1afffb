//! The distributor's store: whom a restarted distributor waits for, and that memory never
//! holds a record whose flush failed.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use seccomp_distributor::BoxFuture;
use seccomp_distributor::store::{AuditEntry, Backend, KnownNode, RolloutStore, SledBackend};
use seccomp_rollout::nci::{self, ProfileRef, Target};
use seccomp_rollout::record::{Content, RolloutRecord};
use seccomp_rollout::strategy::Strategy;

#[test]
fn a_restart_waits_for_the_nodes_seen_last_not_for_long_gone_ones() {
    let dir = tempfile::tempdir().unwrap();
    let minute = 60 * 1000;
    {
        let store = RolloutStore::open(dir.path()).unwrap();
        assert!(store.recent_nodes(5 * minute).unwrap().is_empty());
        // "old" was decommissioned an hour before the distributor stopped.
        store
            .saw_nodes(&["old".to_owned()], 1_000 * minute)
            .unwrap();
        store
            .saw_nodes(&["a".to_owned(), "b".to_owned()], 1_058 * minute)
            .unwrap();
        store.saw_nodes(&["a".to_owned()], 1_060 * minute).unwrap();
    }
    let store = RolloutStore::open(dir.path()).unwrap();
    let expected: Vec<String> = store
        .recent_nodes(5 * minute)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(expected, ["a", "b"]);
}

/// Sled, whose flushes fail while `failing` is set (a full or broken disk), counting the
/// rollout records written to it.
struct FlakyDisk {
    sled: SledBackend,
    failing: Arc<AtomicBool>,
    writes: Arc<AtomicUsize>,
}

impl Backend for FlakyDisk {
    fn load_rollouts(&self) -> seccomp_distributor::Result<Vec<(u64, RolloutRecord)>> {
        self.sled.load_rollouts()
    }
    fn write_rollout(&self, n: u64, r: &RolloutRecord) -> seccomp_distributor::Result<()> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.sled.write_rollout(n, r)
    }
    fn remove_rollout(&self, n: u64) -> seccomp_distributor::Result<()> {
        self.sled.remove_rollout(n)
    }
    fn next_number(&self) -> seccomp_distributor::Result<u64> {
        self.sled.next_number()
    }
    fn load_sightings(&self) -> seccomp_distributor::Result<Vec<(String, u64)>> {
        self.sled.load_sightings()
    }
    fn write_sightings(&self, names: &[String], at: u64) -> seccomp_distributor::Result<()> {
        self.sled.write_sightings(names, at)
    }
    fn load_nodes(&self) -> seccomp_distributor::Result<Vec<KnownNode>> {
        self.sled.load_nodes()
    }
    fn write_node(&self, node: &KnownNode) -> seccomp_distributor::Result<()> {
        self.sled.write_node(node)
    }
    fn remove_node(&self, name: &str) -> seccomp_distributor::Result<()> {
        self.sled.remove_node(name)
    }
    fn append_audit(&self, e: &AuditEntry) -> seccomp_distributor::Result<()> {
        self.sled.append_audit(e)
    }
    fn audit(
        &self,
        since: u64,
        after: Option<&[u8]>,
        limit: usize,
    ) -> seccomp_distributor::Result<Vec<AuditEntry>> {
        self.sled.audit(since, after, limit)
    }
    fn prune_audit(&self, before_ns: u64) -> seccomp_distributor::Result<usize> {
        self.sled.prune_audit(before_ns)
    }
    fn flush(&self) -> BoxFuture<'_, seccomp_distributor::Result<()>> {
        if self.failing.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(
                seccomp_distributor::Error::Storage("disk full".into()),
            )));
        }
        self.sled.flush()
    }
}

fn record(id: &str, version: u64) -> RolloutRecord {
    let nci = nci::render(
        ProfileRef {
            name: "web",
            version,
            content: b"{}",
        },
        &Target::new(Default::default()),
        None,
        Some(id),
    )
    .unwrap();
    let content = Content {
        profile: "web".into(),
        version,
        digest: "sha256:x".into(),
        nci,
    };
    RolloutRecord::new(id.into(), content, Strategy::default(), "test", 0)
}

#[tokio::test]
async fn a_record_whose_flush_failed_is_neither_in_memory_nor_written_later() {
    let dir = tempfile::tempdir().unwrap();
    let failing = Arc::new(AtomicBool::new(false));
    {
        let store = RolloutStore::new(FlakyDisk {
            sled: SledBackend::open(dir.path()).unwrap(),
            failing: Arc::clone(&failing),
            writes: Arc::default(),
        })
        .unwrap();
        store.put(&record("r1", 1)).await.unwrap();

        failing.store(true, Ordering::SeqCst);
        // A new record, and a change to an existing one: both refused, both taken back.
        assert!(store.put(&record("r2", 2)).await.is_err());
        let mut changed = record("r1", 1);
        changed.version = 9;
        assert!(store.put(&changed).await.is_err());
        assert!(
            store.get_shared("r2").is_err(),
            "no phantom rollout in memory"
        );
        assert_eq!(store.get_shared("r1").unwrap().version, 1);
        assert_eq!(store.all().unwrap().len(), 1);

        // The disk recovers; the next flush must not write what was refused.
        failing.store(false, Ordering::SeqCst);
        store.flush().await.unwrap();
    }
    let store = RolloutStore::open(dir.path()).unwrap();
    let ids: Vec<String> = store.all().unwrap().iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, ["r1"]);
    assert_eq!(store.get_shared("r1").unwrap().version, 1);
}

#[tokio::test]
async fn lazily_stored_records_are_read_at_once_and_written_coalesced_until_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let writes = Arc::new(AtomicUsize::new(0));
    {
        let store = RolloutStore::new(FlakyDisk {
            sled: SledBackend::open(dir.path()).unwrap(),
            failing: Arc::default(),
            writes: Arc::clone(&writes),
        })
        .unwrap();
        store.put(&record("r1", 1)).await.unwrap();
        let durable = writes.load(Ordering::SeqCst);
        // The engine's per-confirmation changes: each is read back at once...
        for v in 2..=101 {
            let mut r = record("r1", 1);
            r.version = v;
            store.put_lazy(&r).unwrap();
            assert_eq!(store.get_shared("r1").unwrap().version, v);
        }
        // ...but not each encoded and written: the first at once, the rest within the
        // coalescing interval (250 ms; these hundred take a few milliseconds).
        let lazy = writes.load(Ordering::SeqCst) - durable;
        assert!(
            (1..=3).contains(&lazy),
            "{lazy} writes for 100 lazy changes"
        );
        // A flush writes the newest.
        store.flush().await.unwrap();
    }
    let store = RolloutStore::open(dir.path()).unwrap();
    assert_eq!(store.get_shared("r1").unwrap().version, 101);
}

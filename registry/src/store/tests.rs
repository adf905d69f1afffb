//! The store's commit, replay and codec behaviour, on sled in a temporary directory.

#![allow(clippy::unwrap_used)]

use super::codec::{PACKED_LZ4, encode, pack};
use super::commit::JOURNAL_KEY;
use super::keys::version_key;
use super::*;
use crate::error::Error;
use crate::journal::{self, TreeId, Write};

fn meta(name: &str, version: u64, content: &[u8]) -> VersionMeta {
    VersionMeta {
        name: name.into(),
        version,
        digest: seccomp_profile::digest(content),
        size: content.len() as u64,
        created_at: UnixNanos(version),
        author: "test".into(),
        description: String::new(),
        warnings: Vec::new(),
        deprecation: None,
    }
}

fn audit(method: &str, version: u64) -> AuditEntry {
    AuditEntry {
        time: UnixNanos::now(),
        actor: "test".into(),
        method: method.into(),
        target: format!("p@{version}"),
        result: "OK".into(),
        message: String::new(),
    }
}

fn record(version: u64) -> ProfileRecord {
    ProfileRecord {
        next_version: version + 1,
        latest_live: version,
        stored: version,
        compat: None,
    }
}

/// The record of `p` once its only version, 1, is no longer live (`stored` is 1 when it was
/// deprecated, 0 when deleted).
fn no_live_version(stored: u64) -> ProfileRecord {
    ProfileRecord {
        next_version: 2,
        latest_live: 0,
        stored,
        compat: None,
    }
}

fn content(version: u64) -> Vec<u8> {
    format!("{{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"v\": {version}}}").into_bytes()
}

async fn publish(store: &ProfileStore, version: u64) {
    let bytes = content(version);
    store
        .insert_version(NewVersion {
            record: &record(version),
            meta: &meta("p", version, &bytes),
            content: &bytes,
            audit: &audit("Publish", version),
        })
        .await
        .unwrap();
}

fn journalled(store: &ProfileStore) -> usize {
    store
        .journal
        .get(JOURNAL_KEY)
        .unwrap()
        .map_or(0, |v| journal::decode(&v).unwrap().len())
}

#[tokio::test]
async fn a_commit_is_visible_when_it_returns_and_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = ProfileStore::open(dir.path()).unwrap();
    publish(&store, 1).await;
    assert_eq!(store.content("p", 1).unwrap().unwrap(), content(1));
    assert_eq!(store.profile("p").unwrap().unwrap(), record(1));
    assert_eq!(
        store
            .versions_with_digest("p", &meta("p", 1, &content(1)).digest)
            .unwrap(),
        [1]
    );
    // Stored compressed, returned exactly.
    let stored = store.content.get(version_key("p", 1)).unwrap().unwrap();
    assert_eq!(stored[0], PACKED_LZ4);
    assert_eq!(journalled(&store), 1);
    drop(store);
    let store = ProfileStore::open(dir.path()).unwrap();
    assert_eq!(store.content("p", 1).unwrap().unwrap(), content(1));
    assert_eq!(
        journalled(&store),
        0,
        "opening applies and empties the journal"
    );
}

#[tokio::test]
async fn a_commit_journalled_but_not_applied_is_applied_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = ProfileStore::open(dir.path()).unwrap();
    publish(&store, 1).await;
    // A crash between the flush and the apply: the journal holds version 2, the trees
    // do not.
    let bytes = content(2);
    let writes = vec![
        Write::insert(TreeId::Content, version_key("p", 2), pack(&bytes)),
        Write::insert(
            TreeId::Versions,
            version_key("p", 2),
            encode(&meta("p", 2, &bytes)).unwrap(),
        ),
        Write::insert(TreeId::Profiles, b"p".to_vec(), encode(&record(2)).unwrap()),
    ];
    let mut pending = store.commits.pending.lock().await;
    let kept: Vec<&[u8]> = pending.iter().map(|p| p.entry.as_slice()).collect();
    let entry = journal::encode_entry(&writes).unwrap();
    store
        .journal
        .insert(
            JOURNAL_KEY,
            journal::encode(kept.into_iter().chain([entry.as_slice()])).unwrap(),
        )
        .unwrap();
    store.db.flush().unwrap();
    pending.clear();
    drop(pending);
    assert_eq!(store.content("p", 2).unwrap(), None);
    drop(store);

    let store = ProfileStore::open(dir.path()).unwrap();
    assert_eq!(store.content("p", 2).unwrap().unwrap(), bytes);
    assert_eq!(store.version("p", 2).unwrap().unwrap().version, 2);
    assert_eq!(store.profile("p").unwrap().unwrap(), record(2));
    assert_eq!(store.content("p", 1).unwrap().unwrap(), content(1));
    assert_eq!(journalled(&store), 0);
}

#[tokio::test]
async fn replay_keeps_the_order_of_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = ProfileStore::open(dir.path()).unwrap();
    publish(&store, 1).await;
    let mut m = meta("p", 1, &content(1));
    m.deprecation = Some(Deprecation {
        reason: "old".into(),
        at: UnixNanos(9),
        by: "test".into(),
    });
    let rec = no_live_version(1);
    store
        .update_version(&rec, &m, &audit("Deprecate", 1))
        .await
        .unwrap();
    // Both commits are still journalled (no flush since the deprecation was applied):
    // replaying them in order must end deprecated, not live again.
    assert_eq!(journalled(&store), 2);
    drop(store);
    let store = ProfileStore::open(dir.path()).unwrap();
    assert!(
        store
            .version("p", 1)
            .unwrap()
            .unwrap()
            .deprecation
            .is_some()
    );
    assert_eq!(store.profile("p").unwrap().unwrap(), rec);
}

#[tokio::test]
async fn the_journal_keeps_only_commits_not_known_to_be_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = ProfileStore::open(dir.path()).unwrap();
    for v in 1..=5 {
        publish(&store, v).await;
        // This commit, and the previous one (applied after the last flush started).
        assert_eq!(journalled(&store), v.min(2) as usize, "after version {v}");
    }
    store.flush().await.unwrap();
    publish(&store, 6).await;
    assert_eq!(journalled(&store), 1);
    for v in 1..=6 {
        assert_eq!(store.content("p", v).unwrap().unwrap(), content(v));
    }
}

#[tokio::test]
async fn delete_removes_everything_but_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = ProfileStore::open(dir.path()).unwrap();
    publish(&store, 1).await;
    let m = meta("p", 1, &content(1));
    let rec = no_live_version(0);
    store
        .delete_version(&rec, &m, &audit("DeleteVersion", 1))
        .await
        .unwrap();
    drop(store);
    let store = ProfileStore::open(dir.path()).unwrap();
    assert_eq!(store.content("p", 1).unwrap(), None);
    assert_eq!(store.version("p", 1).unwrap(), None);
    assert!(
        store
            .versions_with_digest("p", &m.digest)
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.profile("p").unwrap().unwrap(), rec);
    assert_eq!(store.audit(None, 10, None).unwrap().items.len(), 2);
}

#[test]
fn content_stored_before_compression_is_returned_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let store = ProfileStore::open(dir.path()).unwrap();
    let raw = b"\n {\"defaultAction\": \"SCMP_ACT_ERRNO\"}".to_vec();
    store
        .content
        .insert(version_key("p", 1), raw.as_slice())
        .unwrap();
    assert_eq!(store.content("p", 1).unwrap().unwrap(), raw);
}

#[test]
fn corrupt_content_and_journal_are_errors_that_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = ProfileStore::open(dir.path()).unwrap();
    let mut packed = pack(&content(1));
    packed.truncate(packed.len() - 3);
    for bad in [
        packed,
        vec![PACKED_LZ4, 1, 2],
        vec![PACKED_LZ4, 0xff, 0xff, 0xff, 0x7f, 0],
    ] {
        store.content.insert(version_key("p", 1), bad).unwrap();
        match store.content("p", 1) {
            Err(Error::Corrupt { key, .. }) => assert_eq!(key, "content/p@1"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
    store
        .journal
        .insert(JOURNAL_KEY, b"SJ1\x05".as_slice())
        .unwrap();
    store.db.flush().unwrap();
    drop(store);
    match ProfileStore::open(dir.path()) {
        Err(Error::Corrupt { key, reason }) => {
            assert_eq!(key, "journal/commits");
            assert!(reason.contains("truncated"), "{reason}");
        }
        Err(other) => panic!("expected Corrupt, got {other:?}"),
        Ok(_) => panic!("a corrupt journal must stop the store from opening"),
    }
}

#[tokio::test]
async fn pruning_removes_the_audit_entries_before_the_cutoff_and_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let store = ProfileStore::open(dir.path()).unwrap();
    for t in [10, 20, 30, 40] {
        let mut e = audit("Publish", t);
        e.time = UnixNanos(t * 1_000);
        store.append_audit(&e).unwrap();
    }
    assert_eq!(store.prune_audit(30_000).unwrap(), 2);
    assert_eq!(store.prune_audit(30_000).unwrap(), 0);
    store.flush().await.unwrap();
    drop(store);
    let store = ProfileStore::open(dir.path()).unwrap();
    let left: Vec<u64> = store
        .audit(None, 100, None)
        .unwrap()
        .items
        .iter()
        .map(|e| e.time.0)
        .collect();
    assert_eq!(left, [30_000, 40_000]);
}

//! The distributor's store: whom a restarted distributor waits for.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use seccomp_distributor::store::RolloutStore;

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

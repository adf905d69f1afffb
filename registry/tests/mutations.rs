//! Mutations through the library API (no gRPC): what a caller that goes away may and may not
//! change.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use seccomp_registry::service::{Actor, Publish, Selector};
use seccomp_registry::{Error, Limits, NoUsageTracking, ProfileStore, Registry};

fn profile(syscall: &str) -> Vec<u8> {
    format!(
        "{{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"syscalls\": [{{\"names\": [\"{syscall}\"], \"action\": \"SCMP_ACT_ALLOW\"}}]}}\n"
    )
    .into_bytes()
}

fn publish(name: &str, content: Vec<u8>, expected_latest: Option<u64>) -> Publish {
    Publish {
        name: name.into(),
        content,
        description: String::new(),
        expected_latest,
    }
}

/// Poll a future once and drop it, as tonic does with a handler whose client hung up.
/// False when it finished on that first poll (a busy machine can run the whole mutation
/// before the caller's thread polls again), which proves nothing.
async fn poll_once_and_drop<F: std::future::Future>(future: F) -> bool {
    let mut future = std::pin::pin!(future);
    tokio::select! {
        biased;
        _ = &mut future => false,
        () = std::future::ready(()) => true,
    }
}

/// Rounds of a race; at least one must catch the mutation in flight.
const ATTEMPTS: usize = 20;

fn open(dir: &std::path::Path) -> Registry {
    // ProfileStore::open waits for the lock a dropped handle's I/O threads still hold.
    let store = ProfileStore::open(dir).unwrap();
    Registry::new(
        store,
        Limits {
            max_profile_bytes: 1 << 20,
        },
        Arc::new(NoUsageTracking),
    )
}

/// Every listed version can be fetched with its bytes, and the record counts them.
fn assert_consistent(registry: &Registry, name: &str) {
    let history = registry.history(name, 0, "").unwrap();
    for meta in &history.items {
        let fetched = registry
            .get(name, &Selector::Version(meta.version), true)
            .unwrap_or_else(|e| {
                panic!(
                    "{name}@{} is listed but cannot be fetched: {e}",
                    meta.version
                )
            });
        assert!(fetched.content.is_some_and(|c| c.len() as u64 == meta.size));
    }
    let summary = registry.list(0, "").unwrap();
    let record = summary
        .items
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.record.stored);
    assert_eq!(
        record.unwrap_or(0),
        history.items.len() as u64,
        "stored count of {name}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_whose_caller_went_away_holds_the_writer_lock_until_it_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    let actor = Actor("test".into());
    let mut caught = 0;
    for attempt in 0..ATTEMPTS {
        let name = format!("p{attempt}");
        for syscall in ["read", "write"] {
            registry
                .publish(&actor, publish(&name, profile(syscall), None))
                .await
                .unwrap();
        }
        let in_flight = poll_once_and_drop(registry.delete(&actor, &name, 2)).await;
        // Whichever runs first, the other sees its whole effect: a deprecation that decided
        // while the delete was still being written would put version 2's metadata back
        // without its bytes.
        match registry.deprecate(&actor, &name, 2, "old").await {
            Ok(_) | Err(Error::VersionNotFound { .. }) => {}
            Err(e) => panic!("unexpected refusal: {e}"),
        }
        registry.drain().await.unwrap();
        assert_consistent(&registry, &name);
        caught += usize::from(in_flight);
    }
    assert!(
        caught > 0,
        "no delete was still in flight after its first poll"
    );
    drop(registry);
    let registry = open(dir.path());
    for attempt in 0..ATTEMPTS {
        assert_consistent(&registry, &format!("p{attempt}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_whose_caller_went_away_completes_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    let actor = Actor("test".into());
    for syscall in ["read", "write"] {
        registry
            .publish(&actor, publish("p", profile(syscall), None))
            .await
            .unwrap();
    }
    // Whether or not it was still in flight when dropped, it must be done, durably.
    poll_once_and_drop(registry.delete(&actor, "p", 2)).await;
    registry.drain().await.unwrap();
    drop(registry);

    let registry = open(dir.path());
    let history = registry.history("p", 0, "").unwrap();
    let versions: Vec<u64> = history.items.iter().map(|m| m.version).collect();
    assert_eq!(versions, [1]);
    // The number is not reused.
    let again = registry
        .publish(&actor, publish("p", profile("openat"), None))
        .await
        .unwrap();
    assert_eq!(again.meta.version, 3);
}

//! Fencing against a real etcd (#18): a leader whose lease is gone (stopped past its time
//! to live, as a paused or partitioned process is) has every write refused by etcd once a
//! successor is elected, and learns it lost the leadership; the successor writes. Skipped,
//! loudly, without Debian's etcd.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::time::Duration;

use integration_tests::etcd::EtcdCluster;
use seccomp_distributor::leader::{self, ElectionSettings};
use seccomp_distributor::store::{Backend, EtcdBackend, EtcdSettings, etcd};
use tokio_util::sync::CancellationToken;

fn settings(cluster: &EtcdCluster) -> EtcdSettings {
    let mut s = EtcdSettings::new(vec![cluster.members[0].client_url.clone()]);
    s.prefix = "/fence-test".into();
    s
}

fn election(id: &str) -> ElectionSettings {
    ElectionSettings {
        replica_id: id.into(),
        lease_ttl: Duration::from_secs(2),
    }
}

async fn value(client: &etcd_client::Client, key: &str) -> Option<String> {
    let reply = client.kv_client().get(key, None).await.unwrap();
    reply
        .kvs()
        .first()
        .map(|kv| kv.value_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_deposed_leaders_writes_are_refused_and_it_knows() {
    let Some(cluster) = EtcdCluster::start(1) else {
        return;
    };
    let base = settings(&cluster);
    let client = etcd::election_client(&base).await.unwrap();
    let stop = CancellationToken::new();
    let a = leader::campaign(&client, &base.prefix, &election("a"), &stop)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        leader::current_leader(&client, &base.prefix)
            .await
            .as_deref(),
        Some("a")
    );
    // The store's fence has a token of its own, so that what refuses a's writes below is
    // etcd's comparison, not a's keep-alive noticing first.
    let a_lost = CancellationToken::new();
    let a_store = EtcdBackend::connect(EtcdSettings {
        fence: Some(leader::Fence {
            lost: a_lost.clone(),
            ..a.fence()
        }),
        ..base.clone()
    })
    .await
    .unwrap();
    a_store.write_sightings(&["node-1".into()], 1).unwrap();
    a_store.flush().await.unwrap();
    assert_eq!(
        value(&client, "/fence-test/sightings/node-1")
            .await
            .as_deref(),
        Some("1")
    );

    // b waits while a leads.
    let b_client = etcd::election_client(&base).await.unwrap();
    let mut b = tokio::spawn({
        let prefix = base.prefix.clone();
        let stop = stop.clone();
        async move {
            leader::campaign(&b_client, &prefix, &election("b"), &stop)
                .await
                .unwrap()
                .unwrap()
        }
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut b)
            .await
            .is_err(),
        "b was elected while a leads"
    );

    // a stops keeping its lease alive (as a process stopped with SIGSTOP does): every lease
    // but b's goes, as the lease would run out; b is elected.
    let leases = client.lease_client().leases().await.unwrap();
    let b_leader = {
        // b's lease is the newer one; revoke a's (the first granted).
        let mut ids: Vec<i64> = leases.leases().iter().map(|l| l.id()).collect();
        ids.sort_unstable();
        client.lease_client().revoke(ids[0]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), b)
            .await
            .expect("b elected once a's lease is gone")
            .unwrap()
    };
    assert_eq!(
        leader::current_leader(&client, &base.prefix)
            .await
            .as_deref(),
        Some("b")
    );

    // a, unaware, writes: etcd refuses, nothing of it lands, and a learns it was deposed.
    a_store.write_sightings(&["node-1".into()], 2).unwrap();
    a_store.write_sightings(&["node-2".into()], 2).unwrap();
    let refused = a_store.flush().await.unwrap_err();
    assert!(
        refused.to_string().contains("no longer the leader"),
        "{refused}"
    );
    assert!(a_lost.is_cancelled(), "the refusal tells the store's fence");
    assert_eq!(
        value(&client, "/fence-test/sightings/node-1")
            .await
            .as_deref(),
        Some("1"),
        "nothing from the deposed leader"
    );
    assert_eq!(value(&client, "/fence-test/sightings/node-2").await, None);
    // And it stays refused; a's own keep-alive finds the lease gone too.
    a_store.write_sightings(&["node-3".into()], 3).unwrap();
    assert!(a_store.flush().await.is_err());
    tokio::time::timeout(Duration::from_secs(5), a.deposed())
        .await
        .expect("a's keep-alive finds its lease gone");

    // b, fenced by its own key, writes.
    let b_store = EtcdBackend::connect(EtcdSettings {
        fence: Some(b_leader.fence()),
        ..base.clone()
    })
    .await
    .unwrap();
    assert_eq!(
        b_store.load_sightings().unwrap(),
        [("node-1".to_owned(), 1)]
    );
    b_store.write_sightings(&["node-2".into()], 4).unwrap();
    b_store.flush().await.unwrap();
    assert_eq!(
        value(&client, "/fence-test/sightings/node-2")
            .await
            .as_deref(),
        Some("4")
    );
    b_leader.resign().await;
    assert_eq!(leader::current_leader(&client, &base.prefix).await, None);
}

#[tokio::test]
async fn a_store_reads_back_more_than_a_page_and_more_than_a_message() {
    let Some(cluster) = EtcdCluster::start(1) else {
        return;
    };
    let mut s = settings(&cluster);
    s.prefix = "/paging".into();
    let store = EtcdBackend::connect(s.clone()).await.unwrap();
    // 300 sightings (pages of 128 keys) and 200 audit entries of 50 KB (10 MB, over
    // tonic's default 4 MiB answer).
    let names: Vec<String> = (0..300).map(|i| format!("node-{i:03}")).collect();
    store.write_sightings(&names, 7).unwrap();
    for i in 0..200u64 {
        store
            .append_audit(&seccomp_distributor::store::AuditEntry {
                time_ns: 1_000 + i,
                seq: 0,
                actor: "test".into(),
                method: "CreateRollout".into(),
                target: format!("r{i}"),
                result: "OK".into(),
                message: "x".repeat(50_000),
            })
            .unwrap();
    }
    store.flush().await.unwrap();
    let again = EtcdBackend::connect(s).await.unwrap();
    assert_eq!(again.load_sightings().unwrap().len(), 300);
    let audit = again.audit(0, None, 1000).unwrap();
    assert_eq!(audit.len(), 200);
    assert_eq!(audit[199].target, "r199");
}

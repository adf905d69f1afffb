//! One leader among the distributor replicas that share an etcd (#18): elected with etcd's
//! election API on a lease the leader keeps alive, and fenced, so that a deposed leader
//! (paused, partitioned, slow) cannot write once a successor took over.
//!
//! A replica [`campaign`]s under `<prefix>/leader` with its `--replica-id`; etcd makes it
//! leader when every earlier candidate's key is gone (resigned, or its lease expired). The
//! leader's key has a creation revision no other key will ever have; every write the
//! leader makes is a transaction that first compares that key's creation revision
//! ([`Fence`]), so once the key is gone (the lease expired while the leader was stopped)
//! its writes are refused by etcd itself, whatever the old leader believes.
//!
//! The leader also steps down on its own: the lease is kept alive every third of its TTL,
//! and when no keep-alive succeeded for two thirds of it (or etcd says the lease is gone),
//! [`Leadership::deposed`] fires, before etcd would let a successor in. The caller stops
//! serving then and campaigns again.

use std::time::Duration;

use etcd_client::{Client, ResignOptions};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// What a leader's writes are conditioned on: its election key still has this creation
/// revision. Fired when the leadership is found lost (a refused write, or the lease).
#[derive(Debug, Clone)]
pub struct Fence {
    /// The leader's election key.
    pub key: Vec<u8>,
    /// Its creation revision.
    pub revision: i64,
    /// Cancelled once the leadership is lost.
    pub lost: CancellationToken,
}

/// How a replica takes part in the election.
#[derive(Debug, Clone)]
pub struct ElectionSettings {
    /// This replica's name in the election (`--replica-id`).
    pub replica_id: String,
    /// The lease's time to live: how long a stopped leader keeps the others out.
    pub lease_ttl: Duration,
}

/// This replica's leadership, while it lasts.
pub struct Leadership {
    client: Client,
    leader_key: etcd_client::LeaderKey,
    lease: i64,
    fence: Fence,
    keeper: tokio::task::JoinHandle<()>,
}

fn etcd(e: etcd_client::Error) -> Error {
    Error::Storage(format!("etcd election: {e}"))
}

fn seconds(d: Duration) -> i64 {
    i64::try_from(d.as_secs().max(1)).unwrap_or(i64::MAX)
}

/// The election's name under `prefix`.
pub fn election_name(prefix: &str) -> String {
    format!("{}/leader", prefix.trim_end_matches('/'))
}

/// The replica id of the current leader, if there is one.
pub async fn current_leader(client: &Client, prefix: &str) -> Option<String> {
    let reply = client
        .election_client()
        .leader(election_name(prefix))
        .await
        .ok()?;
    reply
        .kv()
        .and_then(|kv| kv.value_str().ok())
        .map(str::to_owned)
}

/// Wait until this replica is the leader; `None` when `stop` fires first. While waiting it
/// says which replica leads.
pub async fn campaign(
    client: &Client,
    prefix: &str,
    settings: &ElectionSettings,
    stop: &CancellationToken,
) -> Result<Option<Leadership>> {
    // The election client has no request timeout (a campaign waits for as long as another
    // replica leads): every other call here gets one.
    let bound = settings.lease_ttl.max(Duration::from_secs(1));
    let mut leases = client.lease_client();
    let lease = tokio::time::timeout(bound, leases.grant(seconds(settings.lease_ttl), None))
        .await
        .map_err(|_| Error::Unavailable("etcd election: no answer to a lease grant".into()))?
        .map_err(etcd)?
        .id();
    let lost = CancellationToken::new();
    let keeper = tokio::spawn(keep_alive(
        client.clone(),
        lease,
        settings.lease_ttl,
        lost.clone(),
    ));
    match tokio::time::timeout(bound, current_leader(client, prefix))
        .await
        .ok()
        .flatten()
    {
        Some(leader) if leader != settings.replica_id => {
            tracing::info!(leader = %leader, replica = %settings.replica_id, "standing by: another replica leads");
        }
        _ => {}
    }
    let name = election_name(prefix);
    let mut election = client.election_client();
    let won = tokio::select! {
        () = stop.cancelled() => None,
        () = lost.cancelled() => {
            keeper.abort();
            return Err(Error::Storage("etcd election: the lease was lost while waiting".into()));
        }
        won = election.campaign(name.clone(), settings.replica_id.clone(), lease) => Some(won),
    };
    let Some(won) = won else {
        keeper.abort();
        let _ = tokio::time::timeout(bound, client.lease_client().revoke(lease)).await;
        return Ok(None);
    };
    let leader_key = won
        .map_err(etcd)?
        .take_leader()
        .ok_or_else(|| Error::Storage("etcd election: campaign answered without a key".into()))?;
    let fence = Fence {
        key: leader_key.key().to_vec(),
        revision: leader_key.rev(),
        lost,
    };
    tracing::info!(replica = %settings.replica_id, revision = fence.revision, "elected leader");
    Ok(Some(Leadership {
        client: client.clone(),
        leader_key,
        lease,
        fence,
        keeper,
    }))
}

/// Keep `lease` alive every third of `ttl`; cancel `lost` when etcd says it is gone, or
/// when no keep-alive succeeded for two thirds of `ttl`.
pub(crate) async fn keep_alive(client: Client, lease: i64, ttl: Duration, lost: CancellationToken) {
    let every = ttl / 3;
    let give_up = ttl * 2 / 3;
    let mut last_ok = tokio::time::Instant::now();
    let mut stream = None;
    loop {
        if last_ok.elapsed() >= give_up {
            tracing::warn!(
                lease,
                "no lease keep-alive for two thirds of its time to live: stepping down"
            );
            lost.cancel();
            return;
        }
        if stream.is_none() {
            stream = tokio::time::timeout(every, client.lease_client().keep_alive(lease))
                .await
                .ok()
                .and_then(Result::ok);
        }
        let ok = match stream.as_mut() {
            Some((keeper, replies)) => {
                let sent = tokio::time::timeout(every, keeper.keep_alive()).await;
                let reply = match sent {
                    Ok(Ok(())) => tokio::time::timeout(every, replies.message()).await,
                    _ => Ok(Err(etcd_client::Error::InvalidArgs("not sent".into()))),
                };
                match reply {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => Some(true),
                    Ok(Ok(Some(_))) => Some(false),
                    _ => None,
                }
            }
            None => None,
        };
        match ok {
            Some(true) => last_ok = tokio::time::Instant::now(),
            Some(false) => {
                tracing::warn!(lease, "the leader's lease expired: stepping down");
                lost.cancel();
                return;
            }
            // A broken stream is opened again at the next round.
            None => stream = None,
        }
        tokio::select! {
            () = lost.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

impl Leadership {
    /// What this leader's writes are conditioned on.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Resolves once the leadership is lost.
    pub async fn deposed(&self) {
        self.fence.lost.cancelled().await;
    }

    /// Whether it was lost.
    pub fn is_deposed(&self) -> bool {
        self.fence.lost.is_cancelled()
    }

    /// After losing the leadership: revoke the lease if etcd answers, so that its key (and
    /// with it the way for a successor, this replica included) goes now rather than when
    /// the lease runs out.
    pub async fn abandon(self) {
        self.keeper.abort();
        let bound = Duration::from_secs(2);
        let _ = tokio::time::timeout(bound, self.client.lease_client().revoke(self.lease)).await;
    }

    /// Give the leadership up (on shutdown, so a successor need not wait for the lease).
    pub async fn resign(self) {
        self.keeper.abort();
        let mut election = self.client.election_client();
        let options = ResignOptions::new().with_leader(self.leader_key.clone());
        let bound = Duration::from_secs(5);
        match tokio::time::timeout(bound, election.resign(Some(options))).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not resign; the lease runs out instead")
            }
            Err(_) => tracing::warn!("no answer to the resignation; the lease runs out instead"),
        }
        let _ = tokio::time::timeout(bound, self.client.lease_client().revoke(self.lease)).await;
    }
}

//! `seccomp.agent.v1.AgentSync`: one bidirectional stream per node agent. The first message
//! must be `Hello`; after it every `Ack`, `Nack`, `Drift` and `Heartbeat` goes to the hub,
//! and the `Desired` messages the hub queues for the session go out on the stream.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use seccomp_profile::name;
use seccomp_proto::agent::v1 as agent;
use seccomp_rollout::selector;
use seccomp_server::auth::{Principal, Refusals};
use tokio_stream::Stream;
use tokio_stream::wrappers::WatchStream;
use tonic::{Status, Streaming};

use super::convert::{errors_from, observed_from};
use crate::error::Error;
use crate::events::{self, EventStore, Reported};
use crate::hub::{self, Hello, Hub, Outbound};

/// Most labels a node may report (each also checked as Kubernetes checks a label).
const MAX_LABELS: usize = 128;
/// Most observed files in one message (an agent reports the files it placed).
const MAX_OBSERVED: usize = 4096;
/// Most kinds of seccomp event taken from one message (the agent's default bound is 1000);
/// the rest are counted as dropped.
const MAX_EVENTS: usize = 10_000;

/// The last second of year 9999: later times from an agent are taken as that.
const MAX_SECONDS: i64 = 253_402_300_799;

fn ms_of(t: Option<prost_types::Timestamp>) -> u64 {
    t.map_or(0, |t| {
        let seconds = u64::try_from(t.seconds.min(MAX_SECONDS)).unwrap_or(0);
        let millis = u64::try_from(t.nanos.clamp(0, 999_999_999) / 1_000_000).unwrap_or(0);
        seconds * 1000 + millis
    })
}

/// Of what an agent reported, the kinds kept (at most [`MAX_EVENTS`], each field at most
/// 4 KiB: a record's exe is a path) and how many records were dropped.
fn reported(e: agent::SeccompEvents) -> (Vec<Reported>, u64) {
    let mut dropped = e.dropped;
    let mut out = Vec::with_capacity(e.events.len().min(MAX_EVENTS));
    for ev in e.events {
        let too_long = [&ev.container_id, &ev.exe, &ev.arch, &ev.syscall, &ev.action]
            .iter()
            .any(|f| f.len() > 4096);
        if out.len() >= MAX_EVENTS || too_long {
            dropped = dropped.saturating_add(ev.count);
            continue;
        }
        out.push(Reported {
            container: ev.container_id,
            exe: ev.exe,
            arch: ev.arch,
            syscall: ev.syscall,
            action: ev.action,
            count: ev.count,
            first_ms: ms_of(ev.first_seen),
            last_ms: ms_of(ev.last_seen),
        });
    }
    (out, dropped)
}

/// `seccomp.agent.v1.AgentSync`.
pub struct AgentSyncGrpc {
    hub: Arc<Hub>,
    refusals: Arc<dyn Refusals>,
    events: Arc<EventStore>,
    hello_deadline: Duration,
}

impl AgentSyncGrpc {
    /// The service over `hub`; refused streams are told to `refusals` (the audit log), the
    /// seccomp events agents report go to `events`; a stream without a Hello within
    /// `hello_deadline` is closed.
    pub fn new(
        hub: Arc<Hub>,
        refusals: Arc<dyn Refusals>,
        events: Arc<EventStore>,
        hello_deadline: Duration,
    ) -> Self {
        AgentSyncGrpc {
            hub,
            refusals,
            events,
            hello_deadline,
        }
    }
}

/// What an open stream sends: the newest message of the session's outbox, as it changes.
pub(super) type Outgoing = Pin<Box<dyn Stream<Item = Option<Outbound>> + Send>>;

impl AgentSyncGrpc {
    /// Open a node's stream for `principal`: read its Hello from `incoming` and check it,
    /// start a session in the hub, feed it what the agent sends from then on (on a task of
    /// its own), and return what the stream is to send, with the node's name. A refused
    /// stream gets the reason as its status.
    pub(super) async fn open(
        &self,
        principal: Principal,
        mut incoming: Streaming<agent::AgentMessage>,
    ) -> Result<(Outgoing, String), Status> {
        // A stream that never says Hello holds a slot for nothing.
        let first = tokio::time::timeout(self.hello_deadline, incoming.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no Hello within {:?} of opening the stream",
                    self.hello_deadline
                ))
            })??
            .ok_or_else(|| Status::invalid_argument("the stream ended before Hello"))?;
        let Some(agent::agent_message::Message::Hello(h)) = first.message else {
            return Err(Status::invalid_argument(
                "the first message of a stream must be Hello",
            ));
        };
        if let Err(e) = name::check_dns_subdomain(&h.node_name) {
            return Err(Status::invalid_argument(format!(
                "node name {} is not valid: {e}",
                name::display(&h.node_name)
            )));
        }
        // An agent speaks for its own node only (with authentication off, for any).
        match &principal {
            Principal::Node { node } if *node == h.node_name => {}
            Principal::Anonymous { .. } => {}
            other => {
                tracing::warn!(claimed = %h.node_name, principal = %other, "agent refused: Hello names another node");
                let status = Status::permission_denied(format!(
                    "{other} may not open the stream of node {}",
                    name::display(&h.node_name)
                ));
                self.refusals.refused(
                    "/seccomp.agent.v1.AgentSync/Sync",
                    &other.actor(),
                    "PERMISSION_DENIED",
                    status.message(),
                );
                return Err(status);
            }
        }
        if h.labels.len() > MAX_LABELS {
            return Err(Status::invalid_argument(format!(
                "{} labels: a node may report at most {MAX_LABELS}",
                h.labels.len()
            )));
        }
        if h.observed.len() > MAX_OBSERVED {
            return Err(Status::invalid_argument(format!(
                "{} observed files: at most {MAX_OBSERVED} per message",
                h.observed.len()
            )));
        }
        let labels: BTreeMap<String, String> = h.labels.into_iter().collect();
        for (k, v) in &labels {
            selector::check_label_key(k).map_err(Error::from)?;
            selector::check_label_value(v).map_err(Error::from)?;
        }
        let node = h.node_name.clone();
        let (tx, rx) = hub::outbox();
        let session = self.hub.hello(
            Hello {
                node: node.clone(),
                labels,
                agent_version: h.agent_version,
                current_revision: h.current_revision,
                observed: h.observed.into_iter().map(observed_from).collect(),
            },
            tx,
        );
        tracing::info!(node = %node, "agent connected");
        let replaced = node.clone();
        let hub = Arc::clone(&self.hub);
        let seccomp_events = Arc::clone(&self.events);
        tokio::spawn(async move {
            loop {
                let msg = match incoming.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(node = %node, error = %e, "agent stream error");
                        break;
                    }
                };
                use agent::agent_message::Message as M;
                let sizes = match &msg.message {
                    Some(M::Ack(a)) => [a.observed.len(), 0],
                    Some(M::Nack(n)) => [n.observed.len(), n.errors.len()],
                    Some(M::Drift(d)) => [d.current.len().max(d.observed.len()), d.errors.len()],
                    _ => [0, 0],
                };
                if sizes.iter().any(|&n| n > MAX_OBSERVED) {
                    tracing::warn!(node = %node, "a message lists more than {MAX_OBSERVED} files; closing");
                    break;
                }
                match msg.message {
                    Some(M::Ack(a)) => hub.ack(
                        &node,
                        session,
                        &a.revision,
                        &a.nonce,
                        a.observed.into_iter().map(observed_from).collect(),
                    ),
                    Some(M::Nack(n)) => {
                        tracing::warn!(node = %node, revision = %n.revision, errors = n.errors.len(), "agent refused a set");
                        hub.nack(
                            &node,
                            session,
                            &n.nonce,
                            errors_from(n.errors),
                            n.observed.into_iter().map(observed_from).collect(),
                        );
                    }
                    Some(M::Drift(d)) => {
                        tracing::info!(node = %node, paths = d.observed.len(), repaired = d.repaired, "agent reported drift");
                        hub.drift(
                            &node,
                            session,
                            d.current.into_iter().map(observed_from).collect(),
                            d.repaired,
                            errors_from(d.errors),
                        );
                    }
                    Some(M::Heartbeat(_)) => hub.heartbeat(&node, session),
                    Some(M::SeccompEvents(e)) => {
                        hub.heartbeat(&node, session);
                        let (kinds, dropped) = reported(e);
                        tracing::debug!(node = %node, kinds = kinds.len(), dropped, "agent reported seccomp events");
                        seccomp_events.record(&node, kinds, dropped, events::now_ms());
                    }
                    Some(M::Hello(_)) | None => {
                        tracing::warn!(node = %node, "unexpected message: a second Hello or an empty one; closing");
                        break;
                    }
                }
            }
            hub.disconnect(&node, session);
            tracing::info!(node = %node, "agent disconnected");
        });
        Ok((Box::pin(WatchStream::from_changes(rx)), replaced))
    }
}

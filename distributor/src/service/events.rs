//! The seccomp events agents reported, as callers see them: filtered by node, selector,
//! time and profile, each told by the profile and version the node has at the file the
//! event's pod names (see [`crate::events`]).

use std::collections::HashMap;
use std::sync::Arc;

use seccomp_rollout::fileset::EffectiveSet;
use seccomp_rollout::nci::FileType;
use seccomp_rollout::selector::Selector;

use super::Distributor;
use crate::error::Result;
use crate::events::StoredEvent;

/// Which events a caller wants.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only those attributed to this profile.
    pub profile: Option<String>,
    /// Only those of this node.
    pub node: Option<String>,
    /// Only those last seen at or after this, ms since the epoch.
    pub since_ms: u64,
    /// Only those of nodes whose labels match.
    pub selector: Selector,
    /// With `profile`: also those no pod could be told for.
    pub include_unattributed: bool,
    /// At most this many.
    pub limit: usize,
}

/// One kind of event, told by profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventView {
    /// What the store keeps.
    pub event: StoredEvent,
    /// The profile the node has at the event's file, or empty.
    pub profile: String,
    /// Its version, or 0.
    pub version: u64,
}

/// The events that matched, whether more did than were returned, and the records dropped.
#[derive(Debug, Clone, Default)]
pub struct EventPage {
    /// Most recently seen first.
    pub events: Vec<EventView>,
    /// More matched than `limit`.
    pub truncated: bool,
    /// Records not kept, by the agents' bounds and the distributor's.
    pub dropped: u64,
}

impl Distributor {
    /// The seccomp events `query` asks for.
    pub fn seccomp_events(&self, query: &EventQuery) -> Result<EventPage> {
        let (events, dropped) = self.events.list(|node, last| {
            last >= query.since_ms && query.node.as_deref().is_none_or(|n| n == node)
        });
        if events.is_empty() {
            return Ok(EventPage {
                dropped,
                ..EventPage::default()
            });
        }
        let sources = self.file_sources()?;
        // Per node: whether it matches, and its set now (None: not a known node).
        let mut nodes: HashMap<String, Option<(bool, Arc<EffectiveSet>)>> = HashMap::new();
        let mut out = Vec::new();
        let mut truncated = false;
        for event in events {
            let node = nodes
                .entry(event.node.clone())
                .or_insert_with(|| self.hub.set_of(&event.node, &query.selector));
            // A node the distributor does not know any more matches only an empty selector.
            let matches = node.as_ref().map_or(query.selector.is_empty(), |(m, _)| *m);
            if !matches {
                continue;
            }
            let file = node.as_ref().and_then(|(_, set)| {
                set.files
                    .iter()
                    .find(|f| f.kind == FileType::File && f.path == event.path)
                    .and_then(|f| sources.rollout_of(f))
                    .map(|r| (r.profile.clone(), r.version))
            });
            let (profile, version) = file.unwrap_or_default();
            if let Some(want) = &query.profile {
                let unattributed = event.pod.is_empty();
                if profile != *want && !(query.include_unattributed && unattributed) {
                    continue;
                }
            }
            if out.len() >= query.limit {
                truncated = true;
                break;
            }
            out.push(EventView {
                event,
                profile,
                version,
            });
        }
        Ok(EventPage {
            events: out,
            truncated,
            dropped,
        })
    }
}

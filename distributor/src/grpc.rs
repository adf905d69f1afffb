//! The distributor's gRPC face, and the only module that builds `tonic::Status`: the
//! `AgentSync` stream (agents), the `Distributor` service (rollouts, nodes, rendering), and
//! the registry client behind [`ProfileSource`].

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use seccomp_proto::agent::v1 as agent;
use seccomp_proto::distributor::v1 as pb;
use seccomp_proto::registry::v1 as reg;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::error::Error;
use crate::hub::{DesiredMsg, Hello, Hub};
use crate::service::{
    BoxFuture, ConflictView, Counts, Distributor, FetchedProfile, NodeRow, ProfileSource,
    RollbackRequest, RolloutRequest, RolloutView,
};
use seccomp_rollout::nci::{self, FileType, Target};
use seccomp_rollout::node::{FileError, NodeState, NodeView, ObservedFile, ObservedKind};
use seccomp_rollout::record::{RolloutRecord, RolloutState};
use seccomp_rollout::selector::{self, Selector};
use seccomp_rollout::strategy::{self, MaxUnavailable, Pause, Strategy};

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(m) => Status::invalid_argument(m),
            Error::NotFound(m) => Status::not_found(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::Unavailable(m) => Status::unavailable(m),
            other => {
                tracing::error!(error = %other, "internal error");
                Status::internal(other.to_string())
            }
        }
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn timestamp_ms(ms: u64) -> prost_types::Timestamp {
    timestamp(UNIX_EPOCH + Duration::from_millis(ms))
}

// ---- the agent stream ----

fn observed_from(o: agent::ObservedFile) -> ObservedFile {
    let kind = match agent::FileType::try_from(o.r#type) {
        Ok(agent::FileType::Directory) => ObservedKind::Directory,
        Ok(agent::FileType::Symlink) => ObservedKind::Symlink,
        Ok(agent::FileType::File) => ObservedKind::File,
        _ => ObservedKind::Other,
    };
    ObservedFile {
        path: o.path,
        exists: o.exists,
        kind,
        sha256: o.sha256,
        size: o.size,
        mode: o.mode,
        uid: o.uid,
        gid: o.gid,
        owner: o.owner,
        group: o.group,
    }
}

fn errors_from(errors: Vec<agent::FileError>) -> Vec<FileError> {
    errors
        .into_iter()
        .map(|e| FileError {
            path: e.path,
            code: e.code,
            message: e.message,
        })
        .collect()
}

fn desired_to_proto(msg: &DesiredMsg) -> agent::DistributorMessage {
    let files = msg
        .set
        .files
        .iter()
        .map(|f| agent::DesiredFile {
            path: f.path.clone(),
            r#type: match f.kind {
                FileType::File => agent::FileType::File,
                FileType::Directory => agent::FileType::Directory,
            } as i32,
            content: f
                .content
                .as_ref()
                .map(|c| c.as_bytes().to_vec())
                .unwrap_or_default(),
            sha256: f.sha256.clone().unwrap_or_default(),
            mode: f.mode,
            owner: f.owner.clone(),
            group: f.group.clone(),
        })
        .collect();
    agent::DistributorMessage {
        message: Some(agent::distributor_message::Message::Desired(
            agent::Desired {
                revision: msg.revision.clone(),
                nonce: msg.nonce.clone(),
                files,
            },
        )),
    }
}

/// `seccomp.agent.v1.AgentSync`.
pub struct AgentSyncService {
    hub: Arc<Hub>,
}

type OutStream = Pin<Box<dyn Stream<Item = Result<agent::DistributorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl agent::agent_sync_server::AgentSync for AgentSyncService {
    type SyncStream = OutStream;

    async fn sync(
        &self,
        request: Request<Streaming<agent::AgentMessage>>,
    ) -> Result<Response<OutStream>, Status> {
        let mut incoming = request.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the stream ended before Hello"))?;
        let Some(agent::agent_message::Message::Hello(h)) = first.message else {
            return Err(Status::invalid_argument(
                "the first message of a stream must be Hello",
            ));
        };
        if !nci::is_dns_subdomain(&h.node_name) {
            return Err(Status::invalid_argument(format!(
                "node name \"{}\" is not a DNS-1123 subdomain",
                h.node_name
            )));
        }
        let labels: BTreeMap<String, String> = h.labels.into_iter().collect();
        for (k, v) in &labels {
            selector::check_label_key(k).map_err(Error::from)?;
            selector::check_label_value(v).map_err(Error::from)?;
        }
        let node = h.node_name.clone();
        let (tx, rx) = mpsc::unbounded_channel::<DesiredMsg>();
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
        let hub = Arc::clone(&self.hub);
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
                    Some(M::Hello(_)) | None => {
                        tracing::warn!(node = %node, "unexpected message: a second Hello or an empty one; closing");
                        break;
                    }
                }
            }
            hub.disconnect(&node, session);
            tracing::info!(node = %node, "agent disconnected");
        });
        let out = UnboundedReceiverStream::new(rx).map(|m| Ok(desired_to_proto(&m)));
        Ok(Response::new(Box::pin(out)))
    }
}

// ---- the Distributor service ----

fn node_state(s: NodeState) -> pb::NodeState {
    match s {
        NodeState::Pending => pb::NodeState::Pending,
        NodeState::Applying => pb::NodeState::Applying,
        NodeState::Applied => pb::NodeState::Applied,
        NodeState::Failed => pb::NodeState::Failed,
        NodeState::Drifted => pb::NodeState::Drifted,
        NodeState::Unknown => pb::NodeState::Unknown,
    }
}

/// A `Target` from the wire, with the defaults of DESIGN section 4.
pub fn target_from(t: Option<pb::Target>) -> Result<Target, Error> {
    let t = t.unwrap_or_default();
    let mut target = Target::new(t.selector.into_iter().collect());
    if let Some(p) = t.priority {
        target.priority = p;
    }
    if !t.path.is_empty() {
        target.path = Some(t.path);
    }
    if !t.mode.is_empty() {
        target.mode = nci::parse_mode(&t.mode)?;
    }
    if !t.owner.is_empty() {
        target.owner = t.owner;
    }
    if !t.group.is_empty() {
        target.group = t.group;
    }
    Ok(target)
}

fn duration_from(d: prost_types::Duration, what: &str) -> Result<Duration, Error> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(Error::invalid(format!("{what} must not be negative")));
    }
    Ok(Duration::new(
        u64::try_from(d.seconds).unwrap_or(0),
        u32::try_from(d.nanos).unwrap_or(0),
    ))
}

fn duration_to(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A `Strategy` from the wire, with the defaults of DESIGN section 5, validated.
pub fn strategy_from(s: Option<pb::Strategy>) -> Result<Strategy, Error> {
    let s = s.unwrap_or_default();
    let mut out = Strategy::default();
    if !s.waves.is_empty() {
        out.waves = strategy::parse_waves_list(&s.waves)?;
    }
    if !s.max_unavailable.is_empty() {
        out.max_unavailable = MaxUnavailable::parse(&s.max_unavailable)?;
    }
    out.failure_threshold = s.failure_threshold;
    if let Some(d) = s.progress_deadline {
        out.progress_deadline = duration_from(d, "progress_deadline")?;
    }
    out.pause = match s.pause {
        Some(pb::strategy::Pause::Duration(d)) => Pause::Duration(duration_from(d, "pause")?),
        Some(pb::strategy::Pause::Manual(true)) => Pause::Manual,
        Some(pb::strategy::Pause::Manual(false)) | None => Pause::None,
    };
    out.auto_rollback = s.auto_rollback.unwrap_or(true);
    out.validate()?;
    Ok(out)
}

fn strategy_to(s: &Strategy) -> pb::Strategy {
    pb::Strategy {
        waves: s.waves.iter().map(ToString::to_string).collect(),
        max_unavailable: s.max_unavailable.to_string(),
        failure_threshold: s.failure_threshold,
        progress_deadline: Some(duration_to(s.progress_deadline)),
        pause: match s.pause {
            Pause::None => None,
            Pause::Duration(d) => Some(pb::strategy::Pause::Duration(duration_to(d))),
            Pause::Manual => Some(pb::strategy::Pause::Manual(true)),
        },
        auto_rollback: Some(s.auto_rollback),
    }
}

fn target_to(nci: &nci::NodeConfigItem) -> pb::Target {
    let file = nci.spec.files.iter().find(|f| f.kind == FileType::File);
    pb::Target {
        selector: nci.spec.nodeconfigselector.clone().into_iter().collect(),
        priority: Some(nci.spec.priority),
        path: file.map(|f| f.path.clone()).unwrap_or_default(),
        mode: file.map(|f| f.mode.clone()).unwrap_or_default(),
        owner: file.map(|f| f.owner.clone()).unwrap_or_default(),
        group: file.map(|f| f.group.clone()).unwrap_or_default(),
    }
}

fn counts_to(c: Counts) -> pb::NodeCounts {
    pb::NodeCounts {
        total: c.total,
        pending: c.pending,
        applying: c.applying,
        applied: c.applied,
        failed: c.failed,
        drifted: c.drifted,
        unknown: c.unknown,
    }
}

fn rollout_state(s: RolloutState) -> pb::RolloutState {
    match s {
        RolloutState::Pending => pb::RolloutState::Pending,
        RolloutState::Progressing => pb::RolloutState::Progressing,
        RolloutState::Paused => pb::RolloutState::Paused,
        RolloutState::Completed => pb::RolloutState::Completed,
        RolloutState::RollingBack => pb::RolloutState::RollingBack,
        RolloutState::RolledBack => pb::RolloutState::RolledBack,
        RolloutState::Aborted => pb::RolloutState::Aborted,
    }
}

/// A stored transition's state name (older records may carry names no longer used).
fn state_named(name: &str) -> pb::RolloutState {
    match name {
        "Pending" => pb::RolloutState::Pending,
        "Paused" => pb::RolloutState::Paused,
        "Completed" => pb::RolloutState::Completed,
        "RollingBack" => pb::RolloutState::RollingBack,
        "RolledBack" => pb::RolloutState::RolledBack,
        "Aborted" | "Superseded" => pb::RolloutState::Aborted,
        _ => pb::RolloutState::Progressing,
    }
}

fn conflicts_to(list: &[ConflictView]) -> Vec<pb::Conflict> {
    list.iter()
        .map(|v| pb::Conflict {
            path: v.conflict.path.clone(),
            winning_nci: v.conflict.winner.clone(),
            winning_priority: v.conflict.winner_priority,
            winning_rollout_id: v.winning_rollout_id.clone().unwrap_or_default(),
            node_count: v.node_count,
            sample_nodes: v.sample_nodes.clone(),
        })
        .collect()
}

fn rollout_to(v: &RolloutView) -> pb::Rollout {
    let r = &v.record;
    pb::Rollout {
        id: r.id.clone(),
        revision: r.revision,
        profile: r.profile.clone(),
        version: r.version,
        digest: r.digest.clone(),
        nci_name: r.nci_name.clone(),
        target: Some(target_to(&r.nci)),
        strategy: Some(strategy_to(&r.strategy)),
        state: rollout_state(r.state) as i32,
        current_wave: r.current_wave,
        nodes: Some(counts_to(v.counts)),
        history: r
            .history
            .iter()
            .map(|t| pb::Transition {
                state: state_named(&t.state) as i32,
                reason: t.reason.clone(),
                time: Some(timestamp_ms(t.at_ms)),
                actor: t.actor.clone(),
            })
            .collect(),
        conflicts: conflicts_to(&v.conflicts),
        created_at: Some(timestamp_ms(r.created_at_ms)),
        created_by: r.created_by.clone(),
        updated_at: Some(timestamp_ms(r.updated_at_ms())),
        stable_version: r.stable_version,
        rollback: r.rollback,
        next_wave_at: r.next_wave_at_ms.map(timestamp_ms),
        wave_nodes: v.waves.iter().copied().map(counts_to).collect(),
    }
}

fn node_row_to(n: &NodeRow) -> pb::RolloutNode {
    pb::RolloutNode {
        node_name: n.name.clone(),
        state: node_state(n.state) as i32,
        message: n.message.clone(),
        since: (n.since_ms > 0).then(|| timestamp_ms(n.since_ms)),
    }
}

fn node_to(n: &NodeView, sources: &BTreeMap<String, Vec<Arc<RolloutRecord>>>) -> pb::Node {
    let files = n
        .desired
        .files
        .iter()
        .map(|f| {
            let observed = n.observed.iter().find(|o| o.path == f.path);
            let error = n.errors.iter().find(|e| e.path == f.path);
            // The rollout whose content the node should have: the newest of the NCI, or its
            // stable one on nodes a staged rollout has not reached.
            let candidates = sources.get(&f.source);
            let rollout = candidates.and_then(|list| {
                list.iter()
                    .find(|r| {
                        f.sha256
                            .as_deref()
                            .is_some_and(|sha| r.digest.strip_prefix("sha256:") == Some(sha))
                    })
                    .or_else(|| list.first())
            });
            pb::FileStatus {
                path: f.path.clone(),
                nci_name: f.source.clone(),
                rollout_id: rollout.map(|r| r.id.clone()).unwrap_or_default(),
                // A directory carries no profile (the proto says so; the rollout of its NCI
                // is still named).
                profile: rollout
                    .filter(|_| f.kind == FileType::File)
                    .map(|r| r.profile.clone())
                    .unwrap_or_default(),
                version: rollout
                    .filter(|_| f.kind == FileType::File)
                    .map_or(0, |r| r.version),
                desired: Some(pb::DesiredFileState {
                    r#type: match f.kind {
                        FileType::File => pb::FileType::File,
                        FileType::Directory => pb::FileType::Directory,
                    } as i32,
                    sha256: f.sha256.clone().unwrap_or_default(),
                    size: f.content.as_ref().map_or(0, |c| c.len() as u64),
                    mode: nci::format_mode(f.mode),
                    owner: f.owner.clone(),
                    group: f.group.clone(),
                }),
                observed: observed.map(|o| pb::ObservedFileState {
                    exists: o.exists,
                    r#type: match o.kind {
                        ObservedKind::File => pb::FileType::File,
                        ObservedKind::Directory => pb::FileType::Directory,
                        ObservedKind::Symlink => pb::FileType::Symlink,
                        ObservedKind::Other => pb::FileType::Other,
                    } as i32,
                    sha256: o.sha256.clone(),
                    size: o.size,
                    mode: nci::format_mode(o.mode),
                    uid: o.uid,
                    gid: o.gid,
                    owner: o.owner.clone(),
                    group: o.group.clone(),
                    observed_at: None,
                }),
                state: node_state(n.file_state(f)) as i32,
                message: error
                    .map(|e| format!("{}: {}", e.code, e.message))
                    .unwrap_or_default(),
            }
        })
        .collect();
    pb::Node {
        name: n.name.clone(),
        labels: n.labels.clone().into_iter().collect(),
        agent_version: n.agent_version.clone(),
        last_seen: Some(timestamp(n.last_seen)),
        revision: n.revision.clone(),
        desired_revision: n.desired.revision.clone(),
        connected: n.connected,
        files,
        state: node_state(n.state) as i32,
        drift_reports: n.drift_reports,
    }
}

/// A list call's page size: 0 means 100, larger than 1000 means 1000.
fn page_size(asked: u32) -> usize {
    match asked {
        0 => 100,
        n => n.min(1000) as usize,
    }
}

fn actor<T>(req: &Request<T>) -> String {
    req.metadata()
        .get("x-seccomp-actor")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| "anonymous".to_owned(), str::to_owned)
}

fn selector_from(map: std::collections::HashMap<String, String>) -> Result<Selector, Status> {
    let sel: Selector = map.into_iter().collect();
    for (k, v) in &sel {
        selector::check_label_key(k).map_err(Error::from)?;
        selector::check_label_value(v).map_err(Error::from)?;
    }
    Ok(sel)
}

/// `seccomp.distributor.v1.Distributor`.
pub struct DistributorService {
    distributor: Arc<Distributor>,
}

#[tonic::async_trait]
impl pb::distributor_server::Distributor for DistributorService {
    async fn create_rollout(
        &self,
        request: Request<pb::CreateRolloutRequest>,
    ) -> Result<Response<pb::CreateRolloutResponse>, Status> {
        let actor = actor(&request);
        let r = request.into_inner();
        if r.profile.is_empty() {
            return Err(Status::invalid_argument("profile is required"));
        }
        let target = target_from(r.target)?;
        let strategy = strategy_from(r.strategy)?;
        let view = self
            .distributor
            .create_rollout(RolloutRequest {
                profile: r.profile,
                version: (r.version != 0).then_some(r.version),
                target,
                strategy,
                nci_name: r.nci_name,
                actor,
            })
            .await?;
        Ok(Response::new(pb::CreateRolloutResponse {
            rollout: Some(rollout_to(&view)),
        }))
    }

    async fn get_rollout(
        &self,
        request: Request<pb::GetRolloutRequest>,
    ) -> Result<Response<pb::GetRolloutResponse>, Status> {
        let r = request.into_inner();
        let view = self.distributor.rollout(&r.id)?;
        let nodes = if r.include_nodes {
            view.nodes.iter().map(node_row_to).collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::GetRolloutResponse {
            rollout: Some(rollout_to(&view)),
            nodes,
        }))
    }

    async fn list_rollouts(
        &self,
        request: Request<pb::ListRolloutsRequest>,
    ) -> Result<Response<pb::ListRolloutsResponse>, Status> {
        let r = request.into_inner();
        let after = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
        let (views, next) = self.distributor.rollouts_page(
            |rec| {
                (r.profile.is_empty() || rec.profile == r.profile)
                    && (!r.active_only || rec.state.is_active())
            },
            after,
            page_size(r.page_size),
        )?;
        Ok(Response::new(pb::ListRolloutsResponse {
            rollouts: views.iter().map(rollout_to).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn pause_rollout(
        &self,
        request: Request<pb::PauseRolloutRequest>,
    ) -> Result<Response<pb::PauseRolloutResponse>, Status> {
        let actor = actor(&request);
        let r = request.into_inner();
        let view = self.distributor.pause(&r.id, &r.reason, &actor).await?;
        Ok(Response::new(pb::PauseRolloutResponse {
            rollout: Some(rollout_to(&view)),
        }))
    }

    async fn resume_rollout(
        &self,
        request: Request<pb::ResumeRolloutRequest>,
    ) -> Result<Response<pb::ResumeRolloutResponse>, Status> {
        let actor = actor(&request);
        let r = request.into_inner();
        let view = self.distributor.resume(&r.id, &actor).await?;
        Ok(Response::new(pb::ResumeRolloutResponse {
            rollout: Some(rollout_to(&view)),
        }))
    }

    async fn abort_rollout(
        &self,
        request: Request<pb::AbortRolloutRequest>,
    ) -> Result<Response<pb::AbortRolloutResponse>, Status> {
        let actor = actor(&request);
        let r = request.into_inner();
        let view = self.distributor.abort(&r.id, &r.reason, &actor).await?;
        Ok(Response::new(pb::AbortRolloutResponse {
            rollout: Some(rollout_to(&view)),
        }))
    }

    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RollbackResponse>, Status> {
        let actor = actor(&request);
        let r = request.into_inner();
        if r.profile.is_empty() {
            return Err(Status::invalid_argument("profile is required"));
        }
        if r.to_version == Some(0) {
            return Err(Status::invalid_argument(
                "to_version 0 is not a version: leave it unset for the stable version",
            ));
        }
        let views = self
            .distributor
            .rollback(RollbackRequest {
                profile: r.profile,
                to_version: r.to_version,
                nci_name: r.nci_name,
                actor,
            })
            .await?;
        Ok(Response::new(pb::RollbackResponse {
            rollouts: views.iter().map(rollout_to).collect(),
        }))
    }

    type WatchRolloutStream = Pin<Box<dyn Stream<Item = Result<pb::RolloutEvent, Status>> + Send>>;

    /// A snapshot, then an event whenever the rollout's state, wave or node counts change;
    /// the stream ends once the rollout is Completed, RolledBack or Aborted.
    async fn watch_rollout(
        &self,
        request: Request<pb::WatchRolloutRequest>,
    ) -> Result<Response<Self::WatchRolloutStream>, Status> {
        let id = request.into_inner().id;
        let first = self.distributor.rollout(&id)?;
        let distributor = Arc::clone(&self.distributor);
        let mut changes = distributor.subscribe();
        let (tx, rx) = mpsc::channel::<Result<pb::RolloutEvent, Status>>(16);
        tokio::spawn(async move {
            let event = |kind: pb::RolloutEventType, v: &RolloutView, changed| pb::RolloutEvent {
                r#type: kind as i32,
                time: Some(timestamp(SystemTime::now())),
                rollout: Some(rollout_to(v)),
                changed_nodes: changed,
            };
            // The nodes whose state changed since the previous event, at most 100.
            let states = |v: &RolloutView| -> BTreeMap<String, NodeState> {
                v.nodes.iter().map(|n| (n.name.clone(), n.state)).collect()
            };
            let mut seen = states(&first);
            let key = |v: &RolloutView| {
                (
                    v.record.state,
                    v.record.current_wave,
                    v.record.history.len(),
                    v.counts,
                )
            };
            let mut last = key(&first);
            if tx
                .send(Ok(event(
                    pb::RolloutEventType::Snapshot,
                    &first,
                    Vec::new(),
                )))
                .await
                .is_err()
            {
                return;
            }
            let mut done = first.record.state.is_terminal();
            while !done {
                // Node states also change with time (Unknown after the grace period).
                let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
                let view = match distributor.rollout(&id) {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let now = key(&view);
                if now == last {
                    if tx.is_closed() {
                        return;
                    }
                    continue;
                }
                let kind = if now.0 != last.0 {
                    pb::RolloutEventType::StateChanged
                } else if now.1 != last.1 {
                    pb::RolloutEventType::WaveStarted
                } else if now.2 != last.2 {
                    pb::RolloutEventType::StateChanged
                } else {
                    pb::RolloutEventType::NodesChanged
                };
                last = now;
                done = view.record.state.is_terminal();
                let changed: Vec<pb::RolloutNode> = view
                    .nodes
                    .iter()
                    .filter(|n| seen.get(&n.name) != Some(&n.state))
                    .take(100)
                    .map(node_row_to)
                    .collect();
                seen = states(&view);
                if tx.send(Ok(event(kind, &view, changed))).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let r = request.into_inner();
        let sel = selector_from(r.selector)?;
        let sources = self.distributor.content_sources()?;
        let limit = page_size(r.page_size);
        let after = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
        // One more than asked says whether there is a next page.
        let mut views = self.distributor.nodes(&sel, after, limit + 1);
        let next = if views.len() > limit {
            views.truncate(limit);
            views.last().map(|n| n.name.clone())
        } else {
            None
        };
        Ok(Response::new(pb::ListNodesResponse {
            nodes: views.iter().map(|n| node_to(n, &sources)).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn render_nci(
        &self,
        request: Request<pb::RenderNciRequest>,
    ) -> Result<Response<pb::RenderNciResponse>, Status> {
        let r = request.into_inner();
        let (nci, p) = self
            .distributor
            .render(&RolloutRequest {
                profile: r.profile,
                version: (r.version != 0).then_some(r.version),
                target: target_from(r.target)?,
                strategy: Strategy::default(),
                nci_name: (!r.name.is_empty()).then_some(r.name),
                actor: String::new(),
            })
            .await?;
        Ok(Response::new(pb::RenderNciResponse {
            yaml: nci.to_yaml().map_err(Error::from)?,
            json: nci.to_json().map_err(Error::from)?,
            version: p.version,
            digest: p.digest,
        }))
    }
}

/// The agent stream service over `hub`.
pub fn agent_service(hub: Arc<Hub>) -> agent::agent_sync_server::AgentSyncServer<AgentSyncService> {
    agent::agent_sync_server::AgentSyncServer::new(AgentSyncService { hub })
}

/// The rollout service over `distributor`.
pub fn distributor_service(
    distributor: Arc<Distributor>,
) -> pb::distributor_server::DistributorServer<DistributorService> {
    pb::distributor_server::DistributorServer::new(DistributorService { distributor })
}

// ---- the registry as a profile source ----

/// Fetches profile versions from the registry over gRPC (one lazily connected channel).
pub struct RegistrySource {
    client: reg::registry_client::RegistryClient<tonic::transport::Channel>,
    url: String,
}

impl RegistrySource {
    /// A source for the registry at `url` (connects on first use, reconnects as needed).
    pub fn new(url: &str) -> Result<Self, Error> {
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
            .map_err(|e| Error::invalid(format!("invalid registry URL {url:?}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        Ok(RegistrySource {
            client: reg::registry_client::RegistryClient::new(endpoint.connect_lazy())
                .max_decoding_message_size(64 << 20),
            url: url.to_owned(),
        })
    }
}

impl ProfileSource for RegistrySource {
    fn fetch<'a>(
        &'a self,
        name: &'a str,
        version: Option<u64>,
    ) -> BoxFuture<'a, Result<FetchedProfile, Error>> {
        Box::pin(async move {
            let selector = match version {
                Some(v) => reg::get_profile_request::Selector::Version(v),
                None => reg::get_profile_request::Selector::Latest(true),
            };
            let mut client = self.client.clone();
            let reply = client
                .get_profile(reg::GetProfileRequest {
                    name: name.to_owned(),
                    selector: Some(selector),
                    include_content: Some(true),
                })
                .await
                .map_err(|s| match s.code() {
                    tonic::Code::NotFound => Error::NotFound(s.message().to_owned()),
                    tonic::Code::InvalidArgument => Error::invalid(s.message()),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => Error::Unavailable(
                        format!("registry at {} unavailable: {}", self.url, s.message()),
                    ),
                    _ => Error::Unavailable(format!("registry at {}: {}", self.url, s.message())),
                })?;
            let p = reply
                .into_inner()
                .profile
                .ok_or_else(|| Error::Unavailable("registry returned no profile".into()))?;
            Ok(FetchedProfile {
                name: p.name,
                version: p.version,
                digest: p.digest,
                content: p.content,
                deprecated: p.deprecated,
            })
        })
    }
}

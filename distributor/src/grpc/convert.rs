//! Proto messages to and from domain types: agent observations and errors, desired sets,
//! targets and strategies (with the defaults of DESIGN sections 4 and 5), rollouts, nodes,
//! timestamps and durations. Pure mapping; what to report is decided in `service`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use seccomp_proto::agent::v1 as agent;
use seccomp_proto::distributor::v1 as pb;
use seccomp_rollout::fileset::Conflict;
use seccomp_rollout::nci::{self, FileType, Target};
use seccomp_rollout::node::{FileError, NodeState, NodeView, ObservedFile, ObservedKind};
use seccomp_rollout::plan::Action;
use seccomp_rollout::record::RolloutState;
use seccomp_rollout::selector::{self, Selector};
use seccomp_rollout::strategy::{self, MaxUnavailable, Pause, Strategy};
use tonic::Status;

use crate::error::Error;
use crate::service::{
    ConflictView, Counts, FileSources, NodeRow, Plan, RolloutView, Versions, version_of,
};

pub(super) fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

pub(super) fn timestamp_ms(ms: u64) -> prost_types::Timestamp {
    timestamp(UNIX_EPOCH + Duration::from_millis(ms))
}

pub(super) fn observed_from(o: agent::ObservedFile) -> ObservedFile {
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

pub(super) fn errors_from(errors: Vec<agent::FileError>) -> Vec<FileError> {
    errors
        .into_iter()
        .map(|e| FileError {
            path: e.path,
            code: e.code,
            message: e.message,
        })
        .collect()
}

/// A file's content as the NCI holds it, lent to every message that carries it.
struct SharedContent(Arc<str>);

impl AsRef<[u8]> for SharedContent {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The files of a desired set, as `Desired.files`.
pub(super) fn desired_files(
    set: &seccomp_rollout::fileset::EffectiveSet,
) -> Vec<agent::DesiredFile> {
    set.files
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
                .map(|c| prost::bytes::Bytes::from_owner(SharedContent(Arc::clone(c))))
                .unwrap_or_default(),
            sha256: f.sha256.clone().unwrap_or_default(),
            mode: f.mode,
            owner: f.owner.clone(),
            group: f.group.clone(),
        })
        .collect()
}

pub(super) fn node_state(s: NodeState) -> pb::NodeState {
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

pub(super) fn duration_from(d: prost_types::Duration, what: &str) -> Result<Duration, Error> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(Error::invalid(format!("{what} must not be negative")));
    }
    Ok(Duration::new(
        u64::try_from(d.seconds).unwrap_or(0),
        u32::try_from(d.nanos).unwrap_or(0),
    ))
}

pub(super) fn duration_to(d: Duration) -> prost_types::Duration {
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

pub(super) fn strategy_to(s: &Strategy) -> pb::Strategy {
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

pub(super) fn target_to(nci: &nci::NodeConfigItem) -> pb::Target {
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

pub(super) fn counts_to(c: Counts) -> pb::NodeCounts {
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

pub(super) fn rollout_state(s: RolloutState) -> pb::RolloutState {
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
pub(super) fn state_named(name: &str) -> pb::RolloutState {
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

pub(super) fn conflicts_to(list: &[ConflictView]) -> Vec<pb::Conflict> {
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

pub(super) fn rollout_to(v: &RolloutView) -> pb::Rollout {
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

pub(super) fn node_row_to(n: &NodeRow) -> pb::RolloutNode {
    pb::RolloutNode {
        node_name: n.name.clone(),
        state: node_state(n.state) as i32,
        message: n.message.clone(),
        since: (n.since_ms > 0).then(|| timestamp_ms(n.since_ms)),
        removal: n.removal,
    }
}

pub(super) fn node_to(n: &NodeView, sources: &FileSources) -> pb::Node {
    let files = n
        .desired
        .files
        .iter()
        .map(|f| {
            let observed = n.observed.iter().find(|o| o.path == f.path);
            let error = n.errors.iter().find(|e| e.path == f.path);
            let rollout = sources.rollout_of(f);
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
                desired: Some(pb::DesiredFile {
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
                observed: observed.map(|o| pb::ObservedFile {
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

pub(super) fn selector_from(
    map: std::collections::HashMap<String, String>,
) -> Result<Selector, Status> {
    let sel: Selector = map.into_iter().collect();
    for (k, v) in &sel {
        selector::check_label_key(k).map_err(Error::from)?;
        selector::check_label_value(v).map_err(Error::from)?;
    }
    Ok(sel)
}

pub(super) fn audit_to(e: &crate::store::AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        time: Some(timestamp(UNIX_EPOCH + Duration::from_nanos(e.time_ns))),
        actor: e.actor.clone(),
        method: e.method.clone(),
        target: e.target.clone(),
        result: e.result.clone(),
        message: e.message.clone(),
    }
}

pub(super) fn seccomp_event_to(v: crate::service::EventView) -> pb::SeccompEvent {
    let e = v.event;
    let at = |ms: u64| {
        UNIX_EPOCH
            .checked_add(Duration::from_millis(ms))
            .map(timestamp)
    };
    pb::SeccompEvent {
        node: e.node,
        container_id: e.container,
        pod: e.pod,
        path: e.path,
        profile: v.profile,
        version: v.version,
        exe: e.exe,
        arch: e.arch,
        syscall: e.syscall,
        action: e.action,
        count: e.count,
        first_seen: at(e.first_ms),
        last_seen: at(e.last_ms),
    }
}

fn plan_action(a: Action) -> pb::PlanAction {
    match a {
        Action::Unchanged => pb::PlanAction::Unchanged,
        Action::Add => pb::PlanAction::Add,
        Action::Update => pb::PlanAction::Update,
        Action::Remove => pb::PlanAction::Remove,
    }
}

fn planned_conflict(c: &Conflict) -> pb::PlannedConflict {
    pb::PlannedConflict {
        path: c.path.clone(),
        winning_nci: c.winner.clone(),
        losing_nci: c.loser.clone(),
    }
}

/// A plan as the API returns it, with the versions of the files' contents.
pub(super) fn plan_to(plan: &Plan, versions: &Versions) -> Result<pb::PlanRolloutResponse, Status> {
    let side = |s: Option<&seccomp_rollout::plan::Side>| match s {
        Some(s) => (s.nci.clone(), version_of(versions, &s.nci, &s.sha256)),
        None => (String::new(), None),
    };
    let nodes = plan
        .nodes
        .iter()
        .map(|n| pb::PlannedNode {
            node_name: n.name.clone(),
            action: plan_action(n.change.action) as i32,
            files: n
                .change
                .files
                .iter()
                .map(|f| {
                    let (from_nci, from_version) = side(f.before.as_ref());
                    let (to_nci, to_version) = side(f.after.as_ref());
                    pb::PlannedFile {
                        path: f.path.clone(),
                        action: plan_action(f.action) as i32,
                        from_nci,
                        from_version,
                        to_nci,
                        to_version,
                    }
                })
                .collect(),
            conflicts_added: n
                .change
                .conflicts_added
                .iter()
                .map(planned_conflict)
                .collect(),
            conflicts_gone: n
                .change
                .conflicts_gone
                .iter()
                .map(planned_conflict)
                .collect(),
            wave: n.wave.as_ref().map_or(0, |(w, _)| *w),
            wave_nci: n
                .wave
                .as_ref()
                .map(|(_, nci)| nci.clone())
                .unwrap_or_default(),
        })
        .collect();
    let rollouts = plan
        .rollouts
        .iter()
        .map(|p| {
            Ok(pb::PlannedRollout {
                nci_name: p.record.nci_name.clone(),
                profile: p.record.profile.clone(),
                version: p.record.version,
                stable_version: p.record.stable_version,
                wave_sizes: p.wave_sizes.clone(),
                nci_yaml: p.record.nci.to_yaml().map_err(Error::from)?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(pb::PlanRolloutResponse {
        rollouts,
        nodes,
        sink_changes: plan
            .sink_changes
            .iter()
            .map(|c| pb::PlannedSinkChange {
                nci_name: c.nci_name.clone(),
                action: plan_action(c.action) as i32,
                from_version: c.from_version,
                to_version: c.to_version,
            })
            .collect(),
        sinks: plan.sinks.clone(),
        removal_nodes: u32::try_from(plan.removals().count()).unwrap_or(u32::MAX),
        matching_nodes: u32::try_from(plan.matching_nodes).unwrap_or(u32::MAX),
    })
}

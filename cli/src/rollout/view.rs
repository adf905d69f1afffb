//! How a rollout reads, for every command that shows one (`rollout`, `rollback`, following a
//! watch, the `dev` demo): the serializable documents behind `-o json|yaml`, and the lines
//! of the table form (a progress line, a bar per wave, the history).

use std::time::Duration;

use seccomp_proto::distributor::v1 as pb;
use serde::Serialize;

/// The name of a rollout state, as the documents and tables show it.
pub fn state_name(s: i32) -> &'static str {
    match pb::RolloutState::try_from(s) {
        Ok(pb::RolloutState::Pending) => "Pending",
        Ok(pb::RolloutState::Progressing) => "Progressing",
        Ok(pb::RolloutState::Paused) => "Paused",
        Ok(pb::RolloutState::Completed) => "Completed",
        Ok(pb::RolloutState::RollingBack) => "RollingBack",
        Ok(pb::RolloutState::RolledBack) => "RolledBack",
        Ok(pb::RolloutState::Aborted) => "Aborted",
        _ => "Unknown",
    }
}

/// The name of a node state.
pub fn node_state_name(s: i32) -> &'static str {
    match pb::NodeState::try_from(s) {
        Ok(pb::NodeState::Pending) => "Pending",
        Ok(pb::NodeState::Applying) => "Applying",
        Ok(pb::NodeState::Applied) => "Applied",
        Ok(pb::NodeState::Failed) => "Failed",
        Ok(pb::NodeState::Drifted) => "Drifted",
        _ => "Unknown",
    }
}

/// A rollout, as every command shows it.
#[derive(Serialize)]
pub struct RolloutOut {
    pub id: String,
    pub profile: String,
    pub version: u64,
    pub digest: String,
    pub nci: String,
    pub revision: u64,
    pub state: &'static str,
    /// 1-based wave being applied or last applied.
    pub wave: u32,
    /// Every wave's spec and node counts.
    pub waves: Vec<WaveOut>,
    pub strategy: String,
    /// The version touched nodes return to on rollback; none when there is no earlier
    /// completed version.
    pub stable_version: Option<u64>,
    pub rollback: bool,
    /// RFC 3339, when a timed pause between waves ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_wave_at: Option<String>,
    pub nodes: CountsOut,
    pub conflicts: Vec<String>,
    pub history: Vec<TransitionOut>,
}

/// One wave: its share and its nodes.
#[derive(Serialize)]
pub struct WaveOut {
    /// `25%`.
    pub share: String,
    pub nodes: CountsOut,
}

/// One entry of a rollout's history.
#[derive(Serialize)]
pub struct TransitionOut {
    pub state: &'static str,
    pub reason: String,
    /// RFC 3339.
    pub time: String,
    pub actor: String,
}

/// Nodes by state.
#[derive(Serialize, Default)]
pub struct CountsOut {
    pub total: u32,
    pub applied: u32,
    pub applying: u32,
    pub pending: u32,
    pub failed: u32,
    pub drifted: u32,
    pub unknown: u32,
}

impl From<pb::NodeCounts> for CountsOut {
    fn from(c: pb::NodeCounts) -> Self {
        CountsOut {
            total: c.total,
            applied: c.applied,
            applying: c.applying,
            pending: c.pending,
            failed: c.failed,
            drifted: c.drifted,
            unknown: c.unknown,
        }
    }
}

/// A timestamp in RFC 3339, or nothing.
pub fn time_text(t: Option<&prost_types::Timestamp>) -> String {
    t.map(ToString::to_string).unwrap_or_default()
}

fn strategy_text(s: &pb::Strategy) -> String {
    let deadline = s
        .progress_deadline
        .map(|d| {
            humantime::format_duration(Duration::new(
                u64::try_from(d.seconds).unwrap_or(0),
                u32::try_from(d.nanos).unwrap_or(0),
            ))
            .to_string()
        })
        .unwrap_or_else(|| "5m".into());
    let pause = match &s.pause {
        Some(pb::strategy::Pause::Manual(true)) => "manual".to_owned(),
        Some(pb::strategy::Pause::Duration(d)) => humantime::format_duration(Duration::new(
            u64::try_from(d.seconds).unwrap_or(0),
            u32::try_from(d.nanos).unwrap_or(0),
        ))
        .to_string(),
        _ => "none".to_owned(),
    };
    format!(
        "waves {}, max unavailable {}, failure threshold {}, progress deadline {deadline}, pause {pause}, auto rollback {}",
        s.waves.join(","),
        s.max_unavailable,
        s.failure_threshold,
        if s.auto_rollback.unwrap_or(true) {
            "on"
        } else {
            "off"
        }
    )
}

impl From<&pb::Rollout> for RolloutOut {
    fn from(r: &pb::Rollout) -> Self {
        let strategy = r.strategy.clone().unwrap_or_default();
        RolloutOut {
            id: r.id.clone(),
            profile: r.profile.clone(),
            version: r.version,
            digest: r.digest.clone(),
            nci: r.nci_name.clone(),
            revision: r.revision,
            state: state_name(r.state),
            wave: r.current_wave,
            waves: strategy
                .waves
                .iter()
                .enumerate()
                .map(|(i, share)| WaveOut {
                    share: share.clone(),
                    nodes: r.wave_nodes.get(i).copied().unwrap_or_default().into(),
                })
                .collect(),
            strategy: strategy_text(&strategy),
            stable_version: r.stable_version,
            rollback: r.rollback,
            next_wave_at: r.next_wave_at.as_ref().map(|t| t.to_string()),
            nodes: r.nodes.unwrap_or_default().into(),
            conflicts: r
                .conflicts
                .iter()
                .map(|c| {
                    let by = if c.winning_rollout_id.is_empty() {
                        String::new()
                    } else {
                        format!(", rollout {}", c.winning_rollout_id)
                    };
                    format!(
                        "{} lost to {} (priority {}{by}) on {} node(s): {}",
                        c.path,
                        c.winning_nci,
                        c.winning_priority,
                        c.node_count,
                        c.sample_nodes.join(", ")
                    )
                })
                .collect(),
            history: r
                .history
                .iter()
                .map(|t| TransitionOut {
                    state: state_name(t.state),
                    reason: t.reason.clone(),
                    time: time_text(t.time.as_ref()),
                    actor: t.actor.clone(),
                })
                .collect(),
        }
    }
}

impl RolloutOut {
    /// Whether the rollout has ended (completed, rolled back or aborted).
    pub fn terminal(&self) -> bool {
        matches!(self.state, "Completed" | "RolledBack" | "Aborted")
    }
}

/// `r7 web@2 -> seccomp-web: Progressing, wave 1/2, 1/3 applied, ...`.
pub fn progress_line(r: &RolloutOut) -> String {
    let n = &r.nodes;
    let wave = if r.waves.is_empty() {
        String::new()
    } else {
        format!(" wave {}/{},", r.wave, r.waves.len())
    };
    format!(
        "{} {}@{} -> {}: {},{wave} {}/{} applied, {} applying, {} failed, {} unknown",
        r.id,
        r.profile,
        r.version,
        r.nci,
        r.state,
        n.applied,
        n.total,
        n.applying,
        n.failed,
        n.unknown
    )
}

/// A bar of `width` cells: `#` applied, `x` failed, `-` the rest.
fn bar(n: &CountsOut, width: u32) -> String {
    let cells = |k: u32| (k * width).checked_div(n.total).unwrap_or(0) as usize;
    let applied = if n.total == 0 {
        width as usize
    } else {
        cells(n.applied)
    };
    let failed = cells(n.failed).min(width as usize - applied);
    format!(
        "[{}{}{}]",
        "#".repeat(applied),
        "x".repeat(failed),
        "-".repeat(width as usize - applied - failed)
    )
}

/// One line per wave: `> wave 2 (25%)  [######------] 1/2 applied, 0 failed, 1 pending`.
pub fn wave_lines(r: &RolloutOut) -> Vec<String> {
    r.waves
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let n = &w.nodes;
            let marker = if i + 1 == r.wave as usize && !r.terminal() {
                ">"
            } else {
                " "
            };
            let mut line = format!(
                "{marker} wave {} ({}) {:>w$}{} {}/{} applied, {} failed, {} pending",
                i + 1,
                w.share,
                "",
                bar(n, 24),
                n.applied,
                n.total,
                n.failed,
                n.pending,
                w = 6usize.saturating_sub(w.share.len())
            );
            if n.applying > 0 {
                line.push_str(&format!(", {} applying", n.applying));
            }
            if n.unknown > 0 {
                line.push_str(&format!(", {} unknown", n.unknown));
            }
            line
        })
        .collect()
}

/// `TIME STATE: reason (by actor)`.
pub fn transition_line(t: &TransitionOut) -> String {
    let by = if t.actor.is_empty()
        || t.actor == "distributor"
        || t.reason.contains(&format!("by {}", t.actor))
    {
        String::new()
    } else {
        format!(" (by {})", t.actor)
    };
    format!("{} {}: {}{by}", t.time, t.state, t.reason)
}

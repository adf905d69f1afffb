//! The commands: create a rollout (fetching the version through the [`ProfileSource`](super::ProfileSource)),
//! pause, resume, abort, roll back, and render without writing. Each takes the write lock,
//! changes records, persists them durably, and runs the engine once so the first wave (or
//! the rollback) starts at once.

use std::sync::Arc;

use seccomp_rollout::engine;
use seccomp_rollout::nci::{NodeConfigItem, Target};
use seccomp_rollout::node::NodeState;
use seccomp_rollout::record::{Content, PauseCause, RolloutRecord, RolloutState};
use seccomp_rollout::strategy::{self, Pause, Strategy, WaveSpec};

use super::{
    Distributor, FetchedProfile, Plan, RetireRequest, RollbackRequest, RolloutRequest, RolloutView,
};

/// The id a planned rollout is rendered with (a plan stores nothing and takes no id).
const PLANNED_ID: &str = "planned";
use crate::error::{Error, Result};

impl Distributor {
    pub(super) async fn fetch(&self, name: &str, version: Option<u64>) -> Result<FetchedProfile> {
        let p = self.source.fetch(name, version).await?;
        if p.deprecated {
            return Err(Error::FailedPrecondition(format!(
                "profile \"{name}\" version {} is deprecated and cannot be rolled out",
                p.version
            )));
        }
        Ok(p)
    }

    /// Render the NCI a rollout with these inputs would write, without writing it.
    pub async fn render(&self, req: &RolloutRequest) -> Result<(NodeConfigItem, FetchedProfile)> {
        let p = self.fetch(&req.profile, req.version).await?;
        let nci = self.render_checked(&p, &req.target, req.nci_name.as_deref(), None)?;
        Ok((nci, p))
    }

    /// Render `p` for `target` (its default path under the policy's allowed root) and check
    /// the result against the policy: a refusal names the rule.
    fn render_checked(
        &self,
        p: &FetchedProfile,
        target: &Target,
        nci_name: Option<&str>,
        rollout_id: Option<&str>,
    ) -> Result<NodeConfigItem> {
        let mut target = target.clone();
        if target.path.is_none() {
            target.path = Some(format!("{}/{}.json", self.policy.allowed_root(), p.name));
        }
        let nci = p.render(&target, nci_name, rollout_id)?;
        self.policy.check(&nci)?;
        Ok(nci)
    }

    /// The newest completed rollout of `nci_name` (of `profile`, when given) created before
    /// the rollout `before`, if any (any time when `before` is `None`).
    pub(super) fn last_completed(
        &self,
        nci_name: &str,
        profile: Option<&str>,
        before: Option<&str>,
    ) -> Result<Option<Arc<RolloutRecord>>> {
        let all = self.store.all()?;
        let limit = before
            .and_then(|id| all.iter().position(|r| r.id == id))
            .unwrap_or(all.len());
        Ok(all[..limit]
            .iter()
            .rev()
            .find(|r| {
                r.nci_name == nci_name
                    && r.state == RolloutState::Completed
                    && profile.is_none_or(|p| r.profile == p)
            })
            .cloned())
    }

    /// The active rollout of `nci_name`, if any, as an error.
    pub(super) fn refuse_if_active(&self, nci_name: &str) -> Result<()> {
        if let Some(r) = self
            .store
            .current()?
            .get(nci_name)
            .filter(|r| r.state.is_active())
        {
            return Err(Error::FailedPrecondition(format!(
                "rollout {} of NCI \"{nci_name}\" is still {}: wait for it to finish, abort it, or roll back",
                r.id, r.state
            )));
        }
        Ok(())
    }

    /// A Pending record of `content`: the next revision of its NCI, whose stable version
    /// is the newest completed rollout of that NCI, with `reason` as its first transition.
    pub(super) fn new_record(
        &self,
        id: String,
        content: Content,
        strategy: Strategy,
        actor: &str,
        reason: String,
    ) -> Result<RolloutRecord> {
        let name = content.nci.metadata.name.clone();
        let now = self.now_ms();
        let mut record = RolloutRecord::new(id, content, strategy, actor, now);
        record.revision = self
            .store
            .current()?
            .get(&name)
            .map_or(1, |r| r.revision + 1);
        if let Some(stable) = self.last_completed(&name, None, None)? {
            record.stable_id = Some(stable.id.clone());
            // After a retirement, going back means no file.
            record.stable_version = (!stable.retires()).then_some(stable.version);
        }
        record.transition(RolloutState::Pending, reason, actor, now);
        Ok(record)
    }

    /// The record a CreateRollout of `p` would store (checked, not stored), under the
    /// placeholder id (see [`RolloutRecord::take_id`]).
    fn create_record(&self, req: &RolloutRequest, p: FetchedProfile) -> Result<RolloutRecord> {
        let id = PLANNED_ID.to_owned();
        let nci = self.render_checked(&p, &req.target, req.nci_name.as_deref(), Some(&id))?;
        self.refuse_if_active(&nci.metadata.name)?;
        let reason = format!(
            "created: waves {}",
            strategy::format_waves(&req.strategy.waves)
        );
        let content = Content {
            profile: p.name,
            version: p.version,
            digest: p.digest,
            nci,
        };
        let record = self.new_record(id, content, req.strategy.clone(), &req.actor, reason)?;
        Ok(record)
    }

    /// The record a RetireNci would store, under the placeholder id: the NCI of its newest
    /// completed version, without files.
    fn retire_record(&self, req: &RetireRequest) -> Result<RolloutRecord> {
        let id = PLANNED_ID.to_owned();
        let name = &req.nci_name;
        if !self.store.current()?.contains_key(name) {
            return Err(Error::NotFound(format!("NCI \"{name}\" has no rollout")));
        }
        self.refuse_if_active(name)?;
        let stable = self.last_completed(name, None, None)?.ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "no version of NCI \"{name}\" ever completed: nothing is on the nodes to retire"
            ))
        })?;
        if stable.retires() {
            return Err(Error::FailedPrecondition(format!(
                "NCI \"{name}\" is already retired (rollout {})",
                stable.id
            )));
        }
        let mut nci = stable.nci.relabelled(&id);
        nci.spec.files.clear();
        let content = Content {
            profile: stable.profile.clone(),
            version: 0,
            digest: String::new(),
            nci,
        };
        let reason = format!(
            "created to retire NCI {name} (version {} off the nodes): waves {}",
            stable.version,
            strategy::format_waves(&req.strategy.waves)
        );
        let record = self.new_record(id, content, req.strategy.clone(), &req.actor, reason)?;
        Ok(record)
    }

    /// What RetireNci would do with `req`, changing nothing.
    pub async fn plan_retire(&self, req: RetireRequest) -> Result<Plan> {
        req.strategy.validate()?;
        let _w = self.write.lock().await;
        let record = self.retire_record(&req)?;
        self.plan_records(vec![record])
    }

    /// Retire an NCI: a rollout that takes its file off every node that has it (see
    /// [`RolloutRecord::retires`]).
    async fn retire_unaudited(&self, req: RetireRequest) -> Result<RolloutView> {
        req.strategy.validate()?;
        let checked = self
            .check_users(req.force, || Ok(vec![self.retire_record(&req)?]))
            .await?;
        let _w = self.write.lock().await;
        let mut record = self.retire_record(&req)?;
        let plan = self.plan_records(vec![record.clone()])?;
        Self::still_checked(&plan, checked.as_ref())?;
        record.take_id(self.store.next_id()?);
        self.store.put(&record).await?;
        tracing::info!(rollout = %record.id, nci = %record.nci_name, "retirement created");
        self.tick_locked().await?;
        self.rollout(&record.id)
    }

    /// What CreateRollout would do with `req`, changing nothing.
    pub async fn plan_create(&self, req: RolloutRequest) -> Result<Plan> {
        req.strategy.validate()?;
        let p = self.fetch(&req.profile, req.version).await?;
        let _w = self.write.lock().await;
        let record = self.create_record(&req, p)?;
        self.plan_records(vec![record])
    }

    /// What Rollback would do with `req`, changing nothing.
    pub async fn plan_rollback(&self, req: RollbackRequest) -> Result<Plan> {
        let fetched = match req.to_version {
            Some(v) => Some(self.fetch(&req.profile, Some(v)).await?),
            None => None,
        };
        let _w = self.write.lock().await;
        let prepared = self.prepare_rollback(&req, fetched.as_ref())?;
        self.plan_records(prepared.into_iter().map(|(_, r)| r).collect())
    }

    /// Create a rollout: render its NCI, persist it, and start its first wave. Refused while
    /// another rollout of the same NCI is active, when its selector matches no known node
    /// (unless `allow_empty`), and when it takes a file from some node (unless
    /// `allow_removal`).
    async fn create_rollout_unaudited(&self, req: RolloutRequest) -> Result<RolloutView> {
        req.strategy.validate()?;
        let p = self.fetch(&req.profile, req.version).await?;
        let checked = self
            .check_users(req.force, || Ok(vec![self.create_record(&req, p.clone())?]))
            .await?;
        let _w = self.write.lock().await;
        let mut record = self.create_record(&req, p)?;
        let plan = self.plan_records(vec![record.clone()])?;
        self.guard(&plan, req.allow_empty, req.allow_removal)?;
        Self::still_checked(&plan, checked.as_ref())?;
        // A refused request takes no id.
        record.take_id(self.store.next_id()?);
        self.store.put(&record).await?;
        tracing::info!(rollout = %record.id, profile = %record.profile, version = record.version, nci = %record.nci_name, "rollout created");
        self.tick_locked().await?;
        self.rollout(&record.id)
    }

    /// Pause a progressing rollout (no more nodes are targeted; targeted ones converge).
    async fn pause_unaudited(&self, id: &str, reason: &str, actor: &str) -> Result<RolloutView> {
        check_reason(reason)?;
        let _w = self.write.lock().await;
        let mut r = self.store.get(id)?;
        let why = if reason.is_empty() {
            format!("paused by {actor}")
        } else {
            format!("paused by {actor}: {reason}")
        };
        match (r.state, r.paused) {
            // Already waiting for a person.
            (RolloutState::Paused, Some(PauseCause::Requested | PauseCause::BetweenWaves)) => {}
            // Paused by the engine for unknown nodes, or running: from now on only a resume
            // continues it. A pending timed pause is kept (and skipped by the resume).
            (RolloutState::Paused, _) | (RolloutState::Progressing | RolloutState::Pending, _) => {
                r.transition(RolloutState::Paused, why, actor, self.now_ms());
                r.paused = Some(PauseCause::Requested);
                self.store.put(&r).await?;
                self.bump();
            }
            s => {
                return Err(Error::FailedPrecondition(format!(
                    "rollout {id} is {}: only a progressing rollout can be paused",
                    s.0
                )));
            }
        }
        self.rollout(id)
    }

    /// Resume a paused rollout. After a manual pause between waves the next wave starts;
    /// after a pause for unknown nodes the rollout goes on without them; after a pause on
    /// request, what is left of a timed pause between waves is skipped.
    async fn resume_unaudited(&self, id: &str, actor: &str) -> Result<RolloutView> {
        let _w = self.write.lock().await;
        let mut r = self.store.get(id)?;
        if r.state != RolloutState::Paused {
            return Err(Error::FailedPrecondition(format!(
                "rollout {id} is {}: only a paused rollout can be resumed",
                r.state
            )));
        }
        let now = self.now_ms();
        match r.paused {
            Some(PauseCause::BetweenWaves) => {
                let next = r.current_wave + 1;
                engine::start_wave(&mut r, next, now);
                if let Some(t) = r.history.last_mut() {
                    t.actor = actor.to_owned();
                    t.reason = format!("resumed by {actor}: {}", t.reason);
                }
            }
            Some(PauseCause::UnknownNodes) => {
                let unknown: Vec<String> = r
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.state == NodeState::Unknown)
                    .map(|(name, _)| name.clone())
                    .collect();
                let reason = format!(
                    "resumed by {actor}, going on without the unknown node(s) {}",
                    unknown.join(", ")
                );
                r.waived.extend(unknown);
                r.transition(RolloutState::Progressing, reason, actor, now);
            }
            Some(PauseCause::Requested) | None => {
                r.transition(
                    RolloutState::Progressing,
                    format!("resumed by {actor}"),
                    actor,
                    now,
                );
                // Resuming means "go on now": what is left of a timed pause that was running
                // when the rollout was paused is skipped.
                if r.next_wave_at_ms.is_some() {
                    r.next_wave_at_ms = Some(now);
                }
            }
        }
        r.progress_at_ms = now;
        self.store.put(&r).await?;
        self.tick_locked().await?;
        self.rollout(id)
    }

    /// Abort an active rollout: nothing more is targeted; nodes keep what they have.
    async fn abort_unaudited(&self, id: &str, reason: &str, actor: &str) -> Result<RolloutView> {
        check_reason(reason)?;
        let _w = self.write.lock().await;
        let mut r = self.store.get(id)?;
        if r.state.is_terminal() {
            return Err(Error::FailedPrecondition(format!(
                "rollout {id} is already {}",
                r.state
            )));
        }
        let why = if reason.is_empty() {
            format!("aborted by {actor}")
        } else {
            format!("aborted by {actor}: {reason}")
        };
        r.transition(RolloutState::Aborted, why, actor, self.now_ms());
        self.store.put(&r).await?;
        self.refresh_fleet()?;
        self.bump();
        self.rollout(id)
    }

    /// The new records a Rollback would store, each with the current record of its NCI
    /// (checked, not stored), under the placeholder id (see [`RolloutRecord::take_id`]).
    fn prepare_rollback(
        &self,
        req: &RollbackRequest,
        fetched: Option<&FetchedProfile>,
    ) -> Result<Vec<(RolloutRecord, RolloutRecord)>> {
        let targets: Vec<RolloutRecord> = self
            .store
            .current()?
            .into_values()
            .filter(|r| r.profile == req.profile)
            .filter(|r| req.nci_name.as_ref().is_none_or(|n| *n == r.nci_name))
            .map(|r| (*r).clone())
            .collect();
        if targets.is_empty() {
            return Err(Error::NotFound(match &req.nci_name {
                Some(n) => format!("NCI \"{n}\" has no rollout of profile \"{}\"", req.profile),
                None => format!("no rollout of profile \"{}\"", req.profile),
            }));
        }
        let mut out = Vec::with_capacity(targets.len());
        for current in targets {
            let id = PLANNED_ID.to_owned();
            let (nci, version, digest) = match fetched {
                Some(p) => {
                    let all = self.store.all()?;
                    // The target that version had on this NCI, if it was ever rolled out here.
                    let target = match all.iter().rev().find(|r| {
                        r.nci_name == current.nci_name
                            && r.profile == req.profile
                            && r.version == p.version
                    }) {
                        Some(old) => Target::of(&old.nci)?,
                        None => Target::of(&current.nci)?,
                    };
                    let nci =
                        self.render_checked(p, &target, Some(&current.nci_name), Some(&id))?;
                    (nci, p.version, p.digest.clone())
                }
                None => {
                    let before = if current.state == RolloutState::Completed {
                        Some(current.id.as_str())
                    } else {
                        None
                    };
                    let stable = self
                        .last_completed(&current.nci_name, Some(&req.profile), before)?
                        .filter(|s| s.id != current.id)
                        .ok_or_else(|| {
                            Error::FailedPrecondition(format!(
                                "NCI \"{}\" has no earlier completed version to return to: give a version (--to-version)",
                                current.nci_name
                            ))
                        })?;
                    (
                        stable.nci.relabelled(&id),
                        stable.version,
                        stable.digest.clone(),
                    )
                }
            };
            // No waves; and a rollback that fails stops where it is rather than sending the
            // nodes back to the version being rolled away from.
            let strategy = Strategy {
                waves: vec![WaveSpec::Percent(100)],
                pause: Pause::None,
                auto_rollback: false,
                ..current.strategy.clone()
            };
            let from = current.version;
            let content = Content {
                profile: req.profile.clone(),
                version,
                digest,
                nci,
            };
            let mut record = self.new_record(
                id,
                content,
                strategy,
                &req.actor,
                format!(
                    "rollback by {}: version {from} back to version {version}",
                    req.actor
                ),
            )?;
            record.rollback = true;
            out.push((current, record));
        }
        Ok(out)
    }

    /// Roll NCIs of a profile forward to older content as new rollouts: every matching node
    /// at once, within `max_unavailable`. An active rollout of such an NCI is aborted first.
    /// Refused when that takes a file from some node, unless `allow_removal`.
    async fn rollback_unaudited(&self, req: RollbackRequest) -> Result<Vec<RolloutView>> {
        // The registry is asked before the lock is taken: a slow registry must not stall the
        // engine.
        let fetched = match req.to_version {
            Some(v) => Some(self.fetch(&req.profile, Some(v)).await?),
            None => None,
        };
        let checked = self
            .check_users(req.force, || {
                let prepared = self.prepare_rollback(&req, fetched.as_ref())?;
                Ok(prepared.into_iter().map(|(_, r)| r).collect())
            })
            .await?;
        let _w = self.write.lock().await;
        // Work out every NCI's content before changing anything.
        let prepared = self.prepare_rollback(&req, fetched.as_ref())?;
        let plan = self.plan_records(prepared.iter().map(|(_, r)| r.clone()).collect())?;
        self.guard(&plan, true, req.allow_removal)?;
        Self::still_checked(&plan, checked.as_ref())?;
        let mut ids = Vec::with_capacity(prepared.len());
        for (mut current, mut record) in prepared {
            record.take_id(self.store.next_id()?);
            if current.state.is_active() {
                current.transition(
                    RolloutState::Aborted,
                    format!("superseded by rollback {}", record.id),
                    &req.actor,
                    self.now_ms(),
                );
                self.store.put(&current).await?;
            }
            self.store.put(&record).await?;
            tracing::info!(rollout = %record.id, nci = %record.nci_name, from = current.version, to = record.version, "rollback created");
            ids.push(record.id);
        }
        self.tick_locked().await?;
        ids.iter().map(|id| self.rollout(id)).collect()
    }
}

/// The commands as callers make them: each recorded in the audit log with its outcome.
impl Distributor {
    /// Create a rollout: render its NCI, persist it, and start its first wave. Refused while
    /// another rollout of the same NCI is active.
    pub async fn create_rollout(&self, req: RolloutRequest) -> Result<RolloutView> {
        let (actor, profile) = (req.actor.clone(), req.profile.clone());
        let result = self.create_rollout_unaudited(req).await;
        let target = result.as_ref().map_or(profile, |v| v.record.id.clone());
        self.audit_command(
            &actor,
            "CreateRollout",
            &target,
            summary(&result, |v| {
                format!(
                    "{}@{} to NCI {}",
                    v.record.profile, v.record.version, v.record.nci_name
                )
            }),
        )
        .await;
        result
    }

    /// Retire an NCI: its file goes away from every node through the strategy's waves.
    pub async fn retire(&self, req: RetireRequest) -> Result<RolloutView> {
        let (actor, nci) = (req.actor.clone(), req.nci_name.clone());
        let result = self.retire_unaudited(req).await;
        let target = result.as_ref().map_or(nci, |v| v.record.id.clone());
        self.audit_command(
            &actor,
            "RetireNci",
            &target,
            summary(&result, |v| format!("retire NCI {}", v.record.nci_name)),
        )
        .await;
        result
    }

    /// Pause a progressing rollout (no more nodes are targeted; targeted ones converge).
    pub async fn pause(&self, id: &str, reason: &str, actor: &str) -> Result<RolloutView> {
        let result = self.pause_unaudited(id, reason, actor).await;
        self.audit_command(
            actor,
            "PauseRollout",
            id,
            summary(&result, |v| v.record.state.to_string()),
        )
        .await;
        result
    }

    /// Resume a paused rollout. After a manual pause between waves the next wave starts;
    /// after a pause for unknown nodes the rollout goes on without them; after a pause on
    /// request, what is left of a timed pause between waves is skipped.
    pub async fn resume(&self, id: &str, actor: &str) -> Result<RolloutView> {
        let result = self.resume_unaudited(id, actor).await;
        self.audit_command(
            actor,
            "ResumeRollout",
            id,
            summary(&result, |v| v.record.state.to_string()),
        )
        .await;
        result
    }

    /// Abort an active rollout: nothing more is targeted; nodes keep what they have.
    pub async fn abort(&self, id: &str, reason: &str, actor: &str) -> Result<RolloutView> {
        let result = self.abort_unaudited(id, reason, actor).await;
        self.audit_command(
            actor,
            "AbortRollout",
            id,
            summary(&result, |v| v.record.state.to_string()),
        )
        .await;
        result
    }

    /// Roll NCIs of a profile forward to older content as new rollouts: every matching node
    /// at once, within `max_unavailable`. An active rollout of such an NCI is aborted first.
    pub async fn rollback(&self, req: RollbackRequest) -> Result<Vec<RolloutView>> {
        let (actor, profile) = (req.actor.clone(), req.profile.clone());
        let result = self.rollback_unaudited(req).await;
        self.audit_command(
            &actor,
            "Rollback",
            &profile,
            summary(&result, |views| {
                views
                    .iter()
                    .map(|v| {
                        format!(
                            "{} ({} back to version {})",
                            v.record.id, v.record.nci_name, v.record.version
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
        )
        .await;
        result
    }
}

/// A command's outcome for the audit log.
fn summary<T>(result: &Result<T>, ok: impl FnOnce(&T) -> String) -> Result<String, &Error> {
    result.as_ref().map(ok)
}

/// The longest reason kept in a rollout's history (shown in every status).
pub const MAX_REASON_BYTES: usize = 1024;

fn check_reason(reason: &str) -> Result<()> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(Error::invalid(format!(
            "the reason is {} bytes, over the limit of {MAX_REASON_BYTES}",
            reason.len()
        )));
    }
    Ok(())
}

//! `seccomp.distributor.v1.Distributor`: rollouts (create, get, list, pause, resume, abort,
//! roll back, watch), nodes and rendering, over the service layer.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use seccomp_proto::distributor::v1 as pb;
use seccomp_rollout::strategy::Strategy;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::convert::{
    audit_to, node_row_to, node_to, plan_to, rollout_to, seccomp_event_to, selector_from,
    strategy_from, target_from, timestamp,
};
use crate::BoxFuture;
use crate::error::Error;
use crate::replica::{Execute, Outcome, Replica};
use crate::service::{
    Distributor, EventQuery, RetireRequest, RollbackRequest, RolloutRequest, RolloutView,
    WatchCursor, WatchEvent,
};

/// A list call's page size: 0 means 100, larger than 1000 means 1000.
fn page_size(asked: u32) -> usize {
    match asked {
        0 => 100,
        n => n.min(1000) as usize,
    }
}

/// The most a page of nodes holds, encoded: under the 4 MiB a gRPC client accepts by default,
/// whatever the nodes' labels and files.
pub const MAX_PAGE_BYTES: usize = 3 << 20;

/// Up to `limit` rows of `rows` within [`MAX_PAGE_BYTES`] (at least one), and the page token
/// (the last row's name) when rows were left.
fn fill_page(
    rows: impl Iterator<Item = pb::Node>,
    limit: usize,
) -> (Vec<pb::Node>, Option<String>) {
    let mut page = Vec::new();
    let mut bytes = 0;
    for row in rows {
        let len = prost::Message::encoded_len(&row);
        if page.len() == limit || (!page.is_empty() && bytes + len > MAX_PAGE_BYTES) {
            let next = page.last().map(|n: &pb::Node| n.name.clone());
            return (page, next);
        }
        bytes += len;
        page.push(row);
    }
    (page, None)
}

/// The verified caller (see `seccomp_server::auth`), as recorded in history.
fn actor<T>(req: &Request<T>) -> String {
    seccomp_server::auth::principal(req).actor()
}

/// `seccomp.distributor.v1.Distributor`.
pub struct DistributorGrpc {
    distributor: Arc<Distributor>,
    /// Among replicas (#18): while another replica leads, commands are passed to it.
    replica: Option<Arc<Replica>>,
}

impl DistributorGrpc {
    /// The service over `distributor`.
    pub fn new(distributor: Arc<Distributor>) -> Self {
        DistributorGrpc {
            distributor,
            replica: None,
        }
    }

    /// The service of one replica among several: commands go to the leader.
    pub fn replicated(distributor: Arc<Distributor>, replica: Arc<Replica>) -> Self {
        DistributorGrpc {
            distributor,
            replica: Some(replica),
        }
    }

    /// The replica to pass commands through, while another one leads.
    fn follower(&self) -> Option<&Replica> {
        self.replica.as_deref().filter(|r| !r.is_leading())
    }

    async fn create(
        &self,
        actor: String,
        r: pb::CreateRolloutRequest,
    ) -> Result<pb::CreateRolloutResponse, Status> {
        let req = create_request(r, actor)?;
        let view = self.distributor.create_rollout(req).await?;
        Ok(pb::CreateRolloutResponse {
            rollout: Some(rollout_to(&view)),
        })
    }

    async fn pause(
        &self,
        actor: String,
        r: pb::PauseRolloutRequest,
    ) -> Result<pb::PauseRolloutResponse, Status> {
        let view = self.distributor.pause(&r.id, &r.reason, &actor).await?;
        Ok(pb::PauseRolloutResponse {
            rollout: Some(rollout_to(&view)),
        })
    }

    async fn resume(
        &self,
        actor: String,
        r: pb::ResumeRolloutRequest,
    ) -> Result<pb::ResumeRolloutResponse, Status> {
        let view = self.distributor.resume(&r.id, &actor).await?;
        Ok(pb::ResumeRolloutResponse {
            rollout: Some(rollout_to(&view)),
        })
    }

    async fn abort(
        &self,
        actor: String,
        r: pb::AbortRolloutRequest,
    ) -> Result<pb::AbortRolloutResponse, Status> {
        let view = self.distributor.abort(&r.id, &r.reason, &actor).await?;
        Ok(pb::AbortRolloutResponse {
            rollout: Some(rollout_to(&view)),
        })
    }

    async fn roll_back(
        &self,
        actor: String,
        r: pb::RollbackRequest,
    ) -> Result<pb::RollbackResponse, Status> {
        let req = rollback_request(r, actor)?;
        let views = self.distributor.rollback(req).await?;
        Ok(pb::RollbackResponse {
            rollouts: views.iter().map(rollout_to).collect(),
        })
    }

    async fn retire(
        &self,
        actor: String,
        r: pb::RetireNciRequest,
    ) -> Result<pb::RetireNciResponse, Status> {
        let view = self.distributor.retire(retire_request(r, actor)?).await?;
        Ok(pb::RetireNciResponse {
            rollout: Some(rollout_to(&view)),
        })
    }
}

/// Pass `request` to the leader through `replica` and give its answer as this call's.
async fn forward<Req: prost::Message, Resp: prost::Message + Default>(
    replica: &Replica,
    method: &str,
    actor: &str,
    request: &Req,
) -> Result<Response<Resp>, Status> {
    let outcome = replica
        .forward(method, actor, request.encode_to_vec())
        .await?;
    if outcome.code != 0 {
        return Err(Status::new(
            tonic::Code::from_i32(outcome.code),
            outcome.message,
        ));
    }
    Resp::decode(outcome.body.as_slice())
        .map(Response::new)
        .map_err(|e| Status::internal(format!("the leader's answer to {method}: {e}")))
}

/// Decode `body`, run `f` on it, and encode its answer as an [`Outcome`].
async fn outcome<Req, Resp, Fut>(body: &[u8], f: impl FnOnce(Req) -> Fut) -> Outcome
where
    Req: prost::Message + Default,
    Resp: prost::Message,
    Fut: std::future::Future<Output = Result<Resp, Status>>,
{
    let done = match Req::decode(body) {
        Ok(req) => f(req).await,
        Err(e) => Err(Status::invalid_argument(format!(
            "undecodable request: {e}"
        ))),
    };
    match done {
        Ok(resp) => Outcome {
            code: 0,
            message: String::new(),
            body: resp.encode_to_vec(),
        },
        Err(status) => Outcome {
            code: status.code() as i32,
            message: status.message().to_owned(),
            body: Vec::new(),
        },
    }
}

impl Execute for DistributorGrpc {
    fn execute<'a>(
        &'a self,
        method: &'a str,
        actor: &'a str,
        body: &'a [u8],
    ) -> BoxFuture<'a, Outcome> {
        let actor = actor.to_owned();
        Box::pin(async move {
            match method {
                "CreateRollout" => outcome(body, |r| self.create(actor, r)).await,
                "PauseRollout" => outcome(body, |r| self.pause(actor, r)).await,
                "ResumeRollout" => outcome(body, |r| self.resume(actor, r)).await,
                "AbortRollout" => outcome(body, |r| self.abort(actor, r)).await,
                "Rollback" => outcome(body, |r| self.roll_back(actor, r)).await,
                "RetireNci" => outcome(body, |r| self.retire(actor, r)).await,
                other => Outcome {
                    code: tonic::Code::Unimplemented as i32,
                    message: format!("{other} is not a command the leader runs"),
                    body: Vec::new(),
                },
            }
        })
    }
}

#[tonic::async_trait]
impl pb::distributor_server::Distributor for DistributorGrpc {
    async fn create_rollout(
        &self,
        request: Request<pb::CreateRolloutRequest>,
    ) -> Result<Response<pb::CreateRolloutResponse>, Status> {
        let actor = actor(&request);
        let r = request.into_inner();
        match self.follower() {
            Some(replica) => forward(replica, "CreateRollout", &actor, &r).await,
            None => self.create(actor, r).await.map(Response::new),
        }
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
        match self.follower() {
            Some(replica) => forward(replica, "PauseRollout", &actor, &r).await,
            None => self.pause(actor, r).await.map(Response::new),
        }
    }

    async fn resume_rollout(
        &self,
        request: Request<pb::ResumeRolloutRequest>,
    ) -> Result<Response<pb::ResumeRolloutResponse>, Status> {
        let actor = actor(&request);
        let r = request.into_inner();
        match self.follower() {
            Some(replica) => forward(replica, "ResumeRollout", &actor, &r).await,
            None => self.resume(actor, r).await.map(Response::new),
        }
    }

    async fn abort_rollout(
        &self,
        request: Request<pb::AbortRolloutRequest>,
    ) -> Result<Response<pb::AbortRolloutResponse>, Status> {
        let actor = actor(&request);
        let r = request.into_inner();
        match self.follower() {
            Some(replica) => forward(replica, "AbortRollout", &actor, &r).await,
            None => self.abort(actor, r).await.map(Response::new),
        }
    }

    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RollbackResponse>, Status> {
        let actor = actor(&request);
        let r = request.into_inner();
        match self.follower() {
            Some(replica) => forward(replica, "Rollback", &actor, &r).await,
            None => self.roll_back(actor, r).await.map(Response::new),
        }
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
            let mut cursor = WatchCursor::new(&first);
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
                let Some((kind, changed)) = cursor.advance(&view) else {
                    if tx.is_closed() {
                        return;
                    }
                    continue;
                };
                let kind = match kind {
                    WatchEvent::StateChanged => pb::RolloutEventType::StateChanged,
                    WatchEvent::WaveStarted => pb::RolloutEventType::WaveStarted,
                    WatchEvent::NodesChanged => pb::RolloutEventType::NodesChanged,
                };
                let changed = changed.into_iter().map(node_row_to).collect();
                done = view.record.state.is_terminal();
                if tx.send(Ok(event(kind, &view, changed))).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let r = request.into_inner();
        let since_ns = match r.since {
            Some(t) if t.seconds < 0 || t.nanos < 0 => {
                return Err(Status::invalid_argument("since is before 1970"));
            }
            Some(t) => u64::try_from(t.seconds)
                .unwrap_or(0)
                .saturating_mul(1_000_000_000)
                .saturating_add(u64::try_from(t.nanos).unwrap_or(0)),
            None => 0,
        };
        let token = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
        let page = self
            .distributor
            .audit_page(since_ns, token, r.page_size as usize)?;
        Ok(Response::new(pb::ListAuditResponse {
            entries: page.entries.iter().map(audit_to).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn list_seccomp_events(
        &self,
        request: Request<pb::ListSeccompEventsRequest>,
    ) -> Result<Response<pb::ListSeccompEventsResponse>, Status> {
        let r = request.into_inner();
        let since_ms = match r.since {
            Some(t) if t.seconds < 0 || t.nanos < 0 => {
                return Err(Status::invalid_argument("since is before 1970"));
            }
            Some(t) => u64::try_from(t.seconds)
                .unwrap_or(0)
                .saturating_mul(1000)
                .saturating_add(u64::try_from(t.nanos / 1_000_000).unwrap_or(0)),
            None => 0,
        };
        if r.include_unattributed && r.profile.is_empty() {
            return Err(Status::invalid_argument(
                "include_unattributed needs a profile: without one every event is listed",
            ));
        }
        let query = EventQuery {
            profile: (!r.profile.is_empty()).then_some(r.profile),
            node: (!r.node.is_empty()).then_some(r.node),
            since_ms,
            selector: selector_from(r.selector)?,
            include_unattributed: r.include_unattributed,
            limit: match r.limit {
                0 => 1000,
                n => (n as usize).min(10_000),
            },
        };
        let page = self.distributor.seccomp_events(&query)?;
        Ok(Response::new(pb::ListSeccompEventsResponse {
            events: page.events.into_iter().map(seccomp_event_to).collect(),
            truncated: page.truncated,
            dropped: page.dropped,
        }))
    }

    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let r = request.into_inner();
        let sel = selector_from(r.selector)?;
        let sources = self.distributor.file_sources()?;
        let limit = page_size(r.page_size);
        let after = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
        // One more than asked says whether there is a next page.
        let views = self.distributor.nodes(&sel, after, limit + 1);
        let (nodes, next) = fill_page(views.iter().map(|n| node_to(n, &sources)), limit);
        Ok(Response::new(pb::ListNodesResponse {
            nodes,
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn plan_rollout(
        &self,
        request: Request<pb::PlanRolloutRequest>,
    ) -> Result<Response<pb::PlanRolloutResponse>, Status> {
        let actor = actor(&request);
        let plan = match request.into_inner().change {
            Some(pb::plan_rollout_request::Change::Create(r)) => {
                self.distributor
                    .plan_create(create_request(r, actor)?)
                    .await?
            }
            Some(pb::plan_rollout_request::Change::Rollback(r)) => {
                self.distributor
                    .plan_rollback(rollback_request(r, actor)?)
                    .await?
            }
            Some(pb::plan_rollout_request::Change::Retire(r)) => {
                self.distributor
                    .plan_retire(retire_request(r, actor)?)
                    .await?
            }
            None => {
                return Err(Status::invalid_argument(
                    "change is required: a create or a rollback to plan",
                ));
            }
        };
        let versions = self
            .distributor
            .plan_versions(&plan.rollouts)
            .map_err(Status::from)?;
        Ok(Response::new(plan_to(&plan, &versions)?))
    }

    async fn retire_nci(
        &self,
        request: Request<pb::RetireNciRequest>,
    ) -> Result<Response<pb::RetireNciResponse>, Status> {
        let actor = actor(&request);
        let r = request.into_inner();
        match self.follower() {
            Some(replica) => forward(replica, "RetireNci", &actor, &r).await,
            None => self.retire(actor, r).await.map(Response::new),
        }
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
                allow_empty: true,
                allow_removal: true,
                force: false,
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

/// A CreateRollout request as the service takes it.
fn create_request(r: pb::CreateRolloutRequest, actor: String) -> Result<RolloutRequest, Status> {
    if r.profile.is_empty() {
        return Err(Status::invalid_argument("profile is required"));
    }
    Ok(RolloutRequest {
        target: target_from(r.target)?,
        strategy: strategy_from(r.strategy)?,
        profile: r.profile,
        version: (r.version != 0).then_some(r.version),
        nci_name: r.nci_name,
        actor,
        allow_empty: r.allow_empty,
        allow_removal: r.allow_removal,
        force: r.force,
    })
}

/// A RetireNci request as the service takes it.
fn retire_request(r: pb::RetireNciRequest, actor: String) -> Result<RetireRequest, Status> {
    if r.nci_name.is_empty() {
        return Err(Status::invalid_argument("nci_name is required"));
    }
    Ok(RetireRequest {
        nci_name: r.nci_name,
        strategy: strategy_from(r.strategy)?,
        actor,
        force: r.force,
    })
}

/// A Rollback request as the service takes it.
fn rollback_request(r: pb::RollbackRequest, actor: String) -> Result<RollbackRequest, Status> {
    if r.profile.is_empty() {
        return Err(Status::invalid_argument("profile is required"));
    }
    if r.to_version == Some(0) {
        return Err(Status::invalid_argument(
            "to_version 0 is not a version: leave it unset for the stable version",
        ));
    }
    Ok(RollbackRequest {
        profile: r.profile,
        to_version: r.to_version,
        nci_name: r.nci_name,
        actor,
        allow_removal: r.allow_removal,
        force: r.force,
    })
}

/// Records the calls the auth layer refused in the distributor's audit log.
pub struct AuditRefusals(pub Arc<Distributor>);

impl seccomp_server::auth::Refusals for AuditRefusals {
    fn refused(&self, path: &str, actor: &str, code: &str, reason: &str) {
        let method = path
            .strip_prefix("/seccomp.distributor.v1.Distributor/")
            .unwrap_or(path);
        self.0.audit_refusal(actor, method, code, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, agent_version_bytes: usize) -> pb::Node {
        pb::Node {
            name: name.to_owned(),
            agent_version: "v".repeat(agent_version_bytes),
            ..Default::default()
        }
    }

    #[test]
    fn a_page_of_nodes_stops_at_the_count_or_the_bytes_whichever_comes_first() {
        let small = (0..5).map(|i| row(&format!("n{i}"), 10));
        let (page, next) = fill_page(small.clone(), 3);
        assert_eq!(page.len(), 3);
        assert_eq!(next.as_deref(), Some("n2"));
        let (page, next) = fill_page(small, 5);
        assert_eq!((page.len(), next), (5, None));

        // Rows of 1 MiB: three would pass the 3 MiB a page may hold.
        let big = (0..5).map(|i| row(&format!("n{i}"), 1 << 20));
        let (page, next) = fill_page(big, 100);
        let bytes: usize = page.iter().map(prost::Message::encoded_len).sum();
        assert_eq!(page.len(), 2);
        assert!(bytes <= MAX_PAGE_BYTES, "{bytes}");
        assert_eq!(next.as_deref(), Some("n1"));

        // A row bigger than a page on its own still comes, alone, so paging moves on.
        let huge = [row("a", 4 << 20), row("b", 10)].into_iter();
        let (page, next) = fill_page(huge, 100);
        assert_eq!((page.len(), next.as_deref()), (1, Some("a")));
    }
}

//! Whether a version is still in use, asked of the distributor: the [`UsageCheck`] of a
//! registry started with `--distributor`, run before every hard delete (DESIGN section 3: a
//! version that an active rollout or any node uses cannot be hard-deleted).
//!
//! Two questions to the distributor decide it:
//! - `ListRollouts` (active only): a rollout that is pending, progressing, paused or rolling
//!   back uses the version it rolls out and the stable version it returns nodes to;
//! - `ListNodes` (every node, every page): a node uses the version when its effective file
//!   set should carry it, or when its agent last reported a file with the version's sha256
//!   on disk (which also covers nodes that are offline now, and nodes an aborted rollout left
//!   on it).
//!
//! When the distributor cannot be asked, the delete is refused: a check that cannot be made
//! is not a check that passed.

use std::time::Duration;

use seccomp_proto::distributor::v1 as pb;
use seccomp_proto::distributor::v1::distributor_client::DistributorClient;
use seccomp_server::client::{Bearer, Credentials};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::service::{BoxFuture, UsageCheck};

/// How long one question to the distributor may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks a distributor over gRPC.
pub struct DistributorUsage {
    credentials: Credentials,
    url: String,
}

impl DistributorUsage {
    /// A check against the distributor at `url` (`http://host:port`, or `https://` with
    /// `credentials.tls`), as the caller `credentials` names (it needs the viewer role). The
    /// URL and credentials are checked now; each question connects anew with the files as
    /// they are then (deletes are rare; renewed certificates and tokens are picked up).
    pub fn new(
        url: &str,
        credentials: &Credentials,
    ) -> Result<Self, seccomp_server::tls::TlsError> {
        credentials.endpoint(url)?;
        Ok(DistributorUsage {
            credentials: credentials.clone(),
            url: url.to_owned(),
        })
    }

    fn client(
        &self,
    ) -> Result<DistributorClient<InterceptedService<Channel, Bearer>>, tonic::Status> {
        let unavailable =
            |e: String| tonic::Status::unavailable(format!("distributor {}: {e}", self.url));
        let channel = self
            .credentials
            .endpoint(&self.url)
            .map_err(|e| unavailable(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(ASK_TIMEOUT)
            .connect_lazy();
        let bearer = self
            .credentials
            .bearer()
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(DistributorClient::with_interceptor(channel, bearer))
    }

    async fn active_rollouts(&self, name: &str) -> Result<Vec<pb::Rollout>, tonic::Status> {
        let mut client = self.client()?;
        let mut rollouts = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_rollouts(pb::ListRolloutsRequest {
                    profile: name.to_owned(),
                    active_only: true,
                    page_size: 1000,
                    page_token,
                })
                .await?
                .into_inner();
            rollouts.extend(page.rollouts);
            if page.next_page_token.is_empty() {
                return Ok(rollouts);
            }
            page_token = page.next_page_token;
        }
    }

    async fn nodes(&self) -> Result<Vec<pb::Node>, tonic::Status> {
        let mut client = self.client()?;
        let mut nodes = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_nodes(pb::ListNodesRequest {
                    selector: Default::default(),
                    page_size: 1000,
                    page_token,
                })
                .await?
                .into_inner();
            nodes.extend(page.nodes);
            if page.next_page_token.is_empty() {
                return Ok(nodes);
            }
            page_token = page.next_page_token;
        }
    }
}

impl UsageCheck for DistributorUsage {
    fn user_of<'a>(
        &'a self,
        name: &'a str,
        version: u64,
        digest: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            let unanswered = |status: tonic::Status| {
                format!(
                    "the distributor at {} did not answer ({:?}: {})",
                    self.url,
                    status.code(),
                    status.message()
                )
            };
            let rollouts = self.active_rollouts(name).await.map_err(unanswered)?;
            if let Some(user) = rollout_using(&rollouts, version) {
                return Ok(Some(user));
            }
            let nodes = self.nodes().await.map_err(unanswered)?;
            Ok(nodes_using(&nodes, digest))
        })
    }
}

fn state_name(state: pb::RolloutState) -> &'static str {
    use pb::RolloutState as S;
    match state {
        S::Unspecified => "unspecified",
        S::Pending => "pending",
        S::Progressing => "progressing",
        S::Paused => "paused",
        S::Completed => "completed",
        S::RollingBack => "rolling back",
        S::RolledBack => "rolled back",
        S::Aborted => "aborted",
    }
}

/// The first of these (active) rollouts that uses `version`, described.
pub fn rollout_using(rollouts: &[pb::Rollout], version: u64) -> Option<String> {
    rollouts.iter().find_map(|r| {
        let why = if r.version == version {
            "rolls it out"
        } else if r.stable_version == Some(version) {
            "returns nodes to it on rollback"
        } else {
            return None;
        };
        let state = pb::RolloutState::try_from(r.state).unwrap_or(pb::RolloutState::Unspecified);
        Some(format!(
            "rollout {} of NCI {} ({}; {why})",
            r.id,
            r.nci_name,
            state_name(state)
        ))
    })
}

/// The nodes whose file sets should carry the version's bytes (`digest`, `sha256:<hex>`), or
/// whose agents last saw them on disk, described.
pub fn nodes_using(nodes: &[pb::Node], digest: &str) -> Option<String> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let mut users = nodes.iter().filter_map(|node| {
        node.files.iter().find_map(|f| {
            // By content: the version's bytes in the set the node should have (what the
            // labels say could be the rollout's, not the stable version it still gets), or
            // its agent's last report of its disk.
            let desired = f
                .desired
                .as_ref()
                .is_some_and(|d| !hex.is_empty() && d.sha256 == hex);
            let on_disk = f
                .observed
                .as_ref()
                .is_some_and(|o| o.exists && !hex.is_empty() && o.sha256 == hex);
            let why = match (desired, on_disk) {
                (true, true) => "its file set carries it and it is on disk",
                (true, false) => "its file set carries it",
                (false, true) => "its agent last reported it on disk",
                (false, false) => return None,
            };
            Some(format!("{} at {}: {why}", node.name, f.path))
        })
    });
    let first = users.next()?;
    let more = users.count();
    Some(match more {
        0 => format!("node {first}"),
        n => format!("{} nodes, e.g. {first}", n + 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::RolloutState as S;

    fn rollout(id: &str, version: u64, stable: Option<u64>, state: S) -> pb::Rollout {
        pb::Rollout {
            id: id.into(),
            nci_name: "seccomp-p".into(),
            profile: "p".into(),
            version,
            stable_version: stable,
            state: state as i32,
            ..Default::default()
        }
    }

    fn node(name: &str, desired: &str, observed: Option<&str>) -> pb::Node {
        pb::Node {
            name: name.into(),
            files: vec![pb::FileStatus {
                path: "/var/lib/kubelet/seccomp/p.json".into(),
                desired: Some(pb::DesiredFile {
                    sha256: desired.into(),
                    ..Default::default()
                }),
                observed: observed.map(|sha| pb::ObservedFile {
                    exists: true,
                    sha256: sha.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn active_rollouts_use_their_version_and_their_stable_version() {
        let rollouts = [rollout("r2", 2, Some(1), S::Paused)];
        assert!(
            rollout_using(&rollouts, 2)
                .unwrap()
                .contains("rollout r2 of NCI seccomp-p (paused; rolls it out)")
        );
        assert!(
            rollout_using(&rollouts, 1)
                .unwrap()
                .contains("returns nodes to it")
        );
        assert_eq!(rollout_using(&rollouts, 3), None);
        assert_eq!(rollout_using(&[], 1), None);
    }

    #[test]
    fn nodes_use_what_their_set_carries_and_what_is_on_their_disk() {
        let nodes = [
            node("n1", "bbbb", Some("bbbb")),
            node("n2", "bbbb", Some("aaaa")),
            node("n3", "dddd", None),
        ];
        // n2 should get bbbb but still has aaaa (say, it is offline).
        assert_eq!(
            nodes_using(&nodes, "sha256:aaaa").unwrap(),
            "node n2 at /var/lib/kubelet/seccomp/p.json: its agent last reported it on disk"
        );
        assert_eq!(
            nodes_using(&nodes, "sha256:bbbb").unwrap(),
            "2 nodes, e.g. n1 at /var/lib/kubelet/seccomp/p.json: its file set carries it and it is on disk"
        );
        assert_eq!(nodes_using(&nodes, "sha256:cccc"), None);
        assert_eq!(
            nodes_using(&nodes, "sha256:dddd").unwrap(),
            "node n3 at /var/lib/kubelet/seccomp/p.json: its file set carries it"
        );
        // A directory (no sha256) or a missing file matches nothing, not even an empty digest.
        let mut gone = node("n4", "", Some(""));
        gone.files[0].observed.as_mut().unwrap().exists = false;
        assert_eq!(nodes_using(&[gone], "sha256:"), None);
    }
}

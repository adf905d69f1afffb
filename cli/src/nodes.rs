//! `seccompctl nodes [--selector k=v]`: the nodes whose agents have connected to the
//! distributor, with their labels and state, and per file what should be on disk and what the
//! agent observed.

use std::collections::BTreeMap;

use anyhow::Result;
use seccomp_proto::distributor::v1 as pb;
use seccomp_rollout::selector;
use serde::Serialize;

use crate::Outcome;
use crate::client::{self, Service};
use crate::output::{Format, print_structured, print_table, table};
use crate::rollout::view::node_state_name;

/// Arguments of `seccompctl nodes`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only nodes whose labels match `k=v[,k=v]`.
    #[arg(long, value_name = "K=V[,K=V]")]
    selector: Option<String>,
}

#[derive(Serialize)]
struct NodeOut {
    name: String,
    labels: BTreeMap<String, String>,
    agent_version: String,
    connected: bool,
    /// RFC 3339, when the agent last sent anything.
    last_seen: String,
    state: &'static str,
    revision: String,
    desired_revision: String,
    files: Vec<FileOut>,
}

#[derive(Serialize)]
struct FileOut {
    path: String,
    nci: String,
    /// `profile@version` and the rollout that wrote it.
    source: String,
    state: &'static str,
    desired: Option<String>,
    observed: Option<String>,
    message: String,
}

/// `seccompctl nodes`: per node its labels, files, state.
pub fn run(args: &Args, dist: &str, format: Format) -> Result<Outcome> {
    let filter = match &args.selector {
        Some(s) => selector::parse(s)?,
        None => BTreeMap::new(),
    };
    client::runtime()?.block_on(async {
        let mut c = client::distributor(dist).await?;
        let mut list = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListNodesRequest {
                selector: filter.clone().into_iter().collect(),
                page_size: 1000,
                page_token,
            };
            let page =
                match client::answer(c.list_nodes(request).await, Service::Distributor, dist)? {
                    Ok(r) => r,
                    Err(outcome) => return Ok(outcome),
                };
            list.extend(page.nodes);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        let out: Vec<NodeOut> = list
            .into_iter()
            .map(|n| NodeOut {
                name: n.name,
                labels: n.labels.into_iter().collect(),
                agent_version: n.agent_version,
                connected: n.connected,
                last_seen: n.last_seen.map(|t| t.to_string()).unwrap_or_default(),
                state: node_state_name(n.state),
                revision: n.revision,
                desired_revision: n.desired_revision,
                files: n
                    .files
                    .into_iter()
                    .map(|f| FileOut {
                        state: node_state_name(f.state),
                        desired: f
                            .desired
                            .map(|d| entry_text(&d.mode, &d.owner, &d.group, &d.sha256)),
                        observed: f.observed.filter(|o| o.exists).map(|o| {
                            entry_text(
                                &o.mode,
                                &name_or_id(&o.owner, o.uid),
                                &name_or_id(&o.group, o.gid),
                                &o.sha256,
                            )
                        }),
                        source: if f.profile.is_empty() {
                            String::new()
                        } else {
                            format!("{}@{} ({})", f.profile, f.version, f.rollout_id)
                        },
                        path: f.path,
                        nci: f.nci_name,
                        message: f.message,
                    })
                    .collect(),
            })
            .collect();
        if !print_structured(format, &out)? {
            let mut t = table([
                "NODE",
                "STATE",
                "CONNECTED",
                "FILE",
                "MODE OWNER:GROUP SHA256 (OBSERVED)",
                "FILE STATE",
            ]);
            for n in &out {
                if n.files.is_empty() {
                    t.add_row([
                        n.name.clone(),
                        n.state.to_owned(),
                        n.connected.to_string(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                    ]);
                }
                for f in &n.files {
                    t.add_row([
                        n.name.clone(),
                        n.state.to_owned(),
                        n.connected.to_string(),
                        f.path.clone(),
                        f.observed.clone().unwrap_or_else(|| "missing".into()),
                        if f.message.is_empty() {
                            f.state.to_owned()
                        } else {
                            format!("{} ({})", f.state, f.message)
                        },
                    ]);
                }
            }
            print_table(&t);
        }
        Ok(Outcome::Ok)
    })
}

/// `0644 root:root sha256:0123456789ab`; a directory has no content, so no digest: `-`.
fn entry_text(mode: &str, owner: &str, group: &str, sha256: &str) -> String {
    let digest = match sha256.get(..12).unwrap_or(sha256) {
        "" => "-".to_owned(),
        short => format!("sha256:{short}"),
    };
    format!("{mode} {owner}:{group} {digest}")
}

fn name_or_id(name: &str, id: u32) -> String {
    if name.is_empty() {
        id.to_string()
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::entry_text;

    #[test]
    fn entries_show_a_short_digest_or_a_dash() {
        for (sha256, expected) in [
            (
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "0644 root:root sha256:0123456789ab",
            ),
            ("", "0644 root:root -"),
        ] {
            assert_eq!(entry_text("0644", "root", "root", sha256), expected);
        }
    }
}

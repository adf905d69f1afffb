//! The demo `seccompctl dev` runs on a first start (or with `--demo`): over gRPC, as any
//! client would, it publishes the seed profile, rolls it out in waves, rolls a changed
//! version out and back, shows a bad rollout rolling itself back, puts the changed version
//! on one pool with a higher priority, and prints the NodeConfigItems and the pod
//! `securityContext` that uses the profile. Each step prints what it did and where the
//! files landed on the simulated nodes.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use seccomp_proto::distributor::v1 as dpb;
use seccomp_proto::registry::v1 as rpb;
use seccomp_rollout::nci;

use super::Node;
use crate::Outcome;
use crate::client;
use crate::output::{Format, out, outln};
use crate::rollout::wire_target;
use crate::watch;

/// The seed profile published by the demo as `myprofile` (the exact bytes of the seed fixture
/// `myprofile.json`).
const SEED_PROFILE: &str = r#"{
"defaultAction": "SCMP_ACT_LOG",
"architectures": [
"SCMP_ARCH_X86_64",
"SCMP_ARCH_X86",
"SCMP_ARCH_X32"
],
"syscalls": [
{
"names": [
"arch_prctl",
"sched_yield",
"futex",
"write",
"mmap",
"exit_group",
"madvise",
"rt_sigprocmask",
"getpid",
"gettid",
"tgkill",
"rt_sigaction",
"read",
"getpgrp"
],
"action": "SCMP_ACT_ALLOW"
},
{
"names": [
"add_key",
"keyctl",
"ptrace"
],
"action": "SCMP_ACT_ERRNO"
}
]
}
"#;

/// The profile name the demo publishes.
const DEMO_PROFILE: &str = "myprofile";
/// Where the agents write it (relative to the host root: the same path without the `/`).
const DEMO_PATH: &str = "/var/lib/kubelet/seccomp/myprofile.json";
/// The NCI of the first rollout (all Linux nodes).
const NCI_ALL: &str = "seccomp-myprofile";
/// The NCI of the second rollout (`pool=secure`, higher priority).
const NCI_SECURE: &str = "seccomp-myprofile-secure";
/// Priority of the second rollout (the default is 100).
const SECURE_PRIORITY: i32 = 200;
/// How long the demo waits for agents to connect and rollouts to complete.
const WAIT: Duration = Duration::from_secs(60);
type Distributor = client::Distributor;

fn status_error(status: &tonic::Status, what: &str) -> anyhow::Error {
    anyhow!(
        "{what}: {}: {}",
        client::code_name(status.code()),
        status.message()
    )
}

async fn publish(
    registry: &mut client::Registry,
    content: &str,
    description: &str,
) -> Result<rpb::PublishResponse> {
    let reply = registry
        .publish(rpb::PublishRequest {
            name: DEMO_PROFILE.to_owned(),
            content: content.as_bytes().to_vec(),
            description: description.to_owned(),
            expected_latest_version: None,
        })
        .await
        .map_err(|s| status_error(&s, "publish"))?
        .into_inner();
    outln!(
        "published {DEMO_PROFILE} version {} ({}, {} bytes){}",
        reply.version,
        reply.digest,
        reply.size,
        if reply.created {
            ""
        } else {
            ", identical bytes were already stored: nothing new"
        }
    );
    Ok(reply)
}

/// The distributor the demo drives, and the nodes its agents run for.
struct Stack<'a> {
    dist: Distributor,
    url: &'a str,
    nodes: &'a [Node],
}

impl Stack<'_> {
    /// Create a rollout and follow it to its end, printing each wave's progress. Returns its id
    /// and whether it completed.
    async fn roll_out(
        &mut self,
        version: u64,
        t: &nci::Target,
        nci_name: &str,
        strategy: dpb::Strategy,
    ) -> Result<(String, bool)> {
        let rollout = self
            .dist
            .create_rollout(dpb::CreateRolloutRequest {
                profile: DEMO_PROFILE.to_owned(),
                version,
                target: Some(wire_target(t)),
                strategy: Some(strategy),
                nci_name: Some(nci_name.to_owned()),
                ..Default::default()
            })
            .await
            .map_err(|s| status_error(&s, "create rollout"))?
            .into_inner()
            .rollout
            .ok_or_else(|| anyhow!("no rollout in the reply"))?;
        let selector: Vec<String> = t.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        outln!(
            "rollout {}: {DEMO_PROFILE}@{version} to {} as NCI {nci_name}, priority {}, owner {}, waves {}",
            rollout.id,
            selector.join(","),
            t.priority,
            t.owner,
            rollout
                .strategy
                .map(|s| s.waves.join(","))
                .unwrap_or_default()
        );
        let completed = self.follow(&rollout.id).await?;
        Ok((rollout.id, completed))
    }

    /// Follow rollout `id` to its end; whether it completed.
    async fn follow(&mut self, id: &str) -> Result<bool> {
        let outcome =
            watch::follow(&mut self.dist, id, self.url, Format::Table, Some(WAIT)).await?;
        Ok(outcome == Outcome::Ok)
    }

    /// [`Stack::roll_out`], which must complete.
    async fn complete(
        &mut self,
        version: u64,
        t: &nci::Target,
        nci_name: &str,
        strategy: dpb::Strategy,
    ) -> Result<String> {
        let (id, done) = self.roll_out(version, t, nci_name, strategy).await?;
        if !done {
            bail!("rollout {id} of {DEMO_PROFILE}@{version} did not complete");
        }
        Ok(id)
    }

    /// The distributor's view of every node.
    async fn list_nodes(&mut self) -> Result<Vec<dpb::Node>> {
        Ok(self
            .dist
            .list_nodes(dpb::ListNodesRequest::default())
            .await
            .map_err(|s| status_error(&s, "list nodes"))?
            .into_inner()
            .nodes)
    }

    /// Print which version of the profile each node has on disk, and what the distributor says.
    async fn show_contents(&mut self, versions: &[(u64, &str)]) -> Result<()> {
        let list = self.list_nodes().await?;
        for node in self.nodes {
            let path = node.host_root.join(DEMO_PATH.trim_start_matches('/'));
            let on_disk = std::fs::read(&path).unwrap_or_default();
            let disk = versions
                .iter()
                .find(|(_, content)| on_disk == content.as_bytes())
                .map_or_else(|| "unexpected bytes".to_owned(), |(v, _)| format!("v{v}"));
            let reported = list
                .iter()
                .find(|n| n.name == node.name)
                .and_then(|n| n.files.iter().find(|f| f.path == DEMO_PATH))
                .map(|f| format!("NCI {} v{} ({})", f.nci_name, f.version, f.rollout_id))
                .unwrap_or_else(|| "nothing".to_owned());
            outln!(
                "  {} (pool={}): distributor says {reported}; on disk {disk}",
                node.name,
                node.labels.get("pool").map_or("", String::as_str)
            );
        }
        Ok(())
    }

    /// Wait until every node's agent is connected.
    async fn wait_for_nodes(&mut self) -> Result<()> {
        let nodes = self.nodes;
        let deadline = Instant::now() + WAIT;
        let mut last = usize::MAX;
        loop {
            let list = self.list_nodes().await?;
            let connected = nodes
                .iter()
                .filter(|n| list.iter().any(|l| l.name == n.name && l.connected))
                .count();
            if connected != last {
                outln!("agents connected {connected}/{}", nodes.len());
                last = connected;
            }
            if connected == nodes.len() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("only {connected}/{} agents connected", nodes.len());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Waves without pauses, every node may be busy at once (the demo's nodes are all healthy).
fn waves(list: &[&str]) -> dpb::Strategy {
    dpb::Strategy {
        waves: list.iter().map(|w| (*w).to_owned()).collect(),
        max_unavailable: "100%".to_owned(),
        ..Default::default()
    }
}

/// The second version: the seed with `getppid` allowed too.
fn changed_profile() -> String {
    SEED_PROFILE.replacen("\"getpgrp\"\n", "\"getpgrp\",\n\"getppid\"\n", 1)
}

/// Run the demo against the registry and distributor at these URLs, whose agents are `nodes`.
pub async fn run(registry_url: &str, distributor_url: &str, nodes: &[Node]) -> Result<()> {
    outln!();
    outln!("== demo ==");
    let mut registry = client::registry(registry_url).await?;
    let mut stack = Stack {
        dist: client::distributor(distributor_url).await?,
        url: distributor_url,
        nodes,
    };
    stack.wait_for_nodes().await?;

    // 1. The seed profile to every Linux node, in three waves with a pause between them.
    let v1 = publish(&mut registry, SEED_PROFILE, "the seed profile").await?;
    let all = nci::Target::new(
        [("kubernetes.io/os".to_owned(), "linux".to_owned())]
            .into_iter()
            .collect(),
    );
    let mut staged = waves(&["1", "50%", "100%"]);
    staged.pause = Some(dpb::strategy::Pause::Duration(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    }));
    stack.complete(v1.version, &all, NCI_ALL, staged).await?;
    outln!("where the files landed:");
    for node in nodes {
        let path = node.host_root.join(DEMO_PATH.trim_start_matches('/'));
        let meta =
            std::fs::metadata(&path).with_context(|| format!("cannot stat {}", path.display()))?;
        outln!(
            "  {}  mode {:04o}  owner {}:{} (uid {}, gid {})  {} bytes",
            path.display(),
            meta.mode() & 0o7777,
            owner_name(&node.host_root, "etc/passwd", meta.uid()),
            owner_name(&node.host_root, "etc/group", meta.gid()),
            meta.uid(),
            meta.gid(),
            meta.len()
        );
    }

    // 2. A changed version to every node, then a manual rollback to the first.
    outln!();
    let changed = changed_profile();
    let v2 = publish(&mut registry, &changed, "also allow getppid").await?;
    let contents = [(v1.version, SEED_PROFILE), (v2.version, changed.as_str())];
    stack
        .complete(v2.version, &all, NCI_ALL, waves(&["1", "100%"]))
        .await?;
    stack.show_contents(&contents).await?;
    outln!();
    outln!("manual rollback (`seccompctl rollback {DEMO_PROFILE}`):");
    let back = stack
        .dist
        .rollback(dpb::RollbackRequest {
            profile: DEMO_PROFILE.to_owned(),
            to_version: None,
            nci_name: Some(NCI_ALL.to_owned()),
            ..Default::default()
        })
        .await
        .map_err(|s| status_error(&s, "rollback"))?
        .into_inner()
        .rollouts;
    for r in &back {
        if !stack.follow(&r.id).await? {
            bail!("rollback {} did not complete", r.id);
        }
    }
    stack.show_contents(&contents).await?;

    // 3. A mistake: an owner no node has. The first wave refuses it and the rollout rolls
    //    itself back; the other nodes are never touched.
    outln!();
    outln!("a bad rollout: owner `nosuchuser` exists on no node");
    let mut bad = all.clone();
    bad.owner = "nosuchuser".to_owned();
    let (id, done) = stack
        .roll_out(v2.version, &bad, NCI_ALL, waves(&["1", "100%"]))
        .await?;
    if done {
        bail!("rollout {id} with an unknown owner completed");
    }
    outln!("as it should: the first node refused it, went back, and no other node was touched");
    stack.show_contents(&contents).await?;

    // 4. The changed version to the secure pool only, with a higher priority.
    outln!();
    let mut secure = nci::Target::new(
        [("pool".to_owned(), "secure".to_owned())]
            .into_iter()
            .collect(),
    );
    secure.priority = SECURE_PRIORITY;
    stack
        .complete(v2.version, &secure, NCI_SECURE, waves(&["100%"]))
        .await?;
    outln!("which node has which content:");
    stack.show_contents(&contents).await?;

    // 5. What a cluster would get.
    outln!();
    outln!(
        "the NodeConfigItems, as `seccompctl render` and the distributor's --yaml-dir emit them:"
    );
    let current = stack
        .dist
        .list_rollouts(dpb::ListRolloutsRequest::default())
        .await
        .map_err(|s| status_error(&s, "list rollouts"))?
        .into_inner()
        .rollouts;
    for name in [NCI_ALL, NCI_SECURE] {
        // The newest completed rollout of each NCI is what its YAML carries.
        let Some(r) = current
            .iter()
            .find(|r| r.nci_name == name && r.state == dpb::RolloutState::Completed as i32)
        else {
            continue;
        };
        let content = if r.version == v1.version {
            SEED_PROFILE
        } else {
            changed.as_str()
        };
        let t = if name == NCI_ALL { &all } else { &secure };
        let item = nci::render(
            nci::ProfileRef {
                name: DEMO_PROFILE,
                version: r.version,
                content: content.as_bytes(),
            },
            t,
            Some(name),
            Some(&r.id),
        )
        .map_err(|e| anyhow!("render: {e}"))?;
        outln!("---");
        out!("{}", item.to_yaml().map_err(|e| anyhow!("render: {e}"))?);
    }
    outln!();
    outln!("a pod uses it with:");
    outln!("  securityContext:");
    outln!("    seccompProfile:");
    outln!("      type: Localhost");
    outln!("      localhostProfile: {DEMO_PROFILE}.json");
    Ok(())
}

/// The name of `id` in a host's `etc/passwd` or `etc/group`, or the number.
fn owner_name(host: &Path, file: &str, id: u32) -> String {
    std::fs::read_to_string(host.join(file))
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                let num = f.nth(1)?;
                (num.parse::<u32>().ok()? == id).then(|| name.to_owned())
            })
        })
        .unwrap_or_else(|| id.to_string())
}

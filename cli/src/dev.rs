//! `seccompctl dev`: the whole stack on this machine.
//!
//! Registry, distributor and `--nodes` node agents run in this process on one tokio runtime,
//! with their data under `--data-dir` and each agent's host root at
//! `<data-dir>/nodes/<node>/`. The gRPC ports are real loopback ports, printed as `export`
//! lines so that every other `seccompctl` command works from a second terminal. On first start
//! (or with `--demo`) a demo publishes the seed profile, rolls it out and shows the result.
//! Ctrl-C (SIGINT) or SIGTERM stops everything cleanly; starting again reuses the data.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use seccomp_proto::distributor::v1 as dpb;
use seccomp_proto::registry::v1 as rpb;
use seccomp_rollout::nci;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Outcome;
use crate::client;
use crate::output::{Format, errln, out, outln};
use crate::rollout::wire_target;
use crate::watch;

/// The seed profile published by the demo as `myprofile` (the exact bytes of the seed fixture
/// `myprofile.json`).
pub const SEED_PROFILE: &str = r#"{
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
/// How long stopping may take before the runtime is dropped.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `seccompctl dev`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of node agents, named node-1..node-N.
    #[arg(long, env = "SECCOMP_DEV_NODES", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    nodes: u32,

    /// Where the registry, the distributor and the nodes keep their data; reused on restart.
    #[arg(long, env = "SECCOMP_DEV_DATA_DIR", default_value = "./.seccomp-dev")]
    data_dir: PathBuf,

    /// Run the demo even when the data directory already exists (it runs by itself on the
    /// first start).
    #[arg(long, env = "SECCOMP_DEV_DEMO")]
    demo: bool,

    /// Registry port on 127.0.0.1 (0: any free port).
    #[arg(long, env = "SECCOMP_DEV_REGISTRY_PORT", default_value_t = 50051)]
    registry_port: u16,

    /// Distributor port on 127.0.0.1 (0: any free port).
    #[arg(long, env = "SECCOMP_DEV_DISTRIBUTOR_PORT", default_value_t = 50052)]
    distributor_port: u16,
}

/// One simulated node.
struct Node {
    name: String,
    labels: BTreeMap<String, String>,
    host_root: PathBuf,
}

/// The nodes of a stack of `n`: `kubernetes.io/os=linux` on all, `zone` cycling over three
/// zones and `pool` alternating `general` / `secure`.
fn nodes(data_dir: &Path, n: u32) -> Vec<Node> {
    (1..=n)
        .map(|i| {
            let name = format!("node-{i}");
            let zone = char::from(b'a' + u8::try_from((i - 1) % 3).unwrap_or(0));
            let pool = if i % 2 == 0 { "secure" } else { "general" };
            let labels = [
                ("kubernetes.io/os", "linux".to_owned()),
                ("zone", format!("zone-{zone}")),
                ("pool", pool.to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            let host_root = data_dir.join("nodes").join(&name);
            Node {
                name,
                labels,
                host_root,
            }
        })
        .collect()
}

/// The effective uid and gid of this process, from `/proc/self/status`.
fn current_ids() -> Result<(u32, u32)> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let field = |key: &str| -> Result<u32> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .ok_or_else(|| anyhow!("no {key} line in /proc/self/status"))?;
        // real, effective, saved, filesystem: the effective id is what chown checks.
        line.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("unreadable {key} line in /proc/self/status: {line:?}"))
    };
    Ok((field("Uid:")?, field("Gid:")?))
}

/// Create a node's host root: `var/lib/kubelet/` and `etc/passwd` + `etc/group` where `root`
/// is `uid`/`gid`.
fn prepare_host(host: &Path, uid: u32, gid: u32) -> Result<()> {
    // The seccomp directory too: the NCI names it with the file's mode (0644), which a
    // directory the agent creates would get, and without search permission only root could
    // write into it. An existing directory is left as it is.
    for dir in ["var/lib/kubelet/seccomp", "etc"] {
        let d = host.join(dir);
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let passwd = format!("root:x:{uid}:{gid}:root:/root:/bin/sh\n");
    let group = format!("root:x:{gid}:\n");
    for (file, text) in [("etc/passwd", passwd), ("etc/group", group)] {
        let p = host.join(file);
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

async fn bind(port: u16, what: &str, flag: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on 127.0.0.1:{port} for the {what} (is another `seccompctl dev` \
                 running? {flag} 0 picks a free port)"
            )
        })
}

/// `seccompctl dev`.
pub fn run(args: &Args) -> Result<Outcome> {
    let fresh = !args.data_dir.exists();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)
        .with_context(|| format!("cannot resolve {}", args.data_dir.display()))?;

    let (uid, gid) = current_ids()?;
    if uid != 0 {
        outln!(
            "not running as root: the nodes' etc/passwd and etc/group map `root` to uid {uid} \
             and gid {gid}, so the agents can set owners"
        );
    }
    let nodes = nodes(&data_dir, args.nodes);
    for node in &nodes {
        prepare_host(&node.host_root, uid, gid)?;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = runtime.block_on(serve(args, fresh, &data_dir, &nodes));
    runtime.shutdown_timeout(Duration::from_secs(2));
    outcome
}

/// A running component: how to stop it and its task.
struct Task {
    name: String,
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

fn stopper() -> (
    oneshot::Sender<()>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

async fn serve(args: &Args, fresh: bool, data_dir: &Path, nodes: &[Node]) -> Result<Outcome> {
    // Signal handlers first, so a Ctrl-C during start or the demo also stops cleanly.
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;

    let reg_listener = bind(args.registry_port, "registry", "--registry-port").await?;
    let dist_listener = bind(args.distributor_port, "distributor", "--distributor-port").await?;
    let registry = format!("http://{}", reg_listener.local_addr()?);
    let distributor = format!("http://{}", dist_listener.local_addr()?);

    let mut tasks = Vec::new();
    let (stop, until) = stopper();
    let mut config = seccomp_registry::Config::new(data_dir.join("registry"));
    config.distributor = Some(distributor.clone());
    let handle = tokio::spawn(async move {
        if let Err(e) = seccomp_registry::run(config, reg_listener, until).await {
            errln!("seccompctl dev: registry stopped: {e}");
        }
    });
    tasks.push(Task {
        name: "registry".into(),
        stop,
        handle,
    });

    let (stop, until) = stopper();
    let mut config = seccomp_distributor::Config::new(data_dir.join("distributor"), &registry);
    config.yaml_dir = Some(data_dir.join("gitops"));
    config.shutdown_grace = Duration::from_secs(1);
    let handle = tokio::spawn(async move {
        if let Err(e) = seccomp_distributor::run(config, dist_listener, until).await {
            errln!("seccompctl dev: distributor stopped: {e}");
        }
    });
    tasks.push(Task {
        name: "distributor".into(),
        stop,
        handle,
    });

    for node in nodes {
        let files = seccomp_node_agent::Config {
            host_root: node.host_root.clone(),
            allowed_root: "/var/lib/kubelet/seccomp".into(),
            state_dir: data_dir.join("agents").join(&node.name),
        };
        let mut config = seccomp_node_agent::sync::Config::new(&distributor, &node.name, files);
        config.labels = node.labels.clone();
        let (stop, until) = stopper();
        let name = node.name.clone();
        let handle = tokio::spawn(async move {
            if let Err(e) = seccomp_node_agent::sync::run(config, until).await {
                errln!("seccompctl dev: agent {name} stopped: {e:#}");
            }
        });
        tasks.push(Task {
            name: format!("agent {}", node.name),
            stop,
            handle,
        });
    }

    outln!("registry     {registry}");
    outln!("distributor  {distributor}");
    for node in nodes {
        let labels: Vec<String> = node
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        outln!(
            "{}  host root {}  labels {}",
            node.name,
            node.host_root.display(),
            labels.join(",")
        );
    }
    outln!("data in {}", data_dir.display());
    outln!("In a second terminal:");
    outln!("  export SECCOMP_REGISTRY={registry} SECCOMP_DISTRIBUTOR={distributor}");
    outln!("  seccompctl nodes");
    outln!("seccompctl dev: ready");

    let mut outcome = Ok(Outcome::Ok);
    let mut interrupted = false;
    if fresh || args.demo {
        tokio::select! {
            r = demo(&registry, &distributor, nodes) => {
                match r {
                    Ok(()) => outln!("demo complete; the stack stays up, Ctrl-C stops it"),
                    Err(e) => outcome = Err(e.context("the demo failed")),
                }
            }
            _ = interrupt.recv() => interrupted = true,
            _ = terminate.recv() => interrupted = true,
        }
    } else {
        outln!("data directory exists: no demo (--demo runs it again); Ctrl-C stops the stack");
    }
    if outcome.is_ok() && !interrupted {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    }

    outln!("stopping...");
    for t in &mut tasks {
        let stop = std::mem::replace(&mut t.stop, oneshot::channel().0);
        let _ = stop.send(());
    }
    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
    for t in tasks {
        match tokio::time::timeout_at(deadline, t.handle).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errln!("seccompctl dev: {} failed: {e}", t.name),
            Err(_) => {
                errln!(
                    "seccompctl dev: {} did not stop within {}s",
                    t.name,
                    STOP_TIMEOUT.as_secs()
                );
                if outcome.is_ok() {
                    outcome = Err(anyhow!("{} did not stop in time", t.name));
                }
            }
        }
    }
    outln!("stopped");
    outcome
}

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

/// Create a rollout and follow it to its end, printing each wave's progress. Returns its id
/// and whether it completed.
async fn roll_out(
    dist: &mut Distributor,
    url: &str,
    version: u64,
    t: &nci::Target,
    nci_name: &str,
    strategy: dpb::Strategy,
) -> Result<(String, bool)> {
    let rollout = dist
        .create_rollout(dpb::CreateRolloutRequest {
            profile: DEMO_PROFILE.to_owned(),
            version,
            target: Some(wire_target(t)),
            strategy: Some(strategy),
            nci_name: Some(nci_name.to_owned()),
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
    let outcome = watch::follow(dist, &rollout.id, url, Format::Table, Some(WAIT)).await?;
    Ok((rollout.id, outcome == Outcome::Ok))
}

/// [`roll_out`], which must complete.
async fn complete(
    dist: &mut Distributor,
    url: &str,
    version: u64,
    t: &nci::Target,
    nci_name: &str,
    strategy: dpb::Strategy,
) -> Result<String> {
    let (id, done) = roll_out(dist, url, version, t, nci_name, strategy).await?;
    if !done {
        bail!("rollout {id} of {DEMO_PROFILE}@{version} did not complete");
    }
    Ok(id)
}

/// Waves without pauses, every node may be busy at once (the demo's nodes are all healthy).
fn waves(list: &[&str]) -> dpb::Strategy {
    dpb::Strategy {
        waves: list.iter().map(|w| (*w).to_owned()).collect(),
        max_unavailable: "100%".to_owned(),
        ..Default::default()
    }
}

/// Print which version of the profile each node has on disk, and what the distributor says.
async fn show_contents(
    dist: &mut Distributor,
    nodes: &[Node],
    versions: &[(u64, &str)],
) -> Result<()> {
    let list = dist
        .list_nodes(dpb::ListNodesRequest::default())
        .await
        .map_err(|s| status_error(&s, "list nodes"))?
        .into_inner()
        .nodes;
    for node in nodes {
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
async fn wait_for_nodes(dist: &mut Distributor, nodes: &[Node]) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    let mut last = usize::MAX;
    loop {
        let list = dist
            .list_nodes(dpb::ListNodesRequest::default())
            .await
            .map_err(|s| status_error(&s, "list nodes"))?
            .into_inner()
            .nodes;
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

/// The second version: the seed with `getppid` allowed too.
fn changed_profile() -> String {
    SEED_PROFILE.replacen("\"getpgrp\"\n", "\"getpgrp\",\n\"getppid\"\n", 1)
}

async fn demo(registry_url: &str, distributor_url: &str, nodes: &[Node]) -> Result<()> {
    outln!();
    outln!("== demo ==");
    let mut registry = client::registry(registry_url).await?;
    let mut dist = client::distributor(distributor_url).await?;
    wait_for_nodes(&mut dist, nodes).await?;
    let url = distributor_url;

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
    complete(&mut dist, url, v1.version, &all, NCI_ALL, staged).await?;
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
    complete(
        &mut dist,
        url,
        v2.version,
        &all,
        NCI_ALL,
        waves(&["1", "100%"]),
    )
    .await?;
    show_contents(&mut dist, nodes, &contents).await?;
    outln!();
    outln!("manual rollback (`seccompctl rollback {DEMO_PROFILE}`):");
    let back = dist
        .rollback(dpb::RollbackRequest {
            profile: DEMO_PROFILE.to_owned(),
            to_version: None,
            nci_name: Some(NCI_ALL.to_owned()),
        })
        .await
        .map_err(|s| status_error(&s, "rollback"))?
        .into_inner()
        .rollouts;
    for r in &back {
        if watch::follow(&mut dist, &r.id, url, Format::Table, Some(WAIT)).await? != Outcome::Ok {
            bail!("rollback {} did not complete", r.id);
        }
    }
    show_contents(&mut dist, nodes, &contents).await?;

    // 3. A mistake: an owner no node has. The first wave refuses it and the rollout rolls
    //    itself back; the other nodes are never touched.
    outln!();
    outln!("a bad rollout: owner `nosuchuser` exists on no node");
    let mut bad = all.clone();
    bad.owner = "nosuchuser".to_owned();
    let (id, done) = roll_out(
        &mut dist,
        url,
        v2.version,
        &bad,
        NCI_ALL,
        waves(&["1", "100%"]),
    )
    .await?;
    if done {
        bail!("rollout {id} with an unknown owner completed");
    }
    outln!("as it should: the first node refused it, went back, and no other node was touched");
    show_contents(&mut dist, nodes, &contents).await?;

    // 4. The changed version to the secure pool only, with a higher priority.
    outln!();
    let mut secure = nci::Target::new(
        [("pool".to_owned(), "secure".to_owned())]
            .into_iter()
            .collect(),
    );
    secure.priority = SECURE_PRIORITY;
    complete(
        &mut dist,
        url,
        v2.version,
        &secure,
        NCI_SECURE,
        waves(&["100%"]),
    )
    .await?;
    outln!("which node has which content:");
    show_contents(&mut dist, nodes, &contents).await?;

    // 5. What a cluster would get.
    outln!();
    outln!(
        "the NodeConfigItems, as `seccompctl render` and the distributor's --yaml-dir emit them:"
    );
    let current = dist
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

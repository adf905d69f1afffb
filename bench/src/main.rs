//! `seccomp-bench`: see the library's documentation and `seccomp-bench --help`.

use clap::{Parser, Subcommand};

/// mimalloc, as in the services' binaries.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Fleet-scale benchmarks of the seccomp distribution services.
///
/// `converge` runs the real registry and distributor in this process and N simulated agents
/// (real gRPC streams that hash what they are sent) in a child process, and times rollouts;
/// `etcd-peer` measures the etcd fan-out that any Kubernetes-API-based delivery sits on;
/// `compare` runs both alternately and prints the ratios. Build with `--release`.
#[derive(Debug, Parser)]
#[command(name = "seccomp-bench", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Time rollouts to N simulated agents (Completed, and every agent acknowledged), with
    /// the distributor's CPU time and memory per agent stream.
    Converge(seccomp_bench::converge::ConvergeArgs),
    /// Time an etcd fan-out: one put, N watchers acknowledging with puts (needs Debian's
    /// etcd-server package).
    EtcdPeer(seccomp_bench::etcd_peer::EtcdPeerArgs),
    /// Run etcd-peer, a one-wave and a default-waves converge alternately, and print the
    /// ratios.
    Compare(seccomp_bench::compare::CompareArgs),
    /// The simulated agents (started by converge).
    #[command(hide = true)]
    Agents(seccomp_bench::agents::AgentsArgs),
}

fn print(json: bool, report: &impl serde::Serialize) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Converge(a) => print(a.json, &seccomp_bench::converge::run(&a)?),
        Cmd::EtcdPeer(a) => print(a.json, &seccomp_bench::etcd_peer::run(&a)?),
        Cmd::Compare(a) => print(a.json, &seccomp_bench::compare::run(&a)?),
        Cmd::Agents(a) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(seccomp_bench::agents::run(a)),
    }
}

//! `seccompctl`: the command-line tool for seccomp profile distribution.
//!
//! Each subcommand lives in its own module (`rollout` holds its subcommands, `watch` follows
//! a rollout live for `rollout`, `rollback` and `dev`); `client` is the one connection to
//! either service, `output` the formats and the only writer to standard output and error.
//! `main` only parses arguments, runs the command and turns its outcome into an exit status
//! (0 ok, 1 a negative verdict such as an invalid profile, 2 usage or I/O errors).

// Every line goes through `output`, which ends quietly at a closed pipe.
#![warn(clippy::print_stdout, clippy::print_stderr)]

mod audit;
mod certs;
mod client;
mod dev;
mod events;
mod nodes;
mod output;
mod plan;
mod profile;
mod render;
mod rollback;
mod rollout;
mod suggest;
mod validate;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use seccomp_server::client::{Credentials, Token, TokenSource};
use seccomp_server::tls::ClientTls;

use crate::output::{Format, errln};

/// Ship seccomp profiles to Kubernetes nodes: validate, version, roll out, roll back.
#[derive(Debug, Parser)]
#[command(name = "seccompctl", version, about, long_about = None)]
struct Cli {
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        env = "SECCOMP_OUTPUT",
        default_value = "table"
    )]
    output: Format,

    /// Registry URL, for the commands that talk to it.
    #[arg(
        long,
        global = true,
        env = "SECCOMP_REGISTRY",
        default_value = "http://127.0.0.1:50051"
    )]
    registry: String,

    /// Distributor URL, for the commands that talk to it; with replicas, several
    /// comma-separated: the first that accepts a connection (the leader) is used.
    #[arg(
        long,
        global = true,
        env = "SECCOMP_DISTRIBUTOR",
        default_value = "http://127.0.0.1:50052"
    )]
    distributor: String,

    /// CA of the services' TLS certificates (for https:// URLs).
    #[arg(long, global = true, env = "SECCOMP_CA", value_name = "FILE")]
    ca: Option<PathBuf>,

    /// Client certificate for mTLS (with --key), if your identity is a certificate.
    #[arg(
        long,
        global = true,
        env = "SECCOMP_CERT",
        value_name = "FILE",
        requires = "key"
    )]
    cert: Option<PathBuf>,

    /// Private key of --cert.
    #[arg(
        long,
        global = true,
        env = "SECCOMP_KEY",
        value_name = "FILE",
        requires = "cert"
    )]
    key: Option<PathBuf>,

    /// Bearer token to authenticate with (sent as `authorization: Bearer <token>`). Prefer
    /// the environment variable or --token-file: a flag shows in `ps`.
    #[arg(
        long,
        global = true,
        env = "SECCOMP_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,

    /// A file holding the bearer token (its first line).
    #[arg(long, global = true, env = "SECCOMP_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// What every connection authenticates with (a token file is read when connecting, so
    /// commands that connect nowhere do not need it).
    fn credentials(&self) -> anyhow::Result<Credentials> {
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => Some(TokenSource::Value(
                Token::new(t).map_err(|e| anyhow::anyhow!("--token: {e}"))?,
            )),
            (None, Some(path)) => Some(TokenSource::File(path.clone())),
            (None, None) => None,
        };
        Ok(Credentials {
            tls: ClientTls {
                ca: self.ca.clone(),
                cert: self.cert.clone(),
                key: self.key.clone(),
            },
            claimed: token
                .is_none()
                .then(|| std::env::var("USER").ok())
                .flatten(),
            token,
        })
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate seccomp profile files offline.
    ///
    /// Checks each file against what runc, crun, containerd, CRI-O, Docker, podman and the
    /// kernel accept. Prints one line per file (`ok`, `ok with N warnings`, `invalid`) and
    /// each finding as `path: severity[code]: message`, the path being a JSON pointer.
    /// Exit status: 0 when every file is valid (warnings allowed), 1 when any is invalid,
    /// 2 on usage or I/O errors. `-` reads standard input.
    Validate(validate::Args),

    /// Publish, inspect, compare and deprecate profile versions in the registry.
    ///
    /// Exit status: 0 ok, 1 when the registry refuses (an invalid profile, a stale
    /// `--expect-version`, an unknown profile or version), 2 on usage or I/O errors and when
    /// the registry cannot be reached.
    #[command(subcommand)]
    Profile(profile::Command),

    /// List the audit logs, oldest first: the registry's (publish, deprecate, delete) and
    /// the distributor's (create, pause, resume, abort, roll back), with every call either
    /// refused, each entry naming its service and the verified caller.
    Audit(audit::Args),

    /// Print the NodeConfigItem that puts a profile version on the selected nodes.
    ///
    /// Fetches the version from the registry and renders it locally, exactly as the
    /// distributor would (`node.shturval.tech/v1beta2`, a directory entry and the file with
    /// its content, mode, owner and group). YAML by default, `-o json` too; ready for
    /// `kubectl apply -f -` or a GitOps repository.
    Render(render::Args),

    /// Roll profile versions out to nodes in waves, follow, pause, resume and abort them.
    ///
    /// Exit status: 0 ok, 1 when the distributor refuses or (with --wait / --watch) the
    /// rollout ends rolled back or aborted or time runs out, 2 on usage errors and when the
    /// distributor cannot be reached.
    #[command(subcommand)]
    Rollout(rollout::Command),

    /// Roll a profile's NodeConfigItems back to older content, as new rollouts.
    ///
    /// By default each NodeConfigItem returns to its previous completed version, with the
    /// exact bytes, path, mode and ownership it had; `--to-version N` picks a version. An
    /// active rollout of the same NodeConfigItem is aborted first. No waves: every matching
    /// node at once, still within the rollout's max-unavailable. Exit status as for
    /// `rollout`.
    Rollback(rollback::Args),

    /// List the nodes whose agents have connected: labels, state, and per file the desired
    /// and observed mode, owner, group and sha256.
    Nodes(nodes::Args),

    /// The seccomp events agents reported: what profiles logged or denied, per node,
    /// container (its pod and profile, with the distributor's --check-pods), executable,
    /// architecture and syscall, with counts, most recent first.
    ///
    /// Agents read them from the kernel's records in the logs they follow (--audit-log:
    /// auditd's audit.log, or syslog's `audit: type=1326` lines), each syscall named by the
    /// record's own architecture. `seccompctl profile suggest NAME` turns them into the
    /// profile's next version.
    Events(events::Args),

    /// Write a throwaway CA, certificates and tokens for trying the secure setup on one
    /// machine (development only; production certificates come from your CA).
    ///
    /// In --dir: ca.crt; server.crt/.key for both services (localhost, 127.0.0.1 and each
    /// --host); node-NAME.crt/.key per --node (URI SAN spiffe://seccomp.dev/node/NAME);
    /// admin.token, registry.token, distributor.token; and auth.yaml, the services'
    /// --auth-tokens file naming those tokens (admin, and viewers for the services).
    Certs(certs::Args),

    /// Run the whole stack on this machine: registry, distributor and node agents.
    ///
    /// They run as child processes: the `seccomp-registry`, `seccomp-distributor` and
    /// `seccomp-node-agent` binaries next to seccompctl, else on PATH (`cargo build --release
    /// --bins` builds them all). Data under `--data-dir` (reused on restart), each agent's
    /// host root at `<data-dir>/nodes/<node>/`, real gRPC on loopback ports it prints (with
    /// the `export` lines for a second terminal). On a first start (no stored data yet), or
    /// with `--demo`, it publishes a profile, rolls it out and shows the files on the nodes.
    /// Ctrl-C stops everything.
    Dev(dev::Args),
}

/// What a command concluded, mapped to the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything fine.
    Ok,
    /// The command worked and the answer is "no" (an invalid profile).
    Negative,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.credentials() {
        Ok(credentials) => client::configure(credentials),
        Err(e) => {
            errln!("seccompctl: {e:#}");
            return ExitCode::from(2);
        }
    }
    let result = match cli.command {
        Command::Validate(args) => validate::run(&args, cli.output),
        Command::Profile(command) => {
            profile::run(command, &cli.registry, &cli.distributor, cli.output)
        }
        Command::Events(args) => events::run(&args, &cli.distributor, cli.output),
        Command::Audit(args) => audit::run(&args, &cli.registry, &cli.distributor, cli.output),
        Command::Render(args) => render::run(&args, &cli.registry, cli.output),
        Command::Rollout(command) => rollout::run(command, &cli.distributor, cli.output),
        Command::Rollback(args) => rollback::run(args, &cli.distributor, cli.output),
        Command::Nodes(args) => nodes::run(&args, &cli.distributor, cli.output),
        Command::Certs(args) => certs::run(&args),
        Command::Dev(args) => dev::run(&args),
    };
    let code = match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Negative) => ExitCode::from(1),
        Err(e) => {
            errln!("seccompctl: {e:#}");
            ExitCode::from(2)
        }
    };
    match output::finish() {
        Ok(()) => code,
        Err(e) => {
            errln!("seccompctl: cannot write to standard output: {e}");
            ExitCode::from(2)
        }
    }
}

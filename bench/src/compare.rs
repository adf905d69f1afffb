//! `seccomp-bench compare`: the etcd fan-out and our rollout (one wave, and the default
//! waves), alternately, each run in a process of its own (this binary), and the ratio of
//! each rollout to the etcd figure of the same run.

use std::process::Command;

use anyhow::Context as _;
use serde::Serialize;

/// `compare`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Agents, and etcd watchers.
    #[arg(long, default_value_t = 10_000)]
    pub agents: usize,
    /// Runs of the three measurements, alternating.
    #[arg(long, default_value_t = 2)]
    pub runs: usize,
    /// The rollouts with mTLS.
    #[arg(long)]
    pub tls: bool,
    /// The etcd binary.
    #[arg(long, default_value = "etcd")]
    pub etcd: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One run of the three.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// etcd fan-out seconds.
    pub etcd_seconds: f64,
    /// One wave (`100%`): Completed.
    pub one_wave_seconds: f64,
    /// One wave: every agent acknowledged.
    pub one_wave_all_acked_seconds: f64,
    /// Default waves (`1,25%,100%`, max unavailable 25%): Completed.
    pub default_seconds: f64,
    /// Default waves: every agent acknowledged.
    pub default_all_acked_seconds: f64,
    /// `one_wave_seconds / etcd_seconds`.
    pub one_wave_ratio: f64,
    /// `default_seconds / etcd_seconds`.
    pub default_ratio: f64,
}

/// What `compare --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Agents and watchers.
    pub agents: usize,
    /// mTLS on the rollouts.
    pub tls: bool,
    /// Every run.
    pub runs: Vec<Run>,
}

fn child(args: &[String]) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(std::env::current_exe()?)
        .args(args)
        .arg("--json")
        .output()
        .with_context(|| format!("running seccomp-bench {}", args.join(" ")))?;
    anyhow::ensure!(
        out.status.success(),
        "seccomp-bench {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("the output of seccomp-bench {}", args.join(" ")))
}

fn field(v: &serde_json::Value, name: &str) -> anyhow::Result<f64> {
    v[name]
        .as_f64()
        .with_context(|| format!("no {name} in {v}"))
}

/// Run the comparison.
pub fn run(args: &CompareArgs) -> anyhow::Result<Report> {
    crate::etcd_peer::etcd_version(&args.etcd).with_context(|| {
        format!(
            "cannot run {:?}: install Debian's etcd-server package or give --etcd PATH",
            args.etcd
        )
    })?;
    let n = args.agents.to_string();
    let converge = |waves: &str, max: &str| {
        let mut a: Vec<String> = ["converge", "--agents", &n, "--waves", waves]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        a.extend(["--max-unavailable".to_owned(), max.to_owned()]);
        if args.tls {
            a.push("--tls".to_owned());
        }
        child(&a)
    };
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        let etcd = child(&[
            "etcd-peer".to_owned(),
            "--watchers".to_owned(),
            n.clone(),
            "--etcd".to_owned(),
            args.etcd.clone(),
        ])?;
        let one = converge("100%", "100%")?;
        let default = converge("1,25%,100%", "25%")?;
        let etcd_seconds = field(&etcd, "seconds")?;
        let r = Run {
            etcd_seconds,
            one_wave_seconds: field(&one, "seconds")?,
            one_wave_all_acked_seconds: field(&one, "all_acked_seconds")?,
            default_seconds: field(&default, "seconds")?,
            default_all_acked_seconds: field(&default, "all_acked_seconds")?,
            one_wave_ratio: field(&one, "seconds")? / etcd_seconds,
            default_ratio: field(&default, "seconds")? / etcd_seconds,
        };
        if !args.json {
            if run == 1 {
                println!(
                    "| run | etcd fan-out | ours, one wave (`100%`) | ours, default waves (`1,25%,100%`, max unavailable 25%) |"
                );
                println!("| --- | ---: | ---: | ---: |");
            }
            println!(
                "| {run} | {:.2} s | {:.2} s (all acked {:.2} s), {:.2}x | {:.2} s (all acked {:.2} s), {:.2}x |",
                r.etcd_seconds,
                r.one_wave_seconds,
                r.one_wave_all_acked_seconds,
                r.one_wave_ratio,
                r.default_seconds,
                r.default_all_acked_seconds,
                r.default_ratio
            );
        }
        runs.push(r);
    }
    Ok(Report {
        agents: args.agents,
        tls: args.tls,
        runs,
    })
}

//! `seccompctl`: the command-line tool for seccomp profile distribution.
//!
//! Each subcommand lives in its own module; `main` only parses arguments, runs the command
//! and turns its outcome into an exit status (0 ok, 1 a negative verdict such as an invalid
//! profile, 2 usage or I/O errors).

mod output;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::Format;

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

    #[command(subcommand)]
    command: Command,
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
    let result = match cli.command {
        Command::Validate(args) => validate::run(&args, cli.output),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Negative) => ExitCode::from(1),
        Err(e) => {
            eprintln!("seccompctl: {e:#}");
            ExitCode::from(2)
        }
    }
}

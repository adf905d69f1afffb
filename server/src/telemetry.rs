//! Logs and spans: `tracing` to standard error, filtered by `RUST_LOG`, as text or JSON.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The logging flags every service binary flattens into its arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log line format. The level filter comes from `RUST_LOG` (default `info`), for example
    /// `RUST_LOG=seccomp_registry=debug,info`.
    #[arg(long, env = "SECCOMP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `RUST_LOG` does not parse.
    #[error("invalid RUST_LOG: {0}")]
    Filter(#[from] tracing_subscriber::filter::FromEnvError),
    /// A global subscriber was installed already.
    #[error("cannot install the log subscriber: {0}")]
    Init(#[from] tracing_subscriber::util::TryInitError),
}

/// Install the global subscriber. Call once, early in `main`.
pub fn init(args: &LogArgs) -> Result<(), Error> {
    let filter = match std::env::var_os(EnvFilter::DEFAULT_ENV) {
        Some(_) => EnvFilter::try_from_default_env()?,
        None => EnvFilter::new("info"),
    };
    let registry = tracing_subscriber::registry().with(filter);
    match args.log_format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init()?,
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init()?,
    }
    Ok(())
}

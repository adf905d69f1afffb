//! `seccomp-node-agent`: runs on every node, receives its desired file set from the
//! distributor and writes each file atomically with the exact mode, owner and group, then
//! reports what it observes on disk (DESIGN sections 6 and 7).
//!
//! Most of this library is the agent's file-safety core, which knows nothing of gRPC. The
//! [`sync`] module is the gRPC client: it converts `seccomp.agent.v1` messages to and from the
//! types in [`model`] and drives an [`Applier`]:
//!
//! - `Desired{revision, files}` → [`Applier::apply`] → `Ok(Applied)` becomes an `Ack`,
//!   `Err(Rejected)` a `Nack` (with `last_good_revision` and per-path [`FileError`]s);
//! - `Hello` carries [`Applier::revision`] and [`Applier::observe_current`];
//! - a [`watch::DriftTrigger`] (inotify via [`watch::ChangeWatcher`] plus a periodic tick)
//!   says when to call [`Applier::repair`], whose [`DriftReport`] becomes a `Drift`.
//!
//! Every [`Applier`] method does blocking file I/O (including fsync); an async caller runs it
//! with `tokio::task::spawn_blocking`, and shares the applier behind a `std::sync::Mutex` so
//! that an apply and a repair never overlap.
//!
//! Layout:
//! - [`model`]: desired and observed entries, error codes, apply and drift results;
//! - `paths`: lexical checks (absolute, normalised, no `..`, inside the allowed root);
//! - `policy`: what an entry may be: files named `*.json` holding a valid seccomp profile,
//!   modes without set-id, sticky, other-write or (files) execute bits;
//! - `accounts`: owner and group names from the host root's `/etc/passwd` and `/etc/group`;
//! - `fsops`: the only code that touches node files: an `openat` walk with `O_NOFOLLOW`,
//!   the atomic write (temp file, fchown, fchmod, fsync, rename, directory fsync), atomic
//!   directory creation, observation, removal, cleanup of the agent's own temp files;
//! - `record`: the agent's persistent, atomically replaced record of what it placed, and
//!   `StateDir`, the locked state directory that holds it beside a content store, so drift
//!   can be repaired after a restart without the distributor;
//! - `applier`: [`Applier`], which ties these together, one submodule per step of an apply
//!   (`check`, `write`, `finish`, with `remove`) and `observe` and `drift` beside them;
//! - [`hook`]: pause points inside a write, so crash tests can kill the agent exactly there;
//! - [`watch`]: when to scan for drift;
//! - [`node`]: the node's name and labels (flags, a Downward API labels file, the hostname);
//! - [`audit_log`]: following log files for kernel seccomp records across rotation and
//!   truncation, the position kept in the state directory, and [`seccomp_events`]: the
//!   records attributed to containers by `/proc` and aggregated, bounded; `sync` reads the
//!   `--audit-log` files and sends the counts (#19);
//! - [`sync`]: the only module that uses tonic: the stream to the distributor, heartbeats,
//!   reconnecting with backoff, the drift loop, and [`sync::run`], the whole agent.
//!
//! Binaries: `seccomp-node-agent` (`main.rs`: flags, logging, signals, then [`sync::run`]),
//! and `seccomp-agent-apply`, which applies one desired set from a JSON file; crash tests use
//! it, and it is handy for trying a set by hand.

mod accounts;
mod applier;
pub mod audit_log;
mod error;
mod fsops;
pub mod hook;
pub mod metrics;
pub mod model;
pub mod node;
mod paths;
mod policy;
mod record;
pub mod seccomp_events;
pub mod sync;
pub mod watch;

pub use applier::{Applier, Config};
pub use error::{Error, Result};
pub use hook::{PausePoint, WriteHook};
pub use model::{
    Applied, DesiredFile, DesiredKind, Drift, DriftKind, DriftReport, ErrorCode, FileError,
    ObservedFile, ObservedKind, Rejected,
};

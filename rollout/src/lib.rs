//! `seccomp-rollout`: the rollout domain, without I/O, clocks, tonic, kube, sled or tokio.
//! Everything here is a function of its inputs, so the distributor (which owns time,
//! storage and transport) and `seccompctl` (which renders and checks locally) share it.
//!
//! Layout:
//! - [`nci`]: the Shturval `NodeConfigItem` model (plain serde types, the seed's exact field
//!   names), rendering a profile version plus a [`nci::Target`] into one, YAML/JSON output;
//! - [`selector`]: label selectors (`""` means "the key exists"), parsing and matching;
//! - [`fileset`]: a node's effective file set (priority resolution, conflicts, revision),
//!   indexed for fleets of thousands of nodes, with NCI variants scoped to node sets;
//! - [`strategy`]: rollout strategies (waves, `max_unavailable`, pause), wave arithmetic and
//!   the stable node order;
//! - [`node`]: a node as the domain sees it (observed files, errors, state) and how its state
//!   follows for one file and one NCI;
//! - [`plan`]: what a change does to a node before it does it (add, update, remove,
//!   unchanged per path; conflicts made and ended);
//! - [`policy`]: what an NCI may put on a node (only profiles, only under the allowed root,
//!   safe modes);
//! - [`record`]: a rollout as stored (state, wave, targeted nodes, history);
//! - [`engine`]: the rollout engine's decisions ([`engine::step`]), given a record, the
//!   matching nodes and the time.

pub mod engine;
pub mod error;
pub mod fileset;
pub mod nci;
pub mod node;
pub mod plan;
pub mod policy;
pub mod record;
pub mod selector;
pub mod strategy;

pub use error::{Error, Result};

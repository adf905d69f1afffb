//! Errors that stop the agent as a whole (configuration, its own state, the watcher, a
//! panicked applier), as opposed to [`FileError`](crate::FileError), which concerns one
//! desired path.

use std::path::PathBuf;

/// Agent-level error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The state directory could not be created, read, locked or written.
    #[error("agent state in {path:?}: {source}")]
    State {
        /// The state directory or file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another agent connected as this node, and the distributor ended this one's stream
    /// (ABORTED): two agents for one node would take turns forever, so this one stops.
    #[error("another agent connected as this node and replaced this one: {0}")]
    Replaced(String),
    /// Another agent holds the lock on the state directory.
    #[error("state directory {0:?} is locked by another agent process")]
    Locked(PathBuf),
    /// The record in the state directory is not valid JSON of the expected shape.
    #[error("agent record {path:?} is corrupt: {source}")]
    CorruptRecord {
        /// The record file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The inotify watcher could not be set up.
    #[error("cannot watch {path:?}: {source}")]
    Watch {
        /// The watched directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: notify::Error,
    },
    /// A file operation panicked, or the applier's lock was poisoned by one that did; the
    /// agent stops, and a restarted agent reloads its record from disk.
    #[error("the file applier failed unexpectedly: {0}")]
    Applier(String),
}

/// Result with the agent's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! The distributor library's errors. Messages are lowercase and name the thing.

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input from a user: a selector, mode, path, name, ...
    #[error("{0}")]
    Invalid(String),
    /// A file or directory could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A YAML or JSON document could not be produced or read.
    #[error("{0}")]
    Encoding(String),
    /// The Kubernetes API refused or failed a request.
    #[error("kubernetes: {0}")]
    Kube(String),
    /// A profile, version, rollout or node that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (a deprecated version, ...).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A service we depend on (the registry, etcd) cannot be reached, or did not answer.
    #[error("{0}")]
    Unavailable(String),
    /// The state database failed.
    #[error("state database: {0}")]
    Storage(String),
}

impl From<seccomp_rollout::Error> for Error {
    fn from(e: seccomp_rollout::Error) -> Self {
        match e {
            seccomp_rollout::Error::Invalid(m) => Error::Invalid(m),
            seccomp_rollout::Error::Encoding(m) => Error::Encoding(m),
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl Error {
    /// The gRPC status code name a caller sees for this error (also in the audit log).
    pub fn code_name(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "INVALID_ARGUMENT",
            Error::NotFound(_) => "NOT_FOUND",
            Error::FailedPrecondition(_) => "FAILED_PRECONDITION",
            Error::Unavailable(_) => "UNAVAILABLE",
            Error::Io { .. } | Error::Encoding(_) | Error::Kube(_) | Error::Storage(_) => {
                "INTERNAL"
            }
        }
    }

    /// A bad-input error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid(message.into())
    }

    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result with this crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! The rollout domain's errors. Messages are lowercase and name the thing.

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Bad input from a user: a selector, mode, path, name, wave list, ...
    #[error("{0}")]
    Invalid(String),
    /// A YAML or JSON document could not be produced.
    #[error("{0}")]
    Encoding(String),
}

impl Error {
    /// A bad-input error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid(message.into())
    }
}

/// Result with this crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

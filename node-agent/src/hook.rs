//! Pause points inside the atomic write, for crash tests.
//!
//! A test cannot hit "killed between writing the temp file and the rename" by timing; instead
//! the writer calls a [`WriteHook`] at each [`PausePoint`], and a hook built by
//! [`WriteHook::stdio_pause_from_env`] announces the point on stdout and blocks until a line
//! (or EOF) arrives on stdin. The test then kills the process at exactly that point, or lets it
//! go on. Without a hook the writer does not even check.

use std::fmt;
use std::io::{BufRead, Write};
use std::str::FromStr;
use std::sync::Arc;

/// Environment variable read by [`WriteHook::stdio_pause_from_env`].
pub const PAUSE_ENV: &str = "SECCOMP_AGENT_PAUSE";

/// Environment variable naming a file to which the agent appends one JSON line per
/// `Desired` it receives, before applying it: `{"at_ms", "revision", "files": {path:
/// sha256}}`. For the history checks of the tests only (what every node was ever sent).
pub const RECORD_ENV: &str = "SECCOMP_AGENT_RECORD_DESIRED";

/// A point inside the atomic write of one file, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PausePoint {
    /// The temp file exists and is empty.
    TempCreated,
    /// Half of the content is in the temp file.
    PartlyWritten,
    /// The temp file is complete, owned, chmod-ed and synced; the target is still the old file.
    BeforeRename,
    /// The target is the new file; the directory is not yet synced.
    AfterRename,
}

impl PausePoint {
    /// Every point, in the order the writer passes them.
    pub const ALL: [Self; 4] = [
        Self::TempCreated,
        Self::PartlyWritten,
        Self::BeforeRename,
        Self::AfterRename,
    ];

    /// Kebab-case name, as used in [`PAUSE_ENV`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TempCreated => "temp-created",
            Self::PartlyWritten => "partly-written",
            Self::BeforeRename => "before-rename",
            Self::AfterRename => "after-rename",
        }
    }
}

impl fmt::Display for PausePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PausePoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown pause point {s:?}"))
    }
}

/// The callback inside a [`WriteHook`].
type HookFn = dyn Fn(PausePoint, &str) + Send + Sync;

/// Called by the writer at every [`PausePoint`] with the node path being written.
#[derive(Clone)]
pub struct WriteHook(Arc<HookFn>);

impl WriteHook {
    /// Wraps a callback.
    pub fn new(f: impl Fn(PausePoint, &str) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// When `SECCOMP_AGENT_PAUSE` names a pause point (for example `before-rename`), a hook
    /// that, at that point, prints `paused <point> <path>` on stdout and waits for one line on
    /// stdin (EOF also releases it). For crash tests only; `None` when the variable is unset.
    pub fn stdio_pause_from_env() -> Option<Result<Self, String>> {
        let value = std::env::var(PAUSE_ENV).ok()?;
        Some(value.parse::<PausePoint>().map(|wanted| {
            Self::new(move |point, path| {
                if point != wanted {
                    return;
                }
                let mut stdout = std::io::stdout().lock();
                // If the test is gone there is nobody to wait for; carry on.
                if writeln!(stdout, "paused {point} {path}")
                    .and_then(|()| stdout.flush())
                    .is_ok()
                {
                    let mut line = String::new();
                    let _ = std::io::stdin().lock().read_line(&mut line);
                }
            })
        }))
    }

    pub(crate) fn call(&self, point: PausePoint, path: &str) {
        (self.0)(point, path);
    }
}

impl fmt::Debug for WriteHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WriteHook(..)")
    }
}

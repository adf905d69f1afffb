//! SIGINT and SIGTERM as a [`CancellationToken`], the one shutdown signal a service passes
//! down to its server, its background tasks and its metrics endpoint.
//!
//! A service started by another program (`seccompctl dev`) can also be tied to that
//! program's life: with [`EXIT_WITH_PARENT_ENV`] set to the parent's pid, the kernel sends
//! SIGTERM when the parent dies, even by SIGKILL, so the service shuts down as on any SIGTERM
//! instead of lingering. The parent cannot arrange this itself without `unsafe` (`pre_exec`),
//! so the service asks for it when it starts.

use rustix::process::{Pid, Signal};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// The environment variable holding the pid of the parent whose death stops the service.
pub const EXIT_WITH_PARENT_ENV: &str = "SECCOMP_EXIT_WITH_PARENT";

/// A token cancelled by the first SIGINT or SIGTERM. A second signal exits the process at
/// once (status 130), for an operator who does not want to wait for the graceful drain.
///
/// With [`EXIT_WITH_PARENT_ENV`] set, the parent's death sends SIGTERM (see the module docs);
/// a parent that is already gone cancels the token at once.
///
/// Must be called inside a tokio runtime.
pub fn on_signal() -> std::io::Result<CancellationToken> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "shutting down gracefully; a second signal exits at once"
        );
        cancel.cancel();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal, exiting without waiting");
        std::process::exit(130);
    });
    // After the handlers are in place, so the parent's death is a graceful SIGTERM.
    let parent = parent_to_follow(std::env::var(EXIT_WITH_PARENT_ENV).ok().as_deref())?;
    if let Some(parent) = parent {
        rustix::process::set_parent_process_death_signal(Some(Signal::TERM))?;
        // The parent may have died before the request: then no signal will come.
        if rustix::process::getppid() != Some(parent) {
            tracing::info!(
                parent = parent.as_raw_pid(),
                "parent process already gone, shutting down"
            );
            token.cancel();
        }
    }
    Ok(token)
}

/// The pid in [`EXIT_WITH_PARENT_ENV`], when it is set.
fn parent_to_follow(value: Option<&str>) -> std::io::Result<Option<Pid>> {
    let Some(value) = value else {
        return Ok(None);
    };
    value
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|raw| *raw > 0)
        .and_then(Pid::from_raw)
        .map(Some)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{EXIT_WITH_PARENT_ENV}={value:?} is not a process id"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::parent_to_follow;

    #[test]
    fn the_parent_pid_is_a_positive_number() {
        assert_eq!(parent_to_follow(None).unwrap(), None);
        assert_eq!(
            parent_to_follow(Some("42"))
                .unwrap()
                .map(|p| p.as_raw_pid()),
            Some(42)
        );
        for bad in ["", "0", "-1", "init", "42x"] {
            let e = parent_to_follow(Some(bad)).unwrap_err();
            assert!(
                e.to_string().contains("SECCOMP_EXIT_WITH_PARENT"),
                "{bad:?}: {e}"
            );
        }
    }
}

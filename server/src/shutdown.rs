//! SIGINT and SIGTERM as a [`CancellationToken`], the one shutdown signal a service passes
//! down to its server, its background tasks and its metrics endpoint.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// A token cancelled by the first SIGINT or SIGTERM. A second signal exits the process at
/// once (status 130), for an operator who does not want to wait for the graceful drain.
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
    Ok(token)
}

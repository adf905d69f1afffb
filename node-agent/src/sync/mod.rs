//! The agent's side of `seccomp.agent.v1.AgentSync`, and the only module of this crate that
//! uses tonic: it converts between the protocol's messages and the [`model`](crate::model)
//! types, and drives an [`Applier`] from one long-lived stream (DESIGN section 6).
//!
//! [`run`] does two things at once until shutdown:
//! - **Sessions.** Connect; send `Hello` (node name, labels, agent version, the revision last
//!   applied and every path the agent placed, as on disk now); answer every `Desired` (always
//!   the complete set) with an `Ack` or a `Nack` that echo its nonce; send a `Heartbeat` every
//!   [`Config::heartbeat`]; forward drift reports as `Drift`. When the stream ends or cannot
//!   be opened, the files stay as they are and the agent reconnects after an exponential
//!   [`Backoff`] with jitter, to the next of [`Config::distributors`] (replicas). Its new `Hello` carries the current revision, so a distributor
//!   that has nothing new sends nothing and nothing is rewritten. A stream the distributor
//!   ends with ABORTED was replaced by another agent connected as this node: rather than the
//!   two taking turns forever, this one stops with [`Error::Replaced`](crate::Error::Replaced)
//!   (its supervisor shows it, and its files stay).
//! - **Drift.** An inotify watch on the allowed root plus a periodic scan
//!   ([`DriftTrigger`](crate::watch::DriftTrigger)) call [`Applier::repair`], and each report becomes a `Drift`. Repairs
//!   go on while the distributor is unreachable; their reports are then dropped, since the
//!   next `Hello` describes the disk as it is.
//!
//! Every [`Applier`] call does blocking file I/O (fsync), so it runs on the blocking pool with
//! the applier behind a mutex: an apply and a repair never overlap, and a write paused by a
//! [`WriteHook`] holds up neither heartbeats nor shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use seccomp_proto::agent::v1 as pb;
use seccomp_proto::agent::v1::agent_message::Message as Up;
use seccomp_proto::agent::v1::distributor_message::Message as Down;
use seccomp_server::client::{Credentials, TokenSource};
use seccomp_server::tls::ClientTls;
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tracing::Instrument;

mod convert;
mod drift;
mod events;

use convert::{desired_from_proto, drift_to_proto, error_to_proto, observed_to_proto, up};
use drift::DriftLoop;

use crate::error::{Error, Result};
use crate::hook::WriteHook;
use crate::model::{DriftReport, ObservedFile, Rejected};
use crate::{Applier, node};

/// The version this agent reports in its `Hello`.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The largest message the agent accepts from the distributor (64 MiB), so the largest
/// desired set: every file's bytes travel in one `Desired`. tonic's default of 4 MiB would
/// refuse a set of four 1 MiB profiles, and the agent would reconnect and be refused again
/// forever; 64 MiB holds sixty of the registry's largest default profiles. A distributor
/// should refuse to send a larger set rather than have the agent drop the stream.
pub const MAX_DESIRED_BYTES: usize = 64 << 20;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings find a distributor that vanished without closing the connection (a node or
/// network failure), which heartbeats alone would notice only after TCP gives up.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// A session that lasted this long resets the backoff; a stream that the distributor keeps
/// closing right after `Hello` is retried ever more slowly instead of in a tight loop.
const STABLE_SESSION: Duration = Duration::from_secs(10);
/// Messages to the distributor waiting to be sent.
const OUTBOX: usize = 16;
/// Drift reports waiting for a stream.
const DRIFT_QUEUE: usize = 8;

/// Delays between reconnection attempts: `initial`, doubling up to `max`, each shortened by a
/// random share of up to a half, so that a fleet that lost its distributor at the same moment
/// does not come back in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay (before jitter).
    pub initial: Duration,
    /// The longest delay (before jitter).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delays, endless: the `n`-th lies in `[d/2, d)` with `d = min(initial * 2^n, max)`.
    pub fn delays(&self) -> ExponentialBackoff {
        // backon's jitter adds a random share of up to the whole delay, so start from half the
        // bounds ("equal jitter").
        ExponentialBuilder::new()
            .with_min_delay(self.initial / 2)
            .with_max_delay(self.max / 2)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// Everything the agent needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The distributor's URLs, for example `http://127.0.0.1:50052`; `https://` for TLS.
    /// With several (replicas), each connection attempt takes the next after one that
    /// failed or ended; a DNS name that resolves to several addresses (a headless Service)
    /// is tried address by address too.
    pub distributors: Vec<String>,
    /// CA of the distributor's certificate, and this node's client certificate and key
    /// (which name the node; the distributor accepts no other). Read again at every
    /// reconnection, so renewed files are used without a restart.
    pub tls: ClientTls,
    /// A file holding a bearer token (a projected ServiceAccount token, in a cluster whose
    /// distributor checks them with TokenReview); read again at every reconnection, as the
    /// kubelet renews it.
    pub token_file: Option<std::path::PathBuf>,
    /// This node's name (a DNS-1123 subdomain).
    pub node_name: String,
    /// This node's labels, matched against NCI selectors.
    pub labels: BTreeMap<String, String>,
    /// Where the files go and where the agent keeps its record.
    pub files: crate::Config,
    /// How often to send a heartbeat.
    pub heartbeat: Duration,
    /// How often to scan for drift besides inotify.
    pub scan_interval: Duration,
    /// How long to wait before reconnecting.
    pub backoff: Backoff,
    /// Pause points inside writes (crash tests).
    pub hook: Option<WriteHook>,
    /// Take over files the agent did not place at desired paths instead of refusing the set
    /// (see [`Applier::with_adopt_existing`]).
    pub adopt_existing: bool,
    /// Counted when served (`--metrics-listen`).
    pub metrics: Option<Arc<crate::metrics::AgentMetrics>>,
    /// Set while the stream to the distributor is up (`GET /readyz`).
    pub readiness: seccomp_server::metrics::Readiness,
    /// Log files (node paths, under the host root) to read kernel seccomp records from
    /// (`--audit-log`); none: no events are sent.
    pub audit_logs: Vec<PathBuf>,
    /// How often the logs are read, and the most often events are sent.
    pub audit_interval: Duration,
    /// Most kinds of event held between two sends; further records are counted as dropped.
    pub audit_max_kinds: usize,
    /// Append every `Desired` received to this file (tests: [`crate::hook::RECORD_ENV`]).
    pub record_desired: Option<PathBuf>,
}

impl Config {
    /// The defaults of the `seccomp-node-agent` binary for this distributor (a URL, or
    /// several comma-separated), node and files: no labels, a heartbeat every 10 s, a drift
    /// scan every 60 s, reconnecting after 200 ms doubling to 30 s.
    pub fn new(
        distributor: impl Into<String>,
        node_name: impl Into<String>,
        files: crate::Config,
    ) -> Self {
        Self {
            distributors: distributor
                .into()
                .split(',')
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect(),
            tls: ClientTls::default(),
            token_file: None,
            node_name: node_name.into(),
            labels: BTreeMap::new(),
            files,
            heartbeat: Duration::from_secs(10),
            scan_interval: Duration::from_secs(60),
            backoff: Backoff::default(),
            hook: None,
            adopt_existing: false,
            metrics: None,
            readiness: seccomp_server::metrics::Readiness::default(),
            audit_logs: Vec::new(),
            audit_interval: Duration::from_secs(10),
            audit_max_kinds: 1000,
            record_desired: None,
        }
    }
}

/// The endpoint of the distributor at `url`, with the TLS files as they are now.
fn endpoint(config: &Config, url: &str) -> std::result::Result<Endpoint, String> {
    Ok(seccomp_server::tls::endpoint(url, &config.tls)
        .map_err(|e| format!("distributor {url:?}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// Runs the agent until `shutdown` completes: keeps the node's files in line with what the
/// distributor sends, repairs drift, and reports. Returns an error only for what retrying
/// cannot fix: a bad configuration, an unusable or locked state directory, a panicked
/// applier. Returns once every file operation has finished, so the state directory is free.
#[tracing::instrument(name = "agent", skip_all, fields(node = %config.node_name))]
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    node::check_node_name(&config.node_name)?;
    for (what, period) in [
        ("heartbeat", config.heartbeat),
        ("scan interval", config.scan_interval),
        ("audit interval", config.audit_interval),
    ] {
        if period.is_zero() {
            return Err(Error::Config(format!(
                "the {what} must be longer than zero"
            )));
        }
    }
    // A bad URL or unusable TLS files at start are a configuration error; later (files
    // being renewed) they are retried.
    if config.distributors.is_empty() {
        return Err(Error::Config("no distributor URL".to_owned()));
    }
    for url in &config.distributors {
        endpoint(&config, url).map_err(Error::Config)?;
    }

    let files = config.files.clone();
    let hook = config.hook.clone();
    let adopt_existing = config.adopt_existing;
    let applier = tokio::task::spawn_blocking(move || {
        let applier = Applier::open(files)?.with_adopt_existing(adopt_existing);
        Ok::<_, Error>(match hook {
            Some(hook) => applier.with_hook(hook),
            None => applier,
        })
    })
    .await
    .map_err(panicked)??;
    let watch_dir = applier.allowed_root_on_disk();
    // Killed in the middle of an apply: the record still holds the last complete set as the
    // drift baseline, while the disk may already hold some of the new files. Repairing now
    // would put old versions back; the distributor resends the set to a Hello without a
    // revision, and repairs resume once it is applied.
    let interrupted = applier.revision().is_empty() && !applier.desired().is_empty();
    if interrupted {
        tracing::info!("the last apply was interrupted; drift repairs wait for the next one");
    }
    let applier = Shared(Arc::new(Mutex::new(applier)));
    tracing::info!(
        distributor = %config.distributors.join(","),
        host_root = %config.files.host_root.display(),
        allowed_root = %config.files.allowed_root,
        adopt_existing = config.adopt_existing,
        "agent starting"
    );

    let stop = CancellationToken::new();
    let applied = Arc::new(Notify::new());
    let (drift_tx, drift_rx) = mpsc::channel(DRIFT_QUEUE);
    let drift = DriftLoop {
        applier: applier.clone(),
        dir: watch_dir,
        period: config.scan_interval,
        reports: drift_tx,
        applied: Arc::clone(&applied),
        stop: stop.clone(),
        hold: interrupted,
        metrics: config.metrics.clone(),
    };
    let drift = tokio::spawn(drift.run().in_current_span());
    let (seccomp_events, reading) = match events::start(&config, stop.clone()) {
        Some((e, task)) => (Some(e), Some(task)),
        None => (None, None),
    };
    let mut sessions = Sessions {
        config,
        url: 0,
        applier,
        drift: drift_rx,
        applied,
        stop: stop.clone(),
        events: seccomp_events,
    };
    let result = {
        let main = sessions.run();
        tokio::pin!(main, shutdown);
        tokio::select! {
            () = &mut shutdown => {
                tracing::info!("shutting down");
                stop.cancel();
                main.await
            }
            result = &mut main => result,
        }
    };
    stop.cancel();
    if let Some(task) = reading {
        let _ = task.await;
    }
    let drift = drift.await.map_err(panicked).and_then(|r| r);
    tracing::info!("agent stopped");
    result.and(drift)
}

/// The applier, shared between the sessions and the drift loop.
#[derive(Clone)]
struct Shared(Arc<Mutex<Applier>>);

impl Shared {
    /// Runs `f` with the applier locked, on the blocking pool, to completion (it is not
    /// cancelled with the caller, so a write is never abandoned halfway by the agent itself).
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Applier) -> T + Send + 'static,
    ) -> Result<T> {
        let applier = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || {
            let mut applier = applier.lock().map_err(|_| {
                Error::Applier("a previous file operation panicked holding the lock".to_owned())
            })?;
            Ok(f(&mut applier))
        })
        .await
        .map_err(panicked)?
    }
}

fn panicked(e: tokio::task::JoinError) -> Error {
    Error::Applier(format!("a file operation panicked: {e}"))
}

/// An error with its causes, `a: b: c`, since tonic's transport errors say little on top.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// How a session ended without an error.
enum Ended {
    /// The agent is shutting down.
    Shutdown,
    /// The distributor closed the stream.
    Closed,
}

/// Why a session ended; all but `Fatal` are retried.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect to the distributor: {}", chain(.0))]
    Connect(tonic::transport::Error),
    #[error("cannot set up the connection's credentials: {0}")]
    Tls(String),
    #[error("the distributor refused the stream: {0}")]
    Refused(tonic::Status),
    #[error("the stream to the distributor failed: {0}")]
    Stream(tonic::Status),
    #[error("the stream to the distributor closed while sending")]
    Gone,
    #[error(transparent)]
    Fatal(#[from] Error),
}

/// What woke a session up.
enum Event {
    Stop,
    Received(Result<Option<pb::DistributorMessage>, tonic::Status>),
    Heartbeat,
    Drift(DriftReport),
    Events,
}

/// One stream at a time, reconnecting with backoff.
struct Sessions {
    config: Config,
    /// Which of the distributor URLs the next session dials.
    url: usize,
    applier: Shared,
    drift: mpsc::Receiver<DriftReport>,
    applied: Arc<Notify>,
    stop: CancellationToken,
    /// Seccomp events to send, when logs are followed.
    events: Option<events::Events>,
}

impl Sessions {
    async fn run(&mut self) -> Result<()> {
        let mut delays = self.config.backoff.delays();
        while !self.stop.is_cancelled() {
            let mut connected_at = None;
            let ended = self.session(&mut connected_at).await;
            self.config.readiness.set(false);
            if let Some(m) = &self.config.metrics {
                m.connected.set(0);
            }
            match ended {
                Ok(Ended::Shutdown) => return Ok(()),
                Ok(Ended::Closed) => tracing::info!("the distributor closed the stream"),
                Err(SessionError::Fatal(e)) => return Err(e),
                Err(e) => tracing::warn!("{e}"),
            }
            // Another replica next, when there are several.
            self.url = (self.url + 1) % self.config.distributors.len().max(1);
            if connected_at.is_some_and(|at| at.elapsed() >= STABLE_SESSION) {
                delays = self.config.backoff.delays();
            }
            let delay = delays.next().unwrap_or(self.config.backoff.max);
            tracing::info!(
                delay = %humantime::format_duration(round_ms(delay)),
                "keeping the files as they are; reconnecting after a backoff"
            );
            tokio::select! {
                () = self.stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        }
        Ok(())
    }

    /// One stream: `Hello`, then answers, heartbeats and drift reports until it ends.
    async fn session(&mut self, connected_at: &mut Option<Instant>) -> Result<Ended, SessionError> {
        // Reports made while disconnected are stale: the Hello describes the disk as it is.
        while self.drift.try_recv().is_ok() {}
        let (mut revision, observed) = self
            .applier
            .with(|a| (a.revision().to_owned(), a.observe_current()))
            .await?;
        let files = observed.len();
        let hello = pb::Hello {
            node_name: self.config.node_name.clone(),
            labels: self.config.labels.clone().into_iter().collect(),
            agent_version: AGENT_VERSION.to_owned(),
            current_revision: revision.clone(),
            observed: observed.into_iter().map(observed_to_proto).collect(),
        };
        let (outbox, outgoing) = mpsc::channel(OUTBOX);
        outbox
            .send(up(Up::Hello(hello)))
            .await
            .map_err(|_| SessionError::Gone)?;

        let url = self.config.distributors[self.url % self.config.distributors.len()].clone();
        let endpoint = endpoint(&self.config, &url).map_err(SessionError::Tls)?;
        let channel = tokio::select! {
            () = self.stop.cancelled() => return Ok(Ended::Shutdown),
            channel = endpoint.connect() => channel.map_err(SessionError::Connect)?,
        };
        let credentials = Credentials {
            tls: self.config.tls.clone(),
            token: self.config.token_file.clone().map(TokenSource::File),
            claimed: None,
        };
        let bearer = credentials
            .bearer()
            .map_err(|e| SessionError::Tls(e.to_string()))?;
        let mut client = pb::agent_sync_client::AgentSyncClient::with_interceptor(channel, bearer)
            .max_decoding_message_size(MAX_DESIRED_BYTES);
        let mut inbound = tokio::select! {
            () = self.stop.cancelled() => return Ok(Ended::Shutdown),
            stream = client.sync(ReceiverStream::new(outgoing)) => {
                stream.map_err(SessionError::Refused)?.into_inner()
            }
        };
        *connected_at = Some(Instant::now());
        self.config.readiness.set(true);
        if let Some(m) = &self.config.metrics {
            m.connected.set(1);
        }
        tracing::info!(
            distributor = %url,
            revision = %revision,
            files,
            "connected"
        );

        let period = self.config.heartbeat;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let every = self.config.audit_interval;
        let mut send_events = tokio::time::interval_at(Instant::now() + every, every);
        send_events.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                () = self.stop.cancelled() => Event::Stop,
                received = inbound.message() => Event::Received(received),
                _ = heartbeat.tick() => Event::Heartbeat,
                Some(report) = self.drift.recv() => Event::Drift(report),
                _ = send_events.tick(), if self.events.is_some() => Event::Events,
            };
            let message = match event {
                Event::Stop => return Ok(Ended::Shutdown),
                Event::Received(Err(status)) if status.code() == tonic::Code::Aborted => {
                    return Err(SessionError::Fatal(Error::Replaced(
                        status.message().to_owned(),
                    )));
                }
                Event::Received(Err(status)) => return Err(SessionError::Stream(status)),
                Event::Received(Ok(None)) => return Ok(Ended::Closed),
                Event::Received(Ok(Some(pb::DistributorMessage {
                    message: Some(Down::Desired(desired)),
                }))) => {
                    if let Some(path) = &self.config.record_desired {
                        record_desired(path, &desired);
                    }
                    let (answer, now) = self.answer(desired).await?;
                    revision = now;
                    answer
                }
                Event::Received(Ok(Some(_))) => {
                    tracing::warn!("ignoring an empty message from the distributor");
                    continue;
                }
                Event::Heartbeat => Up::Heartbeat(pb::Heartbeat {
                    revision: revision.clone(),
                    time: Some(SystemTime::now().into()),
                }),
                Event::Drift(report) => drift_to_proto(report),
                Event::Events => {
                    let Some(message) = self.events.as_ref().and_then(events::Events::take) else {
                        continue;
                    };
                    tracing::debug!(
                        kinds = message.events.len(),
                        dropped = message.dropped,
                        "sending seccomp events"
                    );
                    Up::SeccompEvents(message)
                }
            };
            // A stalled connection fills the outbox; shutdown must not wait for it.
            tokio::select! {
                () = self.stop.cancelled() => return Ok(Ended::Shutdown),
                sent = outbox.send(up(message)) => sent.map_err(|_| SessionError::Gone)?,
            }
        }
    }

    /// Applies one `Desired` and builds its `Ack` or `Nack`; also returns the revision the
    /// agent now has.
    async fn answer(&self, desired: pb::Desired) -> Result<(Up, String)> {
        let pb::Desired {
            revision,
            nonce,
            files,
        } = desired;
        let entries = files.len();
        let converted = desired_from_proto(files);
        let wanted = revision.clone();
        let (result, now) = self
            .applier
            .with(move |a| {
                let result = match converted {
                    Ok(files) => a.apply(&wanted, &files),
                    Err((errors, paths)) => Err(Rejected {
                        errors,
                        observed: paths.iter().filter_map(|p| a.observe(p).ok()).collect(),
                        last_good_revision: a.revision().to_owned(),
                    }),
                };
                (result, a.revision().to_owned())
            })
            .await?;
        // An apply may have created the allowed root: the drift loop can watch it now.
        self.applied.notify_one();
        let message = match result {
            Ok(applied) => {
                tracing::info!(
                    revision = %revision,
                    entries,
                    written = applied.written.len(),
                    removed = applied.removed.len(),
                    "desired set applied"
                );
                if let Some(m) = &self.config.metrics {
                    crate::metrics::AgentMetrics::count(&m.applies, "applied");
                    m.files_written.inc_by(applied.written.len() as u64);
                    m.files_removed.inc_by(applied.removed.len() as u64);
                    m.synced(applied.observed.len());
                }
                // What it removed is reported gone (agent.proto allows it), so the
                // distributor sees a removal confirmed, not only a set acknowledged.
                let gone = applied.removed.iter().map(ObservedFile::missing);
                Up::Ack(pb::Ack {
                    revision,
                    nonce,
                    observed: applied
                        .observed
                        .into_iter()
                        .chain(gone)
                        .map(observed_to_proto)
                        .collect(),
                })
            }
            Err(rejected) => {
                tracing::warn!(revision = %revision, entries, "{rejected}");
                if let Some(m) = &self.config.metrics {
                    crate::metrics::AgentMetrics::count(&m.applies, "refused");
                }
                Up::Nack(pb::Nack {
                    revision,
                    nonce,
                    last_good_revision: rejected.last_good_revision,
                    errors: rejected.errors.into_iter().map(error_to_proto).collect(),
                    observed: rejected
                        .observed
                        .into_iter()
                        .map(observed_to_proto)
                        .collect(),
                })
            }
        };
        Ok((message, now))
    }
}

/// One line of the test history (see [`crate::hook::RECORD_ENV`]); failures are logged.
fn record_desired(path: &std::path::Path, desired: &pb::Desired) {
    use std::io::Write as _;
    let files: BTreeMap<&str, &str> = desired
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.sha256.as_str()))
        .collect();
    let at_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let line = serde_json::json!({"at_ms": at_ms, "revision": desired.revision, "files": files});
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot record a Desired");
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use seccomp_proto::agent::v1 as pb;

    use super::{Backoff, desired_from_proto};
    use crate::model::{DesiredKind, ErrorCode};

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_below_each_step() {
        let backoff = Backoff::default();
        let delays: Vec<Duration> = backoff.delays().take(12).collect();
        let mut step = backoff.initial;
        for delay in delays {
            assert!(
                delay >= step / 2 && delay < step,
                "{delay:?} not in [{:?}, {step:?})",
                step / 2
            );
            step = (step * 2).min(backoff.max);
        }
        assert_eq!(step, backoff.max, "the cap is reached within 12 attempts");
        let distinct: std::collections::HashSet<Duration> =
            (0..20).filter_map(|_| backoff.delays().next()).collect();
        assert!(distinct.len() > 1, "jitter: not every agent waits the same");
    }

    #[test]
    fn desired_entries_convert_and_other_types_refuse_the_set() {
        let file = |path: &str, kind: pb::FileType| pb::DesiredFile {
            path: path.to_owned(),
            r#type: kind as i32,
            content: b"{}".to_vec().into(),
            sha256: "x".to_owned(),
            mode: 0o644,
            owner: "root".to_owned(),
            group: "0".to_owned(),
        };
        let entries = desired_from_proto(vec![
            file("/var/lib/kubelet/seccomp", pb::FileType::Directory),
            file("/var/lib/kubelet/seccomp/a.json", pb::FileType::File),
        ])
        .unwrap();
        assert_eq!(entries[0].kind, DesiredKind::Directory);
        assert_eq!(entries[1].kind, DesiredKind::File);
        assert_eq!((entries[1].mode, entries[1].group.as_str()), (0o644, "0"));
        assert_eq!(entries[1].content, b"{}");

        let (errors, paths) = desired_from_proto(vec![
            file("/var/lib/kubelet/seccomp/a.json", pb::FileType::File),
            file("/var/lib/kubelet/seccomp/l", pb::FileType::Symlink),
        ])
        .unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "/var/lib/kubelet/seccomp/l");
        assert_eq!(errors[0].code, ErrorCode::InvalidEntry);
        assert!(
            errors[0].message.contains("FILE_TYPE_SYMLINK"),
            "{}",
            errors[0].message
        );
        assert_eq!(paths.len(), 2);
    }
}

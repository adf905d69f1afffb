//! The connection to the registry or the distributor, for every command that talks to one:
//! connecting with a clear one-line error, with the credentials the global flags give (TLS
//! for `https://` URLs with `--ca` and optionally `--cert`/`--key`, a bearer token from
//! `--token` or `--token-file`; without a token the local user is named in
//! `x-seccomp-actor`, which a server without authentication records as unverified), and
//! turning a server's refusal into an outcome. Both services go through the same code;
//! [`Service`] only names which one a message is about.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use prost::Message as _;
use seccomp_proto::distributor::v1::distributor_client::DistributorClient;
use seccomp_proto::registry::v1 as pb;
use seccomp_proto::registry::v1::registry_client::RegistryClient;
use seccomp_server::client::{Bearer, Credentials};
use std::sync::RwLock;
use tonic::service::interceptor::InterceptedService;
use tonic::{Code, Response, Status};

use crate::Outcome;
use crate::output::errln;

/// Which service a connection goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `seccomp-registry`: profiles, versions, audit.
    Registry,
    /// `seccomp-distributor`: rollouts and nodes.
    Distributor,
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Service::Registry => "registry",
            Service::Distributor => "distributor",
        })
    }
}

/// A channel that sends the caller's credentials.
pub type Channel = InterceptedService<tonic::transport::Channel, Bearer>;

/// A connected registry client.
pub type Registry = RegistryClient<Channel>;
/// A connected distributor client.
pub type Distributor = DistributorClient<Channel>;

/// The credentials of every connection this process makes (from the flags, or those
/// `seccompctl dev` made for its stack); a token file is read at each connection.
static CREDENTIALS: RwLock<Option<Credentials>> = RwLock::new(None);

/// Use `credentials` for every connection from now on.
pub fn configure(credentials: Credentials) {
    *CREDENTIALS.write().unwrap_or_else(|e| e.into_inner()) = Some(credentials);
}

fn credentials() -> Credentials {
    CREDENTIALS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(|| Credentials {
            claimed: std::env::var("USER").ok(),
            ..Credentials::default()
        })
}

/// The runtime a command's calls run on: one thread is plenty for one client.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The innermost cause, which is the part a person can act on ("Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

async fn channel(service: Service, url: &str) -> Result<Channel> {
    let credentials = credentials();
    let endpoint = credentials
        .endpoint(url)
        .map_err(|e| anyhow!("{service} {url}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60));
    let channel = endpoint.connect().await.map_err(|e| {
        let cause = root_cause(&e);
        anyhow!(
            "cannot connect to the {service} at {url}: {cause}{}",
            tls_hint(url)
        )
    })?;
    Ok(InterceptedService::new(channel, credentials.bearer()?))
}

/// Connect to the registry at `url`.
pub async fn registry(url: &str) -> Result<Registry> {
    Ok(RegistryClient::new(channel(Service::Registry, url).await?)
        .max_decoding_message_size(64 << 20))
}

/// Connect to the distributor at `url`, or at the first of several comma-separated URLs
/// that accepts a connection (replicas: only the leader listens).
pub async fn distributor(url: &str) -> Result<Distributor> {
    let urls: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    let mut failures = Vec::new();
    for u in &urls {
        match channel(Service::Distributor, u).await {
            Ok(c) => return Ok(DistributorClient::new(c)),
            Err(e) if urls.len() > 1 => failures.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    Err(anyhow!(
        "no distributor replica answered: {}",
        failures.join("; ")
    ))
}

/// The diagnostics of a rejected profile, from the status details (a `google.rpc.Status`
/// holding a `ValidationFailure`, as the registry's contract says).
pub fn validation_failure(status: &Status) -> Option<pb::ValidationFailure> {
    let rpc = tonic_types::pb::Status::decode(status.details()).ok()?;
    rpc.details
        .iter()
        .find(|any| {
            any.type_url
                .ends_with("/seccomp.registry.v1.ValidationFailure")
        })
        .and_then(|any| pb::ValidationFailure::decode(any.value.as_slice()).ok())
}

/// The stable name of a status code, as in the audit log (`NOT_FOUND`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// What to check when a connection to `url` fails: a plaintext client talking to a TLS port
/// sees its connection cut (often only at the first call); a TLS client whose CA did not
/// sign the server's certificate is refused in the handshake.
fn tls_hint(url: &str) -> &'static str {
    if url.starts_with("http://") {
        " (if the server uses TLS: an https:// URL and --ca FILE)"
    } else {
        " (is --ca the CA that signed the server's certificate?)"
    }
}

/// A failed call: the service's refusal is a negative verdict (exit 1, the message on
/// standard error); an unreachable or failing service is an error (exit 2).
pub fn refused(status: Status, service: Service, url: &str) -> Result<Outcome> {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            let message = status.message().lines().next().unwrap_or("");
            // tonic's own words when the connection broke, rather than a service's answer.
            let hint = if message.contains("transport error") || message.contains("connection") {
                tls_hint(url)
            } else {
                ""
            };
            Err(anyhow!("{service} at {url} failed: {message}{hint}"))
        }
        // tonic's own words for a connection that broke mid-call (a plaintext client talking
        // to a TLS port sees this or UNAVAILABLE), not the service's.
        Code::Internal if status.message().contains("h2 protocol error") => Err(anyhow!(
            "{service} at {url} failed: {}{}",
            status.message(),
            tls_hint(url)
        )),
        Code::Internal => Err(anyhow!("{service} internal error: {}", status.message())),
        code => {
            errln!("seccompctl: {}: {}", code_name(code), status.message());
            Ok(Outcome::Negative)
        }
    }
}

/// A call's reply, or the outcome of its refusal (see [`refused`]).
pub fn answer<T>(
    reply: Result<Response<T>, Status>,
    service: Service,
    url: &str,
) -> Result<Result<T, Outcome>> {
    match reply {
        Ok(r) => Ok(Ok(r.into_inner())),
        Err(status) => refused(status, service, url).map(Err),
    }
}

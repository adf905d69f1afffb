//! The connection to the registry, shared by `profile` and `audit`: connecting with a clear
//! one-line error, naming the local user in `x-seccomp-actor` (recorded by the registry as
//! unverified until authentication exists), and turning a server's refusal into output.

use std::time::Duration;

use anyhow::{Result, anyhow};
use prost::Message as _;
use seccomp_proto::registry::v1 as pb;
use seccomp_proto::registry::v1::registry_client::RegistryClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::Outcome;

/// Names the caller (see the module docs).
#[derive(Clone)]
pub struct Actor(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Actor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("x-seccomp-actor", v.clone());
        }
        Ok(request)
    }
}

/// A connected registry client.
pub type Client = RegistryClient<InterceptedService<Channel, Actor>>;

/// The innermost cause, which is the part a person can act on ("Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// A channel to the `service` ("registry", "distributor") at `url` that names the caller.
pub async fn channel(url: &str, service: &str) -> Result<InterceptedService<Channel, Actor>> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| anyhow!("invalid {service} URL {url:?}: {}", root_cause(&e)))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60));
    let channel = endpoint.connect().await.map_err(|e| {
        anyhow!(
            "cannot connect to the {service} at {url}: {}",
            root_cause(&e)
        )
    })?;
    let actor = std::env::var("USER")
        .ok()
        .and_then(|u| u.parse().ok())
        .map(Some)
        .unwrap_or(None);
    Ok(InterceptedService::new(channel, Actor(actor)))
}

/// Connect to the registry at `url`.
pub async fn connect(url: &str) -> Result<Client> {
    Ok(RegistryClient::new(channel(url, "registry").await?).max_decoding_message_size(64 << 20))
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

/// A failed call: the registry's refusal is a negative verdict (exit 1, the message on
/// standard error); an unreachable or failing registry is an error (exit 2).
pub fn refused(status: Status, url: &str) -> Result<Outcome> {
    refused_by(status, url, "registry")
}

/// [`refused`] for any of the services.
pub fn refused_by(status: Status, url: &str, service: &str) -> Result<Outcome> {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            Err(anyhow!(
                "{service} at {url} failed: {}",
                status.message().lines().next().unwrap_or("")
            ))
        }
        Code::Internal => Err(anyhow!("{service} internal error: {}", status.message())),
        code => {
            eprintln!("seccompctl: {}: {}", code_name(code), status.message());
            Ok(Outcome::Negative)
        }
    }
}

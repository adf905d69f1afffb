//! What every gRPC server of the system registers besides its own service: health checking
//! and reflection, a uniform status for oversized requests, and the [`Limits`] every server
//! runs with.

use tonic::codegen::http::{self, HeaderValue};
use tonic::transport::server::Router;
use tonic_health::ServingStatus;
pub use tonic_health::server::HealthReporter;

/// What every server bounds: streams per connection, header size, and how long a peer may
/// stay silent (HTTP/2 pings: a connection whose peer does not answer one within
/// `keepalive_timeout` is closed, so a stopped or partitioned agent's stream ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent streams on one connection.
    pub max_concurrent_streams: u32,
    /// How often the server pings an idle connection.
    pub keepalive_interval: std::time::Duration,
    /// How long a ping may go unanswered.
    pub keepalive_timeout: std::time::Duration,
    /// Largest header list a request may send, in bytes.
    pub max_header_list_size: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent_streams: 256,
            keepalive_interval: std::time::Duration::from_secs(10),
            keepalive_timeout: std::time::Duration::from_secs(10),
            max_header_list_size: 16 * 1024,
        }
    }
}

/// The flags that tune [`Limits`] (the others are fixed).
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// How often an idle connection is pinged (HTTP/2 keepalive).
    #[arg(long, env = "SECCOMP_KEEPALIVE_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub keepalive_interval: std::time::Duration,

    /// How long a ping may go unanswered before the connection is closed, and with it a
    /// stopped or partitioned node agent's stream (its node then turns Unknown).
    #[arg(long, env = "SECCOMP_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub keepalive_timeout: std::time::Duration,
}

impl LimitArgs {
    /// The limits: the defaults with these flags applied.
    pub fn limits(&self) -> Limits {
        Limits {
            keepalive_interval: self.keepalive_interval,
            keepalive_timeout: self.keepalive_timeout,
            ..Limits::default()
        }
    }
}

/// A tonic server builder with `limits`.
pub fn server_builder(limits: &Limits) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .http2_max_header_list_size(limits.max_header_list_size)
}

/// Why the standard services could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the gRPC reflection service: {0}")]
pub struct ReflectionError(#[from] tonic_reflection::server::Error);

/// Add `grpc.health.v1.Health` (the overall status `""` and each name in `serving` reported
/// as SERVING) and gRPC reflection v1 over [`seccomp_proto::FILE_DESCRIPTOR_SET`] to
/// `router`. The returned reporter lets the caller flip services to NOT_SERVING while it
/// drains on shutdown.
pub async fn add_health_and_reflection<L>(
    router: Router<L>,
    serving: &[&str],
) -> Result<(Router<L>, HealthReporter), ReflectionError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in serving {
        reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(seccomp_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    Ok((router.add_service(health).add_service(reflection), reporter))
}

/// Mark `""` and every name in `serving` SERVING again (after a component recovered).
pub async fn set_serving(reporter: &HealthReporter, serving: &[&str]) {
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    for name in serving {
        reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
}

/// Mark `""` and every name in `serving` NOT_SERVING, so load balancers stop sending new
/// work while in-flight calls finish.
pub async fn set_not_serving(reporter: &HealthReporter, serving: &[&str]) {
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    for name in serving {
        reporter
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
}

/// The start of tonic's message for a request over `max_decoding_message_size`, as it appears
/// percent-encoded in the `grpc-message` header.
const TONIC_TOO_LARGE: &str = "Error,%20decoded%20message%20length%20too%20large";

/// Response mapper (use with `tower::util::MapResponseLayer`): tonic rejects a request
/// message over the decoding limit with OUT_OF_RANGE, where grpc-go, grpc-java and the
/// system's contract say RESOURCE_EXHAUSTED. The rejection is a trailers-only response, so
/// the status sits in the headers and can be rewritten there.
pub fn oversize_as_resource_exhausted<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m.starts_with(TONIC_TOO_LARGE));
    if out_of_range && too_large {
        headers.insert("grpc-status", HeaderValue::from_static("8"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static(
                "request%20message%20too%20large%20(over%20the%20server's%20gRPC%20message%20limit)",
            ),
        );
    }
    response
}

/// Serve `router` on `listener` (with `tls` when given, see [`crate::tls::incoming`]) until
/// `shutdown` completes, then drain: report `""` and every name in `services` NOT_SERVING
/// through `health`, call `on_shutdown` (a server with long-lived streams ends them there,
/// or they would hold the drain open), stop accepting, and give in-flight calls `grace`
/// before returning.
#[allow(clippy::too_many_arguments)]
pub async fn serve<L, ResBody>(
    router: Router<L>,
    health: &HealthReporter,
    services: &[&str],
    listener: tokio::net::TcpListener,
    tls: Option<std::sync::Arc<crate::tls::ReloadingTls>>,
    shutdown: impl std::future::Future<Output = ()>,
    grace: std::time::Duration,
    on_shutdown: impl FnOnce(),
) -> Result<(), tonic::transport::Error>
where
    L: tower::Layer<tonic::service::Routes>,
    L::Service: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Future: Send,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    ResBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stop = tokio_util::sync::CancellationToken::new();
    let incoming = crate::tls::incoming(listener, tls);
    let server = router.serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned());
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        () = shutdown => {}
    }
    tracing::info!("shutdown requested: no new connections, finishing in-flight calls");
    set_not_serving(health, services).await;
    on_shutdown();
    stop.cancel();
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(?grace, "grace period over, dropping open connections");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_tonics_size_rejection_is_rewritten() {
        let too_large = http::Response::builder()
            .header("grpc-status", "11")
            .header(
                "grpc-message",
                format!("{TONIC_TOO_LARGE}:%20found%205%20bytes"),
            )
            .body(())
            .unwrap();
        let out = oversize_as_resource_exhausted(too_large);
        assert_eq!(out.headers()["grpc-status"], "8");

        let other = http::Response::builder()
            .header("grpc-status", "11")
            .header("grpc-message", "page%20out%20of%20range")
            .body(())
            .unwrap();
        let out = oversize_as_resource_exhausted(other);
        assert_eq!(out.headers()["grpc-status"], "11");
        assert_eq!(out.headers()["grpc-message"], "page%20out%20of%20range");
    }
}

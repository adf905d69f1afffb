//! Prometheus metrics: a tower layer that counts gRPC requests by method and status and
//! observes their latency, and a small HTTP server for `GET /metrics`, `GET /healthz` (the
//! process serves) and `GET /readyz` (its [`Readiness`]), for every binary's
//! `--metrics-listen`.
//!
//! The status is read from the response headers, which is where gRPC puts it for every
//! error a unary handler returns (a trailers-only response); a response without it is an OK
//! whose status follows in the trailers. Unknown methods (UNIMPLEMENTED) share one label so
//! a client cannot grow the label set without bound.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http::header::CONTENT_TYPE;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tonic::codegen::http;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

fn new_histogram() -> Histogram {
    // 100 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// gRPC request metrics; a [`tower::Layer`] for `tonic::transport::Server::layer`.
#[derive(Clone)]
pub struct GrpcMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
}

impl GrpcMetrics {
    /// Create the metrics and register them (`grpc_server_requests_total`,
    /// `grpc_server_request_duration_seconds`) in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = GrpcMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(new_histogram),
        };
        registry.register(
            "grpc_server_requests",
            "gRPC requests handled, by method and status code",
            metrics.requests.clone(),
        );
        registry.register(
            "grpc_server_request_duration_seconds",
            "Time from request to response headers, by method",
            metrics.latency.clone(),
        );
        metrics
    }
}

impl<S> tower::Layer<S> for GrpcMetrics {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.clone(),
        }
    }
}

/// The service [`GrpcMetrics`] wraps around a router.
#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: GrpcMetrics,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let started = Instant::now();
        let future = self.inner.call(request);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let result = future.await;
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0")
                    .to_owned(),
                Err(_) => "transport".to_owned(),
            };
            // Paths no RPC has (any client can send them) share one series, so they cannot
            // grow the label set.
            let method = if code == "12" || crate::auth::rule(&method).is_none() {
                "unknown".to_owned()
            } else {
                method
            };
            metrics
                .latency
                .get_or_create(&MethodLabels {
                    method: method.clone(),
                })
                .observe(started.elapsed().as_secs_f64());
            metrics
                .requests
                .get_or_create(&RequestLabels { method, code })
                .inc();
            result
        })
    }
}

/// Whether a binary is ready for work (`GET /readyz`): set by the binary when it serves,
/// cleared while it cannot (a restarting engine, a drain).
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Say whether it is ready.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether it is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Encode one gauge family with these `values` (for collectors that read their numbers at
/// scrape time).
pub fn encode_gauges<L>(
    encoder: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, i64)>,
) -> Result<(), std::fmt::Error>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    use prometheus_client::encoding::EncodeMetric as _;
    use prometheus_client::metrics::TypedMetric as _;
    use prometheus_client::metrics::gauge::Gauge;
    let family: Family<L, Gauge> = Family::default();
    for (labels, value) in values {
        family.get_or_create(&labels).set(value);
    }
    let metric = encoder.encode_descriptor(name, help, None, Family::<L, Gauge>::TYPE)?;
    family.encode(metric)
}

/// Bind `addr` and serve [`serve`] there on a task of its own until `shutdown`; what a
/// binary's `--metrics-listen` does.
pub async fn start(
    addr: std::net::SocketAddr,
    registry: Arc<Mutex<Registry>>,
    ready: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot bind the metrics address {addr}: {e}"),
        )
    })?;
    tracing::info!(addr = %listener.local_addr()?, "metrics, /healthz and /readyz serving");
    Ok(tokio::spawn(serve(listener, registry, ready, shutdown)))
}

/// Serve `GET /metrics` from `registry`, `GET /healthz` (200 while the process serves) and
/// `GET /readyz` (200 when `ready`, else 503) on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Mutex<Registry>>,
    ready: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let ready = ready.get();
                async move {
                    if ready {
                        (http::StatusCode::OK, "ready\n")
                    } else {
                        (http::StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
                async move {
                    let mut body = String::new();
                    let encoded = match registry.lock() {
                        Ok(r) => prometheus_client::encoding::text::encode(&mut body, &r).is_ok(),
                        Err(_) => false,
                    };
                    if encoded {
                        (
                            http::StatusCode::OK,
                            [(
                                CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            body,
                        )
                    } else {
                        (
                            http::StatusCode::INTERNAL_SERVER_ERROR,
                            [(CONTENT_TYPE, "text/plain")],
                            "cannot encode metrics".to_owned(),
                        )
                    }
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::convert::Infallible;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tower::{Layer as _, Service as _};

    use super::*;

    #[tokio::test]
    async fn counts_by_method_and_status_and_serves_text() {
        let mut registry = Registry::default();
        let metrics = GrpcMetrics::register(&mut registry);
        let mut svc = metrics.layer(tower::service_fn(|req: http::Request<()>| async move {
            let status = match req.uri().path() {
                "/seccomp.registry.v1.Registry/Publish" => Some("3"),
                "/seccomp.registry.v1.Registry/GetProfile" => None,
                _ => Some("12"),
            };
            let mut response = http::Response::builder();
            if let Some(s) = status {
                response = response.header("grpc-status", s);
            }
            Ok::<_, Infallible>(response.body(()).unwrap())
        }));
        for path in [
            "/seccomp.registry.v1.Registry/GetProfile",
            "/seccomp.registry.v1.Registry/GetProfile",
            "/seccomp.registry.v1.Registry/Publish",
            "/random/garbage",
            "/seccomp.registry.v1.Registry/NoSuchMethod",
        ] {
            let request = http::Request::builder().uri(path).body(()).unwrap();
            svc.call(request).await.unwrap();
        }

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let ready = Readiness::default();
        let server = tokio::spawn(serve(
            listener,
            Arc::new(Mutex::new(registry)),
            ready.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        let get = |path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).await.unwrap();
            text
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        ready.set(true);
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(
            text.contains(r#"grpc_server_requests_total{method="/seccomp.registry.v1.Registry/GetProfile",code="0"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"grpc_server_requests_total{method="/seccomp.registry.v1.Registry/Publish",code="3"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"grpc_server_requests_total{method="unknown",code="12"} 2"#),
            "{text}"
        );
        assert!(!text.contains("garbage"), "unknown paths share one label");
        assert!(text.contains("grpc_server_request_duration_seconds_count"));
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}

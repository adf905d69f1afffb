//! The tower layer in front of every gRPC service: authenticate, authorize, put the
//! [`Principal`] into the request; refuse with a gRPC status, logged and told to the
//! service's [`Refusals`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::http;

use super::authenticator::Authenticator;
use crate::tls::PeerInfo;

/// Told about every refused request (a service records them in its audit log). Called on
/// the request path: it must not block.
pub trait Refusals: Send + Sync + 'static {
    /// `actor` (as far as known) was refused the RPC at `path` with `code`
    /// (`UNAUTHENTICATED` or `PERMISSION_DENIED`) for `reason`.
    fn refused(&self, path: &str, actor: &str, code: &str, reason: &str);
}

/// Refusals are only logged (the layer always logs them).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOnly;

impl Refusals for LogOnly {
    fn refused(&self, _path: &str, _actor: &str, _code: &str, _reason: &str) {}
}

/// The canonical name of a refusal's code.
fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        _ => "REFUSED",
    }
}

/// The tower layer: authenticate, authorize, put the [`Principal`] into the request.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
    refusals: Arc<dyn Refusals>,
}

impl AuthLayer {
    /// The layer over `auth`, telling `refusals` about each refusal.
    pub fn new(auth: Authenticator, refusals: Arc<dyn Refusals>) -> Self {
        AuthLayer {
            auth: Arc::new(auth),
            refusals,
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

/// [`AuthLayer`]'s service.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B, R> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The service that was polled ready goes with this request; a clone stays for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            // No RPC of the system: answered as the router would, before credentials are
            // looked at, and neither logged nor audited (anyone can send any path).
            if super::rule(&path).is_none() {
                return Ok(tonic::Status::unimplemented("no such method").into_http());
            }
            let verdict = layer
                .auth
                .check(req.headers(), req.extensions().get::<PeerInfo>(), &path)
                .await;
            match verdict {
                Ok(principal) => {
                    req.extensions_mut().insert(principal);
                    inner.call(req).await
                }
                Err((actor, status)) => {
                    tracing::warn!(method = %path, %actor, code = ?status.code(), reason = status.message(), "request refused");
                    layer.refusals.refused(
                        &path,
                        &actor,
                        code_name(status.code()),
                        status.message(),
                    );
                    Ok(status.into_http())
                }
            }
        })
    }
}

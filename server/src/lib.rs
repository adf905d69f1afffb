//! `seccomp-server`: the plumbing every seccomp gRPC service shares, and nothing else.
//!
//! A service's `main.rs` uses it to set up what DESIGN section 9 asks of every binary; the
//! service's own library never depends on how it was started.
//!
//! Layout:
//! - [`telemetry`]: `tracing-subscriber` with `RUST_LOG` (an `EnvFilter`, default `info`) and
//!   `--log-format text|json`, writing to standard error;
//! - [`shutdown`]: SIGINT/SIGTERM turned into a [`CancellationToken`](tokio_util::sync::CancellationToken);
//!   a second signal exits at once;
//! - [`grpc`]: adds `grpc.health.v1` and gRPC reflection (over
//!   [`seccomp_proto::FILE_DESCRIPTOR_SET`]) to a tonic router, and maps tonic's
//!   "message too large" to `RESOURCE_EXHAUSTED` as other gRPC implementations report it;
//! - [`metrics`]: a tower layer counting gRPC requests by method and status, with a latency
//!   histogram, served in the Prometheus text format on a separate HTTP port;
//! - [`auth`]: the one layer that authenticates (bearer tokens, client certificates) and
//!   authorizes (one table of every RPC's rule) each request, handing handlers a verified
//!   [`auth::Principal`];
//! - [`security`]: the servers' security flags, and the refusal to serve a non-loopback
//!   address without TLS and authentication unless `--insecure`;
//! - [`client`]: what clients send: TLS for `https://` URLs and a bearer token;
//! - [`tls`]: rustls for servers (certificates reloaded when their files change, client
//!   certificates passed to requests as [`tls::PeerInfo`]) and clients (`https://` URLs);
//! - [`pki`]: a throwaway CA with `rcgen` (`seccompctl dev`, tests);
//! - [`locked`]: opening a database whose lock a dropped handle or an exiting predecessor
//!   still holds (retried for a while);
//! - [`atomic`]: writing a service's own files atomically and durably (temporary file with a
//!   fresh name, fsync, rename, directory fsync), in an open directory or at a path.

pub mod atomic;
pub mod auth;
pub mod client;
pub mod grpc;
pub mod locked;
pub mod metrics;
pub mod pki;
pub mod retention;
pub mod security;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

//! `seccomp-registry`: the gRPC service that validates seccomp profiles and keeps
//! immutable, numbered versions of them in sled.
//!
//! This crate will hold (see `ARCHITECTURE.md` and DESIGN section 3): the storage layer
//! (key layout for `latest`, history and lookup by digest as single lookups), the domain
//! service (publish with compare-and-set, deprecate, audit log) with no tonic in it, one
//! `grpc` module that maps domain errors to `tonic::Status`, and `run(config, listener,
//! shutdown)` used by a thin `main.rs`. Validation itself lives in `seccomp-profile`.

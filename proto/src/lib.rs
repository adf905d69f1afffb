//! The wire contract of the seccomp profile distribution system.
//!
//! Three gRPC services, each in its own versioned protobuf package under
//! `proto/seccomp/<service>/v1/`:
//!
//! - [`registry::v1`]: the `Registry` service, which validates seccomp
//!   profiles and stores them as immutable, numbered versions.
//! - [`distributor::v1`]: the `Distributor` service, which drives rollouts of
//!   profile versions to nodes and reports per-node file state.
//! - [`agent::v1`]: the `AgentSync` service, the xDS-like stream between the
//!   distributor and the agent on every node.
//!
//! The `.proto` files are the source of truth, and their comments document
//! every message and field. A breaking change goes into a new package (`v2`)
//! next to the old one, never into `v1`.
//!
//! `build.rs` compiles the files with `protox` (pure Rust, so no system
//! `protoc` is needed) and generates prost messages plus tonic clients and
//! servers from the resulting descriptor set. That descriptor set is exported
//! as [`FILE_DESCRIPTOR_SET`] so servers can register gRPC reflection.
//! Messages implement [`prost::Name`], so they can be packed into
//! `google.protobuf.Any` (the registry's `ValidationFailure` error details).
//!
//! This crate holds no logic: services convert between these types and their
//! domain types in their own `grpc` modules.

pub mod codec;

/// Registry service: profile validation, versions, diff and audit.
pub mod registry {
    /// Version 1 of the `seccomp.registry.v1` package.
    pub mod v1 {
        tonic::include_proto!("seccomp.registry.v1");
    }
}

/// Distributor service: rollouts, rollbacks, node state and NCI rendering.
pub mod distributor {
    /// Version 1 of the `seccomp.distributor.v1` package.
    // PlanRolloutRequest's oneof holds a whole CreateRolloutRequest or a RollbackRequest;
    // one per call, so their sizes do not matter.
    #[allow(clippy::large_enum_variant)]
    pub mod v1 {
        tonic::include_proto!("seccomp.distributor.v1");
    }
}

/// Agent protocol: the stream between the distributor and node agents.
pub mod agent {
    /// Version 1 of the `seccomp.agent.v1` package.
    pub mod v1 {
        tonic::include_proto!("seccomp.agent.v1");
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of all three packages and the
/// well-known types they import, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_descriptor.bin"));

//! `seccomp-distributor`: turns rollouts (profile version, node selector, priority,
//! strategy) into Shturval NodeConfigItems and per-node file sets, streams those sets to
//! node agents and drives staged rollouts with rollback.
//!
//! This crate will hold (see `ARCHITECTURE.md` and DESIGN sections 4-6): the NodeConfigItem
//! model and renderer, the pure effective-file-set computation (selector matching, priority
//! resolution, revision hash), the rollout state machine, the sinks (node agents, a YAML
//! directory, a Kubernetes cluster in one `k8s` module), and the gRPC services.

//! Compiles the `.proto` files with `protox` (pure Rust, no system `protoc`),
//! writes the descriptor set for gRPC reflection, and generates the prost
//! messages and tonic clients and servers from it.

use std::{env, error::Error, fs, path::PathBuf};

use protox::prost::Message as _;

const PROTO_ROOT: &str = "proto";

const PROTOS: &[&str] = &[
    "proto/seccomp/registry/v1/registry.proto",
    "proto/seccomp/distributor/v1/distributor.proto",
    "proto/seccomp/agent/v1/agent.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    // A directory rerun-if-changed covers files added to it later as well.
    println!("cargo:rerun-if-changed={PROTO_ROOT}");

    // Well-known types (google/protobuf/*.proto) are built into protox.
    let fds = protox::compile(PROTOS, [PROTO_ROOT])?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("seccomp_descriptor.bin"), fds.encode_to_vec())?;

    // Type names let callers pack messages into `google.protobuf.Any`, as the
    // registry does with `ValidationFailure` in error details.
    let mut config = tonic_prost_build::Config::new();
    config
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com")
        // A desired file's bytes are shared by every node's message, not copied per node (the
        // distributor sends the same set to thousands of streams).
        .bytes([".seccomp.agent.v1.DesiredFile.content"]);

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Small first buffers per stream (see `src/codec.rs`).
        .codec_path("crate::codec::SmallBuffers")
        .compile_fds_with_config(fds, config)?;
    Ok(())
}

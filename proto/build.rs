//! Compiles our RocketMQ v2 `.proto` files with the pure-Rust `protox` compiler (no `protoc`
//! needed) and generates prost messages plus tonic client and server code into `OUT_DIR`.
//! The encoded descriptor set is also written there, so tests and gRPC reflection can see
//! exactly what was compiled.

use std::path::PathBuf;

use prost::Message as _;

const PROTO_ROOT: &str = "proto";
const PROTO_FILES: [&str; 2] = [
    "proto/apache/rocketmq/v2/definition.proto",
    "proto/apache/rocketmq/v2/service.proto",
];
/// File name (inside `OUT_DIR`) of the encoded `FileDescriptorSet`.
const DESCRIPTOR_FILE: &str = "rocketmq_v2_descriptor.bin";
/// Meridian's own admin service, compiled on its own so that the RocketMQ descriptor set above
/// holds exactly the RocketMQ protocol.
const ADMIN_PROTO_FILE: &str = "proto/meridian/admin/v1/admin.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protox does not print rerun hints itself; without this, edits to a .proto would not
    // trigger regeneration.
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }

    let fds = protox::compile(PROTO_FILES, [PROTO_ROOT])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join(DESCRIPTOR_FILE), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;

    println!("cargo:rerun-if-changed={ADMIN_PROTO_FILE}");
    let admin = protox::compile([ADMIN_PROTO_FILE], [PROTO_ROOT])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(admin)?;
    Ok(())
}

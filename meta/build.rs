//! Compiles `proto/meta.proto` with protox (pure Rust, no `protoc` needed) and tonic-prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/meta.proto");
    let file_descriptors = protox::compile(["proto/meta.proto"], ["proto"])?;
    tonic_prost_build::compile_fds(file_descriptors)?;
    Ok(())
}

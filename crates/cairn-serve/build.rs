//! Compiles the Open Inference Protocol's gRPC service (`proto/grpc_inference.proto`) with
//! protox, a protobuf compiler in Rust, so the build needs no `protoc` and downloads nothing.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/grpc_inference.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().build_client(false).compile_fds(descriptors)?;
    Ok(())
}

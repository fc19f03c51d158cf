//! The service definition `cairn serve` uses, compiled for a client.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../crates/cairn-serve/proto/grpc_inference.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["../../crates/cairn-serve/proto"])?;
    tonic_prost_build::configure().build_server(false).compile_fds(descriptors)?;
    Ok(())
}

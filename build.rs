//! Compiles the control-plane proto with a vendored protoc, so a fresh machine needs none.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut prost = prost_build::Config::new();
    prost.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_build::configure()
        .type_attribute(".", "#[derive(serde::Serialize)]")
        .file_descriptor_set_path(out.join("dualseal_descriptor.bin"))
        .compile_protos_with_config(prost, &["proto/dualseal/v1/control.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}

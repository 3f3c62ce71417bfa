//! Compiles the control-plane proto with a vendored protoc, so a fresh machine needs none.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts run single-threaded before any code of ours; prost-build reads PROTOC.
    std::env::set_var("PROTOC", protoc);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_build::configure()
        .type_attribute(".", "#[derive(serde::Serialize)]")
        .file_descriptor_set_path(out.join("dualseal_descriptor.bin"))
        .compile_protos(&["proto/dualseal/v1/control.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}

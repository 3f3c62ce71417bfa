//! Compiles the control-plane proto with a vendored protoc, so a fresh machine needs none, and
//! generates proto3's canonical JSON mapping for every message (pbjson): `dualsealctl --json`
//! prints what grpcurl and every other proto3 JSON tool print.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = out.join("dualseal_descriptor.bin");
    let mut prost = prost_build::Config::new();
    prost.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptors)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_with_config(
            prost,
            &[PathBuf::from("proto/dualseal/v1/control.proto")],
            &[PathBuf::from("proto"), protoc_bin_vendored::include_path()?],
        )?;
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptors)?)?
        .preserve_proto_field_names()
        .emit_fields()
        .build(&[".dualseal.v1"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}

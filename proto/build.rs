//! Generates the `sensor.v1` code with protox, a pure-Rust protobuf compiler,
//! so a fresh machine needs no `protoc`.

use std::{env, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/sensor/v1/events.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out.join("sensor_v1_descriptor.bin");
    std::fs::write(&descriptor_path, fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        // Boxed: inline, the context was half of every `Event` (312 of 584
        // bytes), moved whole at each hop between the sensor's stages, where
        // the Linux sensor leaves it empty (it ships a shared context apart).
        .boxed(".sensor.v1.Event.process")
        .compile_fds(fds)?;

    // JSON with the proto field names (snake_case), as `collector query` prints.
    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        // Zero values too (uid 0 is root, not "absent").
        .emit_fields()
        .build(&[".sensor.v1"])?;
    Ok(())
}

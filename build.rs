//! Compiles `proto/deckhand/v1/*.proto` into the `deckhand.v1` module, with a descriptor
//! set for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/deckhand/v1/common.proto",
        "proto/deckhand/v1/kernel.proto",
        "proto/deckhand/v1/agent.proto",
        "proto/deckhand/v1/manager.proto",
        "proto/deckhand/v1/cluster.proto",
    ];
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("deckhand_descriptor.bin"))
        .type_attribute(".", "#[derive(serde::Serialize)]")
        // Ordered maps: a spec encodes to the same bytes every time (idempotent create).
        .btree_map(".")
        // Specs are persisted in the kernel registry and read back.
        .type_attribute(
            ".deckhand.v1.KernelSpec",
            "#[derive(serde::Deserialize)] #[serde(default)]",
        )
        .type_attribute(
            ".deckhand.v1.StageIn",
            "#[derive(serde::Deserialize)] #[serde(default)]",
        )
        .type_attribute(
            ".deckhand.v1.PortSpec",
            "#[derive(serde::Deserialize)] #[serde(default)]",
        )
        .type_attribute(
            ".deckhand.v1.ClusterSpan",
            "#[derive(serde::Deserialize)] #[serde(default)]",
        )
        .type_attribute(
            ".deckhand.v1.SpanPeer",
            "#[derive(serde::Deserialize)] #[serde(default)]",
        )
        .compile_protos(&protos, &["proto"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}

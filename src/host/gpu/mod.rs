//! The GPU inventory: real devices read through NVML ([`nvml`]), loaded dynamically so a
//! host without NVIDIA's library still runs, plus fake GPUs from the cluster config
//! ([`fake`]).

pub mod fake;
pub mod health;
pub mod nvml;

use std::path::Path;

use crate::config::FakeGpu;
use crate::host::GpuInventory;

pub use nvml::NvmlProbe;

/// Reads real and fake GPUs; keeps NVML loaded between calls.
#[derive(Default)]
pub struct GpuProbe {
    nvml: NvmlProbe,
}

impl GpuProbe {
    pub fn new() -> Self {
        Self::default()
    }

    /// The inventory now: NVML devices (from `library`, or the default library name),
    /// then `fakes`, indexed after the real ones.
    pub async fn inventory(&mut self, library: Option<&Path>, fakes: &[FakeGpu]) -> GpuInventory {
        let mut inv = self.nvml.read(library).await;
        fake::append(&mut inv, fakes);
        inv
    }
}

//! The agent's view of itself: host status, GPU inventory and resource slots, collected on
//! every heartbeat and kept for `AgentService.GetInfo`.

use crate::agent::convert;
use crate::config::ClusterConfig;
use crate::host::gpu::health::GpuHealth;
use crate::host::gpu::GpuProbe;
use crate::host::HostSampler;
use crate::host::{GpuInventory, HostStatus};
use crate::kernel::slots::{summary, Amounts, Capacity, Gpu};
use crate::wire::pb::ResourceSlots;

/// One collected status.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub host: HostStatus,
    pub gpus: GpuInventory,
    pub slots: ResourceSlots,
}

/// Collects [`Snapshot`]s; owns the CPU sampler and the loaded NVML.
pub struct StatusCollector {
    host: HostSampler,
    gpus: GpuProbe,
    health: Option<GpuHealth>,
}

impl StatusCollector {
    pub fn new(host: HostSampler) -> Self {
        Self {
            host,
            gpus: GpuProbe::new(),
            health: None,
        }
    }

    /// Bumped when a GPU is marked unhealthy or reset (a heartbeat goes at once).
    pub fn health_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.health.as_ref().map(GpuHealth::subscribe)
    }

    /// Marks the GPUs `health` holds unhealthy in every snapshot.
    pub fn with_health(mut self, health: GpuHealth) -> Self {
        self.health = Some(health);
        self
    }

    pub async fn collect(&mut self, cfg: &ClusterConfig, allocated: Amounts) -> Snapshot {
        let host = self.host.sample();
        let mut gpus = self
            .gpus
            .inventory(cfg.nvml_library.as_deref(), &cfg.fake_gpus)
            .await;
        if let Some(h) = &self.health {
            h.apply(&mut gpus);
        }
        let slots = slots(&host, &gpus, cfg, allocated);
        Snapshot { host, gpus, slots }
    }
}

/// What the host offers kernels, as the supervisor reads it: CPUs, memory, and the GPUs
/// that can be scheduled (a device NVML could not read, or one marked unhealthy, is not one).
pub fn capacity(host: &HostStatus, gpus: &GpuInventory) -> Capacity {
    Capacity {
        cpu_count: host.cpu_count,
        memory_total: host.memory_total_bytes,
        gpus: gpus
            .devices
            .iter()
            .filter(|d| d.error.is_empty() && !d.unhealthy)
            .map(|d| Gpu {
                uuid: d.uuid.clone(),
                real: !d.fake,
            })
            .collect(),
        unhealthy: gpus
            .devices
            .iter()
            .filter(|d| d.unhealthy)
            .map(|d| (d.uuid.clone(), d.health_reason.clone()))
            .collect(),
    }
}

/// Total, reserved, allocated and free slots, from the one slot calculation
/// ([`crate::kernel::slots`]).
pub fn slots(
    host: &HostStatus,
    gpus: &GpuInventory,
    cfg: &ClusterConfig,
    allocated: Amounts,
) -> ResourceSlots {
    convert::slots(summary(&capacity(host, gpus), &cfg.reserved, allocated))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::GpuDevice;

    #[test]
    fn a_broken_gpu_is_not_a_slot() {
        let host = HostStatus {
            cpu_count: 4,
            memory_total_bytes: 8 << 30,
            ..Default::default()
        };
        let gpus = GpuInventory {
            devices: vec![
                GpuDevice::default(),
                GpuDevice {
                    error: "memory: Unknown".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let mut cfg = ClusterConfig::default();
        cfg.reserved.cpu = 1.5;
        cfg.reserved.memory = 16 << 30;
        let s = slots(&host, &gpus, &cfg, Amounts::default());
        let free = s.free.unwrap();
        assert_eq!(free.cpu, 2.5);
        assert_eq!(free.memory_bytes, 0);
        assert_eq!(s.total.unwrap().gpus, 1, "a broken GPU is not schedulable");
        let mut gpus = gpus;
        gpus.devices[0].unhealthy = true;
        let s = slots(&host, &gpus, &cfg, Amounts::default());
        assert_eq!(
            s.total.unwrap().gpus,
            0,
            "an unhealthy GPU is not schedulable"
        );
    }
}

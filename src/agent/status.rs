//! The agent's view of itself: host status, GPU inventory and resource slots, collected on
//! every heartbeat and kept for `AgentService.GetInfo`.

use crate::config::ClusterConfig;
use crate::host::gpu::GpuProbe;
use crate::host::HostSampler;
use crate::rpc::pb::{GpuInventory, HostStatus, ResourceSlots, SlotAmounts};

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
}

impl StatusCollector {
    pub fn new(host: HostSampler) -> Self {
        Self {
            host,
            gpus: GpuProbe::new(),
        }
    }

    pub async fn collect(&mut self, cfg: &ClusterConfig, allocated: &SlotAmounts) -> Snapshot {
        let host = self.host.sample();
        let gpus = self
            .gpus
            .inventory(cfg.nvml_library.as_deref(), &cfg.fake_gpus)
            .await;
        let slots = slots(&host, &gpus, cfg, allocated);
        Snapshot { host, gpus, slots }
    }
}

/// Total, reserved, allocated and free slots. GPUs that NVML could not read are not
/// schedulable and do not count.
pub fn slots(
    host: &HostStatus,
    gpus: &GpuInventory,
    cfg: &ClusterConfig,
    allocated: &SlotAmounts,
) -> ResourceSlots {
    let total = SlotAmounts {
        cpu: f64::from(host.cpu_count),
        memory_bytes: host.memory_total_bytes,
        gpus: gpus.devices.iter().filter(|d| d.error.is_empty()).count() as u32,
    };
    let reserved = SlotAmounts {
        cpu: cfg.reserved.cpu,
        memory_bytes: cfg.reserved.memory,
        gpus: 0,
    };
    let free = SlotAmounts {
        cpu: (total.cpu - reserved.cpu - allocated.cpu).max(0.0),
        memory_bytes: total
            .memory_bytes
            .saturating_sub(reserved.memory_bytes)
            .saturating_sub(allocated.memory_bytes),
        gpus: total.gpus.saturating_sub(allocated.gpus),
    };
    ResourceSlots {
        total: Some(total),
        reserved: Some(reserved),
        allocated: Some(*allocated),
        free: Some(free),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::pb::GpuDevice;

    #[test]
    fn free_slots_subtract_reserved_and_never_go_negative() {
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
        let s = slots(&host, &gpus, &cfg, &SlotAmounts::default());
        let free = s.free.unwrap();
        assert_eq!(free.cpu, 2.5);
        assert_eq!(free.memory_bytes, 0);
        assert_eq!(s.total.unwrap().gpus, 1, "a broken GPU is not schedulable");
    }
}

//! The host's status and GPU inventory on the wire.

use crate::host;
use crate::wire::pb;

impl From<host::HostStatus> for pb::HostStatus {
    fn from(h: host::HostStatus) -> Self {
        Self {
            hostname: h.hostname,
            os: h.os,
            kernel_version: h.kernel_version,
            arch: h.arch,
            cpu_count: h.cpu_count,
            cpu_usage_percent: h.cpu_usage_percent,
            load_avg_1: h.load_avg_1,
            load_avg_5: h.load_avg_5,
            load_avg_15: h.load_avg_15,
            memory_total_bytes: h.memory_total_bytes,
            memory_available_bytes: h.memory_available_bytes,
            scratch_root: h.scratch_root,
            scratch_total_bytes: h.scratch_total_bytes,
            scratch_free_bytes: h.scratch_free_bytes,
            uptime_seconds: h.uptime_seconds,
        }
    }
}

impl From<host::GpuDevice> for pb::GpuDevice {
    fn from(d: host::GpuDevice) -> Self {
        Self {
            index: d.index,
            uuid: d.uuid,
            name: d.name,
            memory_total_bytes: d.memory_total_bytes,
            memory_used_bytes: d.memory_used_bytes,
            gpu_utilization_percent: d.gpu_utilization_percent,
            memory_utilization_percent: d.memory_utilization_percent,
            temperature_celsius: d.temperature_celsius,
            power_draw_milliwatts: d.power_draw_milliwatts,
            power_limit_milliwatts: d.power_limit_milliwatts,
            pci_bus_id: d.pci_bus_id,
            compute_capability: d.compute_capability,
            numa_node: d.numa_node,
            mig_mode: d.mig_mode,
            fake: d.fake,
            error: d.error,
            unhealthy: d.unhealthy,
            health_reason: d.health_reason,
            unhealthy_since_ms: d.unhealthy_since_ms,
        }
    }
}

impl From<host::GpuInventory> for pb::GpuInventory {
    fn from(g: host::GpuInventory) -> Self {
        Self {
            devices: g.devices.into_iter().map(Into::into).collect(),
            driver_version: g.driver_version,
            cuda_version: g.cuda_version,
            nvml_version: g.nvml_version,
            nvml_status: g.nvml_status,
        }
    }
}

//! What the host layer reports, in its own types: the agent converts them to the wire's
//! (`crate::agent::convert`), so nothing below the agent knows the generated messages.

/// The host an agent runs on, as sysinfo and statvfs see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostStatus {
    pub hostname: String,
    pub os: String,
    pub kernel_version: String,
    pub arch: String,
    pub cpu_count: u32,
    /// Whole-host CPU usage, 0..100 (the first sample after start reads 0).
    pub cpu_usage_percent: f32,
    pub load_avg_1: f64,
    pub load_avg_5: f64,
    pub load_avg_15: f64,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub scratch_root: String,
    pub scratch_total_bytes: u64,
    pub scratch_free_bytes: u64,
    pub uptime_seconds: u64,
}

/// One GPU. Real devices come from NVML; fake ones from `config/docker/fake_gpus`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuDevice {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub gpu_utilization_percent: Option<u32>,
    pub memory_utilization_percent: Option<u32>,
    pub temperature_celsius: Option<u32>,
    pub power_draw_milliwatts: Option<u32>,
    pub power_limit_milliwatts: Option<u32>,
    pub pci_bus_id: String,
    /// "8.0" for compute capability 8.0; empty when unknown.
    pub compute_capability: String,
    pub numa_node: Option<i32>,
    /// "enabled", "disabled", "enabled (pending disabled)", or empty when unsupported.
    pub mig_mode: String,
    /// True for devices from `config/docker/fake_gpus`.
    pub fake: bool,
    /// Set when NVML failed for this device; the other fields hold what could be read.
    pub error: String,
    /// Marked unhealthy by an NVML critical event: never given to a new kernel until
    /// `deckhand gpu reset-health`.
    pub unhealthy: bool,
    /// Why: `XID 79 (fallen off the bus)`, `double-bit ECC error`.
    pub health_reason: String,
    /// Unix ms when it was marked unhealthy.
    pub unhealthy_since_ms: i64,
}

/// The GPUs of the host and the NVML library that read them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuInventory {
    pub devices: Vec<GpuDevice>,
    pub driver_version: String,
    pub cuda_version: String,
    pub nvml_version: String,
    /// Why there are no real devices ("NVML library not found: …"), empty when NVML loaded.
    pub nvml_status: String,
}

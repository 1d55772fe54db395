//! Real GPUs through NVML (`nvml-wrapper`), loaded at run time.
//!
//! No library → an empty inventory whose `nvml_status` says why, logged once at info level.
//! One device failing → that device carries an `error`, the others are still read. NVML
//! calls block, so they run on the blocking pool; a panic inside them (a symbol missing from
//! an old driver) is caught and reported like an error.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;

use crate::host::{GpuDevice, GpuInventory};

/// The library NVML is loaded from when none is configured.
pub const DEFAULT_LIBRARY: &str = "libnvidia-ml.so.1";

/// A loaded (or failed) NVML, tied to the library path it came from.
#[derive(Default)]
pub struct NvmlProbe {
    state: Option<Loaded>,
}

struct Loaded {
    library: Option<PathBuf>,
    nvml: Result<Arc<Nvml>, String>,
}

impl NvmlProbe {
    /// Reads every NVML device, loading NVML first if `library` changed since last time.
    pub async fn read(&mut self, library: Option<&Path>) -> GpuInventory {
        let stale = self
            .state
            .as_ref()
            .is_none_or(|s| s.library.as_deref() != library);
        if stale {
            let lib = library.map(Path::to_path_buf);
            let lib2 = lib.clone();
            let nvml = tokio::task::spawn_blocking(move || load(lib2.as_deref()))
                .await
                .unwrap_or_else(|e| Err(format!("loading NVML panicked: {e}")));
            let shown = lib
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| DEFAULT_LIBRARY.into());
            match &nvml {
                Ok(_) => tracing::info!(library = %shown, "NVML loaded"),
                Err(e) => tracing::info!(library = %shown, "no NVML GPUs: {e}"),
            }
            self.state = Some(Loaded { library: lib, nvml });
        }
        let Some(state) = &self.state else {
            return GpuInventory::default();
        };
        match &state.nvml {
            Err(e) => GpuInventory {
                nvml_status: e.clone(),
                ..Default::default()
            },
            Ok(nvml) => {
                let nvml = nvml.clone();
                tokio::task::spawn_blocking(move || read_all(&nvml))
                    .await
                    .unwrap_or_else(|e| GpuInventory {
                        nvml_status: format!("reading NVML panicked: {e}"),
                        ..Default::default()
                    })
            }
        }
    }
}

pub(super) fn load(library: Option<&Path>) -> Result<Arc<Nvml>, String> {
    let path: &OsStr = library.map_or(OsStr::new(DEFAULT_LIBRARY), Path::as_os_str);
    match Nvml::builder().lib_path(path).init() {
        Ok(nvml) => Ok(Arc::new(nvml)),
        Err(NvmlError::LibloadingError(e)) => Err(format!("NVML library not found: {e}")),
        Err(e) => Err(format!("NVML failed to initialise: {e}")),
    }
}

/// Reads the system versions and every device; blocking.
pub fn read_all(nvml: &Nvml) -> GpuInventory {
    let count = match nvml.device_count() {
        Ok(n) => n,
        Err(e) => {
            return GpuInventory {
                nvml_status: format!("cannot count devices: {e}"),
                ..Default::default()
            }
        }
    };
    GpuInventory {
        devices: (0..count).map(|i| read_device(nvml, i)).collect(),
        driver_version: nvml.sys_driver_version().unwrap_or_default(),
        cuda_version: nvml
            .sys_cuda_driver_version()
            .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10))
            .unwrap_or_default(),
        nvml_version: nvml.sys_nvml_version().unwrap_or_default(),
        nvml_status: String::new(),
    }
}

/// Collects per-field failures: NOT_SUPPORTED leaves the field empty, anything else is
/// recorded in the device's error string.
#[derive(Default)]
struct Errors(Vec<String>);

impl Errors {
    fn take<T>(&mut self, field: &str, r: Result<T, NvmlError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(NvmlError::NotSupported) => None,
            Err(e) => {
                self.0.push(format!("{field}: {e}"));
                None
            }
        }
    }
}

fn read_device(nvml: &Nvml, index: u32) -> GpuDevice {
    let mut dev = GpuDevice {
        index,
        ..Default::default()
    };
    let device = match nvml.device_by_index(index) {
        Ok(d) => d,
        Err(e) => {
            dev.error = format!("device handle: {e}");
            return dev;
        }
    };
    let mut errs = Errors::default();
    dev.uuid = errs.take("uuid", device.uuid()).unwrap_or_default();
    dev.name = errs.take("name", device.name()).unwrap_or_default();
    if let Some(mem) = errs.take("memory", device.memory_info()) {
        dev.memory_total_bytes = mem.total;
        dev.memory_used_bytes = mem.used;
    }
    if let Some(u) = errs.take("utilization", device.utilization_rates()) {
        dev.gpu_utilization_percent = Some(u.gpu);
        dev.memory_utilization_percent = Some(u.memory);
    }
    dev.temperature_celsius = errs.take("temperature", device.temperature(TemperatureSensor::Gpu));
    dev.power_draw_milliwatts = errs.take("power draw", device.power_usage());
    dev.power_limit_milliwatts = errs.take("power limit", device.enforced_power_limit());
    if let Some(pci) = errs.take("pci", device.pci_info()) {
        dev.numa_node = numa_node(&pci.bus_id);
        dev.pci_bus_id = pci.bus_id;
    }
    if let Some(cc) = errs.take("compute capability", device.cuda_compute_capability()) {
        dev.compute_capability = format!("{}.{}", cc.major, cc.minor);
    }
    if let Some(m) = errs.take("mig mode", device.mig_mode()) {
        dev.mig_mode = mig_mode_text(m.current, m.pending);
    }
    dev.error = errs.0.join("; ");
    dev
}

fn mig_mode_text(current: u32, pending: u32) -> String {
    let word = |v: u32| if v == 1 { "enabled" } else { "disabled" };
    if current == pending {
        word(current).to_string()
    } else {
        format!("{} (pending {})", word(current), word(pending))
    }
}

/// The NUMA node of a PCI device, from sysfs. NVML writes bus ids with an 8-digit domain
/// (`00000000:3B:00.0`); sysfs uses 4 digits in lower case (`0000:3b:00.0`).
pub fn numa_node(bus_id: &str) -> Option<i32> {
    numa_node_in(Path::new("/sys/bus/pci/devices"), bus_id)
}

fn numa_node_in(root: &Path, bus_id: &str) -> Option<i32> {
    let bus_id = bus_id.to_ascii_lowercase();
    let (domain, rest) = bus_id.split_once(':')?;
    let domain = u32::from_str_radix(domain, 16).ok()?;
    let sysfs = root.join(format!("{domain:04x}:{rest}")).join("numa_node");
    let node: i32 = std::fs::read_to_string(sysfs).ok()?.trim().parse().ok()?;
    (node >= 0).then_some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numa_node_is_read_from_sysfs_with_a_short_domain() {
        let root = tempfile::tempdir().unwrap();
        let dev = root.path().join("0000:3b:00.0");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("numa_node"), "1\n").unwrap();
        assert_eq!(numa_node_in(root.path(), "00000000:3B:00.0"), Some(1));
        std::fs::write(dev.join("numa_node"), "-1\n").unwrap();
        assert_eq!(numa_node_in(root.path(), "00000000:3B:00.0"), None);
        assert_eq!(numa_node_in(root.path(), "garbage"), None);
    }

    #[test]
    fn mig_mode_names_a_pending_change() {
        assert_eq!(mig_mode_text(1, 1), "enabled");
        assert_eq!(mig_mode_text(0, 1), "disabled (pending enabled)");
    }

    #[tokio::test]
    async fn a_missing_library_gives_an_empty_inventory_with_a_reason() {
        let mut probe = NvmlProbe::default();
        let inv = probe
            .read(Some(Path::new("/nonexistent/libnvidia-ml.so.1")))
            .await;
        assert!(inv.devices.is_empty());
        assert!(inv.nvml_status.contains("not found"), "{}", inv.nvml_status);
    }
}

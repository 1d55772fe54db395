//! What the host looks like: CPU, memory, load, uptime and the scratch root's disk, read
//! with sysinfo and statvfs, plus the GPU inventory ([`gpu`]).
//!
//! A [`HostSampler`] keeps the previous CPU sample, so CPU usage is the average since the
//! last call (the first call after start reads 0).

pub mod gpu;
mod types;

pub use types::{GpuDevice, GpuInventory, HostStatus};

use std::path::{Path, PathBuf};

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

/// Samples host status; cheap enough to call on every heartbeat.
pub struct HostSampler {
    sys: System,
    scratch_root: PathBuf,
}

impl HostSampler {
    pub fn new(scratch_root: impl Into<PathBuf>) -> Self {
        let sys = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        Self {
            sys,
            scratch_root: scratch_root.into(),
        }
    }

    pub fn sample(&mut self) -> HostStatus {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        let load = System::load_average();
        let (scratch_total, scratch_free) = disk_space(&self.scratch_root).unwrap_or((0, 0));
        HostStatus {
            hostname: hostname(),
            os: System::long_os_version().unwrap_or_default(),
            kernel_version: System::kernel_version().unwrap_or_default(),
            arch: std::env::consts::ARCH.to_string(),
            cpu_count: self.sys.cpus().len() as u32,
            cpu_usage_percent: self.sys.global_cpu_usage(),
            load_avg_1: load.one,
            load_avg_5: load.five,
            load_avg_15: load.fifteen,
            memory_total_bytes: self.sys.total_memory(),
            memory_available_bytes: self.sys.available_memory(),
            scratch_root: self.scratch_root.display().to_string(),
            scratch_total_bytes: scratch_total,
            scratch_free_bytes: scratch_free,
            uptime_seconds: System::uptime(),
        }
    }
}

/// Total and free bytes of the filesystem holding `path` (free as seen by unprivileged
/// users).
pub fn disk_space(path: &Path) -> Option<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let frsize = st.fragment_size() as u64;
    Some((
        st.blocks() as u64 * frsize,
        st.blocks_available() as u64 * frsize,
    ))
}

/// This host's name, as the kernel reports it.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The kernel's boot id: tells whether two processes ran during one boot.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_reports_memory_and_the_scratch_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut sampler = HostSampler::new(dir.path());
        let s = sampler.sample();
        assert!(s.cpu_count >= 1);
        assert!(s.memory_total_bytes >= s.memory_available_bytes);
        assert!(s.memory_total_bytes > 0);
        assert!(s.scratch_total_bytes >= s.scratch_free_bytes);
        assert!(s.scratch_total_bytes > 0);
    }
}

//! Per-kernel CPU and memory straight from the kernel's cgroup (v1 or v2), found once from
//! `/proc/<pid>/cgroup` of the container's first process. Reading two small files per
//! kernel is what keeps stats for 100 kernels in the low milliseconds, where the Docker
//! stats API takes seconds.

use std::path::{Path, PathBuf};

use crate::runtime::Usage;

/// Where one kernel's counters live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupPaths {
    V2(PathBuf),
    V1 { cpuacct: PathBuf, memory: PathBuf },
}

const ROOT: &str = "/sys/fs/cgroup";

impl CgroupPaths {
    /// Finds the cgroup of `pid`; `None` when the process is gone or the layout unknown.
    pub fn of_pid(pid: u32) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        Self::parse(&text, Path::new(ROOT))
    }

    pub fn parse(text: &str, root: &Path) -> Option<Self> {
        let mut cpuacct = None;
        let mut memory = None;
        let mut unified = None;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let rel = path.trim_start_matches('/');
            if controllers.is_empty() {
                unified = Some(root.join(rel));
            }
            for c in controllers.split(',') {
                match c {
                    "cpuacct" => cpuacct = Some(root.join(controllers).join(rel)),
                    "memory" => memory = Some(root.join(controllers).join(rel)),
                    _ => {}
                }
            }
        }
        match (cpuacct, memory, unified) {
            (Some(cpuacct), Some(memory), _) => Some(Self::V1 { cpuacct, memory }),
            (_, _, Some(u)) => Some(Self::V2(u)),
            _ => None,
        }
    }

    /// (cumulative CPU ns, memory bytes in use), or `None` once the cgroup is gone.
    pub fn read(&self) -> Option<(u64, u64)> {
        let num =
            |p: PathBuf| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
        match self {
            Self::V1 { cpuacct, memory } => Some((
                num(cpuacct.join("cpuacct.usage"))?,
                num(memory.join("memory.usage_in_bytes"))?,
            )),
            Self::V2(dir) => {
                let stat = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
                let usec: u64 = stat
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))?
                    .trim()
                    .parse()
                    .ok()?;
                Some((usec * 1000, num(dir.join("memory.current"))?))
            }
        }
    }
}

/// The summed usage of a kernel's containers (a cluster kernel has several), `None` when
/// none of their cgroups can be read.
pub fn usage(paths: &[CgroupPaths]) -> Option<Usage> {
    let mut total: Option<Usage> = None;
    for (cpu_ns, memory_bytes) in paths.iter().filter_map(CgroupPaths::read) {
        let t = total.get_or_insert(Usage {
            cpu_ns: 0,
            memory_bytes: 0,
        });
        t.cpu_ns += cpu_ns;
        t.memory_bytes += memory_bytes;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_layouts_are_recognised() {
        let v1 = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n";
        assert_eq!(
            CgroupPaths::parse(v1, Path::new("/sys/fs/cgroup")),
            Some(CgroupPaths::V1 {
                cpuacct: "/sys/fs/cgroup/cpu,cpuacct/docker/abc".into(),
                memory: "/sys/fs/cgroup/memory/docker/abc".into(),
            })
        );
        let v2 = "0::/system.slice/docker-abc.scope\n";
        assert_eq!(
            CgroupPaths::parse(v2, Path::new("/sys/fs/cgroup")),
            Some(CgroupPaths::V2(
                "/sys/fs/cgroup/system.slice/docker-abc.scope".into()
            ))
        );
    }

    #[test]
    fn counters_are_read_from_the_files() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("cpu.stat"),
            "usage_usec 1500\nuser_usec 1000\n",
        )
        .unwrap();
        std::fs::write(t.path().join("memory.current"), "4096\n").unwrap();
        assert_eq!(
            CgroupPaths::V2(t.path().into()).read(),
            Some((1_500_000, 4096))
        );
    }
}

//! Slots: what this agent can give kernels (CPU, memory and GPUs of the host, less what the
//! cluster config reserves), what its kernels hold, and the choice of slots, GPUs and host
//! ports for a new kernel. This is the one slot calculation: the supervisor allocates with
//! it, and heartbeats report its [`summary`].

use std::collections::HashSet;

use super::error::KernelError;
use super::record::{HostPort, Record, Slots};
use crate::config::cluster::Reserved;
use crate::config::schema::show_bytes;
use crate::config::ClusterConfig;
use crate::spec::{GpuRequest, Spec, SpecError};

/// A GPU kernels can be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    pub uuid: String,
    /// An NVML device (given through a device request); false for `docker/fake_gpus`.
    pub real: bool,
}

/// What the host has: the supervisor's view of the latest host sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Capacity {
    pub cpu_count: u32,
    pub memory_total: u64,
    /// Schedulable GPUs (a device NVML could not read is not one).
    pub gpus: Vec<Gpu>,
    /// GPUs marked unhealthy (not in `gpus`), by UUID, with why: asked for by UUID they
    /// are refused naming the reason.
    pub unhealthy: std::collections::BTreeMap<String, String>,
}

/// Amounts of the schedulable resources.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Amounts {
    pub cpu: f64,
    pub memory: u64,
    pub gpus: u32,
}

/// Total, reserved, allocated and free slots, as heartbeats report them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub total: Amounts,
    pub reserved: Amounts,
    pub allocated: Amounts,
    /// total − reserved − allocated, never negative.
    pub free: Amounts,
}

/// What a new kernel is given.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub slots: Slots,
    pub ports: Vec<HostPort>,
    pub real_gpus: bool,
}

/// The slots of `capacity`, with `reserved` kept back and `allocated` held by kernels.
pub fn summary(capacity: &Capacity, reserved: &Reserved, allocated: Amounts) -> Summary {
    let total = Amounts {
        cpu: f64::from(capacity.cpu_count),
        memory: capacity.memory_total,
        gpus: capacity.gpus.len() as u32,
    };
    let reserved = Amounts {
        cpu: reserved.cpu,
        memory: reserved.memory,
        gpus: 0,
    };
    let free = Amounts {
        cpu: (total.cpu - reserved.cpu - allocated.cpu).max(0.0),
        memory: total
            .memory
            .saturating_sub(reserved.memory)
            .saturating_sub(allocated.memory),
        gpus: total.gpus.saturating_sub(allocated.gpus),
    };
    Summary {
        total,
        reserved,
        allocated,
        free,
    }
}

/// What `held` (live kernels' records) hold of this host's slots.
pub fn held<'a>(held: impl Iterator<Item = &'a Record>) -> Amounts {
    let mut a = Amounts::default();
    for s in held.filter_map(|r| r.slots.as_ref()) {
        a.cpu += s.cpu;
        a.memory += s.memory;
        a.gpus += s.gpus.len() as u32;
    }
    a
}

/// What a new kernel needs besides its own host slots: whether it takes this host's CPU,
/// memory and GPUs (a local runtime) and whether it may bind host ports.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    pub local_slots: bool,
    pub host_ports: bool,
}

/// Chooses slots, GPUs and host ports for `spec` from what `records` leave free.
pub fn allocate<'a>(
    capacity: &Capacity,
    cfg: &ClusterConfig,
    records: impl Iterator<Item = &'a Record> + Clone,
    spec: &Spec,
    needs: Needs,
) -> Result<Allocation, KernelError> {
    let memory = spec.memory.unwrap_or(0);
    if !needs.local_slots {
        // Remote: nothing of this host is taken; the runtime bounds its own capacity.
        return Ok(Allocation {
            slots: Slots {
                cpu: 0.0,
                memory: 0,
                gpus: Vec::new(),
            },
            ports: Vec::new(),
            real_gpus: false,
        });
    }
    let s = summary(capacity, &cfg.reserved, held(records.clone()));
    let cpu_total = (s.total.cpu - s.reserved.cpu).max(0.0);
    let mem_total = s.total.memory.saturating_sub(s.reserved.memory);
    // A cluster kernel's instances get their slots together or not at all.
    let n = spec.instances();
    let each = |what: String| {
        if n > 1 {
            format!("{what} × {n} instances")
        } else {
            what
        }
    };
    let cpu = spec.cpus * f64::from(n);
    let memory = memory * u64::from(n);
    if cpu > s.free.cpu + 1e-9 {
        return Err(KernelError::Exhausted(format!(
            "cpu: {cpu} requested{}, {} of {cpu_total} free on this agent",
            if n > 1 {
                format!(" ({})", each(spec.cpus.to_string()))
            } else {
                String::new()
            },
            s.free.cpu
        )));
    }
    if memory > s.free.memory {
        return Err(KernelError::Exhausted(format!(
            "memory: {} requested{}, {} of {} free on this agent",
            show_bytes(memory),
            if n > 1 {
                format!(" ({})", each(show_bytes(memory / u64::from(n))))
            } else {
                String::new()
            },
            show_bytes(s.free.memory),
            show_bytes(mem_total)
        )));
    }
    let gpus_used: HashSet<&str> = records
        .clone()
        .filter_map(|r| r.slots.as_ref())
        .flat_map(|s| s.gpus.iter().map(String::as_str))
        .collect();
    let asked = match (&spec.gpus, n) {
        (GpuRequest::Count(k), n) if n > 1 => GpuRequest::Count(k * n),
        (other, _) => other.clone(),
    };
    if let GpuRequest::Ids(ids) = &asked {
        if let Some((id, why)) = ids
            .iter()
            .find_map(|id| capacity.unhealthy.get(id).map(|w| (id, w)))
        {
            return Err(KernelError::WrongState(format!(
                "gpus: `{id}` is unhealthy ({why}); it is given to no kernel until `deckhand gpu reset-health`"
            )));
        }
    }
    let chosen = choose_gpus(&capacity.gpus, &gpus_used, &asked).map_err(|e| match (e, n) {
        (KernelError::Exhausted(m), n) if n > 1 => {
            KernelError::Exhausted(format!("{m} (the gpus of {n} instances together)"))
        }
        (e, _) => e,
    })?;
    let real_gpus = !chosen.is_empty() && chosen.iter().all(|g| g.real);
    let ports = if needs.host_ports {
        choose_ports(cfg, records, spec)?
    } else {
        Vec::new()
    };
    Ok(Allocation {
        slots: Slots {
            cpu,
            memory,
            gpus: chosen.into_iter().map(|g| g.uuid.clone()).collect(),
        },
        ports,
        real_gpus,
    })
}

fn choose_gpus<'a>(
    gpus: &'a [Gpu],
    used: &HashSet<&str>,
    asked: &GpuRequest,
) -> Result<Vec<&'a Gpu>, KernelError> {
    let free: Vec<&Gpu> = gpus
        .iter()
        .filter(|g| !used.contains(g.uuid.as_str()))
        .collect();
    Ok(match asked {
        GpuRequest::None => Vec::new(),
        GpuRequest::All => {
            if gpus.is_empty() {
                return Err(KernelError::Exhausted(
                    "gpus: `all` requested, this agent has no GPUs".into(),
                ));
            }
            if free.len() < gpus.len() {
                return Err(KernelError::Exhausted(format!(
                    "gpus: `all` requested, {} of {} are in use",
                    gpus.len() - free.len(),
                    gpus.len()
                )));
            }
            free
        }
        GpuRequest::Count(n) => {
            let n = *n as usize;
            if n > gpus.len() {
                return Err(KernelError::Exhausted(format!(
                    "gpus: {n} requested, this agent has {}",
                    gpus.len()
                )));
            }
            if n > free.len() {
                return Err(KernelError::Exhausted(format!(
                    "gpus: {n} requested, {} of {} free",
                    free.len(),
                    gpus.len()
                )));
            }
            free.into_iter().take(n).collect()
        }
        GpuRequest::Ids(ids) => {
            let mut out = Vec::new();
            for id in ids {
                let Some(g) = gpus.iter().find(|g| &g.uuid == id) else {
                    return Err(SpecError::invalid(
                        "gpus",
                        format!("`{id}` is not a GPU of this agent"),
                    )
                    .into());
                };
                if used.contains(id.as_str()) {
                    return Err(KernelError::Exhausted(format!(
                        "gpus: `{id}` is in use by another kernel"
                    )));
                }
                out.push(g);
            }
            out
        }
    })
}

/// Host ports from `container/port_range`: the ones asked for by number, free on the host
/// and among the kernels; the others chosen from what is left.
fn choose_ports<'a>(
    cfg: &ClusterConfig,
    records: impl Iterator<Item = &'a Record>,
    spec: &Spec,
) -> Result<Vec<HostPort>, KernelError> {
    let held_by_kernels: HashSet<u16> = records
        .flat_map(|r| r.ports.iter().map(|p| p.host))
        .collect();
    let mut used = held_by_kernels.clone();
    // Ports asked for by number first, so a chosen one never takes them.
    used.extend(spec.ports.iter().map(|p| p.host).filter(|h| *h != 0));
    let (lo, hi) = cfg.kernel.port_range;
    let mut next = lo;
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let host = if p.host != 0 {
            let taken_by_kernel = held_by_kernels.contains(&p.host);
            if taken_by_kernel || !port_bindable(&p.host_ip, p.host, &p.protocol) {
                return Err(KernelError::Exhausted(format!(
                    "ports[{i}].host_port: {}/{} is in use on this host{}",
                    p.host,
                    p.protocol,
                    if taken_by_kernel {
                        " (by another kernel)"
                    } else {
                        ""
                    }
                )));
            }
            p.host
        } else {
            loop {
                if next > hi || next == 0 {
                    return Err(KernelError::Exhausted(format!(
                        "ports: no free host port left in config/container/port_range {lo}-{hi}"
                    )));
                }
                let candidate = next;
                next = next.wrapping_add(1);
                if !used.contains(&candidate) && port_bindable(&p.host_ip, candidate, &p.protocol) {
                    break candidate;
                }
            }
        };
        used.insert(host);
        ports.push(HostPort {
            container: p.container,
            host,
            protocol: p.protocol.clone(),
            host_ip: p.host_ip.clone(),
        });
    }
    // An ssh profile kernel: one more port, for the agent's SSH server.
    if spec.profile.as_ref().is_some_and(|p| !p.ssh_key.is_empty()) {
        let host = loop {
            if next > hi || next == 0 {
                return Err(KernelError::Exhausted(format!(
                    "ssh: no free host port left in config/container/port_range {lo}-{hi}"
                )));
            }
            let candidate = next;
            next = next.wrapping_add(1);
            if !used.contains(&candidate) && port_bindable("", candidate, "tcp") {
                break candidate;
            }
        };
        ports.push(HostPort {
            container: 22,
            host,
            protocol: crate::kernel::record::SSH_PROTOCOL.into(),
            host_ip: String::new(),
        });
    }
    Ok(ports)
}

/// Whether `port` can be bound on `ip` (every address when empty) right now.
fn port_bindable(ip: &str, port: u16, protocol: &str) -> bool {
    let ip: std::net::IpAddr = ip
        .parse()
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    match protocol {
        "udp" => std::net::UdpSocket::bind((ip, port)).is_ok(),
        _ => std::net::TcpListener::bind((ip, port)).is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_slots_subtract_reserved_and_never_go_negative() {
        let cap = Capacity {
            cpu_count: 4,
            memory_total: 8 << 30,
            gpus: vec![Gpu {
                uuid: "GPU-1".into(),
                real: false,
            }],
            ..Default::default()
        };
        let reserved = Reserved {
            cpu: 1.5,
            memory: 16 << 30,
            ..Default::default()
        };
        let s = summary(&cap, &reserved, Amounts::default());
        assert_eq!(s.free.cpu, 2.5);
        assert_eq!(s.free.memory, 0);
        assert_eq!(s.total.gpus, 1);
    }
}

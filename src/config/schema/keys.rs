//! The key table: every known setting with its pattern, kind, default and meaning.

use super::*;

/// One known setting.
#[derive(Debug)]
pub struct KeySpec {
    pub pattern: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The known settings. Later features add their keys here.
pub static KEYS: &[KeySpec] = &[
    KeySpec {
        pattern: "agent/heartbeat_interval",
        kind: Kind::Duration {
            min: Duration::from_millis(100),
            max: secs(3600),
        },
        help: "how often agents report to the manager (default 5s); also sent at once on change",
    },
    KeySpec {
        pattern: "agent/lease_ttl",
        kind: Kind::Duration {
            min: secs(2),
            max: secs(3600),
        },
        help: "TTL of an agent's etcd registration lease (default 10s); applies to the next lease",
    },
    KeySpec {
        pattern: "agent/region",
        kind: Kind::Text,
        help: "region reported in the registration and heartbeats",
    },
    KeySpec {
        pattern: "agent/scaling_group",
        kind: Kind::Text,
        help: "scaling group reported in the registration and heartbeats (default `default`)",
    },
    KeySpec {
        pattern: "resource/reserved_cpu",
        kind: Kind::Float {
            min: 0.0,
            max: 4096.0,
        },
        help: "CPU cores kept back from kernels (default 0)",
    },
    KeySpec {
        pattern: "resource/reserved_memory",
        kind: Kind::Bytes,
        help: "memory kept back from kernels, e.g. `1GiB` (default 0)",
    },
    KeySpec {
        pattern: "resource/reserved_disk",
        kind: Kind::Bytes,
        help: "scratch disk kept back from kernels, e.g. `10GiB` (default 0)",
    },
    KeySpec {
        pattern: "gpu/nvml_library",
        kind: Kind::AbsPath,
        help: "path of the NVML library to load (default: libnvidia-ml.so.1 from the loader path)",
    },
    KeySpec {
        pattern: "docker/fake_gpus/*/id",
        kind: Kind::GpuId,
        help: "UUID of a fake GPU, `GPU-<uuid>` or `<uuid>`",
    },
    KeySpec {
        pattern: "docker/fake_gpus/*/name",
        kind: Kind::Text,
        help: "model name of a fake GPU",
    },
    KeySpec {
        pattern: "docker/fake_gpus/*/ram_total",
        kind: Kind::Bytes,
        help: "memory of a fake GPU, e.g. `16GiB`",
    },
    KeySpec {
        pattern: "docker/registries/*/url",
        kind: Kind::RegistryUrl,
        help: "registry address, `host[:port]`; images on it are pulled with these credentials",
    },
    KeySpec {
        pattern: "docker/registries/*/username",
        kind: Kind::Text,
        help: "registry user name",
    },
    KeySpec {
        pattern: "docker/registries/*/password",
        kind: Kind::Secret,
        help: "registry password (never shown: `config get` prints `***`)",
    },
    KeySpec {
        pattern: "docker/cache_usage",
        kind: Kind::Choice(&CACHE_USAGES),
        help: "cache_first | remote_first (default) | require_pull; a kernel spec may override it",
    },
    KeySpec {
        pattern: "docker/pull_timeout",
        kind: Kind::Duration {
            min: secs(1),
            max: secs(24 * 3600),
        },
        help: "longest an image pull may take (default 30m)",
    },
    KeySpec {
        pattern: "docker/pull_inactivity_timeout",
        kind: Kind::Duration {
            min: secs(1),
            max: secs(3600),
        },
        help: "a pull with no progress for this long fails (default 2m)",
    },
    KeySpec {
        pattern: "docker/image_gc_after",
        kind: Kind::Duration {
            min: secs(1),
            max: secs(365 * 24 * 3600),
        },
        help: "remove images no kernel used for this long, oldest first (default off)",
    },
    KeySpec {
        pattern: "docker/volumes/*/src",
        kind: Kind::AbsPath,
        help: "host directory of a volume bind-mounted into matching kernels",
    },
    KeySpec {
        pattern: "docker/volumes/*/dest",
        kind: Kind::ContainerPath,
        help: "where the volume appears in the container (not over /home/work or /home/config)",
    },
    KeySpec {
        pattern: "docker/volumes/*/mode",
        kind: Kind::Choice(&["ro", "rw"]),
        help: "ro | rw (default rw)",
    },
    KeySpec {
        pattern: "docker/volumes/*/on",
        kind: Kind::Glob,
        help: "shell wildcard on the kernel's slug (`ml_*`); absent = every kernel",
    },
    KeySpec {
        pattern: "docker/network",
        kind: Kind::DockerName,
        help: "Docker network kernels join (default: the engine's bridge)",
    },
    KeySpec {
        pattern: "docker/dns",
        kind: Kind::IpList,
        help: "DNS servers set on every kernel, comma-separated",
    },
    KeySpec {
        pattern: "docker/shared_process_volume",
        kind: Kind::Bool,
        help: "kernels of one process_id share a Docker volume for process data (default false: a host dir under the scratch root)",
    },
    KeySpec {
        pattern: "docker/process_data_dest",
        kind: Kind::ContainerPath,
        help: "where process data appears in kernels (default /data)",
    },
    KeySpec {
        pattern: "gpu/unhealthy_policy",
        kind: Kind::Choice(&["keep", "stop"]),
        help: "a kernel whose GPU NVML marks unhealthy: keep it running (default; it gets an event) or stop it",
    },
    KeySpec {
        pattern: "agent/on_shutdown",
        kind: Kind::Choice(&["keep", "stop"]),
        help: "on SIGTERM: keep kernels running (default) or stop them (grace period) first",
    },
    KeySpec {
        pattern: "agent/kernel_creation_concurrency",
        kind: Kind::Int { min: 1, max: 256 },
        help: "kernels created at once (default 4); more requests queue",
    },
    KeySpec {
        pattern: "container/kernel_uid",
        kind: Kind::Int {
            min: 0,
            max: 2_147_483_647,
        },
        help: "uid kernels run as and own their scratch home with (default 1000)",
    },
    KeySpec {
        pattern: "container/kernel_gid",
        kind: Kind::Int {
            min: 0,
            max: 2_147_483_647,
        },
        help: "gid kernels run as and own their scratch home with (default 1000)",
    },
    KeySpec {
        pattern: "container/port_range",
        kind: Kind::PortRange,
        help: "host ports given to kernels' exposed ports, `low-high` (default 30000-31000)",
    },
    KeySpec {
        pattern: "container/stop_grace_period",
        kind: Kind::Duration {
            min: Duration::ZERO,
            max: secs(3600),
        },
        help: "SIGTERM → SIGKILL delay of `stop` when the kernel sets none (default 10s)",
    },
    KeySpec {
        pattern: "container/shutdown_grace",
        kind: Kind::Duration {
            min: Duration::ZERO,
            max: secs(3600),
        },
        help: "how long a profile kernel's DOCKER_SHUTDOWN_CMD may take before the kernel is stopped (default 30s)",
    },
    KeySpec {
        pattern: "container/keep_scratch",
        kind: Kind::Bool,
        help: "keep a kernel's scratch dir when it is removed (default false)",
    },
    KeySpec {
        pattern: "container/stage_in_dirs",
        kind: Kind::PathList,
        help: "host directories stage-in files and bind mounts may come from (default none)",
    },
    KeySpec {
        pattern: "security/allow_privileged",
        kind: Kind::Bool,
        help: "allow kernels with `privileged` (default false)",
    },
    KeySpec {
        pattern: "security/allow_host_namespaces",
        kind: Kind::Bool,
        help: "allow kernels with host network, ipc, pid or uts namespaces (default false)",
    },
    KeySpec {
        pattern: "agent/default_runtime",
        kind: Kind::Choice(&["docker", "vastai"]),
        help: "where kernels run when `run` names no runtime: docker (default) or vastai",
    },
    KeySpec {
        pattern: "security/allow_docker_socket",
        kind: Kind::Bool,
        help: "allow stage-in mounts that expose the Docker socket (default false)",
    },
];

/// The values of `docker/cache_usage` (and a kernel spec's `cache_usage`).
pub const CACHE_USAGES: [&str; 3] = ["cache_first", "remote_first", "require_pull"];

/// Every known setting: the core keys, the Vast.ai runtime's, profiles and storage.
pub fn all_keys() -> impl Iterator<Item = &'static KeySpec> {
    KEYS.iter()
        .chain(super::super::vast::KEYS.iter())
        .chain(super::super::profiles::KEYS.iter())
}

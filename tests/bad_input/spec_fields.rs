//! Malformed kernel specs: image, slots, env, stage-in, paths, durations, sizes, ulimits.

use super::*;

pub(super) fn cases(g: &Given) -> Vec<Case<'_>> {
    vec![
        (
            "empty image",
            spec(|s| s.image.clear()),
            Code::InvalidArgument,
            "image",
        ),
        (
            "upper-case repository",
            spec(|s| s.image = "Busy/Box".into()),
            Code::InvalidArgument,
            "image",
        ),
        (
            "space in image",
            spec(|s| s.image = "busy box".into()),
            Code::InvalidArgument,
            "image",
        ),
        (
            "two tags",
            spec(|s| s.image = "busybox:1:2".into()),
            Code::InvalidArgument,
            "image",
        ),
        (
            "negative cpus",
            spec(|s| s.cpus = -1.0),
            Code::InvalidArgument,
            "cpus",
        ),
        (
            "absurd cpus",
            spec(|s| s.cpus = 1e9),
            Code::InvalidArgument,
            "cpus",
        ),
        (
            "NaN cpus",
            spec(|s| s.cpus = f64::NAN),
            Code::InvalidArgument,
            "cpus",
        ),
        (
            "negative memory",
            spec(|s| s.memory = "-5MiB".into()),
            Code::InvalidArgument,
            "memory",
        ),
        (
            "memory below Docker's minimum",
            spec(|s| s.memory = "1KiB".into()),
            Code::InvalidArgument,
            "memory",
        ),
        (
            "absurd memory",
            spec(|s| s.memory = "64PiB".into()),
            Code::InvalidArgument,
            "memory",
        ),
        (
            "more memory than the host",
            spec(|s| s.memory = "1TiB".into()),
            Code::ResourceExhausted,
            "memory",
        ),
        (
            "more GPUs than exist",
            spec(|s| s.gpus = "4".into()),
            Code::ResourceExhausted,
            "gpus",
        ),
        (
            "unknown GPU UUID",
            spec(|s| s.gpus = "GPU-00000000-0000-0000-0000-000000000000".into()),
            Code::InvalidArgument,
            "gpus",
        ),
        (
            "GPU count not a number",
            spec(|s| s.gpus = "many".into()),
            Code::InvalidArgument,
            "gpus",
        ),
        (
            "env name with =",
            spec(|s| {
                s.env.insert("A=B".into(), "1".into());
            }),
            Code::InvalidArgument,
            "env[\"A=B\"]",
        ),
        (
            "env name with NUL",
            spec(|s| {
                s.env.insert("A\0B".into(), "1".into());
            }),
            Code::InvalidArgument,
            "env[",
        ),
        (
            "oversize env",
            spec(|s| {
                s.env.insert("BIG".into(), g.big.clone());
            }),
            Code::InvalidArgument,
            "env",
        ),
        (
            "oversize args",
            spec(|s| s.command = vec![g.big.clone()]),
            Code::InvalidArgument,
            "command",
        ),
        (
            "NUL in an argument",
            spec(|s| s.command = vec!["a\0b".into()]),
            Code::InvalidArgument,
            "command[0]",
        ),
        (
            "stage-in traversal",
            spec(|s| {
                s.stage_in = vec![StageIn {
                    host_path: "/tmp/../etc".into(),
                    container_path: "/x".into(),
                    read_only: true,
                }]
            }),
            Code::InvalidArgument,
            "stage_in[0].host_path",
        ),
        (
            "stage-in outside allowed dirs",
            spec(|s| {
                s.stage_in = vec![StageIn {
                    host_path: "/etc".into(),
                    container_path: "/x".into(),
                    read_only: true,
                }]
            }),
            Code::FailedPrecondition,
            "stage_in[0].host_path",
        ),
        (
            "the Docker socket",
            spec(|s| {
                s.stage_in = vec![StageIn {
                    host_path: "/var/run/docker.sock".into(),
                    container_path: "/x".into(),
                    read_only: true,
                }]
            }),
            Code::FailedPrecondition,
            "allow_docker_socket",
        ),
        (
            "a dir holding the Docker socket",
            spec(|s| {
                s.stage_in = vec![StageIn {
                    host_path: "/var/run".into(),
                    container_path: "/x".into(),
                    read_only: true,
                }]
            }),
            Code::FailedPrecondition,
            "allow_docker_socket",
        ),
        (
            "relative stage-in",
            spec(|s| {
                s.stage_in = vec![StageIn {
                    host_path: "etc".into(),
                    container_path: "/x".into(),
                    read_only: true,
                }]
            }),
            Code::InvalidArgument,
            "stage_in[0].host_path",
        ),
        (
            "output path traversal",
            spec(|s| s.output_path = "../../escape".into()),
            Code::InvalidArgument,
            "output_path",
        ),
        (
            "relative working dir",
            spec(|s| s.working_dir = "relative".into()),
            Code::InvalidArgument,
            "working_dir",
        ),
        (
            "bad duration",
            spec(|s| s.stop_grace_period = "soon".into()),
            Code::InvalidArgument,
            "stop_grace_period",
        ),
        (
            "absurd duration",
            spec(|s| s.stop_grace_period = "5h".into()),
            Code::InvalidArgument,
            "stop_grace_period",
        ),
        (
            "restart attempts negative",
            spec(|s| s.restart_policy = "on-failure:-1".into()),
            Code::InvalidArgument,
            "restart_policy",
        ),
        (
            "restart attempts not a number",
            spec(|s| s.restart_policy = "on-failure:three".into()),
            Code::InvalidArgument,
            "restart_policy",
        ),
        (
            "unknown restart policy",
            spec(|s| s.restart_policy = "sometimes".into()),
            Code::InvalidArgument,
            "restart_policy",
        ),
        (
            "bad restart delay",
            spec(|s| {
                s.restart_policy = "on-failure:2".into();
                s.restart_delay = "5 parsecs".into();
            }),
            Code::InvalidArgument,
            "restart_delay",
        ),
        (
            "restart delay without on-failure",
            spec(|s| {
                s.restart_policy = "always".into();
                s.restart_delay = "5s".into();
            }),
            Code::InvalidArgument,
            "restart_delay",
        ),
        (
            "bad size",
            spec(|s| s.shm_size = "lots".into()),
            Code::InvalidArgument,
            "shm_size",
        ),
        (
            "bad ulimit",
            spec(|s| s.ulimits = "nofile=abc".into()),
            Code::InvalidArgument,
            "ulimits",
        ),
        (
            "kernel id not a UUID",
            spec(|s| s.kernel_id = "../../etc".into()),
            Code::InvalidArgument,
            "kernel_id",
        ),
    ]
}

//! Ports, input files, privileges, arrays, job control and file transfers.

use super::*;

pub(super) fn cases(g: &Given) -> Vec<Case<'_>> {
    vec![
        (
            "port out of range",
            spec(|s| {
                s.ports = vec![PortSpec {
                    container_port: 70000,
                    protocol: "tcp".into(),
                    ..Default::default()
                }]
            }),
            Code::InvalidArgument,
            "ports[0].container_port",
        ),
        (
            "host port outside container/port_range",
            spec(|s| {
                s.ports = vec![PortSpec {
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_port: 8080,
                    ..Default::default()
                }]
            }),
            Code::InvalidArgument,
            "ports[0].host_port: 8080 is outside config/container/port_range",
        ),
        (
            "host port another kernel holds",
            spec(|s| {
                s.ports = vec![PortSpec {
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_port: g.held_port,
                    ..Default::default()
                }]
            }),
            Code::ResourceExhausted,
            &g.held_port_said,
        ),
        (
            "host address not of this host",
            spec(|s| {
                s.ports = vec![PortSpec {
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_ip: "192.0.2.7".into(),
                    ..Default::default()
                }]
            }),
            Code::InvalidArgument,
            "ports[0].host_ip: 192.0.2.7 is not an address of this host",
        ),
        (
            "missing input file",
            spec(|s| s.input_path = "/var/run/deckhand-no-such-input.txt".into()),
            Code::InvalidArgument,
            "input_path: `/var/run/deckhand-no-such-input.txt`: No such file",
        ),
        (
            "input file outside stage_in_dirs",
            spec(|s| s.input_path = "/etc/hostname".into()),
            Code::FailedPrecondition,
            "input_path: `/etc/hostname` is outside the allowed directories; list its directory in config/container/stage_in_dirs",
        ),
        (
            "relative input file on a kernel that is not held",
            spec(|s| s.input_path = "in.txt".into()),
            Code::InvalidArgument,
            "input_path: `in.txt` is relative to the kernel's work dir",
        ),
        (
            "unknown protocol",
            spec(|s| {
                s.ports = vec![PortSpec {
                    container_port: 80,
                    protocol: "sctp".into(),
                    ..Default::default()
                }]
            }),
            Code::InvalidArgument,
            "ports[0].protocol",
        ),
        (
            "privileged not allowed",
            spec(|s| s.privileged = true),
            Code::FailedPrecondition,
            "privileged",
        ),
        (
            "host network not allowed",
            spec(|s| s.network_mode = "host".into()),
            Code::FailedPrecondition,
            "network_mode",
        ),
        (
            "unknown cache policy",
            spec(|s| s.cache_usage = "sometimes".into()),
            Code::InvalidArgument,
            "cache_usage",
        ),
        (
            "process id traversal",
            spec(|s| s.process_id = "../x".into()),
            Code::InvalidArgument,
            "process_id",
        ),
        (
            "bad hostname",
            spec(|s| s.hostname = "-bad".into()),
            Code::InvalidArgument,
            "hostname",
        ),
        (
            "reserved label",
            spec(|s| {
                s.labels.insert("io.deckhand.kernel-id".into(), "x".into());
            }),
            Code::InvalidArgument,
            "labels[io.deckhand.kernel-id]",
        ),
        (
            "array from 0",
            Op::Create(
                Box::new(base(&new_id())),
                Some(ArraySpec {
                    begin: 0,
                    end: 3,
                    step: 1,
                    max_parallel: 0,
                }),
            ),
            Code::InvalidArgument,
            "array.begin",
        ),
        (
            "array end before begin",
            Op::Create(
                Box::new(base(&new_id())),
                Some(ArraySpec {
                    begin: 5,
                    end: 3,
                    step: 1,
                    max_parallel: 0,
                }),
            ),
            Code::InvalidArgument,
            "array.end",
        ),
        (
            "same id, different spec",
            Op::Create(
                Box::new({
                    let mut s = g.r.clone();
                    s.cpus = 0.75;
                    s
                }),
                None,
            ),
            Code::AlreadyExists,
            &g.running,
        ),
        (
            "suspend a held kernel",
            control(&g.held, KernelAction::Suspend, 0),
            Code::FailedPrecondition,
            "HELD",
        ),
        (
            "release a running kernel",
            control(&g.running, KernelAction::Release, 0),
            Code::FailedPrecondition,
            "RUNNING",
        ),
        (
            "remove a running kernel without force",
            control(&g.running, KernelAction::Remove, 0),
            Code::FailedPrecondition,
            "RUNNING",
        ),
        (
            "unknown kernel",
            control(&new_id(), KernelAction::Stop, 0),
            Code::NotFound,
            "not on this agent",
        ),
        (
            "signal out of range",
            control(&g.running, KernelAction::Signal, 999),
            Code::InvalidArgument,
            "signal",
        ),
        (
            "upload path traversal",
            Op::Upload(UploadFileRequest {
                kernel_id: g.running.clone(),
                path: "../escape".into(),
                content: b"x".to_vec(),
            }),
            Code::InvalidArgument,
            "../escape",
        ),
        (
            "upload absolute path",
            Op::Upload(UploadFileRequest {
                kernel_id: g.running.clone(),
                path: "/etc/passwd".into(),
                content: b"x".to_vec(),
            }),
            Code::InvalidArgument,
            "/etc/passwd",
        ),
        (
            "download traversal",
            Op::Download(FileRequest {
                kernel_id: g.running.clone(),
                path: "../config/kernel.json".into(),
            }),
            Code::InvalidArgument,
            "../config",
        ),
        (
            "list traversal",
            Op::ListFiles(FileRequest {
                kernel_id: g.running.clone(),
                path: "../..".into(),
            }),
            Code::InvalidArgument,
            "../..",
        ),
        (
            "unknown profile",
            spec(|s| {
                profile_base(s);
                s.profile = "docker-nope".into();
            }),
            Code::InvalidArgument,
            "docker-nope",
        ),
    ]
}

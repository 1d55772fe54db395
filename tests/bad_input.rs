//! Bad input, table-driven, against a real agent (gRPC), manager, etcd and Docker engine:
//! every malformed request or setting gets the right gRPC status (or CLI error) and a
//! message naming the field, and afterwards the agent's state — kernels and their states,
//! allocations, containers, scratch dirs, etcd keys — is exactly what it was.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{containers, KernelCluster, TEST_IMAGE};
use deckhand::wire::pb::agent_service_client::AgentServiceClient;
use deckhand::wire::pb::{
    ArraySpec, ControlKernelRequest, CreateKernelRequest, FileRequest, KernelAction, KernelSpec,
    PortSpec, StageIn, UploadFileRequest,
};
use tonic::transport::Channel;
use tonic::Code;

const T: Duration = Duration::from_secs(30);

enum Op {
    Create(Box<KernelSpec>, Option<ArraySpec>),
    Control(ControlKernelRequest),
    Upload(UploadFileRequest),
    Download(FileRequest),
    ListFiles(FileRequest),
}

/// Everything a refused request must leave as it was.
#[derive(Debug, PartialEq)]
struct State {
    kernels: Vec<(String, i32)>,
    allocated: String,
    containers: BTreeSet<String>,
    scratch: BTreeSet<String>,
    etcd_keys: BTreeSet<String>,
}

async fn snapshot(k: &KernelCluster, agent: &mut AgentServiceClient<Channel>) -> State {
    let list = agent
        .list_kernels(deckhand::wire::pb::ListKernelsRequest {})
        .await
        .unwrap()
        .into_inner();
    let info = agent
        .get_info(deckhand::wire::pb::GetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut etcd = k.c.etcd_client().await;
    let keys = etcd
        .get(
            format!("/deckhand/{}/", k.c.ns),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .unwrap();
    State {
        kernels: list
            .kernels
            .iter()
            .map(|k| (k.kernel_id.clone(), k.state))
            .collect(),
        allocated: format!("{:?}", info.slots.and_then(|s| s.allocated)),
        containers: containers(&k.c.ns).into_iter().collect(),
        scratch: std::fs::read_dir(k.scratch())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect(),
        etcd_keys: keys
            .kvs()
            .iter()
            .map(|kv| kv.key_str().unwrap().to_string())
            .collect(),
    }
}

fn base(id: &str) -> KernelSpec {
    KernelSpec {
        kernel_id: id.into(),
        image: TEST_IMAGE.into(),
        command: vec!["sleep".into(), "300".into()],
        cache_usage: "cache_first".into(),
        ..Default::default()
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A fresh valid spec changed by `f`.
fn spec(f: impl FnOnce(&mut KernelSpec)) -> Op {
    let mut s = base(&new_id());
    f(&mut s);
    Op::Create(Box::new(s), None)
}

/// A valid docker-batch profile kernel of the test image.
fn profile_base(s: &mut KernelSpec) {
    s.image.clear();
    s.command.clear();
    s.profile = "docker-batch".into();
    s.constants
        .insert("DOCKER_REPO".into(), "deckhand-test/busybox".into());
    s.constants.insert("DOCKER_TAG".into(), "latest".into());
    s.constants.insert("DOCKER_CMD".into(), "sleep 300".into());
}

/// A docker-batch profile kernel with `constants` added.
fn profiled(constants: &[(&str, &str)]) -> Op {
    let constants: Vec<(String, String)> = constants
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spec(move |s| {
        profile_base(s);
        s.constants.extend(constants);
    })
}

fn control(id: &str, action: KernelAction, signal: i32) -> Op {
    Op::Control(ControlKernelRequest {
        kernel_id: id.into(),
        action: action as i32,
        signal,
        grace_ms: 0,
        force: false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_naming_the_field_and_change_nothing() {
    let mut k = KernelCluster::start_with(
        "badinput",
        &[
            ("agent/heartbeat_interval", "300ms"),
            ("container/stage_in_dirs", "/var/run"),
        ],
    )
    .await;
    let mut agent = AgentServiceClient::connect(format!("http://127.0.0.1:{}", k.agent.port))
        .await
        .unwrap()
        .max_encoding_message_size(64 << 20);
    // The state to keep: one running kernel with slots and a port, one held.
    let running = new_id();
    let mut r = base(&running);
    r.cpus = 0.5;
    r.memory = "64MiB".into();
    r.ports = vec![PortSpec {
        container_port: 8080,
        protocol: "tcp".into(),
        ..Default::default()
    }];
    agent
        .create_kernel(CreateKernelRequest {
            spec: Some(r.clone()),
            array: None,
        })
        .await
        .unwrap();
    let held = new_id();
    let mut h = base(&held);
    h.submit_as_hold = true;
    agent
        .create_kernel(CreateKernelRequest {
            spec: Some(h),
            array: None,
        })
        .await
        .unwrap();
    k.wait_state(&running, "RUNNING", T).await;
    k.wait_state(&held, "HELD", T).await;
    let before = snapshot(&k, &mut agent).await;
    // The host port the agent chose for the running kernel: asking for it again is refused.
    let held_port = agent
        .get_kernel(deckhand::wire::pb::KernelRef {
            kernel_id: running.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .ports
        .first()
        .map(|p| p.host_port)
        .expect("the running kernel's host port");
    let held_port_said = format!("ports[0].host_port: {held_port}/tcp is in use");

    let big = "x".repeat(200 * 1024);
    let cases: Vec<(&str, Op, Code, &str)> = vec![
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
                s.env.insert("BIG".into(), big.clone());
            }),
            Code::InvalidArgument,
            "env",
        ),
        (
            "oversize args",
            spec(|s| s.command = vec![big.clone()]),
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
                    host_port: held_port,
                    ..Default::default()
                }]
            }),
            Code::ResourceExhausted,
            &held_port_said,
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
                    let mut s = r.clone();
                    s.cpus = 0.75;
                    s
                }),
                None,
            ),
            Code::AlreadyExists,
            &running,
        ),
        (
            "suspend a held kernel",
            control(&held, KernelAction::Suspend, 0),
            Code::FailedPrecondition,
            "HELD",
        ),
        (
            "release a running kernel",
            control(&running, KernelAction::Release, 0),
            Code::FailedPrecondition,
            "RUNNING",
        ),
        (
            "remove a running kernel without force",
            control(&running, KernelAction::Remove, 0),
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
            control(&running, KernelAction::Signal, 999),
            Code::InvalidArgument,
            "signal",
        ),
        (
            "upload path traversal",
            Op::Upload(UploadFileRequest {
                kernel_id: running.clone(),
                path: "../escape".into(),
                content: b"x".to_vec(),
            }),
            Code::InvalidArgument,
            "../escape",
        ),
        (
            "upload absolute path",
            Op::Upload(UploadFileRequest {
                kernel_id: running.clone(),
                path: "/etc/passwd".into(),
                content: b"x".to_vec(),
            }),
            Code::InvalidArgument,
            "/etc/passwd",
        ),
        (
            "download traversal",
            Op::Download(FileRequest {
                kernel_id: running.clone(),
                path: "../config/kernel.json".into(),
            }),
            Code::InvalidArgument,
            "../config",
        ),
        (
            "list traversal",
            Op::ListFiles(FileRequest {
                kernel_id: running.clone(),
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
        (
            "unknown DOCKER_ constant",
            profiled(&[("DOCKER_TAGG", "1")]),
            Code::InvalidArgument,
            "DOCKER_TAGG",
        ),
        (
            "unknown QARNOT_ constant",
            profiled(&[("QARNOT_TURBO", "1")]),
            Code::InvalidArgument,
            "QARNOT_TURBO",
        ),
        (
            "progress regex that does not compile",
            profiled(&[("DOCKER_PROGRESS1", "step (\\d+/100")]),
            Code::InvalidArgument,
            "DOCKER_PROGRESS1",
        ),
        (
            "progress regex without a capture group",
            profiled(&[("DOCKER_PROGRESS2", "step \\d+/100")]),
            Code::InvalidArgument,
            "DOCKER_PROGRESS2",
        ),
        (
            "constants that refer to each other",
            profiled(&[("A", "${B}"), ("B", "x${A}")]),
            Code::InvalidArgument,
            "refers back",
        ),
        (
            "DOCKER_CMD with unbalanced quotes",
            profiled(&[("DOCKER_CMD", "sh -c 'echo")]),
            Code::InvalidArgument,
            "DOCKER_CMD",
        ),
        (
            "registry password without login",
            profiled(&[("DOCKER_REGISTRY_PASSWORD", "pw")]),
            Code::InvalidArgument,
            "DOCKER_REGISTRY_LOGIN",
        ),
        (
            "an ssh key on a profile without ssh",
            profiled(&[("DOCKER_SSH", "ssh-ed25519 AAAA")]),
            Code::InvalidArgument,
            "DOCKER_SSH",
        ),
        (
            "an ssh profile without a key",
            spec(|s| {
                profile_base(s);
                s.profile = "docker-network-ssh".into();
            }),
            Code::InvalidArgument,
            "DOCKER_SSH",
        ),
        (
            "an ssh key that is not one",
            spec(|s| {
                profile_base(s);
                s.profile = "docker-network-ssh".into();
                s.constants.insert("DOCKER_SSH".into(), "not a key".into());
            }),
            Code::InvalidArgument,
            "DOCKER_SSH",
        ),
        (
            "RESOURCES_PATH over the kernel's home",
            profiled(&[("RESOURCES_PATH", "/home/work")]),
            Code::InvalidArgument,
            "RESOURCES_PATH",
        ),
        (
            "QARNOT_DISABLE_CPU_BOOST without cpus",
            profiled(&[("QARNOT_DISABLE_CPU_BOOST", "true")]),
            Code::InvalidArgument,
            "cpus",
        ),
        (
            "a GPU on a profile without GPUs",
            spec(|s| {
                profile_base(s);
                s.gpus = "1".into();
            }),
            Code::InvalidArgument,
            "gpus",
        ),
        (
            "an image beside the constants that make it",
            spec(|s| {
                profile_base(s);
                s.image = TEST_IMAGE.into();
            }),
            Code::InvalidArgument,
            "image",
        ),
        (
            "constants without a profile",
            spec(|s| {
                s.constants.insert("DOCKER_TAG".into(), "1".into());
            }),
            Code::InvalidArgument,
            "constants",
        ),
        (
            "results that are not on S3",
            spec(|s| {
                profile_base(s);
                s.results = "/tmp/results".into();
            }),
            Code::InvalidArgument,
            "results",
        ),
        (
            "S3 resources while S3 is not set up",
            spec(|s| {
                profile_base(s);
                s.resources = "s3://bucket/in".into();
            }),
            Code::FailedPrecondition,
            "config/storage/s3",
        ),
        (
            "a cluster profile without its number of instances",
            spec(|s| {
                profile_base(s);
                s.profile = "docker-cluster".into();
            }),
            Code::InvalidArgument,
            "instances: profile `docker-cluster` needs the number of instances",
        ),
        (
            "instances without a cluster profile",
            spec(|s| {
                profile_base(s);
                s.instances = 2;
            }),
            Code::InvalidArgument,
            "instances: needs a cluster profile",
        ),
        (
            "a cluster of more instances than allowed",
            spec(|s| {
                profile_base(s);
                s.profile = "docker-cluster".into();
                s.instances = 65;
            }),
            Code::InvalidArgument,
            "1 to 64",
        ),
        (
            "a span whose owner and peers do not hold the whole cluster",
            spec(|s| {
                profile_base(s);
                s.profile = "docker-cluster".into();
                s.instances = 3;
                s.span = Some(deckhand::wire::pb::ClusterSpan {
                    count: 1,
                    peers: vec![deckhand::wire::pb::SpanPeer {
                        agent_id: "b".into(),
                        address: "127.0.0.1:1".into(),
                        first: 1,
                        count: 1,
                    }],
                    ..Default::default()
                });
            }),
            Code::InvalidArgument,
            "span: the owner and its peers hold 2 of the cluster's 3 instances",
        ),
        (
            "a span whose peer claims more instances than there are",
            spec(|s| {
                profile_base(s);
                s.profile = "docker-cluster".into();
                s.instances = 3;
                s.span = Some(deckhand::wire::pb::ClusterSpan {
                    count: 1,
                    peers: vec![deckhand::wire::pb::SpanPeer {
                        agent_id: "b".into(),
                        address: "127.0.0.1:1".into(),
                        first: 1,
                        count: u32::MAX,
                    }],
                    ..Default::default()
                });
            }),
            Code::InvalidArgument,
            "span: the owner and its peers hold",
        ),
        (
            "a peer's part that names no network",
            spec(|s| {
                profile_base(s);
                s.profile = "docker-cluster".into();
                s.instances = 3;
                s.span = Some(deckhand::wire::pb::ClusterSpan {
                    first: 1,
                    count: 2,
                    owner: "a0".into(),
                    ..Default::default()
                });
            }),
            Code::InvalidArgument,
            "span: a peer's part holds workers only, on its owner's network",
        ),
        (
            "a worker command on a profile of one instance",
            spec(|s| {
                profile_base(s);
                s.constants
                    .insert("DOCKER_CMD_WORKER".into(), "true".into());
            }),
            Code::InvalidArgument,
            "constants[DOCKER_CMD_WORKER]",
        ),
        (
            "a RoCE profile on an agent without RDMA devices",
            spec(|s| {
                profile_base(s);
                s.profile = "docker-network-roce".into();
            }),
            Code::FailedPrecondition,
            "RDMA",
        ),
        (
            "upload too large",
            Op::Upload(UploadFileRequest {
                kernel_id: running.clone(),
                path: "big.bin".into(),
                content: vec![0; 12 << 20],
            }),
            Code::OutOfRange,
            "message length too large",
        ),
    ];
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for (name, op, code, needle) in cases {
        let result = match op {
            Op::Create(spec, array) => agent
                .create_kernel(CreateKernelRequest {
                    spec: Some(*spec),
                    array,
                })
                .await
                .map(|_| ()),
            Op::Control(req) => agent.control_kernel(req).await.map(|_| ()),
            Op::Upload(req) => agent.upload_file(req).await.map(|_| ()),
            Op::Download(req) => agent.download_file(req).await.map(|_| ()),
            Op::ListFiles(req) => agent.list_files(req).await.map(|_| ()),
        };
        match result {
            Ok(()) => failures.push(format!("{name}: accepted")),
            Err(s) if s.code() != code || !s.message().contains(needle) => failures.push(format!(
                "{name}: got {:?} `{}`, want {code:?} naming `{needle}`",
                s.code(),
                s.message()
            )),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Malformed settings through the CLI: refused naming the key, nothing written.
    for (key, value) in [
        ("agent/heartbeat_interval", "banana"),
        ("agent/kernel_creation_concurrency", "0"),
        ("container/port_range", "9-1"),
        ("docker/volumes/v/dest", "relative"),
        ("docker/dns", "not-an-ip"),
        ("docker/volumes/v/on", "[unclosed"),
        ("docker/registries/r/password", "bad\u{7}"),
        ("no/such_key", "1"),
        ("profiles/docker-batch/ssh", "true"),
        ("profiles/mine/constants/DOCKER_TAGG", "1"),
        ("profiles/mine/network", "not a network!"),
        ("storage/s3/endpoint", "ftp://x"),
    ] {
        let out = k.c.cli(&["config", "set", key, value]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{key}={value} accepted");
        assert!(err.contains(key), "{key}: {err}");
    }

    // Give a heartbeat time to show any change in allocations, then compare everything.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = snapshot(&k, &mut agent).await;
    assert_eq!(before, after);
    assert!(k.agent.is_running());
    k.c.cli_ok(&["rm", "-f", &running, &held]);
}

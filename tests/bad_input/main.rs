//! Bad input, table-driven, against a real agent (gRPC), manager, etcd and Docker engine:
//! every malformed request or setting gets the right gRPC status (or CLI error) and a
//! message naming the field, and afterwards the agent's state — kernels and their states,
//! allocations, containers, scratch dirs, etcd keys — is exactly what it was.

#[path = "../common/mod.rs"]
mod common;
mod profiles_and_clusters;
mod requests;
mod spec_fields;

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

/// One malformed request: its name, the request, the gRPC status it must get and the words
/// the status message must contain.
type Case<'a> = (&'a str, Op, Code, &'a str);

/// What the cases refer to: the running kernel (its id and spec), the held one, the host
/// port the running one holds, and an oversized value.
struct Given {
    running: String,
    held: String,
    r: KernelSpec,
    held_port: u32,
    held_port_said: String,
    big: String,
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
    let g = Given {
        running: running.clone(),
        held: held.clone(),
        r: r.clone(),
        held_port,
        held_port_said,
        big,
    };
    let cases: Vec<Case> = [
        spec_fields::cases(&g),
        requests::cases(&g),
        profiles_and_clusters::cases(&g),
    ]
    .into_iter()
    .flatten()
    .collect();
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

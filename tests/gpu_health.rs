//! GPU health from NVML critical events, against a real etcd, manager, agent and CLI. CI
//! has no GPU, so the one stand-in is the GPU itself: `tests/fixtures/fake_nvml.c` (the NVML
//! C ABI, loaded through nvml-wrapper's real loading path) hands out the events this test
//! appends to the file named by `FAKE_NVML_EVENTS`, through the real event-set calls
//! (`nvmlDeviceRegisterEvents`, `nvmlEventSetWait_v2`, …).

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::{observe, wait_for, Cluster};

const T: Duration = Duration::from_secs(20);
const T4: &str = "GPU-11111111-2222-3333-4444-555555555555";
const A100: &str = "GPU-66666666-7777-8888-9999-000000000000";

fn emit(events: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(events)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

fn gpu<'a>(node: &'a serde_json::Value, uuid: &str) -> &'a serde_json::Value {
    node["gpus"]
        .as_array()
        .and_then(|g| g.iter().find(|d| d["uuid"] == uuid))
        .unwrap_or(&serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_nvml_event_marks_the_gpu_unhealthy_until_an_operator_resets_it() {
    let c = Cluster::start("gpuhealth").await;
    let lib = c.fake_nvml();
    let events = c.dir.path().join("nvml-events");
    std::fs::write(&events, "").unwrap();
    // Heartbeats 30 s apart: a mark and a reset reach the manager at once, not on the tick.
    c.cli_ok(&["config", "set", "agent/heartbeat_interval", "30s"]);
    c.cli_ok(&["config", "set", "gpu/nvml_library", lib.to_str().unwrap()]);
    let mut m = c.manager("m1", &[]);
    let scratch = c.dir.path().join("scratch-g1");
    let metrics_port = common::free_port().to_string();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let env = [("FAKE_NVML_EVENTS", events.to_str().unwrap())];
    let spawn = |c: &Cluster| {
        c.agent_with(
            "g1",
            scratch.clone(),
            &["--metrics-listen-addr", metrics_addr.as_str()],
            &env,
        )
    };
    let mut a = spawn(&c);
    let node = wait_for(T, "two healthy GPUs", || async {
        let n = c.node("g1")?;
        (n["slots"]["total"]["gpus"] == 2).then_some(n)
    })
    .await;
    assert_eq!(gpu(&node, A100)["unhealthy"], false);

    // Application-caused XIDs are ignored; XID 79 (fallen off the bus) marks the GPU.
    emit(&events, "0 xid 13");
    emit(&events, "0 xid 43");
    emit(&events, "1 xid 79");
    let node = wait_for(T, "the A100 unhealthy", || async {
        let n = c.node("g1")?;
        (gpu(&n, A100)["unhealthy"] == true).then_some(n)
    })
    .await;
    let g = gpu(&node, A100);
    assert_eq!(g["health_reason"], "XID 79 (fallen off the bus)", "{g}");
    assert!(
        g["unhealthy_since_ms"].as_i64().unwrap_or_default() > 0,
        "{g}"
    );
    assert_eq!(
        gpu(&node, T4)["unhealthy"],
        false,
        "XIDs 13 and 43 are the application's"
    );
    assert_eq!(node["slots"]["total"]["gpus"], 1, "{node}");
    // No new kernel gets it: two GPUs are no longer there to place (the manager's view and
    // the agent's own answer agree).
    let out = c.cli(&["run", "-d", "--gpus", "2", common::TEST_IMAGE, "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("gpus"), "{err}");
    let out = c.cli(&[
        "run",
        "-d",
        "--agent",
        "g1",
        "--gpus",
        "2",
        common::TEST_IMAGE,
        "true",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gpus: 2 requested, this agent has 1"), "{err}");
    // Asked for by UUID: refused naming why.
    let out = c.cli(&[
        "run",
        "-d",
        "--agent",
        "g1",
        "--gpus",
        A100,
        common::TEST_IMAGE,
        "true",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("gpus: `{A100}` is unhealthy (XID 79")),
        "{err}"
    );
    assert!(common::containers(&c.ns).is_empty());
    let table = c.cli_ok(&["nodes"]);
    assert!(table.contains("UNHEALTHY: XID 79"), "{table}");
    let exposition = observe::get(&metrics_addr, "/metrics")
        .await
        .unwrap_or_default();
    let healthy = observe::samples(&exposition, "deckhand_gpu_healthy");
    assert!(
        healthy.iter().any(|(l, v)| l.contains(A100) && *v == 0.0)
            && healthy.iter().any(|(l, v)| l.contains(T4) && *v == 1.0),
        "{healthy:?}"
    );
    // `deckhand host` on that host reads the agent's marks.
    let host = c.cli_ok(&[
        "host",
        "--json",
        "--scratch-root",
        scratch.to_str().unwrap(),
        "--nvml-library",
        lib.to_str().unwrap(),
    ]);
    let host: serde_json::Value = serde_json::from_str(&host).unwrap();
    let devices = &host["gpus"]["devices"];
    let a100 = devices
        .as_array()
        .and_then(|d| d.iter().find(|g| g["uuid"] == A100))
        .unwrap();
    assert_eq!(a100["unhealthy"], true, "{host}");

    // NVML does not replay events: the mark survives `kill -9` of the agent by itself, and
    // of the manager.
    a.kill9();
    m.kill9();
    std::fs::write(&events, "").unwrap();
    a = spawn(&c);
    m = c.manager("m1", &[]);
    let node = wait_for(T, "the A100 still unhealthy after restarts", || async {
        let n = c.node("g1")?;
        (n["state"] == "ALIVE" && n["heartbeats_received"].as_u64()? > 0).then_some(n)
    })
    .await;
    assert_eq!(gpu(&node, A100)["unhealthy"], true, "{node}");
    assert_eq!(node["slots"]["total"]["gpus"], 1);

    // A double-bit ECC error marks the other one.
    emit(&events, "0 dbe");
    wait_for(T, "the T4 unhealthy", || async {
        let n = c.node("g1")?;
        (gpu(&n, T4)["health_reason"] == "double-bit ECC error").then_some(())
    })
    .await;

    // Bad requests name the field.
    let out = c.cli(&["gpu", "reset-health", "g1", "GPU-not-there"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("uuid: no GPU"),
        "{err}"
    );
    let out = c.cli(&["gpu", "reset-health", "nobody", A100]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("agent_id"), "{err}");

    let out = c.cli_ok(&["gpu", "reset-health", "g1", A100]);
    assert!(
        out.contains("healthy again") && out.contains("XID 79"),
        "{out}"
    );
    let node = wait_for(T, "the A100 healthy again", || async {
        let n = c.node("g1")?;
        (gpu(&n, A100)["unhealthy"] == false).then_some(n)
    })
    .await;
    assert_eq!(
        node["slots"]["total"]["gpus"], 1,
        "the T4 is still unhealthy"
    );
    drop((a, m));
}

//! GPU inventory through nvml-wrapper's real loading path. CI has no GPU, so the library
//! loaded is `tests/fixtures/fake_nvml.c` (a stand-in with the NVML C ABI and two known
//! devices), selected with `gpu/nvml_library` or `deckhand host --nvml-library`.

mod common;

use std::time::Duration;

use common::{wait_for, Cluster};

#[tokio::test]
async fn the_manager_receives_exactly_the_nvml_devices() {
    let c = Cluster::start("nvml").await;
    let lib = c.fake_nvml();
    c.cli_ok(&["config", "set", "agent/heartbeat_interval", "500ms"]);
    c.cli_ok(&["config", "set", "gpu/nvml_library", lib.to_str().unwrap()]);
    let _m = c.manager("m1", &[]);
    let _a = c.agent("gpu-host");
    let node = wait_for(Duration::from_secs(10), "GPUs in the heartbeat", || async {
        let n = c.node("gpu-host")?;
        (n["gpus"].as_array()?.len() == 2).then_some(n)
    })
    .await;
    let gpus = node["gpus"].as_array().unwrap();
    let t4 = &gpus[0];
    assert_eq!(t4["uuid"], "GPU-11111111-2222-3333-4444-555555555555");
    assert_eq!(t4["name"], "Fake Tesla T4");
    assert_eq!(t4["memory_total_bytes"], 16u64 << 30);
    assert_eq!(t4["memory_used_bytes"], 1u64 << 30);
    assert_eq!(t4["gpu_utilization_percent"], 37);
    assert_eq!(t4["temperature_celsius"], 45);
    assert_eq!(t4["power_limit_milliwatts"], 70000);
    assert_eq!(t4["pci_bus_id"], "00000000:3B:00.0");
    assert_eq!(t4["compute_capability"], "7.5");
    assert_eq!(t4["mig_mode"], "disabled");
    assert_eq!(t4["fake"], false);
    let a100 = &gpus[1];
    assert_eq!(a100["uuid"], "GPU-66666666-7777-8888-9999-000000000000");
    assert_eq!(a100["name"], "Fake A100-SXM4-40GB");
    assert_eq!(a100["memory_total_bytes"], 40u64 << 30);
    assert_eq!(a100["mig_mode"], "enabled");
    assert_eq!(node["slots"]["total"]["gpus"], 2);

    // Fake GPUs from the config are merged after the NVML ones.
    c.cli_ok(&[
        "config",
        "set",
        "docker/fake_gpus/0/id",
        "0d6d1a2a-0000-0000-0000-000000000001",
    ]);
    let node = wait_for(Duration::from_secs(5), "the fake GPU merged in", || async {
        let n = c.node("gpu-host")?;
        (n["gpus"].as_array()?.len() == 3).then_some(n)
    })
    .await;
    assert_eq!(node["gpus"][2]["index"], 2);
    assert_eq!(node["gpus"][2]["fake"], true);
}

#[test]
fn host_json_reports_versions_and_a_broken_device_without_failing() {
    let dir = tempfile::tempdir().unwrap();
    let lib = common::build_fake_nvml(dir.path());
    let out = std::process::Command::new(common::deckhand_bin())
        .args(["host", "--json", "--nvml-library", lib.to_str().unwrap()])
        .args(["--scratch-root", dir.path().to_str().unwrap()])
        .env("FAKE_NVML_BROKEN_DEVICE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["gpus"]["driver_version"], "550.54.15");
    assert_eq!(v["gpus"]["cuda_version"], "12.4");
    assert_eq!(v["gpus"]["nvml_version"], "12.550.54.15");
    let devs = v["gpus"]["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 3);
    assert_eq!(devs[0]["error"], "");
    assert_eq!(devs[1]["error"], "");
    assert_eq!(devs[2]["uuid"], "GPU-deadbeef-0000-0000-0000-000000000000");
    let err = devs[2]["error"].as_str().unwrap();
    assert!(
        err.contains("memory"),
        "the broken device names what failed: {err}"
    );
    assert!(v["host"]["memory_total_bytes"].as_u64().unwrap() > 0);
    assert!(v["host"]["scratch_total_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn host_without_nvml_reports_no_gpus_and_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::deckhand_bin())
        .args([
            "host",
            "--json",
            "--nvml-library",
            "/nonexistent/libnvidia-ml.so.1",
        ])
        .args(["--scratch-root", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["gpus"]["devices"].as_array().is_none_or(|d| d.is_empty()));
    assert!(v["gpus"]["nvml_status"]
        .as_str()
        .unwrap()
        .contains("not found"));
}

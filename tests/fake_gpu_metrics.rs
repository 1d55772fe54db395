//! The agent's Prometheus metrics carry fake GPUs (`docker/fake_gpus`) as they carry NVML
//! devices, with the DCGM exporter's names and labels plus `fake="true"`, and Prometheus'
//! own lint (`promtool check metrics`) accepts the exposition.

mod common;

use std::time::Duration;

use common::observe::{self, samples};
use common::{free_port, wait_for, Cluster};

#[tokio::test]
async fn fake_gpus_have_utilisation_and_memory_series_labelled_fake() {
    let c = Cluster::start("fake-gpu-metrics").await;
    c.cli_ok(&["config", "set", "agent/heartbeat_interval", "500ms"]);
    c.cli_ok(&[
        "config",
        "set",
        "docker/fake_gpus",
        r#"[{id = "GPU-0d6d1a2a-0000-0000-0000-000000000001", name = "Fake A100", ram_total = "16g"}]"#,
    ]);
    let _manager = c.manager("m1", &[]);
    let metrics = format!("127.0.0.1:{}", free_port());
    let _agent = c.agent_with(
        "a1",
        c.dir.path().join("scratch-a1"),
        &["--metrics-listen-addr", &metrics],
        &[],
    );
    let labels = r#"UUID="GPU-0d6d1a2a-0000-0000-0000-000000000001",model_name="Fake A100""#;
    let text = wait_for(Duration::from_secs(20), "the fake GPU's series", || async {
        let text = observe::get(&metrics, "/metrics").await?;
        samples(&text, "DCGM_FI_DEV_GPU_UTIL")
            .iter()
            .any(|(l, _)| l.contains(labels))
            .then_some(text)
    })
    .await;
    let one = |name: &str| -> (String, f64) {
        let found: Vec<(String, f64)> = samples(&text, name)
            .into_iter()
            .filter(|(l, _)| l.contains(labels))
            .collect();
        assert_eq!(found.len(), 1, "{name}: {found:?}\n{text}");
        found[0].clone()
    };
    for (name, value) in [
        ("DCGM_FI_DEV_GPU_UTIL", 0.0),
        ("DCGM_FI_DEV_MEM_COPY_UTIL", 0.0),
        ("DCGM_FI_DEV_FB_USED", 0.0),
        ("DCGM_FI_DEV_FB_FREE", 16384.0),
    ] {
        let (l, v) = one(name);
        assert!(l.contains(r#"fake="true""#), "{name}{{{l}}}");
        assert!(l.contains(r#"gpu="0""#), "{name}{{{l}}}");
        assert_eq!(v, value, "{name}{{{l}}}");
    }
    // It is a GPU slot too, as before.
    assert!(
        samples(&text, "deckhand_slots")
            .iter()
            .any(|(l, v)| l.contains(r#"kind="gpu",state="total""#) && *v == 1.0),
        "{text}"
    );
    assert_eq!(observe::promtool_check(&text), "", "{text}");
}

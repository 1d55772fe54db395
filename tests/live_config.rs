//! Cluster settings in etcd: changes apply without restart, malformed values keep the last
//! good one, and `deckhand config` refuses what the schema rejects.

mod common;

use std::time::Duration;

use common::{count_lines, wait_for, Cluster};

#[tokio::test]
async fn heartbeat_interval_and_fake_gpus_change_without_restart() {
    let c = Cluster::start("live").await;
    c.cli_ok(&["config", "set", "agent/heartbeat_interval", "2s"]);
    let _m = c.manager("m1", &[]);
    let agent = c.agent("gpu-node");
    wait_for(Duration::from_secs(10), "first heartbeat at 2s", || async {
        (c.node("gpu-node")?["heartbeat_interval_ms"] == 2000).then_some(())
    })
    .await;

    c.cli_ok(&["config", "set", "agent/heartbeat_interval", "300ms"]);
    let fake = "GPU-0d6d1a2a-1111-2222-3333-444455556666";
    let file = c.dir.path().join("gpus.toml");
    std::fs::write(
        &file,
        format!(
            "[agent]\nheartbeat_interval = \"300ms\"\n[[docker.fake_gpus]]\nid = \"{fake}\"\nname = \"Fake H100\"\nram_total = \"80GiB\"\n"
        ),
    )
    .unwrap();
    c.cli_ok(&["config", "put", file.to_str().unwrap()]);
    let node = wait_for(
        Duration::from_secs(5),
        "the new interval and fake GPU",
        || async {
            let n = c.node("gpu-node")?;
            (n["heartbeat_interval_ms"] == 300 && n["gpus"].as_array()?.len() == 1).then_some(n)
        },
    )
    .await;
    let gpu = &node["gpus"][0];
    assert_eq!(gpu["uuid"], fake);
    assert_eq!(gpu["name"], "Fake H100");
    assert_eq!(gpu["memory_total_bytes"], 80u64 << 30);
    assert_eq!(gpu["fake"], true);
    assert_eq!(node["slots"]["total"]["gpus"], 1);

    // Heartbeats really come every 300 ms now: count them over two seconds.
    let before = node["heartbeats_received"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = c.node("gpu-node").unwrap()["heartbeats_received"]
        .as_u64()
        .unwrap();
    assert!(
        after - before >= 4,
        "only {} heartbeats in 2s",
        after - before
    );

    // A malformed value written straight into etcd: the last good value stays, logged once.
    let mut etcd = c.etcd_client().await;
    let key = format!("/deckhand/{}/config/agent/heartbeat_interval", c.ns);
    etcd.put(key.clone(), "every now and then", None)
        .await
        .unwrap();
    etcd.put(
        format!("/deckhand/{}/config/agent/region", c.ns),
        "eu-west",
        None,
    )
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(5),
        "the region change to land",
        || async { (c.node("gpu-node")?["region"] == "eu-west").then_some(()) },
    )
    .await;
    let node = c.node("gpu-node").unwrap();
    assert_eq!(
        node["heartbeat_interval_ms"], 300,
        "the last good interval stays"
    );
    let log = agent.log();
    assert_eq!(
        count_lines(&log, &key),
        1,
        "logged once with its full key:\n{log}"
    );
    assert!(log.contains("keeping the last good value `300ms`"), "{log}");
}

#[tokio::test]
async fn per_agent_overrides_win_over_cluster_settings() {
    let c = Cluster::start("override").await;
    c.cli_ok(&["config", "set", "agent/heartbeat_interval", "400ms"]);
    c.cli_ok(&["config", "set", "agent/scaling_group", "batch"]);
    c.cli_ok(&[
        "config",
        "--agent",
        "special",
        "set",
        "agent/scaling_group",
        "gpu",
    ]);
    let _m = c.manager("m1", &[]);
    let _a = c.agent("special");
    let _b = c.agent("plain");
    wait_for(
        Duration::from_secs(10),
        "both agents with their scaling groups",
        || async {
            let a = c.node("special")?;
            let b = c.node("plain")?;
            (a["scaling_group"] == "gpu" && b["scaling_group"] == "batch").then_some(())
        },
    )
    .await;
    let got = c.cli_ok(&["config", "--agent", "special", "get", "agent/scaling_group"]);
    assert_eq!(got.trim(), "gpu");
}

#[tokio::test]
async fn config_cli_refuses_unknown_keys_and_bad_values_and_writes_nothing() {
    let c = Cluster::start("cfgcli").await;
    let out = c.cli(&["config", "set", "agent/heartbeet_interval", "5s"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("agent/heartbeet_interval") && err.contains("agent/heartbeat_interval"),
        "{err}"
    );

    let out = c.cli(&["config", "set", "resource/reserved_memory", "plenty"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("resource/reserved_memory"));

    let file = c.dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[agent]\nheartbeat_interval = \"1s\"\nregion = \"ok\"\n[[docker.fake_gpus]]\nid = \"not-a-uuid\"\n",
    )
    .unwrap();
    let out = c.cli(&["config", "put", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("docker/fake_gpus/0/id") && err.contains("nothing written"),
        "{err}"
    );

    let mut etcd = c.etcd_client().await;
    let prefix = format!("/deckhand/{}/", c.ns);
    let n = etcd
        .get(
            prefix,
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .unwrap()
        .count();
    assert_eq!(n, 0, "a refused write must leave etcd untouched");
}

#[tokio::test]
async fn config_put_then_get_round_trips_as_toml_and_json() {
    let c = Cluster::start("roundtrip").await;
    let file = c.dir.path().join("cluster.toml");
    let text = "[agent]\nheartbeat_interval = \"3s\"\nregion = \"eu\"\n\n[resource]\nreserved_cpu = 0.5\nreserved_memory = \"1GiB\"\n";
    std::fs::write(&file, text).unwrap();
    c.cli_ok(&["config", "put", file.to_str().unwrap()]);
    let toml_out: toml::Table = toml::from_str(&c.cli_ok(&["config", "get"])).unwrap();
    assert_eq!(toml_out, toml::from_str::<toml::Table>(text).unwrap());
    let json: serde_json::Value =
        serde_json::from_str(&c.cli_ok(&["config", "get", "resource", "--json"])).unwrap();
    assert_eq!(json["reserved_cpu"], 0.5);
    assert_eq!(c.cli_ok(&["config", "get", "agent/region"]).trim(), "eu");
    c.cli_ok(&["config", "unset", "agent"]);
    let out = c.cli(&["config", "get", "agent/region"]);
    assert!(!out.status.success());
}

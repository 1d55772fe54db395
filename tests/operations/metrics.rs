//! The agent's and the manager's metrics as a real Prometheus scrapes them.

use super::*;

#[tokio::test]
async fn prometheus_scrapes_the_agent_and_the_manager_and_promtool_accepts_both() {
    let o = Observed::start("prom", &[]).await;
    let id = o.run_sleeper();
    wait_sample(
        &o.agent_metrics,
        "deckhand_kernels",
        r#"runtime="docker",state="RUNNING""#,
        1.0,
    )
    .await;
    // The exposition is the 0.0.4 text format, and Prometheus' own lint has nothing to say.
    let resp = observe::http()
        .get(format!("http://{}/metrics", o.agent_metrics))
        .send()
        .await
        .unwrap();
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let kernel = format!(r#"kernel_id="{id}""#);
    let agent = wait_for(Duration::from_secs(10), "per-kernel usage", || async {
        let text = observe::get(&o.agent_metrics, "/metrics").await?;
        samples(&text, "deckhand_kernel_memory_bytes")
            .iter()
            .any(|(l, v)| *l == kernel && *v > 0.0)
            .then_some(text)
    })
    .await;
    assert_eq!(
        observe::promtool_check(&agent),
        "",
        "agent exposition:\n{agent}"
    );
    let manager = wait_sample(
        &o.manager_metrics,
        "deckhand_manager_agents",
        r#"state="ALIVE""#,
        1.0,
    )
    .await;
    assert_eq!(
        observe::promtool_check(&manager),
        "",
        "manager exposition:\n{manager}"
    );

    // What an operator sees of the agent: its kernel's create latency, slots, host, GPUs
    // under the DCGM exporter's names and units.
    assert_eq!(
        samples(&agent, "deckhand_kernel_create_duration_seconds_count"),
        [(r#"runtime="docker""#.to_string(), 1.0)]
    );
    let allocated = samples(&agent, "deckhand_slots");
    assert!(
        allocated.contains(&(r#"kind="cpu",state="allocated""#.into(), 0.25)),
        "{allocated:?}"
    );
    assert!(allocated.contains(&(r#"kind="gpu",state="total""#.into(), 2.0)));
    let t4 =
        r#"gpu="0",UUID="GPU-11111111-2222-3333-4444-555555555555",model_name="Fake Tesla T4""#;
    let fb_used = samples(&agent, "DCGM_FI_DEV_FB_USED");
    assert!(
        fb_used
            .iter()
            .any(|(l, v)| l.starts_with(t4) && *v == 1024.0),
        "{fb_used:?}"
    );
    let power = samples(&agent, "DCGM_FI_DEV_POWER_USAGE");
    assert!(
        power.iter().any(|(l, v)| l.starts_with(t4) && *v == 70.0),
        "{power:?}"
    );
    assert_eq!(samples(&agent, "DCGM_FI_DEV_GPU_TEMP").len(), 2);
    assert_eq!(
        samples(&agent, "deckhand_etcd_connected"),
        [(String::new(), 1.0)]
    );
    assert!(samples(&agent, "deckhand_heartbeats_sent_total")[0].1 >= 1.0);
    assert_eq!(
        samples(&manager, "deckhand_manager_placements_total"),
        [(String::new(), 1.0)]
    );
    let forwarded = samples(&manager, "deckhand_manager_forwarded_calls_total");
    assert!(
        forwarded.contains(&(r#"method="CreateKernel",status="OK""#.into(), 1.0)),
        "{forwarded:?}"
    );

    // The agent's heartbeats, event queue, host and reserve.
    let beat = samples(&agent, "deckhand_heartbeat_duration_seconds_count");
    assert!(beat.len() == 1 && beat[0].1 >= 1.0, "{beat:?}");
    assert_eq!(
        samples(&agent, "deckhand_events_queued").len(),
        1,
        "{agent}"
    );
    assert_eq!(
        samples(&agent, "deckhand_events_dropped_total"),
        [(String::new(), 0.0)]
    );
    for name in [
        "deckhand_host_memory_total_bytes",
        "deckhand_host_scratch_disk_free_bytes",
    ] {
        let v = samples(&agent, name);
        assert!(v.len() == 1 && v[0].1 > 0.0, "{name}: {v:?}");
    }
    // Whole-host CPU usage between two heartbeats: a ratio, above 0 on a host running a
    // manager, an agent, Docker and this test.
    wait_for(
        Duration::from_secs(10),
        "host CPU usage above 0",
        || async {
            let text = observe::get(&o.agent_metrics, "/metrics").await?;
            let v = samples(&text, "deckhand_host_cpu_usage_ratio");
            (v.len() == 1 && v[0].1 > 0.0 && v[0].1 <= 1.0).then_some(())
        },
    )
    .await;
    for kind in ["cpu", "memory", "gpu"] {
        let reserved = format!(r#"kind="{kind}",state="reserved""#);
        assert!(
            allocated.iter().any(|(l, v)| *l == reserved && *v >= 0.0),
            "no {reserved}: {allocated:?}"
        );
    }

    // The manager's side of the heartbeats: counted, and the agent's last one is recent
    // (its interval is 500 ms).
    assert!(samples(&manager, "deckhand_manager_heartbeats_received_total")[0].1 >= 1.0);
    let age = samples(&manager, "deckhand_manager_heartbeat_age_seconds");
    assert!(
        age.len() == 1 && age[0].0 == r#"agent_id="a1""# && age[0].1 < 5.0,
        "{age:?}"
    );
    // A run that cannot be placed is counted by its reason; nothing was placed for it.
    let out =
        o.c.cli(&["run", "-d", "--agent", "nosuch", TEST_IMAGE, "true"]);
    assert!(
        !out.status.success(),
        "placed on an agent that does not exist"
    );
    let manager = wait_sample(
        &o.manager_metrics,
        "deckhand_manager_placement_refusals_total",
        r#"reason="unknown_agent""#,
        1.0,
    )
    .await;
    assert_eq!(
        samples(&manager, "deckhand_manager_placement_refusals_total"),
        [(r#"reason="unknown_agent""#.to_string(), 1.0)]
    );
    assert_eq!(
        samples(&manager, "deckhand_manager_placements_total"),
        [(String::new(), 1.0)]
    );

    // A real Prometheus scrapes both and answers queries over them.
    let prom = Prometheus::start(&[
        ("deckhand-agent", &o.agent_metrics),
        ("deckhand-manager", &o.manager_metrics),
    ])
    .await;
    for (query, want) in [
        (r#"up{job="deckhand-agent"}"#, 1),
        (r#"up{job="deckhand-manager"}"#, 1),
        (r#"deckhand_kernels{state="RUNNING"} == 1"#, 1),
        (r#"deckhand_manager_agents{state="ALIVE"} == 1"#, 1),
        ("DCGM_FI_DEV_GPU_UTIL", 2),
        (
            &format!(r#"deckhand_kernel_cpu_seconds_total{{kernel_id="{id}"}}"#),
            1,
        ),
    ] {
        wait_for(
            Duration::from_secs(30),
            &format!("Prometheus: {query}"),
            || async { (prom.query(query).await.len() == want).then_some(()) },
        )
        .await;
    }
    let temps = prom.query("DCGM_FI_DEV_GPU_TEMP").await;
    let t4 = temps
        .iter()
        .find(|(m, _)| m["UUID"] == "GPU-11111111-2222-3333-4444-555555555555")
        .expect("the T4's temperature");
    assert_eq!(t4.1, 45.0);
    assert_eq!(t4.0["job"], "deckhand-agent");

    // A kernel that is gone leaves no series behind.
    o.c.cli_ok(&["rm", "-f", &id]);
    let after = wait_sample(
        &o.agent_metrics,
        "deckhand_kernels",
        r#"runtime="docker",state="RUNNING""#,
        0.0,
    )
    .await;
    assert!(
        !after.contains(&id),
        "series of a removed kernel remain:\n{after}"
    );
    assert!(prom
        .log()
        .contains("Server is ready to receive web requests"));

    // The manager frozen (SIGSTOP) for a few of the agent's heartbeats: each one that got
    // no answer is counted as failed; after SIGCONT they are accepted again.
    let text = observe::get(&o.agent_metrics, "/metrics").await.unwrap();
    let failed = samples(&text, "deckhand_heartbeats_failed_total")[0].1;
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &o.manager.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} of the manager");
    };
    signal("-STOP");
    let frozen = wait_for(Duration::from_secs(20), "a failed heartbeat", || async {
        let text = observe::get(&o.agent_metrics, "/metrics").await?;
        let v = samples(&text, "deckhand_heartbeats_failed_total");
        (v.len() == 1 && v[0].1 >= failed + 1.0).then_some(text)
    })
    .await;
    signal("-CONT");
    let sent = samples(&frozen, "deckhand_heartbeats_sent_total")[0].1;
    wait_for(
        Duration::from_secs(20),
        "heartbeats accepted again",
        || async {
            let text = observe::get(&o.agent_metrics, "/metrics").await?;
            (samples(&text, "deckhand_heartbeats_sent_total")[0].1 > sent).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn image_pulls_are_counted_with_their_bytes_and_failures_by_reason() {
    let reg = Registry::start("deckhand", "pw-metrics-81").await;
    let entry = format!(
        "{{url = \"{}\", username = \"{}\", password = \"{}\"}}",
        reg.addr(),
        reg.user,
        reg.password
    );
    let o = Observed::start_with("pulls", &[("docker/registries/private", &entry)], &[]).await;
    let ns = o.c.ns.clone();
    // A layer of 1 MiB that this host does not have once the local tag is gone.
    let big = build_variant(
        &format!("{ns}-pull"),
        "RUN head -c 1048576 /dev/urandom > /blob",
    );
    let _tags = Tags(vec![big.clone()]);
    let first = reg.push(&big, &format!("pulls/{ns}-a:v1"), false);
    let second = reg.push(&big, &format!("pulls/{ns}-b:v1"), false);
    untag(&big);

    o.c.cli_ok(&["run", "-d", &first, "true"]);
    let text = wait_sample(&o.agent_metrics, "deckhand_image_pulls_total", "", 1.0).await;
    let bytes = samples(&text, "deckhand_image_pull_bytes_total")[0].1;
    assert!(bytes >= 1048576.0, "pulled {bytes} bytes");
    assert_eq!(
        samples(&text, "deckhand_image_pull_duration_seconds_count"),
        [(String::new(), 1.0)]
    );
    assert!(samples(&text, "deckhand_image_pull_failures_total").is_empty());

    // The registry refuses the next pull: counted as an authentication failure.
    let reloads = samples(&text, "deckhand_config_reloads_total")[0].1;
    o.c.cli_ok(&[
        "config",
        "set",
        "docker/registries/private/password",
        "wrong-pw",
    ]);
    wait_sample(
        &o.agent_metrics,
        "deckhand_config_reloads_total",
        "",
        reloads + 1.0,
    )
    .await;
    let out = o.c.cli(&["run", "-d", &second, "true"]);
    assert!(
        !out.status.success(),
        "a pull with a wrong password succeeded"
    );
    let text = wait_sample(&o.agent_metrics, "deckhand_image_pulls_total", "", 2.0).await;
    assert_eq!(
        samples(&text, "deckhand_image_pull_failures_total"),
        [(r#"reason="auth""#.to_string(), 1.0)]
    );
    assert_eq!(
        samples(&text, "deckhand_kernel_create_failures_total"),
        [(r#"runtime="docker""#.to_string(), 1.0)]
    );
    assert_eq!(observe::promtool_check(&text), "", "{text}");
}

#[tokio::test]
async fn etcd_outages_and_refused_settings_show_in_the_agents_metrics() {
    let mut o = Observed::start("etcdm", &[]).await;
    let text = wait_sample(&o.agent_metrics, "deckhand_etcd_connected", "", 1.0).await;
    assert_eq!(
        samples(&text, "deckhand_etcd_reconnects_total"),
        [(String::new(), 0.0)]
    );
    // A malformed value put into etcd by other means than `deckhand config`.
    let key = format!("/deckhand/{}/config/agent/heartbeat_interval", o.c.ns);
    o.c.etcd_client()
        .await
        .put(key, "soon", None)
        .await
        .unwrap();
    wait_sample(
        &o.agent_metrics,
        "deckhand_config_rejected_values_total",
        "",
        1.0,
    )
    .await;

    o.c.etcd_mut().stop();
    wait_sample(&o.agent_metrics, "deckhand_etcd_connected", "", 0.0).await;
    wait_sample(&o.manager_metrics, "deckhand_etcd_connected", "", 0.0).await;
    o.c.etcd_mut().restart(false).await;
    let text = wait_sample(&o.agent_metrics, "deckhand_etcd_connected", "", 1.0).await;
    assert_eq!(
        samples(&text, "deckhand_etcd_reconnects_total"),
        [(String::new(), 1.0)]
    );
    wait_sample(
        &o.manager_metrics,
        "deckhand_etcd_reconnects_total",
        "",
        1.0,
    )
    .await;
}

#[tokio::test]
async fn a_bad_metrics_address_is_refused_naming_the_flag() {
    let c = Cluster::start("badmetrics").await;
    for bad in ["nonsense", "127.0.0.1:99999", ":9100"] {
        for daemon in ["agent", "manager"] {
            let out = c.cli(&[daemon, "--metrics-listen-addr", bad]);
            assert!(!out.status.success(), "{daemon} accepted {bad}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("--metrics-listen-addr"),
                "{daemon} {bad}: {err}"
            );
        }
    }
    // A port someone else holds: the daemon does not start, and says which flag.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let m = c.manager("m1", &["--metrics-listen-addr", &addr]);
    let a = c.agent_with(
        "a1",
        c.dir.path().join("scratch-a1"),
        &["--metrics-listen-addr", &addr],
        &[],
    );
    for (what, mut daemon) in [("manager", m), ("agent", a)] {
        let status = daemon.wait_exit(Duration::from_secs(20)).await;
        assert!(status.is_some_and(|s| !s.success()), "{what} kept running");
        let log = daemon.log();
        let said = format!("--metrics-listen-addr `{addr}`: cannot listen");
        assert!(log.contains(&said), "{what}: {log}");
    }
    // Without the flag nothing listens beside gRPC.
    let m2 = c.manager("m2", &[]);
    wait_for(Duration::from_secs(20), "manager m2 registered", || async {
        c.nodes().map(|_| ())
    })
    .await;
    assert!(!m2.log().contains("serving metrics"));
}

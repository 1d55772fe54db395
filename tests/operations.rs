//! Operating a cluster: the agent's and the manager's Prometheus metrics as a real
//! Prometheus scrapes them and `promtool check metrics` reads them, the manager's status
//! page in a real headless Chromium, and logs in which a kernel's life can be followed by
//! its id. The GPUs are the fake NVML library (CI has none); everything else is real.

mod common;

use std::time::Duration;

use common::observe::{self, samples, Prometheus};
use common::{
    build_variant, free_port, untag, wait_for, Cluster, Proc, Registry, Tags, TEST_IMAGE,
};

/// A manager and an agent `a1` with metrics on, the agent seeing the two fake NVML GPUs.
struct Observed {
    agent: Proc,
    manager: Proc,
    /// `127.0.0.1:PORT` of each daemon's metrics endpoint.
    agent_metrics: String,
    manager_metrics: String,
    c: Cluster,
}

impl Observed {
    async fn start(test: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with(test, &[], env).await
    }

    /// [`start`](Self::start) with `settings` (`config set KEY VALUE`) in place first.
    async fn start_with(test: &str, settings: &[(&str, &str)], env: &[(&str, &str)]) -> Self {
        let c = Cluster::start(test).await;
        let lib = c.fake_nvml();
        c.cli_ok(&["config", "set", "docker/cache_usage", "cache_first"]);
        c.cli_ok(&["config", "set", "agent/heartbeat_interval", "500ms"]);
        c.cli_ok(&["config", "set", "gpu/nvml_library", lib.to_str().unwrap()]);
        for (key, value) in settings {
            c.cli_ok(&["config", "set", key, value]);
        }
        let manager_metrics = format!("127.0.0.1:{}", free_port());
        let agent_metrics = format!("127.0.0.1:{}", free_port());
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let manager = c.spawn_env(
            "manager-m1",
            &[
                "manager",
                "--manager-id",
                "m1",
                "--listen",
                &listen,
                "--metrics-listen-addr",
                &manager_metrics,
            ],
            port,
            env,
        );
        let scratch = c.dir.path().join("scratch-a1");
        let agent = c.agent_with(
            "a1",
            scratch,
            &["--metrics-listen-addr", &agent_metrics],
            env,
        );
        wait_for(Duration::from_secs(20), "agent a1 ALIVE", || async {
            c.node("a1").filter(|n| n["state"] == "ALIVE").map(|_| ())
        })
        .await;
        Self {
            agent,
            manager,
            agent_metrics,
            manager_metrics,
            c,
        }
    }

    fn run_sleeper(&self) -> String {
        self.c
            .cli_ok(&["run", "-d", "--cpus", "0.25", TEST_IMAGE, "sleep", "300"])
            .trim()
            .to_string()
    }
}

/// Waits until the agent's exposition has `name` with labels containing `labels` at
/// `value`.
async fn wait_sample(addr: &str, name: &str, labels: &str, value: f64) -> String {
    wait_for(
        Duration::from_secs(20),
        &format!("{name}{{{labels}}} = {value} at {addr}"),
        || async {
            let text = observe::get(addr, "/metrics").await?;
            samples(&text, name)
                .iter()
                .any(|(l, v)| l.contains(labels) && *v == value)
                .then_some(text)
        },
    )
    .await
}

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

#[tokio::test]
async fn the_status_page_shows_the_agents_and_a_running_kernel_in_chromium() {
    let o = Observed::start("page", &[]).await;
    let id = o.run_sleeper();
    wait_sample(
        &o.agent_metrics,
        "deckhand_kernels",
        r#"runtime="docker",state="RUNNING""#,
        1.0,
    )
    .await;
    let url = format!("http://{}/", o.manager_metrics);
    // Five seconds of the page's own life: it refreshes itself (every 2 s) meanwhile.
    let dom = observe::dump_dom(o.c.dir.path(), &url, 5000);
    let refreshed = dom
        .split("data-refreshed=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|n| n.parse::<u32>().ok());
    assert!(
        refreshed.is_some_and(|n| n >= 1),
        "the page did not refresh itself:\n{dom}"
    );
    let agents = section(&dom, "agents");
    assert!(
        agents.contains(">a1<") && agents.contains(">ALIVE<"),
        "{agents}"
    );
    assert!(agents.contains("Fake Tesla T4"), "{agents}");
    let kernels = section(&dom, "kernels");
    assert!(kernels.contains(&id), "{kernels}");
    assert!(kernels.contains(">RUNNING<"), "{kernels}");
    assert!(kernels.contains(TEST_IMAGE), "{kernels}");
    assert!(section(&dom, "events").contains(&id));

    // The cells themselves. The agent: its free slots as the manager has them (two fake
    // GPUs, none taken; a quarter CPU taken by the sleeper).
    let node = o.c.node("a1").expect("node a1");
    let total_cpu = node["slots"]["total"]["cpu"].as_f64().unwrap();
    let reserved_cpu = node["slots"]["reserved"]["cpu"].as_f64().unwrap();
    let a1 = row(agents, ">a1<");
    let [_, _, _, last_heartbeat, free_cpu, free_memory, free_gpus, _] = &a1[..] else {
        panic!("agents row: {a1:?}")
    };
    assert_eq!(
        free_cpu,
        &format!("{} of {}", total_cpu - reserved_cpu - 0.25, total_cpu),
        "{a1:?}"
    );
    assert!(
        free_memory.contains(" of ") && free_memory.ends_with("iB"),
        "{a1:?}"
    );
    assert_eq!(free_gpus, "2 of 2", "{a1:?}");
    assert_ne!(last_heartbeat, "—", "{a1:?}");
    // The kernels: the sleeper's agent and age, and a profile kernel's progress from its
    // output.
    let k = row(kernels, &id);
    let [_, _, state, _, agent, image, age] = &k[..] else {
        panic!("kernels row: {k:?}")
    };
    assert_eq!(
        (state.as_str(), agent.as_str(), image.as_str()),
        ("RUNNING", "a1", TEST_IMAGE),
        "{k:?}"
    );
    assert!(!age.is_empty() && age != "—", "{k:?}");
    let profiled =
        o.c.cli_ok(&[
            "run",
            "-d",
            "--profile",
            "docker-batch",
            "--constant",
            "DOCKER_REPO=deckhand-test/busybox",
            "--constant",
            "DOCKER_TAG=latest",
            "--constant",
            r"DOCKER_PROGRESS1=step (\d+)/100",
            "--constant",
            "DOCKER_CMD=sh -c 'echo step 42/100; sleep 300'",
        ])
        .trim()
        .to_string();
    wait_for(
        Duration::from_secs(20),
        "progress 42 in the manager",
        || async {
            let out = o.c.cli(&["inspect", &profiled]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (v["progress"] == 42.0).then_some(())
        },
    )
    .await;
    // The page lists the agents' kernels at most once a second: a listing made just before
    // the run may still be served.
    let dom = wait_for(
        Duration::from_secs(20),
        "the profiled kernel on the page",
        || async {
            let dom = observe::dump_dom(o.c.dir.path(), &url, 500);
            section(&dom, "kernels").contains(&profiled).then_some(dom)
        },
    )
    .await;
    let p = row(section(&dom, "kernels"), &profiled);
    assert_eq!(p.get(3).map(String::as_str), Some("42 % done"), "{p:?}");

    let shot = screenshot_path("status-page.png");
    observe::screenshot(o.c.dir.path(), &url, &shot);
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{}",
        shot.display()
    );
    // The page is read-only: anything but GET is refused.
    let post = observe::http().post(&url).send().await.unwrap();
    assert_eq!(post.status().as_u16(), 405);
    drop(o.agent);
}

/// The table with HTML id `id` in `dom`.
fn section<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let rest = &dom[start..];
    &rest[..rest.find("</table>").unwrap_or(rest.len())]
}

/// The cells' text of the row of `table` that contains `needle`.
fn row(table: &str, needle: &str) -> Vec<String> {
    let tr = table
        .split("<tr")
        .find(|r| r.contains(needle))
        .unwrap_or_else(|| panic!("no row with {needle} in:\n{table}"));
    tr.split("<td")
        .skip(1)
        .map(|cell| {
            let inner = cell.split_once('>').map_or("", |(_, rest)| rest);
            let inner = inner.split("</td>").next().unwrap_or_default();
            // The text without tags (a GPU cell holds <div>s).
            let mut text = String::new();
            let mut in_tag = false;
            for ch in inner.chars() {
                match ch {
                    '<' => in_tag = true,
                    '>' => in_tag = false,
                    c if !in_tag => text.push(c),
                    _ => {}
                }
            }
            text.trim().to_string()
        })
        .collect()
}

/// `target/operations/<name>`: kept after the test as an artifact.
fn screenshot_path(name: &str) -> std::path::PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("operations");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir.join(name)
}

#[tokio::test]
async fn a_kernels_life_can_be_followed_by_its_id_in_json_logs() {
    let o = Observed::start("logs", &[("DECKHAND_LOG_FORMAT", "json")]).await;
    let id = o.run_sleeper();
    o.c.cli_ok(&["stop", "-t", "1", &id]);
    o.c.cli_ok(&["rm", &id]);
    let agent_log = wait_for(
        Duration::from_secs(10),
        "the removal in the agent's log",
        || async {
            let log = o.agent.log();
            log.lines()
                .any(|l| l.contains(&id) && l.contains("\"reason\":\"removed\""))
                .then_some(log)
        },
    )
    .await;
    let lines: Vec<serde_json::Value> = agent_log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    // Every line of the agent names it.
    for l in &lines {
        assert_eq!(
            l["span"]["agent_id"], "a1",
            "a line without the agent's id: {l}"
        );
    }
    // The kernel's lifecycle, in order, from the lines that carry its id.
    let states: Vec<String> = lines
        .iter()
        .filter(|l| l["fields"]["kernel_id"] == id.as_str())
        .filter_map(|l| l["fields"]["state"].as_str().map(str::to_string))
        .collect();
    let mut expected = vec!["PREPARING", "CREATING", "RUNNING", "TERMINATING"];
    expected.retain(|s| states.iter().any(|x| x == s));
    assert_eq!(expected.len(), 4, "states logged: {states:?}");
    assert!(
        states
            .iter()
            .any(|s| ["DONE", "FAILED", "CANCELLED"].contains(&s.as_str())),
        "{states:?}"
    );
    // The manager's side: where it placed the kernel and what it forwarded.
    let manager_log = wait_for(Duration::from_secs(10), "the forwarded removal", || async {
        let log = o.manager.log();
        log.contains("\"action\":\"REMOVE\"").then_some(log)
    })
    .await;
    let all: Vec<serde_json::Value> = manager_log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for l in &all {
        assert_eq!(
            l["span"]["manager_id"], "m1",
            "a line without the manager's id: {l}"
        );
    }
    let mine: Vec<&serde_json::Value> = all
        .iter()
        .filter(|l| l["fields"]["kernel_id"] == id.as_str())
        .collect();
    let messages: Vec<&str> = mine
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    assert_eq!(
        messages,
        [
            "kernel placed",
            "kernel control forwarded",
            "kernel control forwarded"
        ],
        "{manager_log}"
    );
    for l in &mine {
        assert_eq!(l["fields"]["agent_id"], "a1", "{l}");
        assert_eq!(l["span"]["manager_id"], "m1", "{l}");
    }
}

//! Docker-mode settings from etcd, against a real private registry (Debian's
//! `docker-registry` with htpasswd auth, started per test on a loopback port), the real
//! Docker engine, etcd, manager and agent: registry credentials, the three cache policies,
//! one pull per image, pull progress and timeouts, volumes by slug, network, DNS, process
//! data and image garbage collection. Every setting is changed live, without a restart.

mod common;

use std::time::Duration;

use common::{
    build_variant, docker_inspect, docker_ok, image_id, untag, wait_for, KernelCluster, Registry,
    Tags, TEST_IMAGE,
};
use deckhand::wire::pb::agent_service_client::AgentServiceClient;
use deckhand::wire::pb::cluster_service_client::ClusterServiceClient;
use deckhand::wire::pb::{
    CreateKernelRequest, KernelEvent, KernelSpec, RunKernelRequest, WatchEventsRequest,
};
use futures::StreamExt;

const T: Duration = Duration::from_secs(30);
const USER: &str = "deckhand";
const PASSWORD: &str = "pw-Kx81-never-shown";

/// A kernel cluster whose config knows `reg` with the right credentials.
async fn cluster_with_registry(test: &str, reg: &Registry) -> KernelCluster {
    let entry = format!(
        "{{url = \"{}\", username = \"{}\", password = \"{}\"}}",
        reg.addr(),
        reg.user,
        reg.password
    );
    KernelCluster::start_with(test, &[("docker/registries/private", &entry)]).await
}

/// The events the agent still keeps, in order (after its first: `after_seq` 0 means
/// "from now on").
async fn agent_events(k: &KernelCluster) -> Vec<KernelEvent> {
    let mut client = AgentServiceClient::connect(format!("http://127.0.0.1:{}", k.agent.port))
        .await
        .expect("agent gRPC");
    let mut s = client
        .watch_events(WatchEventsRequest { after_seq: 1 })
        .await
        .expect("watch")
        .into_inner();
    let mut out = Vec::new();
    while let Ok(Some(Ok(ev))) = tokio::time::timeout(Duration::from_millis(500), s.next()).await {
        out.push(ev);
    }
    out
}

/// Runs `image` with `policy` detached; returns (kernel id, final JSON): RUNNING/DONE or
/// FAILED.
async fn run_with(k: &KernelCluster, policy: &str, image: &str) -> (String, serde_json::Value) {
    let id = uuid::Uuid::new_v4().to_string();
    let _ = k.c.cli(&[
        "run",
        "-d",
        "--id",
        &id,
        "--cache-usage",
        policy,
        "--cpus",
        "0.25",
        image,
        "sleep",
        "30",
    ]);
    let v = wait_for(T, &format!("kernel {id} settled"), || async {
        let out = k.c.cli(&["inspect", &id]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        ["RUNNING", "FAILED"]
            .contains(&v["state"].as_str()?)
            .then_some(v)
    })
    .await;
    (id, v)
}

/// The image id the kernel's container was made from.
fn ran_image(v: &serde_json::Value) -> String {
    docker_inspect(v["container_id"].as_str().unwrap(), "{{.Image}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_policies_decide_which_image_runs_with_the_registry_changed_unchanged_and_down() {
    let mut reg = Registry::start(USER, PASSWORD).await;
    let k = cluster_with_registry("policies", &reg).await;
    // The harness defaults to cache_first; this test wants the documented default.
    k.c.cli_ok(&["config", "unset", "docker/cache_usage"]);
    let ns = k.c.ns.clone();
    let local = build_variant(&format!("{ns}-local"), "");
    let remote = build_variant(&format!("{ns}-remote"), "");
    let _tags = Tags(vec![local.clone(), remote.clone()]);
    let (local_id, remote_id) = (image_id(&local), image_id(&remote));
    assert_ne!(local_id, remote_id);
    // The registry has `remote`; the same reference points at `local` on this host.
    let image = reg.push(&remote, &format!("policy/{ns}:v1"), false);
    let set_local = |present: bool| {
        untag(&image);
        if present {
            docker_ok(&["tag", &local, &image]);
        }
    };

    // Registry up, image changed since the local copy.
    let cases = [
        ("cache_first", &local_id),
        ("remote_first", &remote_id),
        ("require_pull", &remote_id),
    ];
    for (policy, want) in cases {
        set_local(true);
        let (id, v) = run_with(&k, policy, &image).await;
        assert_eq!(v["state"], "RUNNING", "{policy}: {v}");
        assert_eq!(&ran_image(&v), want, "{policy} with a changed image");
        k.c.cli_ok(&["rm", "-f", &id]);
    }
    // Registry up and unchanged: the local copy is what the registry has.
    for policy in ["cache_first", "remote_first", "require_pull"] {
        untag(&image);
        docker_ok(&["tag", &remote, &image]);
        let (id, v) = run_with(&k, policy, &image).await;
        assert_eq!(v["state"], "RUNNING", "{policy}: {v}");
        assert_eq!(ran_image(&v), remote_id, "{policy} unchanged");
        k.c.cli_ok(&["rm", "-f", &id]);
    }
    // The default (no override) is remote_first.
    set_local(true);
    let id = k.run_detached(&[&image, "sleep", "30"]);
    let v = k.wait_state(&id, "RUNNING", T).await;
    assert_eq!(ran_image(&v), remote_id, "default policy pulls first");
    k.c.cli_ok(&["rm", "-f", &id]);

    // Registry down, with a local copy.
    reg.stop();
    set_local(true);
    let (a, v) = run_with(&k, "cache_first", &image).await;
    assert_eq!(v["state"], "RUNNING", "{v}");
    assert_eq!(ran_image(&v), local_id);
    let (b, v) = run_with(&k, "remote_first", &image).await;
    assert_eq!(v["state"], "RUNNING", "remote_first falls back: {v}");
    assert_eq!(ran_image(&v), local_id);
    let said = agent_events(&k)
        .await
        .into_iter()
        .filter(|e| e.kernel_id == b)
        .any(|e| e.reason.contains("using the local image"));
    assert!(said, "the fallback is reported in the kernel's events");
    let (c, v) = run_with(&k, "require_pull", &image).await;
    assert_eq!(
        v["state"], "FAILED",
        "require_pull never uses the local copy"
    );
    assert!(
        v["reason"].as_str().unwrap().contains("registry `private`"),
        "{v}"
    );
    k.c.cli_ok(&["rm", "-f", &a, &b, &c]);

    // Registry down, no local copy: nothing can run it.
    set_local(false);
    for policy in ["cache_first", "remote_first", "require_pull"] {
        let (id, v) = run_with(&k, policy, &image).await;
        assert_eq!(v["state"], "FAILED", "{policy} without any copy: {v}");
        assert!(v["reason"].as_str().unwrap().contains(&image), "{v}");
        k.c.cli_ok(&["rm", &id]);
    }
    untag(&local);
    untag(&remote);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_registry_password_fails_the_kernel_and_is_shown_nowhere() {
    let reg = Registry::start(USER, PASSWORD).await;
    let wrong = "wrong-Zq93-secret";
    let entry = format!(
        "{{url = \"{}\", username = \"{USER}\", password = \"{wrong}\"}}",
        reg.addr()
    );
    let k = KernelCluster::start_with("badpw", &[("docker/registries/private", &entry)]).await;
    let ns = k.c.ns.clone();
    let image = reg.push(TEST_IMAGE, &format!("auth/{ns}:v1"), false);
    let (id, v) = run_with(&k, "remote_first", &image).await;
    assert_eq!(v["state"], "FAILED", "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.contains("registry `private`"), "{reason}");
    assert!(reason.contains("authentication failed"), "{reason}");

    // `config get` shows the password as ***, in TOML and JSON.
    let toml = k.c.cli_ok(&["config", "get"]);
    assert!(toml.contains("password = \"***\""), "{toml}");
    let json =
        k.c.cli_ok(&["config", "get", "docker/registries", "--json"]);
    assert!(json.contains("\"***\""), "{json}");
    let one =
        k.c.cli_ok(&["config", "get", "docker/registries/private/password"]);
    assert_eq!(one.trim(), "***");

    // Nowhere else either: events, inspect, logs, the registration in etcd.
    let events = format!("{:?}", agent_events(&k).await);
    let inspect = k.c.cli_ok(&["inspect", &id]);
    let mut etcd = k.c.etcd_client().await;
    let registration = etcd
        .get(k.c.agent_key("a1"), None)
        .await
        .unwrap()
        .kvs()
        .first()
        .map(|kv| kv.value_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    for (what, text) in [
        ("agent log", k.agent.log()),
        ("manager log", k.manager.log()),
        ("events", events),
        ("inspect", inspect),
        ("registration", registration),
        ("config get", toml),
    ] {
        assert!(!text.contains(wrong), "the password appears in the {what}");
        assert!(!text.contains(PASSWORD), "a password appears in the {what}");
    }
    k.c.cli_ok(&["rm", &id]);

    // With the right password the same image runs: the registry entry took effect live.
    k.c.cli_ok(&[
        "config",
        "set",
        "docker/registries/private/password",
        PASSWORD,
    ]);
    wait_for(T, "new password applied", || async {
        let (id, v) = run_with(&k, "remote_first", &image).await;
        k.c.cli_ok(&["rm", "-f", &id]);
        (v["state"] == "RUNNING").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_kernels_of_one_uncached_image_cause_one_pull() {
    let reg = Registry::start(USER, PASSWORD).await;
    let k = cluster_with_registry("onepull", &reg).await;
    let ns = k.c.ns.clone();
    let manager = ClusterServiceClient::connect(format!("http://127.0.0.1:{}", k.manager.port))
        .await
        .expect("manager gRPC");

    // Ten separate kernels asked for at once (cache_first: whoever comes after the pull
    // finds the image; whoever comes during it waits on it).
    let repo = format!("burst/{ns}");
    let image = reg.push(TEST_IMAGE, &format!("{repo}:v1"), false);
    let calls = (0..10).map(|_| {
        let mut m = manager.clone();
        let req = RunKernelRequest {
            request: Some(CreateKernelRequest {
                spec: Some(KernelSpec {
                    kernel_id: uuid::Uuid::new_v4().to_string(),
                    image: image.clone(),
                    command: vec!["sleep".into(), "30".into()],
                    cache_usage: "cache_first".into(),
                    ..Default::default()
                }),
                array: None,
            }),
            agent_id: String::new(),
        };
        async move { m.run_kernel(req).await }
    });
    let results = futures::future::join_all(calls).await;
    for r in &results {
        let kernels = &r.as_ref().expect("RunKernel").get_ref().kernels;
        assert_eq!(kernels[0].state().as_str_name(), "KERNEL_STATE_RUNNING");
    }
    assert_eq!(reg.pulls(&repo), 1, "one pull for ten kernels");

    // Ten array tasks under remote_first (every task wants a fresh pull; one that ended
    // after they were asked for serves them all, even past the creation concurrency of 4).
    let repo2 = format!("array/{ns}");
    let image2 = reg.push(TEST_IMAGE, &format!("{repo2}:v1"), false);
    let array =
        k.c.cli_ok(&["run", "--array", "1-10", &image2, "sleep", "30"]);
    let array = array.trim().to_string();
    wait_for(T, "ten tasks running", || async {
        let running = k
            .ps()
            .iter()
            .filter(|v| v["array_id"] == array.as_str() && v["state"] == "RUNNING")
            .count();
        (running == 10).then_some(())
    })
    .await;
    assert_eq!(reg.pulls(&repo2), 1, "one pull for ten array tasks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_progress_reaches_the_events_and_the_run_progress_bar_and_ends_at_100_percent() {
    let reg = Registry::start(USER, PASSWORD).await;
    let k = cluster_with_registry("progress", &reg).await;
    let ns = k.c.ns.clone();
    // A 24 MiB layer, so bytes really move.
    let big = build_variant(
        &format!("{ns}-big"),
        "RUN head -c 25165824 /dev/urandom > /blob",
    );
    let _tags = Tags(vec![big.clone()]);
    let image = reg.push(&big, &format!("big/{ns}:v1"), false);
    untag(&big);
    assert!(image_id(&image).is_empty(), "the image must not be cached");

    // Attached `deckhand run` draws the bar on stderr (one line per update off a terminal).
    let out = k.c.cli(&["run", &image, "sh", "-c", "wc -c < /blob"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "25165824");
    let bars: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("pulling "))
        .collect();
    assert!(!bars.is_empty(), "no progress shown: {stderr}");
    let last = bars.last().unwrap();
    assert!(last.contains("100%"), "{last}");
    assert!(last.contains(&image), "{last}");

    // The same progress as events: bytes and layers, ending with everything done.
    let pulls: Vec<_> = agent_events(&k)
        .await
        .into_iter()
        .filter_map(|e| e.pull)
        .collect();
    assert!(!pulls.is_empty());
    let end = pulls.last().unwrap();
    assert!(end.bytes_total >= 24 << 20, "{end:?}");
    assert_eq!(end.bytes_done, end.bytes_total, "{end:?}");
    assert_eq!(end.layers_done, end.layers_total, "{end:?}");
    assert!(end.layers_total >= 2, "{end:?}");
    assert!(
        pulls.windows(2).all(|w| w[1].bytes_done >= w[0].bytes_done),
        "progress never goes back: {pulls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_pull_fails_the_kernel_with_its_reason_and_frees_its_slots() {
    let k = KernelCluster::start_with(
        "stall",
        &[
            ("docker/pull_inactivity_timeout", "2s"),
            ("agent/heartbeat_interval", "500ms"),
        ],
    )
    .await;
    // A registry that accepts connections and never answers.
    let stall = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let image = format!(
        "127.0.0.1:{}/stalls/forever:latest",
        stall.local_addr().unwrap().port()
    );
    let id = uuid::Uuid::new_v4().to_string();
    let mut run =
        k.c.command_for(&["run", "-d", "--id", &id, "--cpus", "0.5", &image, "true"])
            .spawn()
            .unwrap();
    let pulling = k.wait_state(&id, "PULLING", T).await;
    assert_eq!(pulling["slots"]["cpu"], 0.5, "{pulling}");
    wait_for(T, "allocated while pulling", || async {
        let n = k.c.node("a1")?;
        (n["slots"]["allocated"]["cpu"] == 0.5).then_some(())
    })
    .await;
    let v = k.wait_state(&id, "FAILED", T).await;
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.contains("stalled: no progress for 2s"), "{reason}");
    assert!(
        reason.contains("docker/pull_inactivity_timeout"),
        "{reason}"
    );
    let _ = run.wait();
    wait_for(T, "slots freed", || async {
        let n = k.c.node("a1")?;
        (n["slots"]["allocated"]["cpu"].as_f64().unwrap_or(0.0) == 0.0).then_some(())
    })
    .await;
    k.c.cli_ok(&["rm", &id]);
    drop(stall);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_follow_the_slug_and_network_dns_and_process_data_apply_to_the_next_kernel() {
    let k = KernelCluster::start("volumes").await;
    let ns = k.c.ns.clone();
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("model.txt"), "weights").unwrap();
    k.c.cli_ok(&[
        "config",
        "set",
        "docker/volumes/models",
        &format!(
            "{{src = \"{}\", dest = \"/models\", mode = \"ro\", on = \"ml_*\"}}",
            shared.path().display()
        ),
    ]);
    let network = format!("deckhand-test-{ns}");
    docker_ok(&["network", "create", &network]);
    let _net = Guard(network.clone());

    // A kernel made before the network setting keeps the default bridge.
    let before = k.run_detached(&["--slug", "ocr", TEST_IMAGE, "sleep", "60"]);
    k.c.cli_ok(&["config", "set", "docker/network", &network]);
    k.c.cli_ok(&["config", "set", "docker/dns", "10.0.0.53, 10.0.0.54"]);
    let ml = wait_for(T, "network applied to new kernels", || async {
        let id = k.run_detached(&[
            "--slug",
            "ml_classify",
            TEST_IMAGE,
            "sh",
            "-c",
            "cat /models/model.txt; touch /models/x 2>/dev/null && echo writable || echo read-only; sleep 60",
        ]);
        let v = k.wait_state(&id, "RUNNING", T).await;
        let cid = v["container_id"].as_str().unwrap().to_string();
        if docker_inspect(&cid, "{{.HostConfig.NetworkMode}}") == network {
            Some((id, cid))
        } else {
            k.c.cli_ok(&["rm", "-f", &id]);
            None
        }
    })
    .await;
    let ocr = k.run_detached(&["--slug", "ocr", TEST_IMAGE, "sleep", "60"]);
    let ocr_v = k.wait_state(&ocr, "RUNNING", T).await;
    let ocr_cid = ocr_v["container_id"].as_str().unwrap();

    // The volume is there, read-only, for ml_classify only.
    wait_for(T, "ml kernel output", || async {
        let logs = k.c.cli_ok(&["logs", &ml.0]);
        (logs.contains("weights") && logs.contains("read-only")).then_some(())
    })
    .await;
    let mounts = |cid: &str| docker_inspect(cid, "{{range .Mounts}}{{.Destination}} {{end}}");
    assert!(mounts(&ml.1).contains("/models"));
    assert!(
        !mounts(ocr_cid).contains("/models"),
        "ocr must not get the ml volume"
    );
    // Network and DNS on the new kernels; the kernel from before keeps the bridge.
    assert_eq!(
        docker_inspect(&ml.1, "{{.HostConfig.Dns}}"),
        "[10.0.0.53 10.0.0.54]"
    );
    assert_eq!(
        docker_inspect(ocr_cid, "{{.HostConfig.NetworkMode}}"),
        network
    );
    let before_v = k.inspect(&before);
    assert_eq!(
        docker_inspect(
            before_v["container_id"].as_str().unwrap(),
            "{{.HostConfig.NetworkMode}}"
        ),
        "bridge"
    );
    k.c.cli_ok(&["rm", "-f", &before, &ml.0, &ocr]);

    // A network that does not exist fails the kernel, naming it.
    k.c.cli_ok(&["config", "set", "docker/network", "no-such-net-x"]);
    let failed = wait_for(T, "missing network reported", || async {
        let (id, v) = run_with(&k, "cache_first", TEST_IMAGE).await;
        k.c.cli_ok(&["rm", "-f", &id]);
        let reason = v["reason"].as_str().unwrap_or_default().to_string();
        (v["state"] == "FAILED" && reason.contains("no-such-net-x")).then_some(reason)
    })
    .await;
    assert!(failed.contains("docker/network"), "{failed}");
    k.c.cli_ok(&["config", "unset", "docker/network"]);
    k.c.cli_ok(&["config", "unset", "docker/dns"]);

    // Shared process volume: two kernels of one process see each other's data; the volume
    // goes with the last of them.
    k.c.cli_ok(&["config", "set", "docker/shared_process_volume", "true"]);
    let volume = format!("deckhand-{ns}-process-p1");
    let writer = wait_for(T, "shared process volume applied", || async {
        let id = k.run_detached(&[
            "--process-id",
            "p1",
            TEST_IMAGE,
            "sh",
            "-c",
            "echo from-writer > /data/shared.txt; sleep 60",
        ]);
        k.wait_state(&id, "RUNNING", T).await;
        let v = k.inspect(&id);
        let cid = v["container_id"].as_str().unwrap().to_string();
        if docker_inspect(&cid, "{{range .Mounts}}{{.Name}} {{end}}").contains(&volume) {
            Some(id)
        } else {
            k.c.cli_ok(&["rm", "-f", &id]);
            None
        }
    })
    .await;
    let reader = k.run_detached(&[
        "--process-id",
        "p1",
        TEST_IMAGE,
        "sh",
        "-c",
        "sleep 1; cat /data/shared.txt; sleep 60",
    ]);
    wait_for(T, "reader sees the writer's file", || async {
        k.c.cli_ok(&["logs", &reader])
            .contains("from-writer")
            .then_some(())
    })
    .await;
    let volume_exists = || {
        std::process::Command::new("docker")
            .args(["volume", "inspect", &volume])
            .output()
            .unwrap()
            .status
            .success()
    };
    k.c.cli_ok(&["rm", "-f", &writer]);
    assert!(
        volume_exists(),
        "removed while a kernel of the process lives"
    );
    k.c.cli_ok(&["rm", "-f", &reader]);
    assert!(
        !volume_exists(),
        "the volume outlived the last kernel of its process"
    );

    // Without the shared volume, process data is a host dir under the scratch root.
    k.c.cli_ok(&["config", "set", "docker/shared_process_volume", "false"]);
    let dir = k.scratch().join("processes/p2");
    let id = wait_for(T, "host process dir applied", || async {
        let id = k.run_detached(&[
            "--process-id",
            "p2",
            TEST_IMAGE,
            "sh",
            "-c",
            "echo on-host > /data/f.txt; sleep 60",
        ]);
        k.wait_state(&id, "RUNNING", T).await;
        if dir.exists() {
            Some(id)
        } else {
            k.c.cli_ok(&["rm", "-f", &id]);
            None
        }
    })
    .await;
    wait_for(T, "process data on the host", || async {
        std::fs::read_to_string(dir.join("f.txt"))
            .ok()
            .filter(|s| s.trim() == "on-host")
    })
    .await;
    k.c.cli_ok(&["rm", "-f", &id]);
    assert!(
        !dir.exists(),
        "the host process dir outlived its last kernel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_images_are_collected_and_images_in_use_are_kept() {
    let k = KernelCluster::start("imagegc").await;
    let ns = k.c.ns.clone();
    // Two tags of the test image, only for this test: collecting removes the tag.
    let (old, used) = (
        format!("deckhand-test/gc:{ns}-old"),
        format!("deckhand-test/gc:{ns}-used"),
    );
    docker_ok(&["tag", TEST_IMAGE, &old]);
    docker_ok(&["tag", TEST_IMAGE, &used]);
    let _tags = Tags(vec![old.clone(), used.clone()]);
    let a = k.run_detached(&[&old, "true"]);
    k.wait_state(&a, "DONE", T).await;
    k.c.cli_ok(&["rm", &a]);
    let b = k.run_detached(&[&used, "sleep", "60"]);
    k.wait_state(&b, "RUNNING", T).await;
    k.c.cli_ok(&["config", "set", "docker/image_gc_after", "2s"]);
    wait_for(T, "unused image removed", || async {
        image_id(&old).is_empty().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!image_id(&used).is_empty(), "an image in use was removed");
    assert!(
        !image_id(TEST_IMAGE).is_empty(),
        "an image no kernel ran was removed"
    );
    assert!(k.agent.log().contains("image removed"));
    k.c.cli_ok(&["rm", "-f", &b]);
    untag(&used);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_docker_entries_are_refused_when_written_and_ignored_with_one_line_in_etcd() {
    let k = KernelCluster::start("dockercfg").await;
    let refuse = |args: &[&str], needle: &str| {
        let out = k.c.cli(args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    let set = |key: &str, value: &str| ["config", "set", key, value].map(String::from);
    let cases: Vec<([String; 4], &str)> = vec![
        (set("docker/volumes/v/src", "/srv"), "missing `dest`"),
        (
            set("docker/volumes/v", "{src = \"/srv\"}"),
            "missing `dest`",
        ),
        (
            set("docker/volumes/v", "{src = \"/srv\", dest = \"data\"}"),
            "docker/volumes/v/dest",
        ),
        (
            set(
                "docker/volumes/v",
                "{src = \"/srv\", dest = \"/home/work/x\"}",
            ),
            "/home/work",
        ),
        (
            set("docker/volumes/v", "{src = \"/srv\", dest = \"/home\"}"),
            "/home/work",
        ),
        (
            set(
                "docker/volumes/v",
                "{src = \"/srv\", dest = \"/d\", mode = \"rx\"}",
            ),
            "ro, rw",
        ),
        (
            set(
                "docker/volumes/v",
                "{src = \"/srv\", dest = \"/d\", on = \"[a\"}",
            ),
            "wildcard",
        ),
        (set("docker/cache_usage", "sometimes"), "cache_first"),
        (set("docker/dns", "8.8.8.x"), "not an IP"),
        (set("docker/network", "bad net"), "Docker name"),
        (set("docker/pull_timeout", "soon"), "not a duration"),
        (
            set("docker/registries/r/url", "exa mple"),
            "registry address",
        ),
        (
            set(
                "docker/registries/r",
                "{url = \"r.example\", username = \"u\"}",
            ),
            "both",
        ),
    ];
    for (args, needle) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refuse(&args, needle);
    }
    // Nothing was written.
    let out = k.c.cli(&["config", "get", "docker"]);
    let got = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(got.contains("cache_usage = \"cache_first\""), "{got}");
    assert!(
        !got.contains("volumes") && !got.contains("registries"),
        "{got}"
    );

    // A field of a complete entry can be changed alone.
    k.c.cli_ok(&[
        "config",
        "set",
        "docker/volumes/v",
        "{src = \"/srv\", dest = \"/d\"}",
    ]);
    k.c.cli_ok(&["config", "set", "docker/volumes/v/mode", "ro"]);
    refuse(
        &["config", "set", "docker/volumes/v/dest", "/home/config"],
        "/home/config",
    );
    // `put --merge` checks the entries it touches as they will be: one field of a complete
    // entry is fine, a field of a missing entry is not.
    let file = k.c.dir.path().join("merge.toml");
    std::fs::write(&file, "[docker.volumes.v]\nmode = \"rw\"\n").unwrap();
    k.c.cli_ok(&["config", "put", "--merge", file.to_str().unwrap()]);
    std::fs::write(&file, "[docker.volumes.w]\nmode = \"rw\"\n").unwrap();
    refuse(
        &["config", "put", "--merge", file.to_str().unwrap()],
        "docker/volumes/w",
    );

    // Written straight into etcd past the CLI: ignored, with one log line naming the key.
    let mut etcd = k.c.etcd_client().await;
    let key = format!("/deckhand/{}/config/docker/volumes/broken/src", k.c.ns);
    etcd.put(key, "/srv", None).await.unwrap();
    wait_for(T, "broken entry reported", || async {
        (common::count_lines(&k.agent.log(), "docker/volumes/broken") == 1).then_some(())
    })
    .await;
    // Another change later does not repeat the line.
    k.c.cli_ok(&["config", "set", "agent/region", "r2"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        common::count_lines(&k.agent.log(), "docker/volumes/broken"),
        1
    );
    // And a kernel still starts, without the broken volume but with the good one.
    let id = k.run_detached(&[TEST_IMAGE, "sleep", "30"]);
    let v = k.wait_state(&id, "RUNNING", T).await;
    let mounts = docker_inspect(
        v["container_id"].as_str().unwrap(),
        "{{range .Mounts}}{{.Destination}} {{end}}",
    );
    assert!(mounts.contains("/d"), "{mounts}");
    k.c.cli_ok(&["rm", "-f", &id]);
}

/// Removes a Docker network when dropped.
struct Guard(String);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.0])
            .output();
    }
}

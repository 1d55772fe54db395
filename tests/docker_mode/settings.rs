//! Volumes, network, DNS, process data, image collection and bad docker entries, all changed live.

use super::*;

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

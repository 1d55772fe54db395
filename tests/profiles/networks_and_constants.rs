//! Each profile's network, operator profiles, constants and the CPU boost.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_profiles_network_is_as_named() {
    let k = KernelCluster::start_with("profile-net", &[("docker/fake_gpus/0/id", FAKE_GPU)]).await;
    wait_for(T, "the fake GPU in the agent's slots", || async {
        (k.c.node("a1")?["slots"]["total"]["gpus"] == 1).then_some(())
    })
    .await;
    let host = HostListener::start();
    let port = host.port.to_string();
    // profile, has a network, has a GPU
    let profiles = [
        ("docker-batch", false, false),
        ("docker-network", true, false),
        ("docker-network-ssh", true, false),
        ("docker-nvidia-batch", false, true),
        ("docker-nvidia-network", true, true),
    ];
    for (profile, network, gpu) in profiles {
        let mut constants = vec![
            ("PORT", port.as_str()),
            ("SCRIPT", NET_SCRIPT),
            ("DOCKER_CMD", r#"sh -c 'eval "$SCRIPT"'"#),
        ];
        if profile.ends_with("-ssh") {
            constants.push(("DOCKER_SSH", SOME_KEY));
        }
        let id = run_ok(&k, profile, &constants, &[]);
        let info = k.wait_ended(&id, T).await;
        assert_eq!(info["state"], "DONE", "{profile}: {info}");
        assert_eq!(info["qarnot_state"], "Success", "{profile}: {info}");
        let logs = k.c.cli_ok(&["logs", &id]);
        let interfaces: Vec<&str> = logs
            .lines()
            .find_map(|l| l.strip_prefix("interfaces:"))
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        if network {
            assert!(
                interfaces.contains(&"eth0"),
                "{profile} has an interface: {logs}"
            );
            assert!(
                logs.contains("reached-host"),
                "{profile} reaches the host: {logs}"
            );
        } else {
            assert_eq!(interfaces, ["lo"], "{profile} has only loopback: {logs}");
            assert!(
                logs.contains("unreachable"),
                "{profile} reached the host: {logs}"
            );
        }
        let gpus = if gpu {
            format!("gpus: [{FAKE_GPU}]")
        } else {
            "gpus: []".to_string()
        };
        assert!(logs.contains(&gpus), "{profile}: {logs}");
        assert_eq!(
            info["gpus"].as_array().map_or(0, Vec::len),
            usize::from(gpu)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_defined_profile_brings_its_network_and_default_constants() {
    let k = KernelCluster::start_with(
        "profile-custom",
        &[
            ("profiles/lab-batch/network", "none"),
            (
                "profiles/lab-batch/constants/DOCKER_REPO",
                "deckhand-test/busybox",
            ),
            (
                "profiles/lab-batch/constants/GREETING",
                "hello-from-profile",
            ),
            ("profiles/lab-batch/constants/TARGET", "world"),
        ],
    )
    .await;
    let out = k.c.cli(&[
        "run",
        "-d",
        "--profile",
        "lab-batch",
        "--constant",
        "TARGET=kernel",
        "--constant",
        r#"DOCKER_CMD=sh -c 'echo "$GREETING $TARGET"; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " "'"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let info = k.wait_ended(&id, T).await;
    assert_eq!(info["state"], "DONE", "{info}");
    assert_eq!(info["image"], "deckhand-test/busybox:latest", "{info}");
    let logs = k.c.cli_ok(&["logs", &id]);
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(
        lines,
        ["hello-from-profile kernel", "lo"],
        "the profile's default constants, the kernel's own winning, and no network"
    );
    // A profile name that is not defined is refused naming it and the known ones.
    let out = k.c.cli(&["run", "-d", "--profile", "lab-batsh"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("lab-batsh") && err.contains("lab-batch") && err.contains("docker-batch"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constants_set_user_hostname_workdir_and_an_empty_docker_cmd_keeps_the_images_own() {
    let image = common::build_variant(
        "profile-entrypoint",
        r#"ENTRYPOINT ["/bin/sh", "-c", "echo entry: $(id -u) $(hostname) $(pwd) $MODE"]"#,
    );
    let _tags = common::Tags(vec![image.clone()]);
    let k = KernelCluster::start("profile-consts").await;
    let (repo, tag) = image.split_once(':').expect("repo:tag");
    let id = run_ok(
        &k,
        "docker-batch",
        &[
            ("DOCKER_REPO", repo),
            ("DOCKER_TAG", tag),
            ("DOCKER_USER", "1234:1234"),
            ("DOCKER_HOST", "qarnot-node-7"),
            ("DOCKER_WORKDIR", "/tmp"),
            ("MODE", "fast"),
        ],
        &[],
    );
    let info = k.wait_ended(&id, T).await;
    assert_eq!(info["state"], "DONE", "{info}");
    let logs = k.c.cli_ok(&["logs", &id]);
    assert_eq!(logs.trim(), "entry: 1234 qarnot-node-7 /tmp fast", "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qarnot_disable_cpu_boost_caps_the_kernel_at_its_cpus() {
    let k = KernelCluster::start("profile-boost").await;
    // The kernel reads its own CPU limit from its cgroup (v1 or v2).
    let script = "cat /sys/fs/cgroup/cpu.max 2>/dev/null || echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)";
    let id = run_ok(
        &k,
        "docker-batch",
        &[
            ("QARNOT_DISABLE_CPU_BOOST", "true"),
            ("SCRIPT", script),
            ("DOCKER_CMD", r#"sh -c 'eval "$SCRIPT"'"#),
        ],
        &["--cpus", "0.5"],
    );
    let info = k.wait_ended(&id, T).await;
    assert_eq!(info["state"], "DONE", "{info}");
    let logs = k.c.cli_ok(&["logs", &id]);
    let limit: Vec<f64> = logs
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        limit.len() == 2 && limit[0] / limit[1] == 0.5,
        "half a CPU (quota / period): {logs}"
    );
    // Without cpus there is nothing to cap at: refused naming the constant and `cpus`.
    let out = run(
        &k,
        "docker-batch",
        &[("QARNOT_DISABLE_CPU_BOOST", "true"), ("DOCKER_CMD", "true")],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cpus") && err.contains("QARNOT_DISABLE_CPU_BOOST"),
        "{err}"
    );
}

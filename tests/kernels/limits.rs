//! The start benchmark, OOM kills and the creation concurrency limit.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_benchmark_runs_all_three_paths_and_cleans_up() {
    let k = KernelCluster::start("bench").await;
    let addr = format!("127.0.0.1:{}", k.agent.port);
    let out =
        k.c.cli_ok(&["bench", "start", "--agent-addr", &addr, "--n", "2"]);
    let last = out.lines().last().unwrap_or_default();
    assert!(last.starts_with("ratio agent/docker-cli: "), "{out}");
    assert!(out.contains("bollard create+start"), "{out}");
    assert!(containers(&k.c.ns).is_empty(), "the benchmark left kernels");
    let left = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=io.deckhand.bench"])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "the benchmark left containers");
    assert!(k.ps().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_over_its_memory_limit_is_reported_oom_killed() {
    let k = KernelCluster::start("oom").await;
    let id = k.run_detached(&[
        "--memory",
        "16MiB",
        TEST_IMAGE,
        "sh",
        "-c",
        "a=$(head -c 200000000 /dev/zero | tr '\\000' a); echo survived",
    ]);
    let info = k.wait_state(&id, "FAILED", Duration::from_secs(30)).await;
    assert_eq!(info["oom_killed"], true, "{info}");
    assert!(info["reason"].as_str().unwrap().contains("OOM"), "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creations_beyond_the_concurrency_limit_wait_their_turn() {
    let k = KernelCluster::start("concur").await;
    k.c.cli_ok(&["config", "set", "agent/kernel_creation_concurrency", "1"]);
    wait_for(T, "concurrency 1 applied", || async {
        k.agent
            .log()
            .contains("kernel creation concurrency changed")
            .then_some(())
    })
    .await;
    // A registry that accepts connections and never answers: the pull holds the only
    // creation slot.
    let stall = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let image = format!(
        "127.0.0.1:{}/stalls/forever:latest",
        stall.local_addr().unwrap().port()
    );
    let stuck = uuid::Uuid::new_v4().to_string();
    let waiting = uuid::Uuid::new_v4().to_string();
    let mut first =
        k.c.command_for(&["run", "-d", "--id", &stuck, &image, "true"])
            .spawn()
            .unwrap();
    k.wait_state(&stuck, "PULLING", T).await;
    let mut second =
        k.c.command_for(&["run", "-d", "--id", &waiting, TEST_IMAGE, "sleep", "60"])
            .spawn()
            .unwrap();
    k.wait_state(&waiting, "PREPARING", T).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        k.inspect(&waiting)["state"],
        "PREPARING",
        "started past the limit"
    );
    // Raising the limit lets it through without a restart.
    k.c.cli_ok(&["config", "set", "agent/kernel_creation_concurrency", "2"]);
    k.wait_state(&waiting, "RUNNING", T).await;
    assert!(second.wait().unwrap().success());
    k.c.cli_ok(&["rm", "-f", &stuck, &waiting]);
    let _ = first.kill();
    let _ = first.wait();
    drop(stall);
}

//! `deckhand bench` scenarios run with tiny sizes against the real components (etcd, the
//! manager and agents, the Docker engine): each prints its figures, ends with its
//! `ratio …: X` line (`fleet` then adds its `at N agents: …` line for scripts), and leaves
//! nothing behind — no container, process, scratch dir or
//! etcd key — when it succeeds and when it is interrupted. No timing is asserted: the
//! figures belong in the README, measured on a quiet machine with a release build.
//! (`bench start` without load is in `tests/kernels/`.)

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{containers, deckhand_bin, wait_for, Cluster, KernelCluster};

/// `deckhand bench ARGS` with only PATH and TMPDIR set (the scratch dirs of scenarios that
/// start their own cluster go under `tmp`).
fn bench(tmp: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(deckhand_bin());
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TMPDIR", tmp)
        .arg("bench")
        .args(args);
    c
}

/// Runs a benchmark to completion; its stdout, or a panic with its stderr.
fn bench_ok(tmp: &Path, args: &[&str]) -> String {
    let out: Output = bench(tmp, args).output().expect("run deckhand bench");
    assert!(
        out.status.success(),
        "deckhand bench {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The number on the last line, which must start with `prefix`.
fn last_ratio(out: &str, prefix: &str) -> f64 {
    ratio_line(out.lines().last().unwrap_or_default(), out, prefix)
}

/// The number at the end of `last`, which must start with `prefix`.
fn ratio_line(last: &str, out: &str, prefix: &str) -> f64 {
    assert!(last.starts_with(prefix), "last line: {last}\n{out}");
    last.rsplit(": ")
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number at the end of: {last}"))
}

/// A temp dir for the benchmark's own scratch dirs.
fn tmp_in(c: &Cluster) -> PathBuf {
    let tmp = c.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    tmp
}

/// Processes whose command line mentions `needle` (the namespace every daemon a scenario
/// starts is given, etcd's member name included).
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(cmdline);
        }
    }
    found
}

/// Keys under namespace `ns` in the test's etcd.
async fn keys_of(c: &Cluster, ns: &str) -> i64 {
    c.etcd_client()
        .await
        .get(
            format!("/deckhand/{ns}/"),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .unwrap()
        .count()
}

/// Nothing of namespace `ns` is left: containers, processes, scratch dirs under `tmp`,
/// and (when the scenario used the test's etcd) keys.
async fn assert_nothing_left(c: &Cluster, ns: &str, tmp: &Path) {
    assert!(containers(ns).is_empty(), "containers left");
    wait_for(Duration::from_secs(5), "no process left", || async {
        processes_with(ns).is_empty().then_some(())
    })
    .await;
    let dirs: Vec<_> = std::fs::read_dir(tmp).unwrap().flatten().collect();
    assert!(dirs.is_empty(), "scratch dirs left: {dirs:?}");
    assert_eq!(keys_of(c, ns).await, 0, "etcd keys left");
}

/// No container made by a benchmark itself (Docker CLI, bollard) is left.
fn assert_no_bench_containers() {
    let left = Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=io.deckhand.bench"])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "the benchmark left containers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stats_benchmark_reads_every_kernel_in_the_agent_and_with_docker_stats() {
    let k = KernelCluster::start("bench-stats").await;
    let addr = format!("127.0.0.1:{}", k.agent.port);
    let tmp = tmp_in(&k.c);
    let out = bench_ok(
        &tmp,
        &[
            "stats",
            "--agent-addr",
            &addr,
            "--n",
            "2",
            "--rounds",
            "3",
            "--docker-rounds",
            "1",
        ],
    );
    assert!(out.contains("CPU and memory of 2 running kernels"), "{out}");
    assert!(out.contains("agent read, inside the agent"), "{out}");
    assert!(out.contains("docker stats --no-stream"), "{out}");
    assert!(last_ratio(&out, "ratio agent/docker-stats: ") >= 0.0);
    assert!(containers(&k.c.ns).is_empty(), "the benchmark left kernels");
    assert!(k.ps().is_empty());
    assert_no_bench_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_benchmark_reports_idle_and_loaded_starts_side_by_side() {
    let k = KernelCluster::start("bench-loaded").await;
    let addr = format!("127.0.0.1:{}", k.agent.port);
    let tmp = tmp_in(&k.c);
    let out = bench_ok(
        &tmp,
        &["start", "--agent-addr", &addr, "--n", "1", "--loaded", "2"],
    );
    assert!(out.contains("2 running"), "{out}");
    assert!(out.contains("bollard create+start"), "{out}");
    assert!(out.contains("ratio agent/docker-cli: idle "), "{out}");
    last_ratio(&out, "ratio agent/docker-cli with 2 running: ");
    assert!(containers(&k.c.ns).is_empty(), "the benchmark left kernels");
    assert!(k.ps().is_empty());
    assert_no_bench_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recovery_benchmark_restarts_the_agent_and_cuts_the_engine() {
    let c = Cluster::start("bench-recovery").await;
    let tmp = tmp_in(&c);
    let ns = format!("{}-own", c.ns);
    let out = bench_ok(
        &tmp,
        &[
            "recovery",
            "--n",
            "2",
            "--outage",
            "1s",
            "--etcd-addr",
            &c.etcd_addr,
            "--namespace",
            &ns,
        ],
    );
    assert!(out.contains("agent kill -9 → restart"), "{out}");
    assert!(out.contains("engine connection cut 1s → restored"), "{out}");
    assert!(out.contains("heartbeat with all 2"), "{out}");
    assert!(
        out.contains("0 lost: met") || out.contains("0 lost: NOT met"),
        "{out}"
    );
    // The lost column: nothing lost in either fault.
    for row in out.lines().filter(|l| l.contains("→")) {
        assert_eq!(row.split_whitespace().last(), Some("0"), "{row}");
    }
    last_ratio(&out, "ratio recovery/goal: ");
    assert_nothing_left(&c, &ns, &tmp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_benchmark_runs_simulated_agents_against_a_real_manager() {
    let c = Cluster::start("bench-fleet").await;
    let tmp = tmp_in(&c);
    let ns = format!("{}-own", c.ns);
    let out = bench_ok(
        &tmp,
        &[
            "fleet",
            "--agents",
            "3",
            "--steps",
            "2",
            "--kernels-per-agent",
            "2",
            "--window",
            "1s",
            "--heartbeat-interval",
            "1s",
            "--etcd-addr",
            &c.etcd_addr,
            "--namespace",
            &ns,
        ],
    );
    assert!(out.contains("simulated agents"), "{out}");
    assert!(out.contains("in-memory runtime"), "{out}");
    let sizes: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| *w == "2" || *w == "3")
        .collect();
    assert_eq!(sizes, ["2", "3"], "one row per fleet size: {out}");
    assert!(out.contains("growth 2 → 3 agents"), "{out}");
    // The table: agents first, then heartbeat p50 and p99 and the manager's CPU.
    let header: Vec<&str> = out
        .lines()
        .find(|l| l.trim_start().starts_with("agents"))
        .unwrap_or_else(|| panic!("no table header: {out}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        header[..6],
        ["agents", "hb", "p50", "hb", "p99", "beats/s"],
        "{out}"
    );
    assert!(header.contains(&"%core"), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    ratio_line(
        lines[lines.len() - 2],
        &out,
        "ratio worst/goal at 3 agents ",
    );
    // Last, for scripts: `at N agents: heartbeat p99 X ms, manager Y % of a core`.
    let last = *lines.last().unwrap();
    let rest = last
        .strip_prefix("at 3 agents: heartbeat p99 ")
        .unwrap_or_else(|| panic!("last line: {last}\n{out}"));
    let (p99, rest) = rest.split_once(" ms, manager ").expect(last);
    let cpu = rest.strip_suffix(" % of a core").expect(last);
    assert!(p99.parse::<f64>().unwrap() >= 0.0, "{last}");
    assert!(cpu.parse::<f64>().unwrap() >= 0.0, "{last}");
    assert_nothing_left(&c, &ns, &tmp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_footprint_benchmark_starts_its_own_etcd_and_measures_an_idle_agent() {
    // Only the namespace is shared with this cluster: the benchmark starts its own etcd.
    let c = Cluster::start("bench-footprint").await;
    let tmp = tmp_in(&c);
    let ns = format!("{}-own", c.ns);
    let out = bench_ok(&tmp, &["footprint", "--duration", "1s", "--namespace", &ns]);
    for row in [
        "RSS",
        "CPU",
        "start → first accepted heartbeat",
        "SIGTERM → exit",
    ] {
        assert!(out.lines().any(|l| l.starts_with(row)), "{row}: {out}");
    }
    assert!(out.contains("Backend.AI agent"), "{out}");
    last_ratio(&out, "ratio worst/goal (");
    assert_nothing_left(&c, &ns, &tmp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_benchmark_still_removes_everything_it_made() {
    let c = Cluster::start("bench-interrupt").await;
    let tmp = tmp_in(&c);
    let ns = format!("{}-own", c.ns);
    let child = bench(
        &tmp,
        &[
            "recovery",
            "--n",
            "3",
            "--etcd-addr",
            &c.etcd_addr,
            "--namespace",
            &ns,
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Interrupted once its kernels run.
    wait_for(
        Duration::from_secs(60),
        "the benchmark's kernels",
        || async { (containers(&ns).len() == 3).then_some(()) },
    )
    .await;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("interrupted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_nothing_left(&c, &ns, &tmp).await;
}

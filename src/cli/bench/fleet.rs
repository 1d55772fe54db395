//! `bench fleet`: a real etcd and a real manager (a child process, measured from /proc)
//! under N simulated agents in this process ([`hollow`](super::hollow)), at growing fleet
//! sizes (100 / 500 / 1,000 by default). At each size, once every agent is ALIVE and has
//! reported its kernels, one heartbeat interval settles, then a window is measured:
//! heartbeat round trips (p50/p99, as the agents see them), the manager's CPU (fraction of
//! a core) and RSS, etcd's write rate (key revisions and raft proposals per second) and,
//! when this benchmark started etcd, its CPU and RSS; then `deckhand nodes` and
//! `deckhand ps` are run over the fleet (the real CLI, median of three).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use etcd_client::GetOptions;
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cluster::{Cluster, ClusterArgs};
use super::hollow::Fleet;
use super::procfs::{self, cores, mib};
use super::{interruptible, ms, verdict, Dist};
use crate::wire::pb::AgentState;

#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Simulated agents at the last (largest) size.
    #[arg(long, default_value_t = 1000)]
    pub agents: u32,
    /// Smaller fleet sizes measured on the way (those below --agents).
    #[arg(long, value_delimiter = ',', default_value = "100,500")]
    pub steps: Vec<u32>,
    /// Kernels each simulated agent holds (in-memory runtime).
    #[arg(long, default_value_t = 3)]
    pub kernels_per_agent: u32,
    /// How long each size is measured.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// The agents' heartbeat interval [default: the cluster default, 5s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Option<Duration>,
}

/// Goals at the largest size.
const GOAL_P99: Duration = Duration::from_millis(50);
const GOAL_CORES: f64 = 0.5;

/// The figures of one fleet size.
struct Row {
    agents: u32,
    ramp: Duration,
    rtt: Dist,
    failed: u64,
    beats_per_s: f64,
    manager_cores: f64,
    manager_rss: u64,
    writes_per_s: f64,
    proposals_per_s: Option<f64>,
    etcd: Option<(f64, u64)>,
    bench: (f64, u64),
    nodes: Duration,
    ps: Duration,
}

pub async fn run(a: FleetArgs) -> anyhow::Result<()> {
    if a.agents == 0 {
        bail!("--agents: give at least 1");
    }
    let mut sizes: Vec<u32> = a
        .steps
        .iter()
        .copied()
        .filter(|s| *s > 0 && *s < a.agents)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes.push(a.agents);
    let mut cluster = Cluster::start(&a.cluster).await?;
    let fleet = Arc::new(Fleet::new(
        cluster.etcd.clone(),
        &cluster.ns,
        cluster.dir.join("simulated"),
        a.kernels_per_agent,
    ));
    let result = interruptible(measure(&mut cluster, &fleet, &a, &sizes)).await;
    fleet.stop().await;
    cluster.cleanup().await;
    let rows = result?;
    print(&rows, &a);
    Ok(())
}

async fn measure(
    cluster: &mut Cluster,
    fleet: &Arc<Fleet>,
    a: &FleetArgs,
    sizes: &[u32],
) -> anyhow::Result<Vec<Row>> {
    if let Some(i) = a.heartbeat_interval {
        cluster
            .set(
                "agent/heartbeat_interval",
                &humantime::format_duration(i).to_string(),
            )
            .await?;
    }
    let interval = a.heartbeat_interval.unwrap_or(Duration::from_secs(5));
    cluster.start_manager().await?;
    let manager_pid = cluster
        .manager
        .as_ref()
        .and_then(|m| m.pid())
        .context("the manager is not running")?;
    let manager_addr = cluster
        .manager
        .as_ref()
        .map(|m| m.addr.clone())
        .unwrap_or_default();
    eprintln!(
        "bench fleet: simulated agents (own etcd leases, registrations and gRPC heartbeats; kernels on the in-memory runtime) against a real manager and etcd, namespace {}",
        cluster.ns
    );
    let mut rows = Vec::new();
    let mut started = 0u32;
    for &size in sizes {
        let t0 = Instant::now();
        // Started in batches, as a fleet that comes up in a few seconds would.
        futures::stream::iter(started..size)
            .map(|i| {
                let fleet = fleet.clone();
                async move { fleet.spawn_agent(format!("sim-{i:05}")).await }
            })
            .buffer_unordered(50)
            .try_collect::<()>()
            .await?;
        started = size;
        wait_ready(
            cluster,
            size,
            a.kernels_per_agent,
            Duration::from_secs(60) + Duration::from_millis(100) * size,
        )
        .await?;
        let ramp = t0.elapsed();
        eprintln!(
            "bench fleet: {size} agents ALIVE after {:.1}s; settling, then measuring {:?}",
            ramp.as_secs_f64(),
            a.window
        );
        tokio::time::sleep(interval).await;
        let _ = fleet.take();
        let etcd_pid = cluster.etcd_pid();
        let sample = |pid: Option<u32>| pid.and_then(procfs::sample);
        let (m0, e0, b0) = (
            sample(Some(manager_pid)),
            sample(etcd_pid),
            sample(Some(std::process::id())),
        );
        let (r0, p0) = (
            revision(cluster).await?,
            proposals(&cluster.etcd_url()).await,
        );
        let w0 = Instant::now();
        tokio::time::sleep(a.window).await;
        let (rtts, failed) = fleet.take();
        let secs = w0.elapsed().as_secs_f64();
        let (m1, e1, b1) = (
            sample(Some(manager_pid)),
            sample(etcd_pid),
            sample(Some(std::process::id())),
        );
        let (r1, p1) = (
            revision(cluster).await?,
            proposals(&cluster.etcd_url()).await,
        );
        let (Some(m0), Some(m1)) = (m0, m1) else {
            bail!("the manager exited");
        };
        let beats = rtts.len();
        let nodes = time_cli(&manager_addr, "nodes", size as usize).await?;
        let ps = time_cli(&manager_addr, "ps", (size * a.kernels_per_agent) as usize).await?;
        let pair = |a: Option<procfs::Sample>, b: Option<procfs::Sample>| {
            a.zip(b).map(|(a, b)| (cores(&a, &b), b.rss_bytes))
        };
        rows.push(Row {
            agents: size,
            ramp,
            rtt: Dist::of(rtts),
            failed,
            beats_per_s: beats as f64 / secs,
            manager_cores: cores(&m0, &m1),
            manager_rss: m1.rss_bytes,
            writes_per_s: (r1 - r0) as f64 / secs,
            proposals_per_s: p0.zip(p1).map(|(a, b)| (b - a) / secs),
            etcd: pair(e0, e1),
            bench: pair(b0, b1).unwrap_or_default(),
            nodes,
            ps,
        });
    }
    Ok(rows)
}

/// Waits until the manager lists `size` agents ALIVE, each having reported its kernels.
async fn wait_ready(
    cluster: &Cluster,
    size: u32,
    kernels: u32,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let ready = cluster
            .list_agents()
            .await
            .map(|l| {
                l.iter()
                    .filter(|a| a.state() == AgentState::Alive && a.kernels_reported >= kernels)
                    .count()
            })
            .unwrap_or(0);
        if ready >= size as usize {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {ready} of {size} simulated agents were ALIVE with their kernels after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// etcd's current revision (one per key write).
async fn revision(cluster: &Cluster) -> anyhow::Result<i64> {
    let resp = cluster
        .etcd_client()
        .await?
        .get(
            cluster.keys.root(),
            Some(GetOptions::new().with_count_only()),
        )
        .await?;
    Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
}

/// `etcd_server_proposals_committed_total` from etcd's `/metrics` (plain HTTP).
async fn proposals(url: &str) -> Option<f64> {
    let host = url.strip_prefix("http://")?.trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(host).await.ok()?;
    let req = format!("GET /metrics HTTP/1.0\r\nHost: {host}\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body))
        .await
        .ok()?
        .ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("etcd_server_proposals_committed_total "))
        .and_then(|v| v.trim().parse().ok())
}

/// Median wall time of three runs of `deckhand <command>` against the manager; a `--json`
/// run first checks that it lists `expect` entries.
async fn time_cli(manager: &str, command: &str, expect: usize) -> anyhow::Result<Duration> {
    let exe = std::env::current_exe()?;
    let cli = |json: bool| {
        let mut c = tokio::process::Command::new(&exe);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("DECKHAND_") {
                c.env_remove(k);
            }
        }
        c.args([command, "--manager", manager]);
        if json {
            c.arg("--json");
        }
        c.stdin(std::process::Stdio::null()).kill_on_drop(true);
        c
    };
    let out = cli(true).output().await?;
    let listed = serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).map(|v| v.len());
    if !out.status.success() || listed.as_ref().ok() != Some(&expect) {
        bail!(
            "deckhand {command} listed {listed:?}, expected {expect}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut times = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        let out = cli(false).output().await?;
        times.push(t0.elapsed());
        if !out.status.success() {
            bail!(
                "deckhand {command}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(Dist::of(times).p50)
}

fn print(rows: &[Row], a: &FleetArgs) {
    let interval = a.heartbeat_interval.unwrap_or(Duration::from_secs(5));
    println!(
        "deckhand bench fleet: simulated agents (each with its own etcd lease, registration and gRPC heartbeats every {}, {} kernels each on the in-memory runtime) against a real manager and etcd; {:?} measured per size",
        humantime::format_duration(interval),
        a.kernels_per_agent,
        a.window
    );
    println!(
        "{:>6} {:>7} {:>7} {:>8} {:>6} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8}",
        "agents",
        "hb p50",
        "hb p99",
        "beats/s",
        "failed",
        "mgr %core",
        "mgr RSS",
        "etcd w/s",
        "etcd prop/s",
        "etcd CPU",
        "etcd RSS",
        "bench CPU",
        "nodes",
        "ps"
    );
    for r in rows {
        let (ecpu, erss) = r
            .etcd
            .map(|(c, m)| (format!("{c:.3}"), format!("{:.0}M", mib(m))))
            .unwrap_or(("—".into(), "—".into()));
        println!(
            "{:>6} {:>5.1}ms {:>5.1}ms {:>8.1} {:>6} {:>8.1}% {:>7.1}M {:>8.1} {:>11} {:>8} {:>8} {:>9.3} {:>6.0}ms {:>6.0}ms",
            r.agents,
            ms(r.rtt.p50),
            ms(r.rtt.p99),
            r.beats_per_s,
            r.failed,
            r.manager_cores * 100.0,
            mib(r.manager_rss),
            r.writes_per_s,
            r.proposals_per_s.map(|p| format!("{p:.1}")).unwrap_or("—".into()),
            ecpu,
            erss,
            r.bench.0,
            ms(r.nodes),
            ms(r.ps),
        );
    }
    println!("mgr %core = the manager's CPU in % of one core; other CPU in cores (1.0 = one core), RSS in MiB; heartbeat round trips as the agents see them; etcd w/s = key revisions per second; ps lists {} kernels per agent; bench = this process (the simulated agents)", a.kernels_per_agent);
    let ramps: Vec<String> = rows
        .iter()
        .map(|r| format!("{}: {:.1}s", r.agents, r.ramp.as_secs_f64()))
        .collect();
    println!(
        "time until ALIVE with kernels reported: {}",
        ramps.join(", ")
    );
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return;
    };
    if rows.len() > 1 {
        let x = |a: f64, b: f64| {
            if a > 0.0 {
                format!("×{:.1}", b / a)
            } else {
                "—".into()
            }
        };
        println!(
            "growth {} → {} agents (×{:.0}): heartbeat p99 {}, manager CPU {}, manager RSS {}, nodes {}, ps {}",
            first.agents,
            last.agents,
            f64::from(last.agents) / f64::from(first.agents),
            x(ms(first.rtt.p99), ms(last.rtt.p99)),
            x(first.manager_cores, last.manager_cores),
            x(first.manager_rss as f64, last.manager_rss as f64),
            x(ms(first.nodes), ms(last.nodes)),
            x(ms(first.ps), ms(last.ps)),
        );
    }
    let p99_ok = last.rtt.p99 <= GOAL_P99 && last.failed == 0;
    let cpu_ok = last.manager_cores < GOAL_CORES;
    println!(
        "goal at {} agents: heartbeat p99 ≤ 50 ms: {} ({:.1} ms, {} failed); manager under half a core: {} ({:.3})",
        last.agents,
        verdict(p99_ok),
        ms(last.rtt.p99),
        last.failed,
        verdict(cpu_ok),
        last.manager_cores
    );
    let by_p99 = ms(last.rtt.p99) / ms(GOAL_P99);
    let by_cpu = last.manager_cores / GOAL_CORES;
    let (what, ratio) = if by_p99 >= by_cpu {
        ("heartbeat p99", by_p99)
    } else {
        ("manager CPU", by_cpu)
    };
    println!(
        "ratio worst/goal at {} agents ({what}): {ratio:.2}",
        last.agents
    );
    // Last, for scripts (`tail -1`): the largest size actually run.
    println!(
        "{}",
        summary_line(last.agents, last.rtt.p99, last.manager_cores)
    );
}

/// `at 1000 agents: heartbeat p99 3.8 ms, manager 4.9 % of a core`.
pub fn summary_line(agents: u32, p99: Duration, manager_cores: f64) -> String {
    format!(
        "at {agents} agents: heartbeat p99 {:.1} ms, manager {:.1} % of a core",
        ms(p99),
        manager_cores * 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_line_reads_as_scripts_expect() {
        assert_eq!(
            summary_line(1000, Duration::from_micros(3_800), 0.049),
            "at 1000 agents: heartbeat p99 3.8 ms, manager 4.9 % of a core"
        );
    }
}

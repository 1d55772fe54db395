//! `bench footprint`: one idle agent (started here, with its own etcd and manager) at the
//! default heartbeat: start → first heartbeat the manager accepted (its `last_seen_ms`
//! minus the spawn time), then `--duration` idle — RSS and CPU time read from /proc — and
//! SIGTERM → exit. The Backend.AI agent's figures, measured on this kind of machine, are
//! printed beside each.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use super::cluster::{Cluster, ClusterArgs};
use super::procfs::{self, mib};
use super::{interruptible, ms, verdict};

#[derive(Debug, Clone, Args)]
pub struct FootprintArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// How long the agent idles while measured.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
}

const AGENT: &str = "bench-idle";

struct Figures {
    first_heartbeat_ms: i64,
    rss: u64,
    peak_rss: u64,
    threads: u64,
    cpu_per_min: f64,
    interval_ms: u64,
    heartbeats: u64,
    exit_ms: f64,
    exit_ok: bool,
}

pub async fn run(a: FootprintArgs) -> anyhow::Result<()> {
    if a.duration.is_zero() {
        bail!("--duration: give a positive duration");
    }
    let mut cluster = Cluster::start(&a.cluster).await?;
    let result = interruptible(measure(&mut cluster, a.duration)).await;
    cluster.cleanup().await;
    let f = result?;
    let pct = f.cpu_per_min / 60.0 * 100.0;
    let secs = a.duration.as_secs_f64();
    println!(
        "deckhand bench footprint: one idle agent for {secs:.0} s at a {} ms heartbeat ({} heartbeats), 1 process, {} threads",
        f.interval_ms, f.heartbeats, f.threads
    );
    let rows = [
        (
            "RSS".to_string(),
            format!("{:.1} MiB (peak {:.1})", mib(f.rss), mib(f.peak_rss)),
            format!("≤ 25 MiB: {}", verdict(mib(f.rss) <= 25.0)),
            "175 MiB in two processes",
        ),
        (
            "CPU".to_string(),
            format!("{:.3} CPU-s/min = {pct:.3} % of a core", f.cpu_per_min),
            format!("≤ 0.1 %: {}", verdict(pct <= 0.1)),
            "0.14 % at a 20 s heartbeat",
        ),
        (
            "start → first accepted heartbeat".to_string(),
            format!("{} ms", f.first_heartbeat_ms),
            format!("≤ 100 ms: {}", verdict(f.first_heartbeat_ms <= 100)),
            "0.7–0.9 s",
        ),
        (
            "SIGTERM → exit".to_string(),
            format!(
                "{:.0} ms{}",
                f.exit_ms,
                if f.exit_ok {
                    ""
                } else {
                    " (not a clean exit 0)"
                }
            ),
            format!("≤ 100 ms: {}", verdict(f.exit_ms <= 100.0 && f.exit_ok)),
            "1.2 s",
        ),
    ];
    println!(
        "{:<34} {:<36} {:<16} Backend.AI agent",
        "", "deckhand agent", "goal"
    );
    for (what, value, goal, reference) in &rows {
        println!("{what:<34} {value:<36} {goal:<16} {reference}");
    }
    let ratios = [
        ("RSS", mib(f.rss) / 25.0),
        ("CPU", pct / 0.1),
        ("first heartbeat", f.first_heartbeat_ms as f64 / 100.0),
        ("exit", f.exit_ms / 100.0),
    ];
    let (what, worst) = ratios
        .into_iter()
        .fold(("", 0.0), |acc, r| if r.1 > acc.1 { r } else { acc });
    println!("ratio worst/goal ({what}): {worst:.2}");
    Ok(())
}

async fn measure(c: &mut Cluster, duration: Duration) -> anyhow::Result<Figures> {
    c.start_manager().await?;
    let i = c.spawn_agent(AGENT, &[])?;
    let spawned = c.agents[i].spawned_ms;
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let seen = c.list_agents().await.ok().and_then(|l| {
            l.into_iter().find(|s| {
                s.heartbeats_received > 0
                    && s.identity.as_ref().is_some_and(|i| i.agent_id == AGENT)
            })
        });
        if let Some(s) = seen {
            break s;
        }
        if Instant::now() > deadline {
            bail!(
                "no heartbeat from the agent within 30s:\n{}",
                c.agents[i].log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    if first.heartbeats_received > 1 {
        bail!(
            "the first heartbeat was missed: {} already",
            first.heartbeats_received
        );
    }
    let pid = c.agents[i].pid().context("the agent exited")?;
    let s0 = procfs::sample(pid).context("the agent exited")?;
    tokio::time::sleep(duration).await;
    let s1 = procfs::sample(pid).context("the agent exited")?;
    let last = c
        .list_agents()
        .await?
        .into_iter()
        .find(|s| s.identity.as_ref().is_some_and(|i| i.agent_id == AGENT))
        .context("the agent is gone from the manager")?;
    let minutes = s1.at.duration_since(s0.at).as_secs_f64() / 60.0;
    let (status, took) = c.agents[i]
        .terminate(Duration::from_secs(30))
        .await
        .context("the agent exited")?;
    Ok(Figures {
        first_heartbeat_ms: first.last_seen_ms - spawned,
        rss: s1.rss_bytes,
        peak_rss: s1.peak_rss_bytes,
        threads: s1.threads,
        cpu_per_min: s1.cpu.saturating_sub(s0.cpu).as_secs_f64() / minutes,
        interval_ms: last.heartbeat_interval_ms,
        heartbeats: last.heartbeats_received - first.heartbeats_received,
        exit_ms: ms(took),
        exit_ok: status.is_some_and(|s| s.success()),
    })
}

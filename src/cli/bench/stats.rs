//! `bench stats`: N running kernels; how long the agent takes to read every kernel's CPU
//! and memory — the read heartbeats make (the supervisor's `usage()`: two small cgroup
//! files per kernel), timed inside the agent through `AgentService.ReadUsage` — against
//! `docker stats --no-stream` over the same containers, in the same run.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use super::agent::{fill, AgentTarget, Made};
use super::{interruptible, ms, verdict, Dist};
use crate::wire::pb::ReadUsageRequest;

#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub target: AgentTarget,
    /// Running kernels.
    #[arg(long, default_value_t = 100)]
    pub n: u32,
    /// Reads through the agent.
    #[arg(long, default_value_t = 50)]
    pub rounds: u32,
    /// Runs of `docker stats --no-stream` (seconds each at 100 containers).
    #[arg(long, default_value_t = 3)]
    pub docker_rounds: u32,
}

/// The goal for 100 kernels.
const GOAL: Duration = Duration::from_millis(20);

pub async fn run(a: StatsArgs) -> anyhow::Result<()> {
    if a.n == 0 || a.rounds == 0 || a.docker_rounds == 0 {
        bail!("--n, --rounds, --docker-rounds: give at least 1");
    }
    let target = interruptible(a.target.open()).await?;
    let agent = target.agent.clone();
    let made = Made::new();
    let result = interruptible(async {
        let kernels = fill(&agent, &made, &a.target.image, &["sleep", "600"], a.n).await?;
        let containers: Vec<String> = kernels.iter().map(|k| k.container_id.clone()).collect();
        let mut c = agent.clone();
        let (mut inside, mut rpc) = (Vec::new(), Vec::new());
        for _ in 0..a.rounds {
            let t0 = Instant::now();
            let r = c
                .read_usage(ReadUsageRequest {})
                .await
                .map_err(|s| anyhow::anyhow!("agent: {}", s.message()))?
                .into_inner();
            rpc.push(t0.elapsed());
            if r.kernels < a.n {
                bail!(
                    "the agent read {} kernels of the {} running ones",
                    r.kernels,
                    a.n
                );
            }
            inside.push(Duration::from_nanos(r.read_ns));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut docker = Vec::new();
        for _ in 0..a.docker_rounds {
            let t0 = Instant::now();
            let out = tokio::process::Command::new("docker")
                .args([
                    "stats",
                    "--no-stream",
                    "--format",
                    "{{.ID}} {{.CPUPerc}} {{.MemUsage}}",
                ])
                .args(&containers)
                .output()
                .await
                .context("cannot run the docker CLI")?;
            docker.push(t0.elapsed());
            let lines = String::from_utf8_lossy(&out.stdout).lines().count();
            if !out.status.success() || lines != containers.len() {
                bail!(
                    "docker stats showed {lines} of {} containers: {}",
                    containers.len(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        Ok((Dist::of(inside), Dist::of(rpc), Dist::of(docker)))
    })
    .await;
    made.cleanup(&agent).await;
    target.close().await;
    let (inside, rpc, docker) = result?;
    println!(
        "deckhand bench stats: CPU and memory of {} running kernels of {}",
        a.n, a.target.image
    );
    println!(
        "{:<52} {:>9} {:>9} {:>9} {:>5}",
        "path", "p50 ms", "p95 ms", "max ms", "runs"
    );
    for (name, d) in [
        ("agent read, inside the agent (the heartbeat path)", &inside),
        ("agent ReadUsage round trip (gRPC)", &rpc),
        ("docker stats --no-stream (same containers)", &docker),
    ] {
        println!(
            "{name:<52} {:>9.2} {:>9.2} {:>9.2} {:>5}",
            ms(d.p50),
            ms(d.p95),
            ms(d.max),
            d.n
        );
    }
    // The goal is for 100 kernels: fewer are held to it, more to it in proportion.
    let goal = GOAL.mul_f64((f64::from(a.n) / 100.0).max(1.0));
    println!(
        "goal ≤ {:.1} ms for {} kernels (20 ms for 100), agent read p95: {}",
        ms(goal),
        a.n,
        verdict(inside.p95 <= goal)
    );
    println!(
        "ratio agent/docker-stats: {:.4}",
        ms(inside.p50) / ms(docker.p50)
    );
    Ok(())
}

//! `bench start`: sequential kernel starts through the agent (CreateKernel until RUNNING)
//! against `docker run -d` (the way the DRMAA2 tracker starts containers) and bollard
//! create+start (the floor any agent pays), all three in the same run, one warm-up each.
//!
//! With `--loaded N` the same is measured again with N more kernels running on the agent:
//! the agent must not slow down as it holds more kernels (no per-kernel work on the create
//! path). The engine itself slows down with many containers running, so the figure to
//! watch is the agent's overhead over bollard create+start, idle and loaded, side by side.

use std::time::Instant;

use anyhow::bail;
use bollard::models::ContainerCreateBody;
use clap::Args;
use tonic::transport::Channel;

use super::agent::{create_running, docker_cli, fill, spec, AgentTarget, Made, LABEL};
use super::{interruptible, ms, Dist};
use crate::runtime::docker::Docker;
use crate::wire::pb::agent_service_client::AgentServiceClient;

#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub target: AgentTarget,
    /// Starts per path.
    #[arg(long, default_value_t = 50)]
    pub n: u32,
    /// Measure again with this many more kernels running on the agent (0: idle only).
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub loaded: u32,
}

const CMD: [&str; 2] = ["sleep", "600"];

/// p50s of one measurement: agent, Docker CLI, bollard.
struct Paths {
    agent: Dist,
    cli: Dist,
    raw: Dist,
}

pub async fn run(a: StartArgs) -> anyhow::Result<()> {
    if a.n == 0 {
        bail!("--n: give at least 1");
    }
    let docker = Docker::connect().await?;
    let target = interruptible(a.target.open()).await?;
    let agent = target.agent.clone();
    let idle_run = Made::new();
    let load = Made::new();
    let loaded_run = Made::new();
    let result = interruptible(async {
        let idle = measure(&agent, &docker, &a, &idle_run).await?;
        if a.loaded == 0 {
            return Ok((idle, None));
        }
        // The idle run's kernels and containers go first: the load is exactly --loaded.
        idle_run.cleanup(&agent).await;
        fill(&agent, &load, &a.target.image, &CMD, a.loaded).await?;
        let loaded = measure(&agent, &docker, &a, &loaded_run).await?;
        Ok((idle, Some(loaded)))
    })
    .await;
    for made in [&idle_run, &loaded_run, &load] {
        made.cleanup(&agent).await;
    }
    target.close().await;
    let (idle, loaded) = result?;
    println!(
        "deckhand bench start: {} sequential starts of {} per path (after one warm-up each)",
        a.n, a.target.image
    );
    let names = [
        "agent CreateKernel → RUNNING",
        "docker run -d (CLI)",
        "bollard create+start",
    ];
    let Some(loaded) = loaded else {
        println!(
            "{:<34} {:>9} {:>9} {:>9}",
            "path", "p50 ms", "p95 ms", "mean ms"
        );
        for (name, s) in names.iter().zip([&idle.agent, &idle.cli, &idle.raw]) {
            println!(
                "{name:<34} {:>9.1} {:>9.1} {:>9.1}",
                ms(s.p50),
                ms(s.p95),
                ms(s.mean)
            );
        }
        println!(
            "agent over bollard create+start at p50: {:+.1} ms",
            ms(idle.agent.p50) - ms(idle.raw.p50)
        );
        println!(
            "ratio agent/docker-cli: {:.2}",
            ms(idle.agent.p50) / ms(idle.cli.p50)
        );
        return Ok(());
    };
    let n = a.loaded;
    println!(
        "{:<34} {:>15} {:>15}",
        "path, p50 (p95) ms",
        "idle",
        format!("{n} running")
    );
    let cell = |d: &Dist| format!("{:.1} ({:.1})", ms(d.p50), ms(d.p95));
    for (name, (i, l)) in names.iter().zip([
        (&idle.agent, &loaded.agent),
        (&idle.cli, &loaded.cli),
        (&idle.raw, &loaded.raw),
    ]) {
        println!("{name:<34} {:>15} {:>15}", cell(i), cell(l));
    }
    println!(
        "agent over bollard create+start at p50: idle {:+.1} ms, with {n} running {:+.1} ms",
        ms(idle.agent.p50) - ms(idle.raw.p50),
        ms(loaded.agent.p50) - ms(loaded.raw.p50)
    );
    println!(
        "ratio agent/docker-cli: idle {:.2}",
        ms(idle.agent.p50) / ms(idle.cli.p50)
    );
    println!(
        "ratio agent/docker-cli with {n} running: {:.2}",
        ms(loaded.agent.p50) / ms(loaded.cli.p50)
    );
    Ok(())
}

/// One warm-up and `n` rounds of the three paths, interleaved.
async fn measure(
    agent: &AgentServiceClient<Channel>,
    docker: &Docker,
    a: &StartArgs,
    made: &Made,
) -> anyhow::Result<Paths> {
    let mut agent = agent.clone();
    let image = &a.target.image;
    let (mut agent_t, mut cli_t, mut raw_t) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..=a.n {
        let s = spec(image, &CMD);
        made.kernel(&s.kernel_id);
        let t0 = Instant::now();
        create_running(&mut agent, s).await?;
        let took = t0.elapsed();
        let t0 = Instant::now();
        docker_cli(&made.tag, image, &CMD).await?;
        let cli = t0.elapsed();
        let t0 = Instant::now();
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd: Some(CMD.iter().map(|s| s.to_string()).collect()),
            labels: Some([(LABEL.to_string(), made.tag.clone())].into()),
            ..Default::default()
        };
        let id = docker
            .create(&format!("deckhand-bench-{}-{round}", made.tag), body)
            .await?;
        docker.start(&id).await?;
        let raw = t0.elapsed();
        if round > 0 {
            agent_t.push(took);
            cli_t.push(cli);
            raw_t.push(raw);
        }
    }
    Ok(Paths {
        agent: Dist::of(agent_t),
        cli: Dist::of(cli_t),
        raw: Dist::of(raw_t),
    })
}

//! `deckhand bench`: kernel start latency and job-array throughput of a live agent, measured
//! in the same run against the Docker CLI (`docker run -d`, the way the DRMAA2 tracker
//! starts containers) and against bollard create+start (the floor any agent pays). Prints
//! p50/p95 and ratios; the last line is `ratio agent/docker-cli: X`.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bollard::models::ContainerCreateBody;
use clap::{Args, Subcommand};
use futures::StreamExt;
use tonic::transport::Channel;

use super::common::TlsArgs;
use crate::rpc::channel;
use crate::rpc::pb::agent_service_client::AgentServiceClient;
use crate::rpc::pb::{
    ArraySpec, ControlKernelRequest, CreateKernelRequest, KernelAction, KernelSpec, KernelState,
    WatchEventsRequest,
};
use crate::runtime::docker::Docker;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The agent's gRPC address (HOST:PORT).
    #[arg(long, env = "DECKHAND_BENCH_AGENT")]
    pub agent_addr: String,
    /// A locally available image (nothing is pulled).
    #[arg(long, default_value = "deckhand-test/busybox:latest")]
    pub image: String,
    /// How many kernels (or array tasks).
    #[arg(long, default_value_t = 50)]
    pub n: u32,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// Sequential kernel starts: agent CreateKernel→RUNNING vs `docker run -d` vs bollard.
    Start(Common),
    /// A job array of N short tasks with a parallelism cap vs a sequential `docker run -d` loop.
    Array {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 4)]
        max_parallel: u32,
    },
}

const LABEL: &str = "io.deckhand.bench";

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let (Scenario::Start(c) | Scenario::Array { common: c, .. }) = &args.scenario;
    if c.n == 0 {
        bail!("--n: give at least 1");
    }
    match args.scenario {
        Scenario::Start(c) => start(c).await,
        Scenario::Array {
            common,
            max_parallel,
        } => array(common, max_parallel).await,
    }
}

struct Stats {
    p50: Duration,
    p95: Duration,
    mean: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    let mean = v.iter().sum::<Duration>() / v.len().max(1) as u32;
    Stats {
        p50: at(0.5),
        p95: at(0.95),
        mean,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn spec(image: &str, command: &[&str]) -> KernelSpec {
    KernelSpec {
        kernel_id: uuid::Uuid::new_v4().to_string(),
        image: image.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        // Like `docker run`: use the local image, do not ask a registry first.
        cache_usage: "cache_first".into(),
        ..Default::default()
    }
}

async fn agent_client(c: &Common) -> anyhow::Result<AgentServiceClient<Channel>> {
    Ok(AgentServiceClient::new(channel(
        &c.agent_addr,
        Duration::from_secs(300),
        &c.tls.client()?,
    )?))
}

async fn docker_cli(tag: &str, image: &str, command: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new("docker")
        .args(["run", "-d", "--label", &format!("{LABEL}={tag}"), image])
        .args(command)
        .output()
        .await
        .context("cannot run the docker CLI")?;
    if !out.status.success() {
        bail!(
            "docker run: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn cleanup(tag: &str, agent: &mut AgentServiceClient<Channel>, kernel_ids: &[String]) {
    let removes = kernel_ids.iter().map(|id| {
        let mut c = agent.clone();
        let req = ControlKernelRequest {
            kernel_id: id.clone(),
            action: KernelAction::Remove as i32,
            force: true,
            ..Default::default()
        };
        async move { c.control_kernel(req).await.ok() }
    });
    futures::future::join_all(removes).await;
    let ids = tokio::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={LABEL}={tag}")])
        .output()
        .await;
    if let Ok(out) = ids {
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let _ = tokio::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output()
                .await;
        }
    }
}

async fn start(c: Common) -> anyhow::Result<ExitCode> {
    let tag = uuid::Uuid::new_v4().to_string();
    let mut agent = agent_client(&c).await?;
    let docker = Docker::connect().await?;
    let cmd = ["sleep", "600"];
    let mut kernel_ids = Vec::new();
    let result = async {
        // One of each first, so no path pays a cold cache.
        let mut agent_t = Vec::new();
        let mut cli_t = Vec::new();
        let mut raw_t = Vec::new();
        for round in 0..=c.n {
            let s = spec(&c.image, &cmd);
            kernel_ids.push(s.kernel_id.clone());
            let t0 = Instant::now();
            let resp = agent
                .create_kernel(CreateKernelRequest {
                    spec: Some(s),
                    array: None,
                })
                .await
                .map_err(|s| anyhow::anyhow!("agent: {}", s.message()))?
                .into_inner();
            let took = t0.elapsed();
            if resp.kernels.first().map(|k| k.state()) != Some(KernelState::Running) {
                bail!(
                    "agent: kernel did not reach RUNNING: {:?}",
                    resp.kernels.first().map(|k| &k.reason)
                );
            }
            let t0 = Instant::now();
            docker_cli(&tag, &c.image, &cmd).await?;
            let cli = t0.elapsed();
            let t0 = Instant::now();
            let body = ContainerCreateBody {
                image: Some(c.image.clone()),
                cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                labels: Some([(LABEL.to_string(), tag.clone())].into()),
                ..Default::default()
            };
            let id = docker
                .create(&format!("deckhand-bench-{tag}-{round}"), body)
                .await?;
            docker.start(&id).await?;
            let raw = t0.elapsed();
            if round > 0 {
                agent_t.push(took);
                cli_t.push(cli);
                raw_t.push(raw);
            }
        }
        Ok((stats(agent_t), stats(cli_t), stats(raw_t)))
    }
    .await;
    cleanup(&tag, &mut agent, &kernel_ids).await;
    let (a, cli, raw) = result?;
    println!(
        "deckhand bench start: {} sequential starts of {} per path (after one warm-up each)",
        c.n, c.image
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9}",
        "path", "p50 ms", "p95 ms", "mean ms"
    );
    for (name, s) in [
        ("agent CreateKernel → RUNNING", &a),
        ("docker run -d (CLI)", &cli),
        ("bollard create+start", &raw),
    ] {
        println!(
            "{name:<34} {:>9.1} {:>9.1} {:>9.1}",
            ms(s.p50),
            ms(s.p95),
            ms(s.mean)
        );
    }
    println!(
        "agent over bollard create+start at p50: {:+.1} ms",
        ms(a.p50) - ms(raw.p50)
    );
    println!("ratio agent/docker-cli: {:.2}", ms(a.p50) / ms(cli.p50));
    Ok(ExitCode::SUCCESS)
}

async fn array(c: Common, max_parallel: u32) -> anyhow::Result<ExitCode> {
    let tag = uuid::Uuid::new_v4().to_string();
    let mut agent = agent_client(&c).await?;
    let cmd = ["true"];
    let s = spec(&c.image, &cmd);
    let array_id = s.kernel_id.clone();
    let result = async {
        // Through the agent: one request, tasks started as slots under the cap free up.
        let mut events = agent
            .watch_events(WatchEventsRequest { after_seq: 0 })
            .await
            .map_err(|s| anyhow::anyhow!("agent: {}", s.message()))?
            .into_inner();
        let t0 = Instant::now();
        agent
            .create_kernel(CreateKernelRequest {
                spec: Some(s),
                array: Some(ArraySpec {
                    begin: 1,
                    end: c.n,
                    step: 1,
                    max_parallel,
                }),
            })
            .await
            .map_err(|s| anyhow::anyhow!("agent: {}", s.message()))?;
        let prefix = format!("{array_id}.");
        let mut finished = BTreeSet::new();
        let mut failed = 0;
        while finished.len() < c.n as usize {
            let ev = tokio::time::timeout(Duration::from_secs(120), events.next())
                .await
                .context("no event from the agent for 120s")?
                .context("event stream ended")?
                .map_err(|s| anyhow::anyhow!("agent: {}", s.message()))?;
            let state = ev.state();
            let final_state = matches!(
                state,
                KernelState::Done | KernelState::Failed | KernelState::Cancelled
            );
            if ev.kernel_id.starts_with(&prefix)
                && final_state
                && finished.insert(ev.kernel_id)
                && state != KernelState::Done
            {
                failed += 1;
            }
        }
        let agent_wall = t0.elapsed();
        // The DRMAA2 tracker's way: `docker run -d` one task after the other, then wait.
        let t0 = Instant::now();
        let mut ids = Vec::new();
        for _ in 0..c.n {
            ids.push(docker_cli(&tag, &c.image, &cmd).await?);
        }
        let out = tokio::process::Command::new("docker")
            .arg("wait")
            .args(&ids)
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "docker wait: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok((agent_wall, t0.elapsed(), failed))
    }
    .await;
    cleanup(&tag, &mut agent, std::slice::from_ref(&array_id)).await;
    let (agent_wall, cli_wall, failed) = result?;
    println!(
        "deckhand bench array: {} tasks of `{}` on {}, agent max_parallel {max_parallel}",
        c.n,
        cmd.join(" "),
        c.image
    );
    println!(
        "agent array (create → all tasks final): {:>9.1} ms ({failed} not DONE)",
        ms(agent_wall)
    );
    println!(
        "docker run -d loop + docker wait:       {:>9.1} ms",
        ms(cli_wall)
    );
    println!(
        "ratio agent/docker-cli: {:.2}",
        ms(agent_wall) / ms(cli_wall)
    );
    Ok(ExitCode::SUCCESS)
}

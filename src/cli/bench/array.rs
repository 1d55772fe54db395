//! `bench array`: a job array of N short tasks through the agent, with its parallelism
//! cap, against the DRMAA2 tracker's way: a sequential `docker run -d` loop, then
//! `docker wait`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use futures::StreamExt;

use super::agent::{docker_cli, spec, AgentTarget, Made};
use super::{interruptible, ms};
use crate::wire::pb::{ArraySpec, CreateKernelRequest, KernelState, WatchEventsRequest};

#[derive(Debug, Clone, Args)]
pub struct ArrayArgs {
    #[command(flatten)]
    pub target: AgentTarget,
    /// Array tasks.
    #[arg(long, default_value_t = 50)]
    pub n: u32,
    /// Tasks of the array running at once (the array's %MAX).
    #[arg(long, default_value_t = 4)]
    pub max_parallel: u32,
}

pub async fn run(a: ArrayArgs) -> anyhow::Result<()> {
    if a.n == 0 {
        bail!("--n: give at least 1");
    }
    let target = interruptible(a.target.open()).await?;
    let mut agent = target.agent.clone();
    let image = &a.target.image;
    let cmd = ["true"];
    let s = spec(image, &cmd);
    let array_id = s.kernel_id.clone();
    let made = Made::new();
    made.kernel(&array_id);
    let result = interruptible(async {
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
                    end: a.n,
                    step: 1,
                    max_parallel: a.max_parallel,
                }),
            })
            .await
            .map_err(|s| anyhow::anyhow!("agent: {}", s.message()))?;
        let prefix = format!("{array_id}.");
        let mut finished = BTreeSet::new();
        let mut failed = 0;
        while finished.len() < a.n as usize {
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
        for _ in 0..a.n {
            ids.push(docker_cli(&made.tag, image, &cmd).await?);
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
    })
    .await;
    made.cleanup(&agent).await;
    target.close().await;
    let (agent_wall, cli_wall, failed) = result?;
    println!(
        "deckhand bench array: {} tasks of `{}` on {image}, agent max_parallel {}",
        a.n,
        cmd.join(" "),
        a.max_parallel
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
    Ok(())
}

//! `bench recovery`: one agent (started here, with its own etcd and manager) holding N
//! running kernels goes through two faults, and each is timed until (a) every kernel is
//! reconciled with its container — the agent's `kernels_synced_at_ms` (its resync after
//! start-up recovery, or after the engine is back) — and (b) the manager holds a heartbeat
//! of the live agent process that carries all N kernels (the agent sends one at once when
//! the reconciliation changed what it last reported; one from before still stands when it
//! did not):
//!
//! 1. `kill -9` of the agent and a restart, timed from the new process's spawn;
//! 2. the Docker engine connection cut (a Unix-socket [`Relay`] the agent is pointed at,
//!    closed as an engine restart closes it) for `--outage`, timed from its restoration.
//!
//! After each, every kernel must be RUNNING in the container it had before (0 lost), the
//! engine must hold exactly N containers of the namespace, and the manager must list N.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use tonic::transport::Channel;

use super::agent::{client, fill, Made};
use super::cluster::{Cluster, ClusterArgs};
use super::relay::Relay;
use super::{interruptible, ms, verdict};
use crate::util::now_ms;
use crate::util::tls::TlsFiles;
use crate::wire::pb::agent_service_client::AgentServiceClient;
use crate::wire::pb::{GetInfoRequest, KernelState, ListKernelsRequest};

#[derive(Debug, Clone, Args)]
pub struct RecoveryArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Running kernels.
    #[arg(long, default_value_t = 100)]
    pub n: u32,
    /// A locally available image (nothing is pulled).
    #[arg(long, default_value = "deckhand-test/busybox:latest")]
    pub image: String,
    /// How long the engine connection stays cut.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub outage: Duration,
}

const GOAL: Duration = Duration::from_secs(2);
const AGENT: &str = "bench-agent";

/// One fault's figures: ms from the start of recovery.
struct Timed {
    reconciled: i64,
    heard: i64,
    lost: u32,
}

pub async fn run(a: RecoveryArgs) -> anyhow::Result<()> {
    if a.n == 0 {
        bail!("--n: give at least 1");
    }
    let mut cluster = Cluster::start(&a.cluster).await?;
    let relay = Relay::start(&cluster.dir.join("docker.sock"));
    let result = match relay {
        Ok(mut relay) => {
            let r = interruptible(faults(&mut cluster, &mut relay, &a)).await;
            cluster.cleanup().await;
            r
        }
        Err(e) => {
            cluster.cleanup().await;
            Err(e).context("cannot make the engine relay")
        }
    };
    let (restart, engine) = result?;
    println!(
        "deckhand bench recovery: {} running kernels of {} on one agent (with its own etcd, manager and engine relay)",
        a.n, a.image
    );
    println!(
        "{:<48} {:>13} {:>22} {:>5}",
        "fault",
        "reconciled ms",
        format!("heartbeat with all {} ms", a.n),
        "lost"
    );
    let outage = format!(
        "engine connection cut {} → restored",
        humantime::format_duration(a.outage)
    );
    for (name, t) in [
        ("agent kill -9 → restart (from spawn)", &restart),
        (outage.as_str(), &engine),
    ] {
        println!(
            "{name:<48} {:>13} {:>22} {:>5}",
            t.reconciled, t.heard, t.lost
        );
    }
    let worst = restart
        .heard
        .max(engine.heard)
        .max(restart.reconciled)
        .max(engine.reconciled);
    let lost = restart.lost + engine.lost;
    println!(
        "goal ≤ {} ms for {} kernels, 0 lost: {}",
        GOAL.as_millis(),
        a.n,
        verdict(worst as f64 <= ms(GOAL) && lost == 0)
    );
    println!("ratio recovery/goal: {:.2}", worst as f64 / ms(GOAL));
    Ok(())
}

async fn faults(
    c: &mut Cluster,
    relay: &mut Relay,
    a: &RecoveryArgs,
) -> anyhow::Result<(Timed, Timed)> {
    let host = relay.docker_host();
    c.start_manager().await?;
    let i = c.spawn_agent(AGENT, &[("DOCKER_HOST", &host)])?;
    c.wait_alive(AGENT, Duration::from_secs(30)).await?;
    let agent = client(&c.agents[i].addr, &TlsFiles::default())?;
    // Recorded only to be created; the cluster's cleanup removes every kernel it has.
    let kernels = fill(&agent, &Made::new(), &a.image, &["sleep", "600"], a.n).await?;
    let containers: BTreeMap<String, String> = kernels
        .into_iter()
        .map(|k| (k.kernel_id, k.container_id))
        .collect();
    let before = wait_heard(c, &agent, a.n, 0, "", Duration::from_secs(30)).await?;
    let old_instance = c
        .list_agents()
        .await?
        .into_iter()
        .find_map(|s| s.identity.filter(|i| i.agent_id == AGENT))
        .map(|i| i.instance_id)
        .unwrap_or_default();
    let _ = before;

    c.agents[i].kill9().await;
    c.agents[i].respawn()?;
    let t0 = c.agents[i].spawned_ms;
    let (reconciled, heard) =
        wait_heard(c, &agent, a.n, t0, &old_instance, Duration::from_secs(60)).await?;
    let restart = Timed {
        reconciled: reconciled - t0,
        heard: heard - t0,
        lost: lost(c, &agent, &containers).await?,
    };

    relay.cut().await;
    tokio::time::sleep(a.outage).await;
    relay.restore()?;
    let t1 = now_ms();
    let (reconciled, heard) = wait_heard(c, &agent, a.n, t1, "", Duration::from_secs(60)).await?;
    let engine = Timed {
        reconciled: reconciled - t1,
        heard: heard - t1,
        lost: lost(c, &agent, &containers).await?,
    };
    Ok((restart, engine))
}

/// Waits until the agent has reconciled its kernels at or after `since` (Unix ms) and the
/// manager holds a heartbeat from it (not from `old_instance`) that carries `n` kernels;
/// when each happened (Unix ms; the heartbeat at the earliest when reconciled).
async fn wait_heard(
    c: &Cluster,
    agent: &AgentServiceClient<Channel>,
    n: u32,
    since: i64,
    old_instance: &str,
    timeout: Duration,
) -> anyhow::Result<(i64, i64)> {
    let deadline = Instant::now() + timeout;
    let mut agent = agent.clone();
    let mut reconciled = None;
    loop {
        if reconciled.is_none() {
            let synced = agent
                .get_info(GetInfoRequest {})
                .await
                .map(|r| r.into_inner().kernels_synced_at_ms)
                .unwrap_or(0);
            if synced > 0 && synced >= since {
                reconciled = Some(synced);
            }
        }
        if let Some(r) = reconciled {
            let heard = c.list_agents().await.ok().and_then(|l| {
                l.into_iter().find(|s| {
                    s.identity
                        .as_ref()
                        .is_some_and(|i| i.agent_id == AGENT && i.instance_id != old_instance)
                        && s.kernels_reported == n
                })
            });
            if let Some(s) = heard {
                // A heartbeat from before the reconciliation still stands when it changed
                // nothing (the agent then sends none at once).
                return Ok((r, s.last_seen_ms.max(r)));
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the agent did not {} within {timeout:?}:\n{}",
                if reconciled.is_none() {
                    "reconcile its kernels"
                } else {
                    "report all kernels in a heartbeat"
                },
                c.agents.first().map(|d| d.log_tail()).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Kernels not RUNNING in the container they had, or missing from the engine or from the
/// manager's list.
async fn lost(
    c: &Cluster,
    agent: &AgentServiceClient<Channel>,
    containers: &BTreeMap<String, String>,
) -> anyhow::Result<u32> {
    let listed = agent
        .clone()
        .list_kernels(ListKernelsRequest {})
        .await?
        .into_inner()
        .kernels;
    let kept = listed
        .iter()
        .filter(|k| {
            k.state() == KernelState::Running
                && containers.get(&k.kernel_id) == Some(&k.container_id)
        })
        .count();
    let at_manager = c
        .manager_client()?
        .list_kernels(ListKernelsRequest {})
        .await?
        .into_inner()
        .kernels
        .len();
    let out = tokio::process::Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=io.deckhand.namespace={}", c.ns),
        ])
        .output()
        .await?;
    let in_engine = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .count();
    let n = containers.len();
    let missing = [
        n - kept.min(n),
        n.abs_diff(at_manager),
        n.abs_diff(in_engine),
    ];
    Ok(missing.into_iter().max().unwrap_or(0) as u32)
}

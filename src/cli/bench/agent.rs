//! What the scenarios that drive an agent share: the agent's address and TLS flags, kernel
//! specs, the Docker CLI path, creating many kernels at once, and the record of what a
//! run made ([`Made`]) so that it is removed on success, failure and interruption alike.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use futures::StreamExt;
use parking_lot::Mutex;
use tonic::transport::Channel;

use super::cluster::{Cluster, ClusterArgs};
use crate::cli::common::TlsArgs;
use crate::util::tls::TlsFiles;
use crate::wire::channel;
use crate::wire::pb::agent_service_client::AgentServiceClient;
use crate::wire::pb::{
    ControlKernelRequest, CreateKernelRequest, KernelAction, KernelInfo, KernelSpec, KernelState,
};

/// Label of the containers a benchmark makes itself (Docker CLI, bollard).
pub const LABEL: &str = "io.deckhand.bench";

/// Kernels created at once when a scenario fills an agent (the agent's own creation
/// concurrency, 4 by default, still applies behind it).
const FILL_CONCURRENCY: usize = 8;

/// The agent a scenario drives: the one at `--agent-addr`, or one of its own.
#[derive(Debug, Clone, Args)]
pub struct AgentTarget {
    /// The agent's gRPC address (HOST:PORT); without it the scenario starts a scratch
    /// cluster (etcd, manager, one agent) of its own.
    #[arg(long, env = "DECKHAND_BENCH_AGENT")]
    pub agent_addr: Option<String>,
    /// A locally available image (nothing is pulled).
    #[arg(long, default_value = "deckhand-test/busybox:latest")]
    pub image: String,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// A connected agent, and the scratch cluster it runs in when the scenario started one.
pub struct Target {
    pub agent: AgentServiceClient<Channel>,
    own: Option<Cluster>,
}

impl AgentTarget {
    /// Connects to `--agent-addr`, or starts a scratch cluster with one agent and waits
    /// until the manager sees it ALIVE.
    pub async fn open(&self) -> anyhow::Result<Target> {
        if let Some(addr) = &self.agent_addr {
            return Ok(Target {
                agent: client(addr, &self.tls.client()?)?,
                own: None,
            });
        }
        let mut c = Cluster::start(&self.cluster).await?;
        c.start_manager().await?;
        let i = c.spawn_agent("bench-agent", &[])?;
        c.wait_alive("bench-agent", Duration::from_secs(30)).await?;
        Ok(Target {
            agent: client(&c.agents[i].addr, &TlsFiles::default())?,
            own: Some(c),
        })
    }
}

impl Target {
    /// Takes down the scratch cluster, if the scenario started one.
    pub async fn close(mut self) {
        if let Some(mut c) = self.own.take() {
            c.cleanup().await;
        }
    }
}

pub fn client(addr: &str, tls: &TlsFiles) -> anyhow::Result<AgentServiceClient<Channel>> {
    Ok(AgentServiceClient::new(channel(
        addr,
        Duration::from_secs(300),
        tls,
    )?))
}

/// A kernel of `image` running `command`, with a fresh id.
pub fn spec(image: &str, command: &[&str]) -> KernelSpec {
    KernelSpec {
        kernel_id: uuid::Uuid::new_v4().to_string(),
        image: image.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        // Like `docker run`: use the local image, do not ask a registry first.
        cache_usage: "cache_first".into(),
        ..Default::default()
    }
}

/// What one run made: kernels on the agent, and containers labelled with its tag.
pub struct Made {
    pub tag: String,
    kernels: Mutex<Vec<String>>,
}

impl Made {
    pub fn new() -> Self {
        Self {
            tag: uuid::Uuid::new_v4().to_string(),
            kernels: Mutex::new(Vec::new()),
        }
    }

    pub fn kernel(&self, id: &str) {
        self.lock().push(id.to_string());
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Vec<String>> {
        self.kernels.lock()
    }

    /// Removes every kernel recorded (forcibly) and every container with the run's tag.
    pub async fn cleanup(&self, agent: &AgentServiceClient<Channel>) {
        let ids = std::mem::take(&mut *self.lock());
        futures::stream::iter(ids)
            .map(|id| {
                let mut c = agent.clone();
                async move {
                    let req = ControlKernelRequest {
                        kernel_id: id,
                        action: KernelAction::Remove as i32,
                        force: true,
                        ..Default::default()
                    };
                    c.control_kernel(req).await.ok()
                }
            })
            .buffer_unordered(FILL_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        remove_labelled(&format!("{LABEL}={}", self.tag)).await;
    }
}

/// `docker rm -f` of every container carrying `label` (`KEY=VALUE`).
pub async fn remove_labelled(label: &str) {
    let out = tokio::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output()
        .await;
    if let Ok(out) = out {
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let _ = tokio::process::Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .output()
                .await;
        }
    }
}

/// `docker run -d` with the run's label; the container id.
pub async fn docker_cli(tag: &str, image: &str, command: &[&str]) -> anyhow::Result<String> {
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

/// Creates one kernel through the agent's gRPC; it must come back RUNNING.
pub async fn create_running(
    agent: &mut AgentServiceClient<Channel>,
    spec: KernelSpec,
) -> anyhow::Result<KernelInfo> {
    let resp = agent
        .create_kernel(CreateKernelRequest {
            spec: Some(spec),
            array: None,
        })
        .await
        .map_err(|s| anyhow::anyhow!("agent: {}", s.message()))?
        .into_inner();
    let k = resp
        .kernels
        .into_iter()
        .next()
        .context("agent: no kernel")?;
    if k.state() != KernelState::Running {
        bail!("agent: kernel did not reach RUNNING: {}", k.reason);
    }
    Ok(k)
}

/// Creates `n` kernels of `image` running `command` on the agent, several at once, each
/// recorded in `made`; fails unless every one reaches RUNNING.
pub async fn fill(
    agent: &AgentServiceClient<Channel>,
    made: &Made,
    image: &str,
    command: &[&str],
    n: u32,
) -> anyhow::Result<Vec<KernelInfo>> {
    let results: Vec<anyhow::Result<KernelInfo>> = futures::stream::iter(0..n)
        .map(|_| {
            let mut c = agent.clone();
            let s = spec(image, command);
            made.kernel(&s.kernel_id);
            async move { create_running(&mut c, s).await }
        })
        .buffer_unordered(FILL_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

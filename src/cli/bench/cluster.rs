//! The scratch cluster of the scenarios that own the processes they measure (`recovery`,
//! `footprint`, `fleet`): etcd — Debian's `etcd` started on free loopback ports with a
//! data dir under the scratch dir, or the one at `--etcd-addr` — and a manager and agents
//! started from this very binary (`std::env::current_exe()`), all in a namespace of their
//! own (`bench-<random>` unless `--namespace` is given) and a scratch dir
//! `$TMPDIR/deckhand-bench-<namespace>` that holds their logs and scratch roots.
//!
//! Children run in their own process group, so a Ctrl-C reaches the benchmark alone, which
//! then takes the cluster down in order. [`Cluster::cleanup`] stops the daemons (SIGTERM,
//! SIGKILL after 5 s), removes every container labelled with the namespace, deletes the
//! namespace's keys from a shared etcd (an own etcd goes with its data dir) and removes
//! the scratch dir. Dropping a cluster that was not cleaned up (a panic) kills the
//! children and removes containers and dir as a last resort.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use etcd_client::DeleteOptions;
use tonic::transport::Channel;

use crate::cluster::{etcd, EtcdOptions, Keys};
use crate::util::tls::TlsFiles;
use crate::wire::channel;
use crate::wire::pb::cluster_service_client::ClusterServiceClient;
use crate::wire::pb::{AgentState, AgentSummary, ListAgentsRequest};

#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Use this etcd (HOST:PORT, comma-separated) instead of starting one; the scenario's
    /// keys are removed from it afterwards. Plaintext etcd only.
    #[arg(long, env = "DECKHAND_BENCH_ETCD", value_delimiter = ',')]
    pub etcd_addr: Vec<String>,
    /// Namespace of the scenario's cluster [default: bench-<random>].
    #[arg(long)]
    pub namespace: Option<String>,
}

/// A child process of the scenario: etcd, the manager or an agent.
pub struct Daemon {
    pub name: String,
    /// `HOST:PORT` it serves on.
    pub addr: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    program: PathBuf,
    child: Option<tokio::process::Child>,
    /// When the current process was spawned (Unix ms and monotonic).
    pub spawned_ms: i64,
    pub spawned: Instant,
}

impl Daemon {
    fn spawn(
        name: &str,
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        addr: String,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let mut d = Self {
            name: name.to_string(),
            addr,
            args,
            env,
            log,
            program,
            child: None,
            spawned_ms: 0,
            spawned: Instant::now(),
        };
        d.respawn()?;
        Ok(d)
    }

    /// Starts the process again with the same arguments (after it was killed).
    pub fn respawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("log file {}", self.log.display()))?;
        let mut cmd = tokio::process::Command::new(&self.program);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("DECKHAND_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        self.spawned_ms = crate::util::now_ms();
        self.spawned = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {} ({})", self.name, self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// SIGKILL, and reaps it.
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// SIGTERM, then SIGKILL after `limit`; how it ended and how long it took.
    pub async fn terminate(&mut self, limit: Duration) -> Option<(Option<ExitStatus>, Duration)> {
        let mut c = self.child.take()?;
        let t0 = Instant::now();
        if let Some(pid) = c.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(limit, c.wait()).await {
            Ok(status) => Some((status.ok(), t0.elapsed())),
            Err(_) => {
                let _ = c.kill().await;
                Some((None, t0.elapsed()))
            }
        }
    }
}

/// See the module docs.
pub struct Cluster {
    pub ns: String,
    pub keys: Keys,
    pub dir: PathBuf,
    pub etcd: EtcdOptions,
    own_etcd: Option<Daemon>,
    pub manager: Option<Daemon>,
    pub agents: Vec<Daemon>,
    cleaned: bool,
}

/// A free loopback port (bound once to check, then released for the child to bind).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(l.local_addr()?.port())
}

impl Cluster {
    /// The scratch dir, etcd (started or reached), and `docker/cache_usage = cache_first`
    /// (the bench image exists only locally).
    pub async fn start(args: &ClusterArgs) -> anyhow::Result<Self> {
        let ns = args.namespace.clone().unwrap_or_else(|| {
            format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
        });
        crate::cluster::keys::validate_name("--namespace", &ns).map_err(anyhow::Error::msg)?;
        let dir = std::env::temp_dir().join(format!("deckhand-bench-{ns}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("scratch dir {}", dir.display()))?;
        let mut c = Self {
            keys: Keys::new(&ns),
            ns,
            dir,
            etcd: EtcdOptions::default(),
            own_etcd: None,
            manager: None,
            agents: Vec::new(),
            cleaned: false,
        };
        if args.etcd_addr.is_empty() {
            let (port, peer) = (free_port()?, free_port()?);
            let client = format!("http://127.0.0.1:{port}");
            let peer = format!("http://127.0.0.1:{peer}");
            let name = c.ns.clone();
            let data = c.dir.join("etcd");
            let args: Vec<String> = [
                "--name",
                &name,
                "--data-dir",
                &data.display().to_string(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("{name}={peer}"),
            ]
            .map(String::from)
            .to_vec();
            let log = c.dir.join("etcd.log");
            let d = Daemon::spawn("etcd", "etcd".into(), args, Vec::new(), client, log)
                .context("starting etcd (Debian's etcd-server), or pass --etcd-addr")?;
            c.etcd.endpoints = vec![format!("127.0.0.1:{port}")];
            c.own_etcd = Some(d);
        } else {
            c.etcd.endpoints = args.etcd_addr.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut client = loop {
            match etcd::connect(&c.etcd).await {
                Ok(client) => break client,
                Err(e) if Instant::now() > deadline => {
                    let log = c
                        .own_etcd
                        .as_ref()
                        .map(Daemon::log_tail)
                        .unwrap_or_default();
                    bail!("etcd at {} does not answer: {e}\n{log}", c.etcd.describe());
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        client
            .put(
                format!("{}docker/cache_usage", c.keys.config()),
                "cache_first",
                None,
            )
            .await
            .context("writing the cluster settings")?;
        Ok(c)
    }

    /// The pid of the etcd this cluster started, if it started one.
    pub fn etcd_pid(&self) -> Option<u32> {
        self.own_etcd.as_ref().and_then(Daemon::pid)
    }

    /// `http://HOST:PORT` of etcd's client URL (its `/metrics` too).
    pub fn etcd_url(&self) -> String {
        let ep = self.etcd.endpoints.first().cloned().unwrap_or_default();
        if ep.contains("://") {
            ep
        } else {
            format!("http://{ep}")
        }
    }

    pub async fn etcd_client(&self) -> anyhow::Result<etcd_client::Client> {
        Ok(etcd::connect(&self.etcd).await?)
    }

    /// Writes cluster setting `key` (`agent/heartbeat_interval`).
    pub async fn set(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.etcd_client()
            .await?
            .put(format!("{}{key}", self.keys.config()), value, None)
            .await?;
        Ok(())
    }

    fn deckhand(
        &self,
        name: &str,
        args: Vec<String>,
        env: Vec<(String, String)>,
        addr: String,
    ) -> anyhow::Result<Daemon> {
        let exe = std::env::current_exe().context("cannot find this deckhand binary")?;
        let mut full = vec![
            args[0].clone(),
            "--etcd-addr".into(),
            self.etcd.endpoints.join(","),
            "--namespace".into(),
            self.ns.clone(),
        ];
        full.extend(args.into_iter().skip(1));
        let mut env = env;
        env.push(("DECKHAND_LOG".into(), "info".into()));
        Daemon::spawn(
            name,
            exe,
            full,
            env,
            addr,
            self.dir.join(format!("{name}.log")),
        )
    }

    /// Starts the manager and waits until it answers.
    pub async fn start_manager(&mut self) -> anyhow::Result<()> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let args = [
            "manager",
            "--manager-id",
            "bench-manager",
            "--listen",
            &addr,
        ];
        let d = self.deckhand("manager", args.map(String::from).to_vec(), Vec::new(), addr)?;
        self.manager = Some(d);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.list_agents().await.is_err() {
            if Instant::now() > deadline {
                bail!(
                    "the manager did not answer within 20s:\n{}",
                    self.manager_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    fn manager_log(&self) -> String {
        self.manager
            .as_ref()
            .map(Daemon::log_tail)
            .unwrap_or_default()
    }

    /// Starts agent `id` with its scratch root in the scratch dir and `env` added; its
    /// index in [`agents`](Self::agents).
    pub fn spawn_agent(&mut self, id: &str, env: &[(&str, &str)]) -> anyhow::Result<usize> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let scratch = self.dir.join(format!("scratch-{id}")).display().to_string();
        let args = [
            "agent",
            "--agent-id",
            id,
            "--rpc-listen-addr",
            &addr,
            "--scratch-root",
            &scratch,
        ];
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let d = self.deckhand(
            &format!("agent-{id}"),
            args.map(String::from).to_vec(),
            env,
            addr,
        )?;
        self.agents.push(d);
        Ok(self.agents.len() - 1)
    }

    pub fn manager_client(&self) -> anyhow::Result<ClusterServiceClient<Channel>> {
        let addr = self
            .manager
            .as_ref()
            .map(|m| m.addr.clone())
            .context("no manager")?;
        Ok(ClusterServiceClient::new(channel(
            &addr,
            Duration::from_secs(60),
            &TlsFiles::default(),
        )?))
    }

    pub async fn list_agents(&self) -> anyhow::Result<Vec<AgentSummary>> {
        Ok(self
            .manager_client()?
            .list_agents(ListAgentsRequest {})
            .await?
            .into_inner()
            .agents)
    }

    /// Waits until the manager shows agent `id` ALIVE; its summary.
    pub async fn wait_alive(&self, id: &str, timeout: Duration) -> anyhow::Result<AgentSummary> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.list_agents().await.ok().and_then(|l| {
                l.into_iter().find(|a| {
                    a.state() == AgentState::Alive
                        && a.identity.as_ref().is_some_and(|i| i.agent_id == id)
                })
            });
            if let Some(a) = found {
                return Ok(a);
            }
            if Instant::now() > deadline {
                let log = self
                    .agents
                    .iter()
                    .find(|d| d.name == format!("agent-{id}"))
                    .map(Daemon::log_tail)
                    .unwrap_or_default();
                bail!("agent {id} was not ALIVE at the manager within {timeout:?}:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Takes everything down; see the module docs.
    pub async fn cleanup(&mut self) {
        // Kernels through their agent first (it removes their homes too), then the rest.
        for a in &self.agents {
            if a.child.is_some() {
                let _ =
                    tokio::time::timeout(Duration::from_secs(60), remove_kernels(&a.addr)).await;
            }
        }
        for a in &mut self.agents {
            a.terminate(Duration::from_secs(5)).await;
        }
        if let Some(m) = &mut self.manager {
            m.terminate(Duration::from_secs(5)).await;
        }
        super::agent::remove_labelled(&format!("io.deckhand.namespace={}", self.ns)).await;
        if let Some(e) = &mut self.own_etcd {
            e.terminate(Duration::from_secs(5)).await;
        } else if let Ok(mut c) = self.etcd_client().await {
            let del = c.delete(self.keys.root(), Some(DeleteOptions::new().with_prefix()));
            if let Err(e) = del.await {
                eprintln!(
                    "bench: cannot remove the keys under {}: {e}",
                    self.keys.root()
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        self.cleaned = true;
    }
}

/// Removes every kernel of the agent at `addr` (forcibly), several at once.
async fn remove_kernels(addr: &str) -> anyhow::Result<()> {
    let mut agent = super::agent::client(addr, &TlsFiles::default())?;
    let kernels = agent
        .list_kernels(crate::wire::pb::ListKernelsRequest {})
        .await?
        .into_inner()
        .kernels;
    let made = super::agent::Made::new();
    for k in kernels {
        made.kernel(&k.kernel_id);
    }
    made.cleanup(&agent).await;
    Ok(())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        for d in self
            .agents
            .iter_mut()
            .chain(&mut self.manager)
            .chain(&mut self.own_etcd)
        {
            if let Some(c) = &mut d.child {
                let _ = c.start_kill();
            }
        }
        let label = format!("label=io.deckhand.namespace={}", self.ns);
        if let Ok(out) = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &label])
            .output()
        {
            let ids = String::from_utf8_lossy(&out.stdout);
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

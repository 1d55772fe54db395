//! The shared test harness: a real etcd per test (Debian's `etcd-server`, on free loopback
//! ports with a temp data dir), the real `deckhand` binary started as child processes, and
//! the fake NVML library built from `tests/fixtures/fake_nvml.c`; `vast/` is the local
//! stand-in for the Vast.ai API (Vast.ai cannot be reached from here) and `s3.rs` a real
//! S3-compatible server (moto).
//!
//! Everything a test starts is killed and every directory removed when its guard drops,
//! also when the test fails. Each test gets its own namespace, etcd and ports, so tests run
//! in parallel.
#![allow(dead_code)]

pub mod observe;
pub mod pki;
pub mod s3;
pub mod supervisord;
pub mod swarm;
pub mod vast;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A free loopback port for a server a test starts. Taken below the kernel's ephemeral
/// range (32768+), so no outgoing connection can grab it between this check and the server's
/// bind; each test process walks its own stretch of 10000-30000, and every port handed out
/// is bound once to check it is free.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() % 200) * 100;
    for _ in 0..20_000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (10_000 + (start + offset) % 20_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// A namespace no other test uses.
pub fn namespace(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t-{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `f` every 50 ms until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A real etcd server on loopback.
pub struct Etcd {
    child: Option<Child>,
    dir: TempDir,
    pub port: u16,
    peer_port: u16,
    /// Extra etcd flags (TLS files, …).
    extra: Vec<String>,
    /// Set when etcd serves clients over TLS: how the harness itself connects.
    tls: Option<etcd_client::TlsOptions>,
}

impl Etcd {
    pub async fn start() -> Self {
        Self::start_with(Vec::new(), None).await
    }

    /// etcd with `extra` flags; with `tls` it serves clients on https (`extra` names the
    /// certificate files) and the harness connects with those options.
    pub async fn start_with(extra: Vec<String>, tls: Option<etcd_client::TlsOptions>) -> Self {
        let mut etcd = Self {
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            peer_port: free_port(),
            extra,
            tls,
        };
        etcd.launch().await;
        etcd
    }

    fn connect_options(&self) -> Option<etcd_client::ConnectOptions> {
        self.tls
            .clone()
            .map(|t| etcd_client::ConnectOptions::new().with_tls(t))
    }

    /// etcd's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("etcd log");
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start etcd: install Debian's etcd-server (scripts/test.sh does)");
        self.child = Some(child);
        let addr = self.addr();
        let options = self.connect_options();
        wait_for(Duration::from_secs(20), "etcd to answer", || {
            let addr = addr.clone();
            let options = options.clone();
            async move {
                let mut c = etcd_client::Client::connect([addr], options).await.ok()?;
                c.status().await.ok().map(|_| ())
            }
        })
        .await;
    }

    /// Kills etcd (data kept).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again on the same ports; `wipe` starts from an empty data dir, as after
    /// losing the etcd cluster.
    pub async fn restart(&mut self, wipe: bool) {
        self.stop();
        if wipe {
            let _ = std::fs::remove_dir_all(self.dir.path().join("data"));
        }
        self.launch().await;
    }

    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.addr()], self.connect_options())
            .await
            .expect("etcd client")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `deckhand` child process whose stderr goes to a log file.
pub struct Proc {
    child: Child,
    log: PathBuf,
    pub port: u16,
}

impl Proc {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn deckhand_bin() -> &'static str {
    env!("CARGO_BIN_EXE_deckhand")
}

/// One test's cluster: a namespace on an etcd (its own, or another cluster's), a work dir.
pub struct Cluster {
    /// The etcd this cluster started, None when it shares another cluster's.
    pub etcd: Option<Etcd>,
    pub etcd_addr: String,
    pub ns: String,
    pub dir: TempDir,
}

impl Cluster {
    /// A cluster with its own etcd.
    pub async fn start(test: &str) -> Self {
        let etcd = Etcd::start().await;
        Self {
            etcd_addr: etcd.addr(),
            etcd: Some(etcd),
            ns: namespace(test),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A cluster on an etcd the test started itself (with TLS, auth, …).
    pub fn on(etcd: Etcd, test: &str) -> Self {
        Self {
            etcd_addr: etcd.addr(),
            etcd: Some(etcd),
            ns: namespace(test),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Another namespace on `other`'s etcd.
    pub fn beside(other: &Cluster, test: &str) -> Self {
        Self {
            etcd: None,
            etcd_addr: other.etcd_addr.clone(),
            ns: namespace(test),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn etcd_mut(&mut self) -> &mut Etcd {
        self.etcd
            .as_mut()
            .expect("this cluster shares another cluster's etcd")
    }

    pub async fn etcd_client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.etcd_addr.clone()], None)
            .await
            .expect("etcd client")
    }

    fn command(&self) -> Command {
        let mut c = Command::new(deckhand_bin());
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DECKHAND_ETCD_ADDR", &self.etcd_addr)
            .env("DECKHAND_NAMESPACE", &self.ns)
            .env("DECKHAND_LOG", "info");
        c
    }

    /// Starts a daemon (`agent` or `manager`) with `args`, logging to `<name>.log`.
    pub fn spawn(&self, name: &str, args: &[&str], port: u16) -> Proc {
        self.spawn_env(name, args, port, &[])
    }

    /// [`spawn`](Self::spawn) with extra environment variables.
    pub fn spawn_env(&self, name: &str, args: &[&str], port: u16, env: &[(&str, &str)]) -> Proc {
        let log = self.dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = self
            .command()
            .envs(env.iter().copied())
            .args(args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start deckhand");
        Proc { child, log, port }
    }

    /// An agent with id `id` on a free port, its scratch root in the test dir.
    pub fn agent(&self, id: &str) -> Proc {
        self.agent_on(id, self.dir.path().join(format!("scratch-{id}")))
    }

    /// An agent with id `id` and the given scratch root (a restart reuses its root).
    pub fn agent_on(&self, id: &str, scratch: PathBuf) -> Proc {
        self.agent_on_env(id, scratch, &[])
    }

    /// [`agent_on`](Self::agent_on) with extra environment variables (`DOCKER_HOST`).
    pub fn agent_on_env(&self, id: &str, scratch: PathBuf, env: &[(&str, &str)]) -> Proc {
        self.agent_with::<&str>(id, scratch, &[], env)
    }

    /// An agent with extra flags (`--tls-cert …`) and environment variables.
    pub fn agent_with<S: AsRef<str>>(
        &self,
        id: &str,
        scratch: PathBuf,
        extra: &[S],
        env: &[(&str, &str)],
    ) -> Proc {
        self.agent_at(id, scratch, free_port(), extra, env)
    }

    /// [`agent_with`](Self::agent_with) listening on `port` (an agent restarted where it
    /// was, as under a supervisor).
    pub fn agent_at<S: AsRef<str>>(
        &self,
        id: &str,
        scratch: PathBuf,
        port: u16,
        extra: &[S],
        env: &[(&str, &str)],
    ) -> Proc {
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec![
            "agent",
            "--agent-id",
            id,
            "--rpc-listen-addr",
            &listen,
            "--scratch-root",
            scratch.to_str().unwrap_or_default(),
        ];
        args.extend(extra.iter().map(AsRef::as_ref));
        self.spawn_env(&format!("agent-{id}"), &args, port, env)
    }

    /// A manager with id `id` on a free port; extra flags appended.
    pub fn manager(&self, id: &str, extra: &[&str]) -> Proc {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["manager", "--manager-id", id, "--listen", &listen];
        args.extend_from_slice(extra);
        self.spawn(&format!("manager-{id}"), &args, port)
    }

    /// A CLI command, not started yet (for commands that run in the background).
    pub fn command_for(&self, args: &[&str]) -> Command {
        let mut c = self.command();
        c.args(args).stdout(Stdio::null()).stderr(Stdio::null());
        c
    }

    /// Runs a CLI command to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run deckhand")
    }

    /// Runs a CLI command and returns its stdout, panicking with stderr on failure.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "deckhand {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `deckhand nodes --json`, or None while no manager answers.
    pub fn nodes(&self) -> Option<Vec<serde_json::Value>> {
        let out = self.cli(&["nodes", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The node `id` from `deckhand nodes --json`, if listed.
    pub fn node(&self, id: &str) -> Option<serde_json::Value> {
        self.nodes()?.into_iter().find(|n| n["id"] == id)
    }

    /// `Some(())` when agent `id`'s registration key exists (for [`wait_for`]).
    pub async fn registered(&self, id: &str) -> Option<()> {
        let mut etcd = etcd_client::Client::connect([self.etcd_addr.clone()], None)
            .await
            .ok()?;
        (etcd.get(self.agent_key(id), None).await.ok()?.count() == 1).then_some(())
    }

    pub fn agent_key(&self, id: &str) -> String {
        format!("/deckhand/{}/nodes/agents/{id}", self.ns)
    }

    /// Builds the fake NVML library (the GPU stand-in: CI has no GPU) into the test dir.
    pub fn fake_nvml(&self) -> PathBuf {
        build_fake_nvml(self.dir.path())
    }
}

impl Drop for Cluster {
    /// Removes every container of this test's namespace, also when the test failed.
    fn drop(&mut self) {
        remove_containers(&self.ns);
    }
}

/// The local test image built by `scripts/deps.sh` (no image can be pulled here).
pub const TEST_IMAGE: &str = "deckhand-test/busybox:latest";

/// `docker rm -f` of every container labelled with namespace `ns`, then of its volumes and
/// networks.
pub fn remove_containers(ns: &str) {
    for id in containers(ns) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &id])
            .output();
    }
    let out = Command::new("docker")
        .args([
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=io.deckhand.namespace={ns}"),
        ])
        .output()
        .expect("docker volume ls");
    for v in String::from_utf8_lossy(&out.stdout).lines() {
        let _ = Command::new("docker").args(["volume", "rm", v]).output();
    }
    // By id: two networks may share a name (see `Docker::remove_network`).
    let out = Command::new("docker")
        .args([
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=io.deckhand.namespace={ns}"),
        ])
        .output()
        .expect("docker network ls");
    for n in String::from_utf8_lossy(&out.stdout).lines() {
        let _ = Command::new("docker").args(["network", "rm", n]).output();
    }
}

/// Names of the networks (cluster kernels') labelled with namespace `ns`.
pub fn networks(ns: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "network",
            "ls",
            "--format",
            "{{.Name}}",
            "--filter",
            &format!("label=io.deckhand.namespace={ns}"),
        ])
        .output()
        .expect("docker network ls");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Ids of the containers (running or not) labelled with namespace `ns`.
pub fn containers(ns: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=io.deckhand.namespace={ns}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// `docker inspect -f FORMAT` of one container.
pub fn docker_inspect(name: &str, format: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", format, name])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A cluster with a manager and one agent `a1` that the manager sees ALIVE.
pub struct KernelCluster {
    pub agent: Proc,
    pub manager: Proc,
    pub c: Cluster,
}

impl KernelCluster {
    pub async fn start(test: &str) -> Self {
        Self::start_with(test, &[]).await
    }

    /// Like [`start`](Self::start), with `settings` (`config set KEY VALUE`) in place
    /// before the agent starts.
    pub async fn start_with(test: &str, settings: &[(&str, &str)]) -> Self {
        let c = Cluster::start(test).await;
        // The test image exists only locally: do not ask a registry for it first.
        c.cli_ok(&["config", "set", "docker/cache_usage", "cache_first"]);
        for (key, value) in settings {
            c.cli_ok(&["config", "set", key, value]);
        }
        let manager = c.manager("m1", &[]);
        let agent = c.agent("a1");
        wait_for(Duration::from_secs(20), "agent a1 ALIVE", || async {
            c.node("a1").filter(|n| n["state"] == "ALIVE").map(|_| ())
        })
        .await;
        Self { agent, manager, c }
    }

    /// `kill -9` of agent a1, then a1 started again on its scratch root; returns once the
    /// manager sees the new one ALIVE (at its new address).
    pub async fn restart_agent(&mut self) {
        self.agent.kill9();
        self.agent = self.c.agent_on("a1", self.scratch());
        let addr = format!("127.0.0.1:{}", self.agent.port);
        wait_for(
            Duration::from_secs(60),
            "the restarted agent a1 ALIVE",
            || async {
                let n = self.c.node("a1")?;
                (n["state"] == "ALIVE" && n["address"].as_str()?.ends_with(&addr)).then_some(())
            },
        )
        .await;
    }

    pub fn scratch(&self) -> PathBuf {
        self.c.dir.path().join("scratch-a1")
    }

    /// `deckhand run -d …`: the new kernel's id.
    pub fn run_detached(&self, args: &[&str]) -> String {
        let mut full = vec!["run", "-d"];
        full.extend_from_slice(args);
        self.c.cli_ok(&full).trim().to_string()
    }

    /// `deckhand inspect ID` as JSON.
    pub fn inspect(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&self.c.cli_ok(&["inspect", id])).expect("inspect JSON")
    }

    /// Waits until kernel `id` is in `state` (by name), returning its JSON.
    pub async fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> serde_json::Value {
        wait_for(timeout, &format!("kernel {id} {state}"), || async {
            let out = self.c.cli(&["inspect", id]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (v["state"] == state).then_some(v)
        })
        .await
    }

    /// The agent's kernel events from its first one on (`WatchEvents` over its gRPC).
    pub async fn agent_events(&self) -> tonic::Streaming<deckhand::wire::pb::KernelEvent> {
        let addr = format!("http://127.0.0.1:{}", self.agent.port);
        deckhand::wire::pb::agent_service_client::AgentServiceClient::connect(addr)
            .await
            .expect("agent gRPC")
            .watch_events(deckhand::wire::pb::WatchEventsRequest { after_seq: 0 })
            .await
            .expect("watch")
            .into_inner()
    }

    /// Waits until kernel `id` has ended (DONE, FAILED or CANCELLED), returning its JSON.
    pub async fn wait_ended(&self, id: &str, timeout: Duration) -> serde_json::Value {
        wait_for(timeout, &format!("kernel {id} to end"), || async {
            let out = self.c.cli(&["inspect", id]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            ["DONE", "FAILED", "CANCELLED"]
                .contains(&v["state"].as_str()?)
                .then_some(v)
        })
        .await
    }

    /// `deckhand run -d PROFILE_ARGS…` (`--profile NAME`, …) of the local test image
    /// (`DOCKER_REPO`/`DOCKER_TAG` first) with these constants, then `extra` flags: the
    /// output.
    pub fn run_profile(
        &self,
        profile_args: &[&str],
        constants: &[(&str, &str)],
        extra: &[&str],
    ) -> Output {
        let mut args: Vec<String> = vec!["run".into(), "-d".into()];
        args.extend(profile_args.iter().map(|s| s.to_string()));
        let mut all = vec![
            ("DOCKER_REPO", "deckhand-test/busybox"),
            ("DOCKER_TAG", "latest"),
        ];
        all.extend_from_slice(constants);
        for (key, value) in all {
            args.push("--constant".into());
            args.push(format!("{key}={value}"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.c.cli(&refs)
    }

    /// [`run_profile`](Self::run_profile) that must succeed: the new kernel's id.
    pub fn run_profile_ok(
        &self,
        profile_args: &[&str],
        constants: &[(&str, &str)],
        extra: &[&str],
    ) -> String {
        let out = self.run_profile(profile_args, constants, extra);
        assert!(
            out.status.success(),
            "run failed: {}\nagent log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.agent.log()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `deckhand ps --json`.
    pub fn ps(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.c.cli_ok(&["ps", "--json"])).expect("ps JSON")
    }
}

/// Compiles `tests/fixtures/fake_nvml.c` into `dir/libfake_nvml.so`.
pub fn build_fake_nvml(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake_nvml.c");
    let out = dir.join("libfake_nvml.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("cc");
    assert!(status.success(), "building the fake NVML library failed");
    out
}

/// `Some(())` when `deckhand nodes --json` output `out` shows agent `id` ALIVE.
pub fn alive_in(out: &Output, id: &str) -> Option<()> {
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
        .ok()?
        .into_iter()
        .find(|n| n["id"] == id)
        .filter(|n| n["state"] == "ALIVE")
        .map(|_| ())
}

/// Counts lines of `log` containing `needle`.
pub fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// A real private registry: Debian's `docker-registry` on a free loopback port (Docker
/// trusts loopback registries over plain HTTP) with htpasswd auth and its own storage dir.
/// Images a test pushes are tagged `<addr>/<repo>`; every such local tag is removed, and
/// the registry stopped, when the guard drops.
pub struct Registry {
    child: Option<Child>,
    dir: TempDir,
    pub port: u16,
    pub user: String,
    pub password: String,
}

impl Registry {
    pub async fn start(user: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd (apache2-utils)");
        assert!(out.status.success(), "htpasswd failed");
        std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
        let mut r = Self {
            child: None,
            dir,
            port: free_port(),
            user: user.into(),
            password: password.into(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {root}/storage\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: deckhand-test\n    path: {root}/htpasswd\n",
            root = r.dir.path().display(),
            port = r.port
        );
        std::fs::write(r.dir.path().join("config.yml"), config).unwrap();
        r.launch().await;
        // The push client logs in with its own config dir, not the user's.
        let login = Command::new("docker")
            .args(["--config"])
            .arg(r.dir.path().join("client"))
            .args(["login", &r.addr(), "-u", user, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(password.as_bytes())?;
                c.wait_with_output()
            })
            .expect("docker login");
        assert!(
            login.status.success(),
            "docker login: {}",
            String::from_utf8_lossy(&login.stderr)
        );
        r
    }

    async fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("registry.log"))
            .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (Debian package docker-registry)");
        self.child = Some(child);
        let url = format!("127.0.0.1:{}", self.port);
        wait_for(Duration::from_secs(20), "registry up", || async {
            std::net::TcpStream::connect(&url).ok().map(|_| ())
        })
        .await;
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same storage.
    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pulls of `repo` the registry answered: one `HEAD /v2/<repo>/manifests/<tag>` each.
    pub fn pulls(&self, repo: &str) -> usize {
        let needle = format!("\"HEAD /v2/{repo}/manifests/");
        self.log()
            .lines()
            .filter(|l| l.contains(&needle) && l.contains("HTTP/1.1\" 200"))
            .count()
    }

    /// Tags local image `local` as `<addr>/<repo>`, pushes it, and returns the full
    /// reference. With `keep_local` false the local tag is removed again, so the next use
    /// must pull.
    pub fn push(&self, local: &str, repo: &str, keep_local: bool) -> String {
        let reference = format!("{}/{repo}", self.addr());
        docker_ok(&["tag", local, &reference]);
        let out = Command::new("docker")
            .arg("--config")
            .arg(self.dir.path().join("client"))
            .args(["push", &reference])
            .output()
            .expect("docker push");
        assert!(
            out.status.success(),
            "docker push {reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !keep_local {
            untag(&reference);
        }
        reference
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
        // Every local tag on this registry (pushed or pulled by a kernel).
        let out = Command::new("docker")
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .output()
            .expect("docker images");
        let prefix = format!("{}/", self.addr());
        for image in String::from_utf8_lossy(&out.stdout).lines() {
            if image.starts_with(&prefix) {
                untag(image);
            }
        }
    }
}

/// Runs `docker ARGS`, panicking with its stderr if it fails; returns stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes one local tag, also one a container uses (the image goes with its last tag).
pub fn untag(reference: &str) {
    let _ = Command::new("docker")
        .args(["rmi", "-f", reference])
        .output();
}

/// Local image tags a test made, removed (forcibly: a container may still use them) when
/// dropped — also when the test fails.
pub struct Tags(pub Vec<String>);

impl Drop for Tags {
    fn drop(&mut self) {
        for t in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", t]).output();
        }
    }
}

/// The id of local image `reference`, empty if absent.
pub fn image_id(reference: &str) -> String {
    let out = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Id}}", reference])
        .output()
        .expect("docker image inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A variant of the test image with its own image id (a label differs), tagged
/// `deckhand-test/variant:<tag>`; `extra` adds Dockerfile lines (like a big layer). The tag
/// is removed by [`untag`] when the test is done.
pub fn build_variant(tag: &str, extra: &str) -> String {
    let reference = format!("deckhand-test/variant:{tag}");
    let dockerfile = format!("FROM {TEST_IMAGE}\nLABEL io.deckhand.test.variant={tag}\n{extra}\n");
    let mut child = Command::new("docker")
        .args(["build", "-q", "-t", &reference, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker build");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(dockerfile.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    reference
}

/// An HTTP server on every host address (the kernels' bridge reaches it at its gateway)
/// that answers `hello-from-host`; stops when dropped.
pub struct HostListener {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl HostListener {
    pub fn start() -> Self {
        let listener = TcpListener::bind("0.0.0.0:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf);
                        let _ = s.write_all(
                            b"HTTP/1.0 200 OK\r\nContent-Length: 15\r\n\r\nhello-from-host",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self { port, stop }
    }
}

impl Drop for HostListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

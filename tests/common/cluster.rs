//! The real `deckhand` binary as child processes, and a cluster of them (an etcd, a
//! manager and agents) for one test.

use super::*;

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

//! A cluster that runs kernels on the real Docker engine.

use super::*;

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

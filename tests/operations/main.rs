//! Operating a cluster: the agent's and the manager's Prometheus metrics as a real
//! Prometheus scrapes them and `promtool check metrics` reads them, the manager's status
//! page in a real headless Chromium, and logs in which a kernel's life can be followed by
//! its id. The GPUs are the fake NVML library (CI has none); everything else is real.

#[path = "../common/mod.rs"]
mod common;

mod metrics;
mod status_and_logs;

use std::time::Duration;

use common::observe::{self, samples, Prometheus};
use common::{
    build_variant, free_port, untag, wait_for, Cluster, Proc, Registry, Tags, TEST_IMAGE,
};

/// A manager and an agent `a1` with metrics on, the agent seeing the two fake NVML GPUs.
struct Observed {
    agent: Proc,
    manager: Proc,
    /// `127.0.0.1:PORT` of each daemon's metrics endpoint.
    agent_metrics: String,
    manager_metrics: String,
    c: Cluster,
}

impl Observed {
    async fn start(test: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with(test, &[], env).await
    }

    /// [`start`](Self::start) with `settings` (`config set KEY VALUE`) in place first.
    async fn start_with(test: &str, settings: &[(&str, &str)], env: &[(&str, &str)]) -> Self {
        let c = Cluster::start(test).await;
        let lib = c.fake_nvml();
        c.cli_ok(&["config", "set", "docker/cache_usage", "cache_first"]);
        c.cli_ok(&["config", "set", "agent/heartbeat_interval", "500ms"]);
        c.cli_ok(&["config", "set", "gpu/nvml_library", lib.to_str().unwrap()]);
        for (key, value) in settings {
            c.cli_ok(&["config", "set", key, value]);
        }
        let manager_metrics = format!("127.0.0.1:{}", free_port());
        let agent_metrics = format!("127.0.0.1:{}", free_port());
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let manager = c.spawn_env(
            "manager-m1",
            &[
                "manager",
                "--manager-id",
                "m1",
                "--listen",
                &listen,
                "--metrics-listen-addr",
                &manager_metrics,
            ],
            port,
            env,
        );
        let scratch = c.dir.path().join("scratch-a1");
        let agent = c.agent_with(
            "a1",
            scratch,
            &["--metrics-listen-addr", &agent_metrics],
            env,
        );
        wait_for(Duration::from_secs(20), "agent a1 ALIVE", || async {
            c.node("a1").filter(|n| n["state"] == "ALIVE").map(|_| ())
        })
        .await;
        Self {
            agent,
            manager,
            agent_metrics,
            manager_metrics,
            c,
        }
    }

    fn run_sleeper(&self) -> String {
        self.c
            .cli_ok(&["run", "-d", "--cpus", "0.25", TEST_IMAGE, "sleep", "300"])
            .trim()
            .to_string()
    }
}

/// Waits until the agent's exposition has `name` with labels containing `labels` at
/// `value`.
async fn wait_sample(addr: &str, name: &str, labels: &str, value: f64) -> String {
    wait_for(
        Duration::from_secs(20),
        &format!("{name}{{{labels}}} = {value} at {addr}"),
        || async {
            let text = observe::get(addr, "/metrics").await?;
            samples(&text, name)
                .iter()
                .any(|(l, v)| l.contains(labels) && *v == value)
                .then_some(text)
        },
    )
    .await
}

/// The table with HTML id `id` in `dom`.
fn section<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let rest = &dom[start..];
    &rest[..rest.find("</table>").unwrap_or(rest.len())]
}

/// The cells' text of the row of `table` that contains `needle`.
fn row(table: &str, needle: &str) -> Vec<String> {
    let tr = table
        .split("<tr")
        .find(|r| r.contains(needle))
        .unwrap_or_else(|| panic!("no row with {needle} in:\n{table}"));
    tr.split("<td")
        .skip(1)
        .map(|cell| {
            let inner = cell.split_once('>').map_or("", |(_, rest)| rest);
            let inner = inner.split("</td>").next().unwrap_or_default();
            // The text without tags (a GPU cell holds <div>s).
            let mut text = String::new();
            let mut in_tag = false;
            for ch in inner.chars() {
                match ch {
                    '<' => in_tag = true,
                    '>' => in_tag = false,
                    c if !in_tag => text.push(c),
                    _ => {}
                }
            }
            text.trim().to_string()
        })
        .collect()
}

/// `target/operations/<name>`: kept after the test as an artifact.
fn screenshot_path(name: &str) -> std::path::PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("operations");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir.join(name)
}

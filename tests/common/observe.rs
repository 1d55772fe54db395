//! What operators watch deckhand with, for real: Debian's Prometheus (a server per test on
//! a free loopback port, scraping the daemons every second, with its own data dir),
//! `promtool check metrics`, and a headless Chromium (its home and profile under the test's
//! dir). All are installed by `scripts/deps.sh`; a missing one fails the test, naming the
//! package. The Prometheus server is killed and its dir removed when the guard drops.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{free_port, wait_for};

/// An HTTP client for the daemons' and Prometheus' plain-HTTP endpoints.
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// `GET http://ADDR/PATH` as text, or None while it does not answer 200.
pub async fn get(addr: &str, path: &str) -> Option<String> {
    let r = http()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.text().await.ok()
}

/// The samples of metric `name` in an exposition: (the labels part, the value).
pub fn samples(exposition: &str, name: &str) -> Vec<(String, f64)> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            Some((labels.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Runs `promtool check metrics` on `exposition`: its complaints, empty when it passes.
pub fn promtool_check(exposition: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool: install Debian's prometheus (scripts/deps.sh does)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        String::new()
    } else {
        format!("exit {:?}: {said}", out.status.code())
    }
}

/// A real Prometheus server scraping `targets` (job name, `HOST:PORT`) every second.
pub struct Prometheus {
    child: Child,
    dir: TempDir,
    pub port: u16,
}

impl Prometheus {
    pub async fn start(targets: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
        for (job, addr) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{addr}']\n"
            ));
        }
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus: install Debian's prometheus (scripts/deps.sh does)");
        let p = Self { child, dir, port };
        let addr = p.addr();
        wait_for(Duration::from_secs(60), "Prometheus ready", || async {
            get(&addr, "/-/ready").await.map(|_| ())
        })
        .await;
        p
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query through the HTTP API: each series' labels and value.
    pub async fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let Ok(r) = http()
            .get(format!("http://{}/api/v1/query", self.addr()))
            .query(&[("query", promql)])
            .send()
            .await
        else {
            return Vec::new();
        };
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| {
                let v = s["value"][1].as_str()?.parse().ok()?;
                Some((s["metric"].clone(), v))
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Headless Chromium with its home and profile under `dir`, given `budget_ms` of virtual
/// time (timers run, the page's fetches complete) before it acts.
fn chromium(dir: &Path, budget_ms: u32) -> Command {
    let home = dir.join("chromium-home");
    std::fs::create_dir_all(&home).expect("chromium home");
    let mut c = Command::new("chromium");
    c.env("HOME", &home)
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!(
            "--user-data-dir={}",
            home.join("profile").display()
        ))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg("--window-size=1400,900")
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// The DOM of `url` after `budget_ms` of the page's own life.
pub fn dump_dom(dir: &Path, url: &str, budget_ms: u32) -> String {
    let out = chromium(dir, budget_ms)
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("chromium: install Debian's chromium (scripts/deps.sh does)");
    assert!(out.status.success(), "chromium --dump-dom {url} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A PNG screenshot of `url` saved at `file`.
pub fn screenshot(dir: &Path, url: &str, file: &Path) {
    let status = chromium(dir, 2500)
        .arg(format!("--screenshot={}", file.display()))
        .arg(url)
        .status()
        .expect("chromium: install Debian's chromium (scripts/deps.sh does)");
    assert!(status.success(), "chromium --screenshot {url} failed");
}

//! Instances of the Vast.ai stand-in: what a rental asked for, the row the API shows for
//! it, and the real local Docker container that plays the rented machine.
//!
//! Each instance runs as `docker run -d` of the requested image with the requested
//! environment (the env object's plain keys; keys starting with `-`, the CLI's way of
//! passing `-p`/`-h` docker flags, are kept in the row but not applied) and, for runtype
//! `args`, the requested args in place of the image's CMD (`onstart`, when given with
//! `args`, is the entrypoint, as the CLI sends `--entrypoint`). Other runtypes (ssh,
//! jupyter) replace the entrypoint with `/bin/sh -c "<onstart>"` followed by an endless
//! sleep, as Vast's own entrypoint runs onstart and keeps the machine up. Like Vast, the
//! container also gets `CONTAINER_ID` and `VAST_CONTAINERLABEL`.
//!
//! Containers carry `io.deckhand.test.vast=<stand-in id>`, `io.deckhand.test.vast.instance`
//! and, when the test gave one, `io.deckhand.namespace`, so the guard (and
//! `remove_containers(ns)`) removes them. `actual_status` is read from the container on
//! every read: running → `running`, exited → `exited` (`stopped` once a stop was asked).
//! Like the real rows, no field carries the exit code; tests read it with
//! `VastStandIn::container_exit_code`.
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Map, Value};

/// One rented (or pre-existing) instance, as the stand-in keeps it.
#[derive(Clone, Debug)]
pub struct Instance {
    pub id: u64,
    /// The offer it was rented from (0 for one made by `VastStandIn::preexisting`).
    pub offer_id: u64,
    pub label: Option<String>,
    pub image: String,
    /// The env object's plain keys (what the container gets).
    pub env: BTreeMap<String, String>,
    /// The env object as sent, docker-flag keys included.
    pub env_raw: Map<String, Value>,
    pub args: Option<Vec<String>>,
    pub onstart: Option<String>,
    pub runtype: String,
    pub image_login: Option<String>,
    pub disk: f64,
    /// The full create body as sent.
    pub body: Value,
    /// The offer row at rental time (gpu_name, num_gpus, dph_total, …).
    pub offer_row: Map<String, Value>,
    pub start_date: f64,
    /// null while provisioning, then `loading`, then read from the container.
    pub actual_status: Option<String>,
    pub intended_status: String,
    pub status_msg: Option<String>,
    /// The Docker container id once created.
    pub container: Option<String>,
    pub destroyed: bool,
    /// A status the host reports whatever the container does (`offline`, `unknown`), with
    /// its `status_msg`: set by `VastStandIn::host_reports`.
    pub host_status: Option<(String, Option<String>)>,
}

impl Instance {
    /// The API row: the documented instance fields (`id, label, actual_status,
    /// intended_status, cur_state, status_msg, gpu_name, num_gpus, dph_total, start_date,
    /// image_uuid, extra_env`, …).
    pub fn row(&self) -> Map<String, Value> {
        let o = &self.offer_row;
        let get = |k: &str| o.get(k).cloned().unwrap_or(Value::Null);
        let cur_state = if self.destroyed {
            "unloaded"
        } else {
            self.intended_status.as_str()
        };
        let (actual_status, status_msg) = match &self.host_status {
            Some((s, m)) => (Some(s.clone()), m.clone()),
            None => (self.actual_status.clone(), self.status_msg.clone()),
        };
        let extra_env: Vec<Value> = self
            .env_raw
            .iter()
            .map(|(k, v)| json!([k, plain(v)]))
            .collect();
        let row = json!({
            "id": self.id,
            "machine_id": get("machine_id"),
            "host_id": get("host_id"),
            "label": self.label,
            "actual_status": actual_status,
            "intended_status": self.intended_status,
            "cur_state": cur_state,
            "next_state": cur_state,
            "status_msg": status_msg,
            "image_uuid": self.image,
            "image_args": self.args.clone().unwrap_or_default(),
            "image_runtype": self.runtype,
            "onstart": self.onstart,
            "extra_env": extra_env,
            "gpu_name": get("gpu_name"),
            "num_gpus": get("num_gpus"),
            "gpu_ram": get("gpu_ram"),
            "gpu_totalram": get("gpu_total_ram"),
            "gpu_util": null,
            "cpu_ram": get("cpu_ram"),
            "cpu_cores_effective": get("cpu_cores_effective"),
            "cuda_max_good": get("cuda_max_good"),
            "disk_space": self.disk,
            "dph_total": get("dph_total"),
            "dph_base": get("dph_base"),
            "start_date": self.start_date,
            "end_date": null,
            "geolocation": get("geolocation"),
            "inet_up": get("inet_up"),
            "inet_down": get("inet_down"),
            "reliability2": get("reliability2"),
            "verification": get("verification"),
            "ssh_host": "127.0.0.1",
            "ssh_port": null,
            "public_ipaddr": "127.0.0.1",
            "ports": {},
            "template_id": null,
            "volume_info": null,
            "is_bid": false,
        });
        match row {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// The arguments of `docker run` for this instance (after `run -d`).
    pub fn run_args(&self, sid: &str, namespace: Option<&str>) -> Vec<String> {
        let mut a = vec![
            "--name".to_string(),
            format!("vast-standin-{sid}-C.{}", self.id),
            "--label".into(),
            format!("io.deckhand.test.vast={sid}"),
            "--label".into(),
            format!("io.deckhand.test.vast.instance={}", self.id),
        ];
        if let Some(ns) = namespace {
            a.extend(["--label".into(), format!("io.deckhand.namespace={ns}")]);
        }
        for (k, v) in [
            ("CONTAINER_ID", self.id.to_string()),
            ("VAST_CONTAINERLABEL", format!("C.{}", self.id)),
        ] {
            a.extend(["-e".into(), format!("{k}={v}")]);
        }
        for (k, v) in &self.env {
            a.extend(["-e".into(), format!("{k}={v}")]);
        }
        if self.runtype == "args" {
            if let Some(entry) = self.onstart.as_deref().filter(|s| !s.trim().is_empty()) {
                a.extend(["--entrypoint".into(), entry.trim().to_string()]);
            }
            a.push(self.image.clone());
            a.extend(self.args.clone().unwrap_or_default());
        } else {
            let script = format!(
                "{}\nwhile :; do sleep 3600; done",
                self.onstart.clone().unwrap_or_default()
            );
            a.extend(["--entrypoint".into(), "/bin/sh".into(), self.image.clone()]);
            a.extend(["-c".into(), script]);
        }
        a
    }
}

/// A JSON value as the string a container sees (`"1"` stays `1`, not `"1"`).
pub fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// What `docker inspect` says about one container.
#[derive(Clone, Debug)]
pub struct ContainerState {
    pub status: String,
    pub exit_code: i64,
}

/// `docker inspect` of several containers at once; absent ones are missing from the map.
pub async fn inspect(ids: &[String]) -> BTreeMap<String, ContainerState> {
    let mut out = BTreeMap::new();
    if ids.is_empty() {
        return out;
    }
    let res = tokio::process::Command::new("docker")
        .args(["inspect", "--type", "container"])
        .args(ids)
        .output()
        .await;
    let Ok(res) = res else { return out };
    let parsed: Vec<Value> = serde_json::from_slice(&res.stdout).unwrap_or_default();
    for c in parsed {
        let id = c["Id"].as_str().unwrap_or_default().to_string();
        out.insert(
            id,
            ContainerState {
                status: c["State"]["Status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                exit_code: c["State"]["ExitCode"].as_i64().unwrap_or(0),
            },
        );
    }
    out
}

/// The API's `actual_status` for a container state.
pub fn actual_status(state: Option<&ContainerState>, intended: &str) -> &'static str {
    match state.map(|s| s.status.as_str()) {
        Some("running") => "running",
        Some("created") => "created",
        Some("paused") => "frozen",
        Some("restarting") => "rebooting",
        Some("exited" | "dead") if intended == "stopped" => "stopped",
        Some("exited" | "dead") => "exited",
        _ => "unknown",
    }
}

/// Runs `docker ARGS` on the stand-in's runtime: stdout on success, stderr on failure.
pub async fn docker(
    config: Option<&Path>,
    args: &[String],
    stdin: Option<&str>,
) -> Result<String, String> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new("docker");
    if let Some(dir) = config {
        cmd.arg("--config").arg(dir);
    }
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot run docker: {e}"))?;
    if let Some(mut pipe) = child.stdin.take() {
        if let Some(input) = stdin {
            let _ = pipe.write_all(input.as_bytes()).await;
        }
    }
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Parses `image_login` (`-u USER -p PASSWORD REGISTRY`, docker-login style).
pub fn parse_login(login: &str) -> Option<(String, String, String)> {
    let words: Vec<&str> = login.split_whitespace().collect();
    let (mut user, mut pass, mut registry) = (None, None, None);
    let mut i = 0;
    while i < words.len() {
        match words[i] {
            "-u" | "--username" => {
                user = words.get(i + 1).map(|s| s.to_string());
                i += 2;
            }
            "-p" | "--password" => {
                pass = words.get(i + 1).map(|s| s.to_string());
                i += 2;
            }
            w => {
                registry = Some(w.to_string());
                i += 1;
            }
        }
    }
    Some((user?, pass?, registry?))
}

/// The container's log (stdout and stderr interleaved by time), its last `tail` lines,
/// only lines containing `filter` when given.
pub async fn container_logs(container: &str, tail: usize, filter: Option<&str>) -> String {
    let out = tokio::process::Command::new("docker")
        .args([
            "logs",
            "--timestamps",
            "--tail",
            &tail.to_string(),
            container,
        ])
        .output()
        .await;
    let Ok(out) = out else { return String::new() };
    let mut lines: Vec<(chrono::DateTime<chrono::FixedOffset>, String)> = Vec::new();
    for stream in [&out.stdout, &out.stderr] {
        for line in String::from_utf8_lossy(stream).lines() {
            let (ts, text) = line.split_once(' ').unwrap_or((line, ""));
            let Ok(ts) = chrono::DateTime::parse_from_rfc3339(ts) else {
                continue;
            };
            lines.push((ts, text.to_string()));
        }
    }
    lines.sort_by_key(|(ts, _)| *ts);
    let kept: Vec<String> = lines
        .into_iter()
        .map(|(_, l)| l)
        .filter(|l| filter.is_none_or(|f| l.contains(f)))
        .collect();
    let skip = kept.len().saturating_sub(tail);
    kept[skip..].iter().map(|l| format!("{l}\n")).collect()
}

/// `docker rm -f` of every container labelled `io.deckhand.test.vast=<sid>` (sync, for
/// the guard's Drop).
pub fn remove_all(sid: &str) {
    for id in containers_of(sid) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &id])
            .output();
    }
}

/// Ids of the containers (running or not) the stand-in `sid` made.
pub fn containers_of(sid: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--no-trunc", "--filter"])
        .arg(format!("label=io.deckhand.test.vast={sid}"))
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
        Err(_) => Vec::new(),
    }
}

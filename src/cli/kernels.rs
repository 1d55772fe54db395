//! Kernel commands: `run`, `ps`, `inspect`, `logs`, `exec`, `stop`, `rm`, `suspend`,
//! `resume`, `release`, `kill`, `files`. All go through the manager, which forwards to the
//! agent holding the kernel.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use comfy_table::{presets::NOTHING, Table};
use futures::StreamExt;

use super::common::ManagerArgs;
use super::output::{ago, bytes, print_json};
use crate::wire::pb::{
    ArraySpec, ControlKernelRequest, CreateKernelRequest, ExecRequest, FileRequest, KernelAction,
    KernelInfo, KernelLogsRequest, KernelRef, KernelSpec, KernelState, ListKernelsRequest,
    PortSpec, PullProgress, RunKernelRequest, StageIn, UploadFileRequest, WatchKernelEventsRequest,
};

/// Kernel operations may wait for a container to start or a grace period to pass.
const LONG: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: ManagerArgs,
    /// Kernel id (a UUID); generated when absent. Running the same id and spec again
    /// returns the existing kernel.
    #[arg(long)]
    pub id: Option<String>,
    /// A name for people (`ps` shows it); need not be unique.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub name: String,
    /// Task slug (selects volumes).
    #[arg(long, default_value = "", hide_default_value = true)]
    pub slug: String,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Secret environment variable KEY=VALUE: delivered to the kernel, shown as `***`.
    #[arg(long = "secret-env", value_name = "KEY=VALUE")]
    pub secret_env: Vec<String>,
    /// Label KEY=VALUE (repeatable).
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Working directory of the command inside the container (default: the image's).
    #[arg(
        short = 'w',
        long = "workdir",
        value_name = "DIR",
        default_value = "",
        hide_default_value = true
    )]
    pub working_dir: String,
    /// Hostname inside the container (default: the container id).
    #[arg(long, default_value = "", hide_default_value = true)]
    pub hostname: String,
    /// `uid[:gid]`; default: the cluster's kernel uid:gid.
    #[arg(short = 'u', long, default_value = "", hide_default_value = true)]
    pub user: String,
    /// Stage-in bind mount HOST:CONTAINER[:ro] (host path from config/container/stage_in_dirs).
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    pub volumes: Vec<String>,
    /// Also write stdout here (relative: inside the kernel's /home/work).
    #[arg(long, default_value = "", hide_default_value = true)]
    pub output: String,
    /// Also write stderr here (relative: inside the kernel's /home/work).
    #[arg(long, default_value = "", hide_default_value = true)]
    pub error: String,
    /// Expose a container port: [HOSTIP:][HOSTPORT:]PORT[/udp], as Docker writes it. The host
    /// port lies in config/container/port_range; without one the agent picks a free one.
    #[arg(short = 'p', long = "port")]
    pub ports: Vec<String>,
    /// Feed this file to the command's standard input (DRMAA2 inputPath): an absolute path
    /// inside config/container/stage_in_dirs, or a file in the kernel's /home/work (with
    /// --hold: upload it with `files put`, then release).
    #[arg(long, default_value = "", hide_default_value = true)]
    pub input: String,
    /// Docker network: a network name, `none`, `bridge`, or `host` (security/allow_host_namespaces);
    /// default: config/docker/network, else Docker's bridge.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub network: String,
    /// Run the container privileged (only where config/security/allow_privileged is true).
    #[arg(long)]
    pub privileged: bool,
    /// no, on-failure[:N], always, unless-stopped (N: restarts before it gives up).
    #[arg(long, default_value = "", hide_default_value = true)]
    pub restart: String,
    /// With `--restart on-failure[:N]`: wait this long after a failed run before starting
    /// the kernel again (e.g. `5s`); without it Docker restarts at once.
    #[arg(
        long = "restart-delay",
        value_name = "DURATION",
        default_value = "",
        hide_default_value = true
    )]
    pub restart_delay: String,
    /// IPC namespace as Docker takes it (`host` only with config/security/allow_host_namespaces).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "",
        hide_default_value = true
    )]
    pub ipc: String,
    /// UTS namespace as Docker takes it (`host` only with config/security/allow_host_namespaces).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "",
        hide_default_value = true
    )]
    pub uts: String,
    /// PID namespace as Docker takes it (`host` only with config/security/allow_host_namespaces).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "",
        hide_default_value = true
    )]
    pub pid: String,
    /// Remove the container when it exits (the kernel record stays).
    #[arg(long = "rm")]
    pub auto_remove: bool,
    /// GPUs: `all`, a count, or comma-separated UUIDs.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub gpus: String,
    /// Size of /dev/shm, as Docker reads sizes (`64m`).
    #[arg(long = "shm-size", default_value = "", hide_default_value = true)]
    pub shm_size: String,
    /// NAME=SOFT[:HARD] (repeatable), e.g. memlock=-1.
    #[arg(long = "ulimit")]
    pub ulimits: Vec<String>,
    /// CPU cores the kernel gets (fractions allowed, `0.5`); default: no limit and no CPU slot.
    #[arg(long, default_value_t = 0.0, hide_default_value = true)]
    pub cpus: f64,
    /// Memory limit, as Docker reads sizes: `16m` is 16 MiB, `1g` 1 GiB.
    #[arg(short = 'm', long, default_value = "", hide_default_value = true)]
    pub memory: String,
    /// Memory plus swap (`-1`: unlimited swap); without it a kernel gets no swap.
    #[arg(long = "memory-swap", default_value = "", hide_default_value = true)]
    pub memory_swap: String,
    /// A tmpfs mount PATH[:OPTIONS], e.g. `/scratch:rw,size=64m` (repeatable).
    #[arg(long = "tmpfs", value_name = "PATH[:OPTIONS]")]
    pub tmpfs: Vec<String>,
    /// Storage driver option KEY=VALUE, e.g. `size=20g` (repeatable).
    #[arg(long = "storage-opt", value_name = "KEY=VALUE")]
    pub storage_opt: Vec<String>,
    /// Most processes the kernel may have at once; default: no limit.
    #[arg(
        long = "pids-limit",
        value_name = "N",
        default_value_t = 0,
        hide_default_value = true
    )]
    pub pids_limit: i64,
    /// Create but do not start until `deckhand release`.
    #[arg(long)]
    pub hold: bool,
    /// Image policy for this kernel, overriding config/docker/cache_usage.
    #[arg(long, value_parser = ["cache_first", "remote_first", "require_pull"])]
    pub cache_usage: Option<String>,
    /// Process id: kernels with the same one share process data (config/docker/process_data_dest).
    #[arg(long, default_value = "", hide_default_value = true)]
    pub process_id: String,
    /// Grace period between SIGTERM and SIGKILL on stop, e.g. `30s`.
    #[arg(long = "stop-timeout", default_value = "", hide_default_value = true)]
    pub stop_timeout: String,
    /// Job array BEGIN-END[:STEP][%MAX_PARALLEL], e.g. `1-100:1%4`.
    #[arg(long)]
    pub array: Option<String>,
    /// Where the kernel runs: `docker` or `vastai` (a rented Vast.ai GPU instance); default:
    /// the agent's config/agent/default_runtime.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub runtime: String,
    /// A parent task ID=SLUG (repeatable); a Vast.ai instance gets them as TASK_PARENTS (JSON).
    #[arg(long = "parent", value_name = "ID=SLUG")]
    pub parents: Vec<String>,
    /// A Qarnot task profile: docker-batch (no network), docker-network,
    /// docker-network-ssh, docker-nvidia-batch, docker-nvidia-network, the cluster profiles
    /// docker-cluster[-network][-ssh] (with --instances), or one from config/profiles/. The image and command then come from IMAGE [CMD…] or
    /// from --constant DOCKER_REPO=…, DOCKER_TAG=…, DOCKER_CMD=… (see README, "Task profiles").
    #[arg(long, default_value = "", hide_default_value = true)]
    pub profile: String,
    /// A profile constant KEY=VALUE (repeatable), by Qarnot's names; other names become
    /// environment variables, QARNOT_SECRET__* are write-only.
    #[arg(long = "constant", value_name = "KEY=VALUE")]
    pub constants: Vec<String>,
    /// A profile kernel's resources, put at RESOURCES_PATH (default /job) before it starts:
    /// s3://bucket/prefix (config/storage/s3) or a host dir in config/container/stage_in_dirs.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub resources: String,
    /// Upload what a profile kernel leaves in RESOURCES_PATH (or --results-path) here after
    /// it ends: s3://bucket/prefix. The kernel reads UPLOADING meanwhile.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub results: String,
    /// The container dir uploaded as results (under RESOURCES_PATH or /home/work).
    #[arg(long = "results-path", default_value = "", hide_default_value = true)]
    pub results_path: String,
    /// A cluster kernel of N instances (with a docker-cluster* profile): instance 0, the
    /// master, runs DOCKER_CMD_MASTER, the workers DOCKER_CMD_WORKER; they are ID/0 … ID/N-1
    /// in logs and exec.
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub instances: u32,
    /// Run on this agent instead of letting the manager choose.
    #[arg(long)]
    pub agent: Option<String>,
    /// Print the kernel id and return instead of following its output.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Print the created kernel(s) as JSON (implies --detach).
    #[arg(long)]
    pub json: bool,
    /// The image. With --profile: instead of the DOCKER_SRV/DOCKER_REPO/DOCKER_TAG constants
    /// (tag `latest` unless given), refused by a profile that fixes its image.
    pub image: Option<String>,
    /// Command and arguments (default: the image's CMD; with --profile: instead of DOCKER_CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn pairs(
    flag: &str,
    items: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("{flag} `{kv}`: expected KEY=VALUE"))
        })
        .collect()
}

/// `1-100:2%4` → begin 1, end 100, step 2, max_parallel 4.
pub fn parse_array(s: &str) -> anyhow::Result<ArraySpec> {
    let bad = || anyhow::anyhow!("--array `{s}`: expected BEGIN-END[:STEP][%MAX_PARALLEL]");
    let (range, max) = match s.split_once('%') {
        Some((r, m)) => (r, m.parse().map_err(|_| bad())?),
        None => (s, 0),
    };
    let (range, step) = match range.split_once(':') {
        Some((r, st)) => (r, st.parse().map_err(|_| bad())?),
        None => (range, 1),
    };
    let (b, e) = range.split_once('-').ok_or_else(bad)?;
    Ok(ArraySpec {
        begin: b.parse().map_err(|_| bad())?,
        end: e.parse().map_err(|_| bad())?,
        step,
        max_parallel: max,
    })
}

/// Docker's `-p [HOSTIP:][HOSTPORT:]CONTAINERPORT[/PROTO]` (an IPv6 host address in
/// brackets: `[::1]:30080:80`).
pub fn parse_port(p: &str) -> anyhow::Result<PortSpec> {
    let bad = || anyhow::anyhow!("--port `{p}`: expected [HOSTIP:][HOSTPORT:]PORT[/udp]");
    let (rest, protocol) = p.split_once('/').unwrap_or((p, "tcp"));
    let (ip, rest) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (ip, rest) = v6.split_once("]:").ok_or_else(bad)?;
            (ip, rest)
        }
        None => match rest.matches(':').count() {
            2 => rest.split_once(':').ok_or_else(bad)?,
            0 | 1 => ("", rest),
            _ => return Err(bad()),
        },
    };
    let (host, container) = rest.split_once(':').unwrap_or(("", rest));
    Ok(PortSpec {
        container_port: container.parse().map_err(|_| bad())?,
        protocol: protocol.to_string(),
        host_port: if host.is_empty() {
            0
        } else {
            host.parse().map_err(|_| bad())?
        },
        host_ip: ip.to_string(),
    })
}

impl RunArgs {
    pub fn spec(&self) -> anyhow::Result<KernelSpec> {
        let image = match (&self.image, self.profile.is_empty()) {
            (Some(i), true) => i.clone(),
            (None, true) => bail!("give the IMAGE to run (or a --profile with its constants)"),
            // Beside a profile IMAGE stands for DOCKER_SRV/DOCKER_REPO:DOCKER_TAG; the agent
            // resolves it with the profile (which may fix its own image).
            (Some(i), false) => i.clone(),
            (None, false) => String::new(),
        };
        let stage_in = self
            .volumes
            .iter()
            .map(|v| {
                let parts: Vec<&str> = v.split(':').collect();
                match parts.as_slice() {
                    [h, c] => Ok(StageIn {
                        host_path: h.to_string(),
                        container_path: c.to_string(),
                        read_only: false,
                    }),
                    [h, c, m @ ("ro" | "rw")] => Ok(StageIn {
                        host_path: h.to_string(),
                        container_path: c.to_string(),
                        read_only: *m == "ro",
                    }),
                    _ => bail!("--volume `{v}`: expected HOST:CONTAINER[:ro]"),
                }
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let ports = self
            .ports
            .iter()
            .map(|p| parse_port(p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(KernelSpec {
            kernel_id: self
                .id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            name: self.name.clone(),
            slug: self.slug.clone(),
            labels: pairs("--label", &self.labels)?,
            image,
            command: self.command.clone(),
            env: pairs("--env", &self.env)?,
            secret_env: pairs("--secret-env", &self.secret_env)?,
            working_dir: self.working_dir.clone(),
            hostname: self.hostname.clone(),
            user: self.user.clone(),
            stage_in,
            output_path: self.output.clone(),
            error_path: self.error.clone(),
            ports,
            network_mode: self.network.clone(),
            privileged: self.privileged,
            restart_policy: self.restart.clone(),
            restart_delay: self.restart_delay.clone(),
            ipc_mode: self.ipc.clone(),
            uts_mode: self.uts.clone(),
            pid_mode: self.pid.clone(),
            auto_remove: self.auto_remove,
            gpus: self.gpus.clone(),
            shm_size: self.shm_size.clone(),
            ulimits: self.ulimits.join(","),
            cpus: self.cpus,
            memory: self.memory.clone(),
            pids_limit: self.pids_limit,
            submit_as_hold: self.hold,
            stop_grace_period: self.stop_timeout.clone(),
            cache_usage: self.cache_usage.clone().unwrap_or_default(),
            process_id: self.process_id.clone(),
            memory_swap: self.memory_swap.clone(),
            tmpfs: self.tmpfs.clone(),
            storage_opt: pairs("--storage-opt", &self.storage_opt)?,
            input_path: self.input.clone(),
            runtime: self.runtime.clone(),
            parents: pairs("--parent", &self.parents)?,
            profile: self.profile.clone(),
            constants: pairs("--constant", &self.constants)?,
            resources: self.resources.clone(),
            results: self.results.clone(),
            results_path: self.results_path.clone(),
            instances: self.instances,
            span: None,
        })
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let spec = args.spec()?;
    let array = args.array.as_deref().map(parse_array).transpose()?;
    let req = RunKernelRequest {
        request: Some(CreateKernelRequest {
            spec: Some(spec),
            array,
        }),
        agent_id: args.agent.clone().unwrap_or_default(),
    };
    // Pull progress and notes while the kernel is being made (best effort: an older manager
    // without the watch just shows nothing).
    let watcher = if args.json || args.array.is_some() {
        None
    } else {
        watch_progress(&args.target, &spec_id(&req)).await
    };
    let resp = args
        .target
        .call_with(LONG, |mut c| {
            let req = req.clone();
            async move { c.run_kernel(req).await.map(|r| r.into_inner()) }
        })
        .await;
    if let Some(w) = watcher {
        w.abort();
        let _ = w.await;
    }
    let resp = resp?;
    if args.json {
        print_kernels(&resp.kernels)?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(first) = resp.kernels.first().cloned() else {
        bail!("the agent returned no kernel");
    };
    // FAILED without ever running: it could not start. A kernel that ran and already exited
    // (non-zero) is followed like any other: its output, then its exit code.
    let ran = first.started_at_ms > 0 || first.exit_code.is_some();
    if first.state() == KernelState::Failed && !ran {
        eprintln!("kernel {} FAILED: {}", first.kernel_id, first.reason);
        return Ok(ExitCode::from(125));
    }
    if args.detach || args.hold || args.array.is_some() {
        if args.array.is_some() {
            println!("{}", first.array_id);
        } else {
            println!("{}", first.kernel_id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    follow_to_exit(&args.target, &first.kernel_id).await
}

fn spec_id(req: &RunKernelRequest) -> String {
    req.request
        .as_ref()
        .and_then(|r| r.spec.as_ref())
        .map(|s| s.kernel_id.clone())
        .unwrap_or_default()
}

/// Shows the kernel's pull progress (a bar on a terminal, a line per update otherwise) and
/// any notes (like a fallback to a local image) on stderr until aborted.
async fn watch_progress(target: &ManagerArgs, id: &str) -> Option<tokio::task::JoinHandle<()>> {
    use std::io::IsTerminal;
    let req = WatchKernelEventsRequest {
        kernel_id: id.to_string(),
    };
    let mut s = target
        .call_with(LONG, |mut c| {
            let req = req.clone();
            async move { c.watch_kernel_events(req).await.map(|r| r.into_inner()) }
        })
        .await
        .ok()?;
    let tty = std::io::stderr().is_terminal();
    Some(tokio::spawn(async move {
        let mut bar_open = false;
        while let Some(Ok(ev)) = s.next().await {
            let mut err = std::io::stderr().lock();
            if let Some(p) = &ev.pull {
                let line = progress_line(p);
                if tty {
                    let _ = write!(err, "\r\x1b[2K{line}");
                    bar_open = true;
                } else {
                    let _ = writeln!(err, "{line}");
                }
            } else if !ev.reason.is_empty() && ev.state() == KernelState::Pulling {
                if bar_open {
                    let _ = writeln!(err);
                    bar_open = false;
                }
                let _ = writeln!(err, "{}", ev.reason);
            } else if bar_open && ev.state() != KernelState::Pulling {
                let _ = writeln!(err);
                bar_open = false;
            }
            let _ = err.flush();
        }
    }))
}

/// `pulling IMAGE [#########-----------]  45%  12.3 MiB / 27.0 MiB  2/3 layers  ETA 3s`
pub fn progress_line(p: &PullProgress) -> String {
    let fraction = if p.layers_total > 0 && p.layers_done == p.layers_total {
        1.0
    } else if p.bytes_total > 0 {
        p.bytes_done as f64 / p.bytes_total as f64
    } else if p.layers_total > 0 {
        f64::from(p.layers_done) / f64::from(p.layers_total)
    } else {
        0.0
    };
    let width = 20;
    let filled = ((fraction * width as f64).round() as usize).min(width);
    let eta = if p.eta_ms > 0 {
        format!(
            "  ETA {}",
            humantime::format_duration(Duration::from_secs(p.eta_ms.div_ceil(1000)))
        )
    } else {
        String::new()
    };
    format!(
        "pulling {} [{}{}] {:>3.0}%  {} / {}  {}/{} layers{eta}",
        p.image,
        "#".repeat(filled),
        "-".repeat(width - filled),
        fraction * 100.0,
        bytes(p.bytes_done),
        bytes(p.bytes_total),
        p.layers_done,
        p.layers_total,
    )
}

/// Streams the kernel's output until it ends, then exits with its exit code.
async fn follow_to_exit(target: &ManagerArgs, id: &str) -> anyhow::Result<ExitCode> {
    stream_logs(target, id, true, 0).await?;
    // The log stream ends when the container stops; the DONE/FAILED record follows at once,
    // or once its results are uploaded (however long that takes: the upload ends by itself).
    let mut waits = 0;
    while waits < 100 {
        let k = get(target, id).await?;
        let s = k.state();
        if s == KernelState::Uploading {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        if matches!(
            s,
            KernelState::Done | KernelState::Failed | KernelState::Cancelled
        ) {
            if s != KernelState::Done {
                eprintln!("kernel {id} {}: {}", state_name(s), k.reason);
            }
            // A kernel that failed after its command succeeded (its results upload) does
            // not exit 0.
            let code = match k.exit_code {
                Some(0) if s == KernelState::Failed => 1,
                Some(c) => c,
                None => 1,
            };
            return Ok(ExitCode::from(code.clamp(0, 255) as u8));
        }
        waits += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("kernel {id} is still running after its output ended")
}

async fn list_kernels(target: &ManagerArgs) -> anyhow::Result<Vec<KernelInfo>> {
    target
        .call(|mut c| async move {
            c.list_kernels(ListKernelsRequest {})
                .await
                .map(|r| r.into_inner().kernels)
        })
        .await
}

async fn get(target: &ManagerArgs, id: &str) -> anyhow::Result<KernelInfo> {
    let id = id.to_string();
    target
        .call(|mut c| {
            let id = id.clone();
            async move {
                c.get_kernel(KernelRef { kernel_id: id })
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
}

async fn stream_logs(
    target: &ManagerArgs,
    id: &str,
    follow: bool,
    tail: u32,
) -> anyhow::Result<()> {
    let req = KernelLogsRequest {
        kernel_id: id.to_string(),
        follow,
        tail,
    };
    let mut s = target
        .call_with(LONG, |mut c| {
            let req = req.clone();
            async move { c.kernel_logs(req).await.map(|r| r.into_inner()) }
        })
        .await?;
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        write_chunk(&chunk.data, chunk.stderr);
    }
    Ok(())
}

fn write_chunk(data: &[u8], stderr: bool) {
    if stderr {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(data);
        let _ = e.flush();
    } else {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(data);
        let _ = o.flush();
    }
}

pub fn state_name(s: KernelState) -> &'static str {
    s.as_str_name().trim_start_matches("KERNEL_STATE_")
}

/// A kernel as JSON for people and scripts: the state by name (`RUNNING`), not number.
pub fn kernel_json(k: &KernelInfo) -> serde_json::Value {
    let mut v = serde_json::to_value(k).unwrap_or_default();
    v["state"] = state_name(k.state()).into();
    v
}

fn print_kernels(list: &[KernelInfo]) -> anyhow::Result<()> {
    print_json(&list.iter().map(kernel_json).collect::<Vec<_>>())
}

#[derive(Debug, Clone, Args)]
pub struct PsArgs {
    #[command(flatten)]
    pub target: ManagerArgs,
    /// Print the kernels as JSON (for scripts).
    #[arg(long)]
    pub json: bool,
}

pub async fn ps(args: PsArgs) -> anyhow::Result<ExitCode> {
    let list = list_kernels(&args.target).await?;
    if args.json {
        print_kernels(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header([
        "KERNEL", "NAME", "AGENT", "STATE", "PROGRESS", "IMAGE", "CREATED", "EXIT", "GPUS", "PORTS",
    ]);
    for k in list {
        let ports: Vec<String> = k
            .ports
            .iter()
            .map(|p| {
                let ip = if p.host_ip.is_empty() {
                    String::new()
                } else if p.host_ip.contains(':') {
                    format!("[{}]:", p.host_ip)
                } else {
                    format!("{}:", p.host_ip)
                };
                format!("{ip}{}->{}/{}", p.host_port, p.container_port, p.protocol)
            })
            .chain((k.ssh_port > 0).then(|| format!("{}->ssh", k.ssh_port)))
            .collect();
        t.add_row([
            k.kernel_id.clone(),
            k.name.clone(),
            k.agent_id.clone(),
            state_name(k.state()).to_string(),
            k.progress.map(|p| format!("{p:.0}%")).unwrap_or_default(),
            k.image.clone(),
            ago(k.created_at_ms),
            k.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            k.gpus.len().to_string(),
            ports.join(","),
        ]);
        // A cluster kernel's instances, each by its id and hostname.
        let instances = k.spec.as_ref().map_or(0, |s| s.instances);
        if instances > 0 {
            for i in 0..instances {
                let host = crate::runtime::docker::cluster::hostname(i);
                let mut row = vec![format!("{}/{i}", k.kernel_id), host];
                row.resize(10, String::new());
                t.add_row(row);
            }
        }
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Args)]
pub struct IdArgs {
    #[command(flatten)]
    pub target: ManagerArgs,
    /// Kernel id, task id `<array>.<index>`, or array id.
    pub id: String,
    /// JSON, as without it (inspect's only format; accepted like every listing's --json).
    #[arg(long)]
    pub json: bool,
}

pub async fn inspect(args: IdArgs) -> anyhow::Result<ExitCode> {
    let k = get(&args.target, &args.id).await;
    match k {
        Ok(k) => print_json(&kernel_json(&k))?,
        Err(_) => {
            // An array id: show all its tasks.
            let id = args.id.clone();
            let list = list_kernels(&args.target).await?;
            let tasks: Vec<KernelInfo> = list.into_iter().filter(|k| k.array_id == id).collect();
            if tasks.is_empty() {
                get(&args.target, &args.id).await?;
            }
            print_kernels(&tasks)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub target: ManagerArgs,
    /// Keep following new output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines (0 = all).
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub tail: u32,
    /// Kernel id, task id `<array>.<index>`, or cluster instance `<id>/<i>`.
    pub id: String,
}

pub async fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    stream_logs(&args.target, &args.id, args.follow, args.tail).await?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub target: ManagerArgs,
    /// Environment variable KEY=VALUE of the command (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory of the command (default: the kernel's).
    #[arg(
        short = 'w',
        long = "workdir",
        value_name = "DIR",
        default_value = "",
        hide_default_value = true
    )]
    pub working_dir: String,
    /// Kernel id (or cluster instance `<id>/<i>`).
    pub id: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

pub async fn exec(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let req = ExecRequest {
        kernel_id: args.id.clone(),
        command: args.command.clone(),
        env: pairs("--env", &args.env)?,
        working_dir: args.working_dir.clone(),
    };
    let mut s = args
        .target
        .call_with(LONG, |mut c| {
            let req = req.clone();
            async move { c.exec_kernel(req).await.map(|r| r.into_inner()) }
        })
        .await?;
    let mut code = 0;
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        write_chunk(&chunk.data, chunk.stderr);
        if let Some(c) = chunk.exit_code {
            code = c;
        }
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

#[derive(Debug, Clone, Args)]
pub struct ControlArgs {
    #[command(flatten)]
    pub target: ManagerArgs,
    /// stop: seconds between SIGTERM and SIGKILL (default: the kernel's grace period).
    #[arg(short = 't', long = "time")]
    pub time: Option<u64>,
    /// rm: also a kernel that still runs.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// kill: the signal number.
    #[arg(short = 's', long, default_value_t = 15)]
    pub signal: i32,
    /// Kernel ids, task ids `<array>.<index>` or array ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

pub async fn control(action: KernelAction, args: ControlArgs) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for id in &args.ids {
        let req = ControlKernelRequest {
            kernel_id: id.clone(),
            action: action as i32,
            signal: args.signal,
            grace_ms: args.time.map(|t| t * 1000).unwrap_or(0),
            force: args.force,
        };
        let r = args
            .target
            .call_with(LONG, |mut c| {
                let req = req.clone();
                async move { c.control_kernel(req).await.map(|r| r.into_inner()) }
            })
            .await;
        match r {
            Ok(resp) => {
                if resp.kernels.is_empty() {
                    println!("{id}");
                }
                for k in resp.kernels {
                    println!("{} {}", k.kernel_id, state_name(k.state()));
                }
            }
            Err(e) => {
                eprintln!("error: {id}: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Debug, Clone, Args)]
pub struct FilesArgs {
    #[command(subcommand)]
    pub op: FilesOp,
}

#[derive(Debug, Clone, Subcommand)]
pub enum FilesOp {
    /// List a directory of the kernel's /home/work.
    Ls {
        #[command(flatten)]
        target: ManagerArgs,
        /// Kernel id.
        id: String,
        /// A directory under /home/work (default: /home/work itself).
        #[arg(default_value = "", hide_default_value = true)]
        path: String,
    },
    /// Copy a local file into the kernel's /home/work.
    Put {
        #[command(flatten)]
        target: ManagerArgs,
        /// Kernel id.
        id: String,
        /// The local file to upload.
        local: std::path::PathBuf,
        /// Where it goes, relative to /home/work.
        remote: String,
    },
    /// Copy a file out of the kernel's /home/work (to stdout without LOCAL).
    Get {
        #[command(flatten)]
        target: ManagerArgs,
        /// Kernel id.
        id: String,
        /// The file, relative to /home/work.
        remote: String,
        /// Where to write it (default: stdout).
        local: Option<std::path::PathBuf>,
    },
}

pub async fn files(args: FilesArgs) -> anyhow::Result<ExitCode> {
    match args.op {
        FilesOp::Ls { target, id, path } => {
            let req = FileRequest {
                kernel_id: id,
                path,
            };
            let list = target
                .call(|mut c| {
                    let req = req.clone();
                    async move { c.list_files(req).await.map(|r| r.into_inner().entries) }
                })
                .await?;
            for e in list {
                let kind = if e.dir { "d" } else { "-" };
                println!("{kind} {:>12} {}", e.size, e.path);
            }
        }
        FilesOp::Put {
            target,
            id,
            local,
            remote,
        } => {
            let size = std::fs::metadata(&local)
                .with_context(|| format!("cannot read {}", local.display()))?
                .len();
            let limit = crate::runtime::MAX_UPLOAD as u64;
            if size > limit {
                bail!(
                    "{} is {}; uploads are at most {} (copy bigger data through a stage-in dir)",
                    local.display(),
                    bytes(size),
                    bytes(limit)
                );
            }
            let content = std::fs::read(&local)
                .with_context(|| format!("cannot read {}", local.display()))?;
            let req = UploadFileRequest {
                kernel_id: id,
                path: remote,
                content,
            };
            let size = target
                .call_with(LONG, |mut c| {
                    let req = req.clone();
                    async move { c.upload_file(req).await.map(|r| r.into_inner().size) }
                })
                .await?;
            println!("{size} bytes");
        }
        FilesOp::Get {
            target,
            id,
            remote,
            local,
        } => {
            let req = FileRequest {
                kernel_id: id,
                path: remote,
            };
            let content = target
                .call_with(LONG, |mut c| {
                    let req = req.clone();
                    async move { c.download_file(req).await.map(|r| r.into_inner().content) }
                })
                .await?;
            match local {
                Some(p) => std::fs::write(&p, content)
                    .with_context(|| format!("cannot write {}", p.display()))?,
                None => std::io::stdout().write_all(&content)?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

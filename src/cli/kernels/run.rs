//! `run`: the run/create arguments, their parsing into a request, and pull progress.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use futures::StreamExt;

use super::super::common::ManagerArgs;
use super::super::output::bytes;
use super::io::follow_to_exit;
use super::list::print_kernels;
use super::{pairs, LONG};
use crate::wire::pb::{
    ArraySpec, CreateKernelRequest, KernelSpec, KernelState, PortSpec, PullProgress,
    RunKernelRequest, StageIn, WatchKernelEventsRequest,
};

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

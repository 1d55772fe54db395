//! The `deckhand` command line: one binary with the agent, the manager and the operator
//! commands as subcommands. Every flag can also come from a `DECKHAND_*` environment
//! variable or from the TOML file given with `--config`; precedence is
//! flag > environment > file > default ([`layered`]).

pub mod agent;
pub mod bench;
pub mod common;
pub mod config;
pub mod gpu;
pub mod host;
pub mod images;
pub mod kernels;
pub mod layered;
pub mod manager;
pub mod node;
pub mod nodes;
pub mod output;
pub mod pipe;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::wire::pb::KernelAction;

/// deckhand: a small, fast cluster worker agent (etcd-configured, gRPC-driven).
#[derive(Debug, Parser)]
#[command(name = "deckhand", version, propagate_version = true)]
pub struct Cli {
    /// TOML file with default flag values (keys are long flag names, e.g. `etcd-addr`).
    /// Flags and DECKHAND_* variables win over it.
    #[arg(long, global = true, env = "DECKHAND_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log filter in tracing's EnvFilter syntax: `info`, `warn`, `deckhand=debug`.
    #[arg(long, global = true, env = "DECKHAND_LOG", default_value = "info")]
    pub log: String,

    /// Log line format.
    #[arg(
        long,
        global = true,
        env = "DECKHAND_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node daemon: register in etcd, report to a manager, run kernels.
    Agent(agent::AgentArgs),
    /// Run the reference manager: agent table, placement, forwarding.
    Manager(manager::ManagerArgs),
    /// Read and write the namespace's cluster settings in etcd.
    Config(config::ConfigArgs),
    /// List the agents of the namespace, as the manager sees them.
    Nodes(nodes::NodesArgs),
    /// GPU health: clear a GPU's unhealthy mark (`gpu reset-health NODE UUID`).
    Gpu(gpu::GpuArgs),
    /// Cordon, uncordon or drain an agent.
    Node(node::NodeArgs),
    /// List the images present on each agent (DRMAA2 job categories); never pulls.
    Images(images::ImagesArgs),
    /// Show this host's status and GPU inventory (no etcd or manager needed).
    Host(host::HostArgs),
    /// Run a kernel (or a job array); attached, follow its output and exit with its code.
    Run(Box<kernels::RunArgs>),
    /// List the namespace's kernels.
    Ps(kernels::PsArgs),
    /// Show a kernel (or an array's tasks) as JSON.
    Inspect(kernels::IdArgs),
    /// Print a kernel's output.
    Logs(kernels::LogsArgs),
    /// Run a command inside a running kernel.
    Exec(kernels::ExecArgs),
    /// Stop kernels: SIGTERM, then SIGKILL after the grace period.
    Stop(kernels::ControlArgs),
    /// Remove kernels (container and scratch dir); running ones only with --force.
    Rm(kernels::ControlArgs),
    /// Suspend kernels (docker pause).
    Suspend(kernels::ControlArgs),
    /// Resume suspended kernels.
    Resume(kernels::ControlArgs),
    /// Start kernels created with --hold.
    Release(kernels::ControlArgs),
    /// Send a signal (-s N) to kernels.
    Kill(kernels::ControlArgs),
    /// List, upload and download files in a kernel's /home/work.
    Files(kernels::FilesArgs),
    /// Benchmarks of the performance promises: start, array, stats, recovery, fleet, footprint.
    Bench(bench::BenchArgs),
}

/// Parses the command line (with its file layer), sets up logging and runs the command;
/// `sigpipe` sets SIGPIPE's disposition (see [`pipe::SigPipe`]).
pub fn main(sigpipe: pipe::SigPipe) -> ExitCode {
    // Until the command is known, a closed stdout ends the process quietly (`--help | head`).
    (sigpipe.default_action)();
    let cli = match layered::parse() {
        Ok(cli) => cli,
        Err(layered::ParseError::Clap(e)) => e.exit(),
        Err(layered::ParseError::File(msg)) => {
            eprintln!("error: {msg}");
            return ExitCode::from(2);
        }
    };
    let bench = matches!(cli.command, Command::Bench(_));
    // A benchmark prints its figures on stdout; its own log (a fleet's simulated agents)
    // stays at warnings unless asked for.
    let filter = if bench && cli.log == "info" {
        "warn"
    } else {
        &cli.log
    };
    init_logging(filter, cli.log_format);
    let daemon = matches!(cli.command, Command::Agent(_) | Command::Manager(_));
    // Past parsing every command talks to the network: a peer closing a socket must be an
    // error, not SIGPIPE killing the process (etcd's TLS refusal did). A failed print to a
    // closed stdout still ends the command quietly, with 141.
    (sigpipe.ignore)();
    pipe::quiet_on_broken_pipe();
    // Benchmarks run simulated agents and child processes beside their measurements.
    let runtime = if daemon || bench {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(8)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let work = std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async move {
            match cli.command {
                Command::Agent(a) => agent::run(a).await,
                Command::Manager(m) => manager::run(m).await,
                Command::Config(c) => config::run(c).await,
                Command::Nodes(n) => nodes::run(n).await,
                Command::Node(n) => node::run(n).await,
                Command::Gpu(g) => gpu::run(g).await,
                Command::Images(i) => images::run(i).await,
                Command::Host(h) => host::run(h).await,
                Command::Run(r) => kernels::run(*r).await,
                Command::Ps(a) => kernels::ps(a).await,
                Command::Inspect(a) => kernels::inspect(a).await,
                Command::Logs(a) => kernels::logs(a).await,
                Command::Exec(a) => kernels::exec(a).await,
                Command::Stop(a) => kernels::control(KernelAction::Stop, a).await,
                Command::Rm(a) => kernels::control(KernelAction::Remove, a).await,
                Command::Suspend(a) => kernels::control(KernelAction::Suspend, a).await,
                Command::Resume(a) => kernels::control(KernelAction::Resume, a).await,
                Command::Release(a) => kernels::control(KernelAction::Release, a).await,
                Command::Kill(a) => kernels::control(KernelAction::Signal, a).await,
                Command::Files(a) => kernels::files(a).await,
                Command::Bench(a) => bench::run(a).await,
            }
        })
    });
    let result = match std::panic::catch_unwind(work) {
        Ok(result) => result,
        Err(p) if pipe::panicked_on_broken_pipe(p.as_ref()) => {
            return ExitCode::from(pipe::BROKEN_PIPE_STATUS)
        }
        Err(p) => std::panic::resume_unwind(p),
    };
    match result {
        Ok(code) => code,
        Err(e) if daemon => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("warning: bad --log filter `{filter}` ({e}); using `info`");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

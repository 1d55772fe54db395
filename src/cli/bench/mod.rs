//! `deckhand bench`: the performance promises measured against real components. Each
//! scenario prints its figures and, last, one line `ratio …: X` (the figure against its
//! reference or its goal; below 1 is better).
//!
//! | scenario | measures | against |
//! | --- | --- | --- |
//! | [`start`] | sequential kernel starts, idle and with `--loaded` kernels running | `docker run -d`, bollard create+start |
//! | [`array`] | a job array with a parallelism cap | a `docker run -d` loop + `docker wait` |
//! | [`stats`] | every kernel's CPU and memory, read inside the agent as heartbeats read it | `docker stats --no-stream` |
//! | [`recovery`] | `kill -9` of the agent, and a cut engine connection, until reconciled and heard | the 2 s goal |
//! | [`fleet`] | a real manager and etcd under 100…1,000 simulated agents ([`hollow`]) | the 50 ms / half-core goal |
//! | [`footprint`] | one idle agent: RSS, CPU, start → first heartbeat, SIGTERM → exit | the Backend.AI agent, the goals |
//!
//! `start`, `array` and `stats` use a running agent (`--agent-addr`). `recovery`,
//! `footprint` and `fleet` must own the processes they measure, so they start a scratch
//! cluster of their own ([`cluster`]): etcd (or the one at `--etcd-addr`), a manager and
//! agents as child processes of this very binary, in a namespace of their own.
//!
//! Everything a scenario makes — kernels and containers, processes, scratch dirs, etcd
//! keys — is removed when it ends, when it fails and when it is interrupted (Ctrl-C or
//! SIGTERM: the scenario is dropped where it stands, then cleaned up).

mod agent;
mod array;
mod cluster;
mod fleet;
mod footprint;
mod hollow;
mod procfs;
mod recovery;
mod relay;
mod start;
mod stats;

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// Sequential kernel starts: agent CreateKernel→RUNNING vs `docker run -d` vs bollard;
    /// with --loaded N, again with N kernels already running on the agent.
    Start(start::StartArgs),
    /// A job array of N short tasks with a parallelism cap vs a sequential `docker run -d` loop.
    Array(array::ArrayArgs),
    /// N running kernels: the agent's read of every kernel's CPU and memory (the heartbeat
    /// path) vs `docker stats --no-stream` over the same containers.
    Stats(stats::StatsArgs),
    /// N running kernels: `kill -9` of the agent and restart, then a cut and restored
    /// engine connection; time until reconciled and until a heartbeat carries all N.
    Recovery(recovery::RecoveryArgs),
    /// A real etcd and manager under N simulated agents (own leases, registrations and
    /// heartbeats over gRPC, kernels on the in-memory runtime) at 100 / 500 / 1,000.
    Fleet(fleet::FleetArgs),
    /// One idle agent: RSS, CPU per minute, start → first accepted heartbeat, SIGTERM → exit.
    Footprint(footprint::FootprintArgs),
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.scenario {
        Scenario::Start(a) => start::run(a).await?,
        Scenario::Array(a) => array::run(a).await?,
        Scenario::Stats(a) => stats::run(a).await?,
        Scenario::Recovery(a) => recovery::run(a).await?,
        Scenario::Fleet(a) => fleet::run(a).await?,
        Scenario::Footprint(a) => footprint::run(a).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `fut` unless SIGINT or SIGTERM comes first; then `fut` is dropped where it stands
/// (its child processes with it) and the caller cleans up what it recorded.
pub(super) async fn interruptible<T>(
    fut: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        r = fut => r,
        _ = crate::util::shutdown::signal() => {
            eprintln!("bench: interrupted; cleaning up");
            Err(anyhow::anyhow!("interrupted"))
        }
    }
}

/// Percentiles of a set of durations.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Dist {
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
    pub n: usize,
}

impl Dist {
    pub fn of(mut v: Vec<Duration>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort();
        let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
        Self {
            p50: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
            max: v[v.len() - 1],
            mean: v.iter().sum::<Duration>() / v.len() as u32,
            n: v.len(),
        }
    }
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `met` or `NOT met`, for goal lines.
pub(super) fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

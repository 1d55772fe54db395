//! `deckhand manager`: flags of the reference manager.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::common::{EtcdArgs, TlsArgs};
use crate::daemon::manager::{self, ManagerOptions};

#[derive(Debug, Clone, Args)]
pub struct ManagerArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,

    #[command(flatten)]
    pub tls: TlsArgs,

    /// Address the manager's gRPC services listen on.
    #[arg(long, env = "DECKHAND_LISTEN", default_value = "0.0.0.0:5001")]
    pub listen: String,

    /// Address registered for agents and the CLI [default: the listen address, with
    /// 0.0.0.0 replaced by the hostname].
    #[arg(long, env = "DECKHAND_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,

    /// Serve Prometheus metrics at http://ADDR/metrics and the status page at http://ADDR/
    /// (`HOST:PORT`) [default: not served].
    #[arg(long, env = "DECKHAND_METRICS_LISTEN_ADDR", value_name = "ADDR", value_parser = crate::telemetry::parse_listen_addr)]
    pub metrics_listen_addr: Option<String>,

    /// This manager's id in the namespace [default: the hostname].
    #[arg(long, env = "DECKHAND_MANAGER_ID")]
    pub manager_id: Option<String>,

    /// How long an agent whose registration disappeared stays listed as GONE.
    #[arg(long, env = "DECKHAND_GONE_RETENTION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub gone_retention: Duration,

    /// TTL of the manager's own registration lease.
    #[arg(long, env = "DECKHAND_LEASE_TTL", default_value = "10s", value_parser = parse_ttl)]
    pub lease_ttl: Duration,
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(2) {
        return Err("must be at least 2s".into());
    }
    Ok(d)
}

pub async fn run(args: ManagerArgs) -> anyhow::Result<ExitCode> {
    manager::run(ManagerOptions {
        etcd: args.etcd.options()?,
        tls: args.tls.server()?,
        namespace: args.etcd.namespace.clone(),
        manager_id: args
            .manager_id
            .clone()
            .unwrap_or_else(crate::host::hostname),
        listen: args.listen.clone(),
        advertise_addr: args.advertise_addr.clone(),
        gone_retention: args.gone_retention,
        lease_ttl: args.lease_ttl,
        metrics_listen_addr: args.metrics_listen_addr.clone(),
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

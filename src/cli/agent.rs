//! `deckhand agent`: flags of the node daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::common::{EtcdArgs, TlsArgs};
use crate::daemon::agent::{self, AgentOptions};

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,

    #[command(flatten)]
    pub tls: TlsArgs,

    /// Directory holding the kernels' scratch homes (created if missing).
    #[arg(
        long,
        env = "DECKHAND_SCRATCH_ROOT",
        default_value = "/var/cache/scratches"
    )]
    pub scratch_root: PathBuf,

    /// Address the agent's gRPC service listens on.
    #[arg(long, env = "DECKHAND_RPC_LISTEN_ADDR", default_value = "0.0.0.0:6001")]
    pub rpc_listen_addr: String,

    /// Address registered for the manager to dial [default: the listen address, with
    /// 0.0.0.0 replaced by the hostname].
    #[arg(long, env = "DECKHAND_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,

    /// Serve Prometheus metrics at http://ADDR/metrics (`HOST:PORT`) [default: not served].
    #[arg(long, env = "DECKHAND_METRICS_LISTEN_ADDR", value_name = "ADDR", value_parser = crate::telemetry::parse_listen_addr)]
    pub metrics_listen_addr: Option<String>,

    /// This agent's id in the namespace [default: the hostname].
    #[arg(long, env = "DECKHAND_AGENT_ID")]
    pub agent_id: Option<String>,

    /// Print the resolved options (after flags, environment and --config) and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl AgentArgs {
    /// The resolved options; TLS files are read and checked here.
    pub fn options(&self) -> anyhow::Result<AgentOptions> {
        Ok(AgentOptions {
            etcd: self.etcd.options()?,
            tls: self.tls.server()?,
            namespace: self.etcd.namespace.clone(),
            agent_id: self.agent_id.clone().unwrap_or_else(crate::host::hostname),
            scratch_root: self.scratch_root.clone(),
            rpc_listen_addr: self.rpc_listen_addr.clone(),
            advertise_addr: self.advertise_addr.clone(),
            metrics_listen_addr: self.metrics_listen_addr.clone(),
        })
    }
}

pub async fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let opts = args.options()?;
    if args.print_config {
        let mut t = toml::Table::new();
        t.insert("etcd-addr".into(), opts.etcd.endpoints.clone().into());
        t.insert("namespace".into(), opts.namespace.clone().into());
        t.insert("agent-id".into(), opts.agent_id.clone().into());
        t.insert(
            "scratch-root".into(),
            opts.scratch_root.display().to_string().into(),
        );
        t.insert(
            "rpc-listen-addr".into(),
            opts.rpc_listen_addr.clone().into(),
        );
        if let Some(a) = &opts.advertise_addr {
            t.insert("advertise-addr".into(), a.clone().into());
        }
        if let Some(a) = &opts.metrics_listen_addr {
            t.insert("metrics-listen-addr".into(), a.clone().into());
        }
        if let Some(u) = &opts.etcd.user {
            t.insert("etcd-user".into(), u.clone().into());
        }
        let files = [
            ("etcd-ca", &opts.etcd.tls.ca),
            ("etcd-cert", &opts.etcd.tls.cert),
            ("etcd-key", &opts.etcd.tls.key),
            ("tls-ca", &opts.tls.ca),
            ("tls-cert", &opts.tls.cert),
            ("tls-key", &opts.tls.key),
        ];
        for (name, path) in files {
            if let Some(p) = path {
                t.insert(name.into(), p.display().to_string().into());
            }
        }
        print!("{}", toml::to_string(&t)?);
        return Ok(ExitCode::SUCCESS);
    }
    agent::run(opts).await?;
    Ok(ExitCode::SUCCESS)
}

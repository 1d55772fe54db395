//! Flags shared by commands that talk to etcd (endpoints, namespace, auth, TLS), TLS
//! flags of deckhand's own gRPC, and finding a manager through etcd.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use etcd_client::GetOptions;
use tonic::transport::Channel;

use crate::cluster::keys::validate_name;
use crate::cluster::{etcd, EtcdOptions, Keys, ManagerRecord};
use crate::util::tls::{TlsFiles, ETCD_FLAGS, RPC_FLAGS};
use crate::wire::pb::cluster_service_client::ClusterServiceClient;
use crate::wire::{channel, status_text};

/// Where the cluster lives in etcd.
#[derive(Debug, Clone, Args)]
pub struct EtcdArgs {
    /// etcd endpoints, HOST:PORT, comma-separated.
    #[arg(
        long,
        env = "DECKHAND_ETCD_ADDR",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub etcd_addr: Vec<String>,

    /// Namespace isolating this cluster's keys in a shared etcd.
    #[arg(long, env = "DECKHAND_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// etcd user name (auth enabled clusters).
    #[arg(long, env = "DECKHAND_ETCD_USER", requires = "etcd_password")]
    pub etcd_user: Option<String>,

    /// etcd password; prefer the environment variable over the flag.
    #[arg(
        long,
        env = "DECKHAND_ETCD_PASSWORD",
        hide_env_values = true,
        requires = "etcd_user"
    )]
    pub etcd_password: Option<String>,

    /// PEM CA certificate(s) etcd's server certificate must be signed by; turns on TLS to
    /// etcd (endpoints without a scheme are dialed with https) [default with
    /// --etcd-cert: the system's roots].
    #[arg(long, env = "DECKHAND_ETCD_CA", value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,

    /// PEM client certificate for etcd (etcd's --client-cert-auth); needs --etcd-key.
    #[arg(
        long,
        env = "DECKHAND_ETCD_CERT",
        value_name = "FILE",
        requires = "etcd_key"
    )]
    pub etcd_cert: Option<PathBuf>,

    /// PEM private key of --etcd-cert.
    #[arg(
        long,
        env = "DECKHAND_ETCD_KEY",
        value_name = "FILE",
        requires = "etcd_cert"
    )]
    pub etcd_key: Option<PathBuf>,
}

impl EtcdArgs {
    /// The resolved options; the TLS files are read and checked here.
    pub fn options(&self) -> anyhow::Result<EtcdOptions> {
        let tls = TlsFiles::load(
            ETCD_FLAGS,
            self.etcd_cert.as_deref(),
            self.etcd_key.as_deref(),
            self.etcd_ca.as_deref(),
        )?;
        let options = EtcdOptions {
            endpoints: self.etcd_addr.clone(),
            user: self.etcd_user.clone(),
            password: self.etcd_password.clone().map(Into::into),
            tls,
        };
        options.validate().map_err(anyhow::Error::msg)?;
        Ok(options)
    }

    pub fn keys(&self) -> anyhow::Result<Keys> {
        validate_name("--namespace", &self.namespace).map_err(anyhow::Error::msg)?;
        Ok(Keys::new(&self.namespace))
    }

    /// One connection attempt, with an error that names the endpoints (never the password).
    pub async fn connect(&self) -> anyhow::Result<etcd_client::Client> {
        let endpoints = self.etcd_addr.join(",");
        etcd::connect(&self.options()?).await.map_err(|e| match e {
            etcd::ConnectError::Auth { .. } => anyhow!("{e} (etcd at {endpoints})"),
            etcd::ConnectError::Other(reason) => {
                anyhow!("cannot reach etcd at {endpoints}: {reason}")
            }
        })
    }
}

/// TLS of deckhand's own gRPC (agent, manager, CLI).
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// PEM certificate (chain): servers (agent, manager) serve TLS with it, clients
    /// present it; needs --tls-key.
    #[arg(
        long,
        env = "DECKHAND_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "DECKHAND_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): servers require client certificates signed by it (mutual
    /// TLS), clients verify servers against it [default for clients: the system's roots].
    #[arg(long, env = "DECKHAND_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The files as a client uses them; any of them turns TLS on.
    pub fn client(&self) -> anyhow::Result<TlsFiles> {
        Ok(TlsFiles::load(
            RPC_FLAGS,
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_ca.as_deref(),
        )?)
    }

    /// The files of a daemon that serves and dials: a CA alone is refused, since the
    /// server would be plaintext while its peers expect TLS.
    pub fn server(&self) -> anyhow::Result<TlsFiles> {
        let files = self.client()?;
        if files.is_enabled() && !files.has_identity() {
            bail!("--tls-ca needs --tls-cert and --tls-key on a server (agent, manager)");
        }
        Ok(files)
    }
}

/// How client commands find the manager.
#[derive(Debug, Clone, Args)]
pub struct ManagerArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// Manager address (HOST:PORT, or a URI with http:// or https://); found through etcd
    /// when absent.
    #[arg(long, env = "DECKHAND_MANAGER")]
    pub manager: Option<String>,

    #[command(flatten)]
    pub tls: TlsArgs,
}

impl ManagerArgs {
    /// Candidate manager addresses: `--manager`, or every registered manager by id.
    pub async fn addresses(&self) -> anyhow::Result<Vec<String>> {
        if let Some(m) = &self.manager {
            return Ok(vec![m.clone()]);
        }
        let keys = self.etcd.keys()?;
        let mut client = self.etcd.connect().await?;
        let resp = client
            .get(keys.managers(), Some(GetOptions::new().with_prefix()))
            .await
            .context("reading the manager list from etcd")?;
        let addrs: Vec<String> = resp
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice::<ManagerRecord>(kv.value()).ok())
            .map(|r| r.address)
            .collect();
        if addrs.is_empty() {
            bail!(
                "no manager is registered in namespace `{}` (start `deckhand manager` or pass --manager)",
                self.etcd.namespace
            );
        }
        Ok(addrs)
    }

    /// Calls `f` on each candidate manager until one answers.
    pub async fn call<T, F, Fut>(&self, f: F) -> anyhow::Result<T>
    where
        F: FnMut(ClusterServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        self.call_with(Duration::from_secs(10), f).await
    }

    /// [`call`](Self::call) with a longer limit, for kernel operations that wait (create,
    /// stop) or stream (logs, exec).
    pub async fn call_with<T, F, Fut>(&self, timeout: Duration, mut f: F) -> anyhow::Result<T>
    where
        F: FnMut(ClusterServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let tls = self.tls.client()?;
        let mut last = None;
        for addr in self.addresses().await? {
            let ch = channel(&addr, timeout, &tls)?;
            match f(ClusterServiceClient::new(ch)).await {
                Ok(v) => return Ok(v),
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    last = Some(format!("manager at {addr}: {}", status_text(&status)));
                }
                Err(status) => bail!("manager at {addr}: {}", status_text(&status)),
            }
        }
        bail!("no manager answered: {}", last.unwrap_or_default())
    }
}

//! Flags shared by commands that talk to etcd, and finding a manager through it.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use etcd_client::GetOptions;
use tonic::transport::Channel;

use crate::cluster::keys::validate_name;
use crate::cluster::{etcd, EtcdOptions, Keys, ManagerRecord};
use crate::rpc::channel;
use crate::rpc::pb::cluster_service_client::ClusterServiceClient;

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
}

impl EtcdArgs {
    pub fn options(&self) -> EtcdOptions {
        EtcdOptions {
            endpoints: self.etcd_addr.clone(),
            user: self.etcd_user.clone(),
            password: self.etcd_password.clone(),
        }
    }

    pub fn keys(&self) -> anyhow::Result<Keys> {
        validate_name("--namespace", &self.namespace).map_err(anyhow::Error::msg)?;
        Ok(Keys::new(&self.namespace))
    }

    /// One connection attempt, with an error that names the endpoints.
    pub async fn connect(&self) -> anyhow::Result<etcd_client::Client> {
        etcd::connect(&self.options())
            .await
            .with_context(|| format!("cannot reach etcd at {}", self.etcd_addr.join(",")))
    }
}

/// How client commands find the manager.
#[derive(Debug, Clone, Args)]
pub struct ManagerArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// Manager address (HOST:PORT); found through etcd when absent.
    #[arg(long, env = "DECKHAND_MANAGER")]
    pub manager: Option<String>,
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
        let mut last = None;
        for addr in self.addresses().await? {
            let ch = channel(&addr, timeout)?;
            match f(ClusterServiceClient::new(ch)).await {
                Ok(v) => return Ok(v),
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    last = Some(format!("manager at {addr}: {}", status.message()));
                }
                Err(status) => bail!("manager at {addr}: {}", status.message()),
            }
        }
        bail!("no manager answered: {}", last.unwrap_or_default())
    }
}

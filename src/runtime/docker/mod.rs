//! Kernels as local Docker containers: the first [`Runtime`].
//!
//! - [`client`]: the engine through bollard, errors in the engine's own words;
//! - [`body`]: a kernel record turned into a container create body and its labels;
//! - [`images`], [`pull`]: pulls (one per image, with progress and timeouts), cache
//!   policies, image GC;
//! - [`events`]: the engine's events turned into what the supervisor observes;
//! - [`adopt`]: the agent's containers found again after a restart;
//! - [`cluster`]: cluster kernels — N containers on a network made for them, run as one
//!   kernel (master and workers), their status read from all of them;
//! - [`span`]: a cluster spanning the agents of one swarm — the owner's side (its parts on
//!   other agents, released, followed, stopped and removed with it);
//! - [`rules`]: Docker's rules of single spec fields (its socket, network modes, minimum
//!   memory), asked by spec validation at each field's place;
//! - [`local`], [`scratch`], [`cgroup`]: what a kernel has on this host — its home, process
//!   data, output/input files, file transfers, and CPU/memory read from its cgroup.
//!
//! The handle of a Docker kernel: the container id, and the process data the container
//! mounts (also in its labels). Version 0 handles come from records of earlier versions.

pub mod adopt;
pub mod body;
pub mod cgroup;
pub mod client;
pub mod cluster;
mod create;
pub mod events;
pub mod images;
pub mod local;
pub mod pull;
pub mod rules;
pub mod scratch;
pub mod span;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::Mutex;

pub use client::{Docker, EngineError};

use crate::config::ClusterConfig;
use crate::runtime::peers::{PeerAction, Peers};
use crate::runtime::Adopted;
use crate::runtime::Launch;
use crate::runtime::{
    Background, Capabilities, ChunkStream, EventStream, Exec, ExecOutput, FileEntry, Handle,
    LocalImage, Owned, Reporter, Runtime, RuntimeError, Started, Status, Usage,
};
use crate::spec::{Spec, SpecError};
use crate::util::shutdown::Tasks;
use cgroup::CgroupPaths;
use cluster::Members;
use images::Images;
use scratch::Scratch;

pub const NAME: &str = "docker";
const HANDLE_VERSION: u32 = 1;

pub struct DockerRuntime {
    client: Docker,
    images: Arc<Images>,
    scratch: Scratch,
    namespace: String,
    agent_id: String,
    /// Container id → its cgroup, found from its first process when it starts (or when a
    /// resync sees it running).
    cgroups: Mutex<HashMap<String, CgroupPaths>>,
    /// Cluster kernels spanning agents (see [`span`]).
    spans: Arc<span::Spans>,
}

impl DockerRuntime {
    /// The runtime of this agent's kernels in `namespace`, homes under `scratch_root`.
    pub fn new(
        client: Docker,
        namespace: &str,
        agent_id: &str,
        scratch_root: &Path,
        peers: Arc<dyn Peers>,
        tasks: Tasks,
    ) -> std::io::Result<Self> {
        let scratch = Scratch::new(scratch_root)?;
        let images = Images::new(
            client.clone(),
            scratch.root().join(".deckhand/images.json"),
            tasks.clone(),
        );
        Ok(Self {
            client,
            images,
            scratch,
            namespace: namespace.to_string(),
            agent_id: agent_id.to_string(),
            cgroups: Mutex::new(HashMap::new()),
            spans: span::Spans::new(peers, tasks),
        })
    }

    /// Reads which swarm the engine is in (cluster kernels span the agents of one swarm).
    pub async fn read_swarm(&self) {
        self.spans.read_group(&self.client).await;
    }

    pub fn client(&self) -> &Docker {
        &self.client
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        NAME
    }

    fn backend(&self) -> &'static str {
        "Docker engine"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            suspend: true,
            signal: true,
            exec: true,
            files: true,
            hold: true,
            host_ports: true,
            local_slots: true,
            cluster: true,
            rdma: true,
        }
    }

    fn validate(&self, _spec: &Spec, _cfg: &ClusterConfig) -> Result<(), SpecError> {
        // The spec is the DRMAA2 template with Docker's extensions: all of it applies here;
        // Docker's own limits on single fields are its field rules, checked in field order.
        Ok(())
    }

    fn span_group(&self) -> Option<crate::runtime::SpanGroup> {
        self.spans.group()
    }

    fn field_rules(&self) -> &dyn crate::spec::FieldRules {
        &rules::DockerRules
    }

    /// A cluster kernel's instances: `instance/<i>` → `<hostname> <container id>`.
    fn describe(&self, rec: &Launch) -> std::collections::BTreeMap<String, String> {
        rec.handle
            .as_ref()
            .and_then(Members::of)
            .map(|m| m.describe())
            .unwrap_or_default()
    }

    fn home(&self, kernel_id: &str) -> String {
        self.scratch
            .kernel_dir(kernel_id)
            .map(|d| d.display().to_string())
            .unwrap_or_default()
    }

    fn ready_to_start(&self, rec: &Launch) -> Result<(), RuntimeError> {
        local::input_file(&self.scratch, rec).map(|_| ())
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        Ok(self.client.ping().await?)
    }

    async fn prepare(
        &self,
        rec: &Launch,
        cfg: &ClusterConfig,
        report: &Reporter,
    ) -> Result<(), RuntimeError> {
        pull::fetch(&self.images, rec, cfg, report).await
    }

    async fn create(
        &self,
        rec: &Launch,
        cfg: &ClusterConfig,
        _report: &Reporter,
    ) -> Result<Handle, RuntimeError> {
        let process_data = local::prepare_process_data(
            &self.client,
            &self.scratch,
            &self.namespace,
            &self.agent_id,
            rec,
            cfg,
        )
        .await?;
        local::prepare_home(&self.scratch, rec, &self.agent_id, cfg)?;
        let body = body::body(
            rec,
            process_data.as_ref(),
            &self.namespace,
            &self.agent_id,
            &cfg.docker,
        );
        if let Some(c) = &rec.spec.cluster {
            return self
                .create_cluster(rec, c, body, process_data.as_ref())
                .await;
        }
        let name = body::container_name(&self.namespace, &rec.id);
        let cid = self
            .create_named(&name, body)
            .await
            .map_err(|e| Self::name_network(e, rec, cfg))?;
        Ok(Self::handle(&cid, process_data.as_ref()))
    }

    async fn start(
        &self,
        rec: &Launch,
        handle: &Handle,
        cfg: &ClusterConfig,
    ) -> Result<Started, RuntimeError> {
        let Some(m) = Members::of(handle) else {
            return self.start_container(rec, handle, cfg).await;
        };
        let part = m.ids.first().is_some_and(|id| id.is_empty());
        if !m.peers.is_empty() {
            self.spans.follow(&rec.id, &m.peers);
        }
        let started = async {
            // The other agents' parts first, then the workers here, so the master finds
            // them all when it starts.
            if !m.peers.is_empty() {
                self.spans
                    .control(&rec.id, &m.peers, PeerAction::Release, 0, None)
                    .await?;
            }
            let mut at = 0;
            for id in m.ids.iter().skip(1).filter(|id| !id.is_empty()) {
                self.client.start(id).await?;
                let st = self.client.inspect(id).await?;
                self.track(id, st.pid);
                at = at.max(st.started_at_ms);
            }
            if part {
                return Ok(Started {
                    started_at_ms: at,
                    follow: Vec::new(),
                });
            }
            self.start_container(rec, handle, cfg).await
        }
        .await;
        if started.is_err() {
            // Never some instances running alone: what started is stopped at once.
            let ids = Self::containers(handle);
            if let Err(e) = cluster::stop_all(&self.client, &ids, Some(Duration::ZERO)).await {
                tracing::warn!(kernel_id = %rec.id, error = %e, "cannot stop the instances of a cluster that failed to start");
            }
            if let Err(e) = self
                .spans
                .control(&rec.id, &m.peers, PeerAction::Stop, 0, Some(Duration::ZERO))
                .await
            {
                tracing::warn!(kernel_id = %rec.id, error = %e, "cannot stop the parts of a cluster that failed to start");
            }
        }
        started
    }

    async fn stop(&self, handle: &Handle, grace: Duration) -> Result<(), RuntimeError> {
        let ids = Self::containers(handle);
        let here = cluster::stop_all(&self.client, &ids, Some(grace));
        let peers = self.on_peers(handle, PeerAction::Stop, 0, Some(grace));
        let (here, peers) = futures::join!(here, peers);
        here?;
        peers
    }

    async fn destroy(&self, handle: &Handle) -> Result<(), RuntimeError> {
        self.on_peers(handle, PeerAction::Remove, 0, None).await?;
        for id in Self::containers(handle) {
            self.cgroups().remove(&id);
            self.client.remove(&id, true).await?;
        }
        if let Some(m) = Members::of(handle) {
            if !m.kernel.is_empty() {
                self.spans.forget(&m.kernel);
            }
            if !m.borrowed_network {
                self.client.remove_network(&m.network).await?;
            }
        }
        Ok(())
    }

    async fn release(&self, rec: &Launch, process_still_used: bool, cfg: &ClusterConfig) {
        if !cfg.kernel.keep_scratch {
            if let Err(e) = self.scratch.remove(&rec.id) {
                tracing::warn!(kernel_id = %rec.id, error = %e, "cannot remove scratch dir");
            }
        }
        if process_still_used {
            return;
        }
        if let Some(data) = rec.handle.as_ref().and_then(Self::process_data) {
            local::release_process_data(&self.client, &data).await;
        }
    }

    async fn status(&self, handle: &Handle) -> Result<Status, RuntimeError> {
        if let Some(m) = Members::of(handle) {
            let parts = self.spans.parts(&m.kernel, &m.peers).await?;
            let spans = self.spans.clone();
            let kid = m.kernel.clone();
            let stop = move |peers| spans.stop_later(&kid, peers);
            return Ok(cluster::status(&self.client, &m, &parts, self.spans.tasks(), stop).await?);
        }
        let st = self.client.inspect(&handle.instance).await?;
        if !st.exists {
            return Ok(Status {
                error: "the container was removed outside deckhand".into(),
                ..Status::default()
            });
        }
        if st.running && !st.restarting {
            self.track(&handle.instance, st.pid);
        } else {
            self.cgroups().remove(&handle.instance);
        }
        Ok(st.into())
    }

    fn events(&self) -> EventStream {
        events::stream(
            self.client.clone(),
            &self.namespace,
            &self.agent_id,
            self.spans.clone(),
        )
    }

    async fn list_owned(&self) -> Result<Vec<Owned>, RuntimeError> {
        self.owned().await
    }

    async fn adopt(
        &self,
        owned: &Owned,
        cfg: &ClusterConfig,
    ) -> Result<Option<Adopted>, RuntimeError> {
        if Members::of(&owned.handle).is_some() {
            // A cluster nobody recorded was caught mid-creation: undo it, never leave some
            // instances running alone.
            tracing::warn!(kernel_id = %owned.kernel_id, "removing the instances and network of a cluster kernel that has no record");
            self.destroy(&owned.handle).await?;
            return Ok(None);
        }
        self.adopt_container(owned, cfg).await.map(Some)
    }

    async fn restore(&self, rec: &Launch, cfg: &ClusterConfig) -> Option<String> {
        if let Some(m) = rec.handle.as_ref().and_then(Members::of) {
            if !m.peers.is_empty() {
                self.spans.follow(&rec.id, &m.peers);
            }
        }
        if rec.scratch_dir.is_empty() || Path::new(&rec.scratch_dir).exists() {
            return None;
        }
        match local::prepare_home(&self.scratch, rec, &self.agent_id, cfg) {
            Ok(()) => {
                Some("the scratch dir was gone after a restart; an empty one was made".into())
            }
            Err(e) => {
                tracing::warn!(kernel_id = %rec.id, error = %e, "cannot recreate a missing scratch dir");
                None
            }
        }
    }

    fn remove_orphans(&self, live: &[&Launch], cfg: &ClusterConfig) -> Vec<String> {
        let owned: std::collections::BTreeSet<&str> = live.iter().map(|r| r.id.as_str()).collect();
        let processes: std::collections::BTreeSet<&str> = live
            .iter()
            .map(|r| r.spec.process_id.as_str())
            .filter(|p| !p.is_empty())
            .collect();
        self.scratch
            .remove_orphans(&owned, &processes, cfg.kernel.keep_scratch)
    }

    fn logs(&self, handle: &Handle, follow: bool, tail: u32) -> Result<ChunkStream, RuntimeError> {
        Ok(self.client.logs(&handle.instance, follow, tail))
    }

    async fn signal(&self, handle: &Handle, signal: i32) -> Result<(), RuntimeError> {
        let number = signal.to_string();
        for id in Self::containers(handle) {
            self.client.kill(&id, &number).await?;
        }
        self.on_peers(handle, PeerAction::Signal, signal, None)
            .await
    }

    async fn suspend(&self, handle: &Handle) -> Result<(), RuntimeError> {
        for id in Self::containers(handle) {
            self.client.pause(&id).await?;
        }
        self.on_peers(handle, PeerAction::Suspend, 0, None).await
    }

    async fn resume(&self, handle: &Handle) -> Result<(), RuntimeError> {
        for id in Self::containers(handle) {
            self.client.unpause(&id).await?;
        }
        self.on_peers(handle, PeerAction::Resume, 0, None).await
    }

    fn member(&self, handle: &Handle, index: u32) -> Result<Handle, RuntimeError> {
        let Some(m) = Members::of(handle) else {
            return Err(RuntimeError::NotFound(format!(
                "instance {index}: the kernel is not a cluster kernel (it has no instances)"
            )));
        };
        m.member(handle, index)
    }

    async fn exec(
        &self,
        rec: &Launch,
        handle: &Handle,
        req: Exec,
    ) -> Result<ExecOutput, RuntimeError> {
        let cmd = client::ExecCommand::new(req, &rec.spec.user);
        let (exec_id, output, input) = self.client.exec(&handle.instance, cmd).await?;
        let client = self.client.clone();
        let id = exec_id.clone();
        Ok(ExecOutput {
            output,
            exit_code: async move { client.exec_exit_code(&exec_id).await.ok().flatten() }.boxed(),
            input,
            id,
        })
    }

    async fn resize_exec(&self, exec_id: &str, cols: u16, rows: u16) -> Result<(), RuntimeError> {
        Ok(self.client.resize_exec(exec_id, cols, rows).await?)
    }

    fn usage(&self, handle: &Handle) -> Option<Usage> {
        let paths: Vec<CgroupPaths> = {
            let cg = self.cgroups();
            Self::containers(handle)
                .iter()
                .filter_map(|id| cg.get(id).cloned())
                .collect()
        };
        cgroup::usage(&paths)
    }

    async fn upload(
        &self,
        rec: &Launch,
        path: &str,
        content: &[u8],
        cfg: &ClusterConfig,
    ) -> Result<u64, RuntimeError> {
        local::upload(&self.scratch, &rec.id, path, content, cfg).await
    }

    async fn download(&self, rec: &Launch, path: &str) -> Result<Vec<u8>, RuntimeError> {
        local::download(&self.scratch, &rec.id, path).await
    }

    fn list_files(&self, rec: &Launch, path: &str) -> Result<Vec<FileEntry>, RuntimeError> {
        local::list_files(&self.scratch, &rec.id, path)
    }

    async fn images(&self) -> Result<Vec<LocalImage>, RuntimeError> {
        Ok(self.client.list_images().await?)
    }

    fn background(self: Arc<Self>, ctx: Background) -> Option<BoxFuture<'static, ()>> {
        Some(self.collect_images(ctx).boxed())
    }
}

//! The manager's gRPC services: `ManagerService` (heartbeats and events from agents) and
//! `ClusterService` (the CLI's calls, forwarded to the agent holding the kernel). Placement
//! is in `placement.rs`, the image listing in `images.rs`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::kernels::KernelDirectory;
use super::slots;
use super::table::AgentTable;
use crate::cluster::keys::validate_name;
use crate::util::tls::TlsFiles;
use crate::wire::channel;
use crate::wire::pb::agent_service_client::AgentServiceClient;
use crate::wire::pb::cluster_service_server::ClusterService;
use crate::wire::pb::manager_service_server::ManagerService;
use crate::wire::pb::{
    AgentState, AgentSummary, ControlKernelRequest, ControlKernelResponse, CreateKernelResponse,
    DownloadFileResponse, ExecRequest, FileRequest, HeartbeatRequest, HeartbeatResponse,
    KernelAction, KernelEvent, KernelInfo, KernelLogsRequest, KernelRef, ListAgentImagesRequest,
    ListAgentImagesResponse, ListAgentsRequest, ListAgentsResponse, ListFilesResponse,
    ListKernelsRequest, ListKernelsResponse, OutputChunk, ReportEventsRequest,
    ReportEventsResponse, RunKernelRequest, SetNodeScheduleRequest, SetNodeScheduleResponse,
    UploadFileRequest, UploadFileResponse, WatchKernelEventsRequest,
};

type OutputStream = Pin<Box<dyn Stream<Item = Result<OutputChunk, Status>> + Send>>;

/// Counts a call forwarded to an agent (`deckhand_manager_forwarded_calls`).
pub(super) fn forwarded<T>(method: &'static str, answer: Result<T, Status>) -> Result<T, Status> {
    crate::manager::metrics::manager().forwarded(method, answer)
}

/// How long a forwarded unary call may take (a create waits for the container to start; a
/// stop waits out the grace period).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Clone)]
pub struct ManagerRpc {
    pub manager_id: String,
    pub namespace: String,
    pub table: Arc<Mutex<AgentTable>>,
    pub kernels: Arc<Mutex<KernelDirectory>>,
    /// Kernel events as agents report them, for `WatchKernelEvents`.
    pub events: tokio::sync::broadcast::Sender<KernelEvent>,
    /// TLS of the forwarding connections to agents.
    pub tls: TlsFiles,
    /// One lazily (re)connecting channel per agent address, shared by every forwarded call
    /// (one TLS handshake per agent, not per call).
    pub channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Where cordons and drains are written (`SetNodeSchedule`).
    pub etcd: crate::cluster::EtcdOptions,
    /// The manager's tasks (reconciliations with agents run among them).
    pub tasks: crate::util::shutdown::Tasks,
}

impl ManagerRpc {
    pub(super) fn table(&self) -> parking_lot::MutexGuard<'_, AgentTable> {
        self.table.lock()
    }

    pub(super) fn directory(&self) -> parking_lot::MutexGuard<'_, KernelDirectory> {
        self.kernels.lock()
    }

    /// Agents that may hold kernels (everything not GONE).
    pub(super) fn agents(&self) -> Vec<AgentSummary> {
        self.table()
            .list(Instant::now())
            .into_iter()
            .filter(|a| a.state != AgentState::Gone as i32)
            .collect()
    }

    pub(super) fn client(
        &self,
        agent: &AgentSummary,
    ) -> Result<AgentServiceClient<Channel>, Status> {
        let addr = agent
            .identity
            .as_ref()
            .map(|i| i.address.clone())
            .unwrap_or_default();
        let cached = self.channels.lock().get(&addr).cloned();
        let ch = match cached {
            Some(ch) => ch,
            None => {
                let ch = channel(&addr, FORWARD_TIMEOUT, &self.tls)
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                self.channels.lock().insert(addr, ch.clone());
                ch
            }
        };
        Ok(AgentServiceClient::new(ch)
            .max_decoding_message_size(crate::wire::MAX_MESSAGE)
            .max_encoding_message_size(crate::wire::MAX_MESSAGE))
    }

    pub(super) fn agent_named(&self, agent_id: &str) -> Result<AgentSummary, Status> {
        self.agents()
            .into_iter()
            .find(|a| a.identity.as_ref().is_some_and(|i| i.agent_id == agent_id))
            .ok_or_else(|| {
                Status::not_found(format!(
                    "agent_id: no agent `{agent_id}` in namespace `{}`",
                    self.namespace
                ))
            })
    }
}

#[tonic::async_trait]
impl ManagerService for ManagerRpc {
    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let req = req.into_inner();
        let Some(agent) = &req.agent else {
            return Err(Status::invalid_argument(
                "agent: the heartbeat carries no agent identity",
            ));
        };
        validate_name("agent.agent_id", &agent.agent_id).map_err(Status::invalid_argument)?;
        if agent.namespace != self.namespace {
            return Err(Status::failed_precondition(format!(
                "agent.namespace: agent `{}` belongs to namespace `{}`, this manager serves `{}`",
                agent.agent_id, agent.namespace, self.namespace
            )));
        }
        if req.heartbeat_interval_ms == 0 {
            return Err(Status::invalid_argument(
                "heartbeat_interval_ms: must be positive",
            ));
        }
        let (agent_id, instance_id) = (agent.agent_id.clone(), agent.instance_id.clone());
        let address = agent.address.clone();
        self.table()
            .heartbeat(req, Instant::now(), SystemTime::now());
        crate::manager::metrics::manager().heartbeats.inc();
        if self.directory().first_sight(&agent_id, &instance_id) {
            // A new agent process (or a new manager): reconcile what each side believes.
            let me = self.clone();
            let sync = async move { me.sync_with(&agent_id, &address).await };
            self.tasks
                .spawn_until_stopped("agent-sync", tracing::Instrument::in_current_span(sync));
        }
        Ok(Response::new(HeartbeatResponse {
            manager_id: self.manager_id.clone(),
        }))
    }

    async fn report_events(
        &self,
        req: Request<ReportEventsRequest>,
    ) -> Result<Response<ReportEventsResponse>, Status> {
        let req = req.into_inner();
        validate_name("agent_id", &req.agent_id).map_err(Status::invalid_argument)?;
        let (before, last_seq) = {
            let mut d = self.directory();
            let before = d.last_taken(&req.agent_id, &req.instance_id);
            (before, d.take(&req.agent_id, &req.instance_id, &req.events))
        };
        // A peer's part of a spanning cluster kernel is its owner's business: the owner
        // reports the kernel.
        let fresh: Vec<KernelEvent> = req
            .events
            .into_iter()
            .filter(|ev| ev.seq > before && ev.seq <= last_seq && !ev.part)
            .collect();
        {
            // A kernel that ended gives its slots back now, not at the next heartbeat.
            let mut t = self.table();
            for ev in &fresh {
                if slots::is_final(ev.state) || ev.reason == "removed" {
                    t.view.ended(&ev.kernel_id, ev.at_ms);
                }
            }
        }
        for ev in fresh {
            let _ = self.events.send(ev);
        }
        Ok(Response::new(ReportEventsResponse { last_seq }))
    }
}

#[tonic::async_trait]
impl ClusterService for ManagerRpc {
    async fn list_agents(
        &self,
        _req: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let agents = self.table().list(Instant::now());
        Ok(Response::new(ListAgentsResponse {
            agents,
            manager_id: self.manager_id.clone(),
        }))
    }

    async fn run_kernel(
        &self,
        req: Request<RunKernelRequest>,
    ) -> Result<Response<CreateKernelResponse>, Status> {
        self.place(req.into_inner()).await.map(Response::new)
    }

    async fn reset_gpu_health(
        &self,
        req: Request<crate::wire::pb::ResetGpuHealthRequest>,
    ) -> Result<Response<crate::wire::pb::ResetGpuHealthResponse>, Status> {
        self.reset_gpu(req.into_inner()).await.map(Response::new)
    }

    async fn set_node_schedule(
        &self,
        req: Request<SetNodeScheduleRequest>,
    ) -> Result<Response<SetNodeScheduleResponse>, Status> {
        self.set_schedule(req.into_inner()).await.map(Response::new)
    }

    async fn list_kernels(
        &self,
        _req: Request<ListKernelsRequest>,
    ) -> Result<Response<ListKernelsResponse>, Status> {
        let agents = self.agents();
        let calls = agents.iter().map(|a| async move {
            let mut c = self.client(a).ok()?;
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                c.list_kernels(ListKernelsRequest {}),
            )
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer within 5s")));
            let r = forwarded("ListKernels", r).ok()?;
            Some(r.into_inner().kernels)
        });
        let mut kernels: Vec<KernelInfo> = futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .flatten()
            .filter(|k| !is_part(k))
            .collect();
        crate::agent::convert::sort_kernels(&mut kernels);
        Ok(Response::new(ListKernelsResponse { kernels }))
    }

    async fn get_kernel(&self, req: Request<KernelRef>) -> Result<Response<KernelInfo>, Status> {
        let req = req.into_inner();
        let agent = self.holder(&req.kernel_id).await?;
        let answer = self.client(&agent)?.get_kernel(req).await;
        forwarded("GetKernel", answer)
    }

    async fn control_kernel(
        &self,
        req: Request<ControlKernelRequest>,
    ) -> Result<Response<ControlKernelResponse>, Status> {
        let req = req.into_inner();
        let agent = self.holder(&req.kernel_id).await?;
        let id = req.kernel_id.clone();
        let remove = req.action == KernelAction::Remove as i32;
        let action = KernelAction::try_from(req.action)
            .map(|a| a.as_str_name().trim_start_matches("KERNEL_ACTION_"))
            .unwrap_or("UNKNOWN");
        let agent_id = agent
            .identity
            .as_ref()
            .map(|i| i.agent_id.clone())
            .unwrap_or_default();
        let answer = self.client(&agent)?.control_kernel(req).await;
        match &answer {
            Ok(_) => {
                tracing::info!(kernel_id = %id, agent_id = %agent_id, action, "kernel control forwarded")
            }
            Err(s) => {
                tracing::info!(kernel_id = %id, agent_id = %agent_id, action, "kernel control refused by the agent: {}", s.message())
            }
        }
        let resp = forwarded("ControlKernel", answer)?;
        if remove {
            self.directory().forget(&id);
        }
        {
            // What the agent freed is free now, for the next placement.
            let mut t = self.table();
            if remove {
                t.view.removed(&id);
            }
            for k in resp
                .get_ref()
                .kernels
                .iter()
                .filter(|k| slots::is_final(k.state))
            {
                t.view.ended(&k.kernel_id, k.finished_at_ms);
            }
        }
        Ok(resp)
    }

    type KernelLogsStream = OutputStream;

    async fn kernel_logs(
        &self,
        req: Request<KernelLogsRequest>,
    ) -> Result<Response<OutputStream>, Status> {
        let req = req.into_inner();
        let agent = self.holder(&req.kernel_id).await?;
        let answer = self.client(&agent)?.kernel_logs(req).await;
        let s = forwarded("KernelLogs", answer)?.into_inner();
        Ok(Response::new(Box::pin(s.map(|r| r))))
    }

    type WatchKernelEventsStream =
        Pin<Box<dyn Stream<Item = Result<KernelEvent, Status>> + Send + 'static>>;

    async fn watch_kernel_events(
        &self,
        req: Request<WatchKernelEventsRequest>,
    ) -> Result<Response<Self::WatchKernelEventsStream>, Status> {
        let id = req.into_inner().kernel_id;
        let task_prefix = format!("{id}.");
        let s = tokio_stream::wrappers::BroadcastStream::new(self.events.subscribe()).filter_map(
            move |ev| {
                let keep = match ev {
                    Ok(ev)
                        if id.is_empty()
                            || ev.kernel_id == id
                            || ev.kernel_id.starts_with(&task_prefix) =>
                    {
                        Some(Ok(ev))
                    }
                    Ok(_) => None,
                    // A watcher too slow to keep up misses events, not the stream.
                    Err(_) => None,
                };
                futures::future::ready(keep)
            },
        );
        Ok(Response::new(Box::pin(s)))
    }

    async fn list_images(
        &self,
        req: Request<ListAgentImagesRequest>,
    ) -> Result<Response<ListAgentImagesResponse>, Status> {
        self.images(req.into_inner()).await.map(Response::new)
    }

    type ExecKernelStream = OutputStream;

    async fn exec_kernel(
        &self,
        req: Request<ExecRequest>,
    ) -> Result<Response<OutputStream>, Status> {
        let req = req.into_inner();
        let agent = self.holder(&req.kernel_id).await?;
        let answer = self.client(&agent)?.exec_kernel(req).await;
        let s = forwarded("ExecKernel", answer)?.into_inner();
        Ok(Response::new(Box::pin(s.map(|r| r))))
    }

    async fn upload_file(
        &self,
        req: Request<UploadFileRequest>,
    ) -> Result<Response<UploadFileResponse>, Status> {
        let req = req.into_inner();
        let agent = self.holder(&req.kernel_id).await?;
        let answer = self.client(&agent)?.upload_file(req).await;
        forwarded("UploadFile", answer)
    }

    async fn download_file(
        &self,
        req: Request<FileRequest>,
    ) -> Result<Response<DownloadFileResponse>, Status> {
        let req = req.into_inner();
        let agent = self.holder(&req.kernel_id).await?;
        let answer = self.client(&agent)?.download_file(req).await;
        forwarded("DownloadFile", answer)
    }

    async fn list_files(
        &self,
        req: Request<FileRequest>,
    ) -> Result<Response<ListFilesResponse>, Status> {
        let req = req.into_inner();
        let agent = self.holder(&req.kernel_id).await?;
        let answer = self.client(&agent)?.list_files(req).await;
        forwarded("ListFiles", answer)
    }
}

/// Whether `k` is a peer's part of a cluster kernel spanning agents (listed by its owner).
pub(super) fn is_part(k: &KernelInfo) -> bool {
    k.spec
        .as_ref()
        .and_then(|s| s.span.as_ref())
        .is_some_and(|s| !s.owner.is_empty())
}

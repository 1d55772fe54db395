//! `AgentService`: what the agent answers to the manager and to operators.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::status::Snapshot;
use crate::agent::convert;
use crate::config::ClusterConfig;
use crate::kernel::Supervisor;
use crate::runtime::Exec;
use crate::wire::pb::agent_service_server::AgentService;
use crate::wire::pb::{
    AgentIdentity, ControlKernelRequest, ControlKernelResponse, CreateKernelRequest,
    CreateKernelResponse, DownloadFileResponse, ExecRequest, FileRequest, GetInfoRequest,
    GetInfoResponse, ImageInfo, KernelEvent, KernelInfo, KernelLogsRequest, KernelRef,
    ListFilesResponse, ListImagesRequest, ListImagesResponse, ListKernelsRequest,
    ListKernelsResponse, OutputChunk, ReadUsageRequest, ReadUsageResponse, SyncKernelsRequest,
    SyncKernelsResponse, UploadFileRequest, UploadFileResponse, WatchEventsRequest,
};

pub type OutputStream = Pin<Box<dyn Stream<Item = Result<OutputChunk, Status>> + Send>>;
pub type EventStream = Pin<Box<dyn Stream<Item = Result<KernelEvent, Status>> + Send>>;

pub struct AgentRpc {
    pub identity: AgentIdentity,
    pub config: watch::Receiver<Arc<ClusterConfig>>,
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub current_manager: watch::Receiver<String>,
    pub kernels: Supervisor,
    pub health: crate::host::gpu::health::GpuHealth,
}

impl AgentRpc {
    fn id(&self) -> &str {
        &self.identity.agent_id
    }
}

#[tonic::async_trait]
impl AgentService for AgentRpc {
    async fn reset_gpu_health(
        &self,
        req: Request<crate::wire::pb::ResetGpuHealthRequest>,
    ) -> Result<Response<crate::wire::pb::ResetGpuHealthResponse>, Status> {
        let uuid = req.into_inner().uuid.trim().to_string();
        if uuid.is_empty() {
            return Err(Status::invalid_argument(
                "uuid: missing; name the GPU's UUID",
            ));
        }
        let marks = self.health.marks();
        let known = marks.contains_key(&uuid)
            || self
                .snapshot
                .borrow()
                .gpus
                .devices
                .iter()
                .any(|d| d.uuid == uuid);
        if !known {
            return Err(Status::not_found(format!(
                "uuid: no GPU `{uuid}` on agent `{}`",
                self.id()
            )));
        }
        let reason = marks
            .get(&uuid)
            .map(|u| u.reason.clone())
            .unwrap_or_default();
        let was_unhealthy = self.health.reset(&uuid);
        if was_unhealthy {
            tracing::info!(gpu = %uuid, %reason, "GPU health reset by an operator");
        }
        Ok(Response::new(crate::wire::pb::ResetGpuHealthResponse {
            agent_id: self.id().to_string(),
            uuid,
            was_unhealthy,
            reason,
        }))
    }

    async fn get_info(
        &self,
        _req: Request<GetInfoRequest>,
    ) -> Result<Response<GetInfoResponse>, Status> {
        let cfg = self.config.borrow().clone();
        let snap = self.snapshot.borrow().clone();
        let mut identity = self.identity.clone();
        identity.region = cfg.region.clone();
        identity.scaling_group = cfg.scaling_group.clone();
        let slots = super::status::slots(&snap.host, &snap.gpus, &cfg, self.kernels.allocated());
        Ok(Response::new(GetInfoResponse {
            identity: Some(identity),
            host: Some(snap.host.clone().into()),
            gpus: Some(snap.gpus.clone().into()),
            slots: Some(slots),
            heartbeat_interval_ms: cfg.heartbeat_interval.as_millis() as u64,
            manager_address: self.current_manager.borrow().clone(),
            kernels_synced_at_ms: *self.kernels.synced().borrow(),
        }))
    }

    async fn create_kernel(
        &self,
        req: Request<CreateKernelRequest>,
    ) -> Result<Response<CreateKernelResponse>, Status> {
        let req = convert::create_request(req.into_inner())?;
        let kernels = convert::kernel_infos(self.kernels.create(req).await?, self.id());
        Ok(Response::new(CreateKernelResponse {
            kernels,
            agent_id: self.identity.agent_id.clone(),
        }))
    }

    async fn get_kernel(&self, req: Request<KernelRef>) -> Result<Response<KernelInfo>, Status> {
        let id = req.into_inner().kernel_id;
        let mut list = convert::kernel_infos(self.kernels.get(&id)?, self.id());
        if list.len() == 1 && list[0].kernel_id == id {
            return Ok(Response::new(list.remove(0)));
        }
        Err(Status::invalid_argument(format!(
            "kernel_id: `{id}` is a job array; list its tasks with ListKernels or name one task `{id}.<index>`"
        )))
    }

    async fn list_kernels(
        &self,
        _req: Request<ListKernelsRequest>,
    ) -> Result<Response<ListKernelsResponse>, Status> {
        Ok(Response::new(ListKernelsResponse {
            kernels: convert::kernel_infos(self.kernels.list(), self.id()),
        }))
    }

    async fn control_kernel(
        &self,
        req: Request<ControlKernelRequest>,
    ) -> Result<Response<ControlKernelResponse>, Status> {
        let req = convert::control(req.into_inner());
        let kernels = convert::kernel_infos(self.kernels.control(req).await?, self.id());
        Ok(Response::new(ControlKernelResponse { kernels }))
    }

    type KernelLogsStream = OutputStream;

    async fn kernel_logs(
        &self,
        req: Request<KernelLogsRequest>,
    ) -> Result<Response<OutputStream>, Status> {
        let r = req.into_inner();
        let logs = self.kernels.logs(&r.kernel_id, r.follow, r.tail)?;
        let s = logs.map(|c| {
            c.map(|c| OutputChunk {
                data: c.data.to_vec(),
                stderr: c.stderr,
                exit_code: None,
            })
            .map_err(|e| Status::unavailable(e.to_string()))
        });
        Ok(Response::new(Box::pin(s)))
    }

    type ExecKernelStream = OutputStream;

    async fn exec_kernel(
        &self,
        req: Request<ExecRequest>,
    ) -> Result<Response<OutputStream>, Status> {
        let r = req.into_inner();
        let exec = Exec {
            command: r.command,
            env: r.env,
            working_dir: r.working_dir,
            ..Default::default()
        };
        let run = self.kernels.exec(&r.kernel_id, exec).await?;
        let body = run.output.map(|c| {
            c.map(|c| OutputChunk {
                data: c.data.to_vec(),
                stderr: c.stderr,
                exit_code: None,
            })
            .map_err(|e| Status::unavailable(e.to_string()))
        });
        let exit_code = run.exit_code;
        let tail = futures::stream::once(async move {
            let code = exit_code.await.unwrap_or(-1);
            Ok(OutputChunk {
                data: Vec::new(),
                stderr: false,
                exit_code: Some(code as i32),
            })
        });
        Ok(Response::new(Box::pin(body.chain(tail))))
    }

    async fn upload_file(
        &self,
        req: Request<UploadFileRequest>,
    ) -> Result<Response<UploadFileResponse>, Status> {
        let r = req.into_inner();
        let size = self
            .kernels
            .upload(&r.kernel_id, &r.path, &r.content)
            .await?;
        Ok(Response::new(UploadFileResponse { size }))
    }

    async fn download_file(
        &self,
        req: Request<FileRequest>,
    ) -> Result<Response<DownloadFileResponse>, Status> {
        let r = req.into_inner();
        let content = self.kernels.download(&r.kernel_id, &r.path).await?;
        Ok(Response::new(DownloadFileResponse { content }))
    }

    async fn list_files(
        &self,
        req: Request<FileRequest>,
    ) -> Result<Response<ListFilesResponse>, Status> {
        let r = req.into_inner();
        let entries = self
            .kernels
            .list_files(&r.kernel_id, &r.path)?
            .into_iter()
            .map(convert::file_entry)
            .collect();
        Ok(Response::new(ListFilesResponse { entries }))
    }

    async fn sync_kernels(
        &self,
        req: Request<SyncKernelsRequest>,
    ) -> Result<Response<SyncKernelsResponse>, Status> {
        let req = req.into_inner();
        let outcome = self
            .kernels
            .sync(&req.known_kernel_ids, req.destroy_unknown)
            .await?;
        Ok(Response::new(convert::sync_outcome(outcome, self.id())))
    }

    async fn list_images(
        &self,
        _req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        // The job categories: images of the default runtime (Docker).
        let runtime = self
            .kernels
            .runtimes()
            .get("")
            .map_err(|e| Status::internal(e.to_string()))?;
        let local = runtime.images().await?;
        let images = local
            .into_iter()
            .map(|i| ImageInfo {
                reference: i.reference,
                image_id: i.id,
                size_bytes: i.size_bytes,
                created_at_ms: i.created_at_ms,
                agent_id: self.identity.agent_id.clone(),
            })
            .collect();
        Ok(Response::new(ListImagesResponse { images }))
    }

    async fn read_usage(
        &self,
        _req: Request<ReadUsageRequest>,
    ) -> Result<Response<ReadUsageResponse>, Status> {
        // Exactly what a heartbeat does for its `kernels` field, timed here.
        let t0 = std::time::Instant::now();
        let read = convert::usages(self.kernels.usage());
        let read_ns = t0.elapsed().as_nanos() as u64;
        Ok(Response::new(ReadUsageResponse {
            kernels: read.len() as u32,
            read_ns,
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        req: Request<WatchEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let after = req.into_inner().after_seq;
        let log = self.kernels.events();
        // Subscribe first, then replay: an event may appear in both; the seq filter drops it.
        let live = log.subscribe();
        let replay = if after > 0 {
            log.after(after, usize::MAX)
        } else {
            Vec::new()
        };
        let mut last = replay.last().map(|e| e.seq).unwrap_or(after);
        let live = tokio_stream::wrappers::BroadcastStream::new(live).filter_map(move |r| {
            let out = match r {
                Ok(ev) if ev.seq > last => {
                    last = ev.seq;
                    Some(Ok(convert::event(ev)))
                }
                Ok(_) => None,
                Err(e) => Some(Err(Status::data_loss(format!(
                    "watcher fell behind: {e}; reconnect with after_seq"
                )))),
            };
            async move { out }
        });
        let s =
            futures::stream::iter(replay.into_iter().map(|e| Ok(convert::event(e)))).chain(live);
        Ok(Response::new(Box::pin(s)))
    }
}

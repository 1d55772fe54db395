//! The Docker engine, through bollard: the few calls the Docker runtime needs, with errors
//! turned into messages that name the container and the engine's own words.

mod exec;
mod networks;

pub use exec::{ExecCommand, ExecStarted};

use std::collections::HashMap;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, ContainerStateStatusEnum};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, KillContainerOptions, ListContainersOptions,
    ListImagesOptions, LogsOptions, RemoveContainerOptions, StopContainerOptions,
};
use futures::{Stream, StreamExt};

use crate::runtime::{Chunk, ChunkStream, LocalImage, RuntimeError};

/// Labels every kernel container carries.
pub const LABEL_NAMESPACE: &str = "io.deckhand.namespace";
pub const LABEL_AGENT: &str = "io.deckhand.agent-id";
pub const LABEL_KERNEL: &str = "io.deckhand.kernel-id";
/// On the containers of a cluster kernel: the instance index (0 is the master) and the
/// number of instances.
pub const LABEL_INSTANCE: &str = "io.deckhand.instance";
pub const LABEL_INSTANCES: &str = "io.deckhand.instances";
/// On the containers of a peer's part of a spanning cluster kernel: the owner's agent id.
pub const LABEL_OWNER: &str = "io.deckhand.cluster-owner";
/// On the owner's containers of a spanning cluster kernel: its peers and their instances
/// (JSON), so a restarted agent finds them again from the engine alone.
pub const LABEL_PEERS: &str = "io.deckhand.cluster-peers";
/// On shared process-data volumes: the process id.
pub const LABEL_PROCESS: &str = "io.deckhand.process-id";

/// A failed engine call.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no such container or image: {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("Docker engine: {0}")]
    Engine(String),
    #[error("Docker engine unreachable: {0}")]
    Unavailable(String),
}

impl From<EngineError> for RuntimeError {
    fn from(e: EngineError) -> Self {
        let msg = e.to_string();
        match e {
            EngineError::Unavailable(_) => Self::Unavailable(msg),
            EngineError::NotFound(_) => Self::NotFound(msg),
            EngineError::Conflict(_) | EngineError::Engine(_) => Self::Failed(msg),
        }
    }
}

impl From<bollard::errors::Error> for EngineError {
    fn from(e: bollard::errors::Error) -> Self {
        use bollard::errors::Error as E;
        match e {
            E::DockerResponseServerError {
                status_code: 404,
                message,
            } => Self::NotFound(message),
            E::DockerResponseServerError {
                status_code: 409,
                message,
            } => Self::Conflict(message),
            E::DockerResponseServerError { message, .. } => Self::Engine(message),
            E::HyperResponseError { .. }
            | E::HyperLegacyError { .. }
            | E::SocketNotFoundError(_)
            | E::IOError { .. }
            | E::RequestTimeoutError => Self::Unavailable(e.to_string()),
            other => Self::Engine(other.to_string()),
        }
    }
}

/// What inspect says about a container's process.
#[derive(Debug, Clone, Default)]
pub struct ContainerStatus {
    pub running: bool,
    pub paused: bool,
    pub restarting: bool,
    pub exit_code: i64,
    pub oom_killed: bool,
    pub pid: u32,
    pub error: String,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub exists: bool,
    /// How many times the restart policy restarted the container.
    pub restart_count: u32,
    /// For an instance on another agent (a spanning cluster's part): why it failed, in
    /// that agent's words.
    pub part_reason: String,
}

/// A container of this agent, from a listing.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub id: String,
    pub kernel_id: String,
    pub labels: HashMap<String, String>,
}

/// A container event of interest: `die`, `oom`, `pause`, `unpause`, `start`, `destroy`.
#[derive(Debug, Clone)]
pub struct ContainerEvent {
    pub container_id: String,
    pub kernel_id: String,
    /// The instance index of a cluster kernel's container (`None` for a single kernel).
    pub member: Option<u32>,
    pub action: String,
    pub exit_code: Option<i64>,
}

#[derive(Clone)]
pub struct Docker {
    api: bollard::Docker,
}

impl Docker {
    /// Connects to the local engine (`DOCKER_HOST` or `/var/run/docker.sock`) and agrees on
    /// an API version both sides speak.
    pub async fn connect() -> Result<Self, EngineError> {
        let api = bollard::Docker::connect_with_local_defaults()
            .map_err(|e| EngineError::Unavailable(e.to_string()))?
            .with_timeout(Duration::from_secs(120));
        match api.clone().negotiate_version().await {
            Ok(api) => Ok(Self { api }),
            Err(e) => {
                // The engine is not answering yet: speak API 1.41 (Docker 20.10), which has
                // everything deckhand uses, and let calls fail UNAVAILABLE until it answers.
                tracing::warn!(error = %e, "Docker engine not answering; assuming API 1.41");
                let v = bollard::ClientVersion {
                    major_version: 1,
                    minor_version: 41,
                };
                let host = std::env::var("DOCKER_HOST")
                    .unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
                let api = bollard::Docker::connect_with_local(&host, 120, &v)
                    .map_err(|e| EngineError::Unavailable(e.to_string()))?;
                Ok(Self { api })
            }
        }
    }

    pub fn api(&self) -> &bollard::Docker {
        &self.api
    }

    /// Whether the engine answers at all.
    pub async fn ping(&self) -> Result<(), EngineError> {
        self.api.ping().await?;
        Ok(())
    }

    pub async fn create(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String, EngineError> {
        let opts = CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        Ok(self.api.create_container(Some(opts), body).await?.id)
    }

    /// Attaches to a created container's stdin (opened with `open_stdin` + `stdin_once`):
    /// what is written reaches the command's standard input, and shutting the writer down
    /// closes it. Attach before start, so no byte is missed.
    pub async fn attach_stdin(
        &self,
        id: &str,
    ) -> Result<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>, EngineError> {
        let opts = bollard::query_parameters::AttachContainerOptions {
            stdin: true,
            stream: true,
            ..Default::default()
        };
        Ok(self.api.attach_container(id, Some(opts)).await?.input)
    }

    pub async fn start(&self, id: &str) -> Result<(), EngineError> {
        Ok(self.api.start_container(id, None).await?)
    }

    pub async fn pause(&self, id: &str) -> Result<(), EngineError> {
        Ok(self.api.pause_container(id).await?)
    }

    pub async fn unpause(&self, id: &str) -> Result<(), EngineError> {
        Ok(self.api.unpause_container(id).await?)
    }

    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), EngineError> {
        let opts = KillContainerOptions {
            signal: signal.to_string(),
        };
        Ok(self.api.kill_container(id, Some(opts)).await?)
    }

    /// SIGTERM, then SIGKILL after `grace` (the engine does the waiting).
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), EngineError> {
        self.stop_within(id, Some(grace)).await
    }

    /// SIGTERM, then SIGKILL after `grace`, or after the container's own stop timeout
    /// when `None`.
    pub async fn stop_within(&self, id: &str, grace: Option<Duration>) -> Result<(), EngineError> {
        let opts = StopContainerOptions {
            signal: None,
            t: grace.map(|g| g.as_secs().min(i32::MAX as u64) as i32),
        };
        match self.api.stop_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a container; one that is already gone counts as removed.
    pub async fn remove(&self, id: &str, force: bool) -> Result<(), EngineError> {
        let opts = RemoveContainerOptions {
            force,
            v: true,
            ..Default::default()
        };
        match self.api.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) => match EngineError::from(e) {
                EngineError::NotFound(_) => Ok(()),
                // "removal of container … is already in progress"
                EngineError::Conflict(m) if m.contains("already in progress") => Ok(()),
                other => Err(other),
            },
        }
    }

    pub async fn inspect(&self, id: &str) -> Result<ContainerStatus, EngineError> {
        if id.is_empty() {
            return Ok(ContainerStatus::default());
        }
        let c = match self.api.inspect_container(id, None).await {
            Ok(c) => c,
            Err(e) => {
                return match EngineError::from(e) {
                    EngineError::NotFound(_) => Ok(ContainerStatus::default()),
                    other => Err(other),
                }
            }
        };
        let s = c.state.unwrap_or_default();
        Ok(ContainerStatus {
            exists: true,
            restart_count: c.restart_count.unwrap_or(0).max(0) as u32,
            running: s.running.unwrap_or(false)
                || matches!(s.status, Some(ContainerStateStatusEnum::RUNNING)),
            paused: s.paused.unwrap_or(false),
            restarting: s.restarting.unwrap_or(false),
            exit_code: s.exit_code.unwrap_or(0),
            oom_killed: s.oom_killed.unwrap_or(false),
            pid: s.pid.unwrap_or(0).max(0) as u32,
            error: s.error.unwrap_or_default(),
            started_at_ms: parse_time(s.started_at.as_deref()),
            finished_at_ms: parse_time(s.finished_at.as_deref()),
            part_reason: String::new(),
        })
    }

    /// The containers carrying these labels, running or not.
    pub async fn list_labelled(
        &self,
        namespace: &str,
        agent_id: &str,
    ) -> Result<Vec<Labelled>, EngineError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_NAMESPACE}={namespace}"),
                format!("{LABEL_AGENT}={agent_id}"),
            ],
        )]);
        let opts = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let list = self.api.list_containers(Some(opts)).await?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels?;
                let kernel_id = labels.get(LABEL_KERNEL)?.clone();
                Some(Labelled {
                    id: c.id?,
                    kernel_id,
                    labels,
                })
            })
            .collect())
    }

    /// The engine's images, one entry per tag (an untagged image once, with an empty
    /// reference), as `docker images` lists them. Reads only: nothing is pulled.
    pub async fn list_images(&self) -> Result<Vec<LocalImage>, EngineError> {
        let opts = ListImagesOptions {
            all: false,
            ..Default::default()
        };
        let list = self.api.list_images(Some(opts)).await?;
        let mut images = Vec::new();
        for i in list {
            let size_bytes = i.size.max(0) as u64;
            let created_at_ms = i.created.max(0).saturating_mul(1000);
            // API 1.41 spells "untagged" `<none>:<none>`; newer engines send an empty list.
            let mut tags: Vec<String> = i
                .repo_tags
                .into_iter()
                .filter(|t| t != "<none>:<none>")
                .collect();
            if tags.is_empty() {
                tags.push(String::new());
            }
            images.extend(tags.into_iter().map(|reference| LocalImage {
                reference,
                id: i.id.clone(),
                size_bytes,
                created_at_ms,
            }));
        }
        Ok(images)
    }

    /// Lifecycle events of this agent's containers, as they happen.
    pub fn events(
        &self,
        namespace: &str,
        agent_id: &str,
    ) -> impl Stream<Item = Result<ContainerEvent, EngineError>> + Send + 'static {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![
                    format!("{LABEL_NAMESPACE}={namespace}"),
                    format!("{LABEL_AGENT}={agent_id}"),
                ],
            ),
            (
                "event".to_string(),
                ["die", "oom", "pause", "unpause", "start", "destroy"]
                    .map(String::from)
                    .to_vec(),
            ),
        ]);
        let opts = EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        self.api.events(Some(opts)).map(|r| {
            let m = r.map_err(EngineError::from)?;
            let actor = m.actor.unwrap_or_default();
            let attrs = actor.attributes.unwrap_or_default();
            Ok(ContainerEvent {
                container_id: actor.id.unwrap_or_default(),
                kernel_id: attrs.get(LABEL_KERNEL).cloned().unwrap_or_default(),
                member: attrs.get(LABEL_INSTANCE).and_then(|i| i.parse().ok()),
                action: m.action.unwrap_or_default(),
                exit_code: attrs.get("exitCode").and_then(|c| c.parse().ok()),
            })
        })
    }

    /// stdout and stderr of a container; `tail` 0 means all.
    pub fn logs(&self, id: &str, follow: bool, tail: u32) -> ChunkStream {
        let opts = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            tail: if tail == 0 {
                "all".into()
            } else {
                tail.to_string()
            },
            ..Default::default()
        };
        chunks(self.api.logs(id, Some(opts)))
    }
}

/// An engine's output stream as chunks (stdin echoes dropped), errors as runtime errors.
fn chunks<S>(output: S) -> ChunkStream
where
    S: Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send + 'static,
{
    Box::pin(output.filter_map(|r| async move {
        match r {
            Ok(out) => chunk(out).map(Ok),
            Err(e) => Some(Err(EngineError::from(e).into())),
        }
    }))
}

fn chunk(out: LogOutput) -> Option<Chunk> {
    match out {
        LogOutput::StdOut { message } | LogOutput::Console { message } => Some(Chunk {
            data: message,
            stderr: false,
        }),
        LogOutput::StdErr { message } => Some(Chunk {
            data: message,
            stderr: true,
        }),
        LogOutput::StdIn { .. } => None,
    }
}

/// Docker's RFC 3339 times → Unix ms; the zero time (`0001-01-01…`) → 0.
fn parse_time(s: Option<&str>) -> i64 {
    s.and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp_millis().max(0))
        .unwrap_or(0)
}

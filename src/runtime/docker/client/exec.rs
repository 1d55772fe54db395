//! Commands run in a running container: start (with a terminal and stdin when asked),
//! resize, exit code.

use bollard::exec::{CreateExecOptions, StartExecResults};

use super::{chunks, Docker, EngineError};
use crate::runtime::{ChunkStream, Exec};

impl Docker {
    /// Starts `cmd` in a running container (with a terminal and stdin when asked); returns
    /// its exec id (for the exit code once the output ends, and resizing), its output and
    /// its stdin.
    pub async fn exec(&self, id: &str, cmd: ExecCommand) -> Result<ExecStarted, EngineError> {
        let created = self
            .api
            .create_exec(
                id,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    attach_stdin: Some(cmd.stdin),
                    tty: Some(cmd.tty),
                    cmd: Some(cmd.command),
                    env: Some(cmd.env),
                    working_dir: cmd.working_dir,
                    user: cmd.user,
                    ..Default::default()
                },
            )
            .await?;
        let opts = bollard::exec::StartExecOptions {
            tty: cmd.tty,
            ..Default::default()
        };
        match self.api.start_exec(&created.id, Some(opts)).await? {
            StartExecResults::Attached { output, input } => {
                Ok((created.id, chunks(output), cmd.stdin.then_some(input)))
            }
            StartExecResults::Detached => {
                Ok((created.id, Box::pin(futures::stream::empty()), None))
            }
        }
    }

    /// Resizes the terminal of an exec started with a tty.
    pub async fn resize_exec(&self, exec_id: &str, w: u16, h: u16) -> Result<(), EngineError> {
        let opts = bollard::query_parameters::ResizeExecOptions {
            w: i32::from(w),
            h: i32::from(h),
        };
        Ok(self.api.resize_exec(exec_id, opts).await?)
    }

    pub async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, EngineError> {
        Ok(self.api.inspect_exec(exec_id).await?.exit_code)
    }
}

/// What [`Docker::exec`] runs.
pub struct ExecCommand {
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub tty: bool,
    pub stdin: bool,
}

impl ExecCommand {
    /// A runtime's exec request, run as `user` (the kernel's own user).
    pub fn new(req: Exec, user: &str) -> Self {
        Self {
            command: req.command,
            env: req
                .env
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            working_dir: (!req.working_dir.is_empty()).then_some(req.working_dir),
            user: Some(user.to_string()),
            tty: req.tty,
            stdin: req.stdin,
        }
    }
}

/// An exec started: its id, its output, its stdin (when asked for).
pub type ExecStarted = (
    String,
    ChunkStream,
    Option<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>>,
);

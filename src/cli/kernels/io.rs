//! Kernel I/O: `logs`, `exec`, `files` (list/upload/download), and following output to exit.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use futures::StreamExt;

use super::super::common::ManagerArgs;
use super::super::output::bytes;
use super::list::state_name;
use super::{get, pairs, LONG};
use crate::wire::pb::{
    ExecRequest, FileRequest, KernelLogsRequest, KernelState, UploadFileRequest,
};

/// Streams the kernel's output until it ends, then exits with its exit code.
pub(super) async fn follow_to_exit(target: &ManagerArgs, id: &str) -> anyhow::Result<ExitCode> {
    stream_logs(target, id, true, 0).await?;
    // The log stream ends when the container stops; the DONE/FAILED record follows at once,
    // or once its results are uploaded (however long that takes: the upload ends by itself).
    let mut waits = 0;
    while waits < 100 {
        let k = get(target, id).await?;
        let s = k.state();
        if s == KernelState::Uploading {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        if matches!(
            s,
            KernelState::Done | KernelState::Failed | KernelState::Cancelled
        ) {
            if s != KernelState::Done {
                eprintln!("kernel {id} {}: {}", state_name(s), k.reason);
            }
            // A kernel that failed after its command succeeded (its results upload) does
            // not exit 0.
            let code = match k.exit_code {
                Some(0) if s == KernelState::Failed => 1,
                Some(c) => c,
                None => 1,
            };
            return Ok(ExitCode::from(code.clamp(0, 255) as u8));
        }
        waits += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("kernel {id} is still running after its output ended")
}

async fn stream_logs(
    target: &ManagerArgs,
    id: &str,
    follow: bool,
    tail: u32,
) -> anyhow::Result<()> {
    let req = KernelLogsRequest {
        kernel_id: id.to_string(),
        follow,
        tail,
    };
    let mut s = target
        .call_with(LONG, |mut c| {
            let req = req.clone();
            async move { c.kernel_logs(req).await.map(|r| r.into_inner()) }
        })
        .await?;
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        write_chunk(&chunk.data, chunk.stderr);
    }
    Ok(())
}

fn write_chunk(data: &[u8], stderr: bool) {
    if stderr {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(data);
        let _ = e.flush();
    } else {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(data);
        let _ = o.flush();
    }
}

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub target: ManagerArgs,
    /// Keep following new output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines (0 = all).
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub tail: u32,
    /// Kernel id, task id `<array>.<index>`, or cluster instance `<id>/<i>`.
    pub id: String,
}

pub async fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    stream_logs(&args.target, &args.id, args.follow, args.tail).await?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub target: ManagerArgs,
    /// Environment variable KEY=VALUE of the command (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory of the command (default: the kernel's).
    #[arg(
        short = 'w',
        long = "workdir",
        value_name = "DIR",
        default_value = "",
        hide_default_value = true
    )]
    pub working_dir: String,
    /// Kernel id (or cluster instance `<id>/<i>`).
    pub id: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

pub async fn exec(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let req = ExecRequest {
        kernel_id: args.id.clone(),
        command: args.command.clone(),
        env: pairs("--env", &args.env)?,
        working_dir: args.working_dir.clone(),
    };
    let mut s = args
        .target
        .call_with(LONG, |mut c| {
            let req = req.clone();
            async move { c.exec_kernel(req).await.map(|r| r.into_inner()) }
        })
        .await?;
    let mut code = 0;
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        write_chunk(&chunk.data, chunk.stderr);
        if let Some(c) = chunk.exit_code {
            code = c;
        }
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

#[derive(Debug, Clone, Args)]
pub struct FilesArgs {
    #[command(subcommand)]
    pub op: FilesOp,
}

#[derive(Debug, Clone, Subcommand)]
pub enum FilesOp {
    /// List a directory of the kernel's /home/work.
    Ls {
        #[command(flatten)]
        target: ManagerArgs,
        /// Kernel id.
        id: String,
        /// A directory under /home/work (default: /home/work itself).
        #[arg(default_value = "", hide_default_value = true)]
        path: String,
    },
    /// Copy a local file into the kernel's /home/work.
    Put {
        #[command(flatten)]
        target: ManagerArgs,
        /// Kernel id.
        id: String,
        /// The local file to upload.
        local: std::path::PathBuf,
        /// Where it goes, relative to /home/work.
        remote: String,
    },
    /// Copy a file out of the kernel's /home/work (to stdout without LOCAL).
    Get {
        #[command(flatten)]
        target: ManagerArgs,
        /// Kernel id.
        id: String,
        /// The file, relative to /home/work.
        remote: String,
        /// Where to write it (default: stdout).
        local: Option<std::path::PathBuf>,
    },
}

pub async fn files(args: FilesArgs) -> anyhow::Result<ExitCode> {
    match args.op {
        FilesOp::Ls { target, id, path } => {
            let req = FileRequest {
                kernel_id: id,
                path,
            };
            let list = target
                .call(|mut c| {
                    let req = req.clone();
                    async move { c.list_files(req).await.map(|r| r.into_inner().entries) }
                })
                .await?;
            for e in list {
                let kind = if e.dir { "d" } else { "-" };
                println!("{kind} {:>12} {}", e.size, e.path);
            }
        }
        FilesOp::Put {
            target,
            id,
            local,
            remote,
        } => {
            let size = std::fs::metadata(&local)
                .with_context(|| format!("cannot read {}", local.display()))?
                .len();
            let limit = crate::runtime::MAX_UPLOAD as u64;
            if size > limit {
                bail!(
                    "{} is {}; uploads are at most {} (copy bigger data through a stage-in dir)",
                    local.display(),
                    bytes(size),
                    bytes(limit)
                );
            }
            let content = std::fs::read(&local)
                .with_context(|| format!("cannot read {}", local.display()))?;
            let req = UploadFileRequest {
                kernel_id: id,
                path: remote,
                content,
            };
            let size = target
                .call_with(LONG, |mut c| {
                    let req = req.clone();
                    async move { c.upload_file(req).await.map(|r| r.into_inner().size) }
                })
                .await?;
            println!("{size} bytes");
        }
        FilesOp::Get {
            target,
            id,
            remote,
            local,
        } => {
            let req = FileRequest {
                kernel_id: id,
                path: remote,
            };
            let content = target
                .call_with(LONG, |mut c| {
                    let req = req.clone();
                    async move { c.download_file(req).await.map(|r| r.into_inner().content) }
                })
                .await?;
            match local {
                Some(p) => std::fs::write(&p, content)
                    .with_context(|| format!("cannot write {}", p.display()))?,
                None => std::io::stdout().write_all(&content)?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

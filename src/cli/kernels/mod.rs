//! Kernel commands: `run`, `ps`, `inspect`, `logs`, `exec`, `stop`, `rm`, `suspend`,
//! `resume`, `release`, `kill`, `files`. All go through the manager, which forwards to the
//! agent holding the kernel.

mod control;
mod io;
mod list;
mod run;

pub use control::{control, ControlArgs};
pub use io::{exec, files, logs, ExecArgs, FilesArgs, FilesOp, LogsArgs};
pub use list::{inspect, kernel_json, ps, state_name, IdArgs, PsArgs};
pub use run::{parse_array, parse_port, progress_line, run, RunArgs};

use std::time::Duration;

use anyhow::Context;

use super::common::ManagerArgs;
use crate::wire::pb::{KernelInfo, KernelRef, ListKernelsRequest};

/// Kernel operations may wait for a container to start or a grace period to pass.
pub(super) const LONG: Duration = Duration::from_secs(3600);

pub(super) fn pairs(
    flag: &str,
    items: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("{flag} `{kv}`: expected KEY=VALUE"))
        })
        .collect()
}

pub(super) async fn list_kernels(target: &ManagerArgs) -> anyhow::Result<Vec<KernelInfo>> {
    target
        .call(|mut c| async move {
            c.list_kernels(ListKernelsRequest {})
                .await
                .map(|r| r.into_inner().kernels)
        })
        .await
}

pub(super) async fn get(target: &ManagerArgs, id: &str) -> anyhow::Result<KernelInfo> {
    let id = id.to_string();
    target
        .call(|mut c| {
            let id = id.clone();
            async move {
                c.get_kernel(KernelRef { kernel_id: id })
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
}

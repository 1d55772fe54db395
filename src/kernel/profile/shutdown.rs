//! A profile kernel's shutdown command (`DOCKER_SHUTDOWN_CMD`, default `/bin/true`): on
//! `stop`, it runs inside the container first, as the kernel's user, through the runtime's
//! exec; the kernel gets `container/shutdown_grace` (default 30 s) to end by itself, then
//! the usual stop follows (SIGTERM, the grace period, SIGKILL).
//!
//! The command line runs under `/bin/sh -c` with its output sent to the container's own
//! stdout and stderr (`/proc/1/fd/1`, `/proc/1/fd/2`), so it is in the kernel's logs, in
//! order with the rest. An image without `/bin/sh` cannot run it: the stop goes on at once
//! and the kernel's events say why.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use crate::kernel::record::Record;
use crate::kernel::state::KernelState;
use crate::kernel::supervisor::Supervisor;
use crate::runtime::{Exec, Handle, Runtime};

/// The argv that runs `line` with its output in the kernel's logs.
pub fn shell_argv(line: &str) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("{{ {line}\n}} >/proc/1/fd/1 2>/proc/1/fd/2"),
    ]
}

impl Supervisor {
    /// Runs the kernel's shutdown command (if it has a profile) and waits up to `grace` for
    /// the kernel to end; returns whether it ended.
    pub(crate) async fn run_shutdown_command(
        &self,
        rec: &Record,
        handle: &Handle,
        rt: &dyn Runtime,
        grace: Duration,
        state: &mut watch::Receiver<KernelState>,
    ) -> bool {
        let Some(profile) = &rec.spec.profile else {
            return false;
        };
        if !rt.capabilities().exec {
            return false;
        }
        let req = Exec {
            command: shell_argv(&profile.shutdown_command),
            env: Default::default(),
            working_dir: String::new(),
            tty: false,
            stdin: false,
        };
        match rt.exec(rec, handle, req).await {
            Ok(out) => {
                tracing::info!(kernel_id = %rec.id, "shutdown command started");
                let id = rec.id.clone();
                // Its output went to the container's own; drain what the exec still says
                // (a shell's complaint) into the kernel's events.
                let me = self.clone();
                self.spawn(async move {
                    let mut said = Vec::new();
                    let mut output = out.output;
                    while let Some(Ok(c)) = output.next().await {
                        if said.len() < 1024 {
                            said.extend_from_slice(&c.data);
                        }
                    }
                    let code = out.exit_code.await;
                    if code.is_some_and(|c| c != 0) {
                        let text = String::from_utf8_lossy(&said).trim().to_string();
                        me.note(
                            &id,
                            format!(
                                "DOCKER_SHUTDOWN_CMD exited with code {}{}",
                                code.unwrap_or(-1),
                                if text.is_empty() {
                                    String::new()
                                } else {
                                    format!(": {text}")
                                }
                            ),
                            None,
                        );
                    }
                });
            }
            Err(e) => {
                self.note(
                    &rec.id,
                    format!("DOCKER_SHUTDOWN_CMD could not run ({e}); stopping the kernel now"),
                    None,
                );
                return false;
            }
        }
        tokio::time::timeout(
            grace,
            state.wait_for(|s| s.is_final() || *s == KernelState::Uploading),
        )
        .await
        .is_ok()
    }
}

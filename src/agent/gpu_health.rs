//! Wiring of GPU health into the agent: the owned blocking thread that waits on NVML's
//! event set ([`crate::host::gpu::health::watch_events`], started once the settings are
//! loaded, with `gpu/nvml_library`), and the task that hands each GPU newly marked
//! unhealthy to the supervisor (the kernel holding it gets an event, or is stopped by
//! `gpu/unhealthy_policy`). Both stop on shutdown; the thread within half a second.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::config::ClusterConfig;
use crate::host::gpu::health::{watch_events, GpuHealth, Marked};
use crate::kernel::supervisor::Supervisor;
use crate::util::shutdown::Tasks;

/// Marks waiting for the supervisor (a GPU is marked once until reset: a few at most).
const QUEUE: usize = 64;

pub fn spawn(
    tasks: &Tasks,
    health: GpuHealth,
    config: watch::Receiver<Arc<ClusterConfig>>,
    mut loaded: watch::Receiver<bool>,
    kernels: Supervisor,
    span: tracing::Span,
) {
    let (tx, mut rx) = mpsc::channel::<Marked>(QUEUE);
    let stop = tasks.token();
    tasks.spawn(
        "gpu-health-events",
        async move {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = loaded.wait_for(|l| *l) => if r.is_err() { return },
            }
            let library = config.borrow().nvml_library.clone();
            let flag = Arc::new(AtomicBool::new(false));
            let thread_flag = flag.clone();
            let span = tracing::Span::current();
            let mut thread = tokio::task::spawn_blocking(move || {
                span.in_scope(|| watch_events(library, health, tx, thread_flag))
            });
            tokio::select! {
                _ = stop.cancelled() => {
                    flag.store(true, Ordering::Relaxed);
                    let _ = thread.await;
                }
                _ = &mut thread => {}
            }
        }
        .instrument(span.clone()),
    );
    let stop = tasks.token();
    tasks.spawn(
        "gpu-health-kernels",
        async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    m = rx.recv() => match m {
                        Some(m) => kernels.gpu_unhealthy(&m.uuid, &m.reason).await,
                        None => return,
                    },
                }
            }
        }
        .instrument(span),
    );
}

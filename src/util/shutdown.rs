//! Graceful shutdown: one token every long-lived task watches, and a tracker that owns the
//! tasks so that shutdown can wait for them.
//!
//! Tasks are spawned through [`Tasks::spawn`] with a name; on shutdown the token is
//! cancelled and [`Tasks::wait`] returns when every task has finished.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The set of long-lived tasks of one daemon (agent or manager) and their stop signal.
#[derive(Clone, Default)]
pub struct Tasks {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// The token tasks select on to learn that they must stop.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Spawns a named task that is stopped and awaited on shutdown.
    pub fn spawn<F>(&self, name: &'static str, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tracing::debug!(task = name, "task started");
        self.tracker.spawn(async move {
            fut.await;
            tracing::debug!(task = name, "task finished");
        });
    }

    /// Spawns a named task that is dropped when shutdown begins (work that has no point
    /// once the daemon stops, like a pull or a watch), instead of being awaited.
    pub fn spawn_until_stopped<F>(&self, name: &'static str, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = self.token();
        self.spawn(name, async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = fut => {}
            }
        });
    }

    /// Asks every task to stop.
    pub fn shutdown(&self) {
        self.token.cancel();
    }

    /// Waits until every spawned task has finished.
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

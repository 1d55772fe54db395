//! A Unix-socket relay to the Docker engine that a benchmark can cut and restore: the
//! agent under test is pointed at it (`DOCKER_HOST`), and cutting it closes every
//! connection exactly as an engine restart does, without disturbing anything else that
//! uses the engine.

use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

pub struct Relay {
    path: PathBuf,
    engine: PathBuf,
    task: Option<JoinHandle<()>>,
}

impl Relay {
    /// Relays `path` to the engine this process uses (`DOCKER_HOST` when it is a
    /// `unix://` address, else `/var/run/docker.sock`).
    pub fn start(path: &Path) -> std::io::Result<Self> {
        let engine = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
        let mut r = Self {
            path: path.to_path_buf(),
            engine,
            task: None,
        };
        r.restore()?;
        Ok(r)
    }

    /// `unix://…` of the relay, for the agent's `DOCKER_HOST`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Closes the socket and every connection through it.
    pub async fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
        let _ = std::fs::remove_file(&self.path);
    }

    /// Listens again (after [`cut`](Self::cut)).
    pub fn restore(&mut self) -> std::io::Result<()> {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path)?;
        let engine = self.engine.clone();
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                while conns.try_join_next().is_some() {}
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let engine = engine.clone();
                conns.spawn(async move {
                    if let Ok(mut e) = UnixStream::connect(&engine).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut e).await;
                    }
                });
            }
            // Aborting the task drops `conns`, which aborts every open connection.
        }));
        Ok(())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

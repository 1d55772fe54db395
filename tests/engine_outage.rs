//! The Docker engine going away and coming back, as the agent sees it. The agent talks to
//! the real engine through a Unix-socket relay owned by the test (`DOCKER_HOST`); closing
//! the relay cuts every connection exactly as an engine restart does, without disturbing
//! the other tests that share the engine. While cut, kernel operations answer UNAVAILABLE
//! with the engine's message and the agent keeps serving; when the relay is back the agent
//! reconnects by itself and resynchronises: a kernel that exited meanwhile is reported with
//! its real exit code.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{wait_for, Cluster, KernelCluster, TEST_IMAGE};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

const T: Duration = Duration::from_secs(40);

/// Relays `path` to `/var/run/docker.sock` until dropped or cut.
struct Relay {
    path: PathBuf,
    task: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(path: &Path) -> Self {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind relay socket");
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                conns.spawn(async move {
                    if let Ok(mut engine) = UnixStream::connect("/var/run/docker.sock").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
            }
            // Dropping the task drops `conns`, which aborts every open connection.
        });
        Self {
            path: path.to_path_buf(),
            task: Some(task),
        }
    }

    /// Closes the socket and every connection through it.
    async fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
        let _ = std::fs::remove_file(&self.path);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_going_away_makes_operations_unavailable_and_its_return_resyncs() {
    let c = Cluster::start("engine").await;
    c.cli_ok(&["config", "set", "docker/cache_usage", "cache_first"]);
    let socket = c.dir.path().join("docker.sock");
    let mut relay = Relay::start(&socket);
    let manager = c.manager("m1", &[]);
    let host = format!("unix://{}", socket.display());
    let agent = c.agent_on_env(
        "a1",
        c.dir.path().join("scratch-a1"),
        &[("DOCKER_HOST", &host)],
    );
    wait_for(T, "agent a1 ALIVE", || async {
        c.node("a1").filter(|n| n["state"] == "ALIVE").map(|_| ())
    })
    .await;
    let k = KernelCluster { agent, manager, c };
    let stays = k.run_detached(&[TEST_IMAGE, "sleep", "300"]);
    let exits = k.run_detached(&[TEST_IMAGE, "sh", "-c", "sleep 6; exit 4"]);

    relay.cut().await;
    // Kernel operations that need the engine: UNAVAILABLE, with the engine's words.
    let out = k.c.cli(&["stop", "-t", "1", &stays]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(err.contains("Docker engine unreachable"), "{err}");
    let out = k.c.cli(&["exec", &stays, "true"]);
    assert!(!out.status.success());
    // The agent keeps serving what it knows.
    let ps = k.ps();
    assert_eq!(ps.len(), 2, "{ps:?}");
    assert_eq!(k.inspect(&stays)["state"], "RUNNING");
    // `exits` ends while the engine is out of reach.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        k.inspect(&exits)["state"],
        "RUNNING",
        "nothing could tell the agent yet"
    );

    let _relay = Relay::start(&socket);
    let v = k.wait_state(&exits, "FAILED", T).await;
    assert_eq!(v["exit_code"], 4, "{v}");
    wait_for(T, "resync logged", || async {
        k.agent
            .log()
            .contains("Docker engine reachable again")
            .then_some(())
    })
    .await;
    // Operations work again.
    k.c.cli_ok(&["stop", "-t", "1", &stays]);
    k.c.cli_ok(&["rm", &stays, &exits]);
}

//! The shared test harness: a real etcd per test (Debian's `etcd-server`, on free loopback
//! ports with a temp data dir), the real `deckhand` binary started as child processes, and
//! the fake NVML library built from `tests/fixtures/fake_nvml.c`; `vast/` is the local
//! stand-in for the Vast.ai API (Vast.ai cannot be reached from here) and `s3.rs` a real
//! S3-compatible server (moto).
//!
//! Everything a test starts is killed and every directory removed when its guard drops,
//! also when the test fails. Each test gets its own namespace, etcd and ports, so tests run
//! in parallel.
#![allow(dead_code)]

mod cluster;
mod docker;
mod etcd;
mod host_listener;
mod kernel_cluster;
pub mod observe;
pub mod pki;
mod registry;
pub mod s3;
pub mod supervisord;
pub mod swarm;
pub mod vast;

// Every test binary compiles the harness and uses part of it.
#[allow(unused_imports)]
pub use cluster::*;
#[allow(unused_imports)]
pub use docker::*;
#[allow(unused_imports)]
pub use etcd::*;
#[allow(unused_imports)]
pub use host_listener::*;
#[allow(unused_imports)]
pub use kernel_cluster::*;
#[allow(unused_imports)]
pub use registry::*;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A free loopback port for a server a test starts. Taken below the kernel's ephemeral
/// range (32768+), so no outgoing connection can grab it between this check and the server's
/// bind; each test process walks its own stretch of 10000-30000, and every port handed out
/// is bound once to check it is free.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() % 200) * 100;
    for _ in 0..20_000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (10_000 + (start + offset) % 20_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// A namespace no other test uses.
pub fn namespace(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t-{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `f` every 50 ms until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Compiles `tests/fixtures/fake_nvml.c` into `dir/libfake_nvml.so`.
pub fn build_fake_nvml(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake_nvml.c");
    let out = dir.join("libfake_nvml.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("cc");
    assert!(status.success(), "building the fake NVML library failed");
    out
}

/// `Some(())` when `deckhand nodes --json` output `out` shows agent `id` ALIVE.
pub fn alive_in(out: &Output, id: &str) -> Option<()> {
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
        .ok()?
        .into_iter()
        .find(|n| n["id"] == id)
        .filter(|n| n["state"] == "ALIVE")
        .map(|_| ())
}

/// Counts lines of `log` containing `needle`.
pub fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

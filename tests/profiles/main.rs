//! Task profiles (Qarnot's Docker profiles) as a Qarnot user would notice them, against the
//! real agent, manager, CLI, etcd and Docker engine: each profile's network really is as
//! named, the image comes from DOCKER_SRV/REPO/TAG with the kernel's own registry login (a
//! real private registry), progress read from the output reaches 100 in `inspect`, the
//! shutdown command runs on stop before the kernel is made to end, and write-only secrets
//! are seen by the task only. Resources and results (S3) are in `tests/profile_resources.rs`,
//! SSH access in `tests/profile_ssh.rs`; malformed constants in `tests/bad_input/`.

#[path = "../common/mod.rs"]
mod common;

mod image_progress_stop;
mod networks_and_constants;

use std::time::Duration;

use common::{wait_for, HostListener, KernelCluster, Registry, TEST_IMAGE};
use futures::StreamExt;

const T: Duration = Duration::from_secs(60);

/// `deckhand run -d --profile PROFILE --constant K=V …` of the local test image, plus
/// `extra` flags; the output.
fn run(
    k: &KernelCluster,
    profile: &str,
    constants: &[(&str, &str)],
    extra: &[&str],
) -> std::process::Output {
    k.run_profile(&["--profile", profile], constants, extra)
}

fn run_ok(k: &KernelCluster, profile: &str, constants: &[(&str, &str)], extra: &[&str]) -> String {
    k.run_profile_ok(&["--profile", profile], constants, extra)
}

/// Every key and value under the test's namespace in etcd, as text.
async fn etcd_dump(k: &KernelCluster) -> String {
    let mut etcd = k.c.etcd_client().await;
    let prefix = format!("/deckhand/{}/", k.c.ns);
    let resp = etcd
        .get(
            prefix.as_str(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("etcd get");
    assert!(resp.count() > 0, "the namespace has keys");
    resp.kvs()
        .iter()
        .map(|kv| {
            format!(
                "{}={}\n",
                String::from_utf8_lossy(kv.key()),
                String::from_utf8_lossy(kv.value())
            )
        })
        .collect()
}

/// Lists the kernel's interfaces and GPUs and tries the host listener at its gateway.
const NET_SCRIPT: &str = r#"echo "interfaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')"; echo "gpus: [$NVIDIA_VISIBLE_DEVICES]"; gw=$(ip route | awk '/default/ {print $3}'); if printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 "${gw:-172.17.0.1}" "$PORT" | grep -q hello-from-host; then echo reached-host; else echo unreachable; fi"#;

/// A public key for the ssh profile (its kernel here is only looked at for its network).
const SOME_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAIMSpwW3FrrQMJ+foLHmkIUKXGvM7GEqdzQysTpne+U net-test";

/// The fake GPU the nvidia profiles get (CI has no GPU; config's fake_gpus stand in).
const FAKE_GPU: &str = "GPU-5e1f0c3a-1111-2222-3333-444455556666";

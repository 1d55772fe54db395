//! The machine's Docker engine as tests see it: the local test image, the containers and
//! networks of a namespace, tags a test makes and removes.

use super::*;

/// The local test image built by `scripts/deps.sh` (no image can be pulled here).
pub const TEST_IMAGE: &str = "deckhand-test/busybox:latest";

/// `docker rm -f` of every container labelled with namespace `ns`, then of its volumes and
/// networks.
pub fn remove_containers(ns: &str) {
    for id in containers(ns) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &id])
            .output();
    }
    let out = Command::new("docker")
        .args([
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=io.deckhand.namespace={ns}"),
        ])
        .output()
        .expect("docker volume ls");
    for v in String::from_utf8_lossy(&out.stdout).lines() {
        let _ = Command::new("docker").args(["volume", "rm", v]).output();
    }
    // By id: two networks may share a name (see `Docker::remove_network`).
    let out = Command::new("docker")
        .args([
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=io.deckhand.namespace={ns}"),
        ])
        .output()
        .expect("docker network ls");
    for n in String::from_utf8_lossy(&out.stdout).lines() {
        let _ = Command::new("docker").args(["network", "rm", n]).output();
    }
}

/// Names of the networks (cluster kernels') labelled with namespace `ns`.
pub fn networks(ns: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "network",
            "ls",
            "--format",
            "{{.Name}}",
            "--filter",
            &format!("label=io.deckhand.namespace={ns}"),
        ])
        .output()
        .expect("docker network ls");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Ids of the containers (running or not) labelled with namespace `ns`.
pub fn containers(ns: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=io.deckhand.namespace={ns}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// `docker inspect -f FORMAT` of one container.
pub fn docker_inspect(name: &str, format: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", format, name])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `docker ARGS`, panicking with its stderr if it fails; returns stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes one local tag, also one a container uses (the image goes with its last tag).
pub fn untag(reference: &str) {
    let _ = Command::new("docker")
        .args(["rmi", "-f", reference])
        .output();
}

/// Local image tags a test made, removed (forcibly: a container may still use them) when
/// dropped — also when the test fails.
pub struct Tags(pub Vec<String>);

impl Drop for Tags {
    fn drop(&mut self) {
        for t in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", t]).output();
        }
    }
}

/// The id of local image `reference`, empty if absent.
pub fn image_id(reference: &str) -> String {
    let out = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Id}}", reference])
        .output()
        .expect("docker image inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A variant of the test image with its own image id (a label differs), tagged
/// `deckhand-test/variant:<tag>`; `extra` adds Dockerfile lines (like a big layer). The tag
/// is removed by [`untag`] when the test is done.
pub fn build_variant(tag: &str, extra: &str) -> String {
    let reference = format!("deckhand-test/variant:{tag}");
    let dockerfile = format!("FROM {TEST_IMAGE}\nLABEL io.deckhand.test.variant={tag}\n{extra}\n");
    let mut child = Command::new("docker")
        .args(["build", "-q", "-t", &reference, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker build");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(dockerfile.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    reference
}

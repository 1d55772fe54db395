//! SSH into a `docker-network-ssh` kernel with the real OpenSSH client (Debian's
//! `openssh-client`), against the real agent, manager, CLI, etcd and Docker engine: the
//! kernel's `DOCKER_SSH` key opens a shell (with a terminal) and runs commands as the
//! kernel's user inside its container — whose image has no SSH server; another key, a
//! password and port forwarding are refused; after `rm` the port is closed.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{wait_for, KernelCluster};

const T: Duration = Duration::from_secs(60);

/// An ed25519 key pair made by `ssh-keygen` in `dir`; the private key's path.
fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .output()
        .expect("ssh-keygen (Debian's openssh-client; scripts/deps.sh installs it)");
    assert!(out.status.success(), "{out:?}");
    path
}

/// `ssh -p PORT -i KEY work@127.0.0.1 ARGS…` with no known-hosts file and no prompts.
fn ssh(port: u16, key: &Path, extra: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new("ssh");
    c.args([
        "-p",
        &port.to_string(),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "LogLevel=ERROR",
        "-i",
    ])
    .arg(key)
    .args(extra)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().expect("ssh (Debian's openssh-client)");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write to ssh");
    }
    drop(input);
    child.wait_with_output().expect("ssh")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernels_key_opens_a_shell_inside_it_and_nothing_else_gets_in() {
    let keys = tempfile::tempdir().unwrap();
    let right = keygen(keys.path(), "right");
    let wrong = keygen(keys.path(), "wrong");
    let public = std::fs::read_to_string(right.with_extension("pub")).unwrap();
    let k = KernelCluster::start("profile-ssh").await;
    let ssh_key = format!("DOCKER_SSH={}", public.trim());
    let id = k.run_detached(&[
        "--profile",
        "docker-network-ssh",
        "--constant",
        "DOCKER_REPO=deckhand-test/busybox",
        "--constant",
        "DOCKER_TAG=latest",
        "--constant",
        "DOCKER_CMD=sleep 300",
        "--constant",
        &ssh_key,
    ]);
    let info = k.wait_state(&id, "RUNNING", T).await;
    let port = info["ssh_port"].as_u64().expect("ssh_port in inspect") as u16;
    assert!((30000..=31000).contains(&port), "{info}");
    assert!(k.c.cli_ok(&["ps"]).contains(&format!("{port}->ssh")));

    // A command, as the kernel's user, in the kernel's container (its id is in its env).
    let out = wait_for(T, "ssh to answer", || async {
        let out = ssh(
            port,
            &right,
            &[
                "work@127.0.0.1",
                "id -u; echo in $DECKHAND_KERNEL_ID; exit 3",
            ],
            None,
        );
        (out.status.code() != Some(255)).then_some(out)
    })
    .await;
    let said = text(&out);
    assert_eq!(
        out.status.code(),
        Some(3),
        "the command's exit code: {said}"
    );
    assert!(said.contains("1000\n"), "{said}");
    assert!(said.contains(&format!("in {id}")), "{said}");

    // An interactive shell with a terminal (-tt): what is typed runs there.
    let out = ssh(
        port,
        &right,
        &["-tt", "work@127.0.0.1"],
        Some("echo sum=$((6*7)); tty; exit\n"),
    );
    let said = text(&out);
    assert!(said.contains("sum=42"), "{said}");
    assert!(said.contains("/dev/pts/"), "a terminal: {said}");

    // Another key, another user, a password, and port forwarding are refused.
    let out = ssh(port, &wrong, &["work@127.0.0.1", "true"], None);
    assert_eq!(out.status.code(), Some(255), "{}", text(&out));
    assert!(text(&out).contains("Permission denied"), "{}", text(&out));
    let out = ssh(port, &right, &["root@127.0.0.1", "true"], None);
    assert_eq!(out.status.code(), Some(255), "{}", text(&out));
    let out = ssh(
        port,
        &right,
        &[
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
            "work@127.0.0.1",
            "true",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(255), "{}", text(&out));
    let out = ssh(
        port,
        &right,
        &[
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            "0:127.0.0.1:9",
            "work@127.0.0.1",
            "echo forwarded",
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(255),
        "remote forwarding refused: {}",
        text(&out)
    );

    // Removed: the port is closed.
    k.c.cli_ok(&["rm", "-f", &id]);
    wait_for(T, "the SSH port to close", || async {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    })
    .await;
    assert!(!k.agent.log().contains("BEGIN OPENSSH PRIVATE KEY"));
}

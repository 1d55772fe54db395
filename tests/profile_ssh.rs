//! SSH into a `docker-network-ssh` kernel with the real OpenSSH client (Debian's
//! `openssh-client`), against the real agent, manager, CLI, etcd and Docker engine: the
//! kernel's `DOCKER_SSH` key opens a shell (with a terminal) and runs commands as the
//! kernel's user inside its container — whose image has no SSH server; another key, another
//! user, a password, agent forwarding and port forwarding (remote and local) are refused;
//! after `rm` the port is closed.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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

/// `ssh -p PORT -i KEY ARGS…` with no known-hosts file and no prompts, not started.
fn ssh_command(port: u16, key: &Path, extra: &[&str]) -> Command {
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
    .env_remove("SSH_AUTH_SOCK")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    c
}

/// [`ssh_command`] run to its end, `stdin` written to it.
fn ssh(port: u16, key: &Path, extra: &[&str], stdin: Option<&str>) -> Output {
    let mut child = ssh_command(port, key, extra)
        .stdin(Stdio::piped())
        .spawn()
        .expect("ssh (Debian's openssh-client)");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write to ssh");
    }
    drop(input);
    child.wait_with_output().expect("ssh")
}

/// An `ssh-agent` holding one key, on a socket in `dir`; killed when dropped.
struct SshAgent {
    child: Child,
    socket: PathBuf,
}

impl SshAgent {
    fn start(dir: &Path, key: &Path) -> Self {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent (Debian's openssh-client)");
        let agent = Self { child, socket };
        let mut added = None;
        for _ in 0..100 {
            let out = Command::new("ssh-add")
                .arg(key)
                .env("SSH_AUTH_SOCK", &agent.socket)
                .output()
                .expect("ssh-add");
            if out.status.success() {
                added = Some(());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        added.expect("ssh-add to the test's ssh-agent");
        agent
    }

    /// [`ssh`] with this agent in the client's environment.
    fn ssh(&self, port: u16, key: &Path, extra: &[&str]) -> Output {
        let mut c = ssh_command(port, key, extra);
        c.env("SSH_AUTH_SOCK", &self.socket).stdin(Stdio::null());
        c.output().expect("ssh")
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

    // Agent forwarding: the client asks (`-A`, with a running ssh-agent holding a key), the
    // agent refuses, and the session has no forwarded agent socket.
    let agent = SshAgent::start(keys.path(), &right);
    let out = agent.ssh(
        port,
        &right,
        &["-A", "work@127.0.0.1", "echo \"agent=[$SSH_AUTH_SOCK]\""],
    );
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("agent=[]"), "{said}");
    assert!(
        k.agent.log().contains("SSH agent forwarding refused"),
        "the agent says it refused the forwarding"
    );
    // Local forwarding (`-W`, a direct-tcpip channel) is refused too.
    let rpc = format!("127.0.0.1:{}", k.agent.port);
    let out = ssh(port, &right, &["-W", &rpc, "work@127.0.0.1"], None);
    assert_eq!(out.status.code(), Some(255), "{}", text(&out));

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_ssh_profile_opens_the_master() {
    let keys = tempfile::tempdir().unwrap();
    let right = keygen(keys.path(), "right");
    let public = std::fs::read_to_string(right.with_extension("pub")).unwrap();
    // Its own part of the port range: the other test's agent, running at the same time on
    // this host, takes ports from the start of the default range.
    let k =
        KernelCluster::start_with("cluster-ssh", &[("container/port_range", "30700-30799")]).await;
    let ssh_key = format!("DOCKER_SSH={}", public.trim());
    let id = k.run_detached(&[
        "--profile",
        "docker-cluster-ssh",
        "--instances",
        "2",
        "--stop-timeout",
        "1s",
        "--constant",
        "DOCKER_REPO=deckhand-test/busybox",
        "--constant",
        "DOCKER_CMD_MASTER=sleep 300",
        "--constant",
        "DOCKER_CMD_WORKER=sleep 300",
        "--constant",
        &ssh_key,
    ]);
    let info = k.wait_state(&id, "RUNNING", T).await;
    let port = info["ssh_port"].as_u64().expect("ssh_port in inspect") as u16;
    assert!((30700..=30799).contains(&port), "{info}");
    let out = wait_for(T, "ssh to answer", || async {
        let out = ssh(
            port,
            &right,
            &[
                "work@127.0.0.1",
                "echo on $(hostname) instance $INSTANCE_ID",
            ],
            None,
        );
        (out.status.code() != Some(255)).then_some(out)
    })
    .await;
    assert!(
        text(&out).contains("on master instance 0"),
        "{}",
        text(&out)
    );
    k.c.cli_ok(&["rm", "-f", &id]);
    wait_for(T, "the ssh port to close", || async {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    })
    .await;
}

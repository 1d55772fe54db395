//! Two Docker engines a test owns, in one swarm: the hosts of a cluster kernel spanning
//! agents. Each `dockerd` runs in a network namespace of its own (entered with `nsenter
//! --net`: `ip netns exec` remounts `/sys` and hides the cgroup mounts dockerd needs), joined
//! to the other by a veth pair, with its own config file, data root, exec root, socket and
//! `vfs` storage; engine A inits the swarm (a manager), engine B joins it (a worker). The
//! machine's own engine is never touched: `docker swarm init` there would make it a swarm
//! manager for every other test and user. The local test image is loaded into both (nothing
//! can be pulled here). Everything is removed on drop, also when the test fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{wait_for, TEST_IMAGE};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Engine {
    /// `unix://…`: what `DOCKER_HOST` and `docker -H` take.
    pub host: String,
    netns: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl Engine {
    /// `docker -H <this engine> ARGS`, its stdout (trimmed); panics on failure.
    pub fn docker(&self, args: &[&str]) -> String {
        let out = Command::new("docker")
            .args(["-H", &self.host])
            .args(args)
            .output()
            .expect("docker CLI");
        assert!(
            out.status.success(),
            "docker -H {} {args:?}: {}",
            self.host,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The names of the containers of namespace `ns` on this engine (running or not).
    pub fn containers(&self, ns: &str) -> Vec<String> {
        let filter = format!("label=io.deckhand.namespace={ns}");
        self.docker(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn running(&self, name: &str) -> bool {
        self.docker(&["inspect", "-f", "{{.State.Running}}", name]) == "true"
    }

    pub fn networks(&self, ns: &str) -> Vec<String> {
        let filter = format!("label=io.deckhand.namespace={ns}");
        self.docker(&[
            "network",
            "ls",
            "--filter",
            &filter,
            "--format",
            "{{.Name}}",
        ])
        .lines()
        .map(str::to_string)
        .collect()
    }

    fn stop(&mut self) {
        // Containers first (killed at once): an engine that is stopped waits out each
        // container's stop timeout, and one killed meanwhile leaves them running.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker -H {h} ps -aq | xargs -r docker -H {h} rm -f",
                h = self.host
            ))
            .output();
        let _ = Command::new("docker")
            .args(["-H", &self.host, "swarm", "leave", "--force"])
            .output();
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            for _ in 0..300 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // The containerd it started, any container shim of its, and whatever it left
        // mounted.
        for pattern in [
            format!("containerd --config {}", self.dir.display()),
            format!("containerd-shim.* -address {}", self.dir.display()),
        ] {
            let _ = Command::new("pkill").args(["-f", &pattern]).status();
        }
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(self.dir.to_str().unwrap_or("/nonexistent")))
            .collect();
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in under {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Swarm {
    /// The swarm's manager.
    pub a: Engine,
    /// A worker of it.
    pub b: Engine,
    base: PathBuf,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Swarm {
    pub async fn start() -> Self {
        let n = std::process::id() % 10_000 * 10 + NEXT.fetch_add(1, Ordering::SeqCst) % 10;
        let subnet = format!("10.{}.{}", 100 + n % 100, n / 100 % 250);
        let base = PathBuf::from(format!("/tmp/dhsw{n}"));
        let _ = std::fs::remove_dir_all(&base);
        let mut engines = Vec::new();
        for (side, last) in [("a", 1), ("b", 2)] {
            let dir = base.join(side);
            std::fs::create_dir_all(&dir).expect("engine dir");
            let netns = format!("dhsw{n}{side}");
            let _ = Command::new("ip").args(["netns", "del", &netns]).status();
            ip(&["netns", "add", &netns]);
            ip(&["-n", &netns, "link", "set", "lo", "up"]);
            engines.push((side, last, dir, netns));
        }
        let (va, vb) = (format!("dv{n}a"), format!("dv{n}b"));
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        for ((side, last, _, netns), veth) in engines.iter().zip([&va, &vb]) {
            let _ = side;
            ip(&["link", "set", veth, "netns", netns]);
            ip(&[
                "-n",
                netns,
                "addr",
                "add",
                &format!("{subnet}.{last}/24"),
                "dev",
                veth,
            ]);
            ip(&["-n", netns, "link", "set", veth, "up"]);
        }
        let mut started = Vec::new();
        for (_, _, dir, netns) in engines {
            std::fs::write(dir.join("daemon.json"), "{}").expect("daemon.json");
            let log = std::fs::File::create(dir.join("dockerd.log")).expect("dockerd log");
            let host = format!("unix://{}/sock", dir.display());
            let child = Command::new("nsenter")
                .arg(format!("--net=/var/run/netns/{netns}"))
                .arg("dockerd")
                .arg("--config-file")
                .arg(dir.join("daemon.json"))
                .arg("--data-root")
                .arg(dir.join("data"))
                .arg("--exec-root")
                .arg(dir.join("exec"))
                .arg("--pidfile")
                .arg(dir.join("pid"))
                .args(["-H", &host])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start dockerd under nsenter");
            started.push(Engine {
                host,
                netns,
                dir,
                child: Some(child),
            });
        }
        let b = started.pop().expect("engine b");
        let a = started.pop().expect("engine a");
        let swarm = Self { a, b, base };
        for e in [&swarm.a, &swarm.b] {
            let log = e.dir.join("dockerd.log");
            wait_for(
                Duration::from_secs(60),
                "a test engine answering",
                || async {
                    let ok = Command::new("docker")
                        .args(["-H", &e.host, "info"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                    if !ok {
                        if let Ok(l) = std::fs::read_to_string(&log) {
                            if l.contains("level=fatal") {
                                panic!("dockerd {} stopped:\n{l}", e.host);
                            }
                        }
                    }
                    ok.then_some(())
                },
            )
            .await;
            let load = format!("docker save {TEST_IMAGE} | docker -H {} load", e.host);
            let out = Command::new("sh").args(["-c", &load]).output().expect("sh");
            assert!(out.status.success(), "{load}: {out:?}");
        }
        let addr = format!("{subnet}.1");
        swarm
            .a
            .docker(&["swarm", "init", "--advertise-addr", &addr]);
        let token = swarm.a.docker(&["swarm", "join-token", "-q", "worker"]);
        swarm
            .b
            .docker(&["swarm", "join", "--token", &token, &format!("{addr}:2377")]);
        swarm
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        self.b.stop();
        self.a.stop();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

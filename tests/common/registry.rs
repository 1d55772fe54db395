//! A real private registry: Debian's `docker-registry`.

use super::*;

/// A real private registry: Debian's `docker-registry` on a free loopback port (Docker
/// trusts loopback registries over plain HTTP) with htpasswd auth and its own storage dir.
/// Images a test pushes are tagged `<addr>/<repo>`; every such local tag is removed, and
/// the registry stopped, when the guard drops.
pub struct Registry {
    child: Option<Child>,
    dir: TempDir,
    pub port: u16,
    pub user: String,
    pub password: String,
}

impl Registry {
    pub async fn start(user: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd (apache2-utils)");
        assert!(out.status.success(), "htpasswd failed");
        std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
        let mut r = Self {
            child: None,
            dir,
            port: free_port(),
            user: user.into(),
            password: password.into(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {root}/storage\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: deckhand-test\n    path: {root}/htpasswd\n",
            root = r.dir.path().display(),
            port = r.port
        );
        std::fs::write(r.dir.path().join("config.yml"), config).unwrap();
        r.launch().await;
        // The push client logs in with its own config dir, not the user's.
        let login = Command::new("docker")
            .args(["--config"])
            .arg(r.dir.path().join("client"))
            .args(["login", &r.addr(), "-u", user, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(password.as_bytes())?;
                c.wait_with_output()
            })
            .expect("docker login");
        assert!(
            login.status.success(),
            "docker login: {}",
            String::from_utf8_lossy(&login.stderr)
        );
        r
    }

    async fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("registry.log"))
            .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (Debian package docker-registry)");
        self.child = Some(child);
        let url = format!("127.0.0.1:{}", self.port);
        wait_for(Duration::from_secs(20), "registry up", || async {
            std::net::TcpStream::connect(&url).ok().map(|_| ())
        })
        .await;
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same storage.
    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pulls of `repo` the registry answered: one `HEAD /v2/<repo>/manifests/<tag>` each.
    pub fn pulls(&self, repo: &str) -> usize {
        let needle = format!("\"HEAD /v2/{repo}/manifests/");
        self.log()
            .lines()
            .filter(|l| l.contains(&needle) && l.contains("HTTP/1.1\" 200"))
            .count()
    }

    /// Tags local image `local` as `<addr>/<repo>`, pushes it, and returns the full
    /// reference. With `keep_local` false the local tag is removed again, so the next use
    /// must pull.
    pub fn push(&self, local: &str, repo: &str, keep_local: bool) -> String {
        let reference = format!("{}/{repo}", self.addr());
        docker_ok(&["tag", local, &reference]);
        let out = Command::new("docker")
            .arg("--config")
            .arg(self.dir.path().join("client"))
            .args(["push", &reference])
            .output()
            .expect("docker push");
        assert!(
            out.status.success(),
            "docker push {reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !keep_local {
            untag(&reference);
        }
        reference
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
        // Every local tag on this registry (pushed or pulled by a kernel).
        let out = Command::new("docker")
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .output()
            .expect("docker images");
        let prefix = format!("{}/", self.addr());
        for image in String::from_utf8_lossy(&out.stdout).lines() {
            if image.starts_with(&prefix) {
                untag(image);
            }
        }
    }
}

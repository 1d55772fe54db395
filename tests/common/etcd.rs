//! A real etcd server per test (Debian's `etcd-server`) on free loopback ports with a
//! temp data dir.

use super::*;

/// A real etcd server on loopback.
pub struct Etcd {
    child: Option<Child>,
    dir: TempDir,
    pub port: u16,
    peer_port: u16,
    /// Extra etcd flags (TLS files, …).
    extra: Vec<String>,
    /// Set when etcd serves clients over TLS: how the harness itself connects.
    tls: Option<etcd_client::TlsOptions>,
}

impl Etcd {
    pub async fn start() -> Self {
        Self::start_with(Vec::new(), None).await
    }

    /// etcd with `extra` flags; with `tls` it serves clients on https (`extra` names the
    /// certificate files) and the harness connects with those options.
    pub async fn start_with(extra: Vec<String>, tls: Option<etcd_client::TlsOptions>) -> Self {
        let mut etcd = Self {
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            peer_port: free_port(),
            extra,
            tls,
        };
        etcd.launch().await;
        etcd
    }

    fn connect_options(&self) -> Option<etcd_client::ConnectOptions> {
        self.tls
            .clone()
            .map(|t| etcd_client::ConnectOptions::new().with_tls(t))
    }

    /// etcd's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("etcd log");
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start etcd: install Debian's etcd-server (scripts/test.sh does)");
        self.child = Some(child);
        let addr = self.addr();
        let options = self.connect_options();
        wait_for(Duration::from_secs(20), "etcd to answer", || {
            let addr = addr.clone();
            let options = options.clone();
            async move {
                let mut c = etcd_client::Client::connect([addr], options).await.ok()?;
                c.status().await.ok().map(|_| ())
            }
        })
        .await;
    }

    /// Kills etcd (data kept).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again on the same ports; `wipe` starts from an empty data dir, as after
    /// losing the etcd cluster.
    pub async fn restart(&mut self, wipe: bool) {
        self.stop();
        if wipe {
            let _ = std::fs::remove_dir_all(self.dir.path().join("data"));
        }
        self.launch().await;
    }

    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.addr()], self.connect_options())
            .await
            .expect("etcd client")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

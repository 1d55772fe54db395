//! A real S3-compatible server per test: moto's `moto_server` (PyPI `moto[server]`, in
//! the venv `scripts/deps.sh` makes at `$DECKHAND_MOTO_VENV`, default
//! `~/.cache/deckhand/moto`) on a free loopback port.
//!
//! The server checks credentials, as S3 does: it starts with
//! `INITIAL_NO_AUTH_ACTION_COUNT=3`, and `tests/fixtures/s3_bootstrap.py` (boto3, moto's
//! own dependency) spends those three actions on an IAM user with an `s3:*` policy and its
//! access key. From then on a wrong key or secret is refused (`InvalidAccessKeyId`,
//! `SignatureDoesNotMatch`). Objects are read and written with `object_store` (its S3
//! client signs with SigV4). Dropping the guard kills the server; its state lives only
//! in its memory.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tempfile::TempDir;

use super::{free_port, wait_for};

/// The region the server and its clients use.
pub const S3_REGION: &str = "us-east-1";

/// The moto venv: `$DECKHAND_MOTO_VENV`, else `~/.cache/deckhand/moto`.
pub fn moto_venv() -> PathBuf {
    if let Some(dir) = std::env::var_os("DECKHAND_MOTO_VENV") {
        return dir.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/deckhand/moto")
}

/// A running moto server with an access key allowed everything on S3.
pub struct S3Server {
    child: Option<Child>,
    dir: TempDir,
    pub port: u16,
    pub access_key: String,
    pub secret_key: String,
}

impl S3Server {
    /// Starts moto on a free loopback port and makes its credentials.
    pub async fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let venv = moto_venv();
        let bin = venv.join("bin/moto_server");
        assert!(
            bin.exists(),
            "{} missing: run scripts/deps.sh (it installs moto[server] into that venv)",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("moto.log")).expect("moto log");
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            .stdout(log.try_clone().expect("moto log"))
            .stderr(log)
            .spawn()
            .expect("start moto_server");
        let mut s = Self {
            child: Some(child),
            dir,
            port,
            access_key: String::new(),
            secret_key: String::new(),
        };
        let addr = format!("127.0.0.1:{port}");
        // A bare TCP connect: no request, so none of the three unauthenticated actions
        // is spent on it.
        wait_for(Duration::from_secs(30), "moto_server to listen", || async {
            std::net::TcpStream::connect(&addr).ok().map(|_| ())
        })
        .await;
        let creds = s.bootstrap(&["credentials"]);
        let mut words = creds.split_whitespace();
        s.access_key = words.next().unwrap_or_default().to_string();
        s.secret_key = words.next().unwrap_or_default().to_string();
        assert!(!s.secret_key.is_empty(), "moto credentials: {creds:?}");
        s
    }

    /// Runs `tests/fixtures/s3_bootstrap.py ENDPOINT ARGS` with the venv's Python.
    fn bootstrap(&self, args: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/s3_bootstrap.py");
        let out = Command::new(moto_venv().join("bin/python"))
            .arg(script)
            .arg(self.endpoint())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run the venv's python");
        assert!(
            out.status.success(),
            "s3_bootstrap.py {args:?}: {}\nmoto log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Freezes the server (SIGSTOP): connections are accepted by the kernel but nothing is
    /// answered until [`resume`](Self::resume), so a client's transfer stays in flight.
    /// Dropping the guard kills a frozen server too.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a [`pause`](Self::pause)d server answer again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("moto running").id().to_string();
        let out = Command::new("kill")
            .args([sig, &pid])
            .output()
            .expect("kill");
        assert!(out.status.success(), "kill {sig} {pid}: {out:?}");
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// moto's own log (one line per request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }

    /// Creates bucket `name` (names are 3-63 characters: lowercase, digits, `-`, `.`).
    pub fn create_bucket(&self, name: &str) {
        let (key, secret) = (self.access_key.clone(), self.secret_key.clone());
        self.bootstrap(&["bucket", name, &key, &secret]);
    }

    /// The standard AWS variables for a client of this server (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`,
    /// and object_store's `AWS_ENDPOINT` and `AWS_ALLOW_HTTP`).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_REGION", S3_REGION.into()),
            ("AWS_DEFAULT_REGION", S3_REGION.into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// An S3 client for `bucket` with this server's credentials (path-style URLs).
    pub fn store(&self, bucket: &str) -> AmazonS3 {
        self.store_with(bucket, &self.access_key, &self.secret_key)
    }

    /// An S3 client for `bucket` with the given credentials (to see wrong ones refused).
    pub fn store_with(&self, bucket: &str, key: &str, secret: &str) -> AmazonS3 {
        let _ = rustls::crypto::ring::default_provider().install_default();
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region(S3_REGION)
            .with_bucket_name(bucket)
            .with_access_key_id(key)
            .with_secret_access_key(secret)
            .build()
            .expect("S3 client")
    }

    /// Writes `body` to `bucket/key`.
    pub async fn put(&self, bucket: &str, key: &str, body: impl Into<Vec<u8>>) {
        self.store(bucket)
            .put(&ObjectPath::from(key), PutPayload::from(body.into()))
            .await
            .unwrap_or_else(|e| panic!("put s3://{bucket}/{key}: {e}"));
    }

    /// The object at `bucket/key`, None when it does not exist.
    pub async fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        match self.store(bucket).get(&ObjectPath::from(key)).await {
            Ok(r) => Some(r.bytes().await.expect("read S3 object").to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("get s3://{bucket}/{key}: {e}"),
        }
    }

    /// The object at `bucket/key` as text, None when it does not exist.
    pub async fn get_string(&self, bucket: &str, key: &str) -> Option<String> {
        let bytes = self.get(bucket, key).await?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Keys under `prefix` in `bucket`, sorted.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
        let mut keys: Vec<String> = self
            .store(bucket)
            .list(prefix.as_ref())
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("list s3://{bucket}: {e}"));
        keys.sort();
        keys
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A paused server dies of SIGKILL as well; SIGCONT first lets it go at once.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .output();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

//! Connecting to etcd: options (endpoints, auth, TLS), a connect that proves the cluster
//! answers, and the reconnect backoff (0.5 s doubling to 30 s, with jitter).
//!
//! Errors never carry the password: etcd's own messages do not contain it, and
//! [`EtcdOptions`]' `Debug` masks it.
//!
//! While backing off, a cheap TCP probe of the endpoints ends the wait early as soon as one
//! accepts connections again, so an agent is back within about a second of etcd's return
//! even after a long outage, without sending etcd more than one request per backoff step.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use etcd_client::{Client, ConnectOptions, TlsOptions};

use crate::util::secret::Secret;
use crate::util::tls::{append_sources, error_chain, TlsFiles};

/// How to reach etcd.
#[derive(Debug, Clone, Default)]
pub struct EtcdOptions {
    /// `HOST:PORT` or `http(s)://HOST:PORT`, one per cluster member.
    pub endpoints: Vec<String>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// `--etcd-ca`, `--etcd-cert`, `--etcd-key`; empty: plaintext (an `https://` endpoint
    /// is then verified against the system's roots).
    pub tls: TlsFiles,
}

impl EtcdOptions {
    /// Endpoints joined for messages.
    pub fn describe(&self) -> String {
        self.endpoints.join(",")
    }

    /// Checks that the endpoints fit the TLS settings: with TLS files, an endpoint must
    /// not be plain `http://`.
    pub fn validate(&self) -> Result<(), String> {
        if self.tls.is_enabled() {
            if let Some(ep) = self.endpoints.iter().find(|e| e.starts_with("http://")) {
                return Err(format!(
                    "--etcd-addr `{ep}` is plain http, but etcd TLS files are given \
                     (--etcd-ca/--etcd-cert); write https://HOST:PORT or HOST:PORT"
                ));
            }
        }
        Ok(())
    }

    fn tls_options(&self) -> Option<TlsOptions> {
        self.tls.client_config().or_else(|| {
            self.endpoints
                .iter()
                .any(|e| e.starts_with("https://"))
                .then(|| TlsOptions::new().with_native_roots())
        })
    }
}

/// Why a connection to etcd failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// etcd answered but refused the user name and password (or has no auth enabled).
    #[error("etcd refused user `{user}`: {reason}")]
    Auth { user: String, reason: String },
    /// etcd is unreachable, or the TLS handshake failed: worth retrying.
    #[error("{0}")]
    Other(String),
}

impl ConnectError {
    pub fn is_auth(&self) -> bool {
        matches!(self, ConnectError::Auth { .. })
    }
}

/// An etcd client error with its causes (tonic's transport errors say little at the top).
pub fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::TransportError(t) => error_chain(t),
        etcd_client::Error::GRpcStatus(s) => status_text(s),
        other => other.to_string(),
    }
}

fn status_text(s: &tonic::Status) -> String {
    let mut text = match s.code() {
        tonic::Code::Unknown => s.message().to_string(),
        code => format!("{code:?}: {}", s.message()),
    };
    append_sources(&mut text, std::error::Error::source(s));
    text
}

/// Connects and checks that etcd answers (a `status` call), within a few seconds. With a
/// user, the client authenticates while connecting: a refusal is [`ConnectError::Auth`].
pub async fn connect(opts: &EtcdOptions) -> Result<Client, ConnectError> {
    let other = |e: etcd_client::Error| ConnectError::Other(describe(&e));
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true);
    if let Some(tls) = opts.tls_options() {
        options = options.with_tls(tls);
    }
    let user = match (&opts.user, &opts.password) {
        (Some(user), Some(password)) => {
            options = options.with_user(user.clone(), password.expose());
            Some(user.clone())
        }
        _ => None,
    };
    let mut client = match Client::connect(&opts.endpoints, Some(options)).await {
        Ok(c) => c,
        // With a user, connecting means authenticating: an answer other than "unreachable"
        // is etcd refusing the credentials.
        Err(etcd_client::Error::GRpcStatus(s))
            if user.is_some()
                && !matches!(
                    s.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Cancelled
                ) =>
        {
            return Err(ConnectError::Auth {
                user: user.unwrap_or_default(),
                reason: s.message().to_string(),
            });
        }
        Err(e) => return Err(other(e)),
    };
    client.status().await.map_err(other)?;
    Ok(client)
}

/// Reconnect delays: 0.5 s, doubling, at most 30 s, with jitter.
pub fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Sleeps for `delay`, or less if one of the endpoints accepts a TCP connection again.
pub async fn wait_for_retry(opts: &EtcdOptions, delay: Duration) {
    let deadline = tokio::time::Instant::now() + delay;
    loop {
        let step = Duration::from_millis(500).min(deadline - tokio::time::Instant::now());
        tokio::time::sleep(step).await;
        if tokio::time::Instant::now() >= deadline || reachable(opts).await {
            return;
        }
    }
}

async fn reachable(opts: &EtcdOptions) -> bool {
    for ep in &opts.endpoints {
        let hostport = ep.split("://").last().unwrap_or(ep).trim_end_matches('/');
        let attempt = tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(hostport),
        )
        .await;
        if matches!(attempt, Ok(Ok(_))) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_near_half_a_second_and_caps_at_thirty() {
        let delays: Vec<Duration> = backoff().take(12).collect();
        assert!(delays[0] >= Duration::from_millis(500) && delays[0] < Duration::from_secs(1));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(60)));
        assert!(delays[11] >= Duration::from_secs(30));
    }

    #[test]
    fn debug_output_hides_the_password() {
        let o = EtcdOptions {
            endpoints: vec!["127.0.0.1:2379".into()],
            user: Some("root".into()),
            password: Some("hunter2".into()),
            tls: TlsFiles::default(),
        };
        assert!(!format!("{o:?}").contains("hunter2"));
    }
}

//! Connecting to etcd: options (endpoints, auth), a connect that proves the cluster answers,
//! and the reconnect backoff (0.5 s doubling to 30 s, with jitter).
//!
//! While backing off, a cheap TCP probe of the endpoints ends the wait early as soon as one
//! accepts connections again, so an agent is back within about a second of etcd's return
//! even after a long outage, without sending etcd more than one request per backoff step.

use std::fmt;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use etcd_client::{Client, ConnectOptions};

/// How to reach etcd.
#[derive(Clone, Default)]
pub struct EtcdOptions {
    /// `HOST:PORT` or `http(s)://HOST:PORT`, one per cluster member.
    pub endpoints: Vec<String>,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl EtcdOptions {
    /// Endpoints joined for messages.
    pub fn describe(&self) -> String {
        self.endpoints.join(",")
    }
}

/// Connects and checks that etcd answers (a `status` call), within a few seconds.
pub async fn connect(opts: &EtcdOptions) -> Result<Client, etcd_client::Error> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true);
    if let (Some(user), Some(password)) = (&opts.user, &opts.password) {
        options = options.with_user(user.clone(), password.clone());
    }
    let mut client = Client::connect(&opts.endpoints, Some(options)).await?;
    client.status().await?;
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
        };
        assert!(!format!("{o:?}").contains("hunter2"));
    }
}

//! The etcd session of a daemon: one task that keeps a registration key alive on a lease
//! and mirrors watched prefixes into memory, across etcd outages.
//!
//! Life of a session:
//! 1. connect (with backoff; one log line when etcd is unreachable, one when it is back);
//! 2. reuse the previous lease if etcd still has it, else grant a new one;
//! 3. put the registration — unless another live process holds the key, which is fatal;
//! 4. load every watched prefix, publish it, and watch it from the loaded revision on;
//! 5. keep the lease alive, re-put the registration if someone deletes it or its value
//!    changes, apply watch events to the mirrors.
//!
//! Any etcd error sends the session back to 1; the mirrors keep their last content
//! meanwhile, so the daemon runs on with its last good view. On shutdown the lease is
//! revoked, so the registration disappears at once instead of after the TTL.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
    WatchResponse,
};
use futures::stream::{self, SelectAll, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::etcd::{self, EtcdOptions};

/// Identifies the process behind a registration, to tell a live holder of an id from the
/// leftover of a crashed one. Flattened into every registration's JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Owner {
    pub instance_id: String,
    pub hostname: String,
    pub boot_id: String,
    pub pid: u32,
}

impl Owner {
    /// This process.
    pub fn current() -> Self {
        Self {
            instance_id: uuid::Uuid::new_v4().to_string(),
            hostname: crate::host::hostname(),
            boot_id: crate::host::boot_id(),
            pid: std::process::id(),
        }
    }
}

/// A key kept alive under a lease, holding a JSON value that embeds an [`Owner`].
pub struct Registration {
    /// What the key stands for in messages: "agent id `gpu-01`".
    pub what: String,
    pub key: String,
    pub owner: Owner,
    /// The JSON value; a change is written at once.
    pub value: watch::Receiver<String>,
    /// Lease TTL; a change applies to the next lease.
    pub ttl: watch::Receiver<Duration>,
    /// The session registers only once this is true, so a value and TTL that depend on
    /// the watched config are computed from the loaded config, not from defaults.
    pub ready: watch::Receiver<bool>,
}

/// The content of a watched prefix: keys relative to the prefix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mirror {
    pub kvs: BTreeMap<String, String>,
    /// False until the first load from etcd.
    pub loaded: bool,
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Another live process holds the registration key.
    #[error("{0}")]
    Conflict(String),
    /// etcd refused the credentials before the session was ever up.
    #[error("{0}")]
    Auth(String),
}

/// A transient failure (back to connect) or a fatal one.
enum Failure {
    Transient(String),
    /// etcd refused the credentials: fatal at start, retried once the session was up.
    Auth(String),
    Fatal(SessionError),
}

impl From<etcd_client::Error> for Failure {
    fn from(e: etcd_client::Error) -> Self {
        Failure::Transient(etcd::describe(&e))
    }
}

impl From<etcd::ConnectError> for Failure {
    fn from(e: etcd::ConnectError) -> Self {
        if e.is_auth() {
            Failure::Auth(e.to_string())
        } else {
            Failure::Transient(e.to_string())
        }
    }
}

/// A registration plus watched prefixes, driven by [`Session::run`].
pub struct Session {
    etcd: EtcdOptions,
    registration: Registration,
    mirrors: Vec<(String, watch::Sender<Mirror>)>,
    lease: Option<i64>,
}

type Events =
    Pin<Box<dyn Stream<Item = (usize, Result<Option<WatchResponse>, etcd_client::Error>)> + Send>>;

impl Session {
    pub fn new(etcd: EtcdOptions, registration: Registration) -> Self {
        Self {
            etcd,
            registration,
            mirrors: Vec::new(),
            lease: None,
        }
    }

    /// Mirrors every key under `prefix`; the receiver sees each change.
    pub fn mirror(&mut self, prefix: impl Into<String>) -> watch::Receiver<Mirror> {
        let (tx, rx) = watch::channel(Mirror::default());
        self.mirrors.push((prefix.into(), tx));
        rx
    }

    /// Runs until `stop` is cancelled (Ok) or the registration is held by another live
    /// process (Err).
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), SessionError> {
        let mut delays = etcd::backoff();
        let mut down_since: Option<Instant> = None;
        let mut ever_up = false;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let mut up = |me: &Session| {
                delays = etcd::backoff();
                let m = crate::telemetry::etcd::etcd();
                m.connected.set(1);
                if down_since.is_some() && ever_up {
                    m.reconnects.inc();
                }
                match down_since.take() {
                    Some(since) => tracing::info!(
                        key = %me.registration.key,
                        "etcd connection restored after {:.1}s; registration renewed",
                        since.elapsed().as_secs_f64()
                    ),
                    None if !ever_up => tracing::info!(
                        key = %me.registration.key,
                        etcd = %me.etcd.describe(),
                        "registered in etcd"
                    ),
                    None => {}
                }
                ever_up = true;
            };
            let err = match self.serve(&stop, &mut up).await {
                Ok(()) => return Ok(()),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Auth(e)) if !ever_up => return Err(SessionError::Auth(e)),
                Err(Failure::Auth(e) | Failure::Transient(e)) => e,
            };
            crate::telemetry::etcd::etcd().connected.set(0);
            if down_since.is_none() {
                down_since = Some(Instant::now());
                if ever_up {
                    tracing::warn!(etcd = %self.etcd.describe(), "etcd connection lost: {err}; reconnecting with backoff (0.5s to 30s)");
                } else {
                    tracing::warn!(etcd = %self.etcd.describe(), "etcd unreachable: {err}; retrying with backoff (0.5s to 30s)");
                }
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(30));
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = etcd::wait_for_retry(&self.etcd, delay) => {}
            }
        }
    }

    async fn serve(
        &mut self,
        stop: &CancellationToken,
        on_up: &mut impl FnMut(&Session),
    ) -> Result<(), Failure> {
        let mut client = etcd::connect(&self.etcd).await?;
        let mut events = self.load_and_watch(&mut client).await?;
        // The registration's value and TTL may depend on what was just loaded.
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = self.registration.ready.wait_for(|r| *r) => if r.is_err() { return Ok(()) },
        }
        let (lease, ttl) = self.ensure_lease(&mut client).await?;
        let reg_rev = self.register(&mut client, lease, stop).await?;
        // Registered: up from here, so losing etcd in the next call reads as a lost
        // connection (the key is there for everyone to see), not as etcd unreachable.
        on_up(self);
        let opts = WatchOptions::new().with_start_revision(reg_rev + 1);
        let own = client
            .watch(self.registration.key.clone(), Some(opts))
            .await?;
        events.push(into_events(self.mirrors.len(), own));

        let (mut keeper, mut acks) = client.lease_keep_alive(lease).await?;
        let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(500)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    let revoke = client.lease_revoke(lease);
                    let _ = tokio::time::timeout(Duration::from_secs(1), revoke).await;
                    return Ok(());
                }
                _ = tick.tick() => {
                    tracing::trace!(lease, "lease keep-alive sent");
                    keeper.keep_alive().await?
                }
                ack = acks.message() => match ack? {
                    Some(a) if a.ttl() > 0 => tracing::trace!(lease, ttl = a.ttl(), "lease renewed"),
                    _ => {
                        self.lease = None;
                        return Err(Failure::Transient("registration lease expired".into()));
                    }
                },
                changed = self.registration.value.changed() => {
                    if changed.is_ok() {
                        self.register(&mut client, lease, stop).await?;
                    }
                }
                ev = events.next() => {
                    let Some((idx, msg)) = ev else {
                        return Err(Failure::Transient("watch streams ended".into()));
                    };
                    let Some(resp) = msg? else {
                        return Err(Failure::Transient("watch stream closed by etcd".into()));
                    };
                    if resp.canceled() {
                        return Err(Failure::Transient(format!("watch cancelled: {}", resp.cancel_reason())));
                    }
                    if idx == self.mirrors.len() {
                        let deleted = resp.events().iter().any(|e| e.event_type() == EventType::Delete);
                        if deleted {
                            tracing::warn!(key = %self.registration.key, "registration was deleted while this process lives; putting it back");
                            self.register(&mut client, lease, stop).await?;
                        }
                    } else {
                        self.apply(idx, &resp);
                    }
                }
            }
        }
    }

    /// The previous lease if etcd still has it, else a new one; with its granted TTL,
    /// which paces the keep-alives.
    async fn ensure_lease(&mut self, client: &mut Client) -> Result<(i64, Duration), Failure> {
        if let Some(id) = self.lease {
            let resp = client.lease_time_to_live(id, None).await?;
            if resp.ttl() > 0 {
                return Ok((id, Duration::from_secs(resp.granted_ttl().max(1) as u64)));
            }
        }
        let ttl = self.registration.ttl.borrow().as_secs().max(1) as i64;
        let resp = client.lease_grant(ttl, None).await?;
        self.lease = Some(resp.id());
        Ok((resp.id(), Duration::from_secs(resp.ttl().max(1) as u64)))
    }

    /// Puts the registration under `lease`, unless another live process holds the key.
    /// Returns the revision of the put.
    async fn register(
        &mut self,
        client: &mut Client,
        lease: i64,
        stop: &CancellationToken,
    ) -> Result<i64, Failure> {
        let key = self.registration.key.clone();
        loop {
            let value = self.registration.value.borrow_and_update().clone();
            let put = TxnOp::put(
                key.clone(),
                value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            );
            // Free key, or already ours (same lease): write it.
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([put.clone()])
                .or_else([TxnOp::get(key.clone(), None)]);
            let resp = client.txn(txn).await?;
            if resp.succeeded() {
                return Ok(resp.header().map(|h| h.revision()).unwrap_or(0));
            }
            let holder = resp.op_responses().into_iter().find_map(|op| match op {
                etcd_client::TxnOpResponse::Get(g) => g.kvs().first().cloned(),
                _ => None,
            });
            let Some(holder) = holder else { continue };
            let owner: Owner = serde_json::from_slice(holder.value()).unwrap_or_default();
            if owner.instance_id == self.registration.owner.instance_id {
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        holder.mod_revision(),
                    )])
                    .and_then([put]);
                let resp = client.txn(txn).await?;
                if resp.succeeded() {
                    return Ok(resp.header().map(|h| h.revision()).unwrap_or(0));
                }
                continue;
            }
            self.resolve_conflict(client, &owner, holder.lease(), stop)
                .await?;
        }
    }

    /// Another instance holds our key. A crashed predecessor on this host is cleared at
    /// once; a live process here is fatal; a holder elsewhere is given its lease's TTL to
    /// expire — if it is renewed meanwhile, the holder is alive and that is fatal too.
    async fn resolve_conflict(
        &mut self,
        client: &mut Client,
        holder: &Owner,
        holder_lease: i64,
        stop: &CancellationToken,
    ) -> Result<(), Failure> {
        let me = &self.registration.owner;
        let what = &self.registration.what;
        let key = &self.registration.key;
        let same_boot = holder.hostname == me.hostname
            && holder.boot_id == me.boot_id
            && !me.boot_id.is_empty();
        if same_boot {
            if process_is_deckhand(holder.pid) {
                return Err(Failure::Fatal(SessionError::Conflict(format!(
                    "{what} is already registered by a live deckhand process (pid {} on this host, key {key}); stop it or choose another id",
                    holder.pid
                ))));
            }
            tracing::info!(key = %key, pid = holder.pid, "clearing the registration of a crashed predecessor on this host");
            if holder_lease != 0 {
                let _ = client.lease_revoke(holder_lease).await;
            }
            client.delete(key.clone(), None).await?;
            return Ok(());
        }
        let remaining = if holder_lease == 0 {
            0
        } else {
            client.lease_time_to_live(holder_lease, None).await?.ttl()
        };
        tracing::warn!(key = %key, holder_host = %holder.hostname, "{what} is registered by another process; waiting up to {remaining}s for its lease to expire");
        let deadline = Duration::from_secs(remaining.max(0) as u64 + 2);
        let mut watch = client.watch(key.clone(), None).await?;
        let gone = tokio::time::timeout(deadline, async {
            loop {
                match watch.message().await {
                    Ok(Some(r))
                        if r.events()
                            .iter()
                            .any(|e| e.event_type() == EventType::Delete) =>
                    {
                        return true
                    }
                    Ok(Some(_)) => {}
                    _ => return false,
                }
            }
        });
        tokio::select! {
            _ = stop.cancelled() => Err(Failure::Transient("stopping".into())),
            r = gone => match r {
                Ok(true) => Ok(()),
                Ok(false) => Err(Failure::Transient("watch on the registration key ended".into())),
                Err(_) => {
                    let still = client.get(key.clone(), Some(GetOptions::new().with_count_only())).await?.count() > 0;
                    if still {
                        Err(Failure::Fatal(SessionError::Conflict(format!(
                            "{what} is already registered by a live process on host `{}` (its lease kept being renewed, key {key}); stop it or choose another id",
                            holder.hostname
                        ))))
                    } else {
                        Ok(())
                    }
                }
            }
        }
    }

    /// Loads every mirrored prefix, publishes it, and opens one watch per prefix from the
    /// loaded revision on. (The watch on the registration key is added later, with index
    /// `mirrors.len()`.)
    async fn load_and_watch(&mut self, client: &mut Client) -> Result<SelectAll<Events>, Failure> {
        let mut all: SelectAll<Events> = SelectAll::new();
        for (idx, (prefix, tx)) in self.mirrors.iter().enumerate() {
            let resp = client
                .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
                .await?;
            let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            let mut kvs = BTreeMap::new();
            for kv in resp.kvs() {
                if let (Ok(k), Ok(v)) = (kv.key_str(), kv.value_str()) {
                    kvs.insert(k[prefix.len()..].to_string(), v.to_string());
                }
            }
            tx.send_if_modified(|m| {
                let next = Mirror { kvs, loaded: true };
                let changed = *m != next;
                *m = next;
                changed
            });
            let opts = WatchOptions::new()
                .with_prefix()
                .with_start_revision(rev + 1);
            let stream = client.watch(prefix.clone(), Some(opts)).await?;
            all.push(into_events(idx, stream));
        }
        Ok(all)
    }

    fn apply(&self, idx: usize, resp: &WatchResponse) {
        let (prefix, tx) = &self.mirrors[idx];
        tx.send_if_modified(|m| {
            let mut changed = false;
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let Ok(key) = kv.key_str() else { continue };
                let Some(rel) = key.strip_prefix(prefix.as_str()) else {
                    continue;
                };
                match ev.event_type() {
                    EventType::Put => {
                        let v = kv.value_str().unwrap_or_default().to_string();
                        changed |= m.kvs.insert(rel.to_string(), v.clone()).as_ref() != Some(&v);
                    }
                    EventType::Delete => changed |= m.kvs.remove(rel).is_some(),
                }
            }
            changed
        });
    }
}

fn into_events(idx: usize, stream: etcd_client::WatchStream) -> Events {
    // Yields forever; the session leaves on the first error or end of stream.
    Box::pin(stream::unfold(stream, move |mut s| async move {
        let msg = s.message().await;
        Some(((idx, msg), s))
    }))
}

/// Whether `pid` is a running process named `deckhand` (on this host).
fn process_is_deckhand(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim() == "deckhand")
        .unwrap_or(false)
}

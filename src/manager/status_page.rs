//! The manager's live status page, served read-only on its metrics address
//! (`--metrics-listen-addr`): `GET /` is the whole page, `GET /fragment` its content, which
//! a few lines of JavaScript in the page fetch every two seconds to refresh it in place.
//!
//! Both are rendered on the server from what the manager knows: the agent table (state,
//! GPUs, free slots), the kernels its agents hold (asked at once, as `deckhand ps` asks,
//! each agent within 5 s, and shared by every page refreshing within the same second) with
//! the pull progress of those PULLING, and the latest kernel events it received. Everything shown is escaped by the template engine (maud); nothing
//! on the page changes anything.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::service::ManagerRpc;
use crate::config::schema::show_bytes;
use crate::wire::names::agent_state;
use crate::wire::names::kernel_state;
use crate::wire::pb::cluster_service_server::ClusterService;
use crate::wire::pb::{AgentSummary, KernelEvent, KernelInfo, KernelState, ListKernelsRequest};

/// Kernel events kept for the page.
const EVENTS_SHOWN: usize = 30;

/// How long one listing of the agents' kernels serves every open page.
const KERNELS_FRESH: Duration = Duration::from_secs(1);

/// The latest events, and the last pull progress of each kernel still PULLING.
#[derive(Default)]
struct Recent {
    events: VecDeque<KernelEvent>,
    pulls: HashMap<String, crate::wire::pb::PullProgress>,
}

/// The agents' kernels as listed at an instant.
type Listing = (Instant, Vec<KernelInfo>);

/// What the page is made from.
#[derive(Clone)]
pub struct StatusPage {
    rpc: ManagerRpc,
    recent: Arc<Mutex<Recent>>,
    /// The last listing of the agents' kernels, and when it was made.
    kernels: Arc<Mutex<Option<Listing>>>,
}

impl StatusPage {
    pub fn new(rpc: ManagerRpc) -> Self {
        Self {
            rpc,
            recent: Arc::default(),
            kernels: Arc::default(),
        }
    }

    /// The kernels of every agent, listed at most once a second however many pages
    /// refresh (the lock is never held while the agents are asked).
    async fn kernels(&self) -> Vec<KernelInfo> {
        {
            let cached = self.kernels.lock();
            if let Some((at, list)) = cached.as_ref() {
                if at.elapsed() < KERNELS_FRESH {
                    return list.clone();
                }
            }
        }
        let list = self
            .rpc
            .list_kernels(tonic::Request::new(ListKernelsRequest {}))
            .await
            .map(|r| r.into_inner().kernels)
            .unwrap_or_default();
        *self.kernels.lock() = Some((Instant::now(), list.clone()));
        list
    }

    /// Follows the kernel events the manager receives until `stop` (the task
    /// `status-events`).
    pub async fn follow(self, stop: CancellationToken) {
        let mut rx = self.rpc.events.subscribe();
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                ev = rx.recv() => ev,
            };
            let ev = match ev {
                Ok(ev) => ev,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let mut r = self.recent.lock();
            match &ev.pull {
                Some(p) if ev.state == KernelState::Pulling as i32 => {
                    r.pulls.insert(ev.kernel_id.clone(), p.clone());
                }
                _ if ev.state != KernelState::Pulling as i32 => {
                    r.pulls.remove(&ev.kernel_id);
                }
                _ => {}
            }
            // Progress notes would crowd out the lifecycle: only state changes and notes
            // with words are listed.
            if ev.pull.is_none() {
                r.events.push_front(ev);
                r.events.truncate(EVENTS_SHOWN);
            }
        }
    }

    /// `GET /` and `GET /fragment`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(page))
            .route("/fragment", get(fragment))
            .with_state(self)
    }

    async fn content(&self) -> Markup {
        let agents = self.rpc.table.lock().list(Instant::now());
        let kernels = self.kernels().await;
        let (events, pulls) = {
            let r = self.recent.lock();
            (r.events.clone(), r.pulls.clone())
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        html! {
            p.updated { "Updated " (chrono::Local::now().format("%H:%M:%S")) }
            h2 { "Agents (" (agents.len()) ")" }
            (agents_table(&agents, now_ms))
            h2 { "Kernels (" (kernels.len()) ")" }
            (kernels_table(&kernels, &pulls, now_ms))
            h2 { "Latest events" }
            (events_table(&events))
        }
    }
}

async fn page(State(page): State<StatusPage>) -> Html<String> {
    let title = format!(
        "deckhand · {} · manager {}",
        page.rpc.namespace, page.rpc.manager_id
    );
    let content = page.content().await;
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    title { (title) }
                    style { (STYLE) }
                }
                body {
                    h1 { (title) }
                    main #status { (content) }
                    script { (maud::PreEscaped(REFRESH)) }
                }
            }
        }
        .into_string(),
    )
}

async fn fragment(State(page): State<StatusPage>) -> Html<String> {
    Html(page.content().await.into_string())
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin-bottom:1.5em}\
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.9em}\
th{background:#f0f0f0}.updated{color:#777;font-size:.85em}\
.ALIVE,.RUNNING,.DONE{color:#17702a}.LOST,.FAILED{color:#b00020}.GONE,.CANCELLED{color:#777}\
td.id{font-family:monospace}";

/// Replaces the page's content with a fresh `/fragment` every two seconds (counting the
/// refreshes in `data-refreshed`); a failed fetch leaves the last content and says so.
const REFRESH: &str = "setInterval(async () => {\
 const main = document.getElementById('status');\
 try { const r = await fetch('fragment', {cache: 'no-store'});\
 if (r.ok) { main.innerHTML = await r.text();\
 main.dataset.refreshed = String(Number(main.dataset.refreshed || 0) + 1); } }\
 catch (e) { const u = main.querySelector('.updated'); if (u) u.textContent = 'manager unreachable; showing the last status'; }\
}, 2000);";

fn ago(now_ms: i64, at_ms: i64) -> String {
    if at_ms <= 0 {
        return "—".into();
    }
    let secs = ((now_ms - at_ms).max(0) / 1000) as u64;
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

fn agents_table(agents: &[AgentSummary], now_ms: i64) -> Markup {
    html! {
        table #agents {
            tr { th { "agent" } th { "state" } th { "address" } th { "last heartbeat" }
                 th { "free CPU" } th { "free memory" } th { "free GPUs" } th { "GPUs" } }
            @for a in agents {
                @let id = a.identity.as_ref().map(|i| i.agent_id.as_str()).unwrap_or("");
                @let addr = a.identity.as_ref().map(|i| i.address.as_str()).unwrap_or("");
                @let state = agent_state(a.state());
                @let slots = a.slots.unwrap_or_default();
                @let (free, total) = (slots.free.unwrap_or_default(), slots.total.unwrap_or_default());
                tr {
                    td.id { (id) } td class=(state) { (state) } td { (addr) }
                    td { (ago(now_ms, a.last_seen_ms)) }
                    td { (free.cpu) " of " (total.cpu) }
                    td { (show_bytes(free.memory_bytes)) " of " (show_bytes(total.memory_bytes)) }
                    td { (free.gpus) " of " (total.gpus) }
                    td {
                        @for d in a.gpus.iter().flat_map(|g| g.devices.iter()) {
                            div {
                                (d.index) ": " (d.name)
                                @if d.fake { " (fake)" }
                                @if !d.error.is_empty() { " — error: " (d.error) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What a kernel is doing, in words: pull progress while PULLING, a profile kernel's
/// progress while it runs, its reason once ended.
fn progress(k: &KernelInfo, pull: Option<&crate::wire::pb::PullProgress>) -> String {
    match (k.state(), pull) {
        (KernelState::Pulling, Some(p)) if p.bytes_total > 0 => format!(
            "pulling {}: {} % ({} of {}, {}/{} layers)",
            p.image,
            p.bytes_done * 100 / p.bytes_total,
            show_bytes(p.bytes_done),
            show_bytes(p.bytes_total),
            p.layers_done,
            p.layers_total
        ),
        (KernelState::Pulling, _) => "pulling the image".into(),
        // A profile kernel's own progress, from its output.
        (KernelState::Running | KernelState::Uploading, _) if k.progress.is_some() => format!(
            "{:.0} % done{}",
            k.progress.unwrap_or_default(),
            if k.state() == KernelState::Uploading {
                ", uploading its results"
            } else {
                ""
            }
        ),
        _ => k.reason.clone(),
    }
}

fn kernels_table(
    kernels: &[KernelInfo],
    pulls: &HashMap<String, crate::wire::pb::PullProgress>,
    now_ms: i64,
) -> Markup {
    html! {
        table #kernels {
            tr { th { "kernel" } th { "name" } th { "state" } th { "progress" } th { "agent" }
                 th { "image" } th { "age" } }
            @for k in kernels {
                @let state = kernel_state(k.state());
                tr {
                    td.id { (k.kernel_id) } td { (k.name) } td class=(state) { (state) }
                    td { (progress(k, pulls.get(&k.kernel_id))) }
                    td.id { (k.agent_id) } td { (k.image) } td { (ago(now_ms, k.created_at_ms)) }
                }
            }
        }
    }
}

fn events_table(events: &VecDeque<KernelEvent>) -> Markup {
    html! {
        table #events {
            tr { th { "time" } th { "kernel" } th { "state" } th { "reason" } th { "agent" } }
            @for ev in events {
                @let state = kernel_state(ev.state());
                @let at = chrono::DateTime::from_timestamp_millis(ev.at_ms)
                    .map(|t| t.with_timezone(&chrono::Local).format("%H:%M:%S").to_string())
                    .unwrap_or_default();
                tr {
                    td { (at) } td.id { (ev.kernel_id) } td class=(state) { (state) }
                    td { (ev.reason) } td.id { (ev.agent_id) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pb::PullProgress;

    #[test]
    fn a_pulling_kernel_shows_how_far_its_pull_is_and_an_ended_one_its_reason() {
        let pulling = KernelInfo {
            state: KernelState::Pulling as i32,
            ..Default::default()
        };
        let p = PullProgress {
            image: "reg:5000/big:v1".into(),
            bytes_done: 3 << 20,
            bytes_total: 12 << 20,
            layers_done: 1,
            layers_total: 4,
            eta_ms: 0,
        };
        assert_eq!(
            progress(&pulling, Some(&p)),
            "pulling reg:5000/big:v1: 25 % (3.0 MiB of 12.0 MiB, 1/4 layers)"
        );
        assert_eq!(progress(&pulling, None), "pulling the image");
        let done = KernelInfo {
            state: KernelState::Done as i32,
            reason: "exited with code 0".into(),
            ..Default::default()
        };
        assert_eq!(progress(&done, Some(&p)), "exited with code 0");
    }

    #[test]
    fn what_a_kernel_says_is_escaped() {
        let k = KernelInfo {
            kernel_id: "k".into(),
            name: "<script>alert(1)</script>".into(),
            ..Default::default()
        };
        let html = kernels_table(&[k], &HashMap::new(), 0).into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }
}

//! An in-memory runtime, like Nomad's mock driver: instances are entries in a map, their
//! ends are triggered by the caller ([`MemoryRuntime::exit`]), and every change is an event.
//! It lets the supervisor's lifecycle (arrays, slots, wrong-state refusals, recovery, event
//! order) be tested in milliseconds, and stands in for containers in the fleet benchmark
//! (simulated agents say so in their output). Never used by a real agent.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::config::ClusterConfig;
use crate::runtime::Launch;
use crate::runtime::{Activity, Adopted};
use crate::runtime::{
    Capabilities, Chunk, ChunkStream, EventStream, Handle, Observed, Owned, Reporter, Runtime,
    RuntimeError, RuntimeEvent, Started, Status, Usage,
};
use crate::spec::{Spec, SpecError};
use crate::util::now_ms;

pub const NAME: &str = "memory";

#[derive(Debug, Clone)]
struct Instance {
    kernel_id: String,
    record: Launch,
    status: Status,
    output: Vec<String>,
}

/// See the module docs.
pub struct MemoryRuntime {
    instances: Mutex<HashMap<String, Instance>>,
    events: broadcast::Sender<RuntimeEvent>,
    next: AtomicU64,
    down: AtomicBool,
    capabilities: Capabilities,
    /// The next `create` fails with this message.
    fail_create: Mutex<Option<String>>,
    /// How long `prepare` takes (an image pull).
    pub prepare_delay: Duration,
    /// Every start's process ends at once with this code, and `start` answers only this
    /// long after its end was announced: a run so short that its end is seen before its
    /// start is (as a container whose command fails at once, under load).
    exits_on_start: Mutex<Option<(i64, Duration)>>,
    /// How many times an instance was started.
    starts: AtomicU64,
}

impl Default for MemoryRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRuntime {
    pub fn new() -> Self {
        Self {
            instances: Mutex::new(HashMap::new()),
            events: broadcast::channel(4096).0,
            next: AtomicU64::new(1),
            down: AtomicBool::new(false),
            capabilities: Capabilities {
                suspend: true,
                signal: true,
                exec: false,
                files: false,
                hold: true,
                host_ports: false,
                local_slots: true,
                cluster: false,
                rdma: false,
            },
            fail_create: Mutex::new(None),
            prepare_delay: Duration::ZERO,
            exits_on_start: Mutex::new(None),
            starts: AtomicU64::new(0),
        }
    }

    fn map(&self) -> parking_lot::MutexGuard<'_, HashMap<String, Instance>> {
        self.instances.lock()
    }

    fn send(&self, instance: &str, what: Observed) {
        let kernel_id = match self.map().get(instance) {
            Some(i) => i.kernel_id.clone(),
            None => return,
        };
        let _ = self.events.send(RuntimeEvent {
            kernel_id,
            instance: instance.to_string(),
            what,
        });
    }

    fn update(&self, instance: &str, f: impl FnOnce(&mut Status)) -> Result<Status, RuntimeError> {
        let mut map = self.map();
        let i = map
            .get_mut(instance)
            .ok_or_else(|| RuntimeError::NotFound(format!("no such instance: {instance}")))?;
        f(&mut i.status);
        Ok(i.status.clone())
    }

    fn instance_of(&self, kernel_id: &str) -> Option<String> {
        self.map()
            .iter()
            .find(|(_, i)| i.kernel_id == kernel_id)
            .map(|(id, _)| id.clone())
    }

    /// Ends kernel `kernel_id`'s process with `code` (as a container would, by itself).
    pub fn exit(&self, kernel_id: &str, code: i64) {
        let Some(id) = self.instance_of(kernel_id) else {
            return;
        };
        if let Ok(st) = self.update(&id, |s| {
            s.running = false;
            s.paused = false;
            s.exit_code = Some(code);
            s.finished_at_ms = now_ms();
        }) {
            self.send(&id, Observed::Changed(st));
        }
    }

    /// From now on every run ends at once with `code`; `start` answers `late` after the end
    /// was announced.
    pub fn exit_on_start(&self, code: i64, late: Duration) {
        *self.exits_on_start.lock() = Some((code, late));
    }

    /// How many times instances were started (runs, restarts included).
    pub fn starts(&self) -> u64 {
        self.starts.load(Ordering::SeqCst)
    }

    /// Ends kernel `kernel_id` without telling anyone (as while the agent was down).
    pub fn exit_quietly(&self, kernel_id: &str, code: i64) {
        if let Some(id) = self.instance_of(kernel_id) {
            let _ = self.update(&id, |s| {
                s.running = false;
                s.exit_code = Some(code);
                s.finished_at_ms = now_ms();
            });
        }
    }

    /// Removes kernel `kernel_id`'s instance without telling anyone (as a `docker rm` while
    /// the agent was down).
    pub fn remove_quietly(&self, kernel_id: &str) {
        if let Some(id) = self.instance_of(kernel_id) {
            self.map().remove(&id);
        }
    }

    /// Whether kernel `kernel_id` has a running instance.
    pub fn is_running(&self, kernel_id: &str) -> bool {
        self.map()
            .values()
            .any(|i| i.kernel_id == kernel_id && i.status.running)
    }

    /// Running instances.
    pub fn running(&self) -> usize {
        self.map().values().filter(|i| i.status.running).count()
    }

    /// Makes the backend unreachable (`ping` and calls answer UNAVAILABLE) or back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn fail_next_create(&self, message: &str) {
        *self.fail_create.lock() = Some(message.into());
    }

    /// Adds an instance for `rec` that no record of the supervisor knows (a crash between
    /// create and record).
    pub fn add_unrecorded(&self, rec: Launch) -> String {
        let id = format!("mem-{}", self.next.fetch_add(1, Ordering::SeqCst));
        let status = Status {
            exists: true,
            running: true,
            started_at_ms: now_ms(),
            ..Status::default()
        };
        self.map().insert(
            id.clone(),
            Instance {
                kernel_id: rec.id.clone(),
                record: rec,
                status,
                output: Vec::new(),
            },
        );
        id
    }

    fn check_up(&self) -> Result<(), RuntimeError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(RuntimeError::Unavailable(
                "memory runtime unreachable (set down)".into(),
            ));
        }
        Ok(())
    }

    fn handle(id: &str) -> Handle {
        Handle {
            runtime: NAME.into(),
            version: 1,
            instance: id.into(),
            data: serde_json::Value::Null,
        }
    }
}

#[async_trait]
impl Runtime for MemoryRuntime {
    fn name(&self) -> &'static str {
        NAME
    }

    fn backend(&self) -> &'static str {
        "memory runtime"
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn validate(&self, spec: &Spec, _cfg: &ClusterConfig) -> Result<(), SpecError> {
        if !spec.ports.is_empty() {
            return Err(SpecError::invalid(
                "ports",
                "host ports are not supported by the memory runtime",
            ));
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        self.check_up()
    }

    async fn prepare(
        &self,
        _rec: &Launch,
        _cfg: &ClusterConfig,
        _report: &Reporter,
    ) -> Result<(), RuntimeError> {
        self.check_up()?;
        if !self.prepare_delay.is_zero() {
            tokio::time::sleep(self.prepare_delay).await;
        }
        Ok(())
    }

    async fn create(
        &self,
        rec: &Launch,
        _cfg: &ClusterConfig,
        _report: &Reporter,
    ) -> Result<Handle, RuntimeError> {
        self.check_up()?;
        if let Some(msg) = self.fail_create.lock().take() {
            return Err(RuntimeError::Failed(msg));
        }
        let id = format!("mem-{}", self.next.fetch_add(1, Ordering::SeqCst));
        let output = rec
            .spec
            .command
            .iter()
            .skip_while(|a| *a != "echo")
            .skip(1)
            .cloned()
            .collect::<Vec<_>>();
        self.map().insert(
            id.clone(),
            Instance {
                kernel_id: rec.id.clone(),
                record: rec.clone(),
                status: Status {
                    exists: true,
                    ..Status::default()
                },
                output: if output.is_empty() {
                    Vec::new()
                } else {
                    vec![output.join(" ")]
                },
            },
        );
        Ok(Self::handle(&id))
    }

    async fn start(
        &self,
        _rec: &Launch,
        handle: &Handle,
        _cfg: &ClusterConfig,
    ) -> Result<Started, RuntimeError> {
        self.check_up()?;
        let at = now_ms();
        self.update(&handle.instance, |s| {
            s.running = true;
            s.started_at_ms = at;
        })?;
        self.starts.fetch_add(1, Ordering::SeqCst);
        let exits = *self.exits_on_start.lock();
        if let Some((code, late)) = exits {
            let st = self.update(&handle.instance, |s| {
                s.running = false;
                s.exit_code = Some(code);
                s.finished_at_ms = at.max(now_ms());
            })?;
            self.send(&handle.instance, Observed::Changed(st));
            tokio::time::sleep(late).await;
        }
        Ok(Started {
            started_at_ms: at,
            follow: Vec::new(),
        })
    }

    async fn stop(&self, handle: &Handle, _grace: Duration) -> Result<(), RuntimeError> {
        self.check_up()?;
        let st = self.update(&handle.instance, |s| {
            if s.running || s.restarting {
                s.running = false;
                s.restarting = false;
                s.paused = false;
                s.exit_code = Some(143);
                s.finished_at_ms = now_ms();
            }
        })?;
        self.send(&handle.instance, Observed::Changed(st));
        Ok(())
    }

    async fn destroy(&self, handle: &Handle) -> Result<(), RuntimeError> {
        self.check_up()?;
        self.map().remove(&handle.instance);
        Ok(())
    }

    async fn release(&self, _rec: &Launch, _process_still_used: bool, _cfg: &ClusterConfig) {}

    async fn status(&self, handle: &Handle) -> Result<Status, RuntimeError> {
        self.check_up()?;
        Ok(self
            .map()
            .get(&handle.instance)
            .map(|i| i.status.clone())
            .unwrap_or_default())
    }

    fn events(&self) -> EventStream {
        let rx = self.events.subscribe();
        Box::pin(
            tokio_stream::wrappers::BroadcastStream::new(rx)
                .filter_map(|r| futures::future::ready(r.ok().map(Ok))),
        )
    }

    async fn list_owned(&self) -> Result<Vec<Owned>, RuntimeError> {
        self.check_up()?;
        Ok(self
            .map()
            .iter()
            .map(|(id, i)| Owned {
                kernel_id: i.kernel_id.clone(),
                handle: Self::handle(id),
            })
            .collect())
    }

    async fn adopt(
        &self,
        owned: &Owned,
        _cfg: &ClusterConfig,
    ) -> Result<Option<Adopted>, RuntimeError> {
        let map = self.map();
        let i = map
            .get(&owned.handle.instance)
            .ok_or_else(|| RuntimeError::NotFound(owned.handle.instance.clone()))?;
        let mut launch = i.record.clone();
        launch.handle = Some(owned.handle.clone());
        let activity = if i.status.running {
            Activity::Running
        } else {
            Activity::Created
        };
        Ok(Some(Adopted {
            launch,
            activity,
            restart_count: 0,
        }))
    }

    fn logs(
        &self,
        handle: &Handle,
        _follow: bool,
        _tail: u32,
    ) -> Result<ChunkStream, RuntimeError> {
        let lines: Vec<String> = self
            .map()
            .get(&handle.instance)
            .map(|i| i.output.clone())
            .unwrap_or_default();
        Ok(Box::pin(futures::stream::iter(lines.into_iter().map(
            |l| {
                Ok(Chunk {
                    data: format!("{l}\n").into(),
                    stderr: false,
                })
            },
        ))))
    }

    async fn signal(&self, handle: &Handle, signal: i32) -> Result<(), RuntimeError> {
        self.check_up()?;
        if signal == 9 || signal == 15 {
            let st = self.update(&handle.instance, |s| {
                s.running = false;
                s.exit_code = Some(128 + i64::from(signal));
                s.finished_at_ms = now_ms();
            })?;
            self.send(&handle.instance, Observed::Changed(st));
        }
        Ok(())
    }

    async fn suspend(&self, handle: &Handle) -> Result<(), RuntimeError> {
        self.check_up()?;
        let st = self.update(&handle.instance, |s| s.paused = true)?;
        self.send(&handle.instance, Observed::Changed(st));
        Ok(())
    }

    async fn resume(&self, handle: &Handle) -> Result<(), RuntimeError> {
        self.check_up()?;
        let st = self.update(&handle.instance, |s| s.paused = false)?;
        self.send(&handle.instance, Observed::Changed(st));
        Ok(())
    }

    fn usage(&self, handle: &Handle) -> Option<Usage> {
        let map = self.map();
        let i = map.get(&handle.instance)?;
        i.status.running.then_some(Usage {
            cpu_ns: 1_000_000,
            memory_bytes: 1 << 20,
        })
    }
}

/// Instances per kernel id (for tests).
pub fn kernels_of(rt: &MemoryRuntime) -> BTreeMap<String, bool> {
    rt.map()
        .values()
        .map(|i| (i.kernel_id.clone(), i.status.running))
        .collect()
}

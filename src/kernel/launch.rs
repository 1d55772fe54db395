//! Creating kernels: a request is validated (generic rules with the runtime's rules of single
//! fields among them, then the runtime's rules of the whole spec), its slots allocated, its
//! record made PREPARING, and a launch task prepares (image), creates and starts it through
//! its runtime, bounded by the creation semaphore.

use sha2::{Digest, Sha256};

use super::error::KernelError;
use super::record::{now_ms, Record};
use super::slots::{self, Allocation, Needs};
use super::state::{KernelState, Transition};
use super::supervisor::{KernelView, Supervisor};
use super::table::Table;
use crate::config::ClusterConfig;
use crate::runtime::{Progress, Runtime, RuntimeError};
use crate::spec::{self, CreateRequest, FieldRules, NoFieldRules, Spec, SpecError, Template};

impl Supervisor {
    /// Creates one kernel (returns once it is RUNNING, HELD or final) or a job array
    /// (returns at once with its tasks).
    pub async fn create(&self, req: CreateRequest) -> Result<Vec<KernelView>, KernelError> {
        let shown = &req.template;
        self.wait_for_capacity().await;
        let cfg = self.config();
        let runtime = if shown.runtime.is_empty() {
            cfg.default_runtime.as_str()
        } else {
            shown.runtime.as_str()
        };
        // The spec's problems come before an unknown runtime; the runtime's rules of single
        // fields are asked among the spec's own checks.
        let rt = self.runtime(runtime);
        let rules = rt
            .as_ref()
            .map_or(&NoFieldRules as &dyn FieldRules, |rt| rt.field_rules());
        let spec = spec::prepare_for(shown, &cfg, rules)?;
        let rt = rt?;
        rt.validate(&spec, &cfg)?;
        super::profile::check_support(&spec, rt.as_ref())?;
        if spec.hold && !rt.capabilities().hold {
            return Err(SpecError::forbidden(
                "submit_as_hold",
                format!("holding is not supported by the {} runtime", rt.name()),
            )
            .into());
        }
        if spec.cluster.is_some() && !rt.capabilities().cluster {
            return Err(SpecError::forbidden(
                "instances",
                format!(
                    "cluster kernels are not supported by the {} runtime",
                    rt.name()
                ),
            )
            .into());
        }
        let digest = digest(&req);
        let id = shown.kernel_id.clone();
        self.check_cordon(&id)?;
        if !self.lock().kernels.contains_key(&id) {
            // The cheap refusals first (instances at most), then the runtime's market.
            rt.admit(&launches(&self.lock().live()), &cfg)?;
            rt.quote(&spec, &cfg).await?;
        }
        if let Some(a) = &req.array {
            let range = spec::validate_array(a)?;
            return self.create_array(shown, spec, range, &digest, rt.as_ref());
        }
        let mut rx = {
            let mut t = self.lock();
            if let Some(e) = t.kernels.get(&id) {
                if !e.rec.same_request(&digest, shown) {
                    return Err(KernelError::Conflict(id));
                }
                e.state.subscribe()
            } else {
                if t.arrays.contains_key(&id) {
                    return Err(KernelError::Conflict(id));
                }
                let alloc = self.allocate(&t, &spec, &cfg, rt.as_ref())?;
                let rec = self.new_record(&id, shown, spec, &digest, rt.as_ref(), Some(alloc));
                let rx = self.insert(&mut t, rec, true);
                let me = self.clone();
                let kid = id.clone();
                self.spawn(async move { me.launch(kid).await });
                rx
            }
        };
        let _ = rx
            .wait_for(|s| {
                !matches!(
                    s,
                    KernelState::Preparing | KernelState::Pulling | KernelState::Creating
                )
            })
            .await;
        Ok(vec![self.info(&id)?])
    }

    /// Chooses slots, GPUs and ports for `spec` on `rt` from what `t` leaves free.
    pub(super) fn allocate(
        &self,
        t: &Table,
        spec: &Spec,
        cfg: &ClusterConfig,
        rt: &dyn Runtime,
    ) -> Result<Allocation, KernelError> {
        rt.admit(&launches(&t.live()), cfg)?;
        let caps = rt.capabilities();
        slots::allocate(
            &self.capacity(),
            cfg,
            t.kernels.values().map(|e| &e.rec),
            spec,
            Needs {
                local_slots: caps.local_slots,
                host_ports: caps.host_ports,
            },
        )
    }

    /// A new PREPARING record; `alloc` is `None` for array tasks, which get their slots
    /// when their turn comes.
    pub(super) fn new_record(
        &self,
        id: &str,
        shown: &Template,
        spec: Spec,
        digest: &str,
        rt: &dyn Runtime,
        alloc: Option<Allocation>,
    ) -> Record {
        let mut rec = Record::new(id, shown, spec, digest, rt.name());
        rec.scratch_dir = rt.home(id);
        if let Some(m) = super::profile::resources_mount(&rec.spec, &rec.scratch_dir) {
            rec.spec.stage_in.push(m);
        }
        if let Some(a) = alloc {
            rec.granted = Some(a.slots.clone());
            rec.slots = Some(a.slots);
            rec.ports = a.ports;
            rec.real_gpus = a.real_gpus;
        }
        rec
    }

    pub(super) async fn launch(self, id: String) {
        let begun = std::time::Instant::now();
        let permit = self.0.permits.acquire().await;
        if permit.is_err() {
            return;
        }
        let outcome = self.launch_inner(&id).await;
        let made = self.with_record(&id, |r| (r.runtime.clone(), r.state));
        if let (Ok(()), Some((runtime, state))) = (&outcome, &made) {
            if !matches!(state, KernelState::Failed | KernelState::Cancelled) {
                crate::telemetry::counters::agent().kernel_created(runtime, begun.elapsed());
            }
        }
        if let Err(e) = outcome {
            if let Some((runtime, _)) = &made {
                crate::telemetry::counters::agent().kernel_create_failed(runtime);
            }
            let reason = e.to_string();
            tracing::warn!(kernel_id = %id, error = %reason, "kernel could not start");
            let made = self.with_record(&id, |r| (r.runtime.clone(), r.handle.clone()));
            self.fail(&id, reason);
            if let Some((runtime, Some(handle))) = made {
                // No half-made instance stays behind.
                if let Ok(rt) = self.runtime(&runtime) {
                    let _ = rt.destroy(&handle).await;
                }
            }
        }
    }

    async fn launch_inner(&self, id: &str) -> Result<(), KernelError> {
        let rec = self.record(id)?;
        if rec.state != KernelState::Preparing {
            return Ok(()); // cancelled while queued
        }
        let cfg = self.config();
        let rt = self.runtime(&rec.runtime)?;
        self.prepare(rt.as_ref(), &rec, &cfg).await?;
        let rec = self.record(id)?;
        if rec.state.is_final() {
            return Ok(());
        }
        self.stage_resources(&rec, &cfg).await?;
        let handle = rt.create(&rec, &cfg, &self.reporter(id)).await?;
        let held = rec.spec.held_at_creation();
        let cancelled = {
            let mut t = self.lock();
            let cancelled = t
                .kernels
                .get(id)
                .map(|e| e.rec.state.is_final())
                .unwrap_or(true);
            let reported = t
                .kernels
                .get(id)
                .is_some_and(|e| e.rec.state == KernelState::Creating && e.rec.handle.is_some());
            if !cancelled && reported {
                // Already CREATING since the runtime reported the instance: keep the last.
                if let Some(e) = t.kernels.get_mut(id) {
                    e.rec.handle = Some(handle.clone());
                    self.persist(&e.rec);
                }
            } else if !cancelled {
                let h = handle.clone();
                self.transition(&mut t, id, Transition::Created { held }, |r| {
                    r.handle = Some(h)
                })?;
            }
            cancelled
        };
        if cancelled {
            // Stopped or removed while it was being made: nothing of it stays behind.
            rt.destroy(&handle).await?;
            if self.with_record(id, |_| ()).is_none() {
                let mut gone = rec;
                gone.handle = Some(handle);
                let used = self.process_still_used(&gone);
                rt.release(&gone, used, &cfg).await;
            }
            return Ok(());
        }
        if held {
            return Ok(());
        }
        self.start_kernel(id).await
    }

    /// Lets the runtime make what the kernel needs (its image), following its progress: a
    /// pull makes the kernel PULLING, its progress and notes become events. Ends early when
    /// the kernel ends meanwhile.
    async fn prepare(
        &self,
        rt: &dyn Runtime,
        rec: &Record,
        cfg: &ClusterConfig,
    ) -> Result<(), KernelError> {
        let mut state = match self.lock().kernels.get(&rec.id) {
            Some(e) => e.state.subscribe(),
            None => return Err(KernelError::NotFound(rec.id.clone())),
        };
        let report = self.reporter(&rec.id);
        let prepared = tokio::select! {
            r = rt.prepare(rec, cfg, &report) => r,
            _ = state.wait_for(|s| s.is_final()) => Err(RuntimeError::Failed(
                "the kernel ended while its image was pulled".into(),
            )),
        };
        prepared?;
        let mut t = self.lock();
        if t.kernels.get(&rec.id).map(|e| e.rec.state) == Some(KernelState::Pulling) {
            self.transition(&mut t, &rec.id, Transition::PullFinished, |_| {})?;
        }
        Ok(())
    }

    /// What a runtime reports while it prepares or creates kernel `id`: a pull makes it
    /// PULLING, an instance that exists makes it CREATING (with its handle), progress and
    /// notes become events. Answers whether the kernel is still live.
    fn reporter(&self, id: &str) -> impl Fn(Progress) -> bool + Send + Sync + 'static {
        let me = self.clone();
        let id = id.to_string();
        move |p: Progress| {
            match p {
                Progress::Pulling => {
                    let mut t = me.lock();
                    let _ = me.transition(&mut t, &id, Transition::PullStarted, |_| {});
                }
                Progress::Pull(progress) => me.note(&id, String::new(), Some(progress)),
                Progress::Note(text) => me.note(&id, text, None),
                Progress::StillWanted => {}
                Progress::Created(handle) => {
                    let mut t = me.lock();
                    let live = t
                        .kernels
                        .get(&id)
                        .map(|e| (e.rec.state, e.rec.spec.held_at_creation()));
                    match live {
                        Some((s, held)) if !s.is_final() => {
                            let _ = me.transition(&mut t, &id, Transition::Created { held }, |r| {
                                r.handle = Some(handle)
                            });
                        }
                        _ => return false,
                    }
                }
            }
            me.with_record(&id, |r| !r.state.is_final())
                .unwrap_or(false)
        }
    }

    /// Starts a created kernel through its runtime and records it RUNNING (unless its end
    /// was already observed); the runtime's follow-up work is owned from here on.
    pub(super) async fn start_kernel(&self, id: &str) -> Result<(), KernelError> {
        let rec = self.record(id)?;
        let rt = self.runtime(&rec.runtime)?;
        let Some(handle) = rec.handle.clone() else {
            return Err(KernelError::Internal(format!(
                "kernel `{id}` has no instance to start"
            )));
        };
        let started = rt.start(&rec, &handle, &self.config()).await?;
        {
            let mut t = self.lock();
            if t.kernels.get(id).map(|e| e.rec.state) == Some(KernelState::Creating) {
                let at = if started.started_at_ms > 0 {
                    started.started_at_ms
                } else {
                    now_ms()
                };
                self.transition(&mut t, id, Transition::Started, |r| r.started_at_ms = at)?;
            }
        }
        for work in started.follow {
            self.spawn(work);
        }
        self.follow_progress(id);
        self.serve_ssh(id);
        Ok(())
    }

    /// Whether another kernel of `rec`'s process (any state) still uses its process data.
    pub(super) fn process_still_used(&self, rec: &Record) -> bool {
        let pid = &rec.spec.process_id;
        !pid.is_empty()
            && self
                .lock()
                .kernels
                .values()
                .any(|e| e.rec.id != rec.id && &e.rec.spec.process_id == pid)
    }
}

/// SHA-256 (hex) of a create request, secrets included: equal requests give equal digests
/// on every build. Fields left at their defaults are left out, so a field added to the spec
/// later does not change the digest of requests that do not use it.
pub fn digest(req: &CreateRequest) -> String {
    let mut v = serde_json::to_value(req).unwrap_or_default();
    prune_defaults(&mut v);
    let mut text = String::new();
    canonical(&v, &mut text);
    hex(&Sha256::digest(text.as_bytes()))
}

/// Compact JSON with object keys sorted, whatever map order serde_json was built with.
fn canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn prune_defaults(v: &mut serde_json::Value) {
    use serde_json::Value;
    if let Value::Object(map) = v {
        for child in map.values_mut() {
            prune_defaults(child);
        }
        map.retain(|_, child| match child {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
        });
    } else if let Value::Array(items) = v {
        for child in items {
            prune_defaults(child);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the runtime is told of each of `records`.
fn launches<'a>(records: &[&'a Record]) -> Vec<&'a crate::runtime::Launch> {
    records.iter().map(|r| &r.launch).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ArrayRequest;

    fn request() -> CreateRequest {
        CreateRequest {
            template: Template {
                kernel_id: "3f2b7c1e-0c4d-4e8a-9b1a-2d5e6f7a8b9c".into(),
                image: "deckhand-test/busybox:latest".into(),
                command: vec!["sh".into(), "-c".into(), "echo hi".into()],
                env: [("A".to_string(), "1".to_string())].into(),
                secret_env: [("TOKEN".to_string(), "s3cret".to_string())].into(),
                cpus: 0.5,
                memory: "64m".into(),
                ..Default::default()
            },
            array: Some(ArrayRequest {
                begin: 1,
                end: 4,
                step: 1,
                max_parallel: 2,
            }),
        }
    }

    #[test]
    fn the_digest_of_a_request_is_a_stable_literal() {
        // Computed once, and the same as Python's
        // `sha256(json.dumps(r, sort_keys=True, separators=(',', ':')))` of the request with
        // its default fields left out. It must never change across builds, Rust releases or
        // new spec fields, or a recovered kernel's repeated create would read as a conflict.
        assert_eq!(
            digest(&request()),
            "9b4c842b7a2e32c6c0b539bad5b36fd4862854563e4c8245270a48c40833d84e"
        );
    }

    #[test]
    fn any_difference_secrets_included_changes_the_digest() {
        let base = digest(&request());
        let mut other = request();
        other
            .template
            .secret_env
            .insert("TOKEN".into(), "other".into());
        assert_ne!(digest(&other), base);
        let mut other = request();
        other.array = None;
        assert_ne!(digest(&other), base);
    }
}

//! Renting an instance for a kernel: search the offers with `vast_api/offer_filters` (plus one
//! GPU per instance and the API's default filters), cheapest `dph_total` first within
//! `vast_api/max_dph` and what `vast_api/max_dph_total` leaves (the offer's price is reserved
//! in the total before it is ordered, so kernels ordered together cannot pass it); order the
//! first; if the offer is gone (`no_such_ask`), or the instance fails or is not running
//! within `vast_api/provision_timeout`, destroy it and take the next. Every step is a note in
//! the kernel's events. While a rental is in progress its label's token is known to the
//! runtime, so the poll loop does not take its instance, not recorded yet, for a leak.
//!
//! How the exit status is learned (the API gives none): when the kernel has a command, the
//! instance runs `sh -c '"$@"; …' deckhand COMMAND…`, which prints one marker line
//! `deckhand-exit <token> <code>` after the command ends (the token is per kernel, in the
//! instance's label). When the instance has exited, its last output is read back and the
//! code taken from the marker. Without a command (the image's own CMD), or without a shell
//! in the image, there is no marker: the kernel ends FAILED saying its exit code is unknown,
//! never an invented 0.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::api::{Api, ApiError, Offer};
use super::{label, VastRuntime};
use crate::config::vast::VastSettings;
use crate::config::ClusterConfig;
use crate::kernel::record::Record;
use crate::runtime::{Handle, Progress, Reporter, RuntimeError};

/// The marker line the wrapper prints: `deckhand-exit <token> <code>`.
pub const MARKER: &str = "deckhand-exit";

/// The offer query: the configured filters, one GPU per instance, the API's default filters
/// (verified, rentable, not rented, not external), `max_dph`, cheapest first.
pub fn offer_query(vs: &VastSettings) -> Value {
    let mut q = serde_json::Map::new();
    for (field, ops) in &vs.offer_filters {
        let ops: serde_json::Map<String, Value> =
            ops.iter().map(|(op, v)| (op.clone(), v.clone())).collect();
        q.insert(field.clone(), Value::Object(ops));
    }
    for (field, value) in [
        ("verified", json!(true)),
        ("rentable", json!(true)),
        ("rented", json!(false)),
        ("external", json!(false)),
        ("num_gpus", json!(1)),
    ] {
        q.insert(field.into(), json!({ "eq": value }));
    }
    if let Some(max) = vs.max_dph {
        let entry = q.entry("dph_total").or_insert_with(|| json!({}));
        if let Value::Object(ops) = entry {
            let lte = ops
                .get("lte")
                .and_then(Value::as_f64)
                .map_or(max, |v| v.min(max));
            ops.insert("lte".into(), json!(lte));
        }
    }
    q.insert("order".into(), json!([["dph_total", "asc"]]));
    q.insert("type".into(), json!("on-demand"));
    q.insert("limit".into(), json!(64));
    Value::Object(q)
}

/// The create body: the kernel's image, command and environment (as a Docker-mode kernel
/// gets it, plus TASK_BOOTSTRAP and TASK_PARENTS), its label, disk and registry login.
pub fn create_body(rec: &Record, cfg: &ClusterConfig, label: &str, token: &str) -> Value {
    let spec = &rec.spec;
    let mut env: BTreeMap<String, String> = spec.env.clone();
    env.insert("DECKHAND_KERNEL_ID".into(), rec.id.clone());
    env.insert("TASK_BOOTSTRAP".into(), "true".into());
    env.insert(
        "TASK_PARENTS".into(),
        serde_json::to_string(&spec.parents).unwrap_or_else(|_| "{}".into()),
    );
    let mut body = json!({
        "client_id": "me",
        "image": spec.image,
        "env": env,
        "runtype": "args",
        "disk": cfg.vast.disk_gb,
        "label": label,
    });
    if !spec.command.is_empty() {
        let script = format!("\"$@\"; code=$?; echo \"{MARKER} {token} $code\"; exit $code");
        let mut args = vec!["-c".to_string(), script, "deckhand".to_string()];
        args.extend(spec.command.iter().cloned());
        body["onstart"] = json!("sh");
        body["args"] = json!(args);
    }
    if let Some(r) = cfg.docker.registry_for(&spec.image) {
        body["image_login"] = json!(format!("-u {} -p {} {}", r.username, r.password, r.host));
    }
    body
}

/// The exit code in an instance's output: the last marker line with this kernel's token.
pub fn exit_code(output: &str, token: &str) -> Option<i64> {
    output.lines().rev().find_map(|line| {
        let rest = line.trim().strip_prefix(MARKER)?.trim_start();
        let code = rest.strip_prefix(token)?.trim();
        code.parse().ok()
    })
}

/// The output without the marker line (what `logs` shows and what is shipped).
pub fn without_marker(output: &str) -> String {
    let mut out: String = output
        .lines()
        .filter(|l| !l.trim_start().starts_with(MARKER))
        .collect::<Vec<_>>()
        .join("\n");
    if output.ends_with('\n') && !out.is_empty() {
        out.push('\n');
    }
    out
}

/// An API failure as the supervisor sees it: unreachable, or still rate limited or failing
/// with a 5xx once the retries ran out, is UNAVAILABLE (nothing changed; try again); a
/// refused key a precondition naming the setting; anything else a failure in the API's words.
pub(super) fn api_error(e: ApiError) -> RuntimeError {
    match e {
        _ if e.transient() => RuntimeError::Unavailable(e.to_string()),
        ApiError::Unauthorized(_) => RuntimeError::Precondition(e.to_string()),
        _ => RuntimeError::Failed(e.to_string()),
    }
}

impl VastRuntime {
    /// Orders an instance for `rec` and waits for it to run; see the module docs.
    pub(super) async fn provision(
        &self,
        rec: &Record,
        cfg: &ClusterConfig,
        report: &Reporter,
    ) -> Result<Handle, RuntimeError> {
        let affordable = self.affordable(cfg).await?;
        let api = self.api(cfg)?;
        let vs = &cfg.vast;
        let token = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let label = label(&self.namespace, &self.agent_id, &rec.id, &token);
        // Until this returns, instances with this token are being rented, not leaked.
        let _renting = self.start_renting(&token);
        let mut tried = Vec::new();
        for offer in &affordable {
            let gpu = &offer.gpu_name;
            // The price counts in the total from before the order: another kernel ordered
            // meanwhile sees it.
            self.reserve(&token, offer.dph_total, vs.max_dph_total)?;
            if !report(Progress::Note(format!(
                "ordering offer {} ({gpu}, ${:.3}/h)",
                offer.id, offer.dph_total
            ))) {
                return Err(cancelled());
            }
            let body = create_body(rec, cfg, &label, &token);
            let rented = api.rent(offer.id, body).await;
            if let Ok(instance) = &rented {
                self.track(*instance, &rec.id, offer.dph_total);
            }
            self.unreserve(&token);
            let instance = match rented {
                Ok(id) => id,
                Err(e) if e.code() == Some("no_such_ask") => {
                    report(Progress::Note(format!(
                        "offer {} was taken meanwhile (no_such_ask); taking the next offer",
                        offer.id
                    )));
                    tried.push(format!("offer {}: no_such_ask", offer.id));
                    continue;
                }
                Err(e) => return Err(api_error(e)),
            };
            let handle = Handle {
                runtime: super::NAME.into(),
                version: 1,
                instance: instance.to_string(),
                data: json!({
                    "kernel_id": rec.id,
                    "offer_id": offer.id,
                    "gpu_name": gpu,
                    "dph": offer.dph_total,
                    "token": token,
                }),
            };
            if !report(Progress::Created(handle.clone())) {
                let _ = self.destroy_instance(&api, instance).await;
                return Err(cancelled());
            }
            match self.wait_running(&api, instance, vs, report).await {
                Ok(()) => {
                    report(Progress::Note(format!(
                        "instance {instance} is running (offer {}, {gpu}, ${:.3}/h)",
                        offer.id, offer.dph_total
                    )));
                    return Ok(handle);
                }
                Err(Waited::Cancelled) => {
                    let _ = self.destroy_instance(&api, instance).await;
                    return Err(cancelled());
                }
                Err(Waited::Failed(reason)) => {
                    report(Progress::Note(format!(
                        "instance {instance} (offer {}): {reason}; destroying it and taking the next offer",
                        offer.id
                    )));
                    if let Err(e) = self.destroy_instance(&api, instance).await {
                        tracing::warn!(kernel_id = %rec.id, instance, error = %e, "cannot destroy a failed instance");
                    }
                    tried.push(format!("offer {}: {reason}", offer.id));
                }
            }
        }
        Err(RuntimeError::Failed(format!(
            "no offer could be provisioned ({})",
            tried.join("; ")
        )))
    }

    /// The offers a new instance may be rented from now, cheapest first: the filters,
    /// `max_dph`, and what `max_dph_total` leaves beside this agent's instances.
    /// RESOURCE_EXHAUSTED naming the setting when the market or the budget has none.
    pub(super) async fn affordable(&self, cfg: &ClusterConfig) -> Result<Vec<Offer>, RuntimeError> {
        let vs = &cfg.vast;
        let api = self.api(cfg)?;
        let offers = api.search(&offer_query(vs)).await.map_err(api_error)?;
        if offers.is_empty() {
            return Err(RuntimeError::Exhausted(
                "vast_api/offer_filters: no Vast.ai offer matches now (with one GPU, verified, rentable, within vast_api/max_dph)".into(),
            ));
        }
        let committed = self.committed_dph();
        let budget = vs.max_dph_total.map(|t| t - committed);
        let affordable: Vec<Offer> = offers
            .iter()
            .filter(|o| vs.max_dph.is_none_or(|m| o.dph_total <= m + 1e-9))
            .filter(|o| budget.is_none_or(|b| o.dph_total <= b + 1e-9))
            .cloned()
            .collect();
        if affordable.is_empty() {
            return Err(RuntimeError::Exhausted(format!(
                "vast_api/max_dph_total: ${committed:.3}/h of ${:.3}/h is in use; the cheapest matching offer costs ${:.3}/h",
                vs.max_dph_total.unwrap_or_default(),
                offers.iter().map(|o| o.dph_total).fold(f64::MAX, f64::min)
            )));
        }
        Ok(affordable)
    }

    /// Waits until `instance` runs, fails, or `vast_api/provision_timeout` passes. The API
    /// being unreachable meanwhile only delays it. This is a poll of the instance's status
    /// every `poll_interval` (at most 5 s) up to a deadline, not a retry of a failed call:
    /// the calls themselves are retried inside [`Api`].
    async fn wait_running(
        &self,
        api: &Api,
        instance: u64,
        vs: &VastSettings,
        report: &Reporter,
    ) -> Result<(), Waited> {
        let deadline = Instant::now() + vs.provision_timeout;
        let mut last_status = String::new();
        loop {
            match api.instance(instance).await {
                Ok(Some(row)) => {
                    let status = row.actual_status.clone().unwrap_or_default();
                    let msg = row.status_msg.clone().unwrap_or_default();
                    // A command that ends at once may be seen `exited` first: it ran.
                    if (status == "running" || status == "exited") && !msg.contains("Error") {
                        return Ok(());
                    }
                    if matches!(status.as_str(), "exited" | "offline" | "unknown")
                        || msg.contains("Error")
                    {
                        let words = if msg.is_empty() { status } else { msg };
                        return Err(Waited::Failed(format!(
                            "failed while provisioning: {words}"
                        )));
                    }
                    let shown = if status.is_empty() {
                        "provisioning"
                    } else {
                        &status
                    };
                    if shown != last_status {
                        last_status = shown.to_string();
                        if !report(Progress::Note(format!("instance {instance}: {shown}"))) {
                            return Err(Waited::Cancelled);
                        }
                    }
                }
                Ok(None) => {
                    return Err(Waited::Failed("the instance disappeared".into()));
                }
                Err(e) => {
                    tracing::debug!(instance, error = %e, "instance status not read; waiting on");
                }
            }
            if Instant::now() >= deadline {
                return Err(Waited::Failed(format!(
                    "not running after {} (vast_api/provision_timeout)",
                    humantime::format_duration(vs.provision_timeout)
                )));
            }
            if !report(Progress::StillWanted) {
                return Err(Waited::Cancelled);
            }
            let wait = vs.poll_interval.min(Duration::from_secs(5));
            tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }
}

enum Waited {
    Cancelled,
    Failed(String),
}

fn cancelled() -> RuntimeError {
    RuntimeError::Failed("stopped while its instance was being provisioned".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_code_comes_from_this_kernels_marker_only() {
        let out = "hello\ndeckhand-exit other 0\nbye\ndeckhand-exit abc123 3\n";
        assert_eq!(exit_code(out, "abc123"), Some(3));
        assert_eq!(exit_code("deckhand-exit abc123 0\n", "abc123"), Some(0));
        assert_eq!(exit_code("no marker\n", "abc123"), None);
        assert_eq!(without_marker(out), "hello\nbye\n");
    }

    #[test]
    fn a_429_or_5xx_that_outlasts_the_retries_is_unavailable_not_a_failure() {
        let refused = |status: u16| ApiError::Refused {
            status,
            code: String::new(),
            msg: "x".into(),
        };
        for status in [429, 500, 502, 503, 504] {
            assert!(
                matches!(api_error(refused(status)), RuntimeError::Unavailable(_)),
                "{status}"
            );
        }
        assert!(matches!(api_error(refused(400)), RuntimeError::Failed(_)));
        assert!(matches!(
            api_error(ApiError::Unauthorized("401".into())),
            RuntimeError::Precondition(_)
        ));
        assert!(refused(404).gone() && !refused(410).gone());
    }

    #[test]
    fn the_query_adds_one_gpu_the_default_filters_and_max_dph() {
        let mut vs = VastSettings {
            max_dph: Some(0.5),
            ..VastSettings::default()
        };
        vs.offer_filters
            .entry("gpu_name".into())
            .or_default()
            .insert("eq".into(), json!("RTX 3090"));
        let q = offer_query(&vs);
        assert_eq!(q["gpu_name"], json!({"eq": "RTX 3090"}));
        assert_eq!(q["num_gpus"], json!({"eq": 1}));
        assert_eq!(q["verified"], json!({"eq": true}));
        assert_eq!(q["rented"], json!({"eq": false}));
        assert_eq!(q["dph_total"], json!({"lte": 0.5}));
        assert_eq!(q["order"], json!([["dph_total", "asc"]]));
    }
}

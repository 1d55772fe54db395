//! Renting an instance for a kernel: search the offers (`offers::offer_query`), cheapest
//! `dph_total` first within `vast_api/max_dph` and what `vast_api/max_dph_total` leaves (the
//! offer's price is reserved in the total before it is ordered, so kernels ordered together
//! cannot pass it); order the first; if the offer is gone (`no_such_ask`), or the instance
//! fails or is not running within `vast_api/provision_timeout`, destroy it (confirmed) and
//! take the next. Every step is a note in the kernel's events. While a rental is in
//! progress its label's token is known to the runtime, so the poll loop does not take its
//! instance, not recorded yet, for a leak.
//!
//! Money first:
//! - **No double rental.** A create answered with a 5xx, or not at all, may have rented.
//!   It is never sent again blind: the instances are searched for this kernel's label
//!   first, and one found is adopted as this order's instance; only when none carries it is
//!   the order sent again. A 429 is resent as is (the API did nothing).
//! - **The API failing for a while delays a kernel, never fails it.** A search, order or
//!   look-up that still gets 429s, 5xx or no connection once its own retries are spent is
//!   tried again with backoff (1 s doubling to 10 s) while the kernel is wanted; the kernel
//!   stays PREPARING, and the first wait is a note in its events.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::api::{Api, ApiError, Offer};
use super::offers::{create_body, disk_gb, offer_query};
use super::{label, VastRuntime};
use crate::config::vast::VastSettings;
use crate::config::ClusterConfig;
use crate::runtime::Launch;
use crate::runtime::{Handle, Progress, Reporter, RuntimeError};
use crate::spec::Spec;

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

/// The longest wait between two tries of a step the API keeps failing.
const PATIENCE_CAP: Duration = Duration::from_secs(10);

/// How one order ended.
enum Ordered {
    Rented(u64),
    /// `no_such_ask`: the API's words.
    Taken(String),
}

impl VastRuntime {
    /// Orders an instance for `rec` and waits for it to run; see the module docs.
    pub(super) async fn provision(
        &self,
        rec: &Launch,
        cfg: &ClusterConfig,
        report: &Reporter,
    ) -> Result<Handle, RuntimeError> {
        let affordable = self
            .patiently("searching offers", report, || {
                self.affordable(&rec.spec, cfg)
            })
            .await?;
        let api = self.api(cfg)?;
        let vs = &cfg.vast;
        let token = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let label = label(&self.namespace, &self.agent_id, &rec.id, &token);
        // Until this returns, instances with this token are being rented, not leaked.
        let _renting = self.start_renting(&token);
        let mut tried = Vec::new();
        for (i, offer) in affordable.iter().enumerate() {
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
            let body = create_body(&rec.spec, &rec.id, cfg, &label, &token);
            let ordered = self.order(&api, offer, &body, &label, report).await;
            if let Ok(Ordered::Rented(instance)) = &ordered {
                self.track(*instance, &rec.id, offer.dph_total);
            }
            self.unreserve(&token);
            let instance = match ordered? {
                Ordered::Rented(id) => id,
                Ordered::Taken(words) => {
                    let next = match affordable.get(i + 1) {
                        Some(n) => format!("taking the next offer, {}", n.id),
                        None => "no other offer matches".into(),
                    };
                    report(Progress::Note(format!(
                        "offer {} was taken meanwhile (no_such_ask: {words}); {next}",
                        offer.id
                    )));
                    tried.push(format!("offer {}: no_such_ask", offer.id));
                    continue;
                }
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

    /// One order of `offer`, resolved: rented (by this call, or by an earlier one whose
    /// answer was lost), or taken. Never sends the create again while an instance with this
    /// kernel's `label` may exist.
    async fn order(
        &self,
        api: &Api,
        offer: &Offer,
        body: &Value,
        label: &str,
        report: &Reporter,
    ) -> Result<Ordered, RuntimeError> {
        let mut wait = Duration::from_secs(1);
        loop {
            let e = match api.rent(offer.id, body.clone()).await {
                Ok(id) => return Ok(Ordered::Rented(id)),
                Err(e) if e.taken() => return Ok(Ordered::Taken(words(&e))),
                Err(e) if !e.transient() => return Err(api_error(e)),
                Err(e) => e,
            };
            if !e.rate_limited() {
                // A 5xx or a lost reply: the order may have rented.
                report(Progress::Note(format!(
                    "the order of offer {} got no clear answer ({e}); looking for an instance with this kernel's label before ordering again",
                    offer.id
                )));
                let found = self
                    .patiently("looking for this kernel's instance", report, || async {
                        api.labelled(label).await.map_err(api_error)
                    })
                    .await?;
                let mut found = found.into_iter().filter(|r| !self.is_destroyed(r.id));
                if let Some(row) = found.next() {
                    report(Progress::Note(format!(
                        "instance {} carries this kernel's label: the order of offer {} rented it; adopting it instead of ordering again",
                        row.id, offer.id
                    )));
                    return Ok(Ordered::Rented(row.id));
                }
            }
            tracing::info!(offer = offer.id, error = %e, wait_ms = wait.as_millis() as u64, "no instance was rented; ordering the offer again");
            if !report(Progress::StillWanted) {
                return Err(cancelled());
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(PATIENCE_CAP);
        }
    }

    /// `step` until it answers: a passing failure (UNAVAILABLE: a 429 storm, 5xx, the API
    /// down) is tried again with backoff while the kernel is still wanted, the first time
    /// with a note; any other answer is returned.
    async fn patiently<T, F, Fut>(
        &self,
        what: &str,
        report: &Reporter,
        mut step: F,
    ) -> Result<T, RuntimeError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RuntimeError>>,
    {
        let mut wait = Duration::from_secs(1);
        let mut said = false;
        loop {
            match step().await {
                Err(RuntimeError::Unavailable(e)) => {
                    if !said {
                        said = true;
                        report(Progress::Note(format!(
                            "{what}: {e}; trying again while the kernel waits"
                        )));
                    }
                    tracing::info!(error = %e, wait_ms = wait.as_millis() as u64, "{what}: the Vast.ai API keeps failing; trying again");
                    if !report(Progress::StillWanted) {
                        return Err(cancelled());
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(PATIENCE_CAP);
                }
                other => return other,
            }
        }
    }

    /// The offers a new instance for `spec` may be rented from now, cheapest first: the
    /// filters, `max_dph`, and what `max_dph_total` leaves beside this agent's instances.
    /// RESOURCE_EXHAUSTED naming the setting when the market or the budget has none.
    pub(super) async fn affordable(
        &self,
        spec: &Spec,
        cfg: &ClusterConfig,
    ) -> Result<Vec<Offer>, RuntimeError> {
        let vs = &cfg.vast;
        let api = self.api(cfg)?;
        let query = offer_query(vs, disk_gb(spec, cfg));
        let offers = api.search(&query).await.map_err(api_error)?;
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

/// The API's words of a refusal.
fn words(e: &ApiError) -> String {
    match e {
        ApiError::Refused { msg, .. } => msg.clone(),
        other => other.to_string(),
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
}

//! The label that ties a rented instance to its kernel, and what a kernel's handle holds.

use super::*;

/// `deckhand:<namespace>:<agent>:<kernel>:<token>`.
pub fn label(namespace: &str, agent_id: &str, kernel_id: &str, token: &str) -> String {
    format!("deckhand:{namespace}:{agent_id}:{kernel_id}:{token}")
}

/// The kernel id and token of a label of this agent's, `None` for anyone else's.
pub fn parse_label(namespace: &str, agent_id: &str, label: &str) -> Option<(String, String)> {
    let rest = label.strip_prefix(&format!("deckhand:{namespace}:{agent_id}:"))?;
    let (kernel, token) = rest.rsplit_once(':')?;
    Some((kernel.to_string(), token.to_string()))
}

/// The kernel a handle's instance runs.
pub(super) fn handle_kernel(h: &Handle) -> String {
    h.data
        .get("kernel_id")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

/// What a handle says: instance id, offer id, GPU, price, token.
pub(super) fn handle_facts(h: &Handle) -> (u64, u64, String, f64, String) {
    let d = &h.data;
    (
        h.instance.parse().unwrap_or(0),
        d.get("offer_id").and_then(|v| v.as_u64()).unwrap_or(0),
        d.get("gpu_name")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string(),
        d.get("dph").and_then(|v| v.as_f64()).unwrap_or(0.0),
        d.get("token")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string(),
    )
}

//! What deckhand sends to rent an instance: the offer query and the create body, and how
//! the exit status comes back in the instance's output.
//!
//! The query is `vast_api/offer_filters` plus one GPU per instance and the CLI's default
//! filters (verified, rentable, not rented, not external), `vast_api/max_dph`, cheapest
//! first, with `allocated_storage` set to the kernel's disk so that `dph_total` is the price
//! that will be billed, storage included (the API prices storage into `dph_total` for the
//! `allocated_storage` given; the CLI defaults it to 5 GB, less than an instance's disk).
//!
//! How the exit status is learned (the API gives none): when the kernel has a command, the
//! instance runs `sh -c '"$@"; …' deckhand COMMAND…`, which prints one marker line
//! `deckhand-exit <token> <code>` after the command ends (the token is per kernel, in the
//! instance's label). When the instance has exited, its last output is read back and the
//! code taken from the marker. Without a command (the image's own CMD), or without a shell
//! in the image, there is no marker: the kernel ends FAILED saying its exit code is unknown,
//! never an invented 0.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::config::vast::VastSettings;
use crate::config::ClusterConfig;
use crate::spec::Spec;

/// The marker line the wrapper prints: `deckhand-exit <token> <code>`.
pub const MARKER: &str = "deckhand-exit";

/// The kernel's disk in GB (Vast.ai counts decimal GB): `--storage-opt size=` when given,
/// else `vast_api/disk_gb`.
pub fn disk_gb(spec: &Spec, cfg: &ClusterConfig) -> f64 {
    spec.storage_opt
        .get("size")
        .and_then(|b| b.parse::<u64>().ok())
        .filter(|b| *b > 0)
        .map_or(cfg.vast.disk_gb, |b| b as f64 / 1e9)
}

/// The offer query for a kernel with `disk_gb` of disk; see the module docs.
pub fn offer_query(vs: &VastSettings, disk_gb: f64) -> Value {
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
    q.insert("allocated_storage".into(), json!(disk_gb));
    Value::Object(q)
}

/// The create body: the kernel's image, command and environment (as a Docker-mode kernel
/// gets it, plus TASK_BOOTSTRAP and TASK_PARENTS), its label, disk and registry login.
pub fn create_body(
    spec: &Spec,
    kernel_id: &str,
    cfg: &ClusterConfig,
    label: &str,
    token: &str,
) -> Value {
    let mut env: BTreeMap<String, String> = spec.env.clone();
    env.insert("DECKHAND_KERNEL_ID".into(), kernel_id.to_string());
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
        "disk": disk_gb(spec, cfg),
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
        body["image_login"] = json!(format!(
            "-u {} -p {} {}",
            r.username,
            r.password.expose(),
            r.host
        ));
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
    fn the_query_adds_one_gpu_the_default_filters_max_dph_and_the_disk() {
        let mut vs = VastSettings {
            max_dph: Some(0.5),
            ..VastSettings::default()
        };
        vs.offer_filters
            .entry("gpu_name".into())
            .or_default()
            .insert("eq".into(), json!("RTX 3090"));
        let q = offer_query(&vs, 32.0);
        assert_eq!(q["gpu_name"], json!({"eq": "RTX 3090"}));
        assert_eq!(q["num_gpus"], json!({"eq": 1}));
        assert_eq!(q["verified"], json!({"eq": true}));
        assert_eq!(q["rented"], json!({"eq": false}));
        assert_eq!(q["dph_total"], json!({"lte": 0.5}));
        assert_eq!(q["order"], json!([["dph_total", "asc"]]));
        assert_eq!(q["allocated_storage"], json!(32.0));
    }

    #[test]
    fn the_disk_is_the_kernels_storage_size_else_the_setting() {
        let cfg = ClusterConfig::default();
        let t = crate::spec::Template {
            kernel_id: uuid::Uuid::new_v4().to_string(),
            image: "busybox".into(),
            ..Default::default()
        };
        let mut spec = crate::spec::validate(&t, &Default::default()).unwrap();
        assert_eq!(disk_gb(&spec, &cfg), cfg.vast.disk_gb);
        spec.storage_opt.insert("size".into(), "50000000000".into());
        assert_eq!(disk_gb(&spec, &cfg), 50.0);
        let body = create_body(&spec, "k", &cfg, "l", "t");
        assert_eq!(body["disk"], json!(50.0));
    }
}

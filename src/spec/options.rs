//! Options as the spec writes them: text fields, environment maps, restart policies, GPU
//! requests and ulimits.

use std::collections::BTreeMap;

use super::{GpuRequest, SpecError, Ulimit};
use crate::config::schema;

pub(super) fn restart_policy(v: &str) -> Result<(String, i64), SpecError> {
    let (name, n) = match v.split_once(':') {
        Some((name, n)) => (name, Some(n)),
        None => (v, None),
    };
    let bad = || {
        SpecError::invalid(
            "restart_policy",
            format!("`{v}`: expected no, on-failure[:N], always or unless-stopped"),
        )
    };
    match (name, n) {
        ("" | "no", None) => Ok(("no".into(), 0)),
        ("always" | "unless-stopped", None) => Ok((name.into(), 0)),
        ("on-failure", None) => Ok((name.into(), 0)),
        ("on-failure", Some(n)) => {
            let attempts = || {
                SpecError::invalid(
                    "restart_policy",
                    format!("`{v}`: N (restarts before giving up) must be a whole number from 0 to 1000"),
                )
            };
            let n: i64 = n.parse().map_err(|_| attempts())?;
            if !(0..=1000).contains(&n) {
                return Err(attempts());
            }
            Ok((name.into(), n))
        }
        _ => Err(bad()),
    }
}

/// `restart_delay`: a duration up to 1h, only beside `on-failure` (the policy the agent
/// carries out itself when a delay is given).
pub(super) fn restart_delay(v: &str, policy: &str) -> Result<std::time::Duration, SpecError> {
    if v.is_empty() {
        return Ok(std::time::Duration::ZERO);
    }
    let d = schema::parse_duration(v).map_err(|r| SpecError::invalid("restart_delay", r))?;
    if d > std::time::Duration::from_secs(3600) {
        return Err(SpecError::invalid(
            "restart_delay",
            format!("`{v}`: at most 1h"),
        ));
    }
    if policy != "on-failure" {
        return Err(SpecError::invalid(
            "restart_delay",
            format!("`{v}` needs restart_policy `on-failure[:N]` (it is `{policy}`)"),
        ));
    }
    Ok(d)
}

pub(super) fn gpu_request(v: &str) -> Result<GpuRequest, SpecError> {
    let v = v.trim();
    if v.is_empty() || v == "0" {
        return Ok(GpuRequest::None);
    }
    if v == "all" {
        return Ok(GpuRequest::All);
    }
    if let Ok(n) = v.parse::<u32>() {
        if n > 64 {
            return Err(SpecError::invalid("gpus", format!("{n} GPUs; at most 64")));
        }
        return Ok(GpuRequest::Count(n));
    }
    if v.starts_with('-') {
        return Err(SpecError::invalid(
            "gpus",
            format!("`{v}` is negative; give `all`, a count or GPU UUIDs"),
        ));
    }
    let mut ids = Vec::new();
    for part in v.split(',') {
        let id = schema::normalize_gpu_id(part).map_err(|r| SpecError::invalid("gpus", r))?;
        if ids.contains(&id) {
            return Err(SpecError::invalid("gpus", format!("`{id}` is named twice")));
        }
        ids.push(id);
    }
    Ok(GpuRequest::Ids(ids))
}

const ULIMITS: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// `memlock=-1,stack=67108864`, each `name=soft[:hard]`.
pub(super) fn ulimits(v: &str) -> Result<Vec<Ulimit>, SpecError> {
    let mut out: Vec<Ulimit> = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = |why: String| SpecError::invalid("ulimits", format!("`{item}`: {why}"));
        let (name, vals) = item
            .split_once('=')
            .ok_or_else(|| bad("expected name=soft[:hard]".into()))?;
        if !ULIMITS.contains(&name) {
            return Err(bad(format!("unknown limit; known: {}", ULIMITS.join(", "))));
        }
        let (soft, hard) = match vals.split_once(':') {
            Some((s, h)) => (s, h),
            None => (vals, vals),
        };
        let soft: i64 = soft.parse().map_err(|_| bad("not a number".into()))?;
        let hard: i64 = hard.parse().map_err(|_| bad("not a number".into()))?;
        if soft < -1 || hard < -1 || (hard != -1 && (soft == -1 || soft > hard)) {
            return Err(bad("soft must be ≤ hard (-1 = unlimited)".into()));
        }
        if out.iter().any(|u| u.name == name) {
            return Err(bad("given twice".into()));
        }
        out.push(Ulimit {
            name: name.into(),
            soft,
            hard,
        });
    }
    Ok(out)
}

pub(super) fn text(field: &str, v: &str, max: usize) -> Result<(), SpecError> {
    if v.len() > max || v.chars().any(|c| c.is_control()) {
        return Err(SpecError::invalid(
            field,
            format!("at most {max} bytes of printable text"),
        ));
    }
    Ok(())
}

/// Returns the map's size in bytes.
pub(super) fn env_map(field: &str, env: &BTreeMap<String, String>) -> Result<usize, SpecError> {
    let mut size = 0;
    for (k, v) in env {
        let valid_name = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(SpecError::invalid(
                format!("{field}[{k:?}]"),
                "a variable name is letters, digits and `_`, not starting with a digit (no `=` or NUL)",
            ));
        }
        if v.contains('\0') {
            return Err(SpecError::invalid(
                format!("{field}[{k}]"),
                "the value contains a NUL byte",
            ));
        }
        size += k.len() + v.len() + 2;
    }
    Ok(size)
}

/// Parent tasks (`--parent ID=SLUG`): printable ids, slugs as the spec's own.
pub(super) fn parents(p: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, SpecError> {
    if p.len() > 256 {
        return Err(SpecError::invalid("parents", "at most 256 parents"));
    }
    for (id, slug) in p {
        let field = format!("parents[{id:?}]");
        if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
            return Err(SpecError::invalid(
                field,
                "a parent id is 1-128 printable characters",
            ));
        }
        if slug.len() > 64
            || !slug
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return Err(SpecError::invalid(
                field,
                format!("`{slug}`: a slug is at most 64 letters, digits, `_`, `-`, `.`"),
            ));
        }
    }
    Ok(p.clone())
}

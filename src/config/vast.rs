//! The `vast_api/` settings of the Vast.ai runtime, under the Ponos agent's own section name
//! (so a Ponos operator's `vast_api.api_key` and `vast_api.offer_filters` carry over): the
//! keys and their checks, the offer-filter language (only the API's fields and operators),
//! and the typed [`VastSettings`].

use std::collections::BTreeMap;
use std::time::Duration;

use super::profiles::S3Settings;
use super::schema::{self, KeySpec, Kind};
use super::tree::FlatTree;
use crate::util::secret::Secret;

/// The Vast.ai API, as the official CLI reaches it.
pub const DEFAULT_API_URL: &str = "https://console.vast.ai";

/// Offer fields the search API takes (`offers_fields` of the official CLI) and its aliases.
pub const OFFER_FIELDS: &[&str] = &[
    "bw_nvlink",
    "compute_cap",
    "cpu_arch",
    "cpu_cores",
    "cpu_cores_effective",
    "cpu_ghz",
    "cpu_ram",
    "cuda_max_good",
    "datacenter",
    "direct_port_count",
    "driver_version",
    "disk_bw",
    "disk_space",
    "dlperf",
    "dlperf_per_dphtotal",
    "dph_total",
    "duration",
    "external",
    "flops_per_dphtotal",
    "gpu_arch",
    "gpu_display_active",
    "gpu_frac",
    "gpu_mem_bw",
    "gpu_name",
    "gpu_ram",
    "gpu_total_ram",
    "gpu_max_power",
    "gpu_max_temp",
    "has_avx",
    "host_id",
    "id",
    "inet_down",
    "inet_down_cost",
    "inet_up",
    "inet_up_cost",
    "machine_id",
    "min_bid",
    "mobo_name",
    "num_gpus",
    "pci_gen",
    "pcie_bw",
    "reliability",
    "rentable",
    "rented",
    "storage_cost",
    "static_ip",
    "total_flops",
    "ubuntu_version",
    "verification",
    "verified",
    "vms_enabled",
    "geolocation",
    "cluster_id",
    "reliability2",
];

/// Aliases the official CLI accepts for offer fields.
const OFFER_ALIASES: &[(&str, &str)] = &[
    ("cuda_vers", "cuda_max_good"),
    ("dph", "dph_total"),
    ("display_active", "gpu_display_active"),
];

/// Fields whose values are text (everything else is a number or a boolean).
const TEXT_FIELDS: &[&str] = &[
    "cpu_arch",
    "gpu_arch",
    "gpu_name",
    "mobo_name",
    "geolocation",
    "ubuntu_version",
    "verification",
];

pub const OPERATORS: &[&str] = &["eq", "neq", "gt", "gte", "lt", "lte", "in", "notin"];

pub static KEYS: &[KeySpec] = &[
    KeySpec {
        pattern: "vast_api/api_key",
        kind: Kind::Secret,
        help: "Vast.ai API key (never shown); checked against the API when it changes",
    },
    KeySpec {
        pattern: "vast_api/api_url",
        kind: Kind::HttpUrl,
        help: "base URL of the Vast.ai API (default https://console.vast.ai)",
    },
    KeySpec {
        pattern: "vast_api/offer_filters/*/*",
        kind: Kind::OfferFilter,
        help: "offer query: field → {op = value}, ops eq neq gt gte lt lte (in, notin take lists)",
    },
    KeySpec {
        pattern: "vast_api/offer_filters/*/*/*",
        kind: Kind::OfferFilter,
        help: "an item of an `in`/`notin` offer filter list",
    },
    KeySpec {
        pattern: "vast_api/max_instances",
        kind: Kind::Int { min: 1, max: 1000 },
        help: "instances this agent rents at once (default 1): the runtime's capacity",
    },
    KeySpec {
        pattern: "vast_api/max_dph",
        kind: Kind::Float {
            min: 0.0,
            max: 10_000.0,
        },
        help: "most dollars per hour for one instance (default: no limit)",
    },
    KeySpec {
        pattern: "vast_api/max_dph_total",
        kind: Kind::Float {
            min: 0.0,
            max: 1_000_000.0,
        },
        help: "most dollars per hour for all of this agent's instances (default: no limit)",
    },
    KeySpec {
        pattern: "vast_api/disk_gb",
        kind: Kind::Float {
            min: 8.0,
            max: 100_000.0,
        },
        help: "disk of each instance in GB (default 10; the API's minimum is 8)",
    },
    KeySpec {
        pattern: "vast_api/provision_timeout",
        kind: Kind::Duration {
            min: Duration::from_secs(1),
            max: Duration::from_secs(24 * 3600),
        },
        help: "an instance not running by then is destroyed and the next offer taken (default 10m)",
    },
    KeySpec {
        pattern: "vast_api/poll_interval",
        kind: Kind::Duration {
            min: Duration::from_millis(100),
            max: Duration::from_secs(600),
        },
        help: "how often the agent lists its instances (default 10s; the API has no events)",
    },
    KeySpec {
        pattern: "vast_api/log_interval",
        kind: Kind::Duration {
            min: Duration::from_millis(500),
            max: Duration::from_secs(3600),
        },
        help: "how often a running instance's logs are shipped to S3 (default 60s)",
    },
    KeySpec {
        pattern: "vast_api/logs/endpoint",
        kind: Kind::HttpUrl,
        help: "S3 endpoint the instances' logs are shipped to (default: AWS)",
    },
    KeySpec {
        pattern: "vast_api/logs/bucket",
        kind: Kind::Text,
        help: "S3 bucket of the shipped logs",
    },
    KeySpec {
        pattern: "vast_api/logs/region",
        kind: Kind::Text,
        help: "S3 region (default us-east-1)",
    },
    KeySpec {
        pattern: "vast_api/logs/prefix",
        kind: Kind::Text,
        help: "key prefix of the shipped logs: <prefix>/<namespace>/<kernel id>.log",
    },
    KeySpec {
        pattern: "vast_api/logs/access_key",
        kind: Kind::Text,
        help: "S3 access key id",
    },
    KeySpec {
        pattern: "vast_api/logs/secret_key",
        kind: Kind::Secret,
        help: "S3 secret key (never shown)",
    },
];

/// Checks an offer-filter key (`vast_api/offer_filters/<field>/<op>[/<n>]`) and its value:
/// only the API's fields and operators, lists only for `in`/`notin`.
pub fn check_filter(key: &str, value: &str) -> Result<(), String> {
    let parts: Vec<&str> = key.split('/').collect();
    let (field, op, item) = match parts.as_slice() {
        [_, _, f, o] => (*f, *o, None),
        [_, _, f, o, i] => (*f, *o, Some(*i)),
        _ => return Err("write a filter as offer_filters.<field> = {<op> = <value>}".into()),
    };
    let field = canonical_field(field).ok_or_else(|| {
        format!("`{field}` is not an offer field of the Vast.ai API; verify your offer_filters are supported (fields: {})", OFFER_FIELDS.join(", "))
    })?;
    if !OPERATORS.contains(&op) {
        return Err(format!(
            "`{op}` is not an operator of the Vast.ai API; verify your offer_filters are supported (operators: {})",
            OPERATORS.join(", ")
        ));
    }
    let list = matches!(op, "in" | "notin");
    match (list, item) {
        (true, None) => return Err(format!("`{op}` takes a list: {field} = {{{op} = [..]}}")),
        (false, Some(_)) => return Err(format!("`{op}` takes one value, not a list")),
        (true, Some(i)) if i.parse::<u32>().is_err() => {
            return Err(format!("`{op}` takes a list: {field} = {{{op} = [..]}}"))
        }
        _ => {}
    }
    typed(field, value).map(|_| ())
}

fn canonical_field(field: &str) -> Option<&'static str> {
    OFFER_FIELDS
        .iter()
        .find(|f| **f == field)
        .copied()
        .or_else(|| {
            OFFER_ALIASES
                .iter()
                .find(|(a, _)| *a == field)
                .map(|(_, f)| *f)
        })
}

/// A filter value as JSON: text for text fields, else a boolean or a number.
fn typed(field: &str, value: &str) -> Result<serde_json::Value, String> {
    let v = value.trim();
    if TEXT_FIELDS.contains(&field) {
        return Ok(serde_json::Value::String(v.to_string()));
    }
    if let Ok(b) = schema::parse_bool(v) {
        return Ok(serde_json::Value::Bool(b));
    }
    v.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .and_then(serde_json::Number::from_f64)
        .map(|n| {
            if v.parse::<i64>().is_ok() {
                serde_json::Value::from(v.parse::<i64>().unwrap_or_default())
            } else {
                serde_json::Value::Number(n)
            }
        })
        .ok_or_else(|| format!("`{value}`: {field} takes a number or true/false"))
}

/// Where the logs of instances are shipped: a bucket and prefix of an S3 store.
#[derive(Debug, Clone, PartialEq)]
pub struct LogShipping {
    pub s3: S3Settings,
    pub bucket: String,
    pub prefix: String,
}

/// The typed `vast_api/` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct VastSettings {
    pub api_key: Secret,
    pub api_url: String,
    /// field → op → JSON value (lists for in/notin).
    pub offer_filters: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    pub max_instances: u32,
    pub max_dph: Option<f64>,
    pub max_dph_total: Option<f64>,
    pub disk_gb: f64,
    pub provision_timeout: Duration,
    pub poll_interval: Duration,
    pub log_interval: Duration,
    pub logs: Option<LogShipping>,
}

impl Default for VastSettings {
    fn default() -> Self {
        Self {
            api_key: Secret::default(),
            api_url: DEFAULT_API_URL.into(),
            offer_filters: BTreeMap::new(),
            max_instances: 1,
            max_dph: None,
            max_dph_total: None,
            disk_gb: 10.0,
            provision_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(10),
            log_interval: Duration::from_secs(60),
            logs: None,
        }
    }
}

impl VastSettings {
    /// Whether this agent can rent instances (an API key is set).
    pub fn enabled(&self) -> bool {
        !self.api_key.is_empty()
    }

    /// Reads the `vast_api/` keys of a validated tree.
    pub fn from_tree(tree: &FlatTree) -> Self {
        let mut s = Self::default();
        let get = |k: &str| tree.get(k).map(|v| v.trim().to_string());
        let dur = |k: &str| get(k).and_then(|v| schema::parse_duration(&v).ok());
        let float = |k: &str| get(k).and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = get("vast_api/api_key") {
            s.api_key = v.into();
        }
        if let Some(v) = get("vast_api/api_url") {
            s.api_url = v.trim_end_matches('/').to_string();
        }
        if let Some(v) = get("vast_api/max_instances").and_then(|v| v.parse().ok()) {
            s.max_instances = v;
        }
        s.max_dph = float("vast_api/max_dph");
        s.max_dph_total = float("vast_api/max_dph_total");
        if let Some(v) = float("vast_api/disk_gb") {
            s.disk_gb = v;
        }
        if let Some(v) = dur("vast_api/provision_timeout") {
            s.provision_timeout = v;
        }
        if let Some(v) = dur("vast_api/poll_interval") {
            s.poll_interval = v;
        }
        if let Some(v) = dur("vast_api/log_interval") {
            s.log_interval = v;
        }
        const PREFIX: &str = "vast_api/offer_filters/";
        for (key, value) in tree.range(PREFIX.to_string()..) {
            let Some(rest) = key.strip_prefix(PREFIX) else {
                break;
            };
            let parts: Vec<&str> = rest.split('/').collect();
            let (Some(field), Some(op)) = (parts.first(), parts.get(1)) else {
                continue;
            };
            let Some(field) = canonical_field(field) else {
                continue;
            };
            let Ok(v) = typed(field, value) else { continue };
            let ops = s.offer_filters.entry(field.to_string()).or_default();
            if parts.len() == 3 {
                let list = ops
                    .entry(op.to_string())
                    .or_insert_with(|| serde_json::Value::Array(Vec::new()));
                if let serde_json::Value::Array(items) = list {
                    items.push(v);
                }
            } else {
                ops.insert(op.to_string(), v);
            }
        }
        if let Some(bucket) = get("vast_api/logs/bucket").filter(|b| !b.is_empty()) {
            s.logs = Some(LogShipping {
                s3: super::profiles::s3_at(tree, "vast_api/logs"),
                bucket,
                prefix: get("vast_api/logs/prefix").unwrap_or_default(),
            });
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_apis_fields_and_operators_are_accepted() {
        assert!(schema::validate("vast_api/offer_filters/gpu_name/eq", "RTX 3090").is_ok());
        assert!(schema::validate("vast_api/offer_filters/num_gpus/gte", "1").is_ok());
        assert!(schema::validate("vast_api/offer_filters/gpu_name/in/0", "RTX 4090").is_ok());
        let err = schema::validate("vast_api/offer_filters/gpu_nam/eq", "x").unwrap_err();
        assert_eq!(err.key(), "vast_api/offer_filters/gpu_nam/eq");
        assert!(
            err.to_string().contains("`gpu_nam` is not an offer field"),
            "{err}"
        );
        assert!(err
            .to_string()
            .contains("verify your offer_filters are supported"));
        let err = schema::validate("vast_api/offer_filters/dph_total/about", "1").unwrap_err();
        assert!(
            err.to_string().contains("`about` is not an operator"),
            "{err}"
        );
        assert!(schema::validate("vast_api/offer_filters/gpu_name/in", "x").is_err());
        assert!(schema::validate("vast_api/offer_filters/dph_total/lt", "cheap").is_err());
        assert_eq!(schema::shown("vast_api/api_key", "k-123"), "***");
        assert_eq!(schema::shown("vast_api/logs/secret_key", "s"), "***");
    }

    #[test]
    fn filters_become_the_apis_query_values() {
        let tree: FlatTree = [
            ("vast_api/api_key", "key-7f3a9"),
            ("vast_api/offer_filters/gpu_name/in/0", "RTX 3090"),
            ("vast_api/offer_filters/gpu_name/in/1", "RTX 4090"),
            ("vast_api/offer_filters/reliability/gte", "0.98"),
            ("vast_api/offer_filters/num_gpus/eq", "1"),
            ("vast_api/offer_filters/dph/lte", "0.5"),
            ("vast_api/max_instances", "3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = VastSettings::from_tree(&tree);
        assert!(s.enabled());
        assert_eq!(s.max_instances, 3);
        assert_eq!(
            serde_json::to_value(&s.offer_filters).unwrap(),
            serde_json::json!({
                "gpu_name": {"in": ["RTX 3090", "RTX 4090"]},
                "reliability": {"gte": 0.98},
                "num_gpus": {"eq": 1},
                "dph_total": {"lte": 0.5},
            })
        );
        assert!(
            !format!("{s:?}").contains("key-7f3a9"),
            "the key is never shown"
        );
    }
}

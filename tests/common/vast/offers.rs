//! Offers of the Vast.ai stand-in and the query language of `POST /bundles/`.
//!
//! An [`Offer`] is a row of the documented offer fields (`gpu_name`, `num_gpus`, `dph_total`
//! in $/h, `gpu_ram`/`cpu_ram` in MB, `reliability`, `verified`, `rentable`, `rented`,
//! `external`, `geolocation`, …) with realistic defaults, plus how an instance rented from
//! it comes up ([`Provision`]). The same filter engine also serves `select_filters` of the
//! v1 instance listing.
//!
//! A query is the JSON object the official CLI sends: each filter `"field": {"op": value}`
//! with ops `eq neq gt gte lt lte in notin`; reserved keys `order` (list of
//! `[field, "asc"|"desc"]`), `type`, `limit`, `allocated_storage`, `disable_bundling`. The
//! CLI sends most values as strings (`"0.98"`), so a string compares as a number against a
//! numeric field and as a boolean against a boolean one, as the real service must. Unknown
//! fields and ops are refused with 400 (the real service's answer to them is not
//! documented; refusing makes a client's mistake visible in tests).
use std::cmp::Ordering;
use std::time::Duration;

use serde_json::{json, Map, Value};

/// Offer fields a query may name (`offers_fields` of the official CLI, plus the row-only
/// `score`, `reliability2` and `ask_contract_id` that docs examples filter on).
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
    "score",
    "reliability2",
    "ask_contract_id",
];

/// Keys of a query object that are not filters.
const RESERVED: &[&str] = &[
    "order",
    "type",
    "limit",
    "allocated_storage",
    "disable_bundling",
    "select_cols",
];

/// The most offers one search returns (a third-party observation of the real service).
pub const MAX_OFFERS: usize = 64;

/// How an instance rented from an offer comes up.
#[derive(Clone, Debug, PartialEq)]
pub enum Provision {
    /// `actual_status` null for this long, then `loading` while the container is created,
    /// then whatever the container does.
    After(Duration),
    /// Never comes up: `actual_status` stays null (a client's provisioning timeout).
    Never,
    /// Reaches `loading` after this long and stays there.
    StuckLoading(Duration),
    /// After this long, `actual_status` `created` with this `status_msg`, no container
    /// (as when the host's Docker refuses to start it).
    Fails(Duration, String),
}

/// One offer: its row as the search returns it, and how its instances come up (`None`:
/// the stand-in's default delay).
#[derive(Clone, Debug)]
pub struct Offer {
    pub row: Map<String, Value>,
    pub provision: Option<Provision>,
}

impl Offer {
    /// A verified, rentable, on-demand single-GPU offer with realistic defaults for every
    /// documented field; change any with [`set`](Self::set). `storage_cost` ($/GB/month) is
    /// 0 unless set, so the price given is the price billed at any disk; with it set, a
    /// search prices its `allocated_storage` into `dph_total` (and a rental its `disk`).
    pub fn new(id: u64, gpu_name: &str, dph_total: f64) -> Self {
        let dlperf = 40.0;
        // Two halves: one json! of every field passes the macro recursion limit.
        let hardware = json!({
            "id": id, "ask_contract_id": id, "machine_id": 10_000 + id, "host_id": 20_000 + id,
            "gpu_name": gpu_name, "num_gpus": 1, "gpu_ram": 24_564, "gpu_total_ram": 24_564,
            "gpu_arch": "nvidia", "compute_cap": 890, "gpu_frac": 1.0, "gpu_mem_bw": 900.0,
            "gpu_max_power": 450.0, "gpu_max_temp": 83.0, "gpu_display_active": false,
            "bw_nvlink": 0.0, "cpu_arch": "amd64", "cpu_cores": 32, "cpu_cores_effective": 8.0,
            "cpu_ghz": 3.5, "cpu_ram": 64_000, "has_avx": 1, "cuda_max_good": 12.4,
            "driver_version": "550.54.15", "ubuntu_version": "22.04", "mobo_name": "X570",
            "pci_gen": 4.0, "pcie_bw": 24.0, "disk_space": 200.0, "disk_bw": 2000.0,
        });
        let market = json!({
            "inet_up": 500.0, "inet_down": 800.0, "inet_up_cost": 0.0, "inet_down_cost": 0.0,
            "direct_port_count": 10, "static_ip": false, "dlperf": dlperf,
            "dlperf_per_dphtotal": dlperf / dph_total, "total_flops": 80.0,
            "flops_per_dphtotal": 80.0 / dph_total, "dph_total": dph_total, "dph_base": dph_total,
            "min_bid": dph_total / 2.0, "storage_cost": 0.0, "duration": 2_592_000.0,
            "reliability": 0.99, "reliability2": 0.99, "score": dlperf / dph_total,
            "verified": true, "verification": "verified", "rentable": true, "rented": false,
            "external": false, "vms_enabled": false, "geolocation": "US", "datacenter": null,
            "cluster_id": null, "is_bid": false,
        });
        let mut row = Map::new();
        for half in [hardware, market] {
            if let Value::Object(m) = half {
                row.extend(m);
            }
        }
        Self {
            row,
            provision: None,
        }
    }

    /// Sets one field of the row (any name; documented ones are what queries can filter).
    pub fn set(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.row.insert(field.to_string(), value.into());
        self
    }

    /// How instances rented from this offer come up.
    pub fn provision(mut self, p: Provision) -> Self {
        self.provision = Some(p);
        self
    }

    pub fn id(&self) -> u64 {
        self.row.get("id").and_then(Value::as_u64).unwrap_or(0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    NotIn,
}

impl Op {
    fn parse(op: &str) -> Option<Self> {
        Some(match op {
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "in" => Op::In,
            "notin" => Op::NotIn,
            _ => return None,
        })
    }
}

/// One parsed filter: `field op value`.
#[derive(Clone, Debug)]
pub struct Filter {
    pub field: String,
    pub op: Op,
    pub value: Value,
}

/// A parsed offer query.
#[derive(Clone, Debug)]
pub struct Query {
    pub filters: Vec<Filter>,
    /// GB of disk priced into each row's `dph_total` (the CLI's default: 5).
    pub allocated_storage: f64,
    /// `(field, descending)`, applied in turn.
    pub order: Vec<(String, bool)>,
    pub limit: usize,
}

/// Parses the filters of a query object. `known` says which field names exist (None:
/// any name, missing fields read as null).
pub fn parse_filters(
    q: &Map<String, Value>,
    known: Option<&[&str]>,
) -> Result<Vec<Filter>, String> {
    let mut filters = Vec::new();
    for (field, spec) in q {
        if RESERVED.contains(&field.as_str()) {
            continue;
        }
        if let Some(known) = known {
            if !known.contains(&field.as_str()) {
                return Err(format!("unknown search field: {field}"));
            }
        }
        let Value::Object(ops) = spec else {
            return Err(format!(
                "filter for {field} must be an object {{op: value}}, got {spec}"
            ));
        };
        for (op, value) in ops {
            let op = Op::parse(op).ok_or_else(|| format!("unknown operator {op:?} for {field}"))?;
            if matches!(op, Op::In | Op::NotIn) && !value.is_array() {
                return Err(format!(
                    "operator in/notin for {field} takes a list, got {value}"
                ));
            }
            filters.push(Filter {
                field: field.clone(),
                op,
                value: value.clone(),
            });
        }
    }
    Ok(filters)
}

/// Parses an offer search body (`POST /bundles/`, or the `q` of `PUT /search/asks/`).
pub fn parse_query(body: &Value) -> Result<Query, String> {
    let Value::Object(q) = body else {
        return Err("the query must be a JSON object".into());
    };
    let filters = parse_filters(q, Some(OFFER_FIELDS))?;
    let mut order = Vec::new();
    match q.get("order") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                let pair = item.as_array().filter(|p| !p.is_empty() && p.len() <= 2);
                let field = pair.and_then(|p| p[0].as_str());
                let dir = pair
                    .and_then(|p| p.get(1))
                    .and_then(Value::as_str)
                    .unwrap_or("asc");
                match (field, dir) {
                    (Some(f), "asc" | "desc") if OFFER_FIELDS.contains(&f) => {
                        order.push((f.to_string(), dir == "desc"))
                    }
                    _ => return Err(format!("bad order entry {item}: [field, \"asc\"|\"desc\"]")),
                }
            }
        }
        Some(other) => return Err(format!("order must be a list, got {other}")),
    }
    if order.is_empty() {
        order.push(("score".to_string(), true));
    }
    match q.get("type").and_then(Value::as_str) {
        None | Some("on-demand" | "bid" | "reserved") => {}
        Some(t) => {
            return Err(format!(
                "unknown offer type {t:?}: on-demand, bid or reserved"
            ))
        }
    }
    let limit = match q.get("limit") {
        None | Some(Value::Null) => MAX_OFFERS,
        Some(v) => {
            let n = v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| format!("limit must be a number, got {v}"))?;
            (n as usize).min(MAX_OFFERS)
        }
    };
    let allocated_storage = match q.get("allocated_storage") {
        None | Some(Value::Null) => 5.0,
        Some(v) => v
            .as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|gb| *gb >= 0.0)
            .ok_or_else(|| format!("allocated_storage must be a number of GB, got {v}"))?,
    };
    Ok(Query {
        filters,
        allocated_storage,
        order,
        limit,
    })
}

/// Compares a row value with a filter value the way the service must for the CLI's
/// string-typed values: numbers numerically, booleans as booleans, strings as strings.
fn compare(row: &Value, filter: &Value) -> Option<Ordering> {
    match (row, filter) {
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::Number(a), Value::String(b)) => a.as_f64()?.partial_cmp(&b.trim().parse().ok()?),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::String(b)) => Some(a.cmp(&b.parse::<bool>().ok()?)),
        (Value::Bool(a), Value::Number(b)) => Some((*a as u8 as f64).partial_cmp(&b.as_f64()?)?),
        (Value::String(a), Value::String(b)) => Some(a.as_str().cmp(b.as_str())),
        (Value::String(a), Value::Number(b)) => a.parse::<f64>().ok()?.partial_cmp(&b.as_f64()?),
        _ => None,
    }
}

/// Whether `row` passes every filter (a missing field reads as null).
pub fn matches(row: &Map<String, Value>, filters: &[Filter]) -> bool {
    filters.iter().all(|f| {
        let v = row.get(&f.field).unwrap_or(&Value::Null);
        let eq = |x: &Value| compare(v, x) == Some(Ordering::Equal);
        match f.op {
            Op::Eq => eq(&f.value),
            Op::Neq => !eq(&f.value),
            Op::Gt => compare(v, &f.value) == Some(Ordering::Greater),
            Op::Gte => matches!(
                compare(v, &f.value),
                Some(Ordering::Greater | Ordering::Equal)
            ),
            Op::Lt => compare(v, &f.value) == Some(Ordering::Less),
            Op::Lte => matches!(compare(v, &f.value), Some(Ordering::Less | Ordering::Equal)),
            Op::In => f.value.as_array().is_some_and(|l| l.iter().any(eq)),
            Op::NotIn => f.value.as_array().is_some_and(|l| !l.iter().any(eq)),
        }
    })
}

/// Sorts rows by `order` (`(field, descending)` in turn); nulls sort last either way.
pub fn sort_rows(rows: &mut [Map<String, Value>], order: &[(String, bool)]) {
    rows.sort_by(|a, b| {
        for (field, desc) in order {
            let x = a.get(field).unwrap_or(&Value::Null);
            let y = b.get(field).unwrap_or(&Value::Null);
            let o = match (x.is_null(), y.is_null()) {
                (true, true) => Ordering::Equal,
                (true, false) => return Ordering::Greater,
                (false, true) => return Ordering::Less,
                _ => compare(x, y).unwrap_or(Ordering::Equal),
            };
            let o = if *desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
}

/// The search result for `query` over `offers`: each row priced at the query's
/// `allocated_storage`, then the matching rows, ordered, limited.
pub fn search(offers: &[Offer], query: &Query) -> Vec<Map<String, Value>> {
    let mut rows: Vec<_> = offers
        .iter()
        .map(|o| {
            let mut row = o.row.clone();
            let dph = super::rent::priced(&row, query.allocated_storage);
            row.insert("dph_total".into(), json!(dph));
            row
        })
        .filter(|row| matches(row, &query.filters))
        .collect();
    sort_rows(&mut rows, &query.order);
    rows.truncate(query.limit);
    rows
}

//! The test harness's stand-ins, exercised over real HTTP the way the official Vast.ai CLI
//! talks to the service. Vast.ai cannot be reached from here, so `common::vast` is a local
//! stand-in for its API (each instance a real local Docker container); `common::s3` is a
//! real S3-compatible server (moto). These tests pin down that the stand-in behaves like
//! the documented API, so the Vast.ai runtime's tests can rely on it.

#[path = "../common/mod.rs"]
mod common;

mod faults;
mod instances;
mod market;

use std::time::{Duration, Instant};

use common::s3::S3Server;
use common::vast::{Offer, Provision, VastClient as Cli, VastConfig, VastStandIn};
use common::{wait_for, TEST_IMAGE};
use reqwest::Method;
use serde_json::{json, Value};

const KEY: &str = "test-key-0123456789abcdef";

/// The CLI's default search filters plus `extra`, ordered by price.
fn cheapest_query(extra: Value) -> Value {
    let mut q = json!({
        "verified": {"eq": true}, "external": {"eq": false},
        "rentable": {"eq": true}, "rented": {"eq": false},
        "order": [["dph_total", "asc"]], "type": "on-demand", "allocated_storage": 5.0,
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        q[k] = v.clone();
    }
    q
}

fn market() -> Vec<Offer> {
    vec![
        Offer::new(101, "RTX 4090", 0.40),
        Offer::new(102, "RTX 4090", 0.30).set("verified", false),
        Offer::new(103, "RTX 4090", 0.35),
        Offer::new(104, "RTX 3090", 0.20),
        Offer::new(105, "RTX 4090", 0.32).set("rented", true),
        Offer::new(106, "RTX 4090", 0.33).set("external", true),
        Offer::new(107, "RTX 4090", 0.31).set("reliability", 0.90),
        Offer::new(108, "RTX 4090", 0.60),
    ]
}

/// An instance row's `status_msg`.
fn msg(row: &Value) -> &str {
    row["status_msg"].as_str().unwrap_or_default()
}

fn ids(offers: &Value) -> Vec<u64> {
    offers["offers"]
        .as_array()
        .expect("offers list")
        .iter()
        .map(|o| o["id"].as_u64().expect("offer id"))
        .collect()
}

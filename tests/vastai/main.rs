//! The Vast.ai runtime end to end: the real `deckhand` agent, manager and CLI against a real
//! etcd, with Vast.ai's service played by the local stand-in of its HTTP API
//! (`tests/common/vast/`: Vast.ai itself cannot be reached from here) that runs every rented
//! instance as a real local Docker container, and logs shipped to a real S3-compatible
//! server (moto). The image, env, args and exit codes are real.

#[path = "../common/mod.rs"]
mod common;

mod placement_and_login;
mod renting;
mod service_answers;

use std::time::Duration;

use common::s3::S3Server;
use common::vast::{Offer, Provision, VastConfig, VastStandIn};
use common::{count_lines, wait_for, KernelCluster, Registry, TEST_IMAGE};
use deckhand::wire::pb::agent_service_client::AgentServiceClient;
use deckhand::wire::pb::{ControlKernelRequest, KernelAction, KernelState};

use common::vast::e2e::{cluster, events_of, instance_of, run, run_ok, states, vastai_of, KEY, T};

/// The key appears in no log, event or listing.
fn assert_key_hidden(k: &KernelCluster) {
    for (what, text) in [
        ("agent log", k.agent.log()),
        ("manager log", k.manager.log()),
    ] {
        assert!(!text.contains(KEY), "the API key is in the {what}");
    }
    let cfg = k.c.cli_ok(&["config", "get"]);
    assert!(!cfg.contains(KEY), "the API key is in config get: {cfg}");
}

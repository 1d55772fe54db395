//! Two clusters on one etcd: the namespace isolates agents, managers and config.

mod common;

use std::time::Duration;

use common::{wait_for, Cluster};

#[tokio::test]
async fn two_namespaces_on_one_etcd_never_see_each_other() {
    let a = Cluster::start("ns-a").await;
    let b = Cluster::beside(&a, "ns-b");
    for (c, interval, region) in [(&a, "400ms", "eu"), (&b, "700ms", "us")] {
        c.cli_ok(&["config", "set", "agent/heartbeat_interval", interval]);
        c.cli_ok(&["config", "set", "agent/region", region]);
    }
    let _ma = a.manager("m", &[]);
    let _mb = b.manager("m", &[]);
    let _a1 = a.agent("node-1");
    let _b1 = b.agent("node-1");
    let _b2 = b.agent("node-2");

    let a_nodes = wait_for(
        Duration::from_secs(15),
        "namespace a's agent alive",
        || async {
            let n = a.nodes()?;
            n.iter()
                .all(|n| n["state"] == "ALIVE")
                .then_some(n)
                .filter(|n| !n.is_empty())
        },
    )
    .await;
    let b_nodes = wait_for(
        Duration::from_secs(15),
        "namespace b's agents alive",
        || async {
            let n = b.nodes()?;
            (n.len() == 2 && n.iter().all(|n| n["state"] == "ALIVE")).then_some(n)
        },
    )
    .await;
    assert_eq!(a_nodes.len(), 1, "a sees only its own agent: {a_nodes:?}");
    assert_eq!(a_nodes[0]["region"], "eu");
    assert_eq!(a_nodes[0]["heartbeat_interval_ms"], 400);
    assert!(b_nodes
        .iter()
        .all(|n| n["region"] == "us" && n["heartbeat_interval_ms"] == 700));

    // Same agent id in both namespaces: two registrations, not a conflict.
    let mut etcd = a.etcd_client().await;
    for c in [&a, &b] {
        let r = etcd.get(c.agent_key("node-1"), None).await.unwrap();
        assert_eq!(r.count(), 1);
    }
    let a_conf = a.cli_ok(&["config", "get", "--json"]);
    assert!(
        a_conf.contains("\"eu\"") && !a_conf.contains("\"us\""),
        "{a_conf}"
    );
}

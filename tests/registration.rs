//! An agent's lifecycle in etcd and in the manager's table: registration on a lease,
//! LOST and GONE after a crash, refusal of a duplicate id, take-over after a crash.

mod common;

use std::time::Duration;

use common::{wait_for, Cluster};
use etcd_client::GetOptions;

async fn fast_cluster(test: &str) -> Cluster {
    let c = Cluster::start(test).await;
    c.cli_ok(&["config", "set", "agent/heartbeat_interval", "300ms"]);
    c.cli_ok(&["config", "set", "agent/lease_ttl", "3s"]);
    c
}

#[tokio::test]
async fn killed_agent_key_expires_and_manager_shows_lost_then_gone() {
    let c = fast_cluster("kill9").await;
    let _m = c.manager("m1", &["--gone-retention", "2s"]);
    let mut agent = c.agent("node-a");
    let mut etcd = c.etcd_client().await;
    let key = c.agent_key("node-a");

    let lease = wait_for(Duration::from_secs(10), "the agent's registration", || {
        let mut etcd = etcd.clone();
        let key = key.clone();
        async move {
            let r = etcd.get(key, None).await.ok()?;
            r.kvs().first().map(|kv| kv.lease())
        }
    })
    .await;
    assert_ne!(lease, 0, "the registration must be held by a lease");
    let ttl = etcd.lease_time_to_live(lease, None).await.unwrap();
    assert!(ttl.granted_ttl() == 3, "granted TTL {}", ttl.granted_ttl());
    let record: serde_json::Value = {
        let r = etcd.get(key.clone(), None).await.unwrap();
        serde_json::from_slice(r.kvs()[0].value()).unwrap()
    };
    assert_eq!(record["id"], "node-a");
    assert_eq!(record["address"], format!("127.0.0.1:{}", agent.port));
    assert!(record["started_at"].is_string() && record["version"].is_string());

    wait_for(Duration::from_secs(10), "the agent ALIVE", || async {
        (c.node("node-a")?["state"] == "ALIVE").then_some(())
    })
    .await;

    agent.kill9();
    let killed = std::time::Instant::now();
    let mut saw_lost = false;
    wait_for(Duration::from_secs(10), "the agent GONE", || {
        let n = c.node("node-a");
        saw_lost |= n.as_ref().is_some_and(|n| n["state"] == "LOST");
        async move { (n?["state"] == "GONE").then_some(()) }
    })
    .await;
    assert!(saw_lost, "the manager must show LOST before GONE");
    let gone = etcd
        .get(key.clone(), Some(GetOptions::new().with_count_only()))
        .await
        .unwrap()
        .count();
    assert_eq!(gone, 0, "the key must be gone with its lease");
    assert!(
        killed.elapsed() < Duration::from_secs(3 + 2),
        "key outlived TTL: {:?}",
        killed.elapsed()
    );

    wait_for(
        Duration::from_secs(10),
        "the GONE agent to be dropped",
        || async { c.nodes()?.is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_second_agent_with_the_same_id_exits_naming_the_id() {
    let c = fast_cluster("dup").await;
    let first = c.agent("twin");
    wait_for(
        Duration::from_secs(10),
        "the first agent registered",
        || c.registered("twin"),
    )
    .await;
    let mut etcd = c.etcd_client().await;
    let key = c.agent_key("twin");

    let mut second = c.agent("twin");
    let status = second
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("the duplicate agent must exit");
    assert!(!status.success());
    let log = second.log();
    assert!(
        log.contains("agent id `twin`"),
        "message must name the id: {log}"
    );
    assert!(log.contains("already registered"), "{log}");
    // The first one is untouched.
    let holder: serde_json::Value =
        serde_json::from_slice(etcd.get(key, None).await.unwrap().kvs()[0].value()).unwrap();
    assert_eq!(holder["pid"], first.pid());
}

#[tokio::test]
async fn a_restarted_agent_takes_over_the_id_of_its_crashed_predecessor_at_once() {
    let c = fast_cluster("takeover").await;
    c.cli_ok(&["config", "set", "agent/lease_ttl", "60s"]);
    let mut first = c.agent("phoenix");
    let mut etcd = c.etcd_client().await;
    let key = c.agent_key("phoenix");
    let pid_in_etcd = |etcd: &etcd_client::Client| {
        let mut etcd = etcd.clone();
        let key = key.clone();
        async move {
            let r = etcd.get(key, None).await.ok()?;
            let v: serde_json::Value = serde_json::from_slice(r.kvs().first()?.value()).ok()?;
            v["pid"].as_u64()
        }
    };
    wait_for(Duration::from_secs(10), "first registration", || {
        pid_in_etcd(&etcd)
    })
    .await;
    first.kill9();

    // The old lease would live 60 s; the new process must not wait for it.
    let mut second = c.agent("phoenix");
    let pid = second.pid() as u64;
    wait_for(
        Duration::from_secs(5),
        "the restarted agent registered",
        || {
            let f = pid_in_etcd(&etcd);
            async move { (f.await? == pid).then_some(()) }
        },
    )
    .await;
    assert!(second.is_running(), "{}", second.log());
    let _ = etcd.delete(c.agent_key("phoenix"), None).await;
}

#[tokio::test]
async fn a_deleted_registration_is_put_back_while_the_agent_lives() {
    let c = fast_cluster("reput").await;
    let agent = c.agent("stubborn");
    wait_for(Duration::from_secs(10), "registration", || {
        c.registered("stubborn")
    })
    .await;
    let mut etcd = c.etcd_client().await;
    etcd.delete(c.agent_key("stubborn"), None).await.unwrap();
    wait_for(Duration::from_secs(3), "the registration put back", || {
        c.registered("stubborn")
    })
    .await;
    assert!(agent.log().contains("putting it back"), "{}", agent.log());
}

#[tokio::test]
async fn heartbeats_fail_over_to_another_manager() {
    let c = fast_cluster("failover").await;
    let m1 = c.manager("m1", &[]);
    let m2 = c.manager("m2", &[]);
    let _a = c.agent("roamer");
    let node_on = |port: u16| {
        let out = c.cli(&["nodes", "--json", "--manager", &format!("127.0.0.1:{port}")]);
        let nodes: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
        let n = nodes.into_iter().find(|n| n["id"] == "roamer")?;
        Some(n["heartbeats_received"].as_u64().unwrap_or(0))
    };
    // The agent reports to exactly one of them: the first by id.
    wait_for(Duration::from_secs(10), "heartbeats at m1", || async {
        (node_on(m1.port)? > 0).then_some(())
    })
    .await;
    assert_eq!(
        node_on(m2.port).unwrap_or(0),
        0,
        "only one manager gets heartbeats"
    );
    let mut m1 = m1;
    m1.kill9();
    wait_for(
        Duration::from_secs(10),
        "heartbeats at m2 after m1 died",
        || async { (node_on(m2.port)? > 0).then_some(()) },
    )
    .await;
}

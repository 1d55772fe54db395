//! etcd goes away and comes back: the agent keeps running, says so once, and registers
//! again right after etcd is back, even when etcd lost its data.

mod common;

use std::time::{Duration, Instant};

use common::{count_lines, wait_for, Cluster};

#[tokio::test]
async fn agent_reregisters_within_two_seconds_after_etcd_returns() {
    let mut c = Cluster::start("outage").await;
    c.cli_ok(&["config", "set", "agent/lease_ttl", "3s"]);
    let mut agent = c.agent("survivor");
    wait_for(Duration::from_secs(10), "first registration", || {
        c.registered("survivor")
    })
    .await;

    // Down for 4 s, back with an empty data dir (the lease and key are gone).
    c.etcd_mut().stop();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(agent.is_running(), "the agent must survive etcd's absence");
    c.etcd_mut().restart(true).await;
    let back = Instant::now();
    wait_for(Duration::from_secs(10), "re-registration", || {
        c.registered("survivor")
    })
    .await;
    let took = back.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "re-registered {took:?} after etcd was back"
    );

    // Stays registered past one TTL: the new lease is kept alive.
    tokio::time::sleep(Duration::from_secs(4)).await;
    wait_for(Duration::from_secs(1), "registration still present", || {
        c.registered("survivor")
    })
    .await;
    assert!(agent.is_running());
    let log = agent.log();
    assert_eq!(count_lines(&log, "etcd connection lost"), 1, "{log}");
    assert_eq!(count_lines(&log, "etcd connection restored"), 1, "{log}");
    assert!(
        count_lines(&log, "WARN") <= 2,
        "one line per state change, not per retry:\n{log}"
    );
    agent.kill9();
}

#[tokio::test]
async fn agent_started_before_etcd_waits_and_registers_when_it_appears() {
    let mut c = Cluster::start("late-etcd").await;
    c.etcd_mut().stop();
    let mut agent = c.agent("early");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(agent.is_running(), "{}", agent.log());
    c.etcd_mut().restart(false).await;
    wait_for(
        Duration::from_secs(5),
        "registration after etcd appears",
        || c.registered("early"),
    )
    .await;
    let log = agent.log();
    assert_eq!(count_lines(&log, "etcd unreachable"), 1, "{log}");
}

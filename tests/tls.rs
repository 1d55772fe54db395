//! Mutual TLS between the CLI, the manager and an agent, with certificates made by rcgen:
//! heartbeats, CLI calls and manager→agent forwarding work with certificates of the
//! cluster's CA; a client without a certificate, with one of another CA, or in plaintext
//! is refused. Health and reflection are served over the same TLS.

mod common;

use std::path::Path;
use std::time::Duration;

use common::pki::{path, Ca, Leaf};
use common::{free_port, wait_for, Cluster, Proc, TEST_IMAGE};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// `--tls-cert/--tls-key/--tls-ca` for `leaf` under `ca`.
fn mtls(leaf: &Leaf, ca: &Ca) -> Vec<String> {
    let mut v = leaf.tls_flags();
    v.extend(ca.tls_flags());
    v
}

fn args<'a>(base: &[&'a str], extra: &'a [String]) -> Vec<&'a str> {
    let mut v = base.to_vec();
    v.extend(extra.iter().map(String::as_str));
    v
}

fn manager(c: &Cluster, tls: &[String]) -> Proc {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    c.spawn(
        "manager-m1",
        &args(&["manager", "--manager-id", "m1", "--listen", &listen], tls),
        port,
    )
}

fn agent(c: &Cluster, id: &str, tls: &[String]) -> Proc {
    c.agent_with(id, c.dir.path().join(format!("scratch-{id}")), tls, &[])
}

/// `deckhand nodes --json` with `tls` flags, or None while it fails.
fn nodes(c: &Cluster, tls: &[String]) -> Option<Vec<serde_json::Value>> {
    let out = c.cli(&args(&["nodes", "--json"], tls));
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The health status of `service` on 127.0.0.1:`port` over TLS with `identity`.
async fn health(
    port: u16,
    service: &str,
    ca: &Path,
    identity: Option<&Leaf>,
) -> Result<i32, String> {
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()));
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&leaf.cert).unwrap(),
            std::fs::read(&leaf.key).unwrap(),
        ));
    }
    let ch = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let req = HealthCheckRequest {
        service: service.into(),
    };
    HealthClient::new(ch)
        .check(req)
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| format!("{s:?}"))
}

fn failed(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure, got: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a clean error exit, not a panic or a signal"
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[tokio::test]
async fn mutual_tls_between_cli_manager_and_agent_refuses_strangers() {
    let c = Cluster::start("tls").await;
    // The test image exists only locally: do not ask a registry for it first.
    c.cli_ok(&["config", "set", "docker/cache_usage", "cache_first"]);
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "cluster");
    let node = ca.node("node");
    let operator = ca.client("operator");
    let other_ca = Ca::new(pki.path(), "other");
    let stranger = other_ca.client("stranger");

    let node_tls = mtls(&node, &ca);
    let operator_tls = mtls(&operator, &ca);
    let m = manager(&c, &node_tls);
    let a = agent(&c, "a1", &node_tls);

    // Heartbeats over mTLS: the manager sees the agent ALIVE; the CLI, with the
    // operator's certificate, finds the manager through etcd (registered as https://).
    let a1 = wait_for(Duration::from_secs(30), "agent a1 ALIVE over mTLS", || {
        let found = nodes(&c, &operator_tls)
            .and_then(|ns| ns.into_iter().find(|n| n["id"] == "a1"))
            .filter(|n| n["state"] == "ALIVE");
        async move { found }
    })
    .await;
    assert_eq!(a1["address"], format!("https://127.0.0.1:{}", a.port));
    let m_log = m.log();
    assert!(
        m_log.contains("tls=\"mutual\"") || m_log.contains("tls=mutual"),
        "{m_log}"
    );

    // The manager forwards to the agent over mTLS: a kernel runs and is inspected.
    let mut run = args(&["run", "-d", "--agent", "a1"], &operator_tls);
    run.extend([TEST_IMAGE, "true"]);
    let id = c.cli_ok(&run).trim().to_string();
    let inspect = args(&["inspect", &id], &operator_tls);
    let info = wait_for(Duration::from_secs(60), "the kernel to finish", || {
        let out = c.cli(&inspect);
        let v = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .filter(|v| v["state"] == "DONE");
        async move { v }
    })
    .await;
    assert_eq!(info["exit_code"], 0, "{info}");
    c.cli_ok(&args(&["rm", "-f", &id], &operator_tls));

    // No client certificate (the CA alone, so the server is verified): refused.
    let stderr = failed(&c.cli(&args(&["nodes"], &ca.tls_flags())));
    assert!(
        stderr.contains(&format!("manager at https://127.0.0.1:{}", m.port)),
        "{stderr}"
    );

    // A certificate of another CA: refused.
    let mut stranger_tls = stranger.tls_flags();
    stranger_tls.extend(ca.tls_flags());
    let stderr = failed(&c.cli(&args(&["nodes"], &stranger_tls)));
    assert!(stderr.contains("manager at https://"), "{stderr}");

    // The operator's certificate, but trusting only the other CA: the CLI refuses the
    // manager's certificate.
    let mut wrong_trust = operator.tls_flags();
    wrong_trust.extend(other_ca.tls_flags());
    let stderr = failed(&c.cli(&args(&["nodes"], &wrong_trust)));
    assert!(stderr.contains("certificate"), "{stderr}");

    // Plaintext to the TLS port: refused (the address without a scheme means http when
    // no TLS flag is given).
    let plain = format!("127.0.0.1:{}", m.port);
    failed(&c.cli(&["nodes", "--manager", &plain]));
    // And a plaintext client that finds the manager through etcd cannot use its https
    // address without trusting its CA.
    failed(&c.cli(&["nodes"]));

    // Health over mTLS on both servers; without a client certificate it is refused too.
    for (port, service) in [
        (m.port, "deckhand.v1.ClusterService"),
        (m.port, "deckhand.v1.ManagerService"),
        (a.port, "deckhand.v1.AgentService"),
    ] {
        let status = health(port, service, &ca.cert, Some(&operator))
            .await
            .unwrap_or_else(|e| panic!("health of {service} over mTLS: {e}"));
        assert_eq!(status, ServingStatus::Serving as i32, "{service}");
        let refused = health(port, service, &ca.cert, None).await;
        assert!(refused.is_err(), "{service} answered without a client cert");
    }
}

#[tokio::test]
async fn tls_without_client_certificates_and_flags_from_the_environment() {
    let c = Cluster::start("tls-server-only").await;
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "cluster");
    let node = ca.node("node");
    // Servers with a certificate but no CA serve TLS without asking for client
    // certificates; their clients verify servers against the given CA.
    let mut manager_tls = node.tls_flags();
    let _m = manager(&c, &manager_tls);
    // The agent dials the manager: it needs to trust the cluster CA; with --tls-ca a
    // server requires client certificates, so it presents its own.
    manager_tls.extend(ca.tls_flags());
    let _a = agent(&c, "a1", &manager_tls);

    // The CLI with the CA alone, given through the environment.
    wait_for(Duration::from_secs(30), "agent a1 ALIVE", || {
        let out = c
            .command_for(&["nodes", "--json"])
            .env("DECKHAND_TLS_CA", &ca.cert)
            .stdout(std::process::Stdio::piped())
            .output()
            .unwrap();
        let alive = common::alive_in(&out, "a1");
        async move { alive }
    })
    .await;
}

#[tokio::test]
async fn bad_tls_options_fail_the_start_naming_the_flag() {
    let c = Cluster::start("tls-bad").await;
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "cluster");

    // A CA alone on a server: refused (it would serve plaintext to clients expecting TLS).
    let mut m = manager(&c, &ca.tls_flags());
    let status = m.wait_exit(Duration::from_secs(20)).await.expect("exits");
    assert!(!status.success());
    assert!(
        m.log().contains("--tls-ca needs --tls-cert and --tls-key"),
        "{}",
        m.log()
    );

    // A key file that is not a key.
    let junk = pki.path().join("junk.key");
    std::fs::write(&junk, "not a key").unwrap();
    let out = c.cli(&[
        "nodes",
        "--tls-cert",
        &path(&ca.cert),
        "--tls-key",
        &path(&junk),
    ]);
    let stderr = failed(&out);
    assert!(stderr.contains("--tls-key"), "{stderr}");
    assert!(stderr.contains("junk.key"), "{stderr}");

    // --tls-cert without --tls-key: clap refuses it.
    let out = c.cli(&["nodes", "--tls-cert", &path(&ca.cert)]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls-key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

//! etcd security: a real etcd serving clients over TLS with client-certificate auth
//! (`--etcd-ca/--etcd-cert/--etcd-key`, used by the agent, the manager and the CLI), and a
//! real etcd with auth enabled (`--etcd-user/--etcd-password`). Without the right settings
//! every command fails with a clear error, never a panic, and a password never shows in an
//! error or a log.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::pki::{path, Ca, Leaf};
use common::{free_port, wait_for, Cluster, Etcd, Proc};
use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

fn with<'a>(base: &[&'a str], extra: &'a [String]) -> Vec<&'a str> {
    let mut v = base.to_vec();
    v.extend(extra.iter().map(String::as_str));
    v
}

/// `deckhand config FLAGS ACTION…` (the etcd flags belong to `config`, before its action).
fn config<'a>(flags: &'a [String], action: &[&'a str]) -> Vec<&'a str> {
    let mut v = with(&["config"], flags);
    v.extend_from_slice(action);
    v
}

fn agent(c: &Cluster, id: &str, extra: &[String]) -> Proc {
    c.agent_with(id, c.dir.path().join(format!("scratch-{id}")), extra, &[])
}

/// A failed command that exited cleanly with an error (no panic); its stderr.
fn failed(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected a failure, got: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1), "a clean error exit: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn etcd_flags(ca: &Ca, client: Option<&Leaf>) -> Vec<String> {
    let mut v = vec!["--etcd-ca".to_string(), path(&ca.cert)];
    if let Some(l) = client {
        v.extend([
            "--etcd-cert".to_string(),
            path(&l.cert),
            "--etcd-key".to_string(),
            path(&l.key),
        ]);
    }
    v
}

#[tokio::test]
async fn etcd_over_mutual_tls_needs_the_etcd_flags() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "etcd");
    let server = ca.node("etcd-server");
    let client = ca.client("deckhand");
    let harness = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&ca.cert).unwrap()))
        .identity(Identity::from_pem(
            std::fs::read(&client.cert).unwrap(),
            std::fs::read(&client.key).unwrap(),
        ));
    let etcd = Etcd::start_with(
        vec![
            "--client-cert-auth".into(),
            "--trusted-ca-file".into(),
            path(&ca.cert),
            "--cert-file".into(),
            path(&server.cert),
            "--key-file".into(),
            path(&server.key),
        ],
        Some(harness),
    )
    .await;
    let c = Cluster::on(etcd, "etcd-tls");
    let tls = etcd_flags(&ca, Some(&client));

    c.cli_ok(&config(&tls, &["set", "agent/region", "eu-tls"]));
    let got = c.cli_ok(&config(&tls, &["get", "agent/region"]));
    assert_eq!(got.trim(), "eu-tls");
    // Through the environment as well.
    let out = c
        .command_for(&["config", "get", "agent/region"])
        .env("DECKHAND_ETCD_CA", &ca.cert)
        .env("DECKHAND_ETCD_CERT", &client.cert)
        .env("DECKHAND_ETCD_KEY", &client.key)
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "eu-tls");

    // Without the flags (plaintext to a TLS port), with the CA but no client certificate,
    // and with a client certificate of another CA: clean errors naming etcd.
    let other = Ca::new(pki.path(), "other");
    let stranger = other.client("stranger");
    for (what, flags) in [
        ("no flags", vec![]),
        ("no client certificate", etcd_flags(&ca, None)),
        ("another CA's certificate", {
            let mut f = etcd_flags(&ca, None);
            f.extend([
                "--etcd-cert".into(),
                path(&stranger.cert),
                "--etcd-key".into(),
                path(&stranger.key),
            ]);
            f
        }),
    ] {
        let stderr = failed(&c.cli(&config(&flags, &["get", "agent/region"])));
        assert!(
            stderr.contains(&format!("cannot reach etcd at {}", c.etcd_addr)),
            "{what}: {stderr}"
        );
    }
    // Plain http endpoints with etcd TLS files are a contradiction, said at once.
    let http = format!("http://{}", c.etcd_addr);
    let mut flags = tls.clone();
    flags.extend(["--etcd-addr".to_string(), http]);
    let stderr = failed(&c.cli(&config(&flags, &["get", "agent/region"])));
    assert!(stderr.contains("plain http"), "{stderr}");

    // An agent registers over mutual TLS.
    let _a = agent(&c, "a1", &tls);
    let key = c.agent_key("a1");
    let etcd = c.etcd.as_ref().unwrap();
    wait_for(
        Duration::from_secs(30),
        "agent a1 registered over TLS",
        || {
            let key = key.clone();
            async move {
                let mut cl = etcd.client().await;
                (cl.get(key, None).await.ok()?.count() == 1).then_some(())
            }
        },
    )
    .await;

    // A manager too: it sees the agent's registration and heartbeats, and the CLI finds it
    // through etcd over TLS.
    let m_port = free_port();
    let listen = format!("127.0.0.1:{m_port}");
    let _m = c.spawn(
        "manager-m1",
        &with(
            &["manager", "--manager-id", "m1", "--listen", &listen],
            &tls,
        ),
        m_port,
    );
    wait_for(Duration::from_secs(30), "agent a1 ALIVE", || {
        let out = c.cli(&with(&["nodes", "--json"], &tls));
        let alive = common::alive_in(&out, "a1");
        async move { alive }
    })
    .await;

    // An agent without a client certificate keeps running on its retry loop and says why
    // it cannot reach etcd, without panicking.
    let b = agent(&c, "b1", &etcd_flags(&ca, None));
    wait_for(
        Duration::from_secs(30),
        "agent b1 to report etcd unreachable",
        || {
            let log = b.log();
            async move { log.contains("etcd unreachable").then_some(()) }
        },
    )
    .await;
    let log = b.log();
    assert!(!log.contains("panicked"), "{log}");
    let mut cl = etcd.client().await;
    assert_eq!(cl.get(c.agent_key("b1"), None).await.unwrap().count(), 0);
}

const PASSWORD: &str = "s3cret-Pw-7781";
const WRONG: &str = "wr0ng-Pw-4410";

fn etcdctl(addr: &str, args: &[&str]) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", addr])
        .args(args)
        .output()
        .expect("etcdctl (Debian package etcd-client)");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn etcd_auth_with_user_and_password_and_a_wrong_password_shown_nowhere() {
    let etcd = Etcd::start().await;
    let addr = etcd.addr();
    etcdctl(&addr, &["user", "add", &format!("root:{PASSWORD}")]);
    etcdctl(&addr, &["role", "add", "root"]);
    etcdctl(&addr, &["user", "grant-role", "root", "root"]);
    etcdctl(&addr, &["auth", "enable"]);
    let c = Cluster::on(etcd, "etcd-auth");
    let auth: Vec<String> = ["--etcd-user", "root", "--etcd-password", PASSWORD]
        .map(String::from)
        .to_vec();
    let wrong: Vec<String> = ["--etcd-user", "root", "--etcd-password", WRONG]
        .map(String::from)
        .to_vec();

    // The CLI with the right credentials, by flag and by environment.
    c.cli_ok(&config(&auth, &["set", "agent/region", "eu-auth"]));
    let out = c
        .command_for(&["config", "--etcd-user", "root", "get", "agent/region"])
        .env("DECKHAND_ETCD_PASSWORD", PASSWORD)
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "eu-auth");

    // Without credentials: etcd's refusal, cleanly.
    let stderr = failed(&c.cli(&["config", "get", "agent/region"]));
    assert!(stderr.contains("user name is empty"), "{stderr}");
    // A wrong password: a clear error that does not contain it.
    let stderr = failed(&c.cli(&config(&wrong, &["get", "agent/region"])));
    assert!(stderr.contains("etcd refused user `root`"), "{stderr}");
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(!stderr.contains(WRONG), "{stderr}");

    // The agent registers with the credentials.
    let a = agent(&c, "a1", &auth);
    let key = c.agent_key("a1");
    wait_for(Duration::from_secs(30), "agent a1 registered", || {
        let key = key.clone();
        let addr = c.etcd_addr.clone();
        async move {
            let opts = ConnectOptions::new().with_user("root", PASSWORD);
            let mut cl = etcd_client::Client::connect([addr], Some(opts))
                .await
                .ok()?;
            (cl.get(key, None).await.ok()?.count() == 1).then_some(())
        }
    })
    .await;
    assert!(!a.log().contains(PASSWORD), "{}", a.log());

    // An agent with a wrong password stops at once with a clear error, which does not
    // contain the password.
    let mut b = agent(&c, "b1", &wrong);
    let status = b
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the agent with a wrong password exits");
    assert!(!status.success());
    let log = b.log();
    assert!(log.contains("etcd refused user `root`"), "{log}");
    assert!(log.contains("authentication failed"), "{log}");
    assert!(!log.contains(WRONG), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

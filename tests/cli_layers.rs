//! Every flag can come from the command line, a DECKHAND_* variable or the --config file,
//! in that order of precedence, and bad input is named.

mod common;

use std::process::Command;

fn print_config(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(common::deckhand_bin());
    cmd.env_clear()
        .arg("agent")
        .args(args)
        .arg("--print-config");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(
        &file,
        "namespace = \"from-file\"\nagent_id = \"file-id\"\nscratch-root = \"/srv/file\"\nrpc-listen-addr = \"127.0.0.1:7001\"\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (ok, out, err) = print_config(
        &["--config", f, "--agent-id", "flag-id"],
        &[
            ("DECKHAND_AGENT_ID", "env-id"),
            ("DECKHAND_SCRATCH_ROOT", "/srv/env"),
        ],
    );
    assert!(ok, "{err}");
    let t: toml::Table = toml::from_str(&out).unwrap();
    assert_eq!(t["agent-id"].as_str(), Some("flag-id"), "flag wins");
    assert_eq!(
        t["scratch-root"].as_str(),
        Some("/srv/env"),
        "env beats file"
    );
    assert_eq!(
        t["namespace"].as_str(),
        Some("from-file"),
        "file beats default"
    );
    assert_eq!(t["rpc-listen-addr"].as_str(), Some("127.0.0.1:7001"));
    assert_eq!(
        t["etcd-addr"].as_array().unwrap()[0].as_str(),
        Some("127.0.0.1:2379"),
        "default"
    );
}

#[test]
fn an_unknown_key_in_the_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, "scratch-rot = \"/x\"\n").unwrap();
    let (ok, _, err) = print_config(&["--config", file.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(err.contains("scratch-rot"), "{err}");
}

#[test]
fn a_bad_namespace_is_refused_naming_the_flag() {
    let out = Command::new(common::deckhand_bin())
        .args([
            "agent",
            "--namespace",
            "../etc",
            "--etcd-addr",
            "127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("namespace") && err.contains("../etc"), "{err}");
}

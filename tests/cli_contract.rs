//! The command line as a user meets it: every flag of every command documented with no
//! meaningless default shown, a closed stdout ending a command quietly, IMAGE beside
//! `--profile`, and `inspect --json` showing the slots the manager counted.

mod common;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::CommandFactory;
use common::{deckhand_bin, KernelCluster, TEST_IMAGE};

/// Every argument of `cmd` and its subcommands, recursively, with its command path, that
/// has no help text or shows an empty or zero default.
fn undocumented(cmd: &clap::Command, path: &str, found: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        if help.trim().is_empty() {
            found.push(format!("{path} {id}: no help text"));
        }
        if !arg.is_hide_default_value_set() {
            for d in arg.get_default_values() {
                let d = d.to_string_lossy();
                if d.is_empty() || d.parse::<f64>().is_ok_and(|v| v == 0.0) {
                    found.push(format!("{path} {id}: shows [default: {d:?}]"));
                }
            }
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let sub_path = format!("{path} {}", sub.get_name());
        if sub.get_about().is_none() {
            found.push(format!("{sub_path}: no about text"));
        }
        undocumented(sub, &sub_path, found);
    }
}

#[test]
fn every_argument_of_every_command_has_help_and_no_empty_default() {
    let mut found = Vec::new();
    undocumented(&deckhand::cli::Cli::command(), "deckhand", &mut found);
    assert!(
        found.is_empty(),
        "{} argument(s) without proper help:\n  {}",
        found.len(),
        found.join("\n  ")
    );
}

#[test]
fn the_real_run_help_shows_every_flag_with_text_and_no_empty_default() {
    let out = Command::new(deckhand_bin())
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(!help.contains("[default: ]"), "{help}");
    assert!(!help.contains("[default: 0]"), "{help}");
    assert!(!help.contains("[default: \"\"]"), "{help}");
    // Flags the issue found bare: each has its line of help after it.
    for flag in [
        "--name <NAME>",
        "--workdir <DIR>",
        "--hostname <HOSTNAME>",
        "--network <NETWORK>",
        "--privileged",
        "--ipc <MODE>",
        "--uts <MODE>",
        "--pid <MODE>",
        "--cpus <CPUS>",
        "--pids-limit <N>",
    ] {
        let line = help
            .lines()
            .find(|l| l.contains(&format!("{flag} ")) || l.trim_end().ends_with(flag))
            .unwrap_or_else(|| panic!("no {flag} in:\n{help}"));
        let text = line.split_once(flag).map(|(_, t)| t.trim()).unwrap_or("");
        assert!(!text.is_empty(), "{flag} has no help: {line:?}\n{help}");
    }
}

/// Runs `cmd` with its stdout a pipe whose reading end is closed before the command
/// writes: the command must end by SIGPIPE (status 141 in a shell) with nothing on stderr.
fn ends_quietly_on_a_closed_pipe(mut cmd: Command, what: &str) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        // Killed by SIGPIPE (help, printed before any socket is open) or ended with 141
        // after the failed print (commands that talk to the network keep SIGPIPE ignored).
        status.signal().or(status
            .code()
            .filter(|c| *c == 141)
            .map(|_| nix::libc::SIGPIPE)),
        Some(nix::libc::SIGPIPE),
        "{what}: {status:?}, stderr: {stderr}"
    );
    assert_eq!(stderr, "", "{what}: no message, no backtrace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_writing_to_a_closed_pipe_ends_quietly() {
    let k = KernelCluster::start("cli-pipe").await;
    for _ in 0..3 {
        k.run_detached(&["--agent", "a1", TEST_IMAGE, "sleep", "300"]);
    }
    let mut ps = k.c.command_for(&["ps", "--json"]);
    ps.stderr(Stdio::piped());
    ends_quietly_on_a_closed_pipe(ps, "ps --json");
    let mut keys = Command::new(deckhand_bin());
    keys.args(["config", "keys"]);
    ends_quietly_on_a_closed_pipe(keys, "config keys");
    let mut help = Command::new(deckhand_bin());
    help.args(["run", "--help"]);
    ends_quietly_on_a_closed_pipe(help, "run --help");
    // The manager's `ps` still answers: nothing was hurt.
    assert_eq!(k.ps().len(), 3);
}

#[test]
fn a_daemon_printing_to_a_closed_pipe_exits_141_without_a_message() {
    // The daemons keep SIGPIPE ignored; a failed print still ends them quietly.
    let mut child = Command::new(deckhand_bin())
        .args(["agent", "--print-config", "--etcd-addr", "127.0.0.1:1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(141), "{status:?}, stderr: {stderr}");
    assert_eq!(stderr, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_beside_a_profile_stands_for_its_image_constants() {
    let k = KernelCluster::start("cli-profile-image").await;
    // Without a tag: DOCKER_TAG's default, latest; the command given as CMD.
    let id = k.run_detached(&[
        "--profile",
        "docker-batch",
        "deckhand-test/busybox",
        "sh",
        "-c",
        "echo from-cmd",
    ]);
    let info = k.wait_ended(&id, Duration::from_secs(60)).await;
    assert_eq!(info["state"], "DONE", "{info}");
    assert_eq!(info["image"], "deckhand-test/busybox:latest", "{info}");
    let logs = k.c.cli_ok(&["logs", &id]);
    assert_eq!(logs.trim(), "from-cmd");
    // Given twice (IMAGE and DOCKER_REPO): refused naming the field, nothing made.
    let out = k.c.cli(&[
        "run",
        "-d",
        "--profile",
        "docker-batch",
        "--constant",
        "DOCKER_REPO=deckhand-test/busybox",
        TEST_IMAGE,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("image") && err.contains("DOCKER_REPO"),
        "{err}"
    );
    // A profile that fixes its image refuses IMAGE, naming the profile.
    k.c.cli_ok(&[
        "config",
        "set",
        "profiles/pinned/constants/DOCKER_REPO",
        "deckhand-test/busybox",
    ]);
    let out =
        k.c.cli(&["run", "-d", "--profile", "pinned", TEST_IMAGE, "true"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("profile `pinned` fixes its image"), "{err}");
    assert!(err.contains("image"), "{err}");
    // The agent's own gRPC answers INVALID_ARGUMENT naming the field and the profile.
    let mut agent = deckhand::wire::pb::agent_service_client::AgentServiceClient::connect(format!(
        "http://127.0.0.1:{}",
        k.agent.port
    ))
    .await
    .unwrap();
    let status = agent
        .create_kernel(deckhand::wire::pb::CreateKernelRequest {
            spec: Some(deckhand::wire::pb::KernelSpec {
                kernel_id: uuid::Uuid::new_v4().to_string(),
                profile: "pinned".into(),
                image: TEST_IMAGE.into(),
                ..Default::default()
            }),
            array: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("image") && status.message().contains("`pinned`"),
        "{status:?}"
    );
    assert_eq!(k.ps().len(), 1, "only the first kernel exists");
    // Without IMAGE the pinned profile runs its own image.
    let id = k.run_detached(&["--profile", "pinned", "--constant", "DOCKER_CMD=true"]);
    let info = k.wait_ended(&id, Duration::from_secs(60)).await;
    assert_eq!(info["state"], "DONE", "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_json_shows_the_slots_the_manager_counted() {
    let k = KernelCluster::start("cli-inspect-slots").await;
    let id = k.run_detached(&[
        "--agent", "a1", "--cpus", "0.5", "-m", "64m", TEST_IMAGE, "sleep", "300",
    ]);
    k.wait_state(&id, "RUNNING", Duration::from_secs(60)).await;
    let out = k.c.cli_ok(&["inspect", &id, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect --json is JSON");
    let slots = &v["slots"];
    assert_eq!(slots["cpu"], 0.5, "{v}");
    assert_eq!(slots["memory_bytes"], 64 << 20, "{v}");
    assert_eq!(slots["gpus"], 0, "{v}");
    // `ps --json` (the listing through the manager) carries the same amounts.
    let listed = k
        .ps()
        .into_iter()
        .find(|p| p["kernel_id"] == id.as_str())
        .unwrap();
    assert_eq!(listed["slots"], *slots, "{listed}");
}

/// The keys under `/deckhand/<ns>/config/` with their values.
async fn config_keys(c: &common::Cluster) -> Vec<(String, String)> {
    let prefix = format!("/deckhand/{}/config/", c.ns);
    let resp = c
        .etcd_client()
        .await
        .get(
            prefix.clone(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    resp.kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap()[prefix.len()..].to_string(),
                kv.value_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_valued_key_is_set_from_an_inline_table_validated_as_a_whole() {
    let c = common::Cluster::start("cli-config-table").await;
    c.cli_ok(&[
        "config",
        "set",
        "vast_api/offer_filters",
        r#"{gpu_name = {in = ["RTX_4090"]}, num_gpus = {gte = 1}}"#,
    ]);
    let keys = config_keys(&c).await;
    assert_eq!(
        keys,
        [
            (
                "vast_api/offer_filters/gpu_name/in/0".into(),
                "RTX_4090".into()
            ),
            ("vast_api/offer_filters/num_gpus/gte".into(), "1".into()),
        ],
        "flattened as `config put` would"
    );
    let got: serde_json::Value =
        serde_json::from_str(&c.cli_ok(&["config", "get", "vast_api/offer_filters", "--json"]))
            .unwrap();
    assert_eq!(
        got,
        serde_json::json!({"gpu_name": {"in": ["RTX_4090"]}, "num_gpus": {"gte": 1}})
    );

    // A bad field and a bad operator: both named, nothing written.
    let out = c.cli(&[
        "config",
        "set",
        "vast_api/offer_filters",
        r#"{gpu_nme = {in = ["A100"]}, num_gpus = {like = 2}}"#,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing written"), "{err}");
    assert!(err.contains("`gpu_nme` is not an offer field"), "{err}");
    assert!(err.contains("`like` is not an operator"), "{err}");
    assert_eq!(config_keys(&c).await, keys, "nothing changed");
    // Not a table at all: refused naming the key.
    let out = c.cli(&["config", "set", "vast_api/offer_filters", "RTX_4090"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("TOML inline table"),
        "{err}"
    );
    assert_eq!(config_keys(&c).await, keys, "nothing changed");

    // The per-field keys still work beside it, and a new table replaces the old one whole.
    c.cli_ok(&["config", "set", "vast_api/offer_filters/num_gpus/gte", "2"]);
    c.cli_ok(&[
        "config",
        "set",
        "vast_api/offer_filters/gpu_name",
        r#"{in = ["A100", "H100"]}"#,
    ]);
    c.cli_ok(&[
        "config",
        "set",
        "vast_api/offer_filters",
        r#"{dph_total = {lte = 0.5}}"#,
    ]);
    assert_eq!(
        config_keys(&c).await,
        [(
            "vast_api/offer_filters/dph_total/lte".to_string(),
            "0.5".to_string()
        )]
    );

    // Every table of the schema: a list (fake GPUs), a section, an operator's profile.
    c.cli_ok(&[
        "config",
        "set",
        "docker/fake_gpus",
        r#"[{id = "GPU-00000000-0000-0000-0000-000000000001", name = "Fake", ram_total = "16g"}]"#,
    ]);
    c.cli_ok(&["config", "set", "agent", r#"{heartbeat_interval = "2s"}"#]);
    c.cli_ok(&[
        "config",
        "set",
        "profiles/solver",
        r#"{network = "none", constants = {DOCKER_REPO = "team/solver"}}"#,
    ]);
    let keys = config_keys(&c).await;
    for (k, v) in [
        ("docker/fake_gpus/0/name", "Fake"),
        ("docker/fake_gpus/0/ram_total", "16g"),
        ("agent/heartbeat_interval", "2s"),
        ("profiles/solver/network", "none"),
        ("profiles/solver/constants/DOCKER_REPO", "team/solver"),
    ] {
        assert!(
            keys.contains(&(k.to_string(), v.to_string())),
            "{k}: {keys:?}"
        );
    }
    // A fake GPU without its id is refused whole, naming the field.
    let out = c.cli(&["config", "set", "docker/fake_gpus", r#"[{name = "No id"}]"#]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("docker/fake_gpus/0"),
        "{err}"
    );
    assert_eq!(config_keys(&c).await, keys, "nothing changed");
}

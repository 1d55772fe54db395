//! The deploy files in `deploy/` run as shipped, with only their paths and the dedicated
//! user substituted: the agent and the manager under a real `supervisord` (Debian's
//! `supervisor`) from `deploy/supervisord-*.conf` and `deploy/*.toml`, and the systemd
//! units through `systemd-analyze verify` (Debian's `systemd`).
//!
//! The dedicated user `deckhand` does not exist on a test machine; the tests run the
//! daemons as `nobody` instead, which has no more rights than a fresh system user, so the
//! capabilities the files grant are shown to be enough. Every path the files name under
//! `/etc` or `/var` is moved into the test's temp dir; supervisord is stopped (and, failing
//! that, killed with its programs) when its guard drops, also when a test fails.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::supervisord::Supervisord;
use common::{alive_in, deckhand_bin, docker_inspect, free_port, wait_for, Cluster, TEST_IMAGE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const T: Duration = Duration::from_secs(30);
const AGENT: &str = "deckhand-agent";
const MANAGER: &str = "deckhand-manager";

/// A file of `deploy/`, as shipped.
fn deploy_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `text` with each `(from, to)` replaced; every `from` must occur, so a deploy file that
/// changes shape breaks the test instead of silently escaping the substitution.
fn substitute(name: &str, text: &str, pairs: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (from, to) in pairs {
        assert!(
            out.contains(from.as_str()),
            "deploy/{name} no longer contains `{from}`"
        );
        out = out.replace(from.as_str(), to);
    }
    out
}

/// Panics if a setting (not a comment) of `text` still names a host path the tests must not
/// touch.
fn assert_no_host_paths(name: &str, text: &str, comment: char) {
    for line in text
        .lines()
        .filter(|l| !l.trim_start().starts_with(comment))
    {
        for host in ["/etc/", "/var/", "/usr/local/"] {
            assert!(
                !line.contains(host),
                "deploy/{name}: `{line}` still names {host}"
            );
        }
    }
}

/// `deploy/<name>` (TOML, which must parse) with `values` set: the keys it sets are replaced,
/// the ones it leaves commented out are added.
fn toml_file(name: &str, values: &[(&str, toml::Value)]) -> String {
    let mut table: toml::Table = toml::from_str(&deploy_file(name))
        .unwrap_or_else(|e| panic!("deploy/{name} does not parse: {e}"));
    for (key, value) in values {
        table.insert((*key).to_string(), value.clone());
    }
    toml::to_string(&table).expect("TOML")
}

/// One line of `/proc/<pid>/<file>` that starts with `prefix`.
fn proc_line(pid: u32, file: &str, prefix: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_default()
        .to_string()
}

/// The test's deckhand cluster (etcd, namespace) with the agent and the manager under
/// supervisord, running as `nobody`, configured from `deploy/`. Fields drop in order:
/// supervisord (stopping the daemons) before the cluster (containers, etcd, dirs).
struct Deployed {
    sup: Supervisord,
    c: Cluster,
}

async fn supervised(test: &str) -> Deployed {
    let c = Cluster::start(test).await;
    // The test image exists only locally: do not ask a registry for it first.
    c.cli_ok(&["config", "set", "docker/cache_usage", "cache_first"]);
    c.cli_ok(&["config", "set", "agent/heartbeat_interval", "1s"]);
    let dir = c.dir.path();
    // The manager runs without capabilities: it must be able to read its config.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let etcd = toml::Value::Array(vec![c.etcd_addr.clone().into()]);
    let agent_toml = toml_file(
        "agent.toml",
        &[
            ("etcd-addr", etcd.clone()),
            ("namespace", c.ns.clone().into()),
            (
                "scratch-root",
                dir.join("scratch").display().to_string().into(),
            ),
            (
                "rpc-listen-addr",
                format!("127.0.0.1:{}", free_port()).into(),
            ),
            ("agent-id", "a1".into()),
        ],
    );
    let manager_toml = toml_file(
        "manager.toml",
        &[
            ("etcd-addr", etcd),
            ("namespace", c.ns.clone().into()),
            ("listen", format!("127.0.0.1:{}", free_port()).into()),
            ("manager-id", "m1".into()),
        ],
    );
    std::fs::write(dir.join("agent.toml"), agent_toml).unwrap();
    std::fs::write(dir.join("manager.toml"), manager_toml).unwrap();
    let sup = dir.join("supervisor");
    let paths = |daemon: &str| {
        vec![
            (
                "/usr/local/bin/deckhand".to_string(),
                deckhand_bin().to_string(),
            ),
            (
                format!("/etc/deckhand/{daemon}.toml"),
                dir.join(format!("{daemon}.toml")).display().to_string(),
            ),
            (
                "/var/log/deckhand/".into(),
                format!("{}/log/", sup.display()),
            ),
        ]
    };
    let mut agent_subst = paths("agent");
    agent_subst.push((
        "--reuid=deckhand --regid=deckhand".into(),
        "--reuid=nobody --regid=nogroup".into(),
    ));
    let mut manager_subst = paths("manager");
    manager_subst.push(("user=deckhand".into(), "user=nobody".into()));
    let agent_conf = substitute(
        "supervisord-agent.conf",
        &deploy_file("supervisord-agent.conf"),
        &agent_subst,
    );
    let manager_conf = substitute(
        "supervisord-manager.conf",
        &deploy_file("supervisord-manager.conf"),
        &manager_subst,
    );
    assert_no_host_paths("supervisord-agent.conf", &agent_conf, ';');
    assert_no_host_paths("supervisord-manager.conf", &manager_conf, ';');
    // The agent's program appended to supervisord.conf itself (as to a host's existing
    // config), the manager's and the descriptor limit in conf.d/, as Debian lays them out.
    let s = Supervisord::start_appending(
        &sup,
        &[agent_conf],
        &[
            ("deckhand-manager.conf", manager_conf),
            (
                "deckhand-limits.conf",
                deploy_file("supervisord-limits.conf"),
            ),
        ],
    );
    let sections = s
        .conf_text()
        .lines()
        .filter(|l| l.trim() == "[supervisord]")
        .count();
    assert_eq!(
        sections,
        1,
        "appending the agent's program made a second [supervisord] section:\n{}",
        s.conf_text()
    );
    for program in ["supervisord-agent.conf", "supervisord-manager.conf"] {
        assert!(
            !deploy_file(program)
                .lines()
                .any(|l| l.trim_start().starts_with('[') && !l.contains("[program:")),
            "deploy/{program} has a section other than its program"
        );
    }
    Deployed { sup: s, c }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_under_supervisord_comes_back_after_kill_9_with_its_kernel_and_deregisters_on_stop(
) {
    let d = supervised("deploy").await;
    let (c, sup) = (&d.c, &d.sup);
    let alive = || async { alive_in(&c.cli(&["nodes", "--json"]), "a1") };
    wait_for(T, "a1 registered", || c.registered("a1")).await;
    wait_for(T, "a1 ALIVE at the manager", alive).await;
    let pid = wait_for(T, "agent RUNNING", || async { sup.running_pid(AGENT) }).await;
    let manager = wait_for(T, "manager RUNNING", || async { sup.running_pid(MANAGER) }).await;
    assert!(proc_line(manager, "status", "Uid:").contains("\t65534\t"));
    // The dedicated user (nobody here), the capabilities, the descriptor limit.
    assert!(
        proc_line(pid, "status", "Uid:").contains("\t65534\t"),
        "{}",
        proc_line(pid, "status", "Uid:")
    );
    assert!(
        proc_line(pid, "status", "CapEff:").ends_with("000000000000000b"),
        "CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER only: {}",
        proc_line(pid, "status", "CapEff:")
    );
    // supervisord raised its own limit from 1024 to minfds; the agent inherits it.
    let minfds: u64 = setting(&deploy_file("supervisord-limits.conf"), "minfds")
        .parse()
        .unwrap();
    let nofile = proc_line(pid, "limits", "Max open files");
    let soft: u64 = nofile.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(soft, minfds, "{nofile}");

    // A kernel, and its home handed to the kernel uid by an agent that is not root.
    let kernel = c
        .cli_ok(&["run", "-d", "--agent", "a1", TEST_IMAGE, "sleep", "300"])
        .trim()
        .to_string();
    let inspect = |id: &str| -> serde_json::Value {
        serde_json::from_slice(&c.cli(&["inspect", id]).stdout).unwrap_or_default()
    };
    let running = wait_for(T, "kernel RUNNING", || async {
        Some(inspect(&kernel)).filter(|v| v["state"] == "RUNNING")
    })
    .await;
    let container = running["container_id"].as_str().unwrap().to_string();
    let work = c.dir.path().join("scratch").join(&kernel).join("work");
    assert_eq!(std::fs::metadata(&work).unwrap().uid(), 1000, "home owner");
    // An upload into the kernel's home, then one that replaces a file the kernel owns.
    let local = c.dir.path().join("upload.txt");
    for content in ["first", "second"] {
        std::fs::write(&local, content).unwrap();
        c.cli_ok(&["files", "put", &kernel, local.to_str().unwrap(), "in.txt"]);
    }
    let read = c.cli_ok(&["exec", &kernel, "cat", "/home/work/in.txt"]);
    assert_eq!(read.trim(), "second");
    // A kernel that leaves a read-only dir in its home: removing it removes its home.
    let leaves = c
        .cli_ok(&[
            "run",
            "-d",
            "--agent",
            "a1",
            TEST_IMAGE,
            "sh",
            "-c",
            "mkdir /home/work/ro && echo x > /home/work/ro/f && chmod 500 /home/work/ro",
        ])
        .trim()
        .to_string();
    wait_for(T, "kernel DONE", || async {
        Some(()).filter(|_| inspect(&leaves)["state"] == "DONE")
    })
    .await;
    let leaves_home = c.dir.path().join("scratch").join(&leaves);
    assert!(leaves_home.join("work/ro/f").exists());
    c.cli_ok(&["rm", &leaves]);
    assert!(
        !leaves_home.exists(),
        "the removed kernel's home is still there"
    );

    // kill -9: supervisord starts a new agent, which recovers the kernel.
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let new_pid = wait_for(T, "a new agent RUNNING", || async {
        sup.running_pid(AGENT).filter(|p| *p != pid)
    })
    .await;
    assert!(
        sup.log().contains(&format!(
            "exited: {AGENT} (terminated by SIGKILL; not expected)"
        )),
        "{}",
        sup.log()
    );
    wait_for(T, "recovery", || async {
        sup.program_log("agent.log")
            .contains("kernels recovered")
            .then_some(())
    })
    .await;
    wait_for(T, "a1 registered again", || c.registered("a1")).await;
    wait_for(T, "a1 ALIVE again", alive).await;
    let after = inspect(&kernel);
    assert_eq!(after["state"], "RUNNING", "{after}");
    assert_eq!(after["container_id"], container.as_str(), "{after}");
    assert_eq!(docker_inspect(&container, "{{.State.Running}}"), "true");

    // supervisorctl stop: SIGTERM, a clean exit in time, the key gone, the kernel running.
    let stopping = std::time::Instant::now();
    let out = sup.ctl(&["stop", AGENT]);
    eprintln!("supervisorctl stop {AGENT}: {:?}", stopping.elapsed());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{AGENT}: stopped")),
        "{out:?}"
    );
    assert!(
        sup.log()
            .contains(&format!("stopped: {AGENT} (exit status 0)")),
        "not a clean exit: {}",
        sup.log()
    );
    assert!(!Path::new(&format!("/proc/{new_pid}")).exists());
    assert!(
        c.registered("a1").await.is_none(),
        "the registration key outlived the agent"
    );
    assert_eq!(docker_inspect(&container, "{{.State.Running}}"), "true");
    assert!(sup.program_log("agent.log").contains("signal received"));

    // The manager's program stops cleanly too, and its key goes with it.
    let out = sup.ctl(&["stop", MANAGER]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{MANAGER}: stopped")),
        "{out:?}"
    );
    assert!(
        sup.log()
            .contains(&format!("stopped: {MANAGER} (exit status 0)")),
        "{}",
        sup.log()
    );
    let mut etcd = c.etcd_client().await;
    let key = format!("/deckhand/{}/nodes/managers/m1", c.ns);
    assert_eq!(etcd.get(key, None).await.unwrap().count(), 0);
}

/// The value of `key=` in `text` (the first setting line, comments skipped).
fn setting<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .next()
        .unwrap_or_else(|| panic!("no {key}= in {text}"))
        .trim()
}

#[test]
fn systemd_units_and_supervisord_programs_agree_on_stop_timeout_and_file_limit() {
    for daemon in ["agent", "manager"] {
        let unit = deploy_file(&format!("deckhand-{daemon}.service"));
        let program = deploy_file(&format!("supervisord-{daemon}.conf"));
        assert_eq!(
            setting(&unit, "TimeoutStopSec"),
            setting(&program, "stopwaitsecs")
        );
        assert_eq!(
            setting(&unit, "LimitNOFILE"),
            setting(&deploy_file("supervisord-limits.conf"), "minfds")
        );
        assert_eq!(setting(&unit, "KillSignal"), "SIGTERM");
        assert_eq!(setting(&program, "stopsignal"), "TERM");
    }
    // The agent's stop budget: the default grace (10 s) of on_shutdown = stop plus the
    // event flush (3 s) plus the lease revoke (1 s), with room for Docker's own stop.
    let unit = deploy_file("deckhand-agent.service");
    let budget: u64 = setting(&unit, "TimeoutStopSec").parse().unwrap();
    assert!(budget >= 10 + 3 + 1 + 5, "TimeoutStopSec={budget}");
}

/// `systemd-analyze verify` of `files`; None with the reason when the tool cannot run here.
fn verify(files: &[PathBuf]) -> Result<Output, String> {
    Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(files)
        .output()
        .map_err(|e| format!("systemd-analyze cannot be started: {e}"))
}

/// Whether `systemd-analyze`'s complaint says it needs a running systemd (PID 1, its
/// manager or the D-Bus system bus), which a container or a CI runner may not have.
fn needs_a_running_systemd(said: &str) -> bool {
    [
        "System has not been booted with systemd",
        "Failed to connect to bus",
        "Failed to connect to system scope bus",
        "Failed to initialize manager",
        "Failed to allocate manager object",
        "Failed to create manager",
    ]
    .iter()
    .any(|m| said.contains(m))
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    // A unit that must pass anywhere the tool works: it tells a tool that cannot run here
    // (skipped, saying why) from units that are wrong (failed).
    let probe = dir.path().join("deckhand-probe.service");
    std::fs::write(&probe, "[Service]\nExecStart=/bin/true\n").unwrap();
    match verify(std::slice::from_ref(&probe)) {
        Err(reason) => return eprintln!("SKIPPED: {reason} (Debian's systemd package has it)"),
        Ok(out) if !out.status.success() => {
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // Only a tool that needs systemd as PID 1 (or its bus) is a reason to skip; a
            // probe that fails for anything else is a broken check, and fails the test.
            assert!(
                needs_a_running_systemd(&said),
                "systemd-analyze verify refused a unit that must pass: {said}"
            );
            return eprintln!(
                "SKIPPED: systemd-analyze verify cannot run without systemd as PID 1 here: {}",
                said.trim()
            );
        }
        Ok(_) => {}
    }
    // The units as shipped, with ExecStart's binary the one just built (verify checks it
    // is executable); everything else unchanged.
    let mut units = Vec::new();
    for name in ["deckhand-agent.service", "deckhand-manager.service"] {
        let text = substitute(
            name,
            &deploy_file(name),
            &[("/usr/local/bin/deckhand".into(), deckhand_bin().to_string())],
        );
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        units.push(path);
    }
    let out = verify(&units).unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // verify exits 0 on unknown keys and unparsable values and only warns: any output fails.
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    // The check has teeth: a misplaced key in a copy of the agent unit is reported.
    let broken = dir.path().join("deckhand-broken.service");
    let agent = std::fs::read_to_string(&units[0]).unwrap();
    std::fs::write(
        &broken,
        agent.replace("[Service]\n", "[Service]\nStartLimitIntervalSec=0\n"),
    )
    .unwrap();
    let out = verify(&[broken]).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unknown key 'StartLimitIntervalSec'"),
        "{out:?}"
    );
}

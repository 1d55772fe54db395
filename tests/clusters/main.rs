//! Cluster kernels (Qarnot's `docker-cluster*` profiles) as a user notices them, against the
//! real agent, manager, CLI, etcd and Docker engine: N instances run as one kernel on a
//! private network where each finds the others by hostname; `ps`, `logs`, `exec` and
//! `files` name one instance as `<id>/<index>`; the kernel ends with its master (workers
//! stopped), a failing worker fails it; slots are given to all instances or to none; a
//! `docker-cluster` has no route outside its network while `docker-cluster-network` has;
//! suspend/resume act on all instances; an agent killed while starting one never leaves
//! some instances running alone.

#[path = "../common/mod.rs"]
mod common;

mod placing_and_crashes;
mod running;

use std::process::Output;
use std::time::Duration;

use common::{containers, docker_inspect, networks, wait_for, HostListener, KernelCluster};

const T: Duration = Duration::from_secs(60);

/// `deckhand run -d --profile PROFILE --instances N` of the local test image with these
/// constants, plus `extra` flags.
fn run(
    k: &KernelCluster,
    profile: &str,
    n: u32,
    constants: &[(&str, &str)],
    extra: &[&str],
) -> Output {
    let n = n.to_string();
    k.run_profile(&["--profile", profile, "--instances", &n], constants, extra)
}

fn run_ok(
    k: &KernelCluster,
    profile: &str,
    n: u32,
    constants: &[(&str, &str)],
    extra: &[&str],
) -> String {
    let n = n.to_string();
    k.run_profile_ok(&["--profile", profile, "--instances", &n], constants, extra)
}

/// The kernel's containers by instance index, from their labels.
fn instances(ns: &str, id: &str) -> Vec<(u32, String)> {
    let mut out: Vec<(u32, String)> = containers(ns)
        .into_iter()
        .filter(|c| docker_inspect(c, "{{index .Config.Labels \"io.deckhand.kernel-id\"}}") == id)
        .map(|c| {
            let i = docker_inspect(&c, "{{index .Config.Labels \"io.deckhand.instance\"}}");
            (i.parse().unwrap_or(u32::MAX), c)
        })
        .collect();
    out.sort();
    out
}

fn running(container: &str) -> bool {
    docker_inspect(container, "{{.State.Running}}") == "true"
}

/// Waits for every instance to have resolved the others by hostname (the master's script
/// prints `resolved` once it has).
const MASTER: &str = r#"sh -c 'for h in $(echo $CLUSTER_HOSTS | tr , " "); do until nslookup $h >/dev/null 2>&1; do sleep 0.2; done; done; echo "master $INSTANCE_ID/$INSTANCE_COUNT on $(hostname) resolved $CLUSTER_HOSTS"; until [ -f /home/work/done ]; do sleep 0.2; done; exit 3'"#;
const WORKER: &str = r#"sh -c 'echo "worker $INSTANCE_ID/$INSTANCE_COUNT on $(hostname) master=$CLUSTER_MASTER"; nslookup master >/dev/null && echo "worker $INSTANCE_ID found master"; exec sleep 600'"#;

/// Tries the host listener at the instance's gateway and at Docker's bridge address, and
/// the worker by name.
const NET_SCRIPT: &str = r#"gw=$(ip route | awk '/default/ {print $3}'); r=unreachable; for ip in $gw 172.17.0.1; do if printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 "$ip" "$PORT" | grep -q hello-from-host; then r=reached-host; fi; done; echo "$r"; nslookup worker-1 >/dev/null 2>&1 && echo found-worker"#;

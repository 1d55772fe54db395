//! A cluster kernel too large for any one agent spans the agents of one Docker swarm, as a
//! user notices it: against the real agent, manager, CLI and etcd, and two real Docker
//! engines this test starts itself (`common::swarm`: each `dockerd` in a network namespace
//! of its own, joined by a veth pair; A the swarm's manager, B a worker). The machine's own
//! engine is left alone. CPU is the scarce slot, so the split is known: each instance asks
//! for 0.4 of the machine's CPUs, so each agent holds two and three need both.
//!
//! Shown: the master and the first worker run on A, the last worker on B, on one overlay
//! network where each reaches the others by hostname; `ps` lists the kernel once; `exec` and
//! `logs` of `<id>/2` reach B; the master's exit ends the kernel with its code and stops
//! the worker on B; a worker failing on B fails the kernel with B's reason and stops the
//! instances on A; slots on both agents are given back; `rm` leaves nothing on either
//! engine; a cluster larger than the swarm is refused whole; `stop` stops every instance on
//! both engines; the peer and then the owner killed with -9 and started again: the kernel
//! still runs, and a worker killed on B still fails it.

mod common;

use std::time::Duration;

use common::swarm::{Engine, Swarm};
use common::{wait_for, Cluster, KernelCluster, Proc};
use deckhand::wire::pb::{self, cluster_service_client::ClusterServiceClient};

const T: Duration = Duration::from_secs(90);

/// What one instance asks: 0.4 of this machine's CPUs.
fn cpus() -> String {
    let n = std::thread::available_parallelism().map_or(2, |n| n.get());
    format!("{:.2}", n as f64 * 0.4)
}

fn agent(c: &Cluster, id: &str, host: &str) -> Proc {
    agent_at(c, id, host, common::free_port())
}

/// The agent on engine `host` at `port` (a restarted agent keeps its address, as under a
/// supervisor: the owner reaches its peers where they registered).
fn agent_at(c: &Cluster, id: &str, host: &str, port: u16) -> Proc {
    let scratch = c.dir.path().join(format!("scratch-{id}"));
    c.agent_at::<&str>(id, scratch, port, &[], &[("DOCKER_HOST", host)])
}

/// Waits until `engines` hold `n` containers of namespace `ns` (at least one when `n` is
/// 0), none of them running.
async fn all_stopped(engines: &[&Engine], ns: &str, n: usize) {
    wait_for(T, "the instances stopped", || async {
        let states: Vec<bool> = engines
            .iter()
            .flat_map(|e| e.containers(ns).into_iter().map(move |c| e.running(&c)))
            .collect();
        (!states.is_empty() && (n == 0 || states.len() == n) && states.iter().all(|r| !r))
            .then_some(())
    })
    .await;
}

/// CPU allocated on agent `id`, from the manager's view of its heartbeats.
fn cpu_allocated(k: &KernelCluster, id: &str) -> Option<f64> {
    k.c.node(id)?["slots"]["allocated"]["cpu"].as_f64()
}

/// A worker that serves its hostname over HTTP on port 8080.
const SERVE: &str = r#"sh -c 'd=/home/work/w-$INSTANCE_ID; mkdir -p $d && echo served-by-$(hostname) > $d/index.html && exec httpd -f -p 8080 -h $d'"#;

/// A cluster of 3 instances: it fits neither agent alone.
fn run3(k: &KernelCluster, master: &str, worker: &str) -> String {
    k.run_profile_ok(
        &["--profile", "docker-cluster-network", "--instances", "3"],
        &[("DOCKER_CMD_MASTER", master), ("DOCKER_CMD_WORKER", worker)],
        &["--cpus", &cpus()],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_too_large_for_one_agent_spans_the_agents_of_one_swarm() {
    let sw = Swarm::start().await;
    let c = Cluster::start("clusterspan").await;
    c.cli_ok(&["config", "set", "docker/cache_usage", "cache_first"]);
    let manager = c.manager("m1", &[]);
    let a = agent(&c, "a", &sw.a.host);
    let b = agent(&c, "b", &sw.b.host);
    for id in ["a", "b"] {
        wait_for(T, "both agents ALIVE in one swarm", || async {
            let n = c.node(id)?;
            let docker = n["runtimes"]
                .as_array()?
                .iter()
                .find(|r| r["name"] == "docker")?;
            (n["state"] == "ALIVE" && !docker["swarm"].as_str()?.is_empty()).then_some(())
        })
        .await;
    }
    let mut k = KernelCluster {
        agent: a,
        manager,
        c,
    };
    let ns = k.c.ns.clone();

    // Runs across both engines; every instance reaches every other by name.
    let id = run3(&k, "sleep 600", SERVE);
    let v = k.wait_state(&id, "RUNNING", T).await;
    assert_eq!(
        v["agent_id"], "a",
        "owned by the swarm manager's agent: {v}"
    );
    assert_eq!(v["spec"]["submit_as_hold"], false, "the spec as asked: {v}");
    let info = &v["runtime_info"];
    assert!(
        info["instance/2"]
            .as_str()
            .unwrap_or("")
            .ends_with("on agent b"),
        "{info}"
    );
    let on_a = sw.a.containers(&ns);
    let on_b = sw.b.containers(&ns);
    assert_eq!(on_a.len(), 2, "master and worker-1 on A: {on_a:?}");
    assert_eq!(on_b.len(), 1, "worker-2 on B: {on_b:?}");
    assert_eq!(k.ps().len(), 1, "listed once: {:?}", k.ps());
    wait_for(T, "one instance's CPU held on b", || async {
        let held = cpu_allocated(&k, "b")?;
        ((held - cpus().parse::<f64>().ok()?).abs() < 0.01).then_some(())
    })
    .await;
    // The master (on A) reaches worker-2 (on B) and worker-2 reaches worker-1 (on A).
    for (from, to) in [(id.clone(), "worker-2"), (format!("{id}/2"), "worker-1")] {
        let got = wait_for(T, "an instance on the other engine answering", || async {
            // busybox's wget crashes in this static build; its nc speaks HTTP well enough.
            let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {to} 8080");
            let out = k.c.cli(&["exec", &from, "--", "sh", "-c", &get]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.contains("served-by").then_some(text)
        })
        .await;
        assert!(got.contains(&format!("served-by-{to}")), "{got}");
    }
    let env = k.c.cli_ok(&["exec", &format!("{id}/2"), "--", "env"]);
    for want in [
        "INSTANCE_ID=2",
        "INSTANCE_COUNT=3",
        "CLUSTER_HOSTS=master,worker-1,worker-2",
    ] {
        assert!(env.contains(want), "{want} in {env}");
    }
    let back =
        k.c.cli_ok(&["exec", &format!("{id}/2"), "--", "nslookup", "master"]);
    assert!(back.contains("Address"), "{back}");
    k.c.cli_ok(&["rm", "-f", &id]);
    wait_for(T, "nothing left on either engine", || async {
        (sw.a.containers(&ns).is_empty()
            && sw.b.containers(&ns).is_empty()
            && sw.a.networks(&ns).is_empty())
        .then_some(())
    })
    .await;

    // The master's exit ends the kernel with its code; the worker on B is stopped.
    let id = run3(&k, "sh -c 'sleep 5; exit 5'", "sleep 600");
    let v = k.wait_ended(&id, T).await;
    assert_eq!(v["state"], "FAILED", "{v}");
    assert_eq!(v["exit_code"], 5, "{v}");
    all_stopped(&[&sw.b], &ns, 0).await;
    wait_for(T, "CPU back on both agents", || async {
        (cpu_allocated(&k, "a")? < 0.01 && cpu_allocated(&k, "b")? < 0.01).then_some(())
    })
    .await;
    k.c.cli_ok(&["rm", &id]);

    // A worker failing on B fails the kernel with B's reason and stops the rest.
    let id = run3(
        &k,
        "sleep 600",
        "sh -c 'if [ \"$INSTANCE_ID\" = 2 ]; then sleep 5; exit 7; fi; sleep 600'",
    );
    let v = k.wait_ended(&id, T).await;
    assert_eq!(v["state"], "FAILED", "{v}");
    assert_eq!(v["exit_code"], 7, "{v}");
    let reason = v["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("agent `b`") && reason.contains("instance 2 (worker) exited with code 7"),
        "{reason}"
    );
    all_stopped(&[&sw.a], &ns, 0).await;
    k.c.cli_ok(&["rm", &id]);

    // The span is the manager's to set: a request that sets it is refused, naming it.
    let mut manager = ClusterServiceClient::connect(format!("http://127.0.0.1:{}", k.manager.port))
        .await
        .expect("manager gRPC");
    let refused = manager
        .run_kernel(pb::RunKernelRequest {
            request: Some(pb::CreateKernelRequest {
                spec: Some(pb::KernelSpec {
                    kernel_id: "3f2b7c1e-0c4d-4e8a-9b1a-2d5e6f7a8b9c".into(),
                    image: common::TEST_IMAGE.into(),
                    span: Some(pb::ClusterSpan {
                        count: 1,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                array: None,
            }),
            agent_id: String::new(),
        })
        .await
        .expect_err("a span set by a request");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("request.spec.span"),
        "{refused:?}"
    );

    // Larger than the whole swarm: refused, nothing made anywhere.
    let out = k.run_profile(
        &["--profile", "docker-cluster-network", "--instances", "5"],
        &[("DOCKER_CMD_WORKER", "sleep 600")],
        &["--cpus", &cpus()],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cpu"), "{err}");
    assert!(sw.a.containers(&ns).is_empty() && sw.b.containers(&ns).is_empty());
    assert!(k.ps().is_empty(), "{:?}", k.ps());

    // Stopping the kernel stops every instance on both engines.
    let id = run3(&k, "sleep 600", "sleep 600");
    k.wait_state(&id, "RUNNING", T).await;
    k.c.cli_ok(&["stop", &id]);
    k.wait_ended(&id, T).await;
    all_stopped(&[&sw.a, &sw.b], &ns, 3).await;
    k.c.cli_ok(&["rm", &id]);

    // The peer, then the owner, killed with -9 and started again: the kernel still runs,
    // and the owner still follows its part on B (a worker killed there fails the kernel).
    let id = run3(&k, "sleep 600", "sleep 600");
    k.wait_state(&id, "RUNNING", T).await;
    let mut b = b;
    for (name, host) in [("b", sw.b.host.clone()), ("a", sw.a.host.clone())] {
        let restarted = if name == "a" { &mut k.agent } else { &mut b };
        restarted.kill9();
        *restarted = agent_at(&k.c, name, &host, restarted.port);
        let log = || restarted.log();
        wait_for(T, "the agent reporting again", || async {
            log().contains("reporting to manager").then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        k.wait_state(&id, "RUNNING", T).await;
        assert_eq!(k.ps().len(), 1, "{:?}", k.ps());
    }
    let worker = sw.b.containers(&ns).pop().expect("worker-2 on B");
    sw.b.docker(&["kill", &worker]);
    let v = k.wait_ended(&id, T).await;
    assert_eq!(v["state"], "FAILED", "{v}");
    let reason = v["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("agent `b`") && reason.contains("instance 2"),
        "{reason}"
    );
    all_stopped(&[&sw.a], &ns, 0).await;
    k.c.cli_ok(&["rm", &id]);
    wait_for(T, "nothing left on either engine", || async {
        (sw.a.containers(&ns).is_empty() && sw.b.containers(&ns).is_empty()).then_some(())
    })
    .await;
    drop(b);
}

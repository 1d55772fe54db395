//! The supervisor over the in-memory runtime (a stand-in for Docker, like Nomad's mock
//! driver): arrays with max-parallel, slots held and given back exactly once, wrong-state
//! refusals, recovery against the runtime's listing, events in order. Milliseconds each;
//! the same behaviours against the real engine are in `tests/`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::slots::Capacity;
use super::{Action, Control, KernelError, KernelState, Supervisor, SupervisorOptions};
use crate::config::ClusterConfig;
use crate::runtime::memory::MemoryRuntime;
use crate::runtime::{Runtime, Runtimes};
use crate::spec::{ArrayRequest, CreateRequest, Template};

struct Fixture {
    sup: Supervisor,
    rt: Arc<MemoryRuntime>,
    stop: CancellationToken,
    run: tokio::task::JoinHandle<()>,
    _cfg: watch::Sender<Arc<ClusterConfig>>,
    _cap: watch::Sender<Arc<Capacity>>,
}

/// A supervisor over `rt` with its registry under `dir`, on a 2-CPU, 4 GiB host.
fn start(rt: Arc<MemoryRuntime>, dir: &Path) -> Fixture {
    let (cfg_tx, cfg) = watch::channel(Arc::new(ClusterConfig {
        default_runtime: "memory".into(),
        ..ClusterConfig::default()
    }));
    let (cap_tx, capacity) = watch::channel(Arc::new(Capacity {
        cpu_count: 2,
        memory_total: 4 << 30,
        gpus: Vec::new(),
        ..Default::default()
    }));
    let runtime: Arc<dyn Runtime> = rt.clone();
    let sup = Supervisor::new(SupervisorOptions {
        runtimes: Runtimes::new(runtime),
        agent_id: "a1".into(),
        state_dir: dir.to_path_buf(),
        config: cfg,
        capacity,
        creation_concurrency: 4,
        event_capacity: 1000,
    })
    .expect("supervisor");
    let stop = CancellationToken::new();
    let run = tokio::spawn(sup.clone().run(stop.clone()));
    Fixture {
        sup,
        rt,
        stop,
        run,
        _cfg: cfg_tx,
        _cap: cap_tx,
    }
}

impl Fixture {
    async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.run.await;
    }

    fn state(&self, id: &str) -> Option<KernelState> {
        self.sup.info(id).ok().map(|v| v.record.state)
    }

    async fn wait(&self, id: &str, state: KernelState) {
        for _ in 0..1000 {
            if self.state(id) == Some(state) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("kernel {id} never became {state}: {:?}", self.state(id));
    }

    fn control(&self, id: &str, action: Action) -> Control {
        Control {
            kernel_id: id.into(),
            action: Some(action),
            signal: 0,
            grace: None,
            force: true,
        }
    }
}

fn template(cpus: f64) -> Template {
    Template {
        kernel_id: uuid::Uuid::new_v4().to_string(),
        image: "deckhand-test/busybox:latest".into(),
        cpus,
        ..Default::default()
    }
}

fn one(t: Template) -> CreateRequest {
    CreateRequest {
        template: t,
        array: None,
    }
}

#[tokio::test]
async fn a_kernel_runs_and_ends_and_its_events_come_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(Arc::new(MemoryRuntime::new()), dir.path());
    let mut events = f.sup.events().subscribe();
    let t = template(0.5);
    let id = t.kernel_id.clone();
    let made = f.sup.create(one(t)).await.unwrap();
    assert_eq!(made[0].record.state, KernelState::Running);
    f.rt.exit(&id, 0);
    f.wait(&id, KernelState::Done).await;
    let mut seen = Vec::new();
    while let Ok(ev) = events.try_recv() {
        assert_eq!(ev.kernel_id, id);
        seen.push((ev.seq, ev.state));
    }
    let states: Vec<KernelState> = seen.iter().map(|(_, s)| *s).collect();
    use KernelState::*;
    assert_eq!(states, [Preparing, Creating, Running, Done]);
    assert!(seen.windows(2).all(|w| w[1].0 == w[0].0 + 1), "{seen:?}");
    f.shutdown().await;
}

#[tokio::test]
async fn arrays_never_run_more_than_max_parallel_and_start_the_next_as_one_ends() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(Arc::new(MemoryRuntime::new()), dir.path());
    let t = template(0.0);
    let array = t.kernel_id.clone();
    let tasks = f
        .sup
        .create(CreateRequest {
            template: t,
            array: Some(ArrayRequest {
                begin: 1,
                end: 5,
                step: 1,
                max_parallel: 2,
            }),
        })
        .await
        .unwrap();
    assert_eq!(tasks.len(), 5);
    for round in 1..=5 {
        let running: Vec<String> = (1..=5)
            .map(|i| format!("{array}.{i}"))
            .filter(|id| f.rt.is_running(id))
            .collect();
        // Tasks start in the background: wait for the cap (or the tail) to be reached.
        let want = 2.min(5 - round + 1);
        for _ in 0..200 {
            if f.rt.running() == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(f.rt.running(), want, "round {round}: {running:?}");
        let next = (1..=5)
            .map(|i| format!("{array}.{i}"))
            .find(|id| f.rt.is_running(id))
            .unwrap();
        f.rt.exit(&next, 0);
        f.wait(&next, KernelState::Done).await;
    }
    for i in 1..=5 {
        assert_eq!(f.state(&format!("{array}.{i}")), Some(KernelState::Done));
    }
    f.shutdown().await;
}

#[tokio::test]
async fn slots_are_held_until_the_end_and_given_back_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(Arc::new(MemoryRuntime::new()), dir.path());
    let a = template(1.5);
    let a_id = a.kernel_id.clone();
    f.sup.create(one(a)).await.unwrap();
    assert_eq!(f.sup.allocated().cpu, 1.5);
    let err = f.sup.create(one(template(1.0))).await.unwrap_err();
    assert!(matches!(err, KernelError::Exhausted(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "cpu: 1 requested, 0.5 of 2 free on this agent"
    );
    f.rt.exit(&a_id, 1);
    f.wait(&a_id, KernelState::Failed).await;
    assert_eq!(f.sup.allocated().cpu, 0.0);
    // Removing the ended kernel gives nothing back a second time.
    f.sup
        .control(f.control(&a_id, Action::Remove))
        .await
        .unwrap();
    assert_eq!(f.sup.allocated().cpu, 0.0);
    let b = f.sup.create(one(template(2.0))).await.unwrap();
    assert_eq!(b[0].record.state, KernelState::Running);
    assert_eq!(f.sup.allocated().cpu, 2.0);
    f.shutdown().await;
}

#[tokio::test]
async fn operations_in_the_wrong_state_are_refused_naming_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(Arc::new(MemoryRuntime::new()), dir.path());
    let mut held = template(0.0);
    held.submit_as_hold = true;
    let held_id = held.kernel_id.clone();
    f.sup.create(one(held)).await.unwrap();
    assert_eq!(f.state(&held_id), Some(KernelState::Held));
    let err = f
        .sup
        .control(f.control(&held_id, Action::Suspend))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "cannot suspend a kernel that is HELD");
    f.sup
        .control(f.control(&held_id, Action::Release))
        .await
        .unwrap();
    f.wait(&held_id, KernelState::Running).await;
    let err = f
        .sup
        .control(f.control(&held_id, Action::Resume))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "cannot resume a kernel that is RUNNING");
    f.sup
        .control(f.control(&held_id, Action::Suspend))
        .await
        .unwrap();
    assert_eq!(f.state(&held_id), Some(KernelState::Suspended));
    // What the runtime cannot do at all says so before the kernel's state is looked at,
    // naming the runtime; the kernel stays as it was.
    let exec = crate::runtime::Exec {
        command: vec!["true".into()],
        env: Default::default(),
        working_dir: String::new(),
        ..Default::default()
    };
    let err = f
        .sup
        .exec(&held_id, exec)
        .await
        .err()
        .expect("exec refused");
    assert_eq!(
        err.to_string(),
        "exec is not supported by the memory runtime"
    );
    assert_eq!(f.state(&held_id), Some(KernelState::Suspended));
    f.sup
        .control(f.control(&held_id, Action::Resume))
        .await
        .unwrap();
    assert_eq!(f.state(&held_id), Some(KernelState::Running));
    f.shutdown().await;
}

#[tokio::test]
async fn recovery_reports_ends_seen_while_down_and_adopts_unrecorded_instances() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(MemoryRuntime::new());
    let f = start(rt.clone(), dir.path());
    let (a, b) = (template(0.5), template(0.25));
    let (a_id, b_id) = (a.kernel_id.clone(), b.kernel_id.clone());
    f.sup.create(one(a)).await.unwrap();
    f.sup.create(one(b)).await.unwrap();
    let unrecorded = f.sup.info(&b_id).unwrap().record;
    f.shutdown().await;
    // While the agent is down: one kernel ends, and an instance appears that no record has
    // (a crash between creating it and writing its record).
    rt.exit_quietly(&a_id, 3);
    let mut lost = unrecorded.clone();
    lost.id = uuid::Uuid::new_v4().to_string();
    lost.handle = None;
    let lost_id = lost.id.clone();
    rt.add_unrecorded(lost.launch);
    let f = start(rt.clone(), dir.path());
    f.wait(&a_id, KernelState::Failed).await;
    let ended = f.sup.info(&a_id).unwrap().record;
    assert_eq!(ended.exit_code, Some(3));
    assert_eq!(ended.reason, "exited with code 3");
    f.wait(&lost_id, KernelState::Running).await;
    assert_eq!(f.state(&b_id), Some(KernelState::Running));
    // Slots: b and the adopted kernel (a ended).
    assert_eq!(f.sup.allocated().cpu, 0.5);
    f.shutdown().await;
}

#[tokio::test]
async fn a_held_kernel_whose_instance_vanished_while_down_is_created_again_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(MemoryRuntime::new());
    let f = start(rt.clone(), dir.path());
    let mut t = template(0.5);
    t.submit_as_hold = true;
    let id = t.kernel_id.clone();
    f.sup.create(one(t)).await.unwrap();
    assert_eq!(f.state(&id), Some(KernelState::Held));
    f.shutdown().await;
    rt.remove_quietly(&id);
    let f = start(rt.clone(), dir.path());
    // Recovery finds no instance and creates one again, held as before.
    for _ in 0..1000 {
        if crate::runtime::memory::kernels_of(&rt).contains_key(&id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(crate::runtime::memory::kernels_of(&rt).contains_key(&id));
    f.wait(&id, KernelState::Held).await;
    let seen: Vec<(KernelState, String)> = f
        .sup
        .events()
        .after(0, 1000)
        .into_iter()
        .filter(|e| e.kernel_id == id)
        .map(|e| (e.state, e.reason))
        .collect();
    let again = seen
        .iter()
        .position(|(s, r)| {
            *s == KernelState::Preparing
                && r == "the agent restarted while the kernel was HELD; creating it again"
        })
        .unwrap_or_else(|| panic!("no relaunch event: {seen:?}"));
    assert_eq!(
        seen[again + 1..].last().map(|(s, _)| *s),
        Some(KernelState::Held),
        "{seen:?}"
    );
    // Its slots are held once, as before the restart.
    assert_eq!(f.sup.allocated().cpu, 0.5);
    f.shutdown().await;
}

#[tokio::test]
async fn control_answers_unavailable_and_changes_nothing_while_the_runtime_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(Arc::new(MemoryRuntime::new()), dir.path());
    let t = template(0.5);
    let id = t.kernel_id.clone();
    f.sup.create(one(t)).await.unwrap();
    f.rt.set_down(true);
    let err = f
        .sup
        .control(f.control(&id, Action::Stop))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            KernelError::Runtime(crate::runtime::RuntimeError::Unavailable(_))
        ),
        "{err}"
    );
    assert_eq!(f.state(&id), Some(KernelState::Running));
    assert_eq!(f.sup.allocated().cpu, 0.5);
    f.rt.set_down(false);
    f.sup.control(f.control(&id, Action::Stop)).await.unwrap();
    f.wait(&id, KernelState::Failed).await;
    assert_eq!(f.sup.allocated().cpu, 0.0);
    f.shutdown().await;
}

#[tokio::test]
async fn kernels_read_as_synced_once_recovery_and_the_first_resync_are_done() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(MemoryRuntime::new());
    let f = start(rt.clone(), dir.path());
    f.sup.create(one(template(0.5))).await.unwrap();
    f.shutdown().await;
    let before = crate::util::now_ms();
    let f = start(rt, dir.path());
    let mut synced = f.sup.synced();
    let at = *synced
        .wait_for(|at| *at > 0)
        .await
        .expect("the supervisor publishes its resync");
    assert!(at >= before, "synced at {at}, restarted at {before}");
    f.shutdown().await;
}

#[tokio::test]
async fn a_backend_that_answers_again_ends_the_reconnect_wait_early() {
    let rt = MemoryRuntime::new();
    rt.set_down(true);
    // Down: the whole backoff delay is waited out.
    let waited = tokio::time::timeout(
        Duration::from_millis(700),
        super::observe::back_or_waited(&rt, Duration::from_secs(60)),
    )
    .await;
    assert!(waited.is_err(), "returned while the backend was down");
    // Back: the next probe ends the wait, long before the delay.
    rt.set_down(false);
    tokio::time::timeout(
        Duration::from_secs(30),
        super::observe::back_or_waited(&rt, Duration::from_secs(600)),
    )
    .await
    .expect("the wait ends once the backend answers");
}

#[tokio::test]
async fn profile_features_the_runtime_cannot_carry_out_are_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(Arc::new(MemoryRuntime::new()), dir.path());
    let profiled = |profile: &str, constants: &[(&str, &str)]| Template {
        image: String::new(),
        profile: profile.into(),
        constants: constants
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..template(0.5)
    };
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAIMSpwW3FrrQMJ+foLHmkIUKXGvM7GEqdzQysTpne+U k";
    // The memory runtime has no exec (shutdown command, SSH) and no host ports.
    for (t, field, what) in [
        (
            profiled("docker-network-ssh", &[("DOCKER_SSH", key)]),
            "constants[DOCKER_SSH]",
            "SSH access",
        ),
        (
            profiled("docker-batch", &[("DOCKER_SHUTDOWN_CMD", "touch /x")]),
            "constants[DOCKER_SHUTDOWN_CMD]",
            "a shutdown command",
        ),
    ] {
        let id = t.kernel_id.clone();
        let err = f.sup.create(one(t)).await.expect_err("refused");
        let KernelError::Spec(e) = &err else {
            panic!("{err}");
        };
        assert!(e.forbidden, "FAILED_PRECONDITION: {err}");
        assert_eq!(e.field, field);
        assert_eq!(
            e.reason,
            format!("{what} is not supported by the memory runtime")
        );
        assert!(f.sup.info(&id).is_err(), "nothing was made");
    }
    assert_eq!(f.sup.allocated().cpu, 0.0);
    // What it can carry out runs: a batch profile kernel with the default shutdown command.
    let t = profiled("docker-batch", &[("DOCKER_CMD", "true"), ("MODE", "fast")]);
    let id = t.kernel_id.clone();
    let made = f.sup.create(one(t)).await.unwrap();
    assert_eq!(made[0].record.state, KernelState::Running);
    assert_eq!(made[0].record.spec.image, "library/ubuntu:latest");
    assert_eq!(made[0].record.spec.network_mode, "none");
    f.sup.control(f.control(&id, Action::Stop)).await.unwrap();
    f.shutdown().await;
}

#[tokio::test]
async fn a_run_whose_end_is_seen_before_its_restart_is_recorded_is_counted_once() {
    // The run fails at once and its end arrives while the restart's start has not
    // answered yet (a container whose command fails at once, under load): it counts as
    // one run and one restart, never as a restart still due (which started it twice).
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(MemoryRuntime::new());
    rt.exit_on_start(3, Duration::from_millis(100));
    let f = start(rt.clone(), dir.path());
    let mut t = template(0.5);
    t.restart_policy = "on-failure:2".into();
    t.restart_delay = "50ms".into();
    let id = t.kernel_id.clone();
    f.sup.create(one(t)).await.unwrap();
    f.wait(&id, KernelState::Failed).await;
    // Any extra start would come within a few delays.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let rec = f.sup.info(&id).unwrap().record;
    assert_eq!(rec.restart_count, 2, "{rec:?}");
    assert_eq!(rec.exit_code, Some(3), "{rec:?}");
    assert_eq!(f.rt.starts(), 3, "one run and two restarts");
    assert_eq!(f.state(&id), Some(KernelState::Failed));
    f.shutdown().await;
}

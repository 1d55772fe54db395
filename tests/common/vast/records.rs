//! What a test asserts on: the requests the stand-in received, rentals per offer, the
//! destroyed instances, each instance as rented, and its real container (env, command,
//! state, exit code). Also [`VastStandIn::preexisting`], an instance that exists before
//! the agent starts (a leaked one, to be destroyed or re-adopted).
use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use super::instances::{self, Instance};
use super::offers::Offer;
use super::{RecordedRequest, VastStandIn};

impl VastStandIn {
    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// How many requests with `method` had a path starting with `path_prefix`
    /// (`count("PUT", "/api/v0/asks/")`).
    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        let st = self.shared.lock();
        st.requests
            .iter()
            .filter(|r| r.method == method && r.path.starts_with(path_prefix))
            .count()
    }

    /// Successful rentals of offer `id`.
    pub fn rentals(&self, offer_id: u64) -> usize {
        self.shared
            .lock()
            .rentals
            .get(&offer_id)
            .copied()
            .unwrap_or(0)
    }

    /// Rental attempts of offer `id` (`no_such_ask` answers included).
    pub fn rent_attempts(&self, offer_id: u64) -> usize {
        let st = self.shared.lock();
        st.rent_attempts.get(&offer_id).copied().unwrap_or(0)
    }

    /// Offer ids in the order they were successfully rented.
    pub fn rented_offers(&self) -> Vec<u64> {
        self.shared.lock().rented_order.clone()
    }

    /// Instance ids destroyed through the API, in order.
    pub fn destroyed(&self) -> Vec<u64> {
        self.shared.lock().destroyed.clone()
    }

    /// Instance `id` as rented (destroyed ones too), with its status as last read.
    pub fn instance(&self, id: u64) -> Option<Instance> {
        self.shared.lock().instances.get(&id).cloned()
    }

    /// Every instance ever made (destroyed ones too), by id.
    pub fn instances(&self) -> Vec<Instance> {
        self.shared.lock().instances.values().cloned().collect()
    }

    /// Ids of the instances not destroyed.
    pub fn live_instances(&self) -> Vec<u64> {
        let st = self.shared.lock();
        st.instances
            .values()
            .filter(|i| !i.destroyed)
            .map(|i| i.id)
            .collect()
    }

    /// The offers as they are now (rented ones read `rented: true`).
    pub fn offers(&self) -> Vec<Offer> {
        self.shared.lock().offers.clone()
    }

    /// The Docker container of instance `id`, once made.
    pub fn container_of(&self, id: u64) -> Option<String> {
        self.instance(id)?.container
    }

    /// The containers this stand-in made that still exist (running or not).
    pub fn containers(&self) -> Vec<String> {
        instances::containers_of(&self.shared.sid)
    }

    fn inspect(&self, id: u64, format: &str) -> Option<String> {
        let container = self.container_of(id)?;
        let out = Command::new("docker")
            .args(["inspect", "-f", format, &container])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The environment instance `id`'s container really has (`docker inspect`).
    pub fn container_env(&self, id: u64) -> BTreeMap<String, String> {
        let env: Vec<String> = self
            .inspect(id, "{{json .Config.Env}}")
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        env.into_iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect()
    }

    /// The container's entrypoint followed by its command (`Config.Entrypoint` +
    /// `Config.Cmd`).
    pub fn container_command(&self, id: u64) -> Vec<String> {
        let list = |f| {
            self.inspect(id, f)
                .and_then(|s| serde_json::from_str::<Option<Vec<String>>>(&s).ok())
                .flatten()
                .unwrap_or_default()
        };
        let mut cmd = list("{{json .Config.Entrypoint}}");
        cmd.extend(list("{{json .Config.Cmd}}"));
        cmd
    }

    /// Docker's state of the container (`running`, `exited`, …); None without one.
    pub fn container_state(&self, id: u64) -> Option<String> {
        self.inspect(id, "{{.State.Status}}")
    }

    /// The container's exit code once it has exited (the API rows do not carry it).
    pub fn container_exit_code(&self, id: u64) -> Option<i64> {
        let s = self.inspect(id, "{{.State.Status}} {{.State.ExitCode}}")?;
        let (status, code) = s.split_once(' ')?;
        (status == "exited" || status == "dead")
            .then(|| code.parse().ok())
            .flatten()
    }

    /// An instance that already exists (as one leaked by an earlier agent): labelled
    /// `label`, running `image` with `args` (CMD replaced when non-empty) and `env`, its
    /// container started now. Returns its id.
    pub fn preexisting(
        &self,
        label: &str,
        image: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> u64 {
        let env_raw: serde_json::Map<String, Value> = env
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let mut inst = {
            let mut st = self.shared.lock();
            let id = st.next_id;
            st.next_id += 1;
            let start_date = super::rent::now_epoch();
            Instance {
                id,
                offer_id: 0,
                label: Some(label.into()),
                image: image.into(),
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                env_raw,
                args: (!args.is_empty()).then(|| args.iter().map(|a| a.to_string()).collect()),
                onstart: None,
                runtype: "args".into(),
                image_login: None,
                disk: 10.0,
                body: Value::Null,
                offer_row: Offer::new(0, "RTX 4090", 0.3).row,
                start_date,
                actual_status: Some("running".into()),
                intended_status: "running".into(),
                status_msg: Some(format!("success, running {image}/args")),
                container: None,
                destroyed: false,
                host_status: None,
            }
        };
        let mut run = vec!["run".to_string(), "-d".into()];
        run.extend(inst.run_args(&self.shared.sid, self.shared.namespace.as_deref()));
        let out = Command::new("docker")
            .args(&run)
            .output()
            .expect("docker run");
        assert!(
            out.status.success(),
            "docker run for a pre-existing instance: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        inst.container = Some(String::from_utf8_lossy(&out.stdout).trim().to_string());
        let id = inst.id;
        self.shared.lock().instances.insert(id, inst);
        id
    }

    /// `n` stopped instances of someone else's on the account (labelled `label-<i>`),
    /// without containers: the rows a large account lists beside deckhand's. Returns their
    /// ids, ascending.
    pub fn stopped_instances(&self, label: &str, n: usize) -> Vec<u64> {
        let mut st = self.shared.lock();
        let mut ids = Vec::new();
        for i in 0..n {
            let id = st.next_id;
            st.next_id += 1;
            let inst = Instance {
                id,
                offer_id: 0,
                label: Some(format!("{label}-{i}")),
                image: "pytorch/pytorch:latest".into(),
                env: BTreeMap::new(),
                env_raw: Default::default(),
                args: None,
                onstart: None,
                runtype: "ssh".into(),
                image_login: None,
                disk: 16.0,
                body: Value::Null,
                offer_row: Offer::new(0, "RTX 3090", 0.2).row,
                start_date: super::rent::now_epoch(),
                actual_status: Some("stopped".into()),
                intended_status: "stopped".into(),
                status_msg: None,
                container: None,
                destroyed: false,
                host_status: None,
            };
            st.instances.insert(id, inst);
            ids.push(id);
        }
        ids
    }
}

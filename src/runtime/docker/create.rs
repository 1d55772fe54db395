//! The Docker runtime's own steps behind [`Runtime`](crate::runtime::Runtime)'s create and
//! start: one container or a cluster's network and instances, the engine's errors named for
//! the field that caused them, cgroup tracking, and the parts a spanning cluster has on
//! peers.

use super::*;

impl DockerRuntime {
    pub(super) fn cgroups(&self) -> parking_lot::MutexGuard<'_, HashMap<String, CgroupPaths>> {
        self.cgroups.lock()
    }

    /// Remembers where a running container's counters are.
    pub(super) fn track(&self, cid: &str, pid: u32) {
        if pid == 0 || self.cgroups().contains_key(cid) {
            return;
        }
        if let Some(paths) = CgroupPaths::of_pid(pid) {
            self.cgroups().insert(cid.to_string(), paths);
        }
    }

    /// Starts the kernel's container (a cluster's master), with the work that follows it.
    pub(super) async fn start_container(
        &self,
        rec: &Launch,
        handle: &Handle,
        cfg: &ClusterConfig,
    ) -> Result<Started, RuntimeError> {
        let cid = &handle.instance;
        let input = match local::input_file(&self.scratch, rec)? {
            Some(path) => Some((path, self.client.attach_stdin(cid).await?)),
            None => None,
        };
        self.client
            .start(cid)
            .await
            .map_err(|e| Self::name_network(e, rec, cfg))?;
        let st = self.client.inspect(cid).await?;
        self.track(cid, st.pid);
        let mut follow: Vec<BoxFuture<'static, ()>> = Vec::new();
        if let Some((path, stdin)) = input {
            follow.push(local::feed_input(rec.id.clone(), path, stdin).boxed());
        }
        if !rec.spec.output_path.is_empty() || !rec.spec.error_path.is_empty() {
            follow.push(
                local::copy_output(
                    self.client.clone(),
                    rec.clone(),
                    cid.clone(),
                    cfg.kernel.uid,
                    cfg.kernel.gid,
                )
                .boxed(),
            );
        }
        Ok(Started {
            started_at_ms: st.started_at_ms,
            follow,
        })
    }

    /// Runs `action` on the parts a spanning cluster's owner has on its peers (nothing for
    /// any other kernel).
    pub(super) async fn on_peers(
        &self,
        handle: &Handle,
        action: PeerAction,
        signal: i32,
        grace: Option<Duration>,
    ) -> Result<(), RuntimeError> {
        match Members::of(handle) {
            Some(m) if !m.peers.is_empty() => {
                self.spans
                    .control(&m.kernel, &m.peers, action, signal, grace)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// The containers of a kernel: its members for a cluster, else its one container.
    pub(super) fn containers(handle: &Handle) -> Vec<String> {
        match Members::of(handle) {
            Some(m) => m.ids.into_iter().filter(|id| !id.is_empty()).collect(),
            None => vec![handle.instance.clone()],
        }
    }

    /// Creates a container by name; one of that name left from a crash before it was
    /// recorded is removed first.
    pub(super) async fn create_named(
        &self,
        name: &str,
        body: bollard::models::ContainerCreateBody,
    ) -> Result<String, EngineError> {
        match self.client.create(name, body.clone()).await {
            Err(EngineError::Conflict(_)) => {
                self.client.remove(name, true).await?;
                self.client.create(name, body).await
            }
            other => other,
        }
    }

    /// A cluster kernel's network and instances, from the body it would have alone; on any
    /// failure what was made is removed again.
    pub(super) async fn create_cluster(
        &self,
        rec: &Launch,
        c: &crate::spec::Cluster,
        base: bollard::models::ContainerCreateBody,
        process_data: Option<&local::ProcessData>,
    ) -> Result<Handle, RuntimeError> {
        let span = c.span.clone().unwrap_or_default();
        let labels = std::collections::HashMap::from([
            (client::LABEL_NAMESPACE.to_string(), self.namespace.clone()),
            (client::LABEL_AGENT.to_string(), self.agent_id.clone()),
            (client::LABEL_KERNEL.to_string(), rec.id.clone()),
        ]);
        let network = if span.is_part() {
            // The owner's overlay network, joined here.
            span.network.clone()
        } else {
            let network = if span.network.is_empty() {
                cluster::network_name(&self.namespace, &rec.id)
            } else {
                span.network.clone()
            };
            if span.peers.is_empty() {
                self.client
                    .create_network(&network, !c.outside, labels)
                    .await?;
            } else {
                self.client
                    .create_overlay(&network, !c.outside, labels)
                    .await
                    .map_err(|e| {
                        RuntimeError::Failed(format!(
                            "instances: the cluster spans agents, and its overlay network could not be made on this agent's engine ({e})"
                        ))
                    })?;
            }
            network
        };
        let gpus = rec
            .slots
            .as_ref()
            .map(|s| s.gpus.clone())
            .unwrap_or_default();
        let (first, count) = c.local();
        let mut members = Members {
            network: network.clone(),
            ids: vec![String::new(); first as usize],
            kernel: if c.span.is_some() {
                rec.id.clone()
            } else {
                String::new()
            },
            peers: span.peers.clone(),
            borrowed_network: span.is_part(),
        };
        for i in first..first + count {
            let body = cluster::member_body(
                base.clone(),
                &cluster::Member {
                    index: i,
                    count: c.instances,
                    network: &network,
                    worker_command: &c.worker_command,
                    gpus: cluster::gpu_share(&gpus, count, i - first),
                },
            );
            let mut body = body;
            let labels = body.labels.get_or_insert_with(HashMap::new);
            if span.is_part() {
                labels.insert(client::LABEL_OWNER.into(), span.owner.clone());
            } else if !span.peers.is_empty() {
                labels.insert(
                    client::LABEL_PEERS.into(),
                    cluster::peers_label(&span.peers),
                );
            }
            let name = cluster::member_name(&self.namespace, &rec.id, i);
            match self.create_named(&name, body).await {
                Ok(id) => members.ids.push(id),
                Err(e) => {
                    let mut h = Self::handle("", None);
                    members.store(&mut h);
                    if let Err(e) = self.destroy(&h).await {
                        tracing::warn!(kernel_id = %rec.id, error = %e, "cannot remove a half-made cluster");
                    }
                    return Err(e.into());
                }
            }
        }
        // The master's container; on a peer's part, its first instance's.
        let first_id = members.ids.get(first as usize).cloned().unwrap_or_default();
        members.ids.resize(c.instances as usize, String::new());
        let mut h = Self::handle(&first_id, process_data);
        members.store(&mut h);
        Ok(h)
    }

    /// An engine error, with a missing network named by the setting that asked for it.
    pub(super) fn name_network(e: EngineError, rec: &Launch, cfg: &ClusterConfig) -> RuntimeError {
        match e {
            EngineError::NotFound(m) if m.contains("network") => {
                let (setting, name) = if rec.spec.network_mode.is_empty() {
                    (
                        "docker/network",
                        cfg.docker.network.clone().unwrap_or_default(),
                    )
                } else {
                    ("network_mode", rec.spec.network_mode.clone())
                };
                RuntimeError::Failed(format!("{setting} `{name}`: no such Docker network ({m})"))
            }
            other => other.into(),
        }
    }

    /// Removes images no kernel used for `docker/image_gc_after` (when set), checking every
    /// tenth of that period (at most a minute apart) and when the setting changes.
    pub(super) async fn collect_images(self: Arc<Self>, ctx: Background) {
        let mut cfg = ctx.config;
        loop {
            let after = cfg.borrow_and_update().docker.image_gc_after;
            if let Some(after) = after {
                let in_use = (ctx.images_in_use)();
                self.images.collect(after, &in_use).await;
            }
            let wait = after.map_or(Duration::from_secs(3600), |a| {
                (a / 10).clamp(Duration::from_millis(500), Duration::from_secs(60))
            });
            tokio::select! {
                _ = ctx.stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                r = cfg.changed() => if r.is_err() { return },
            }
        }
    }
}

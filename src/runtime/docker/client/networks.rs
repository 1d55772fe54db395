//! Volumes, networks (bridge and overlay) and the swarm the engine is in.

use super::*;

impl Docker {
    /// Creates the named volume of a process's shared data (a no-op if it exists); returns
    /// its mount point on the host.
    pub async fn create_volume(
        &self,
        name: &str,
        namespace: &str,
        agent_id: &str,
        process_id: &str,
    ) -> Result<String, EngineError> {
        let labels = HashMap::from([
            (LABEL_NAMESPACE.to_string(), namespace.to_string()),
            (LABEL_AGENT.to_string(), agent_id.to_string()),
            (LABEL_PROCESS.to_string(), process_id.to_string()),
        ]);
        let opts = bollard::models::VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(labels),
            ..Default::default()
        };
        Ok(self.api.create_volume(opts).await?.mountpoint)
    }

    pub async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        match self
            .api
            .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => match EngineError::from(e) {
                EngineError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Creates a cluster kernel's private bridge network (`internal`: no route outside it,
    /// not even to this host)
    /// with the kernel's labels; one of that name left from a crash is used as it is.
    pub async fn create_network(
        &self,
        name: &str,
        internal: bool,
        labels: HashMap<String, String>,
    ) -> Result<(), EngineError> {
        let req = bollard::models::NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            internal: Some(internal),
            // `internal` alone still lets the instances reach the host itself through the
            // bridge's address; without one on the host side nothing outside answers.
            options: internal.then(|| {
                HashMap::from([(
                    "com.docker.network.bridge.inhibit_ipv4".to_string(),
                    "true".to_string(),
                )])
            }),
            labels: Some(labels),
            ..Default::default()
        };
        self.make_network(req).await
    }

    /// Creates a spanning cluster kernel's network: an attachable overlay (the engine must
    /// be a swarm manager), `internal` when the instances must not reach outside it; one of
    /// that name left from a crash is used as it is.
    pub async fn create_overlay(
        &self,
        name: &str,
        internal: bool,
        labels: HashMap<String, String>,
    ) -> Result<(), EngineError> {
        let req = bollard::models::NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("overlay".into()),
            attachable: Some(true),
            internal: Some(internal),
            labels: Some(labels),
            ..Default::default()
        };
        self.make_network(req).await
    }

    /// The swarm the engine is in (named by its managers' node ids, the same on every node
    /// of it) and whether this engine is one of its managers; `None` outside a swarm or
    /// when the engine does not answer.
    pub async fn swarm(&self) -> Option<crate::runtime::SpanGroup> {
        let info = self.api.info().await.ok()?;
        let swarm = info.swarm?;
        if swarm.local_node_state != Some(bollard::models::LocalNodeState::ACTIVE) {
            return None;
        }
        let mut managers: Vec<String> = swarm
            .remote_managers
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.node_id)
            .collect();
        managers.sort();
        managers.dedup();
        if managers.is_empty() {
            return None;
        }
        Some(crate::runtime::SpanGroup {
            id: managers.join(","),
            owner: swarm.control_available.unwrap_or(false),
        })
    }

    /// Creates a network; one of that name left from a crash is used as it is.
    async fn make_network(
        &self,
        req: bollard::models::NetworkCreateRequest,
    ) -> Result<(), EngineError> {
        match self.api.create_network(req).await {
            Ok(_) => Ok(()),
            Err(e) => match EngineError::from(e) {
                EngineError::Conflict(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Removes a network; one already gone counts as removed. Two of one name (an agent
    /// killed while the engine made one, then made again after its restart: the engine does
    /// not refuse a second bridge network of a name) are both removed, by id.
    pub async fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        match self.api.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(e) => match EngineError::from(e) {
                EngineError::NotFound(_) => Ok(()),
                other if other.to_string().contains("ambiguous") => {
                    let filters = HashMap::from([("name".to_string(), vec![name.to_string()])]);
                    let opts = bollard::query_parameters::ListNetworksOptions {
                        filters: Some(filters),
                    };
                    let same = self.api.list_networks(Some(opts)).await?;
                    for n in same.into_iter().filter(|n| n.name.as_deref() == Some(name)) {
                        if let Some(id) = n.id {
                            match self
                                .api
                                .remove_network(&id)
                                .await
                                .map_err(EngineError::from)
                            {
                                Ok(()) | Err(EngineError::NotFound(_)) => {}
                                Err(e) => return Err(e),
                            }
                        }
                    }
                    Ok(())
                }
                other => Err(other),
            },
        }
    }

    /// The names of the networks carrying this namespace's and agent's labels, with the
    /// kernel id each was made for.
    pub async fn list_networks(
        &self,
        namespace: &str,
        agent_id: &str,
    ) -> Result<Vec<(String, String)>, EngineError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_NAMESPACE}={namespace}"),
                format!("{LABEL_AGENT}={agent_id}"),
            ],
        )]);
        let opts = bollard::query_parameters::ListNetworksOptions {
            filters: Some(filters),
        };
        let list = self.api.list_networks(Some(opts)).await?;
        Ok(list
            .into_iter()
            .filter_map(|n| {
                let kernel = n.labels?.get(LABEL_KERNEL)?.clone();
                Some((n.name?, kernel))
            })
            .collect())
    }
}

//! `ListImages`: the images present on each agent's engine (DRMAA2 `ListJobCategories`: the
//! job category of a kernel is its image). The agents are asked now, all at once, each
//! within a time limit like `ListKernels`; an agent that does not answer is reported beside
//! the list, not an error, unless it was the one agent asked for. Reads, never pulls.

use std::time::Duration;

use tonic::Status;

use super::service::ManagerRpc;
use crate::cluster::keys::validate_name;
use crate::wire::pb::{
    AgentFailure, ImageInfo, ListAgentImagesRequest, ListAgentImagesResponse, ListImagesRequest,
};

/// How long one agent may take to list its images.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

impl ManagerRpc {
    /// The images of every agent that is not GONE, or of `req.agent_id` only.
    pub(super) async fn images(
        &self,
        req: ListAgentImagesRequest,
    ) -> Result<ListAgentImagesResponse, Status> {
        let one = !req.agent_id.is_empty();
        let agents = if one {
            validate_name("agent_id", &req.agent_id).map_err(Status::invalid_argument)?;
            vec![self.agent_named(&req.agent_id)?]
        } else {
            self.agents()
        };
        let calls = agents.iter().map(|a| async move {
            let agent_id = a
                .identity
                .as_ref()
                .map(|i| i.agent_id.clone())
                .unwrap_or_default();
            let asked = async {
                let mut c = self.client(a)?;
                match tokio::time::timeout(ASK_TIMEOUT, c.list_images(ListImagesRequest {})).await {
                    Ok(r) => r.map(|r| r.into_inner().images),
                    Err(_) => Err(Status::deadline_exceeded(format!(
                        "agent `{agent_id}` did not answer within {}",
                        humantime::format_duration(ASK_TIMEOUT)
                    ))),
                }
            };
            (agent_id.clone(), asked.await)
        });
        let mut images: Vec<ImageInfo> = Vec::new();
        let mut failures = Vec::new();
        for (agent_id, result) in futures::future::join_all(calls).await {
            match result {
                Ok(list) => images.extend(list),
                Err(s) if one => return Err(s),
                Err(s) => failures.push(AgentFailure {
                    agent_id,
                    error: s.message().to_string(),
                }),
            }
        }
        sort_images(&mut images);
        Ok(ListAgentImagesResponse { images, failures })
    }
}

/// By agent, then newest first (as `docker images`), then by reference.
fn sort_images(images: &mut [ImageInfo]) {
    images.sort_by(|a, b| {
        a.agent_id
            .cmp(&b.agent_id)
            .then(b.created_at_ms.cmp(&a.created_at_ms))
            .then(a.reference.cmp(&b.reference))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(agent: &str, reference: &str, created: i64) -> ImageInfo {
        ImageInfo {
            agent_id: agent.into(),
            reference: reference.into(),
            created_at_ms: created,
            ..Default::default()
        }
    }

    #[test]
    fn images_are_listed_by_agent_then_newest_first() {
        let mut list = vec![
            image("b", "x:1", 5),
            image("a", "old:1", 1),
            image("a", "new:2", 9),
            image("a", "new:1", 9),
        ];
        sort_images(&mut list);
        let order: Vec<(&str, &str)> = list
            .iter()
            .map(|i| (i.agent_id.as_str(), i.reference.as_str()))
            .collect();
        assert_eq!(
            order,
            [("a", "new:1"), ("a", "new:2"), ("a", "old:1"), ("b", "x:1")]
        );
    }
}

//! Both gRPC servers answer the standard health service and server reflection.

mod common;

use std::time::Duration;

use common::{wait_for, Cluster};
use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

async fn health(port: u16, service: &str) -> Option<i32> {
    let ch = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut client = HealthClient::new(ch);
    let req = HealthCheckRequest {
        service: service.into(),
    };
    Some(client.check(req).await.ok()?.into_inner().status)
}

#[tokio::test]
async fn agent_and_manager_report_serving_and_list_their_services() {
    let c = Cluster::start("health").await;
    let m = c.manager("m1", &[]);
    let a = c.agent("node");
    for (port, service) in [
        (m.port, ""),
        (m.port, "deckhand.v1.ManagerService"),
        (m.port, "deckhand.v1.ClusterService"),
        (a.port, ""),
        (a.port, "deckhand.v1.AgentService"),
    ] {
        let status = wait_for(Duration::from_secs(10), "health answer", || {
            health(port, service)
        })
        .await;
        assert_eq!(status, ServingStatus::Serving as i32, "{service} on {port}");
    }

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let ch = Endpoint::from_shared(format!("http://127.0.0.1:{}", a.port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"deckhand.v1.AgentService".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
}

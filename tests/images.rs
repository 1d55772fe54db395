//! `deckhand images` (DRMAA2 job categories): what each agent's real Docker engine holds,
//! through the manager, read and never pulled. Image tags the test makes are removed by a
//! guard, also on failure.

mod common;

use std::time::Duration;

use common::{docker_ok, image_id, untag, wait_for, KernelCluster, Tags, TEST_IMAGE};
use deckhand::wire::pb::cluster_service_client::ClusterServiceClient;
use deckhand::wire::pb::ListAgentImagesRequest;
use serde_json::Value;
use tonic::Code;

const T: Duration = Duration::from_secs(20);

fn images(k: &KernelCluster, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["images", "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&k.c.cli_ok(&args)).expect("images --json")
}

fn find<'a>(list: &'a [Value], agent: &str, reference: &str) -> Option<&'a Value> {
    list.iter()
        .find(|i| i["agent"] == agent && i["reference"] == reference)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_lists_what_each_agents_engine_holds_and_never_pulls() {
    let k = KernelCluster::start("images").await;
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let tag = format!("deckhand-test/images-{unique}:t1");
    let absent = format!("deckhand-test/absent-{unique}:latest");
    let _tags = Tags(vec![tag.clone(), absent.clone()]);
    docker_ok(&["tag", TEST_IMAGE, &tag]);
    let id = image_id(TEST_IMAGE);
    assert!(id.starts_with("sha256:"), "{id}");

    let list = images(&k, &[]);
    let test_image = find(&list, "a1", TEST_IMAGE).expect("the test image is listed");
    assert_eq!(test_image["id"], id.as_str());
    assert_eq!(test_image["repository"], "deckhand-test/busybox");
    assert_eq!(test_image["tag"], "latest");
    assert!(test_image["size_bytes"].as_u64().unwrap() > 0);
    let created = test_image["created_at_ms"].as_i64().unwrap();
    assert!(created > 0 && created <= chrono::Utc::now().timestamp_millis());
    let tagged = find(&list, "a1", &tag).expect("the tag made by the test is listed");
    assert_eq!(tagged["id"], id.as_str(), "a tag of the same image");
    assert!(
        find(&list, "a1", &absent).is_none(),
        "an image that is not local is not listed"
    );
    assert!(image_id(&absent).is_empty(), "listing pulled {absent}");

    // The table: docker's columns plus AGENT, sizes in binary units.
    let table = k.c.cli_ok(&["images"]);
    let header = table.lines().next().unwrap_or_default();
    for column in ["AGENT", "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(column), "{header}");
    }
    let short_id = &id["sha256:".len().."sha256:".len() + 12];
    let size = deckhand::cli::output::bytes(test_image["size_bytes"].as_u64().unwrap());
    let row = table
        .lines()
        .find(|l| l.contains("deckhand-test/busybox") && l.contains("latest"))
        .unwrap_or_else(|| panic!("no row for the test image:\n{table}"));
    assert!(row.contains("a1") && row.contains(short_id), "{row}");
    assert!(row.contains(&size) && size.ends_with("iB"), "{row}");

    // A removed tag is gone from the next listing; the image under its other tag stays.
    untag(&tag);
    let list = images(&k, &[]);
    assert!(find(&list, "a1", &tag).is_none(), "a removed tag is listed");
    assert!(find(&list, "a1", TEST_IMAGE).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_of_one_agent_and_of_an_unknown_one() {
    let k = KernelCluster::start("images-agent").await;
    let a2 = k.c.agent("a2");
    wait_for(T, "agent a2 ALIVE", || async {
        k.c.node("a2").filter(|n| n["state"] == "ALIVE").map(|_| ())
    })
    .await;
    // Both agents share this host's engine: each lists the test image as its own.
    let all = images(&k, &[]);
    assert!(find(&all, "a1", TEST_IMAGE).is_some() && find(&all, "a2", TEST_IMAGE).is_some());
    let only = images(&k, &["--agent", "a2"]);
    assert!(!only.is_empty());
    assert!(only.iter().all(|i| i["agent"] == "a2"), "{only:?}");

    let out = k.c.cli(&["images", "--agent", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("agent_id: no agent `nope`"), "{err}");

    let manager = format!("http://127.0.0.1:{}", k.manager.port);
    let mut client = ClusterServiceClient::connect(manager).await.unwrap();
    let status = client
        .list_images(ListAgentImagesRequest {
            agent_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = client
        .list_images(ListAgentImagesRequest {
            agent_id: "../a1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("agent_id"), "{status:?}");
    drop(a2);
}

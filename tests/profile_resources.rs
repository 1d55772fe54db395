//! A profile kernel's resources and results, against the real agent, manager, CLI, etcd,
//! Docker engine and a real S3-compatible server (moto, which checks credentials): the
//! resources are in `/job` when the command starts (from S3, and from a host dir), with the
//! download in the kernel's events; what the kernel leaves there is uploaded after it ends
//! while it reads UPLOADING in `ps` and `inspect` (seen by freezing the S3 server mid-upload);
//! a failed upload fails the kernel with the reason; the S3 secret is in no read-back.

mod common;

use std::time::Duration;

use common::s3::{S3Server, S3_REGION};
use common::KernelCluster;
use deckhand::wire::pb::KernelState;
use futures::StreamExt;

const T: Duration = Duration::from_secs(60);

async fn cluster(test: &str, s3: &S3Server, extra: &[(&str, &str)]) -> KernelCluster {
    let endpoint = s3.endpoint();
    let mut settings = vec![
        ("storage/s3/endpoint", endpoint.as_str()),
        ("storage/s3/region", S3_REGION),
        ("storage/s3/access_key", s3.access_key.as_str()),
        ("storage/s3/secret_key", s3.secret_key.as_str()),
    ];
    settings.extend_from_slice(extra);
    KernelCluster::start_with(test, &settings).await
}

fn run(k: &KernelCluster, cmd: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "run",
        "-d",
        "--profile",
        "docker-batch",
        "--constant",
        "DOCKER_REPO=deckhand-test/busybox",
        "--constant",
        "DOCKER_TAG=latest",
        "--constant",
    ];
    let cmd = format!("DOCKER_CMD={cmd}");
    args.push(&cmd);
    args.extend_from_slice(extra);
    let out = k.c.cli(&args);
    assert!(
        out.status.success(),
        "run: {}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        k.agent.log()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_from_s3_are_in_job_at_start_and_results_are_uploaded_after_the_end() {
    let s3 = S3Server::start().await;
    s3.create_bucket("task-in");
    s3.create_bucket("task-out");
    s3.put("task-in", "jobs/7/input.txt", "forty-two").await;
    s3.put("task-in", "jobs/7/conf/settings.ini", "mode=fast")
        .await;
    let k = cluster("res-s3", &s3, &[]).await;
    let mut events = k.agent_events().await;
    // The command reads its resources first thing, then waits for `go` (put into its
    // resources dir from the host) before it writes its results and ends.
    let id = run(
        &k,
        "sh -c 'cat /job/input.txt /job/conf/settings.ini > /job/seen.txt; mkdir -p /job/out; echo result-of-$(cat /job/input.txt) > /job/out/answer.txt; while [ ! -e /job/go ]; do sleep 0.1; done; rm /job/go'",
        &["--resources", "s3://task-in/jobs/7", "--results", "s3://task-out/runs/7"],
    );
    k.wait_state(&id, "RUNNING", T).await;
    // With the S3 server frozen, the upload cannot finish: the kernel ends and reads
    // UPLOADING (Qarnot's UploadingResults) in `ps` and `inspect` until the server answers.
    s3.pause();
    let go = k.scratch().join(&id).join("resources/go");
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{}: {e}", go.display()));
    let info = k.wait_state(&id, "UPLOADING", T).await;
    assert_eq!(info["qarnot_state"], "UploadingResults", "{info}");
    assert_eq!(info["drmaa2_state"], "RUNNING", "{info}");
    assert_eq!(info["exit_code"], 0, "{info}");
    let ps = k.c.cli_ok(&["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.contains(&id) && l.contains("UPLOADING")),
        "{ps}"
    );
    s3.resume();
    let info = k.wait_ended(&id, T).await;
    assert_eq!(
        info["state"],
        "DONE",
        "{info}\nagent log:\n{}",
        k.agent.log()
    );
    assert_eq!(info["qarnot_state"], "Success", "{info}");
    assert!(
        info["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("uploaded to s3://task-out/runs/7"),
        "{info}"
    );
    let keys = s3.list("task-out", "runs/7").await;
    assert_eq!(
        keys,
        [
            "runs/7/conf/settings.ini",
            "runs/7/input.txt",
            "runs/7/out/answer.txt",
            "runs/7/seen.txt"
        ]
    );
    assert_eq!(
        s3.get_string("task-out", "runs/7/seen.txt")
            .await
            .as_deref(),
        Some("forty-twomode=fast"),
        "the resources were in /job when the command started"
    );
    assert_eq!(
        s3.get_string("task-out", "runs/7/out/answer.txt")
            .await
            .as_deref(),
        Some("result-of-forty-two\n")
    );
    // The kernel's events: the download with its count, then UPLOADING, then DONE.
    let mut seen: Vec<(i32, String)> = Vec::new();
    while !seen.iter().any(|(s, _)| *s == KernelState::Done as i32) {
        let ev = tokio::time::timeout(T, events.next())
            .await
            .expect("an event")
            .expect("stream")
            .expect("event");
        if ev.kernel_id == id {
            seen.push((ev.state, ev.reason));
        }
    }
    let download = seen
        .iter()
        .position(|(_, r)| r.contains("resources: 2 files") && r.contains("in /job"));
    let uploading = seen
        .iter()
        .position(|(s, _)| *s == KernelState::Uploading as i32);
    assert!(
        download.is_some() && uploading.is_some() && download < uploading,
        "{seen:?}"
    );
    // The secret is in no read-back.
    let events_text = format!("{seen:?}");
    for (what, text) in [
        ("agent log", k.agent.log()),
        ("manager log", k.manager.log()),
        ("config get", k.c.cli_ok(&["config", "get"])),
        ("inspect", k.c.cli_ok(&["inspect", &id])),
        ("ps", k.c.cli_ok(&["ps", "--json"])),
        ("events", events_text),
    ] {
        assert!(
            !text.contains(&s3.secret_key),
            "the S3 secret is in the {what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_results_path_uploads_only_that_dir_and_a_failed_upload_fails_the_kernel_and_run() {
    let s3 = S3Server::start().await;
    s3.create_bucket("task-out");
    let staged = tempfile::tempdir().unwrap();
    std::fs::write(staged.path().join("model.bin"), "weights").unwrap();
    let dirs = staged.path().display().to_string();
    let k = cluster(
        "res-dir",
        &s3,
        &[("container/stage_in_dirs", dirs.as_str())],
    )
    .await;
    // Resources from a host dir; only /home/work/out goes up.
    let id = run(
        &k,
        "sh -c 'mkdir -p /home/work/out; cp /job/model.bin /home/work/out/copy.bin; echo scratch > /job/tmp.txt'",
        &[
            "--resources",
            &dirs,
            "--results",
            "s3://task-out/only-out",
            "--results-path",
            "/home/work/out",
        ],
    );
    let info = k.wait_ended(&id, T).await;
    assert_eq!(info["state"], "DONE", "{info}");
    assert_eq!(s3.list("task-out", "only-out").await, ["only-out/copy.bin"]);
    assert_eq!(
        s3.get_string("task-out", "only-out/copy.bin")
            .await
            .as_deref(),
        Some("weights")
    );
    // A bucket that does not exist: the command succeeded, the kernel fails with the reason.
    let id = run(
        &k,
        "sh -c 'echo data > /job/r.txt'",
        &["--results", "s3://no-such-bucket/x"],
    );
    let info = k.wait_ended(&id, T).await;
    assert_eq!(info["state"], "FAILED", "{info}");
    assert_eq!(info["exit_code"], 0, "{info}");
    assert_eq!(info["qarnot_state"], "Failure", "{info}");
    let reason = info["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("results upload to s3://no-such-bucket/x failed"),
        "{reason}"
    );
    assert!(!reason.contains(&s3.secret_key));
    // Attached, `deckhand run` waits for the upload and does not exit 0 when it failed.
    let out = k.c.cli(&[
        "run",
        "--profile",
        "docker-batch",
        "--constant",
        "DOCKER_REPO=deckhand-test/busybox",
        "--constant",
        "DOCKER_CMD=sh -c 'echo attached-output; echo r > /job/r.txt'",
        "--results",
        "s3://no-such-bucket/y",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("attached-output"),
        "{out:?}"
    );
    assert!(
        stderr.contains("results upload to s3://no-such-bucket/y failed"),
        "{stderr}"
    );
    assert!(!stderr.contains(&s3.secret_key));
}

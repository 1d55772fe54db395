//! The status page in headless Chromium, and a kernel's life in the JSON logs.

use super::*;

#[tokio::test]
async fn the_status_page_shows_the_agents_and_a_running_kernel_in_chromium() {
    let o = Observed::start("page", &[]).await;
    let id = o.run_sleeper();
    wait_sample(
        &o.agent_metrics,
        "deckhand_kernels",
        r#"runtime="docker",state="RUNNING""#,
        1.0,
    )
    .await;
    let url = format!("http://{}/", o.manager_metrics);
    // Five seconds of the page's own life: it refreshes itself (every 2 s) meanwhile.
    let dom = observe::dump_dom(o.c.dir.path(), &url, 5000);
    let refreshed = dom
        .split("data-refreshed=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|n| n.parse::<u32>().ok());
    assert!(
        refreshed.is_some_and(|n| n >= 1),
        "the page did not refresh itself:\n{dom}"
    );
    let agents = section(&dom, "agents");
    assert!(
        agents.contains(">a1<") && agents.contains(">ALIVE<"),
        "{agents}"
    );
    assert!(agents.contains("Fake Tesla T4"), "{agents}");
    let kernels = section(&dom, "kernels");
    assert!(kernels.contains(&id), "{kernels}");
    assert!(kernels.contains(">RUNNING<"), "{kernels}");
    assert!(kernels.contains(TEST_IMAGE), "{kernels}");
    assert!(section(&dom, "events").contains(&id));

    // The cells themselves. The agent: its free slots as the manager has them (two fake
    // GPUs, none taken; a quarter CPU taken by the sleeper).
    let node = o.c.node("a1").expect("node a1");
    let total_cpu = node["slots"]["total"]["cpu"].as_f64().unwrap();
    let reserved_cpu = node["slots"]["reserved"]["cpu"].as_f64().unwrap();
    let a1 = row(agents, ">a1<");
    let [_, _, _, last_heartbeat, free_cpu, free_memory, free_gpus, _] = &a1[..] else {
        panic!("agents row: {a1:?}")
    };
    assert_eq!(
        free_cpu,
        &format!("{} of {}", total_cpu - reserved_cpu - 0.25, total_cpu),
        "{a1:?}"
    );
    assert!(
        free_memory.contains(" of ") && free_memory.ends_with("iB"),
        "{a1:?}"
    );
    assert_eq!(free_gpus, "2 of 2", "{a1:?}");
    assert_ne!(last_heartbeat, "—", "{a1:?}");
    // The kernels: the sleeper's agent and age, and a profile kernel's progress from its
    // output.
    let k = row(kernels, &id);
    let [_, _, state, _, agent, image, age] = &k[..] else {
        panic!("kernels row: {k:?}")
    };
    assert_eq!(
        (state.as_str(), agent.as_str(), image.as_str()),
        ("RUNNING", "a1", TEST_IMAGE),
        "{k:?}"
    );
    assert!(!age.is_empty() && age != "—", "{k:?}");
    let profiled =
        o.c.cli_ok(&[
            "run",
            "-d",
            "--profile",
            "docker-batch",
            "--constant",
            "DOCKER_REPO=deckhand-test/busybox",
            "--constant",
            "DOCKER_TAG=latest",
            "--constant",
            r"DOCKER_PROGRESS1=step (\d+)/100",
            "--constant",
            "DOCKER_CMD=sh -c 'echo step 42/100; sleep 300'",
        ])
        .trim()
        .to_string();
    wait_for(
        Duration::from_secs(20),
        "progress 42 in the manager",
        || async {
            let out = o.c.cli(&["inspect", &profiled]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (v["progress"] == 42.0).then_some(())
        },
    )
    .await;
    // The page lists the agents' kernels at most once a second: a listing made just before
    // the run may still be served.
    let dom = wait_for(
        Duration::from_secs(20),
        "the profiled kernel on the page",
        || async {
            let dom = observe::dump_dom(o.c.dir.path(), &url, 500);
            section(&dom, "kernels").contains(&profiled).then_some(dom)
        },
    )
    .await;
    let p = row(section(&dom, "kernels"), &profiled);
    assert_eq!(p.get(3).map(String::as_str), Some("42 % done"), "{p:?}");

    let shot = screenshot_path("status-page.png");
    observe::screenshot(o.c.dir.path(), &url, &shot);
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{}",
        shot.display()
    );
    // The page is read-only: anything but GET is refused.
    let post = observe::http().post(&url).send().await.unwrap();
    assert_eq!(post.status().as_u16(), 405);
    drop(o.agent);
}

#[tokio::test]
async fn a_kernels_life_can_be_followed_by_its_id_in_json_logs() {
    let o = Observed::start("logs", &[("DECKHAND_LOG_FORMAT", "json")]).await;
    let id = o.run_sleeper();
    o.c.cli_ok(&["stop", "-t", "1", &id]);
    o.c.cli_ok(&["rm", &id]);
    let agent_log = wait_for(
        Duration::from_secs(10),
        "the removal in the agent's log",
        || async {
            let log = o.agent.log();
            log.lines()
                .any(|l| l.contains(&id) && l.contains("\"reason\":\"removed\""))
                .then_some(log)
        },
    )
    .await;
    let lines: Vec<serde_json::Value> = agent_log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    // Every line of the agent names it.
    for l in &lines {
        assert_eq!(
            l["span"]["agent_id"], "a1",
            "a line without the agent's id: {l}"
        );
    }
    // The kernel's lifecycle, in order, from the lines that carry its id.
    let states: Vec<String> = lines
        .iter()
        .filter(|l| l["fields"]["kernel_id"] == id.as_str())
        .filter_map(|l| l["fields"]["state"].as_str().map(str::to_string))
        .collect();
    let mut expected = vec!["PREPARING", "CREATING", "RUNNING", "TERMINATING"];
    expected.retain(|s| states.iter().any(|x| x == s));
    assert_eq!(expected.len(), 4, "states logged: {states:?}");
    assert!(
        states
            .iter()
            .any(|s| ["DONE", "FAILED", "CANCELLED"].contains(&s.as_str())),
        "{states:?}"
    );
    // The manager's side: where it placed the kernel and what it forwarded.
    let manager_log = wait_for(Duration::from_secs(10), "the forwarded removal", || async {
        let log = o.manager.log();
        log.contains("\"action\":\"REMOVE\"").then_some(log)
    })
    .await;
    let all: Vec<serde_json::Value> = manager_log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for l in &all {
        assert_eq!(
            l["span"]["manager_id"], "m1",
            "a line without the manager's id: {l}"
        );
    }
    let mine: Vec<&serde_json::Value> = all
        .iter()
        .filter(|l| l["fields"]["kernel_id"] == id.as_str())
        .collect();
    let messages: Vec<&str> = mine
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    assert_eq!(
        messages,
        [
            "kernel placed",
            "kernel control forwarded",
            "kernel control forwarded"
        ],
        "{manager_log}"
    );
    for l in &mine {
        assert_eq!(l["fields"]["agent_id"], "a1", "{l}");
        assert_eq!(l["span"]["manager_id"], "m1", "{l}");
    }
}

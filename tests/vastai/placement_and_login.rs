//! Which agents take vastai kernels, and where registry credentials go.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vastai_kernels_go_only_to_an_agent_with_the_runtime_which_reports_its_load() {
    // Stand-in for Vast.ai's service (unreachable from here).
    let vast = VastStandIn::start(
        VastConfig::new(KEY).offers(vec![Offer::new(1, "L4", 0.4), Offer::new(2, "L4", 0.5)]),
    );
    let url = vast.url();
    // No agent has a key: none offers vastai, and a vastai kernel is refused naming it.
    let k = KernelCluster::start_with(
        "vastplace",
        &[
            ("vast_api/api_url", url.as_str()),
            ("vast_api/poll_interval", "300ms"),
        ],
    )
    .await;
    let out = run(&k, &[TEST_IMAGE, "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("has the `vastai` runtime"),
        "{err}"
    );
    // a2 has a key of its own (a per-agent override): it offers vastai with its capacity.
    for (key, value) in [("vast_api/api_key", KEY), ("vast_api/max_instances", "2")] {
        k.c.cli_ok(&["config", "--agent", "a2", "set", key, value]);
    }
    let _a2 = k.c.agent("a2");
    let offered = wait_for(T, "a2 offers vastai", || async { vastai_of(&k, "a2") }).await;
    assert_eq!(offered["capacity"], 2, "{offered}");
    assert_eq!(offered["in_use"], 0, "{offered}");
    assert!(vastai_of(&k, "a1").is_none(), "{:?}", k.c.node("a1"));
    let id = run_ok(&k, &[TEST_IMAGE, "sleep", "600"]);
    let info = k.wait_state(&id, "RUNNING", T).await;
    assert_eq!(info["agent_id"], "a2", "{info}");
    wait_for(T, "one of a2's two vastai instances in use", || async {
        let v = vastai_of(&k, "a2")?;
        (v["in_use"] == 1 && v["capacity"] == 2).then_some(())
    })
    .await;
    k.c.cli_ok(&["rm", "-f", &id]);
    wait_for(T, "no instance left", || async {
        vast.live_instances().is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_credentials_reach_the_image_login_and_nowhere_else() {
    // A real private registry holding the kernel's image; the stand-in for Vast.ai's service
    // (unreachable from here) logs in with image_login and pulls it, as a host does.
    let registry = Registry::start("vastuser", "vast-reg-pw-83c1e6").await;
    let image = registry.push(TEST_IMAGE, "vastreg/busybox:latest", false);
    let vast = VastStandIn::start(VastConfig::new(KEY).offers(vec![Offer::new(1, "A10", 0.3)]));
    let entry = format!(
        "{{url = \"{}\", username = \"{}\", password = \"{}\"}}",
        registry.addr(),
        registry.user,
        registry.password
    );
    let k = cluster(
        "vastregistry",
        &vast,
        &[("docker/registries/private", entry.as_str())],
    )
    .await;
    let mut events = k.agent_events().await;
    let id = run_ok(&k, &[&image, "sh", "-c", "echo pulled; exit 0"]);
    let info = k.wait_state(&id, "DONE", T).await;
    assert_eq!(info["exit_code"], 0, "{info}");
    let instance = instance_of(&info);
    let login = vast.instance(instance).and_then(|i| i.image_login);
    assert_eq!(
        login,
        Some(format!(
            "-u {} -p {} {}",
            registry.user,
            registry.password,
            registry.addr()
        ))
    );
    assert!(registry.pulls("vastreg/busybox") >= 1, "{}", registry.log());
    let events = events_of(&mut events, &id).await;
    for (what, text) in [
        ("agent log", k.agent.log()),
        ("manager log", k.manager.log()),
        ("inspect", info.to_string()),
        ("events", format!("{events:?}")),
        ("config get", k.c.cli_ok(&["config", "get"])),
    ] {
        assert!(
            !text.contains(&registry.password),
            "the registry password is in the {what}"
        );
    }
}

//! Property tests (proptest) of the pure parts: spec validation, settings parsing and the
//! kernel state machine. No engine or etcd is needed; these pin invariants over inputs no
//! table could list.

use deckhand::config::cluster::{ClusterConfig, KernelSettings};
use deckhand::config::schema;
use deckhand::kernel::state::{KernelState, Transition};
use deckhand::spec;
use deckhand::wire::pb;
use proptest::prelude::*;

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "[a-z0-9./:@_-]{0,40}",
        "[0-9]{1,12}[KMGTP]?i?B?",
        "-?[0-9]{1,4}(ms|s|m|h)?",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Validation never panics, and what it accepts keeps its promises.
    #[test]
    fn spec_validation_accepts_only_what_it_promises(
        image in any_text(),
        memory in any_text(),
        shm in any_text(),
        grace in any_text(),
        gpus in any_text(),
        ulimits in any_text(),
        cpus in prop_oneof![any::<f64>(), 0.0..64.0f64],
        env_key in any_text(),
        workdir in any_text(),
        output in any_text(),
    ) {
        let mut s = pb::KernelSpec {
            kernel_id: uuid::Uuid::new_v4().to_string(),
            image: image.clone(),
            memory,
            shm_size: shm,
            stop_grace_period: grace,
            gpus,
            ulimits,
            cpus,
            working_dir: workdir,
            output_path: output.clone(),
            ..Default::default()
        };
        s.env.insert(env_key.clone(), "v".into());
        if let Ok(v) = spec::validate(&s.into(), &KernelSettings::default()) {
            prop_assert!(spec::image_reference(&image).is_ok());
            prop_assert!(v.cpus.is_finite() && (0.0..=4096.0).contains(&v.cpus));
            prop_assert!(v.memory.is_none_or(|m| m >= 6 << 20));
            prop_assert!(v.stop_grace_period.as_secs() <= 3600);
            prop_assert!(!env_key.is_empty() && !env_key.contains('=') && !env_key.contains('\0'));
            prop_assert!(!output.contains(".."), "output path {output:?} escapes");
            prop_assert!(v.working_dir.is_empty() || v.working_dir.starts_with('/'));
        }
    }

    /// Profile resolution never panics; whatever it accepts runs the image its constants
    /// name, and no read-back of the template shows a secret's value.
    #[test]
    fn profile_constants_resolve_or_are_refused_and_secrets_never_show(
        profile in prop_oneof![Just("docker-batch"), Just("docker-network"), Just("docker-nvidia-batch"), Just("nope")],
        names in proptest::collection::vec(prop_oneof![
            Just("DOCKER_REPO".to_string()), Just("DOCKER_TAG".to_string()),
            Just("DOCKER_CMD".to_string()), Just("DOCKER_PROGRESS1".to_string()),
            Just("DOCKER_USER".to_string()), Just("RESOURCES_PATH".to_string()),
            Just("QARNOT_SECRET__TOKEN".to_string()), Just("DOCKER_BOGUS".to_string()),
            "[A-Z_]{1,8}",
        ], 0..6),
        values in proptest::collection::vec(any_text(), 6),
        secret in "[a-zA-Z0-9]{8,16}",
    ) {
        let mut t = pb::KernelSpec {
            kernel_id: uuid::Uuid::new_v4().to_string(),
            profile: profile.to_string(),
            ..Default::default()
        };
        for (n, v) in names.iter().zip(values.iter()) {
            t.constants.insert(n.clone(), v.clone());
        }
        t.constants.insert("QARNOT_SECRET__KEY".into(), secret.clone());
        t.constants.insert("USES_IT".into(), "x${QARNOT_SECRET__KEY}y".into());
        let template: spec::Template = t.into();
        let shown = serde_json::to_string(&template.masked()).unwrap();
        prop_assert!(!shown.contains(&secret), "{shown}");
        match spec::prepare(&template, &ClusterConfig::default()) {
            Ok(s) => {
                prop_assert!(spec::image_reference(&s.image).is_ok());
                prop_assert!(s.profile.is_some());
                for (k, v) in &s.env {
                    prop_assert!(!v.contains(&secret) || s.secret_names.contains(k), "{k} holds a secret in plain env");
                }
            }
            Err(e) => {
                prop_assert!(!e.to_string().contains(&secret), "{e}");
            }
        }
    }

    /// Settings parsing never panics; an accepted value always builds a config, and a
    /// secret is never echoed by an error.
    #[test]
    fn settings_validation_is_total_and_keeps_secrets(
        key_index in 0..schema::KEYS.len(),
        entry in "[a-z0-9]{1,6}",
        value in any_text(),
    ) {
        let key = schema::KEYS[key_index].pattern.replace('*', &entry);
        match schema::validate(&key, &value) {
            Ok(()) => {
                let tree = [(key.clone(), value.clone())].into_iter().collect();
                let _ = ClusterConfig::from_tree(&tree);
            }
            Err(e) => {
                prop_assert_eq!(e.key(), key.as_str());
                if schema::is_secret(&key) && value.len() > 3 {
                    prop_assert!(!e.to_string().contains(&value));
                }
            }
        }
        if schema::is_secret(&key) {
            prop_assert_eq!(schema::shown(&key, &value), "***");
        }
    }

    /// No sequence of operations leaves a final state, skips holding resources in a live
    /// one, or gives slots back twice.
    #[test]
    fn the_state_machine_never_leaks_or_revives(ops in proptest::collection::vec(0usize..16, 0..40)) {
        let all = [
            Transition::PullStarted,
            Transition::PullFinished,
            Transition::Created { held: false },
            Transition::Created { held: true },
            Transition::Release,
            Transition::Started,
            Transition::Suspend,
            Transition::Resume,
            Transition::Restarted,
            Transition::Terminate,
            Transition::Exited { success: true },
            Transition::Fail,
            Transition::UploadStarted,
            Transition::Uploaded { success: true },
            Transition::Uploaded { success: false },
            Transition::Relaunch,
        ];
        let mut state = KernelState::Preparing;
        let mut held_slots = true; // allocated at creation
        let mut released = 0;
        for i in ops {
            let before = state;
            match state.apply(all[i]) {
                Ok(next) => {
                    prop_assert!(!before.is_final(), "{before} changed to {next}");
                    // Nothing but the end of an upload leaves UPLOADING, except a failure
                    // (removal by force): an upload is never stopped half-way as a stop.
                    if before == KernelState::Uploading {
                        prop_assert!(next.is_final(), "UPLOADING changed to {next}");
                    }
                    state = next;
                    if state.is_final() && held_slots {
                        held_slots = false;
                        released += 1;
                    }
                }
                Err(e) => prop_assert_eq!(e.state, before),
            }
            prop_assert_eq!(state.holds_resources(), held_slots);
        }
        prop_assert!(released <= 1);
        prop_assert_eq!(released == 1, state.is_final());
    }
}

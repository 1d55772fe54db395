//! Unit tests of spec validation.
use super::options::ulimits;
use super::*;
use crate::config::cluster::KernelSettings;

fn spec() -> Template {
    Template {
        kernel_id: "3f2b7c1e-0c4d-4e8a-9b1a-2d5e6f7a8b9c".into(),
        image: "deckhand-test/busybox:latest".into(),
        ..Default::default()
    }
}

fn field_of(s: Template) -> String {
    validate(&s, &KernelSettings::default()).unwrap_err().field
}

#[test]
fn a_minimal_spec_runs_as_the_kernel_uid_with_bridge_networking() {
    let s = validate(&spec(), &KernelSettings::default()).unwrap();
    assert_eq!(s.user, "1000:1000");
    assert_eq!(s.network_mode, "");
    assert_eq!(s.stop_grace_period, Duration::from_secs(10));
}

#[test]
fn image_references_follow_dockers_grammar() {
    for ok in [
        "busybox",
        "library/busybox:1.36",
        "localhost:5000/team/name:v1.2-rc",
        "registry.example.com/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        assert!(image_reference(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "Busybox",
        "a//b",
        "name:",
        "name:-tag",
        "x@sha256:12",
        "a/b:c:d/e",
    ] {
        assert!(image_reference(bad).is_err(), "{bad}");
    }
}

#[test]
fn each_bad_field_is_named() {
    let mut s = spec();
    s.env.insert("A=B".into(), "x".into());
    assert_eq!(field_of(s), "env[\"A=B\"]");
    let mut s = spec();
    s.gpus = "-1".into();
    assert_eq!(field_of(s), "gpus");
    let mut s = spec();
    s.memory = "lots".into();
    assert_eq!(field_of(s), "memory");
    let mut s = spec();
    s.ulimits = "memlock=x".into();
    assert_eq!(field_of(s), "ulimits");
    let mut s = spec();
    s.output_path = "../../etc/passwd".into();
    assert_eq!(field_of(s), "output_path");
    let mut s = spec();
    s.kernel_id = "not-a-uuid".into();
    assert_eq!(field_of(s), "kernel_id");
}

#[test]
fn privileged_and_host_namespaces_need_the_cluster_setting() {
    let mut s = spec();
    s.privileged = true;
    let err = validate(&s, &KernelSettings::default()).unwrap_err();
    assert!(err.forbidden);
    assert!(
        err.reason.contains("config/security/allow_privileged"),
        "{err}"
    );
    let cfg = KernelSettings {
        allow_privileged: true,
        ..Default::default()
    };
    assert!(validate(&s, &cfg).is_ok());
    let mut s = spec();
    s.pid_mode = "host".into();
    assert!(
        validate(&s, &KernelSettings::default())
            .unwrap_err()
            .forbidden
    );
}

#[test]
fn ulimits_parse_soft_and_hard() {
    let u = ulimits("memlock=-1,stack=67108864").unwrap();
    assert_eq!(u[0].soft, -1);
    assert_eq!(u[1].hard, 67108864);
    assert!(ulimits("stack=10:5").is_err());
}

#[test]
fn arrays_follow_drmaa2_rules() {
    let a = validate_array(&ArrayRequest {
        begin: 1,
        end: 10,
        step: 0,
        max_parallel: 4,
    })
    .unwrap();
    assert_eq!(a.indices().count(), 10);
    let a = validate_array(&ArrayRequest {
        begin: 2,
        end: 10,
        step: 3,
        max_parallel: 0,
    })
    .unwrap();
    assert_eq!(a.indices().collect::<Vec<_>>(), [2, 5, 8]);
    assert!(validate_array(&ArrayRequest {
        begin: 0,
        end: 1,
        step: 1,
        max_parallel: 0
    })
    .is_err());
}

//! Profile constants, S3 resources, cluster kernels and spans, oversized uploads.

use super::*;

pub(super) fn cases(g: &Given) -> Vec<Case<'_>> {
    vec![
        (
            "unknown DOCKER_ constant",
            profiled(&[("DOCKER_TAGG", "1")]),
            Code::InvalidArgument,
            "DOCKER_TAGG",
        ),
        (
            "unknown QARNOT_ constant",
            profiled(&[("QARNOT_TURBO", "1")]),
            Code::InvalidArgument,
            "QARNOT_TURBO",
        ),
        (
            "progress regex that does not compile",
            profiled(&[("DOCKER_PROGRESS1", "step (\\d+/100")]),
            Code::InvalidArgument,
            "DOCKER_PROGRESS1",
        ),
        (
            "progress regex without a capture group",
            profiled(&[("DOCKER_PROGRESS2", "step \\d+/100")]),
            Code::InvalidArgument,
            "DOCKER_PROGRESS2",
        ),
        (
            "constants that refer to each other",
            profiled(&[("A", "${B}"), ("B", "x${A}")]),
            Code::InvalidArgument,
            "refers back",
        ),
        (
            "DOCKER_CMD with unbalanced quotes",
            profiled(&[("DOCKER_CMD", "sh -c 'echo")]),
            Code::InvalidArgument,
            "DOCKER_CMD",
        ),
        (
            "registry password without login",
            profiled(&[("DOCKER_REGISTRY_PASSWORD", "pw")]),
            Code::InvalidArgument,
            "DOCKER_REGISTRY_LOGIN",
        ),
        (
            "an ssh key on a profile without ssh",
            profiled(&[("DOCKER_SSH", "ssh-ed25519 AAAA")]),
            Code::InvalidArgument,
            "DOCKER_SSH",
        ),
        (
            "an ssh profile without a key",
            spec(|s| {
                profile_base(s);
                s.profile = "docker-network-ssh".into();
            }),
            Code::InvalidArgument,
            "DOCKER_SSH",
        ),
        (
            "an ssh key that is not one",
            spec(|s| {
                profile_base(s);
                s.profile = "docker-network-ssh".into();
                s.constants.insert("DOCKER_SSH".into(), "not a key".into());
            }),
            Code::InvalidArgument,
            "DOCKER_SSH",
        ),
        (
            "RESOURCES_PATH over the kernel's home",
            profiled(&[("RESOURCES_PATH", "/home/work")]),
            Code::InvalidArgument,
            "RESOURCES_PATH",
        ),
        (
            "QARNOT_DISABLE_CPU_BOOST without cpus",
            profiled(&[("QARNOT_DISABLE_CPU_BOOST", "true")]),
            Code::InvalidArgument,
            "cpus",
        ),
        (
            "a GPU on a profile without GPUs",
            spec(|s| {
                profile_base(s);
                s.gpus = "1".into();
            }),
            Code::InvalidArgument,
            "gpus",
        ),
        (
            "an image beside the constants that make it",
            spec(|s| {
                profile_base(s);
                s.image = TEST_IMAGE.into();
            }),
            Code::InvalidArgument,
            "image",
        ),
        (
            "constants without a profile",
            spec(|s| {
                s.constants.insert("DOCKER_TAG".into(), "1".into());
            }),
            Code::InvalidArgument,
            "constants",
        ),
        (
            "results that are not on S3",
            spec(|s| {
                profile_base(s);
                s.results = "/tmp/results".into();
            }),
            Code::InvalidArgument,
            "results",
        ),
        (
            "S3 resources while S3 is not set up",
            spec(|s| {
                profile_base(s);
                s.resources = "s3://bucket/in".into();
            }),
            Code::FailedPrecondition,
            "config/storage/s3",
        ),
        (
            "a cluster profile without its number of instances",
            spec(|s| {
                profile_base(s);
                s.profile = "docker-cluster".into();
            }),
            Code::InvalidArgument,
            "instances: profile `docker-cluster` needs the number of instances",
        ),
        (
            "instances without a cluster profile",
            spec(|s| {
                profile_base(s);
                s.instances = 2;
            }),
            Code::InvalidArgument,
            "instances: needs a cluster profile",
        ),
        (
            "a cluster of more instances than allowed",
            spec(|s| {
                profile_base(s);
                s.profile = "docker-cluster".into();
                s.instances = 65;
            }),
            Code::InvalidArgument,
            "1 to 64",
        ),
        (
            "a span whose owner and peers do not hold the whole cluster",
            spec(|s| {
                profile_base(s);
                s.profile = "docker-cluster".into();
                s.instances = 3;
                s.span = Some(deckhand::wire::pb::ClusterSpan {
                    count: 1,
                    peers: vec![deckhand::wire::pb::SpanPeer {
                        agent_id: "b".into(),
                        address: "127.0.0.1:1".into(),
                        first: 1,
                        count: 1,
                    }],
                    ..Default::default()
                });
            }),
            Code::InvalidArgument,
            "span: the owner and its peers hold 2 of the cluster's 3 instances",
        ),
        (
            "a span whose peer claims more instances than there are",
            spec(|s| {
                profile_base(s);
                s.profile = "docker-cluster".into();
                s.instances = 3;
                s.span = Some(deckhand::wire::pb::ClusterSpan {
                    count: 1,
                    peers: vec![deckhand::wire::pb::SpanPeer {
                        agent_id: "b".into(),
                        address: "127.0.0.1:1".into(),
                        first: 1,
                        count: u32::MAX,
                    }],
                    ..Default::default()
                });
            }),
            Code::InvalidArgument,
            "span: the owner and its peers hold",
        ),
        (
            "a peer's part that names no network",
            spec(|s| {
                profile_base(s);
                s.profile = "docker-cluster".into();
                s.instances = 3;
                s.span = Some(deckhand::wire::pb::ClusterSpan {
                    first: 1,
                    count: 2,
                    owner: "a0".into(),
                    ..Default::default()
                });
            }),
            Code::InvalidArgument,
            "span: a peer's part holds workers only, on its owner's network",
        ),
        (
            "a worker command on a profile of one instance",
            spec(|s| {
                profile_base(s);
                s.constants
                    .insert("DOCKER_CMD_WORKER".into(), "true".into());
            }),
            Code::InvalidArgument,
            "constants[DOCKER_CMD_WORKER]",
        ),
        (
            "a RoCE profile on an agent without RDMA devices",
            spec(|s| {
                profile_base(s);
                s.profile = "docker-network-roce".into();
            }),
            Code::FailedPrecondition,
            "RDMA",
        ),
        (
            "upload too large",
            Op::Upload(UploadFileRequest {
                kernel_id: g.running.clone(),
                path: "big.bin".into(),
                content: vec![0; 12 << 20],
            }),
            Code::OutOfRange,
            "message length too large",
        ),
    ]
}

//! Kernels on the real Docker engine, driven through the real manager and CLI: lifecycle,
//! scratch homes, job control, logs/exec/files, arrays, GPUs (fake ones from config: no GPU
//! exists on CI), ports and slots. Every container is removed by namespace label when the
//! test's cluster drops, also on failure.

#[path = "../common/mod.rs"]
mod common;

mod lifecycle;
mod limits;
mod resources;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::{containers, docker_inspect, wait_for, KernelCluster, TEST_IMAGE};

const T: Duration = Duration::from_secs(20);

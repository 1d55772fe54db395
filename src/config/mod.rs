//! Cluster settings: the flattened TOML tree kept in etcd under `/deckhand/<ns>/config/`
//! (and per agent under `nodes/agents/<id>/config/`), its schema, and the typed view the
//! agent runs with.
//!
//! - [`tree`]: TOML ⇄ flat `a/b/c = "value"` keys.
//! - [`schema`]: every known key, its kind and its validation.
//! - [`cluster`]: the typed [`ClusterConfig`] built from a validated tree.
//! - [`vast`]: the `vast_api/` settings of the Vast.ai runtime.
//! - [`profiles`]: operators' task profiles and the S3 store of resources and results.
//! - [`tables`]: keys that hold a table of settings (`vast_api/offer_filters`), set whole.
//! - [`live`]: merging global and per-agent layers, keeping the last good value of a key
//!   whose new value is malformed.

pub mod cluster;
pub mod constants;
pub mod live;
pub mod profiles;
pub mod schema;
pub mod tables;
pub mod tree;
pub mod vast;

pub use cluster::{ClusterConfig, FakeGpu, KernelSettings};
pub use live::LiveConfig;
pub use schema::ConfigError;
pub use tree::FlatTree;

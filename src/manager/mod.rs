//! The reference manager, `deckhand manager` (its start-up is `crate::daemon::manager`): registers itself under
//! `nodes/managers/<id>`, keeps an agent table from etcd registrations and heartbeats, and
//! answers the CLI. Deliberately small: no users, quotas or database.

mod drain;
pub mod fit;
mod gpu_health;
mod images;
pub mod kernels;
mod locate;
pub mod metrics;
mod placement;
pub mod service;
pub mod slots;
mod span;
pub mod status_page;
pub mod table;

//! Where kernels run. Docker today ([`docker`]); the Vast.ai remote-instance runtime joins
//! it later behind the same kernel engine.

pub mod docker;
pub mod images;

pub use docker::{Docker, EngineError};

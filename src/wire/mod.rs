//! The gRPC surface: code generated from `proto/deckhand/v1`, plus the pieces both servers
//! share (health, reflection, channels to peers).

pub mod server;

/// Generated messages and services of package `deckhand.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("deckhand.v1");

    /// Encoded file descriptor set for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("deckhand_descriptor");
}

pub mod names;

pub use server::{advertised_uri, bind, channel, serve, status_text, Bound, ServeError};

/// The gRPC message size limit of both servers: an upload and its envelope. A larger
/// message is refused from its length prefix (OUT_OF_RANGE), before it is read into memory.
pub const MAX_MESSAGE: usize = crate::util::MAX_UPLOAD + (64 << 10);

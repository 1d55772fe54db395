//! The lowest layer: pieces every other module may use and that know nothing of deckhand's
//! own types (task tracking for shutdown, TLS files, image references, secrets, the S3 client).

pub mod fs;
pub mod image;
pub mod s3;
pub mod secret;
pub mod shutdown;
pub mod tls;

/// Now, as Unix milliseconds (the time every record and event carries).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Largest file an upload carries in one message: the runtimes refuse more, and the gRPC
/// servers size their message limit from it.
pub const MAX_UPLOAD: usize = 8 << 20;

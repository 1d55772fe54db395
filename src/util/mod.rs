//! The lowest layer: pieces every other module may use and that know nothing of deckhand's
//! own types (task tracking for shutdown, TLS files).

pub mod fs;
pub mod shutdown;
pub mod tls;

/// Now, as Unix milliseconds (the time every record and event carries).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Largest file an upload carries in one message: the runtimes refuse more, and the gRPC
/// servers size their message limit from it.
pub const MAX_UPLOAD: usize = 8 << 20;

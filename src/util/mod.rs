//! The lowest layer: pieces every other module may use and that know nothing of deckhand's
//! own types (task tracking for shutdown, TLS files).

pub mod shutdown;
pub mod tls;

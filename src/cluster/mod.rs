//! Everything deckhand keeps in etcd: the key layout ([`keys`]), connecting with backoff
//! ([`etcd`]), and the long-lived [`session`] that holds a leased registration and mirrors
//! watched prefixes into memory.

pub mod drain;
pub mod etcd;
pub mod keys;
pub mod session;

pub use etcd::EtcdOptions;
pub use keys::Keys;
pub use session::{Mirror, Owner, Registration, Session, SessionError};
pub mod records;

pub use records::{AgentRecord, ManagerRecord};

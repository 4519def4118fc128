//! The time-series store.

pub mod chunk;
pub mod head;
pub mod wal;

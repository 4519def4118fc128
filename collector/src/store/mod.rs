//! The time-series store.

pub mod chunk;

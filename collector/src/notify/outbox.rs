//! The durable outbox lives in its own crate (`hale-outbox`): the healer's escalations
//! go through the same one.

pub use hale_outbox::{Entry, Outbox, OutboxStats};

//! # hale-healer
//!
//! Turns alerts into repairs an on-call engineer would trust: a policy says what to do
//! for which alert, safety checks say whether to do it now, every action is verified
//! against the condition that triggered it, and every decision is one line of an
//! append-only audit log.

pub mod policy;

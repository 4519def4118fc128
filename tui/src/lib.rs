//! # hale-tui
//!
//! The on-call dashboard (`hale tui`, and what `hale up` opens): the collector's, the
//! agents' and the healer's APIs read through `hale-client` into a [`model::Snapshot`] by
//! a [`source::Source`] (their `hale_core::api` answers converted once, in [`model`]), keys
//! turned into state changes and effects by [`app::App`], the state drawn by [`ui::draw`].
//! Data flows one way: source → snapshot → app → frame; effects go back out through the
//! event loop ([`act`] carries them out through the same clients).

pub mod act;
pub mod app;
#[doc(hidden)]
pub mod bench;
#[doc(hidden)]
pub mod fixture;
pub mod info;
pub mod model;
mod run;
pub mod source;
pub mod ui;

pub use run::{Actuator, Options, run};

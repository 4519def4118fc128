//! # hale-tui
//!
//! The on-call dashboard (`hale tui`, and what `hale up` opens): the collector's and the
//! healer's APIs read into a [`model::Snapshot`] by a [`source::Source`], keys turned into
//! state changes and effects by [`app::App`], the state drawn by [`ui::draw`]. Data flows
//! one way: source → snapshot → app → frame; effects go back out through the event loop.

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

//! # hale-shop
//!
//! The demo online shop that Hale watches out of the box: five small services (gateway,
//! auth, catalog, search, orders) and a load generator. Each service is an axum router
//! wrapped by [`http::app`] with probes, metrics, fault injection and access logs, and is
//! started by [`run`].

pub mod auth;
pub mod catalog;
pub mod gateway;
pub mod http;
pub mod limits;
pub mod logging;
pub mod orders;
mod run;
pub mod search;

pub use run::{RunError, ShopArgs, app, run};
pub mod load;

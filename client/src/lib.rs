//! # hale-client
//!
//! One typed client per Hale API, over the wire types of [`hale_core::api`], and one way to
//! make a request: every call has a timeout, and every failure is a [`ClientError`] that
//! says which URL and what went wrong (unreachable, refused with the server's own message,
//! or an answer that is not the contract).
//!
//! ```no_run
//! # async fn f() -> Result<(), hale_client::ClientError> {
//! let collector = hale_client::Collector::new("http://127.0.0.1:9464", None)?;
//! for alert in collector.alerts().await?.alerts {
//!     println!("{} {:?}", alert.labels["alertname"], alert.state);
//! }
//! # Ok(()) }
//! ```

mod agent;
mod collector;
mod gateway;
mod healer;
mod request;
pub mod tls;

pub use agent::Agent;
pub use collector::Collector;
pub use gateway::Gateway;
pub use healer::Healer;
pub use request::{CALL_TIMEOUT, ClientError, Pool};

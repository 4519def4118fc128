//! HTTP plumbing shared by every shop service.

pub mod chaos;
pub mod error;
pub mod internal;
pub mod metrics;
pub mod serve;
pub mod token;

pub use error::{ApiJson, ApiQuery, AppError};
pub use serve::{BODY_LIMIT_BYTES, Frame, Readiness, app, serve, serve_on};
pub use token::{Admin, Authenticated, Claims, Scoped, TokenKeys};

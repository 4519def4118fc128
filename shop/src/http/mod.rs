//! HTTP plumbing shared by every shop service: the common routes and layers around a
//! service's router (`serve`), the one error shape and the extractors that produce it
//! (`error`), access tokens and their scopes (`token`), the headers only the gateway may
//! set (`internal`), the HTTP metrics (`metrics`) and fault injection (`chaos`).

pub mod chaos;
pub mod error;
pub mod internal;
pub mod metrics;
pub mod serve;
pub mod token;

pub use error::{ApiJson, ApiQuery, AppError};
pub use serve::{BODY_LIMIT_BYTES, Frame, Readiness, app, serve, serve_on};
pub use token::{Admin, Authenticated, Claims, Scoped, TokenKeys};

//! When a long-running command stops: every component, and `hale up` with its children,
//! stop cleanly on the same signals (Ctrl-C or SIGTERM), as `hale-agent` does.

pub use hale_serve::process::stop_requested as requested;

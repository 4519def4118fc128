//! `hale status --json`: a cluster at a glance, for scripts.

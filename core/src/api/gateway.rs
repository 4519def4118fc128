//! The shop gateway's admin API: its pool of replicas and their readiness.

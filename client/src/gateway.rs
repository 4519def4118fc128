//! The shop gateway's admin API: its pools, failover and rejoin.

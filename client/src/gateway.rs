//! The shop gateway's admin API: its pools, failover and rejoin. Promotion and rejoin are
//! asked of a catalog replica itself (at its own URL, as the pool lists it), with the same
//! admin token; the gateway then follows the new primary.

use hale_core::ServiceKind;
use hale_core::api::{EpochRequest, PoolUpdate, PoolView, Pools, Promoted, RejoinRequest, Rejoined};
use reqwest::Method;

use crate::request::{self, CALL_TIMEOUT, ClientError, Peer, Pool};

/// Every call carries the admin token.
pub struct Gateway(Peer);

impl Gateway {
    /// A client of the gateway at `base` (`http://host:port`) with the cluster's admin token.
    pub fn new(base: &str, admin_token: &str) -> Result<Gateway, ClientError> {
        Gateway::with_client(base, admin_token, &Pool::new(CALL_TIMEOUT)?)
    }

    /// A client that shares the caller's connection pool; every call still has `timeout`.
    pub fn with_client(base: &str, admin_token: &str, pool: &Pool) -> Result<Gateway, ClientError> {
        Ok(Gateway(Peer::new(base, Some(admin_token.to_string()), pool)?))
    }

    pub fn base(&self) -> &str {
        &self.0.base
    }

    /// `GET /admin/pool`: every pool.
    pub async fn pools(&self) -> Result<Pools, ClientError> {
        request::call(self.0.authed(Method::GET, &["admin", "pool"])?).await
    }

    /// One service's pool; empty if the gateway has none for it.
    pub async fn pool(&self, service: ServiceKind) -> Result<PoolView, ClientError> {
        Ok(self.pools().await?.remove(&service).unwrap_or_default())
    }

    /// `PUT /admin/pool/{service}`: changes members and/or the catalog's primary; every
    /// pool as the gateway now has them.
    pub async fn set_pool(&self, service: ServiceKind, update: &PoolUpdate) -> Result<Pools, ClientError> {
        request::call(self.0.authed(Method::PUT, &["admin", "pool", service.as_str()])?.json(update)).await
    }

    /// `POST <replica>/admin/promote`: makes the catalog replica at `replica` (its base URL)
    /// the primary under a new epoch, at least `epoch` if given; it fences the old one.
    pub async fn promote(&self, replica: &str, epoch: Option<u64>) -> Result<Promoted, ClientError> {
        let url = request::url(replica, &["admin", "promote"])?;
        let r = self.0.authed_url(Method::POST, url)?;
        request::call(if epoch.is_some() { r.json(&EpochRequest { epoch }) } else { r }).await
    }

    /// `POST <replica>/admin/rejoin`: makes the catalog replica at `replica` a standby of
    /// the primary named, under its epoch.
    pub async fn rejoin(&self, replica: &str, to: &RejoinRequest) -> Result<Rejoined, ClientError> {
        let url = request::url(replica, &["admin", "rejoin"])?;
        request::call(self.0.authed_url(Method::POST, url)?.json(to)).await
    }
}

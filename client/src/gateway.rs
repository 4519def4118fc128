//! The shop gateway's admin API: its pools, failover and rejoin. Promotion and rejoin are
//! asked of a catalog replica itself (at its own URL, as the pool lists it), with the same
//! admin token; the gateway then follows the new primary.

use hale_core::ServiceKind;
use hale_core::api::{EpochRequest, PoolUpdate, PoolView, Pools, Promoted, RejoinRequest, Rejoined};

use crate::request::{self, CALL_TIMEOUT, ClientError};

pub struct Gateway {
    base: String,
    admin_token: String,
    http: reqwest::Client,
    timeout: std::time::Duration,
}

impl Gateway {
    /// A client of the gateway at `base` (`http://host:port`) with the cluster's admin token.
    pub fn new(base: &str, admin_token: &str) -> Result<Gateway, ClientError> {
        Gateway::with_client(base, admin_token, request::http(CALL_TIMEOUT)?, CALL_TIMEOUT)
    }

    /// A client that shares the caller's connection pool; every call still has `timeout`.
    pub fn with_client(
        base: &str,
        admin_token: &str,
        http: reqwest::Client,
        timeout: std::time::Duration,
    ) -> Result<Gateway, ClientError> {
        let base = request::base(base)?;
        Ok(Gateway { base, admin_token: admin_token.to_string(), http, timeout })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn authed(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        r.timeout(self.timeout).bearer_auth(&self.admin_token)
    }

    /// `GET /admin/pool`: every pool.
    pub async fn pools(&self) -> Result<Pools, ClientError> {
        request::call(self.authed(self.http.get(request::url(&self.base, &["admin", "pool"])?))).await
    }

    /// One service's pool; empty if the gateway has none for it.
    pub async fn pool(&self, service: ServiceKind) -> Result<PoolView, ClientError> {
        Ok(self.pools().await?.remove(&service).unwrap_or_default())
    }

    /// `PUT /admin/pool/{service}`: changes members and/or the catalog's primary; every
    /// pool as the gateway now has them.
    pub async fn set_pool(&self, service: ServiceKind, update: &PoolUpdate) -> Result<Pools, ClientError> {
        let url = request::url(&self.base, &["admin", "pool", service.as_str()])?;
        request::call(self.authed(self.http.put(url).json(update))).await
    }

    /// `POST <replica>/admin/promote`: makes the catalog replica at `replica` (its base URL)
    /// the primary under a new epoch, at least `epoch` if given; it fences the old one.
    pub async fn promote(&self, replica: &str, epoch: Option<u64>) -> Result<Promoted, ClientError> {
        let url = request::url(replica, &["admin", "promote"])?;
        let r = self.http.post(url);
        let r = if epoch.is_some() { r.json(&EpochRequest { epoch }) } else { r };
        request::call(self.authed(r)).await
    }

    /// `POST <replica>/admin/rejoin`: makes the catalog replica at `replica` a standby of
    /// the primary named, under its epoch.
    pub async fn rejoin(&self, replica: &str, to: &RejoinRequest) -> Result<Rejoined, ClientError> {
        let url = request::url(replica, &["admin", "rejoin"])?;
        request::call(self.authed(self.http.post(url).json(to))).await
    }
}

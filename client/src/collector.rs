//! The collector's own API: alerts, silences, SLOs, the cluster view, PromQL queries, logs,
//! traces (its Tempo-compatible search and trace by id).

use std::time::Duration;

use hale_core::api::{
    AlertsData, Envelope, LogLine, LogQuery, NewSilence, QueryResult, Silence, SilenceCreated, SloState, TraceSearch,
};
use hale_core::cluster::ClusterView;
use reqwest::Method;
use serde::de::DeserializeOwned;

use crate::request::{self, CALL_TIMEOUT, ClientError, Peer, Pool};

pub struct Collector(Peer);

impl Collector {
    /// A client of the collector at `base` (`http://host:port`); `admin_token` for the
    /// calls that change something (silences).
    pub fn new(base: &str, admin_token: Option<String>) -> Result<Collector, ClientError> {
        Collector::with_timeout(base, admin_token, CALL_TIMEOUT)
    }

    pub fn with_timeout(base: &str, admin_token: Option<String>, timeout: Duration) -> Result<Collector, ClientError> {
        Collector::with_client(base, admin_token, &Pool::new(timeout)?)
    }

    /// A client that shares the caller's connection pool; every call still has `timeout`.
    pub fn with_client(base: &str, admin_token: Option<String>, pool: &Pool) -> Result<Collector, ClientError> {
        Ok(Collector(Peer::new(base, admin_token, pool)?))
    }

    pub fn base(&self) -> &str {
        &self.0.base
    }

    /// The `data` of an enveloped answer.
    async fn data<T: DeserializeOwned>(&self, r: reqwest::RequestBuilder) -> Result<T, ClientError> {
        let answer: Envelope<T> = request::call(r).await?;
        answer.into_data().map_err(|message| ClientError::Decode { url: self.0.base.clone(), message })
    }

    /// A read of `/api/v1/{what}`.
    fn get(&self, what: &str) -> Result<reqwest::RequestBuilder, ClientError> {
        self.0.open(Method::GET, &["api", "v1", what])
    }

    /// `GET /api/v1/alerts`: every pending and firing alert, and `groupBy`.
    pub async fn alerts(&self) -> Result<AlertsData, ClientError> {
        self.data(self.get("alerts")?).await
    }

    /// `GET /api/v1/silences`: active, pending and recently expired.
    pub async fn silences(&self) -> Result<Vec<Silence>, ClientError> {
        self.data(self.get("silences")?).await
    }

    /// `POST /api/v1/silences` (admin token): the new silence's id.
    pub async fn add_silence(&self, silence: &NewSilence) -> Result<String, ClientError> {
        let request = self.0.authed(Method::POST, &["api", "v1", "silences"])?;
        let created: SilenceCreated = self.data(request.json(silence)).await?;
        Ok(created.silence_id)
    }

    /// `DELETE /api/v1/silences/{id}` (admin token).
    pub async fn expire_silence(&self, id: &str) -> Result<(), ClientError> {
        request::send(self.0.authed(Method::DELETE, &["api", "v1", "silences", id])?).await.map(|_| ())
    }

    /// `GET /api/v1/slos`.
    pub async fn slos(&self) -> Result<Vec<SloState>, ClientError> {
        self.data(self.get("slos")?).await
    }

    /// `GET /api/v1/cluster`: nodes and services, freshness already judged.
    pub async fn cluster(&self) -> Result<ClusterView, ClientError> {
        self.data(self.get("cluster")?).await
    }

    /// `GET /api/v1/query`: `query` evaluated now.
    pub async fn query(&self, query: &str) -> Result<QueryResult, ClientError> {
        self.data(self.get("query")?.query(&[("query", query)])).await
    }

    /// `GET /api/v1/query_range`: `query` from `start` to `end` (Unix seconds) every
    /// `step_secs`.
    pub async fn query_range(
        &self,
        query: &str,
        start: i64,
        end: i64,
        step_secs: f64,
    ) -> Result<QueryResult, ClientError> {
        let params = [
            ("query", query.to_string()),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("step", step_secs.to_string()),
        ];
        self.data(self.get("query_range")?.query(&params)).await
    }

    /// `GET /api/v1/logs`: the newest lines that match, oldest first.
    pub async fn logs(&self, query: &LogQuery) -> Result<Vec<LogLine>, ClientError> {
        self.data(self.get("logs")?.query(query)).await
    }

    /// `GET /api/search`: the traces a TraceQL query matches between `start` and `end`
    /// (Unix seconds), newest first, at most `limit`.
    pub async fn search_traces(
        &self,
        traceql: &str,
        start: i64,
        end: i64,
        limit: usize,
    ) -> Result<TraceSearch, ClientError> {
        let params = [
            ("q", traceql.to_string()),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("limit", limit.to_string()),
        ];
        request::call(self.0.open(Method::GET, &["api", "search"])?.query(&params)).await
    }

    /// `GET /api/traces/<id>`: a trace's spans as OTLP/JSON (`{"batches": [...]}`).
    pub async fn trace(&self, id: &str) -> Result<serde_json::Value, ClientError> {
        request::call(self.0.open(Method::GET, &["api", "traces", id])?).await
    }
}

//! Starting the collector: replay the WAL, serve the API, stop cleanly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::api::{self, Collector};
use crate::store::Store;

/// What `hale collector` runs with.
#[derive(Clone)]
pub struct CollectorConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Bearer token required on `/api/v1/write`; `None` leaves ingest open (loopback demos).
    pub ingest_token: Option<String>,
}

impl std::fmt::Debug for CollectorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectorConfig")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("opening the store in {dir}: {source}")]
    Store { dir: PathBuf, source: crate::store::wal::WalError },
    #[error("could not listen on {addr}: {source}; is another collector using it?")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

pub async fn run(
    config: CollectorConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), CollectorError> {
    let started = Instant::now();
    let dir = config.data_dir.clone();
    let (store, report) = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await
        .map_err(|e| CollectorError::Serve(std::io::Error::other(e)))?
        .map_err(|source| CollectorError::Store { dir: config.data_dir.clone(), source })?;
    if report.wal.truncated_bytes > 0 {
        tracing::warn!(
            bytes = report.wal.truncated_bytes,
            "the WAL had a torn or damaged tail; it was cut and everything before it kept"
        );
    }
    tracing::info!(
        series = report.series,
        samples = report.samples,
        wal_records = report.wal.records,
        seconds = started.elapsed().as_secs_f64(),
        "store open"
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| CollectorError::Listen { addr: config.listen, source })?;
    let collector =
        Arc::new(Collector { store, ingest_token: config.ingest_token, started, rejected_batches: Default::default() });
    tracing::info!(listen = %config.listen, "collector serving");
    axum::serve(listener, api::router(collector)).with_graceful_shutdown(shutdown).await.map_err(CollectorError::Serve)
}

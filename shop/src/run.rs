//! Starting one shop replica: build its router from the cluster config, start its
//! background tasks, serve until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use hale_core::{ClusterConfig, Role, ServiceKind};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::http::{self, AppError, Frame};
use crate::limits::OrderLimits;
use crate::{auth, catalog, gateway, orders, search};

/// Everything one replica needs to know; `hale shop <service>` builds it from flags.
#[derive(Debug, Clone)]
pub struct ShopArgs {
    pub service: ServiceKind,
    /// Instance name (`catalog-1`).
    pub instance: String,
    pub listen: SocketAddr,
    /// Root of the shop's state; each replica keeps its files under it.
    pub data_dir: PathBuf,
    /// The gateway's URL, for the calls services make to each other.
    pub gateway_url: String,
    /// Catalog only: the starting role and, for a standby, the primary's URL.
    pub role: Role,
    pub follow: Option<String>,
    pub cluster: ClusterConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("could not start {service}: {message}")]
    Start { service: ServiceKind, message: String },
    #[error(
        "could not listen on {addr}: {error}; {}",
        hale_serve::listen_hint(error, "another instance (or `hale up`)")
    )]
    Listen { addr: SocketAddr, error: std::io::Error },
}

/// A background task of a replica (replication follower, readiness checker, ...).
pub type Task = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// A service's routes plus the background tasks it needs.
struct Built {
    api: Router,
    tasks: Vec<Task>,
}

fn start_error(service: ServiceKind) -> impl Fn(String) -> RunError {
    move |message| RunError::Start { service, message }
}

fn build(
    args: &ShopArgs,
    frame: &Frame,
    registry: &mut Registry,
    stop: &watch::Receiver<bool>,
) -> Result<Built, RunError> {
    let err = start_error(args.service);
    let instance_dir = args.data_dir.join(&args.instance);
    Ok(match args.service {
        ServiceKind::Auth => Built { api: auth::router(&args.cluster, registry), tasks: vec![] },
        ServiceKind::Catalog => {
            let state = catalog::CatalogState::open(
                &instance_dir.join("catalog.db"),
                &args.instance,
                args.role,
                args.follow.clone(),
                &args.cluster.secrets.admin_token,
                frame.readiness.clone(),
                registry,
            )
            .map_err(|e| err(e.to_string()))?;
            let follower = state.clone().follow(stop.clone());
            let limits = OrderLimits::from_env().map_err(&err)?;
            Built { api: catalog::router_with_limits(state, limits), tasks: vec![Box::pin(follower)] }
        }
        ServiceKind::Search => {
            let state = search::SearchState::new(&args.gateway_url, frame.readiness.clone(), registry)
                .map_err(|e: AppError| err(e.to_string()))?;
            let follower = state.clone().follow(stop.clone());
            Built { api: search::router(state), tasks: vec![Box::pin(follower)] }
        }
        ServiceKind::Orders => {
            // Orders replicas are stateless and share one database (see orders::store).
            let client = orders::CatalogClient {
                base_url: args.gateway_url.trim_end_matches('/').to_string(),
                client_id: "orders".into(),
                client_secret: args.cluster.secrets.orders_client_secret.clone(),
            };
            let state = orders::OrdersState::open(
                &args.data_dir.join("orders").join("orders.db"),
                &args.cluster.secrets.encryption_key,
                client,
                OrderLimits::from_env().map_err(&err)?,
                registry,
            )
            .map_err(|e| err(e.to_string()))?;
            Built { api: orders::router(state), tasks: vec![] }
        }
        ServiceKind::Gateway => {
            let state = gateway::GatewayState::from_cluster(&args.cluster, frame.readiness.clone(), registry)
                .map_err(|e| err(e.to_string()))?;
            let checker = state.clone().check_readiness(stop.clone());
            Built { api: gateway::router(state), tasks: vec![Box::pin(checker)] }
        }
    })
}

/// Builds the replica's router (for tests that call it without a socket).
pub fn app(args: &ShopArgs, stop: &watch::Receiver<bool>) -> Result<(Router, Vec<Task>), RunError> {
    let mut registry = Registry::default();
    let frame = Frame::new(
        args.service,
        &args.instance,
        &mut registry,
        &args.cluster.secrets.jwt_secret,
        &args.cluster.secrets.admin_token,
    )
    .with_capacity(args.cluster.max_in_flight(args.service));
    let built = build(args, &frame, &mut registry, stop)?;
    Ok((http::app(frame, Arc::new(registry), built.api), built.tasks))
}

/// Runs one replica until `shutdown` resolves.
pub async fn run(
    args: ShopArgs,
    security: hale_serve::Security,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (router, tasks) = app(&args, &stop_rx)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|error| RunError::Listen { addr: args.listen, error })?;
    let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
    tracing::info!(service = %args.service, instance = %args.instance, listen = %args.listen, "serving");
    let result = http::serve_on(listener, router, security, async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    })
    .await;
    for handle in handles {
        handle.abort();
    }
    tracing::info!("stopped");
    result.map_err(|error| RunError::Listen { addr: args.listen, error })
}

//! Starting the healer: policies, state and audit log, the decision loop, the API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::api::{App, Auth};
use crate::audit::Audit;
use crate::clients::Collector;
use crate::engine::{Escalation, Healer};
use crate::executor::Tokens;
use crate::policy::PolicyFile;
use crate::state::Store;
use hale_core::ConfigError;

/// What `hale healer` runs with. No `Debug`: it holds tokens.
pub struct HealerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub policies: PathBuf,
    /// The services it may act on, where and through what (`healer.toml`).
    pub inventory: crate::inventory::Inventory,
    /// The node agents' actuator token (the `agent` executor).
    pub agent_token: Option<std::sync::Arc<hale_core::token::Token>>,
    /// The gateway's admin token (gateway load balancers) and the collector's (silences).
    pub admin_token: Option<std::sync::Arc<hale_core::token::Token>>,
    pub collector: String,
    /// Bearer token for the healer's write endpoints.
    pub token: Option<std::sync::Arc<hale_core::token::Token>>,
    /// Key of `X-Hale-Signature`, on the intake and on escalations.
    pub webhook_secret: Option<Arc<[u8]>>,
    /// Bearer token the alert intake accepts in place of a signature (none: signatures only).
    pub intake_token: Option<std::sync::Arc<hale_core::token::Token>>,
    pub escalation_webhooks: Vec<String>,
    /// Alertmanagers the escalations are posted to as alerts.
    pub escalation_alertmanagers: Vec<String>,
    pub dry_run: bool,
    /// etcd endpoints: several healers elect a leader and share their state there.
    /// Empty: a lone healer with its state in the data dir.
    pub etcd: Vec<String>,
    /// Keys under this prefix (one healer group per prefix).
    pub etcd_prefix: String,
    /// Lease TTL: how long a dead leader holds the lead before another takes it.
    pub etcd_ttl: std::time::Duration,
    /// TLS to etcd (`https://` endpoints): the CA its certificate is checked against and
    /// the client certificate it asks for (`etcd --client-cert-auth`).
    pub etcd_tls: EtcdTls,
    /// The Kubernetes API for `kubernetes` services: this kubeconfig, else the usual
    /// search (`$KUBECONFIG`, `~/.kube/config`, then in-cluster).
    pub kubeconfig: Option<PathBuf>,
}

/// The PEM files of the healer's TLS to etcd; all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl EtcdTls {
    /// tonic's TLS options for these files (`None` when none is given); an error names
    /// the file.
    fn options(&self) -> Result<Option<etcd_client::TlsOptions>, HealerError> {
        let read =
            |path: &PathBuf| std::fs::read(path).map_err(|error| HealerError::EtcdTls { path: path.clone(), error });
        let mut tls = etcd_client::TlsOptions::new();
        let mut any = false;
        if let Some(ca) = &self.ca {
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
            any = true;
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
            any = true;
        }
        Ok(any.then_some(tls))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HealerError {
    #[error("reading policies {path}: {error}")]
    ReadPolicies { path: PathBuf, error: std::io::Error },
    #[error("policies {path}: {error}; check them with `hale policies check {path}`")]
    Policies { path: PathBuf, error: ConfigError },
    #[error("data dir {path}: {error}")]
    DataDir { path: PathBuf, error: std::io::Error },
    #[error("could not listen on {addr}: {error}; {}", hale_serve::listen_hint(error, "another healer"))]
    Listen { addr: SocketAddr, error: std::io::Error },
    #[error("the Kubernetes API: {0}")]
    Kubernetes(String),
    #[error("reading {path} (TLS to etcd): {error}; give the PEM file, readable by this user")]
    EtcdTls { path: PathBuf, error: std::io::Error },
    #[error("etcd at {endpoints}: {error}; is etcd running there (`etcd --listen-client-urls ...`)?")]
    Etcd { endpoints: String, error: crate::ha::EtcdError },
    #[error("etcd at {endpoints}: {error}; is etcd running there (`etcd --listen-client-urls ...`)?")]
    SharedState { endpoints: String, error: crate::state::SaveError },
    #[error("inventory: {0}")]
    Inventory(String),
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

pub async fn run(
    config: HealerConfig,
    security: hale_serve::Security,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), HealerError> {
    let source = std::fs::read_to_string(&config.policies)
        .map_err(|error| HealerError::ReadPolicies { path: config.policies.clone(), error })?;
    let policies =
        PolicyFile::parse(&source).map_err(|error| HealerError::Policies { path: config.policies.clone(), error })?;
    crate::executor::check_policies(&policies, &config.inventory).map_err(|message| HealerError::Policies {
        path: config.policies.clone(),
        error: ConfigError { line: None, message },
    })?;
    let dir_err = |error| HealerError::DataDir { path: config.data_dir.clone(), error };
    std::fs::create_dir_all(&config.data_dir).map_err(dir_err)?;
    let audit = Audit::open(&config.data_dir.join("audit.jsonl")).map_err(dir_err)?;
    // Everything that ends with the process hears of the end through one channel.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut campaign = None;
    let store = if config.etcd.is_empty() {
        Store::open(&config.data_dir.join("state.json"))
    } else {
        let endpoints = config.etcd.join(",");

        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(2))
            .with_timeout(std::time::Duration::from_secs(3));
        if let Some(tls) = config.etcd_tls.options()? {
            options = options.with_tls(tls);
        }
        let client = crate::ha::with_timeout(
            std::time::Duration::from_secs(5),
            etcd_client::Client::connect(&config.etcd, Some(options)),
        )
        .await
        .map_err(|error| HealerError::Etcd { endpoints: endpoints.clone(), error })?;
        let leadership = Arc::new(crate::ha::Leadership::new(
            &config.etcd_prefix,
            security.base_url(config.listen),
            config.etcd_ttl,
        ));
        let store = Store::open_etcd(client.clone(), &config.etcd_prefix, leadership.clone())
            .await
            .map_err(|error| HealerError::SharedState { endpoints: endpoints.clone(), error })?;
        tracing::info!(etcd = %endpoints, prefix = %config.etcd_prefix, id = %leadership.me.id, "healer state shared in etcd; campaigning for the lead");
        let rx = stop_rx.clone();
        campaign = Some(tokio::spawn(async move { leadership.campaign(client, stopped(rx)).await }));
        store
    };
    let client = hale_client::tls::builder()
        .connect_timeout(std::time::Duration::from_secs(2))
        .build()
        .map_err(|e| HealerError::Serve(std::io::Error::other(e)))?;
    let collector = Collector {
        base: config.collector.trim_end_matches('/').to_string(),
        client: client.clone(),
        admin_token: config.admin_token.clone(),
    };
    let outbox = Arc::new(
        hale_outbox::Outbox::open(
            &config.data_dir.join("escalations"),
            concat!("hale-healer/", env!("CARGO_PKG_VERSION")),
        )
        .map_err(dir_err)?,
    );
    let sender = tokio::spawn(outbox.clone().run(client.clone(), config.webhook_secret.clone()));
    let (executors, load_balancers) = crate::executor::build(
        &config.inventory,
        &client,
        Tokens {
            agent: config.agent_token.clone(),
            admin: config.admin_token.clone(),
            webhook_secret: config.webhook_secret.clone(),
            kube: kube_client(&config).await?,
        },
    )
    .map_err(HealerError::Inventory)?;
    let healer = Arc::new(Healer {
        policies,
        store,
        audit,
        collector,
        inventory: config.inventory,
        executors,
        load_balancers,
        protocol: crate::failover::Protocol {
            client: client.clone(),
            token: config.admin_token.clone(),
            secret: config.webhook_secret.clone(),
        },
        escalation: Escalation {
            urls: config.escalation_webhooks.clone(),
            alertmanagers: config.escalation_alertmanagers.clone(),
            secret: config.webhook_secret.clone(),
            outbox: outbox.clone(),
            external_url: security.base_url(config.listen),
        },
        dry_run: config.dry_run,
        metrics: Default::default(),
        wake: Default::default(),
        client,
        handling: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| HealerError::Listen { addr: config.listen, error })?;
    let worker = tokio::spawn(healer.clone().run());
    let follower = {
        let healer = healer.clone();
        tokio::spawn(async move { healer.store.follow().await })
    };
    tracing::info!(listen = %config.listen, policies = healer.policies.policies.len(), dry_run = config.dry_run, "healer serving");
    let app = Arc::new(App {
        healer,
        auth: Auth { token: config.token, webhook_secret: config.webhook_secret, intake_token: config.intake_token },
    });
    let result = hale_serve::serve_secure(
        listener,
        crate::api::router(app),
        hale_serve::Limits::default(),
        security,
        stopped(stop_rx),
    )
    .await
    .map_err(HealerError::Serve);
    worker.abort();
    follower.abort();
    sender.abort();
    if let Some(c) = campaign {
        // Gives the lead up (revokes the lease) so another healer takes over at once.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), c).await;
    }
    result
}

/// The Kubernetes API client, when a service is acted on through it.
async fn kube_client(config: &HealerConfig) -> Result<Option<kube::Client>, HealerError> {
    let needed = config.inventory.services.iter().any(|s| s.executor == crate::inventory::ExecutorKind::Kubernetes);
    if !needed {
        return Ok(None);
    }
    Ok(Some(kubernetes_client(config.kubeconfig.as_deref()).await?))
}

/// A Kubernetes API client from `kubeconfig` (its current context), else kube's own
/// search: `$KUBECONFIG`, `~/.kube/config`, then the pod's service account.
pub async fn kubernetes_client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, HealerError> {
    let fail = |e: String| HealerError::Kubernetes(e);
    let kube_config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| fail(format!("reading {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| fail(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            fail(format!("{e}; run the healer in the cluster (its service account) or give --kubeconfig"))
        })?,
    };
    kube::Client::try_from(kube_config).map_err(|e| fail(e.to_string()))
}

//! `hale shop <service>`: one replica of a shop service, as its node agent starts it
//! (logging to JSON lines the agent ships); and `hale shop hash-password` for cluster.toml.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use hale_core::{Role, ServiceKind};

#[derive(Debug, clap::Args)]
pub struct ShopCommand {
    #[command(subcommand)]
    which: ShopWhich,
}

#[derive(Debug, clap::Subcommand)]
enum ShopWhich {
    /// The entry point: routing, balancing, readiness checks, pool admin.
    Gateway(ServiceFlags),
    /// OAuth2 token endpoint.
    Auth(ServiceFlags),
    /// Products and stock, primary or standby.
    Catalog(ServiceFlags),
    /// Full-text product search.
    Search(ServiceFlags),
    /// Order placement with encrypted personal data.
    Orders(ServiceFlags),
    /// Read a password on stdin and print its Argon2 hash for cluster.toml.
    HashPassword,
}

#[derive(Debug, clap::Args)]
struct ServiceFlags {
    /// cluster.toml with the topology, accounts and secrets.
    #[arg(long)]
    config: PathBuf,
    #[command(flatten)]
    tls: hale_serve::tls::TlsFlags,
    /// Instance name, such as search-1.
    #[arg(long)]
    instance: String,
    /// Address to serve on.
    #[arg(long)]
    listen: SocketAddr,
    /// Root folder of the shop's state.
    #[arg(long)]
    data_dir: PathBuf,
    /// Folder of the JSON-lines log (<log-dir>/<instance>.log); default <data-dir>/logs.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// The gateway's URL, for calls between services.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// Catalog: starting role (primary or standby).
    #[arg(long, default_value = "primary")]
    role: RoleArg,
    /// Catalog standby: URL of the primary to follow.
    #[arg(long)]
    follow: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Primary,
    Standby,
}

/// `hale shop …`.
pub async fn run(command: ShopCommand) -> Result<()> {
    let (service, flags) = match command.which {
        ShopWhich::Gateway(f) => (ServiceKind::Gateway, f),
        ShopWhich::Auth(f) => (ServiceKind::Auth, f),
        ShopWhich::Catalog(f) => (ServiceKind::Catalog, f),
        ShopWhich::Search(f) => (ServiceKind::Search, f),
        ShopWhich::Orders(f) => (ServiceKind::Orders, f),
        ShopWhich::HashPassword => return hash_password(),
    };
    serve(service, flags).await
}

/// One replica, until Ctrl-C or SIGTERM; a failure is logged too, where its agent ships it.
async fn serve(service: ServiceKind, flags: ServiceFlags) -> Result<()> {
    let log_dir = flags.log_dir.clone().unwrap_or_else(|| flags.data_dir.join("logs"));
    // Traces when OpenTelemetry's variables name an endpoint (see hale_trace::Config).
    let tracing = hale_trace::Config::from_env(service.as_str(), &flags.instance).map(hale_trace::Tracing::start);
    let log = log_dir.join(format!("{}.log", flags.instance));
    crate::logging::to_json_lines(&log, service.as_str(), &flags.instance, tracing.as_ref())?;
    let cluster = crate::cluster_file::read(&flags.config)?;
    if matches!(flags.role, RoleArg::Standby) && flags.follow.is_none() {
        bail!("a catalog standby needs --follow <primary URL>");
    }
    let security = flags.tls.security()?;
    let args = hale_shop::ShopArgs {
        service,
        instance: flags.instance,
        listen: flags.listen,
        data_dir: flags.data_dir,
        gateway_url: flags.gateway,
        role: match flags.role {
            RoleArg::Primary => Role::Primary,
            RoleArg::Standby => Role::Standby,
        },
        follow: flags.follow,
        cluster,
    };
    let result = hale_shop::run(args, security, crate::shutdown::requested()).await;
    if let Err(e) = &result {
        tracing::error!(error = %e, "service failed");
    }
    Ok(result?)
}

/// `hale shop hash-password`: a password from stdin, its Argon2 hash on stdout.
fn hash_password() -> Result<()> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!("empty password: pipe one in, e.g. `printf %s 'secret' | hale shop hash-password`");
    }
    println!("{}", hale_shop::auth::hash_secret(password).map_err(anyhow::Error::msg)?);
    Ok(())
}

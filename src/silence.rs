//! `hale silence add|list|expire`: silences on a running collector, over its API. The
//! collector and the admin token come from the data dir's cluster.toml, as for `hale
//! status` and `hale tui`; flags and `HALE_ADMIN_TOKEN` override them.

use std::path::PathBuf;

use anyhow::{Context, Result};
use hale_core::api::{NewSilence, SilenceMatcher};

/// No `Debug`: it holds a token.
#[derive(clap::Args)]
pub struct SilenceArgs {
    #[command(subcommand)]
    which: Which,
    /// The cluster's data dir: its cluster.toml gives the collector and the admin token.
    #[arg(long, global = true, default_value = ".hale")]
    pub(crate) data_dir: PathBuf,
    /// The collector's URL (default: from the data dir's cluster.toml).
    #[arg(long, global = true)]
    collector: Option<String>,
    /// The collector's admin token, needed to add and expire (default: the data dir's).
    #[arg(long, global = true, env = "HALE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(clap::Subcommand)]
enum Which {
    /// Silence alerts matching every matcher: name=value, name!=value, name=~regex, name!~regex.
    Add {
        #[arg(required = true, value_name = "MATCHER")]
        matchers: Vec<String>,
        /// How long the silence lasts (30m, 2h, 1d).
        #[arg(long, default_value = "2h")]
        duration: String,
        /// Why: shown to whoever wonders where the alerts went.
        #[arg(long, default_value = "")]
        comment: String,
        /// Who (default: $USER).
        #[arg(long)]
        author: Option<String>,
    },
    /// Active, pending and recently expired silences.
    List,
    /// End a silence now.
    Expire { id: String },
}

pub async fn run(args: SilenceArgs) -> Result<()> {
    let cluster = crate::dashboard::cluster_of(&args.data_dir)?;
    let collector = match (args.collector, &cluster) {
        (Some(url), _) => url,
        (None, Some(c)) => c.url(c.collector.listen),
        (None, None) => return Err(crate::dashboard::no_cluster(&args.data_dir, "--collector URL (and --token)")),
    };
    // The flag or the environment first: they may name another cluster's token on purpose.
    let token = args.token.or_else(|| cluster.map(|c| c.secrets.admin_token));
    let client = hale_client::Collector::new(&collector, token)
        .with_context(|| format!("--collector {collector:?} is not an http URL"))?;
    match args.which {
        Which::Add { matchers, duration, comment, author } => {
            let matchers: Vec<SilenceMatcher> = matchers
                .iter()
                .map(|m| SilenceMatcher::parse(m))
                .collect::<Result<_, _>>()
                .map_err(anyhow::Error::msg)?;
            let duration = humantime::parse_duration(&duration)
                .with_context(|| format!("--duration {duration:?} is not a duration; write 30m, 2h or 1d"))?;
            let ends = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + duration).to_string();
            let author = author.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "hale".into());
            let body = NewSilence { id: None, matchers, starts_at: None, ends_at: ends, created_by: author, comment };
            println!("{}", client.add_silence(&body).await.map_err(explain)?);
        }
        Which::List => {
            let list = client.silences().await.map_err(explain)?;
            if list.is_empty() {
                println!("no silences");
            }
            println!("{:<36}  {:<8}  {:<20}  {:<40}  COMMENT", "ID", "STATE", "ENDS", "MATCHERS");
            for s in list {
                let matchers = hale_tui::model::matchers_text(&s.matchers, ",");
                let ends = s.ends_at.get(..19).unwrap_or("");
                println!("{:<36}  {:<8}  {:<20}  {:<40}  {}", s.id, s.status.state.as_str(), ends, matchers, s.comment);
            }
        }
        Which::Expire { id } => {
            client.expire_silence(&id).await.map_err(explain)?;
            println!("expired {id}");
        }
    }
    Ok(())
}

/// An error in the CLI's words: the collector's own message, except a refused token: the
/// collector's words name its own flag (`--admin-token`), while here the token comes from
/// `--token`, `HALE_ADMIN_TOKEN` or the data dir.
fn explain(e: hale_client::ClientError) -> anyhow::Error {
    use hale_client::ClientError as E;
    match e {
        E::Unauthorized { .. } => anyhow::anyhow!(
            "the collector refused the admin token (401): pass the cluster's admin token with --token or \
             HALE_ADMIN_TOKEN, or --data-dir DIR to read it from that cluster's cluster.toml (secrets.admin_token)"
        ),
        E::Status { status, message, .. } => anyhow::anyhow!("the collector answered {status}: {message}"),
        E::Unreachable { ref url, .. } => {
            let context = format!("reaching {url}; is the collector running?");
            anyhow::Error::new(e).context(context)
        }
        other => other.into(),
    }
}

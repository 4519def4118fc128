//! `hale healer`: its flags checked into the healer's config ([`HealerConfig`] from
//! [`HealerArgs`]), the healer run until Ctrl-C or SIGTERM; and `hale healer replay`,
//! what a policy set would have done with recorded alerts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hale_healer::HealerConfig;

/// No `Debug`: it holds tokens.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HealerArgs {
    #[command(subcommand)]
    sub: Option<HealerSub>,
    #[command(flatten)]
    tls: hale_serve::tls::TlsFlags,
    /// Address to serve on (the collector's webhooks come here).
    #[arg(long, default_value = "127.0.0.1:9465")]
    listen: SocketAddr,
    /// Where the audit log and the durable state live.
    #[arg(long, default_value = ".hale/healer")]
    data_dir: PathBuf,
    /// Healing policies (required).
    #[arg(long)]
    policies: Option<PathBuf>,
    /// The healer's inventory (healer.toml): the services it acts on, where, and through
    /// which executor. `hale up` writes one for the demo.
    #[arg(long)]
    inventory: Option<PathBuf>,
    /// Instead of --inventory: a demo cluster.toml, whose inventory and tokens are used.
    #[arg(long, conflicts_with = "inventory")]
    cluster: Option<PathBuf>,
    /// The node agents' actuator token (the agent executor).
    #[arg(long, env = "HALE_AGENT_TOKEN", hide_env_values = true)]
    agent_token: Option<String>,
    /// The agents' token from a file, read again when it changes: each call sends what it
    /// holds then.
    #[arg(long, env = "HALE_AGENT_TOKEN_FILE", value_name = "FILE")]
    agent_token_file: Option<PathBuf>,
    /// The gateway's admin token (a gateway load balancer) and the collector's (silences).
    #[arg(long, env = "HALE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The admin token from a file, read again when it changes (as --agent-token-file).
    #[arg(long, env = "HALE_ADMIN_TOKEN_FILE", value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// The collector's URL (queries, alerts, silences).
    #[arg(long, default_value = "http://127.0.0.1:9464")]
    collector: String,
    /// Bearer token for the healer's write endpoints (approve, pause, reset…).
    #[arg(long, env = "HALE_HEALER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The write token from a file (0600), read again when it changes; the token it
    /// replaced is taken for 5 more minutes.
    #[arg(long, env = "HALE_HEALER_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// A bearer token the alert intake accepts in place of a signature, for senders that
    /// cannot sign (Alertmanager's http_config.authorization). Without it the intake takes
    /// signed webhooks only; the write token is never accepted there.
    #[arg(long, env = "HALE_HEALER_INTAKE_TOKEN", hide_env_values = true)]
    intake_token: Option<String>,
    /// The intake token from a file, read again when it changes (as --token-file).
    #[arg(long, env = "HALE_HEALER_INTAKE_TOKEN_FILE", value_name = "FILE")]
    intake_token_file: Option<PathBuf>,
    /// Key of the X-Hale-Signature on incoming webhooks and on escalations.
    #[arg(long, env = "HALE_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Where failed repairs are escalated (repeatable; signed).
    #[arg(long = "escalation-webhook", value_name = "URL")]
    escalation_webhooks: Vec<String>,
    /// An Alertmanager the escalations are posted to as alerts (repeatable).
    #[arg(long = "escalation-alertmanager", value_name = "URL")]
    escalation_alertmanagers: Vec<String>,
    /// Shadow mode: record what every policy would do, do nothing.
    #[arg(long)]
    dry_run: bool,
    /// etcd endpoints (comma-separated URLs): healers sharing them elect one leader, the
    /// only one that acts, and keep their safety state there.
    #[arg(long, value_delimiter = ',', value_name = "URL")]
    etcd: Vec<String>,
    /// Key prefix in etcd; healers with the same prefix form one group.
    #[arg(long, default_value = "/hale/healer")]
    etcd_prefix: String,
    /// Leader lease TTL: a leader that dies is replaced within about this long.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    etcd_ttl: Duration,
    /// The Kubernetes API for `kubernetes` services (default: $KUBECONFIG, ~/.kube/config,
    /// then the pod's service account).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// TLS to etcd (https:// endpoints): trust this CA for etcd's certificate.
    #[arg(long, env = "HALE_ETCD_CA", value_name = "PEM")]
    etcd_ca: Option<PathBuf>,
    /// The client certificate etcd asks for (`etcd --client-cert-auth`).
    #[arg(long, env = "HALE_ETCD_CERT", requires = "etcd_key", value_name = "PEM")]
    etcd_cert: Option<PathBuf>,
    /// Its private key.
    #[arg(long, env = "HALE_ETCD_KEY", requires = "etcd_cert", value_name = "PEM")]
    etcd_key: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum HealerSub {
    /// What a policy set would have done with recorded alerts (JSON lines: webhook
    /// payloads, alerts, or the healer's audit log).
    Replay {
        #[arg(long)]
        policies: PathBuf,
        alerts: PathBuf,
    },
}

/// etcd's shortest lease.
const MIN_ETCD_TTL: Duration = Duration::from_secs(2);

/// The flags checked, and the cluster file read: what the healer runs with.
impl TryFrom<HealerArgs> for HealerConfig {
    type Error = anyhow::Error;

    fn try_from(args: HealerArgs) -> Result<HealerConfig> {
        let Some(policies) = args.policies else {
            bail!("hale healer needs --policies FILE and --inventory healer.toml (hale up passes both)");
        };
        let token = token_of(args.token.clone(), args.token_file.clone(), "--token")?;
        let intake_token = token_of(
            args.intake_token.clone().filter(|t| !t.is_empty()),
            args.intake_token_file.clone(),
            "--intake-token",
        )?;
        if let (Some(t), Some(i)) = (&token, &intake_token)
            && t.current() == i.current()
        {
            bail!(
                "--intake-token is the same as --token: the token that feeds the healer alerts must not also \
                 approve, pause and reset it; give the intake a token of its own"
            );
        }
        let (inventory, agent_token, admin_token) = match (&args.inventory, &args.cluster) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                let inventory = hale_healer::inventory::Inventory::parse(&text)
                    .with_context(|| format!("{} (the healer's inventory)", path.display()))?;
                let agent = token_of(args.agent_token, args.agent_token_file, "--agent-token")?;
                let admin = token_of(args.admin_token, args.admin_token_file, "--admin-token")?;
                (inventory, agent, admin)
            }
            (None, Some(path)) => {
                let cluster = crate::cluster_file::read(path)?;
                let secrets = &cluster.secrets;
                let (agent, admin) = (secrets.agent_token.clone(), secrets.admin_token.clone());
                let inventory = hale_healer::inventory::Inventory::of_cluster(&cluster);
                let agent = token_of(args.agent_token, args.agent_token_file, "--agent-token")?
                    .unwrap_or_else(|| hale_core::token::Token::fixed(agent));
                let admin = token_of(args.admin_token, args.admin_token_file, "--admin-token")?
                    .unwrap_or_else(|| hale_core::token::Token::fixed(admin));
                (inventory, Some(agent), Some(admin))
            }
            (None, None) => bail!(
                "hale healer needs --inventory healer.toml (the services it acts on; see ARCHITECTURE.md) \
                 or a demo --cluster cluster.toml"
            ),
        };
        if args.webhook_secret.as_deref().is_some_and(str::is_empty) {
            bail!("--webhook-secret (or HALE_WEBHOOK_SECRET) is empty: give it the collector's webhook secret");
        }
        if args.etcd.iter().any(|e| e.starts_with("https://")) && args.etcd_ca.is_none() {
            bail!("--etcd {}: https endpoints need --etcd-ca (the CA of etcd's certificate)", args.etcd.join(","));
        }
        if args.etcd_ttl < MIN_ETCD_TTL {
            bail!("--etcd-ttl must be at least 2s (etcd's shortest lease)");
        }
        Ok(HealerConfig {
            listen: args.listen,
            data_dir: args.data_dir,
            policies,
            inventory,
            agent_token,
            admin_token,
            collector: args.collector,
            token,
            webhook_secret: args.webhook_secret.map(|s| std::sync::Arc::from(s.into_bytes().into_boxed_slice())),
            intake_token,
            escalation_webhooks: args.escalation_webhooks,
            escalation_alertmanagers: args.escalation_alertmanagers,
            dry_run: args.dry_run,
            etcd: args.etcd,
            etcd_prefix: args.etcd_prefix,
            etcd_ttl: args.etcd_ttl,
            etcd_tls: hale_healer::EtcdTls { ca: args.etcd_ca, cert: args.etcd_cert, key: args.etcd_key },
            kubeconfig: args.kubeconfig,
        })
    }
}

/// A token given inline or from a file (not both).
fn token_of(
    inline: Option<String>,
    file: Option<PathBuf>,
    flag: &str,
) -> Result<Option<std::sync::Arc<hale_core::token::Token>>> {
    Ok(match (inline, file) {
        (Some(_), Some(_)) => bail!("give {flag} or {flag}-file, not both"),
        (Some(token), None) => Some(hale_core::token::Token::fixed(token)),
        (None, Some(path)) => Some(hale_core::token::Token::from_file(&path, hale_core::token::DEFAULT_GRACE)?),
        (None, None) => None,
    })
}

/// `hale healer` and `hale healer replay`.
pub async fn run(args: HealerArgs) -> Result<()> {
    if let Some(HealerSub::Replay { policies, alerts }) = &args.sub {
        return replay(policies, alerts);
    }
    // Every repair is traced (they are few, and each one matters).
    let _tracing = crate::logging::to_stderr_traced("info", "hale-healer", &args.listen.to_string(), 1.0);
    let security = args.tls.security()?;
    let config = HealerConfig::try_from(args)?;
    Ok(hale_healer::run(config, security, crate::shutdown::requested()).await?)
}

/// `hale healer replay`: one line per alert, then a summary.
fn replay(policies: &Path, alerts: &Path) -> Result<()> {
    let text = std::fs::read_to_string(policies).with_context(|| format!("reading {}", policies.display()))?;
    let file = hale_healer::policy::PolicyFile::parse(&text).with_context(|| policies.display().to_string())?;
    let recorded = std::fs::read_to_string(alerts).with_context(|| format!("reading {}", alerts.display()))?;
    let decisions = hale_healer::replay::replay(&file, &recorded).with_context(|| alerts.display().to_string())?;
    println!("{:<32}  {:<22}  {:<24}  {:<10}  {:<26}  WHY", "STARTS", "ALERT", "TARGET", "OUTCOME", "POLICY / ACTION");
    let mut counts = std::collections::BTreeMap::new();
    for d in &decisions {
        *counts.entry(d.outcome).or_insert(0) += 1;
        let policy = match (&d.policy, d.action) {
            (Some(p), Some(a)) => format!("{p} / {}", a.as_str()),
            _ => "-".into(),
        };
        println!(
            "{:<32}  {:<22}  {:<24}  {:<10}  {:<26}  {}",
            d.starts_at, d.alertname, d.target, d.outcome, policy, d.reason
        );
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!("{} alerts: {}", decisions.len(), summary.join(", "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        healer: HealerArgs,
    }

    /// A cluster.toml with its secrets, as `hale up` writes it.
    fn cluster_file(dir: &Path) -> PathBuf {
        let mut cluster = hale_core::ClusterConfig::parse(hale_core::DEFAULT_CLUSTER_TOML).expect("config");
        cluster.secrets.generated = false;
        let path = dir.join("cluster.toml");
        std::fs::write(&path, cluster.to_toml()).expect("write");
        path
    }

    fn config(dir: &Path, flags: &[&str]) -> Result<HealerConfig> {
        let cluster = cluster_file(dir).display().to_string();
        let base = ["hale", "--policies", "policies.yaml", "--cluster", &cluster];
        let cli = Cli::try_parse_from(base.iter().chain(flags)).expect("flags parse");
        HealerConfig::try_from(cli.healer)
    }

    #[test]
    fn flags_become_the_healers_config() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = config(dir.path(), &["--token", "w", "--intake-token", "", "--etcd", "http://a:2379,http://b:2379"])
            .expect("config");
        assert_eq!((c.listen.port(), c.collector.as_str()), (9465, "http://127.0.0.1:9464"));
        assert_eq!(
            (c.token.as_ref().map(|t| t.current()), c.intake_token.is_none()),
            (Some("w".to_string()), true),
            "an empty intake token is none"
        );
        assert_eq!(c.etcd, ["http://a:2379", "http://b:2379"]);
        assert_eq!(c.etcd_ttl, Duration::from_secs(3));
        let written = std::fs::read_to_string(dir.path().join("cluster.toml")).expect("cluster.toml");
        let cluster = hale_core::ClusterConfig::parse(&written).expect("config");
        assert_eq!(c.agent_token.map(|t| t.current()), Some(cluster.secrets.agent_token), "the cluster's own secrets");
        assert_eq!(c.inventory.agents.len(), cluster.nodes.len(), "its inventory");
    }

    #[test]
    fn an_inventory_file_replaces_the_cluster_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("healer.toml");
        std::fs::write(
            &path,
            "[[services]]\nname = \"legacy\"\nexecutor = \"exec\"\nrestart = [\"ctl\", \"restart\"]\n",
        )
        .expect("write");
        let flags = ["hale", "--policies", "p.yaml", "--inventory", path.to_str().expect("utf-8")];
        let c = HealerConfig::try_from(Cli::try_parse_from(flags).expect("flags").healer).expect("config");
        assert_eq!(c.inventory.services[0].name, "legacy");
        std::fs::write(&path, "[[services]]\nname = \"legacy\"\nexecutor = \"ssh\"\n").expect("write");
        let e = HealerConfig::try_from(Cli::try_parse_from(flags).expect("flags").healer).map(|_| ()).expect_err("bad");
        assert!(format!("{e:#}").contains("line 3"), "{e:#}");
    }

    /// The tokens the healer sends come from files too, read at each call.
    #[test]
    fn outgoing_tokens_come_from_files_and_follow_them() {
        let dir = tempfile::tempdir().expect("tmp");
        let (agent, admin) = (dir.path().join("agent.token"), dir.path().join("admin.token"));
        std::fs::write(&agent, "agent-from-file\n").expect("write");
        std::fs::write(&admin, "admin-from-file\n").expect("write");
        let path = dir.path().join("healer.toml");
        std::fs::write(&path, "[[services]]\nname = \"legacy\"\nexecutor = \"exec\"\nrestart = [\"ctl\"]\n")
            .expect("write");
        let arg = |p: &Path| p.to_str().expect("utf-8").to_string();
        let flags = [
            "hale".to_string(),
            "--policies".into(),
            "p.yaml".into(),
            "--inventory".into(),
            arg(&path),
            "--agent-token-file".into(),
            arg(&agent),
            "--admin-token-file".into(),
            arg(&admin),
        ];
        let c = HealerConfig::try_from(Cli::try_parse_from(&flags).expect("flags").healer).expect("config");
        let (agent_token, admin_token) = (c.agent_token.expect("agent token"), c.admin_token.expect("admin token"));
        assert_eq!(
            (agent_token.current(), admin_token.current()),
            ("agent-from-file".into(), "admin-from-file".into())
        );
        let both = [&flags[..], &["--agent-token".into(), "inline".into()]].concat();
        let e =
            HealerConfig::try_from(Cli::try_parse_from(&both).expect("flags").healer).map(|_| ()).expect_err("both");
        assert!(e.to_string().contains("not both"), "{e}");
    }

    #[test]
    fn bad_flags_are_refused_with_the_way_on() {
        let dir = tempfile::tempdir().expect("tmp");
        let refused = |flags: &[&str]| config(dir.path(), flags).map(|_| ()).expect_err("refused").to_string();
        assert!(refused(&["--token", "t", "--intake-token", "t"]).contains("a token of its own"));
        assert!(refused(&["--webhook-secret", ""]).contains("is empty"));
        assert!(refused(&["--etcd-ttl", "1s"]).contains("at least 2s"));
        let missing = Cli::try_parse_from(["hale"]).map(|cli| HealerConfig::try_from(cli.healer));
        let message = missing.expect("flags parse").map(|_| ()).expect_err("refused").to_string();
        assert!(message.contains("--policies FILE and --inventory"), "{message}");
    }
}

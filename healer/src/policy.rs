//! `policies.yaml`: which alerts lead to which repair, and the limits every repair keeps.
//! Read with the line of every error (`hale policies check`).
//!
//! ```yaml
//! defaults:
//!   cooldown: 30s          # after an action on a target, wait this long before the next
//!   max_actions: 3         # at most this many actions per target…
//!   window: 10m            # …within this window; each one doubles the cooldown (backoff)
//!   max_service_actions: 10 # at most this many actions on one service within the window
//!   max_service_share: 0.5 # never act on more than this share of a service's replicas at once
//! policies:
//!   - name: restart-hung-replica
//!     match: { alertname: ReplicaDown }
//!     match_re: { service: "search|auth|orders" }
//!     action: restart
//!     verify: { timeout: 30s }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use hale_core::ConfigError;
use serde::{Deserialize, Deserializer};

/// What a policy does to its target: a wire type (actions carry it), so it lives in core.
pub use hale_core::api::ActionKind;

/// A duration written as `30s`, `5m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl serde::Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(Dur)
            .map_err(|_| serde::de::Error::custom(format!("\"{text}\" is not a duration; write 30s, 5m or 1h")))
    }
}

/// A regular expression, anchored as in PromQL, compiled when the file is read.
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        regex::Regex::new(&format!("^(?:{text})$"))
            .map(Pattern)
            .map_err(|e| serde::de::Error::custom(format!("\"{text}\" is not a valid regex: {e}")))
    }
}

/// Limits that apply unless a policy sets its own; what is not written is the default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub cooldown: Dur,
    pub max_actions: u32,
    pub window: Dur,
    /// Across all targets of one service, within `window`: a fault that moves from replica
    /// to replica is not chased forever.
    pub max_service_actions: u32,
    pub max_service_share: f64,
    /// Telemetry of the target older than this means no action (no data is no reason).
    pub max_staleness: Dur,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cooldown: Dur(Duration::from_secs(30)),
            max_actions: 3,
            window: Dur(Duration::from_secs(600)),
            max_service_actions: 10,
            max_service_share: 0.5,
            max_staleness: Dur(Duration::from_secs(15)),
        }
    }
}

/// How a repair is proven.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Verify {
    /// Give up (and escalate) when the condition has not cleared by then.
    pub timeout: Dur,
    /// A PromQL query that returns something while the problem lasts; `{{ $labels.x }}`
    /// is the alert's label. Without it the triggering alert itself is watched.
    pub query: Option<String>,
}

impl Default for Verify {
    fn default() -> Self {
        Verify { timeout: Dur(Duration::from_secs(60)), query: None }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    /// Alert labels that must be equal.
    #[serde(default, rename = "match")]
    pub match_eq: BTreeMap<String, String>,
    /// Alert labels that must match these regexes (anchored).
    #[serde(default)]
    pub match_re: BTreeMap<String, Pattern>,
    pub action: ActionKind,
    /// Action parameters (`command` and `timeout` for exec, `url` for webhook).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    pub cooldown: Option<Dur>,
    pub max_actions: Option<u32>,
    pub window: Option<Dur>,
    pub max_service_actions: Option<u32>,
    pub max_service_share: Option<f64>,
    #[serde(default)]
    pub verify: Verify,
    /// Record what would be done, do nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Wait for a human to approve through the API; expire after `approval_timeout`.
    #[serde(default)]
    pub approval: bool,
    #[serde(default = "default_approval_timeout")]
    pub approval_timeout: Dur,
    /// Error-budget gate: act only while this SLO burns its budget at least this fast.
    pub require_burn: Option<BurnGate>,
}

/// "Act only while the SLO burns fast": a burn rate over one of Sloth's windows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurnGate {
    /// The SLO's name (`sloth_slo`), e.g. `checkout-availability`.
    pub slo: String,
    /// One of 5m, 30m, 1h, 2h, 6h, 1d, 3d, 30d.
    pub window: String,
    /// The burn rate must be above this (14.4: the fast-burn page).
    pub above: f64,
}

fn default_approval_timeout() -> Dur {
    Dur(Duration::from_secs(900))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    pub defaults: Limits,
    pub policies: Vec<Policy>,
}

/// The limits one policy runs under: its own, else the file's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    pub cooldown: Duration,
    pub max_actions: u32,
    pub window: Duration,
    pub max_service_actions: u32,
    pub max_service_share: f64,
    pub max_staleness: Duration,
}

impl PolicyFile {
    pub fn parse(source: &str) -> Result<PolicyFile, ConfigError> {
        let file: PolicyFile = serde_norway::from_str(source).map_err(|e| {
            let message = e.to_string();
            let message = message.rfind(" at line ").map_or(message.clone(), |i| message[..i].to_string());
            ConfigError { line: e.location().map(|l| refine_line(source, l.line(), &message)), message }
        })?;
        file.check(source)?;
        Ok(file)
    }

    fn check(&self, source: &str) -> Result<(), ConfigError> {
        let line_of = |needle: &str| source.lines().position(|l| l.contains(needle)).map(|i| i + 1);
        if !(self.defaults.max_service_share > 0.0 && self.defaults.max_service_share <= 1.0) {
            return Err(ConfigError {
                line: line_of("max_service_share"),
                message: "max_service_share must be above 0 and at most 1".into(),
            });
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.policies {
            let at = line_of(&format!("name: {}", p.name)).or_else(|| line_of(&p.name));
            let fail =
                |message: String| Err(ConfigError { line: at, message: format!("policy {:?}: {message}", p.name) });
            if p.name.trim().is_empty() {
                return fail("a policy needs a name".into());
            }
            if !names.insert(p.name.as_str()) {
                return fail("defined twice; policy names must be unique".into());
            }
            if p.match_eq.is_empty() && p.match_re.is_empty() {
                return fail("needs `match` or `match_re`: a policy for every alert is never what is meant".into());
            }
            if p.max_service_share.is_some_and(|s| !(s > 0.0 && s <= 1.0)) {
                return fail("max_service_share must be above 0 and at most 1".into());
            }
            match p.action {
                ActionKind::Exec if !p.params.contains_key("command") => {
                    return fail("an exec action needs params.command (run without a shell)".into());
                }
                ActionKind::Webhook
                    if !p.params.get("url").is_some_and(|u| u.starts_with("http://") || u.starts_with("https://")) =>
                {
                    return fail("a webhook action needs params.url (http:// or https://)".into());
                }
                // What the others need of their service's executor is checked against the
                // inventory (`executor::check_policies`).
                ActionKind::Exec
                | ActionKind::Webhook
                | ActionKind::Restart
                | ActionKind::Failover
                | ActionKind::Rejoin
                | ActionKind::Reschedule
                | ActionKind::ScaleOut
                | ActionKind::ScaleIn => {}
            }
            if let Some(g) = &p.require_burn
                && !["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"].contains(&g.window.as_str())
            {
                return fail(format!(
                    "require_burn.window {:?}: use one of 5m, 30m, 1h, 2h, 6h, 1d, 3d, 30d",
                    g.window
                ));
            }
            if let Some(q) = &p.verify.query
                && let Some(bad) = unknown_placeholder(q)
            {
                return fail(format!("verify.query: {bad:?} is not a placeholder; write {{{{ $labels.<name> }}}}"));
            }
        }
        Ok(())
    }

    /// The first policy whose matchers all hold for `labels`.
    pub fn matching(&self, labels: &BTreeMap<String, String>) -> Option<&Policy> {
        self.policies.iter().find(|p| {
            p.match_eq.iter().all(|(k, v)| labels.get(k) == Some(v))
                && p.match_re.iter().all(|(k, re)| re.0.is_match(labels.get(k).map_or("", String::as_str)))
        })
    }

    pub fn effective(&self, p: &Policy) -> Effective {
        let d = &self.defaults;
        Effective {
            cooldown: p.cooldown.unwrap_or(d.cooldown).0,
            max_actions: p.max_actions.unwrap_or(d.max_actions),
            window: p.window.unwrap_or(d.window).0,
            max_service_actions: p.max_service_actions.unwrap_or(d.max_service_actions),
            max_service_share: p.max_service_share.unwrap_or(d.max_service_share),
            max_staleness: d.max_staleness.0,
        }
    }
}

/// `{{ $labels.x }}` placeholders are the only template the healer fills in.
fn unknown_placeholder(text: &str) -> Option<String> {
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = after.find("}}")?;
        let inner = after[..close].trim();
        if inner
            .strip_prefix("$labels.")
            .is_none_or(|n| n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return Some(inner.to_string());
        }
        rest = &after[close + 2..];
    }
    None
}

/// Fills `{{ $labels.x }}` from an alert's labels (a missing label is empty).
pub fn fill(text: &str, labels: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        let name = after[..close].trim().trim_start_matches("$labels.");
        out.push_str(labels.get(name).map_or("", String::as_str));
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

/// serde_norway puts an error in a scalar at its mapping; the quoted offending text finds
/// the field's own line.
fn refine_line(source: &str, line: usize, message: &str) -> usize {
    let Some(start) = message.find('"') else { return line };
    let Some(end) = message[start + 1..].find('"') else { return line };
    let text = &message[start + 1..start + 1 + end];
    if text.is_empty() {
        return line;
    }
    source.lines().enumerate().skip(line.saturating_sub(1)).find(|(_, l)| l.contains(text)).map_or(line, |(i, _)| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"defaults:
  cooldown: 20s
  max_actions: 3
  window: 10m
policies:
  - name: restart-hung-replica
    match: { alertname: ReplicaDown }
    match_re: { service: "search|auth" }
    action: restart
    verify:
      timeout: 30s
  - name: page-humans
    match:
      severity: page
    action: webhook
    params:
      url: http://127.0.0.1:9999/escalate
    dry_run: true
"#;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn reads_matches_and_merges_limits() {
        let f = PolicyFile::parse(GOOD).expect("parse");
        let hung = labels(&[("alertname", "ReplicaDown"), ("service", "search"), ("instance", "search-1")]);
        assert_eq!(f.matching(&hung).map(|p| p.name.as_str()), Some("restart-hung-replica"));
        let other = labels(&[("alertname", "ReplicaDown"), ("service", "searches"), ("severity", "page")]);
        assert_eq!(f.matching(&other).map(|p| p.name.as_str()), Some("page-humans"), "regexes are anchored");
        assert!(f.matching(&labels(&[("alertname", "X")])).is_none());
        let e = f.effective(&f.policies[0]);
        assert_eq!((e.cooldown, e.max_actions, e.max_service_share), (Duration::from_secs(20), 3, 0.5));
        assert_eq!(f.policies[0].verify.timeout, Dur(Duration::from_secs(30)));
        assert!(f.policies[1].dry_run);
    }

    #[test]
    fn what_is_not_written_is_the_default() {
        let f = PolicyFile::parse(&GOOD.replace("  max_actions: 3\n", "")).expect("parse");
        let d = &f.defaults;
        assert_eq!(
            (d.cooldown, d.max_actions, d.window),
            (Dur(Duration::from_secs(20)), 3, Dur(Duration::from_secs(600)))
        );
        assert_eq!((d.max_service_actions, d.max_service_share), (10, 0.5));
        assert_eq!(d.max_staleness, Dur(Duration::from_secs(15)));
        let page = &f.policies[1];
        assert_eq!((page.verify.timeout, page.verify.query.as_deref()), (Dur(Duration::from_secs(60)), None));
        assert_eq!(page.approval_timeout, Dur(Duration::from_secs(900)));
        let bare = PolicyFile::parse("policies: []").expect("no defaults block");
        assert_eq!(bare.defaults.cooldown, Dur(Duration::from_secs(30)));
        let e = PolicyFile::parse("defaults:\n  colldown: 1s\npolicies: []").expect_err("a typo in defaults");
        assert!(e.message.contains("unknown field `colldown`"), "{e}");
    }

    #[test]
    fn errors_carry_lines() {
        let cases: &[(&str, &str, usize, &str)] = &[
            ("action: restart", "action: reboot", 9, "unknown variant `reboot`"),
            ("timeout: 30s", "timeout: soon", 11, "not a duration"),
            ("match_re: { service: \"search|auth\" }", "match_re: { service: \"search(\" }", 8, "not a valid regex"),
            ("    dry_run: true", "    dry_run: true\n    colour: red", 19, "unknown field `colour`"),
            ("      url: http://127.0.0.1:9999/escalate", "      uri: http://x", 12, "params.url"),
            ("    match:\n      severity: page\n", "", 12, "needs `match`"),
        ];
        for (from, to, line, message) in cases {
            let e = PolicyFile::parse(&GOOD.replacen(from, to, 1)).expect_err(message);
            assert_eq!(e.line, Some(*line), "{message}: {e}");
            assert!(e.message.contains(message), "{message}: {e}");
        }
    }

    #[test]
    fn fills_label_placeholders() {
        let l = labels(&[("instance", "search-1")]);
        assert_eq!(
            fill("probe_success{instance=\"{{ $labels.instance }}\"} == 0", &l),
            "probe_success{instance=\"search-1\"} == 0"
        );
        assert_eq!(fill("{{ $labels.none }}x", &l), "x");
        assert_eq!(unknown_placeholder("{{ $value }}"), Some("$value".into()));
        assert_eq!(unknown_placeholder("a {{ $labels.instance }}"), None);
    }
}

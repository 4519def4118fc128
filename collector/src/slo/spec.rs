//! Sloth's `prometheus/v1` SLO spec, read with the line of every error (`hale slo check`).
//! A file may hold several specs as YAML documents separated by `---`, as Sloth allows.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::rules::file::{LabelName, MetricName, line_from};
use hale_core::ConfigError;

/// One spec: a service and its SLOs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub version: String,
    pub service: String,
    #[serde(default)]
    pub labels: BTreeMap<LabelName, String>,
    /// Sloth's SLO plugin chain (Go code): read only to be refused with a clear message.
    #[serde(default)]
    pub slo_plugins: Option<serde_norway::Value>,
    pub slos: Vec<Slo>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    pub name: String,
    /// Percent, e.g. 99.9.
    pub objective: f64,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub labels: BTreeMap<LabelName, String>,
    pub sli: Sli,
    pub alerting: Alerting,
    /// One SLO's plugin chain (Go code): refused, as `slo_plugins`.
    #[serde(default)]
    pub plugins: Option<serde_norway::Value>,
}

/// Exactly one of its fields, checked after parsing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sli {
    pub events: Option<Events>,
    pub raw: Option<Raw>,
    /// Sloth's plugins are Go code; they cannot run here.
    pub plugin: Option<serde_norway::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Events {
    pub error_query: String,
    pub total_query: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    pub error_ratio_query: String,
}

/// Every field may be left out.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Alerting {
    pub name: Option<MetricName>,
    pub labels: BTreeMap<LabelName, String>,
    pub annotations: BTreeMap<LabelName, String>,
    pub page_alert: AlertTier,
    pub ticket_alert: AlertTier,
}

/// Every field may be left out.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertTier {
    pub disable: bool,
    pub labels: BTreeMap<LabelName, String>,
    pub annotations: BTreeMap<LabelName, String>,
}

/// The placeholder Sloth replaces with each window.
pub const WINDOW: &str = "{{.window}}";

/// Reads every spec of a file and checks it, the spec alone: [`super::parse`] also checks
/// the rules each spec becomes.
pub fn parse(source: &str) -> Result<Vec<Spec>, ConfigError> {
    Ok(documents(source)?.into_iter().map(|(_, spec)| spec).collect())
}

/// Every spec of a file, checked, with the line its YAML document starts on.
pub fn documents(source: &str) -> Result<Vec<(usize, Spec)>, ConfigError> {
    let mut specs = Vec::new();
    // Line of the first line of each document, for errors found after parsing.
    // A `---` before any content opens the first document rather than separating two.
    let first_content = source.lines().position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let starts: Vec<usize> = std::iter::once(1)
        .chain(
            source
                .lines()
                .enumerate()
                .filter(|(i, l)| l.trim_end() == "---" && Some(*i) != first_content)
                .map(|(i, _)| i + 2),
        )
        .collect();
    for (n, doc) in serde_norway::Deserializer::from_str(source).enumerate() {
        let spec = Spec::deserialize(doc).map_err(|e| crate::rules::file::yaml_error(&e))?;
        let base = starts.get(n).copied().unwrap_or(1);
        spec.check(source, base)?;
        specs.push((base, spec));
    }
    if specs.is_empty() {
        return Err(ConfigError::new("no SLO spec in the file"));
    }
    let mut ids = std::collections::HashSet::new();
    for (_, spec) in &specs {
        for slo in &spec.slos {
            if !ids.insert(format!("{}-{}", spec.service, slo.name)) {
                return Err(ConfigError::new(format!("service {:?} defines SLO {:?} twice", spec.service, slo.name)));
            }
        }
    }
    Ok(specs)
}

/// Why a spec with Sloth's SLO plugins is refused (`KEY` names the field).
const PLUGINS_REFUSED: &str = "KEY: Sloth's SLO plugins are Go code and cannot run here; remove the field (the rules are generated in Sloth's default layout, which is what the default plugin chain makes)";

/// Sloth's names: letters, digits, `-` and `_`.
fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Spec {
    fn check(&self, source: &str, base: usize) -> Result<(), ConfigError> {
        // The line of `key: value` (value may be empty) from the document's start on.
        let fail = |needle: &str, message: String| {
            Err(ConfigError { line: line_from(source, base, |l| l.contains(needle)), message })
        };
        if self.version != "prometheus/v1" {
            return fail("version", format!("version {:?}: only Sloth's \"prometheus/v1\" is read", self.version));
        }
        if !valid_id(&self.service) {
            return fail("service", format!("service {:?}: use letters, digits, - and _", self.service));
        }
        if self.slos.is_empty() {
            return fail("slos", "a spec needs at least one SLO under `slos`".into());
        }
        if self.slo_plugins.is_some() {
            return fail("slo_plugins", PLUGINS_REFUSED.replace("KEY", "slo_plugins"));
        }
        for slo in &self.slos {
            // The SLO's own line, then a key's line from there on.
            let slo_line = line_from(source, base, |l| l.contains("name:") && l.contains(slo.name.as_str()));
            let key_line = |key: &str| line_from(source, slo_line?, |l| l.contains(key)).or(slo_line);
            let fail_at = |key: &str, message: String| {
                Err(ConfigError { line: key_line(key), message: format!("SLO {:?}: {message}", slo.name) })
            };
            let fail = |message: String| fail_at("name:", message);
            if slo.plugins.is_some() {
                return fail_at("plugins:", PLUGINS_REFUSED.replace("KEY", "plugins"));
            }
            if !valid_id(&slo.name) {
                return fail("the name may use letters, digits, - and _ only".into());
            }
            if !(slo.objective > 0.0 && slo.objective < 100.0) {
                return fail_at(
                    "objective:",
                    format!("objective {} must be a percentage above 0 and below 100", slo.objective),
                );
            }
            let queries: Vec<(&str, &str)> = match (&slo.sli.events, &slo.sli.raw, &slo.sli.plugin) {
                (Some(e), None, None) => vec![("error_query", &e.error_query), ("total_query", &e.total_query)],
                (None, Some(r), None) => vec![("error_ratio_query", &r.error_ratio_query)],
                (None, None, Some(_)) => {
                    return fail_at(
                        "sli:",
                        "sli.plugin: Sloth's plugins are Go code and cannot run here; write sli.events or sli.raw"
                            .into(),
                    );
                }
                _ => return fail_at(
                    "sli:",
                    "the sli needs exactly one of `events` (error_query and total_query) or `raw` (error_ratio_query)"
                        .into(),
                ),
            };
            for (key, query) in queries {
                if !query.contains(WINDOW) {
                    return fail_at(
                        key,
                        format!("sli {key} must use {WINDOW} where the window goes, as in rate(x[{WINDOW}])"),
                    );
                }
                let sample = query.replace(WINDOW, "5m");
                if let Err(e) = crate::query::parse(&sample) {
                    return fail_at(key, format!("sli {key} is not valid PromQL: {e}"));
                }
            }
            let tiers_on = !slo.alerting.page_alert.disable || !slo.alerting.ticket_alert.disable;
            if tiers_on && slo.alerting.name.is_none() {
                return fail_at(
                    "alerting:",
                    "alerting.name is required unless both page_alert and ticket_alert are disabled".into(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const SPEC: &str = r#"version: "prometheus/v1"
service: "orders"
labels:
  owner: "shop"
slos:
  - name: "checkout-availability"
    objective: 99.5
    description: "Checkouts that do not fail."
    sli:
      events:
        error_query: sum(rate(http_server_request_duration_seconds_count{service="orders",http_response_status_code=~"5.."}[{{.window}}]))
        total_query: sum(rate(http_server_request_duration_seconds_count{service="orders"}[{{.window}}]))
    alerting:
      name: CheckoutAvailability
      labels:
        category: availability
      annotations:
        summary: "Checkout is burning its error budget"
      page_alert:
        labels:
          severity: page
      ticket_alert:
        labels:
          severity: ticket
"#;

    #[test]
    fn reads_sloth_specs_one_or_many() {
        let specs = parse(SPEC).expect("parse");
        assert_eq!(specs[0].service, "orders");
        assert_eq!(specs[0].slos[0].objective, 99.5);
        let two = format!("{SPEC}---\n{}", SPEC.replace("service: \"orders\"", "service: \"gateway\""));
        assert_eq!(parse(&two).expect("two").len(), 2);
    }

    #[test]
    fn errors_carry_lines() {
        let cases: &[(&str, &str, Option<usize>, &str)] = &[
            ("objective: 99.5", "objective: 100", Some(7), "objective"),
            ("description:", "colour: red\n    description:", Some(8), "unknown field `colour`"),
            ("[{{.window}}]))\n        total", "[5m]))\n        total", Some(11), "{{.window}}"),
            (
                "sum(rate(http_server_request_duration_seconds_count{service=\"orders\"}",
                "sum(rate(http_server_request_duration_seconds_count{service=\"orders\"",
                Some(12),
                "not valid PromQL",
            ),
            ("version: \"prometheus/v1\"", "version: \"sloth/v2\"", Some(1), "prometheus/v1"),
            ("      name: CheckoutAvailability\n", "", Some(13), "alerting.name"),
            (
                "    sli:\n      events:",
                "    sli:\n      plugin:\n        id: x\n      events:",
                Some(9),
                "exactly one",
            ),
            (
                "slos:\n",
                "slo_plugins:\n  chain:\n    - id: sloth.dev/contrib/validator\nslos:\n",
                Some(5),
                "slo_plugins: Sloth's SLO plugins are Go code",
            ),
            (
                "    alerting:\n",
                "    plugins:\n      chain: []\n    alerting:\n",
                Some(13),
                "plugins: Sloth's SLO plugins are Go code",
            ),
        ];
        for (from, to, line, message) in cases {
            let e = parse(&SPEC.replacen(from, to, 1)).expect_err(message);
            assert_eq!(e.line, *line, "{message}: {e}");
            assert!(e.message.contains(message), "{message}: {e}");
        }
        assert_eq!(parse(&format!("---\n{SPEC}")).expect("leading ---").len(), 1);
        let e = parse(&format!(
            "---\n{SPEC}---\n{}",
            SPEC.replace("objective: 99.5", "objective: -1").replace("orders", "gateway")
        ))
        .expect_err("second after a leading ---");
        assert_eq!(e.line, Some(1 + SPEC.lines().count() + 1 + 7), "{e}");
        let twice = format!("{SPEC}---\n{SPEC}");
        assert!(parse(&twice).expect_err("twice").message.contains("twice"));
        // An error in the second document points into the second document.
        let second =
            format!("{SPEC}---\n{}", SPEC.replace("objective: 99.5", "objective: -1").replace("orders", "gateway"));
        let e = parse(&second).expect_err("second");
        assert_eq!(e.line, Some(SPEC.lines().count() + 1 + 7), "{e}");
    }
}

//! Prometheus rule files (`groups` → `rules` with `record` or `alert`): parsing and
//! validation with the line of every error, as `hale rules check` prints them.
//!
//! Field-level checks (PromQL, durations, label names, templates) run while the YAML is
//! read, so the parser reports the field's own line. Checks across fields (a rule with both
//! `record` and `alert`, `for` on a recording rule) run after it, and find the rule's line
//! by walking the file's block structure; a file in flow style gets the rule's path only.

use std::collections::BTreeMap;
use std::time::Duration;

use hale_core::ConfigError;
use promql_parser::parser::Expr;
use serde::{Deserialize, Deserializer};

use super::template::Template;

/// A rule file: groups of rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    /// How often the group runs; the collector's default when absent.
    pub interval: Option<PromDuration>,
    /// At most this many series or alerts per rule (0: no limit); above it the rule fails.
    #[serde(default)]
    pub limit: usize,
    pub rules: Vec<RuleDef>,
}

/// One rule as written: a recording rule (`record`) or an alerting rule (`alert`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    pub record: Option<MetricName>,
    pub alert: Option<MetricName>,
    pub expr: PromqlExpr,
    #[serde(rename = "for")]
    pub for_: Option<PromDuration>,
    pub keep_firing_for: Option<PromDuration>,
    #[serde(default)]
    pub labels: BTreeMap<LabelName, TemplateText>,
    #[serde(default)]
    pub annotations: BTreeMap<LabelName, TemplateText>,
}

/// Text from the file kept beside what it parses into: the text for messages and the
/// rules API, the parsed form to run. Parsing happens when the file is read, so a file
/// that loads has nothing left to fail on.
#[derive(Debug, Clone)]
pub struct Parsed<T> {
    pub text: String,
    pub parsed: T,
}

/// A PromQL expression.
pub type PromqlExpr = Parsed<Expr>;
/// A label value or annotation: a template.
pub type TemplateText = Parsed<Template>;

/// What a [`Parsed`] field parses its text into, and how it says what is wrong.
pub trait FromText: Sized {
    fn from_text(text: &str) -> Result<Self, String>;
}

impl FromText for Expr {
    fn from_text(text: &str) -> Result<Expr, String> {
        crate::query::parse(text).map_err(|e| format!("expr {text:?} is not valid PromQL: {e}"))
    }
}

impl FromText for Template {
    fn from_text(text: &str) -> Result<Template, String> {
        Template::parse(text).map_err(|e| e.to_string())
    }
}

impl<'de, T: FromText> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = ScalarText::deserialize(d)?.0;
        let parsed = T::from_text(&text).map_err(serde::de::Error::custom)?;
        Ok(Parsed { text, parsed })
    }
}

/// A Prometheus duration (`30s`, `5m`, `1h30m`, `1d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromDuration(pub Duration);

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = ScalarText::deserialize(d)?.0;
        // Prometheus takes `0` and `0s` (no `for`); the PromQL duration parser, made for
        // range selectors, refuses zero.
        let zero = !text.is_empty() && text.chars().all(|c| c == '0' || "smhdwy".contains(c)) && text.starts_with('0');
        if zero {
            return Ok(PromDuration(Duration::ZERO));
        }
        promql_parser::util::parse_duration(&text)
            .map(PromDuration)
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a duration; write 30s, 5m, 1h30m or 1d")))
    }
}

/// A string, a number or a boolean written where a string is meant (`for: 5m` and
/// `severity: 1` both read as text).
struct ScalarText(String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            S(String),
            I(i64),
            F(f64),
            B(bool),
        }
        Ok(ScalarText(match Scalar::deserialize(d)? {
            Scalar::S(s) => s,
            Scalar::I(i) => i.to_string(),
            Scalar::F(f) => f.to_string(),
            Scalar::B(b) => b.to_string(),
        }))
    }
}

/// A valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`), for record and alert names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MetricName(pub String);

impl<'de> Deserialize<'de> for MetricName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if !hale_core::exposition::valid_metric_name(&s) {
            return Err(serde::de::Error::custom(format!(
                "{s:?} is not a valid name: use letters, digits, _ and :, not starting with a digit"
            )));
        }
        Ok(MetricName(s))
    }
}

/// A valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LabelName(pub String);

impl<'de> Deserialize<'de> for LabelName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if !hale_core::exposition::valid_label_name(&s) || s.starts_with("__") {
            return Err(serde::de::Error::custom(format!(
                "{s:?} is not a valid label name here: letters, digits and _, not starting with a digit or __"
            )));
        }
        Ok(LabelName(s))
    }
}

impl RuleFile {
    /// Reads and checks a rule file. `default_interval` is what groups without an
    /// `interval` run at.
    pub fn parse(source: &str) -> Result<RuleFile, ConfigError> {
        let file: RuleFile = serde_norway::from_str(source).map_err(|e| {
            let error = yaml_error(&e);
            ConfigError { line: error.line.map(|l| refine_line(source, l, &error.message)), ..error }
        })?;
        file.check(source)?;
        Ok(file)
    }

    fn check(&self, source: &str) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for (g, group) in self.groups.iter().enumerate() {
            let at = |r: Option<usize>, message: String| ConfigError { line: item_line(source, g, r), message };
            if group.name.trim().is_empty() {
                return Err(at(None, format!("groups[{g}]: a group needs a name")));
            }
            if !names.insert(group.name.as_str()) {
                return Err(at(None, format!("group {:?} is defined twice; group names must be unique", group.name)));
            }
            if group.interval.is_some_and(|i| i.0.is_zero()) {
                return Err(at(None, format!("group {:?}: interval must be more than 0", group.name)));
            }
            for (r, rule) in group.rules.iter().enumerate() {
                let fail = |what: &str| Err(at(Some(r), format!("group {:?}, rule {}: {what}", group.name, r + 1)));
                match (&rule.record, &rule.alert) {
                    (Some(_), Some(_)) => return fail("a rule has `record` or `alert`, not both"),
                    (None, None) => {
                        return fail("a rule needs `record` (a recording rule) or `alert` (an alerting rule)");
                    }
                    (Some(_), None) => {
                        if rule.for_.is_some() || rule.keep_firing_for.is_some() {
                            return fail("`for` and `keep_firing_for` belong to alerting rules only");
                        }
                        if !rule.annotations.is_empty() {
                            return fail("annotations belong to alerting rules only");
                        }
                        if rule.labels.values().any(|v| v.text.contains("{{")) {
                            return fail("labels of a recording rule cannot be templates");
                        }
                    }
                    (None, Some(_)) => {}
                }
                if matches!(
                    rule.expr.parsed.value_type(),
                    promql_parser::parser::value::ValueType::Matrix | promql_parser::parser::value::ValueType::String
                ) {
                    return fail(&format!("expr {:?} must give an instant vector or a scalar", rule.expr.text));
                }
            }
        }
        Ok(())
    }
}

/// A YAML error (of a rule file or an SLO spec) at its line, the message without the
/// " at line L column C" serde_norway ends it with: the line is reported apart.
pub fn yaml_error(e: &serde_norway::Error) -> ConfigError {
    let message = e.to_string();
    let message = message.rfind(" at line ").map_or(message.as_str(), |i| &message[..i]).to_string();
    ConfigError { line: e.location().map(|l| l.line()), message }
}

/// The parser places an error in a scalar at the start of the mapping that holds it (the
/// rule's first line); the messages of this module quote the offending text, so the line
/// that holds that text, from there on, is the field's own.
fn refine_line(source: &str, line: usize, message: &str) -> usize {
    let Some(start) = message.find('"') else { return line };
    let mut de = serde_json::Deserializer::from_str(&message[start..]).into_iter::<String>();
    let Some(Ok(text)) = de.next() else { return line };
    let first = text.lines().next().unwrap_or("").trim();
    if first.is_empty() {
        return line;
    }
    line_from(source, line, |l| l.contains(first)).unwrap_or(line)
}

/// The first line from line `from` (1-based) on that `matches`: how the YAML readers find
/// a field's line once serde has forgotten it.
pub fn line_from(source: &str, from: usize, matches: impl Fn(&str) -> bool) -> Option<usize> {
    source.lines().enumerate().skip(from.saturating_sub(1)).find(|(_, l)| matches(l)).map(|(i, _)| i + 1)
}

/// The line of `groups[g]` (`r` None) or of `groups[g].rules[r]`, found by walking the
/// block structure: sequence items (`- `) under the `groups:` and `rules:` keys.
fn item_line(source: &str, g: usize, r: Option<usize>) -> Option<usize> {
    let lines: Vec<&str> = source.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let is_content = |l: &str| !l.trim().is_empty() && !l.trim_start().starts_with('#');
    // Items of the sequence under the key on line `key`, as (line index, item indent).
    let items = |key: usize, end: usize| -> Vec<usize> {
        let key_indent = indent(lines[key]);
        let mut out = Vec::new();
        let mut item_indent = None;
        for (i, l) in lines.iter().enumerate().take(end).skip(key + 1) {
            if !is_content(l) {
                continue;
            }
            let ind = indent(l);
            if ind < key_indent || (ind == key_indent && !l.trim_start().starts_with("- ")) {
                break;
            }
            if l.trim_start().starts_with('-') && item_indent.is_none_or(|x| x == ind) {
                item_indent = Some(ind);
                out.push(i);
            }
        }
        out
    };
    let groups_key = lines.iter().position(|l| indent(l) == 0 && l.trim_end() == "groups:")?;
    let groups = items(groups_key, lines.len());
    let start = *groups.get(g)?;
    let Some(r) = r else { return Some(start + 1) };
    let end = groups.get(g + 1).copied().unwrap_or(lines.len());
    let rules_key = (start..end).find(|i| {
        let t = lines[*i].trim_start().trim_start_matches("- ");
        t.trim_end() == "rules:"
    })?;
    items(rules_key, end).get(r).map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"groups:
  - name: shop
    interval: 5s
    rules:
      - record: job:errors:rate1m
        expr: sum by (job) (rate(errors_total[1m]))
        labels:
          team: shop
      # a comment between rules
      - alert: ReplicaDown
        expr: probe_success == 0
        for: 30s
        keep_firing_for: 1m
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.instance }} is down"
  - name: second
    rules:
      - alert: Always
        expr: vector(1)
"#;

    #[test]
    fn reads_a_good_file() {
        let f = RuleFile::parse(GOOD).expect("parse");
        assert_eq!(f.groups.len(), 2);
        let g = &f.groups[0];
        assert_eq!(g.interval, Some(PromDuration(Duration::from_secs(5))));
        assert_eq!(g.rules[0].record.as_ref().map(|m| m.0.as_str()), Some("job:errors:rate1m"));
        assert_eq!(g.rules[1].for_, Some(PromDuration(Duration::from_secs(30))));
        assert_eq!(g.rules[1].keep_firing_for, Some(PromDuration(Duration::from_secs(60))));
        assert_eq!(g.rules[1].annotations.len(), 1);
        assert_eq!(item_line(GOOD, 0, Some(1)), Some(10));
        assert_eq!(item_line(GOOD, 1, Some(0)), Some(20));
        assert_eq!(item_line(GOOD, 1, None), Some(18));
        // As in Prometheus, `for: 0s` (or `0`) means no pending phase.
        for zero in ["0s", "0", "0m"] {
            let f = RuleFile::parse(&GOOD.replacen("for: 30s", &format!("for: {zero}"), 1)).expect(zero);
            assert_eq!(f.groups[0].rules[1].for_, Some(PromDuration(Duration::ZERO)), "{zero}");
        }
    }

    #[test]
    fn every_error_has_its_line() {
        let cases: &[(&str, &str, usize, &str)] = &[
            ("bad PromQL", "expr: sum(rate(x[1m])", 11, "not valid PromQL"),
            ("bad duration", "for: soon", 12, "not a duration"),
            ("unknown field", "severity: page", 13, "unknown field `severity`"),
            ("bad label name", "labels:\n          9lives: x", 14, "not a valid label name"),
            ("bad template", "annotations:\n          summary: \"{{ $labels.x \"", 14, "not closed"),
        ];
        for (what, replacement, line, message) in cases {
            // Replace the alert's `for: 30s` line (line 12) or insert after its expr.
            let source = if replacement.starts_with("expr") {
                GOOD.replacen("expr: probe_success == 0", replacement, 1)
            } else if replacement.starts_with("for") {
                GOOD.replacen("for: 30s", replacement, 1)
            } else {
                GOOD.replacen("for: 30s", &format!("for: 30s\n        {replacement}"), 1)
            };
            let e = RuleFile::parse(&source).expect_err(what);
            assert_eq!(e.line, Some(*line), "{what}: {e}");
            assert!(e.message.contains(message), "{what}: {e}");
        }
    }

    #[test]
    fn checks_across_fields_point_at_the_rule() {
        let cases: &[(&str, &str, &str, usize)] = &[
            ("both", "- alert: ReplicaDown", "- alert: ReplicaDown\n        record: x", 10),
            ("for on record", "labels:\n          team: shop", "for: 1m", 5),
            ("neither", "- alert: Always", "- labels: {}", 20),
            ("twice", "name: second", "name: shop", 18),
            ("matrix", "expr: vector(1)", "expr: up[5m]", 20),
        ];
        for (what, from, to, line) in cases {
            let e = RuleFile::parse(&GOOD.replacen(from, to, 1)).expect_err(what);
            assert_eq!(e.line, Some(*line), "{what}: {e}");
        }
        let both = GOOD.replacen("- alert: ReplicaDown", "- alert: ReplicaDown\n        record: x", 1);
        assert!(RuleFile::parse(&both).expect_err("both").message.contains("not both"));
        let e = RuleFile::parse("groups:\n  - name: a\n    rules: 7\n").expect_err("type");
        assert_eq!(e.line, Some(3), "{e}");
        let e = RuleFile::parse("groups: [\n").expect_err("syntax");
        assert!(e.line.is_some(), "{e}");
    }
}

//! Prometheus relabelling (`relabel_configs`, `metric_relabel_configs`), with Prometheus
//! 2.42's semantics: each rule reads its source labels joined by `separator`, matches
//! them against its regex anchored at both ends, and acts. Setting a label to the empty
//! string removes it. A test runs the real Prometheus over the same rules and targets and
//! compares the labels it ends with.

use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// A label set, in name order.
pub type LabelSet = BTreeMap<String, String>;

/// What a rule does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Sets `target_label` to `replacement` (with the match's groups) if the regex matches.
    #[default]
    Replace,
    /// Keeps the set only if the regex matches.
    Keep,
    /// Drops the set if the regex matches.
    Drop,
    /// Sets `target_label` to the md5 of the source values modulo `modulus`.
    Hashmod,
    /// Copies every label whose name matches to the name `replacement` makes of it.
    Labelmap,
    /// Removes every label whose name matches.
    Labeldrop,
    /// Removes every label whose name does not match.
    Labelkeep,
    /// Sets `target_label` to the source values in lower case.
    Lowercase,
    /// ... in upper case.
    Uppercase,
    /// Keeps the set only if the source values equal `target_label`'s value.
    Keepequal,
    /// Drops the set if they do.
    Dropequal,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

// Defaults are left out when written (as people write them, and as Prometheus wants for
// the actions that take no regex or replacement).
fn is_default_separator(s: &str) -> bool {
    s == ";"
}

fn is_default_regex(s: &str) -> bool {
    s == "(.*)"
}

fn is_default_replacement(s: &str) -> bool {
    s == "$1"
}

fn default_separator() -> String {
    ";".into()
}

fn default_regex() -> String {
    "(.*)".into()
}

fn default_replacement() -> String {
    "$1".into()
}

/// One rule as a config file writes it (Prometheus's field names and defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_labels: Vec<String>,
    #[serde(default = "default_separator", skip_serializing_if = "is_default_separator")]
    pub separator: String,
    #[serde(default = "default_regex", skip_serializing_if = "is_default_regex")]
    pub regex: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub modulus: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target_label: String,
    #[serde(default = "default_replacement", skip_serializing_if = "is_default_replacement")]
    pub replacement: String,
    #[serde(default)]
    pub action: Action,
}

/// A rule checked and compiled.
#[derive(Debug, Clone)]
pub struct Rule {
    config: RelabelConfig,
    regex: Regex,
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A `target_label` of a `replace` rule: a label name, possibly made of `$1`/`${name}`.
fn valid_target_template(name: &str) -> bool {
    let plain = Regex::new(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$").expect("a valid pattern");
    plain.is_match(name)
}

impl RelabelConfig {
    /// Checks the rule as Prometheus does when it loads a config, and compiles it.
    pub fn compile(&self) -> Result<Rule, String> {
        let regex = Regex::new(&format!("^(?:{})$", self.regex))
            .map_err(|e| format!("relabel regex {:?} does not compile: {e}", self.regex))?;
        let action = self.action;
        let needs_target = matches!(
            action,
            Action::Replace
                | Action::Hashmod
                | Action::Lowercase
                | Action::Uppercase
                | Action::Keepequal
                | Action::Dropequal
        );
        if needs_target && self.target_label.is_empty() {
            return Err(format!("relabel action {action:?} needs a target_label"));
        }
        if action == Action::Replace && !valid_target_template(&self.target_label) {
            return Err(format!("{:?} is not a valid target_label", self.target_label));
        }
        if matches!(action, Action::Lowercase | Action::Uppercase | Action::Hashmod)
            && !valid_label_name(&self.target_label)
        {
            return Err(format!("{:?} is not a valid label name for target_label", self.target_label));
        }
        if action == Action::Hashmod && self.modulus == 0 {
            return Err("relabel action hashmod needs a modulus above 0".into());
        }
        if matches!(action, Action::Labeldrop | Action::Labelkeep)
            && (!self.source_labels.is_empty()
                || !self.target_label.is_empty()
                || self.modulus != 0
                || self.separator != default_separator()
                || self.replacement != default_replacement())
        {
            return Err(format!("relabel action {action:?} takes only a regex"));
        }
        if matches!(action, Action::Keepequal | Action::Dropequal)
            && (self.regex != default_regex() || self.modulus != 0 || self.replacement != default_replacement())
        {
            return Err(format!("relabel action {action:?} takes source_labels and target_label only"));
        }
        if action == Action::Labelmap && !valid_target_template(&self.replacement) {
            return Err(format!("{:?} is not a valid labelmap replacement", self.replacement));
        }
        for label in &self.source_labels {
            if !valid_label_name(label) {
                return Err(format!("{label:?} is not a valid source label name"));
            }
        }
        Ok(Rule { config: self.clone(), regex })
    }
}

/// Sets `name` to `value`; the empty string removes it (as Prometheus's builder does).
fn set(labels: &mut LabelSet, name: &str, value: String) {
    if value.is_empty() {
        labels.remove(name);
    } else {
        labels.insert(name.to_string(), value);
    }
}

/// The group-expanded `template` for a match of `regex` on all of `text`.
fn expand(regex: &Regex, template: &str, text: &str) -> Option<String> {
    let captures = regex.captures(text)?;
    let mut out = String::new();
    captures.expand(template, &mut out);
    Some(out)
}

/// The md5 of `value`, its last 8 bytes as a big-endian number, modulo `modulus`.
fn hashmod(value: &str, modulus: u64) -> u64 {
    use md5::Digest;
    let sum = md5::Md5::digest(value.as_bytes());
    let mut last = [0u8; 8];
    last.copy_from_slice(&sum[8..16]);
    u64::from_be_bytes(last) % modulus
}

impl Rule {
    /// Applies the rule; `false` when the set is dropped.
    pub fn apply(&self, labels: &mut LabelSet) -> bool {
        let c = &self.config;
        let source = || {
            c.source_labels
                .iter()
                .map(|name| labels.get(name).map_or("", String::as_str))
                .collect::<Vec<_>>()
                .join(&c.separator)
        };
        match c.action {
            Action::Keep => return self.regex.is_match(&source()),
            Action::Drop => return !self.regex.is_match(&source()),
            Action::Keepequal => return labels.get(&c.target_label).map_or("", String::as_str) == source(),
            Action::Dropequal => return labels.get(&c.target_label).map_or("", String::as_str) != source(),
            Action::Replace => {
                let value = source();
                if let Some(target) = expand(&self.regex, &c.target_label, &value) {
                    if !valid_label_name(&target) {
                        return true;
                    }
                    let replaced = expand(&self.regex, &c.replacement, &value).unwrap_or_default();
                    set(labels, &target, replaced);
                }
            }
            Action::Lowercase => {
                let value = source().to_lowercase();
                set(labels, &c.target_label, value);
            }
            Action::Uppercase => {
                let value = source().to_uppercase();
                set(labels, &c.target_label, value);
            }
            Action::Hashmod => {
                let value = hashmod(&source(), c.modulus).to_string();
                set(labels, &c.target_label, value);
            }
            Action::Labelmap => {
                let before: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                for (name, value) in before {
                    if let Some(new) = expand(&self.regex, &c.replacement, &name) {
                        set(labels, &new, value);
                    }
                }
            }
            Action::Labeldrop => labels.retain(|name, _| !self.regex.is_match(name)),
            Action::Labelkeep => labels.retain(|name, _| self.regex.is_match(name)),
        }
        true
    }
}

/// Applies `rules` in order; `None` when one drops the set.
pub fn apply(rules: &[Rule], mut labels: LabelSet) -> Option<LabelSet> {
    for rule in rules {
        if !rule.apply(&mut labels) {
            return None;
        }
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml: &str) -> Rule {
        toml::from_str::<RelabelConfig>(toml).expect("parses").compile().expect("valid")
    }

    fn set_of(pairs: &[(&str, &str)]) -> LabelSet {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn replace_uses_groups_and_anchors_and_empty_removes() {
        let r = rule(
            r#"source_labels = ["__address__"]
regex = "(.*):(\\d+)"
target_label = "port"
replacement = "p$2""#,
        );
        let mut l = set_of(&[("__address__", "10.0.0.1:9100")]);
        assert!(r.apply(&mut l));
        assert_eq!(l["port"], "p9100");
        // Anchored: "x10.0.0.1:9100y" does not match `(.*):(\d+)` at its end.
        let mut l = set_of(&[("__address__", "host:9100x")]);
        r.apply(&mut l);
        assert!(!l.contains_key("port"));
        let empty = rule("source_labels = [\"missing\"]\ntarget_label = \"job\"");
        let mut l = set_of(&[("job", "node")]);
        empty.apply(&mut l);
        assert!(!l.contains_key("job"), "set to the empty string: removed");
    }

    #[test]
    fn keep_drop_and_the_label_actions() {
        let keep = rule("source_labels = [\"env\"]\nregex = \"prod|stage\"\naction = \"keep\"");
        assert!(apply(std::slice::from_ref(&keep), set_of(&[("env", "prod")])).is_some());
        assert!(apply(std::slice::from_ref(&keep), set_of(&[("env", "production")])).is_none());
        let map = rule("regex = \"__meta_(.+)\"\naction = \"labelmap\"");
        let l = apply(&[map], set_of(&[("__meta_zone", "a"), ("x", "1")])).expect("kept");
        assert_eq!(l["zone"], "a");
        let drop = rule("regex = \"__meta_.*\"\naction = \"labeldrop\"");
        assert_eq!(apply(&[drop], set_of(&[("__meta_zone", "a"), ("x", "1")])), Some(set_of(&[("x", "1")])));
        let keep = rule("regex = \"x|y\"\naction = \"labelkeep\"");
        assert_eq!(apply(&[keep], set_of(&[("z", "a"), ("x", "1")])), Some(set_of(&[("x", "1")])));
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        for (toml, says) in [
            ("regex = \"(\"", "does not compile"),
            ("action = \"replace\"", "needs a target_label"),
            ("action = \"hashmod\"\ntarget_label = \"h\"", "modulus"),
            ("action = \"labeldrop\"\nsource_labels = [\"a\"]", "takes only a regex"),
            ("target_label = \"1bad\"", "not a valid target_label"),
        ] {
            let err = toml::from_str::<RelabelConfig>(toml).expect("parses").compile().expect_err(toml);
            assert!(err.contains(says), "{toml}: {err}");
        }
    }
}

//! Alert label and annotation templates: the part of Go's text/template that Prometheus
//! rule files use in practice.
//!
//! An action is a pipeline: an operand (`$value`, `$labels.name`, `.Value`,
//! `.Labels.name`, `$externalLabels.name`, a quoted string or a number), or a function
//! applied to arguments, followed by `| function` stages. Functions: `humanize`,
//! `humanize1024`, `humanizePercentage`, `humanizeDuration`, `toUpper`, `toLower`,
//! `title`, `printf`. `{{-` and `-}}` trim whitespace as in Go. Anything else (`if`,
//! `range`, queries from templates) is refused when the file is loaded, with the rule's
//! line, rather than rendering something surprising when the alert fires.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("template {text:?}: {message}")]
pub struct TemplateError {
    pub text: String,
    pub message: String,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Action(Vec<Call>),
}

/// One pipeline stage: a function and its arguments, or (`func` empty) one operand.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    func: String,
    args: Vec<Operand>,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Value,
    Label(String),
    ExternalLabel(String),
    Str(String),
    Num(f64),
}

const FUNCTIONS: &[&str] =
    &["humanize", "humanize1024", "humanizePercentage", "humanizeDuration", "toUpper", "toLower", "title", "printf"];

/// What a template sees when it renders.
pub struct Data<'a> {
    pub labels: &'a BTreeMap<String, String>,
    pub external_labels: &'a BTreeMap<String, String>,
    pub value: f64,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let err = |message: String| TemplateError { text: text.to_string(), message };
        let mut parts = Vec::new();
        let mut rest = text;
        let mut trim_next = false;
        while let Some(open) = rest.find("{{") {
            let mut literal = &rest[..open];
            if trim_next {
                literal = literal.trim_start();
            }
            let after = &rest[open + 2..];
            let trim_left = after.starts_with('-') && after[1..].starts_with(char::is_whitespace);
            if trim_left {
                literal = literal.trim_end();
            }
            if !literal.is_empty() {
                parts.push(Part::Text(literal.to_string()));
            }
            let close = after.find("}}").ok_or_else(|| err("an action is not closed with }}".into()))?;
            let mut inner = &after[..close];
            if inner.trim_start_matches('-').trim().starts_with("/*") {
                if !inner.trim_end_matches('-').trim().ends_with("*/") {
                    return Err(err("a comment {{/* */}} is not closed".into()));
                }
                trim_next = inner.ends_with('-') && inner[..inner.len() - 1].ends_with(char::is_whitespace);
                rest = &after[close + 2..];
                continue;
            }
            if trim_left {
                inner = &inner[1..];
            }
            trim_next = inner.ends_with('-') && inner[..inner.len() - 1].ends_with(char::is_whitespace);
            if trim_next {
                inner = &inner[..inner.len() - 1];
            }
            let stages: Vec<Call> = split_pipeline(inner)
                .map_err(&err)?
                .iter()
                .map(|s| parse_stage(s))
                .collect::<Result<_, _>>()
                .map_err(&err)?;
            if stages.is_empty() {
                return Err(err("an empty action {{ }}".into()));
            }
            if stages.iter().skip(1).any(|s| s.func.is_empty()) {
                return Err(err("every stage after | must be a function".into()));
            }
            parts.push(Part::Action(stages));
            rest = &after[close + 2..];
        }
        let mut literal = rest;
        if trim_next {
            literal = literal.trim_start();
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal.to_string()));
        }
        Ok(Template { parts })
    }

    pub fn render(&self, data: &Data<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Action(stages) => {
                    let mut piped: Option<Val> = None;
                    for stage in stages {
                        let mut args: Vec<Val> = stage.args.iter().map(|a| a.resolve(data)).collect();
                        if let Some(p) = piped.take() {
                            args.push(p);
                        }
                        piped = Some(if stage.func.is_empty() {
                            args.pop().unwrap_or(Val::Str(String::new()))
                        } else {
                            call(&stage.func, &args)
                        });
                    }
                    if let Some(v) = piped {
                        out.push_str(&v.to_string());
                    }
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
enum Val {
    Str(String),
    Num(f64),
}

impl std::fmt::Display for Val {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Val::Str(s) => f.write_str(s),
            Val::Num(n) => f.write_str(&go_float(*n)),
        }
    }
}

impl Val {
    fn num(&self) -> f64 {
        match self {
            Val::Num(n) => *n,
            Val::Str(s) => s.trim().parse().unwrap_or(f64::NAN),
        }
    }
}

impl Operand {
    fn resolve(&self, data: &Data<'_>) -> Val {
        match self {
            Operand::Value => Val::Num(data.value),
            Operand::Label(n) => Val::Str(data.labels.get(n).cloned().unwrap_or_default()),
            Operand::ExternalLabel(n) => Val::Str(data.external_labels.get(n).cloned().unwrap_or_default()),
            Operand::Str(s) => Val::Str(s.clone()),
            Operand::Num(n) => Val::Num(*n),
        }
    }
}

/// Splits an action at `|` outside quotes.
fn split_pipeline(inner: &str) -> Result<Vec<String>, String> {
    let mut stages: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut quote = None;
    let mut escaped = false;
    for c in inner.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
                current.push(c);
            }
            None if c == '|' => stages.push(std::mem::take(&mut current)),
            None => {
                if c == '"' || c == '`' {
                    quote = Some(c);
                }
                current.push(c);
            }
        }
    }
    stages.push(current);
    if quote.is_some() {
        return Err("a string is not closed".into());
    }
    if stages.len() > 1 && stages.iter().any(|s| s.trim().is_empty()) {
        return Err("an empty stage in a pipeline".into());
    }
    Ok(stages.into_iter().filter(|s| !s.trim().is_empty()).collect())
}

/// Splits a stage into words, keeping quoted strings whole.
fn words(stage: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = stage.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' || c == '`' {
            word.push(c);
            chars.next();
            let mut escaped = false;
            for d in chars.by_ref() {
                word.push(d);
                if escaped {
                    escaped = false;
                } else if d == '\\' && c == '"' {
                    escaped = true;
                } else if d == c {
                    break;
                }
            }
        } else {
            while let Some(&d) = chars.peek() {
                if d.is_whitespace() {
                    break;
                }
                word.push(d);
                chars.next();
            }
        }
        out.push(word);
    }
    Ok(out)
}

fn parse_stage(stage: &str) -> Result<Call, String> {
    let words = words(stage)?;
    let Some(first) = words.first() else { return Err("an empty action".into()) };
    if FUNCTIONS.contains(&first.as_str()) {
        let args = words[1..].iter().map(|w| parse_operand(w)).collect::<Result<_, _>>()?;
        return Ok(Call { func: first.clone(), args });
    }
    if words.len() > 1 {
        return Err(format!(
            "{first:?} is not a function this template language has (it has {})",
            FUNCTIONS.join(", ")
        ));
    }
    Ok(Call { func: String::new(), args: vec![parse_operand(first)?] })
}

fn parse_operand(w: &str) -> Result<Operand, String> {
    if let Some(name) = w.strip_prefix("$labels.").or_else(|| w.strip_prefix(".Labels.")) {
        return valid_name(name).map(|n| Operand::Label(n.to_string()));
    }
    if let Some(name) = w.strip_prefix("$externalLabels.").or_else(|| w.strip_prefix(".ExternalLabels.")) {
        return valid_name(name).map(|n| Operand::ExternalLabel(n.to_string()));
    }
    if w == "$value" || w == ".Value" {
        return Ok(Operand::Value);
    }
    if let Some(s) = w.strip_prefix('`').and_then(|s| s.strip_suffix('`')) {
        return Ok(Operand::Str(s.to_string()));
    }
    if w.starts_with('"') {
        return serde_json::from_str::<String>(w).map(Operand::Str).map_err(|_| format!("{w} is not a valid string"));
    }
    if let Ok(n) = w.parse::<f64>() {
        return Ok(Operand::Num(n));
    }
    Err(format!(
        "{w:?} is not something a template can use here: write $labels.<name>, $value, $externalLabels.<name>, a \"string\" or a function ({})",
        FUNCTIONS.join(", ")
    ))
}

fn valid_name(n: &str) -> Result<&str, String> {
    let mut chars = n.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok { Ok(n) } else { Err(format!("{n:?} is not a valid label name")) }
}

fn call(func: &str, args: &[Val]) -> Val {
    let last = || args.last().cloned().unwrap_or(Val::Str(String::new()));
    match func {
        "humanize" => Val::Str(humanize(
            last().num(),
            1000.0,
            &["", "k", "M", "G", "T", "P", "E", "Z", "Y"],
            &["", "m", "u", "n", "p", "f", "a", "z", "y"],
        )),
        "humanize1024" => {
            Val::Str(humanize(last().num(), 1024.0, &["", "ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"], &[""]))
        }
        "humanizePercentage" => Val::Str(format!("{}%", go_float_sig(last().num() * 100.0, 4))),
        "humanizeDuration" => Val::Str(humanize_duration(last().num())),
        "toUpper" => Val::Str(last().to_string().to_uppercase()),
        "toLower" => Val::Str(last().to_string().to_lowercase()),
        "title" => Val::Str(title(&last().to_string())),
        "printf" => Val::Str(printf(args)),
        _ => last(),
    }
}

/// Go's `%v` of a float64: shortest representation, exponent for very large or small.
fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let abs = v.abs();
    // Go's %v of a float64 is %g at the shortest precision: an exponent below 1e-4 and
    // from 1e6 up (checked against promtool's rendering of `{{ $value }}`).
    if abs != 0.0 && !(1e-4..1e6).contains(&abs) {
        let s = format!("{v:e}");
        return match s.split_once('e') {
            Some((m, e)) => {
                let (sign, digits) = e.strip_prefix('-').map_or(("+", e), |d| ("-", d));
                format!("{m}e{sign}{digits:0>2}")
            }
            None => s,
        };
    }
    format!("{v}")
}

/// `%.{sig}g`-like: `sig` significant digits, trailing zeros dropped.
fn go_float_sig(v: f64, sig: usize) -> String {
    if !v.is_finite() || v == 0.0 {
        return go_float(v);
    }
    let exp = v.abs().log10().floor() as i32;
    let decimals = (sig as i32 - 1 - exp).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

fn humanize(v: f64, base: f64, big: &[&str], small: &[&str]) -> String {
    if v == 0.0 || !v.is_finite() {
        return go_float_sig(v, 4);
    }
    let mut x = v;
    if v.abs() >= 1.0 {
        let mut i = 0;
        while x.abs() >= base && i + 1 < big.len() {
            x /= base;
            i += 1;
        }
        return format!("{}{}", go_float_sig(x, 4), big[i]);
    }
    let mut i = 0;
    while x.abs() < 1.0 && i + 1 < small.len() {
        x *= base;
        i += 1;
    }
    format!("{}{}", go_float_sig(x, 4), small[i])
}

fn humanize_duration(v: f64) -> String {
    if !v.is_finite() {
        return go_float(v);
    }
    if v.abs() < 1.0 {
        return humanize(v, 1000.0, &[""], &["", "m", "u", "n", "p", "f", "a", "z", "y"]) + "s";
    }
    let sign = if v < 0.0 { "-" } else { "" };
    let mut secs = v.abs();
    let days = (secs / 86400.0).floor();
    secs -= days * 86400.0;
    let hours = (secs / 3600.0).floor();
    secs -= hours * 3600.0;
    let minutes = (secs / 60.0).floor();
    secs -= minutes * 60.0;
    let mut out = sign.to_string();
    if days > 0.0 {
        out += &format!("{days}d {hours}h {minutes}m {}s", go_float_sig(secs, 4));
    } else if hours > 0.0 {
        out += &format!("{hours}h {minutes}m {}s", go_float_sig(secs, 4));
    } else if minutes > 0.0 {
        out += &format!("{minutes}m {}s", go_float_sig(secs, 4));
    } else {
        out += &format!("{}s", go_float_sig(secs, 4));
    }
    out
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric();
    }
    out
}

/// Go's printf for the verbs templates use: `%s %v %d %f %.Nf %g %e %q %%`.
fn printf(args: &[Val]) -> String {
    let Some((format, rest)) = args.split_first() else { return String::new() };
    let format = format.to_string();
    let mut rest = rest.iter();
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut precision: Option<usize> = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut digits = String::new();
            while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                digits.push(d);
                chars.next();
            }
            precision = digits.parse().ok();
        }
        let Some(verb) = chars.next() else {
            out.push('%');
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = rest.next() else {
            out += &format!("%!{verb}(MISSING)");
            continue;
        };
        match verb {
            'f' => out += &format!("{:.*}", precision.unwrap_or(6), arg.num()),
            'e' => out += &format!("{:.*e}", precision.unwrap_or(6), arg.num()),
            'd' => out += &format!("{}", arg.num().trunc() as i64),
            'g' => out += &precision.map_or_else(|| go_float(arg.num()), |p| go_float_sig(arg.num(), p.max(1))),
            'q' => out += &serde_json::to_string(&arg.to_string()).unwrap_or_default(),
            _ => out += &arg.to_string(),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str, value: f64) -> String {
        let labels: BTreeMap<String, String> =
            [("instance", "10.0.0.1:80"), ("job", "api")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let external = BTreeMap::from([("cluster".to_string(), "demo".to_string())]);
        Template::parse(text).expect("parse").render(&Data { labels: &labels, external_labels: &external, value })
    }

    #[test]
    fn renders_what_rule_files_write() {
        assert_eq!(render("{{ $labels.instance }} of {{ $labels.job }} is down", 0.0), "10.0.0.1:80 of api is down");
        assert_eq!(render("value {{ $value }}", 0.25), "value 0.25");
        assert_eq!(render("{{ .Labels.job }}={{ .Value }}", 3.0), "api=3");
        assert_eq!(render("{{ $value | humanizePercentage }}", 0.123456), "12.35%");
        assert_eq!(render("{{ humanize $value }}", 1234567.0), "1.235M");
        assert_eq!(render("{{ $value | humanize }}", 0.0012), "1.2m");
        assert_eq!(render("{{ humanize1024 $value }}", 2048.0), "2ki");
        assert_eq!(render("{{ $value | humanizeDuration }}", 3725.0), "1h 2m 5s");
        assert_eq!(render("{{ printf \"%.2f\" $value }}%", 99.123), "99.12%");
        assert_eq!(render("{{ $labels.job | toUpper }} in {{ $externalLabels.cluster }}", 0.0), "API in demo");
        assert_eq!(render("{{ $labels.missing }}|", 0.0), "|");
        assert_eq!(render("a  {{- $labels.job -}}  b", 0.0), "aapib");
        assert_eq!(render("no actions", 0.0), "no actions");
        assert_eq!(render("{{ $value }}", 1e22), "1e+22");
        // As promtool renders them.
        assert_eq!(render("{{ $value }}", 1234567.0), "1.234567e+06");
        assert_eq!(render("{{ $value }}", 123456.0), "123456");
        assert_eq!(render("{{ $value }}", 0.00001), "1e-05");
        assert_eq!(render("{{ printf \"%g\" $value }}", 1234567.0), "1.234567e+06");
        assert_eq!(render("a }} b {{/* a comment */}}c", 0.0), "a }} b c");
        assert_eq!(render("{{ \"a|b\" }}", 0.0), "a|b");
    }

    #[test]
    fn refuses_what_it_cannot_render() {
        for bad in [
            "{{ $labels.job",
            "{{ if $value }}x{{ end }}",
            "{{ query \"up\" }}",
            "{{ }}",
            "{{ $labels.9x }}",
            "{{/* open }}",
            "{{ $value | }}",
            "{{ \"open }}",
        ] {
            let e = Template::parse(bad).expect_err(bad);
            assert!(!e.message.is_empty(), "{bad}");
        }
    }
}

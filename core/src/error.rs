use std::fmt;

/// A configuration file that could not be used, with the line it went wrong on: the one
/// error type of every config Hale reads (cluster.toml, agent.toml, collector.toml, rule
/// and SLO files, healer policies), so each prints `line N: message` the same way.
///
/// Line numbers are 1-based and refer to the file as the user wrote it, so an editor can jump
/// straight to the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// 1-based line of the offending value, when it is known.
    pub line: Option<usize>,
    /// What is wrong and, where possible, what to write instead.
    pub message: String,
}

impl ConfigError {
    /// An error whose line is not known (yet): a validation step may find it later.
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError { line: None, message: message.into() }
    }

    /// An error at the byte range `span` of `source`, as parsers report them.
    pub fn at(source: &str, span: Option<std::ops::Range<usize>>, message: String) -> Self {
        let line = span.map(|s| line_of(source, s.start));
        ConfigError { line, message }
    }

    /// A TOML parse error of `source`, at its line, with the parser's message alone (the
    /// line is reported apart, not repeated in the text).
    pub fn from_toml(source: &str, error: &toml::de::Error) -> Self {
        ConfigError::at(source, error.span(), error.message().trim().to_string())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The 1-based line of a TOML file where `key` is set (`key = …`) or where the table or
/// array of tables `key` starts (`[key]`, `[[key]]`): validation errors name a key, and
/// this finds its line after serde has forgotten spans.
pub fn find_key_line(source: &str, key: &str) -> Option<usize> {
    source
        .lines()
        .position(|l| {
            let t = l.trim_start();
            t.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='))
                || t.starts_with(&format!("[{key}]"))
                || t.starts_with(&format!("[[{key}]]"))
        })
        .map(|i| i + 1)
}

/// 1-based line number of a byte offset.
pub fn line_of(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_of_counts_newlines_before_offset() {
        let src = "a\nbb\nccc";
        assert_eq!(line_of(src, 0), 1);
        assert_eq!(line_of(src, 2), 2);
        assert_eq!(line_of(src, 5), 3);
        assert_eq!(line_of(src, 999), 3);
    }

    #[test]
    fn finds_the_line_of_a_key_or_table() {
        let src = "a = 1\n  retention = \"15d\"\n[notify]\n[[processes]]\nretention_extra = 2\n";
        assert_eq!(find_key_line(src, "retention"), Some(2));
        assert_eq!(find_key_line(src, "notify"), Some(3));
        assert_eq!(find_key_line(src, "processes"), Some(4));
        assert_eq!(find_key_line(src, "missing"), None);
    }

    #[test]
    fn prints_the_line_first() {
        assert_eq!(ConfigError { line: Some(3), message: "bad".into() }.to_string(), "line 3: bad");
        assert_eq!(ConfigError::new("bad").to_string(), "bad");
    }
}

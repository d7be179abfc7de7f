//! The dotenv-style files the settings read (`.env.test`, `.env.local`, `.env.production`, `.env`).
//!
//! The format is deliberately small: `KEY=VALUE` lines, `#` comments, blank lines, an optional
//! `export ` prefix, values optionally in single or double quotes. Anything else is an error
//! that names the file and the line, and the whole file is refused.

use std::path::{Path, PathBuf};

use crate::ConfigError;

/// One `KEY=VALUE` line of an env file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// Reads and parses `path`.
pub fn read(path: &Path) -> Result<Vec<Entry>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Io {
        path: path.to_owned(),
        reason: err.to_string(),
    })?;
    parse(path, &text)
}

/// Parses the text of an env file; `path` only names it in errors.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Entry>, ConfigError> {
    let mut entries: Vec<Entry> = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let fail = |reason: &str| ConfigError::EnvFile {
            path: PathBuf::from(path),
            line,
            reason: reason.to_owned(),
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let body = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let Some((key, value)) = body.split_once('=') else {
            return Err(fail("expected KEY=VALUE"));
        };
        let key = key.trim();
        let valid_key = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err(fail("the key must be letters, digits and underscores"));
        }
        let value = unquote(value.trim()).map_err(fail)?;
        if let Some(previous) = entries.iter().find(|e| e.key == key) {
            return Err(fail(&format!(
                "{key} is already set on line {}",
                previous.line
            )));
        }
        entries.push(Entry {
            key: key.to_owned(),
            value,
            line,
        });
    }
    Ok(entries)
}

fn unquote(value: &str) -> Result<String, &'static str> {
    for quote in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(quote) {
            return match inner.strip_suffix(quote) {
                Some(body) if !body.contains(quote) => Ok(body.to_owned()),
                _ => Err("an unterminated or doubled quote"),
            };
        }
    }
    // An unquoted value may end with a comment: `KEY=value # why`.
    let value = match value.find(" #") {
        Some(idx) => value[..idx].trim_end(),
        None => value,
    };
    if value.contains(['"', '\'']) {
        return Err("a quote inside an unquoted value");
    }
    Ok(value.to_owned())
}

/// Expands `${VAR}` references in `value` with `lookup`. Returns the names that could not be
/// resolved instead of silently writing empty strings.
pub fn expand(value: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(value.len());
    let mut missing = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = &after[..end];
        match lookup(name) {
            Some(v) => out.push_str(&v),
            None => missing.push(name.to_owned()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<(String, String)> {
        parse(Path::new(".env.x"), text)
            .unwrap()
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect()
    }

    fn err(text: &str) -> String {
        parse(Path::new(".env.x"), text).unwrap_err().to_string()
    }

    #[test]
    fn parses_the_small_format() {
        let pairs = ok("# c\n\nA=1\nexport B = two words \nC=\"x # y\"\nD='q'\nE=v # note\nF=\n");
        let expected = [
            ("A", "1"),
            ("B", "two words"),
            ("C", "x # y"),
            ("D", "q"),
            ("E", "v"),
            ("F", ""),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(pairs, expected);
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        assert_eq!(err("A=1\nnot a pair\n"), ".env.x:2: expected KEY=VALUE");
        assert_eq!(
            err("A=1\n\n1A=2"),
            ".env.x:3: the key must be letters, digits and underscores"
        );
        assert_eq!(
            err("A=\"open"),
            ".env.x:1: an unterminated or doubled quote"
        );
        assert_eq!(err("A=1\nA=2"), ".env.x:2: A is already set on line 1");
    }

    #[test]
    fn expands_references() {
        let lookup = |k: &str| (k == "P").then(|| "pw".to_owned());
        assert_eq!(
            expand("postgresql://u:${P}@h/db", lookup),
            Ok("postgresql://u:pw@h/db".to_owned())
        );
        assert_eq!(
            expand("${Q}-${R}", lookup),
            Err(vec!["Q".to_owned(), "R".to_owned()])
        );
        assert_eq!(expand("plain", lookup), Ok("plain".to_owned()));
    }
}

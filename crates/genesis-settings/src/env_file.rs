//! The env files the settings and the xtask read (`.env.test`, `.env.local`, `.env.production`,
//! `.env`), read the way Docker Compose reads `.env`.
//!
//! Compose v2 (compose-go's `dotenv`) and v1 (python-dotenv) do not agree on every line, and a
//! value they read differently must not be read a third way. So this reader accepts the part of
//! the format on which both agree, reads it as they do, and refuses everything else with the
//! file, the line and why:
//!
//! - `KEY=VALUE`, `KEY = VALUE`, `export KEY=VALUE`; keys are letters, digits and `_`; blank
//!   lines and `#` comments; a UTF-8 byte-order mark; CRLF line ends.
//! - single quotes: the text as written, `$` included; refused: `${` (v1 expands it, v2 does
//!   not) and a backslash before `\` or `'` (v1 unescapes them).
//! - double quotes: the escapes `\\`, `\"`, `\n`, `\t`; any other backslash is refused.
//! - unquoted: trimmed, ending at ` #` (a comment); a tab before `#` is refused.
//! - outside single quotes: `${NAME}` and `${NAME:-default}` are expanded (the process
//!   environment first, then the lines above); `$NAME` and `$$` are refused (v2 expands them,
//!   v1 does not), other `${...}` forms are refused; a `$` before anything else is literal.
//! - refused as well: a value continued on the next line, text after a closing quote, a line
//!   without `=`, and a key set twice.
//! - whitespace: v1 trims with Python's `str.strip` (Unicode whitespace and U+001C..U+001F),
//!   v2 with Go's `unicode.IsSpace` at a value's end and a line's start, and with compose-go's
//!   own `isSpace` (space, tab, VT, FF, CR, U+0085, NBSP) around `=`. Each is trimmed where both
//!   trim it; refused: other whitespace around `=` or before a value, U+001C..U+001F at an
//!   edge, whitespace other than a space before `#`, a carriage return that does not end the
//!   line (v1 ends the line there), and U+0085 inside a value.
//!
//! The corpus in `env_file/corpus.env` is compared line by line with `docker compose config`
//! (v2) and `docker-compose config` (v1) by the tests.

use std::path::{Path, PathBuf};

use crate::ConfigError;

/// One `KEY=VALUE` line of an env file. `value` is unquoted and unescaped; the references it
/// holds are kept as `${NAME}` or `${NAME:-default}` (the only `${` a value can hold) until
/// [`expand`] resolves them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// Reads and parses `path`. A path that exists but is not a readable file is an error, never
/// skipped.
pub fn read(path: &Path) -> Result<Vec<Entry>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Io {
        path: path.to_owned(),
        reason: err.to_string(),
    })?;
    parse(path, &text)
}

/// Parses the text of an env file; `path` only names it in errors.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Entry>, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut entries: Vec<Entry> = Vec::new();
    for (idx, raw) in text.split('\n').enumerate() {
        let line = idx + 1;
        let fail = |reason: String| ConfigError::EnvFile {
            path: PathBuf::from(path),
            line,
            reason,
        };
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.contains('\r') {
            return Err(fail(
                "a carriage return inside the line: Compose v1 ends the line there and v2 \
                 does not; save the file with plain (or CRLF) line ends"
                    .into(),
            ));
        }
        let trimmed = raw.trim_start_matches(char::is_whitespace);
        if trimmed.starts_with(python_only_space) {
            return Err(fail(PYTHON_ONLY_SPACE.into()));
        }
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        // v2 takes `export` as a prefix only before a space or a tab.
        let body = match trimmed.strip_prefix("export") {
            Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start_matches([' ', '\t']),
            Some(rest) if rest.starts_with(python_space) => {
                return Err(fail(
                    "export followed by whitespace other than a space or a tab: Compose v1 \
                     reads the key after it and v2 does not"
                        .into(),
                ));
            }
            _ => trimmed,
        };
        let key_end = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        let key = &body[..key_end];
        let after = body[key_end..].trim_start_matches(both_trim);
        if let Some(c) = after.chars().next().filter(|c| python_space(*c)) {
            return Err(fail(format!(
                "{} before the =: Compose v1 reads it as a space and v2 refuses it",
                describe_char(c)
            )));
        }
        let Some(value) = after.strip_prefix('=') else {
            return Err(fail(if key.is_empty() || !after.is_empty() {
                "expected KEY=VALUE, the key made of letters, digits and underscores".into()
            } else {
                "expected KEY=VALUE (Compose v1 and v2 read a bare KEY differently)".into()
            }));
        };
        if key.is_empty() || key.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(fail(
                "the key must be letters, digits and underscores, not starting with a digit".into(),
            ));
        }
        let value = value.trim_start_matches(both_trim);
        if let Some(c) = value.chars().next().filter(|c| python_space(*c)) {
            return Err(fail(format!(
                "{} at the start of the value: Compose v1 removes it and v2 keeps it; quote \
                 the value or remove it",
                describe_char(c)
            )));
        }
        let value = parse_value(value).map_err(fail)?;
        if value.contains('\u{85}') {
            return Err(fail(
                "U+0085 (NEXT LINE) inside the value: Compose v1 reads it as a line break and \
                 v2 as a character; remove it"
                    .into(),
            ));
        }
        if let Some(previous) = entries.iter().find(|e| e.key == key) {
            return Err(fail(format!(
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

fn parse_value(value: &str) -> Result<String, String> {
    if let Some(inner) = value.strip_prefix('\'') {
        let Some(close) = inner.find('\'') else {
            return Err(
                "a single quote is not closed on this line (values on several lines are not \
                 supported)"
                    .into(),
            );
        };
        let body = &inner[..close];
        trailing(&inner[close + 1..])?;
        if body.contains("${") {
            return Err(
                "${ inside single quotes: Compose v1 expands it and v2 keeps it; use double \
                 quotes to expand, or drop the braces"
                    .into(),
            );
        }
        let b = body.as_bytes();
        if b.windows(2)
            .any(|w| w[0] == b'\\' && matches!(w[1], b'\\' | b'\''))
            || body.ends_with('\\')
        {
            return Err(
                "a backslash before \\ or ' inside single quotes: Compose v1 unescapes it and \
                 v2 does not"
                    .into(),
            );
        }
        return Ok(body.to_owned());
    }
    if let Some(inner) = value.strip_prefix('"') {
        let mut out = String::new();
        let mut i = 0;
        while let Some(c) = inner[i..].chars().next() {
            match c {
                '"' => {
                    if inner[..i].ends_with("\\\\") {
                        return Err("\\\\ right before the closing double quote: Compose v1 \
                                    reads \\\" there as an escaped quote and the value goes on"
                            .into());
                    }
                    trailing(&inner[i + 1..])?;
                    return Ok(out);
                }
                '\\' => {
                    let next = inner[i + 1..].chars().next();
                    match next {
                        Some('\\') => out.push('\\'),
                        Some('"') => out.push('"'),
                        Some('n') => out.push('\n'),
                        Some('t') => out.push('\t'),
                        _ => {
                            return Err("a backslash escape inside double quotes that Compose \
                                        v1 and v2 read differently; only \\\\, \\\", \\n \
                                        and \\t are accepted"
                                .into());
                        }
                    }
                    i += 1 + next.map_or(0, char::len_utf8);
                }
                '$' => {
                    let (text, used) = reference(&inner[i..])?;
                    out.push_str(&text);
                    i += used;
                }
                c => {
                    out.push(c);
                    i += c.len_utf8();
                }
            }
        }
        return Err(
            "a double quote is not closed on this line (values on several lines are not \
             supported)"
                .into(),
        );
    }
    // Unquoted: v1 starts a comment at any whitespace before #, v2 only at a space; both
    // then trim the end, v1 with Python's `str.strip` set and v2 with Go's `unicode.IsSpace`.
    let comment = value
        .char_indices()
        .zip(value.chars().skip(1))
        .find(|((_, before), c)| *c == '#' && python_space(*before));
    let value = match comment {
        Some(((_, ' '), _)) | None => match value.find(" #") {
            Some(idx) => &value[..idx],
            None => value,
        },
        Some(((_, before), _)) => {
            return Err(format!(
                "{} before # in an unquoted value: Compose v1 starts a comment there and v2 \
                 does not; quote the value",
                describe_char(before)
            ));
        }
    };
    let value = value.trim_end_matches(char::is_whitespace);
    if value.ends_with(python_only_space) {
        return Err(PYTHON_ONLY_SPACE.into());
    }
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let (text, used) = reference(&rest[at..])?;
        out.push_str(&text);
        rest = &rest[at + used..];
    }
    out.push_str(rest);
    Ok(out)
}

/// After a closing quote: whitespace, or spaces and a comment.
fn trailing(rest: &str) -> Result<(), String> {
    let spaced = rest.trim_start_matches([' ', '\t']);
    if rest.trim_start_matches(char::is_whitespace).is_empty() || spaced.starts_with('#') {
        Ok(())
    } else {
        Err("text after the closing quote: Compose v1 refuses it and v2 drops it".into())
    }
}

/// Trimmed by both flavours around `=`, after `export` and before a value: compose-go's own
/// `isSpace` (v2), all of which are whitespace to Python (v1). Other Unicode spaces there are
/// trimmed by v1 only.
fn both_trim(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{b}' | '\u{c}' | '\u{85}' | '\u{a0}')
}

/// Whitespace to Python's `str.isspace` (v1 trims with it): Go's `unicode.IsSpace`, which is
/// Rust's `char::is_whitespace` (v2 trims with it), and U+001C..U+001F.
fn python_space(c: char) -> bool {
    c.is_whitespace() || python_only_space(c)
}

/// The information separators U+001C..U+001F: whitespace to Python, not to Go.
fn python_only_space(c: char) -> bool {
    ('\u{1c}'..='\u{1f}').contains(&c)
}

const PYTHON_ONLY_SPACE: &str = "a character U+001C..U+001F (an information separator) at \
    the edge of the line or value: Compose v1 trims it as whitespace and v2 keeps it; remove it";

/// A character named by its code point, for errors (never the value around it).
fn describe_char(c: char) -> String {
    match c {
        '\t' => "a tab".into(),
        ' ' => "a space".into(),
        c => format!("whitespace U+{:04X}", u32::from(c)),
    }
}

/// A `$` at the start of `text`, outside single quotes: the text it stands for in a value
/// (`${NAME}` kept as a reference) and how many bytes it used.
fn reference(text: &str) -> Result<(String, usize), String> {
    let after = &text[1..];
    if let Some(inner) = after.strip_prefix('{') {
        let Some(close) = inner.find('}') else {
            return Err("${ without a closing }".into());
        };
        let body = &inner[..close];
        let name_end = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        let name = &body[..name_end];
        let modifier = &body[name_end..];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err("${...} must name a variable: letters, digits and underscores".into());
        }
        if !modifier.is_empty() {
            let Some(default) = modifier.strip_prefix(":-") else {
                // The error quotes nothing of the value: it may be a secret.
                return Err(
                    "a ${NAME...} form other than ${NAME} and ${NAME:-default}, which \
                            alone mean the same to Compose v1 and v2"
                        .into(),
                );
            };
            if default.contains(['$', '{', '\\', '"', '\'']) {
                return Err("the default of a ${NAME:-...} holds $, {, a quote or a \
                            backslash, which Compose v1 and v2 read differently"
                    .into());
            }
        }
        return Ok((format!("${{{body}}}"), 1 + 1 + close + 1));
    }
    match after.chars().next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => Err(
            "$NAME without braces: Compose v2 expands it and v1 keeps it; write ${NAME} to \
             expand, or put the value in single quotes to keep the $"
                .into(),
        ),
        Some('$') => {
            Err("$$: Compose v2 reads it as $ and v1 as $$; put the value in single quotes".into())
        }
        _ => Ok(("$".into(), 1)),
    }
}

/// Expands the `${NAME}` and `${NAME:-default}` references of a parsed value with `lookup`.
/// Returns the names that could not be resolved instead of silently writing empty strings.
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
        let body = &after[..end];
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        match (lookup(name), default) {
            (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => missing.push(name.to_owned()),
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

/// The names a parsed value refers to.
pub fn references(value: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let body = &after[..end];
        names.push(body.split_once(":-").map_or(body, |(n, _)| n));
        rest = &after[end + 1..];
    }
    names
}

/// The names a parsed value refers to with a `:-` default.
fn references_with_default(value: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        if let Some((name, _)) = after[..end].split_once(":-") {
            names.push(name);
        }
        rest = &after[end + 1..];
    }
    names
}

/// A line of an env file with its references resolved as Compose resolves them: each
/// `${NAME}` from the process environment, else from a line above in the same file (else,
/// for the settings' own files, from a file read before).
#[derive(Clone, Debug)]
pub struct Resolved {
    pub key: String,
    pub path: PathBuf,
    pub line: usize,
    /// The value; `Ok(None)` for a production placeholder `KEY=${KEY}` whose variable is unset.
    pub value: Result<Option<String>, ConfigError>,
}

/// Reads `entries` of `path` in order, resolving references against `process`, the lines
/// above, then `before` (values of files read earlier).
pub fn resolve(
    path: &Path,
    entries: Vec<Entry>,
    process: &dyn Fn(&str) -> Option<String>,
    before: &[Resolved],
) -> Vec<Resolved> {
    let lines: Vec<(String, usize)> = entries.iter().map(|e| (e.key.clone(), e.line)).collect();
    let mut out: Vec<Resolved> = Vec::new();
    for entry in entries {
        let origin = crate::Source::File {
            path: path.to_owned(),
            line: entry.line,
        };
        let mut conflict = None;
        for name in references(&entry.value) {
            let above = out.iter().find(|r| r.key == name);
            if let (
                Some(env),
                Some(Resolved {
                    value: Ok(Some(v)),
                    line,
                    ..
                }),
            ) = (process(name), above)
            {
                if &env != v {
                    conflict = Some((name.to_owned(), *line));
                }
            }
        }
        let lookup = |name: &str| {
            process(name).or_else(|| {
                out.iter()
                    .chain(before.iter())
                    .find(|r| r.key == name)
                    .and_then(|r| r.value.as_ref().ok().cloned().flatten())
            })
        };
        let empty_with_default = references_with_default(&entry.value)
            .into_iter()
            .find(|name| lookup(name).is_some_and(|v| v.is_empty()));
        let value = if let Some(name) = empty_with_default {
            Err(ConfigError::EnvFile {
                path: path.to_owned(),
                line: entry.line,
                reason: format!(
                    "{} uses ${{{name}:-...}} while {name} is set but empty: Compose v2 takes \
                     the default and v1 the empty value; unset {name} or give it a value",
                    entry.key
                ),
            })
        } else if let Some((name, line)) = conflict {
            Err(ConfigError::EnvFile {
                path: path.to_owned(),
                line: entry.line,
                reason: format!(
                    "{} refers to ${{{name}}}, set both in the environment and on line {line}: \
                     Compose v2 takes the environment's value and v1 the file's; keep one",
                    entry.key
                ),
            })
        } else {
            match expand(&entry.value, lookup) {
                Ok(v) => Ok(Some(v)),
                // `KEY=${KEY}` (the production file's placeholders) with KEY unset means unset.
                Err(missing)
                    if entry.value == format!("${{{}}}", entry.key)
                        && missing == [entry.key.clone()] =>
                {
                    Ok(None)
                }
                Err(missing) => match lines
                    .iter()
                    .find(|(k, l)| missing.contains(k) && *l > entry.line)
                {
                    Some((name, line)) => Err(ConfigError::EnvFile {
                        path: path.to_owned(),
                        line: entry.line,
                        reason: format!(
                            "{} refers to ${{{name}}}, which is set only below, on line {line}: \
                             Compose reads it as empty here; move that line up",
                            entry.key
                        ),
                    }),
                    None => Err(ConfigError::Unresolved {
                        var: entry.key.clone(),
                        origin,
                        missing: missing.join(", "),
                    }),
                },
            }
        };
        out.push(Resolved {
            key: entry.key,
            path: path.to_owned(),
            line: entry.line,
            value,
        });
    }
    out
}

#[cfg(test)]
mod tests;

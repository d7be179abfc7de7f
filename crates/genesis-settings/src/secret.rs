//! Secrets and the redaction of secrets inside free text.
//!
//! Redaction works two ways, because patterns alone can be fooled by quoting and formats: every
//! secret the process knows (each [`Secret`] made, each secret-named key of an env file) is
//! masked by value wherever it appears, in its plain, percent-encoded and quoted spellings; and
//! patterns mask what looks like a credential: the password of `scheme://user:password@host`,
//! and the value after a key naming a password or secret (`password=`, `password = `,
//! `"password": "..."`, `POSTGRES_PASSWORD: ...`, SQL's `PASSWORD '...'`), quoted or not.

use std::fmt;
use std::sync::Mutex;

/// The mask printed in place of every secret.
pub const MASK: &str = "***";

/// Secrets shorter than this are not masked by value (masking every `p` in a text would make
/// it unreadable); the patterns still mask them where they sit in a credential.
pub const MIN_MASKED_LEN: usize = 4;

/// What a URL part may hold unencoded: RFC 3986's unreserved characters. Everything else is
/// percent-encoded wherever this crate writes a URL.
pub(crate) const URL_PART: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Every secret this process knows, in every spelling it may be printed in.
static KNOWN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Adds `value` to the secrets masked by value in everything [`redact`] sees.
pub fn register(value: &str) {
    if value.chars().count() < MIN_MASKED_LEN {
        return;
    }
    let encoded = percent_encoding::utf8_percent_encode(value, URL_PART).to_string();
    let spellings = [
        value.to_owned(),
        encoded,
        value.replace('\'', "''"),
        value.replace('\\', "\\\\").replace('"', "\\\""),
    ];
    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    for spelling in spellings {
        if !known.contains(&spelling) {
            known.push(spelling);
        }
    }
    // Longest first, so that a secret holding another is masked whole.
    known.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// A value that never shows itself through `Debug` or `Display`, and is masked by value in
/// everything [`redact`] sees from the moment it exists.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        let value = value.into();
        register(&value);
        Secret(value)
    }

    /// The secret itself, for the one place that needs it (a connection, a hash).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({MASK})")
    }
}

/// Masks every credential found in `text`: every known secret by value, the password of URLs
/// and the value of password- and secret-named keys. Used on everything printed or logged,
/// including error chains and service logs.
pub fn redact(text: &str) -> String {
    let mut masked = text.to_owned();
    {
        let known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
        for secret in known.iter() {
            if masked.contains(secret.as_str()) {
                masked = masked.replace(secret.as_str(), MASK);
            }
        }
    }
    let masked = redact_url_passwords(&masked);
    redact_key_values(&masked)
}

fn redact_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(idx) = rest.find("://") {
        let (head, tail) = rest.split_at(idx + 3);
        out.push_str(head);
        // libpq ends the user information at the first `@`, URL parsers at the last: masking
        // up to the last `@` before the path hides the password for both readings.
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                let userinfo = &tail[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push(':');
                        out.push_str(MASK);
                    }
                    None => out.push_str(userinfo),
                }
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// Words that make a key a secret's name (matched case-insensitively, anywhere in the key).
const SECRET_WORDS: [&str; 3] = ["password", "passwd", "secret"];

fn redact_key_values(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Bytes, not `str`: `i` walks every byte, and a slice of the text inside a multi-byte
        // character would panic.
        let Some(word) = SECRET_WORDS
            .iter()
            .find(|w| lower.as_bytes()[i..].starts_with(w.as_bytes()))
        else {
            i += 1;
            continue;
        };
        // The rest of the key (`PASSWORD_FILE`, `passwordless`), a closing quote of a JSON or
        // YAML key, spaces, then `=` or `:`; or, as in SQL, spaces and a quoted value.
        let mut j = i + word.len();
        while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
            j += 1;
        }
        if j < bytes.len() && matches!(bytes[j], b'"' | b'\'') {
            j += 1;
        }
        let spaces_start = j;
        while j < bytes.len() && matches!(bytes[j], b' ' | b'\t') {
            j += 1;
        }
        let separator = bytes.get(j).copied();
        let value_start = match separator {
            Some(b'=' | b':') => {
                j += 1;
                while j < bytes.len() && matches!(bytes[j], b' ' | b'\t') {
                    j += 1;
                }
                j
            }
            Some(b'\'' | b'"') if j > spaces_start => j,
            _ => {
                i = j.max(i + 1);
                continue;
            }
        };
        let value_end = value_end(bytes, value_start, separator == Some(b':'));
        let (open, close) = match bytes.get(value_start) {
            Some(q @ (b'\'' | b'"')) if value_end > value_start => {
                let closed = value_end > value_start + 1 && bytes[value_end - 1] == *q;
                (
                    value_start + 1,
                    if closed { value_end - 1 } else { value_end },
                )
            }
            _ => (value_start, value_end),
        };
        if close > open {
            out.push_str(&text[copied..open]);
            out.push_str(MASK);
            copied = close;
        }
        i = value_end.max(i + 1);
    }
    out.push_str(&text[copied..]);
    out
}

/// Where a value starting at `start` ends: after its closing quote (SQL's `''` and a
/// backslash escape do not close it), else at a space or `&` (`=` values) or at the end of the
/// line (`:` values, as in YAML).
fn value_end(bytes: &[u8], start: usize, to_line_end: bool) -> usize {
    match bytes.get(start) {
        Some(&q @ (b'\'' | b'"')) => {
            let mut k = start + 1;
            while k < bytes.len() && bytes[k] != b'\n' {
                if bytes[k] == b'\\' {
                    k += 2;
                    continue;
                }
                if bytes[k] == q {
                    if q == b'\'' && bytes.get(k + 1) == Some(&b'\'') {
                        k += 2;
                        continue;
                    }
                    return k + 1;
                }
                k += 1;
            }
            k.min(bytes.len())
        }
        _ => {
            let mut k = start;
            while k < bytes.len() {
                let b = bytes[k];
                let stop = if to_line_end {
                    matches!(b, b'\n' | b'\r')
                } else {
                    b.is_ascii_whitespace() || b == b'&'
                };
                if stop {
                    break;
                }
                k += 1;
            }
            k
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(redact(input), expected, "input: {input}");
    }

    #[test]
    fn redacts_url_passwords() {
        check(
            "connect postgresql://u:s3cret@localhost:5433/db failed",
            "connect postgresql://u:***@localhost:5433/db failed",
        );
        check("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0");
        check("postgresql://u@h/db", "postgresql://u@h/db");
        check("no url here", "no url here");
        check("a://x:y@h b://p:q@r", "a://x:***@h b://p:***@r");
        check("'postgresql://u:p#1\"q@h/db'", "'postgresql://u:***@h/db'");
    }

    #[test]
    fn text_with_multi_byte_characters_is_redacted_without_a_panic() {
        check(
            "stack \"café\" is not a name",
            "stack \"café\" is not a name",
        );
        check("é password=s3cret", "é password=***");
    }

    #[test]
    fn redacts_password_keys_whatever_the_format() {
        check(
            "postgresql://h/db?user=u&password=s3cret&sslmode=require",
            "postgresql://h/db?user=u&password=***&sslmode=require",
        );
        check(
            "host=h password=s3cret dbname=d",
            "host=h password=*** dbname=d",
        );
        check("PASSWORD=abc", "PASSWORD=***");
        check("PGPASSWORD=abc psql", "PGPASSWORD=*** psql");
        check(
            "postgresql://u@h/db?password=ab'SECRETTAIL",
            "postgresql://u@h/db?password=***",
        );
        check("password = x y", "password = *** y");
        check(
            "{\"password\":\"x\\\"y\",\"a\":1}",
            "{\"password\":\"***\",\"a\":1}",
        );
        check(
            "ALTER ROLE u PASSWORD 'it''s' VALID",
            "ALTER ROLE u PASSWORD '***' VALID",
        );
        check(
            "  POSTGRES_PASSWORD: x y\nnext",
            "  POSTGRES_PASSWORD: ***\nnext",
        );
        check("TOKEN_SECRET=abc", "TOKEN_SECRET=***");
        check(
            "FATAL: password authentication failed for user \"u\"",
            "FATAL: password authentication failed for user \"u\"",
        );
    }

    #[test]
    fn masks_known_secrets_by_value() {
        let s = Secret::new("canary-7f3a@x");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "canary-7f3a@x");
        check("log: canary-7f3a@x said hi", "log: *** said hi");
        check("url u:canary-7f3a%40x@h", "url u:***@h");
        check(
            "LOG:  statement: select 'canary-7f3a@x'",
            "LOG:  statement: select '***'",
        );
    }
}

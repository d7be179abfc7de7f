//! Secrets and the redaction of secrets inside free text.

use std::fmt;

/// The mask printed in place of every secret.
pub const MASK: &str = "***";

/// A value that never shows itself through `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
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

/// Masks every credential found in `text`: the password of `scheme://user:password@host` URLs
/// and the value of `password=` parameters (in URLs and in libpq key/value strings).
/// Used on everything printed or logged, including error chains.
pub fn redact(text: &str) -> String {
    let masked = redact_url_passwords(text);
    redact_password_params(&masked)
}

fn redact_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(idx) = rest.find("://") {
        let (head, tail) = rest.split_at(idx + 3);
        out.push_str(head);
        // The authority ends at the first character that cannot belong to it.
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '/' | '?' | '#' | '"' | '\'' | '`'))
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push(':');
                        out.push_str(MASK);
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn redact_password_params(text: &str) -> String {
    const KEY: &str = "password=";
    // Any key ending in `password` is masked (`PGPASSWORD=`, `new_password=`): over-masking is
    // harmless, a leak is not.
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(idx) = rest.to_ascii_lowercase().find(KEY) {
        let (head, tail) = rest.split_at(idx + KEY.len());
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '&' | '"' | '\'' | '#'))
            .unwrap_or(tail.len());
        if end > 0 {
            out.push_str(MASK);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
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
    }

    #[test]
    fn redacts_password_params() {
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
    }

    #[test]
    fn secret_debug_is_masked() {
        let s = Secret::new("canary-7f3a");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "canary-7f3a");
    }
}

//! The parameters of a PostgreSQL URL: every keyword libpq knows, the values the
//! application's driver accepts, and the check that refuses what the driver would refuse or
//! read differently.

use super::{Scheme, ServiceUrl, UrlProblem, malformed};

/// Every connection keyword libpq 15 knows (`PQconninfoOptions` in fe-connect.c).
pub const LIBPQ_KEYWORDS: &[&str] = &[
    "service",
    "user",
    "password",
    "passfile",
    "channel_binding",
    "connect_timeout",
    "dbname",
    "host",
    "hostaddr",
    "port",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "sslmode",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "gssencmode",
    "krbsrvname",
    "gsslib",
    "replication",
    "target_session_attrs",
];

/// The values the application's driver (tokio-postgres 0.7) accepts for a libpq keyword.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppValues {
    /// Any text.
    Text,
    /// An integer.
    Integer,
    /// One of these words.
    OneOf(&'static [&'static str]),
}

/// The libpq parameters (besides host, port, user, password and dbname) the application's
/// driver understands, with the values it accepts. Anything else libpq knows is refused for
/// the application by [`ServiceUrl::check_app_support`] rather than dropped or misread.
pub const APP_PARAMETERS: &[(&str, AppValues)] = &[
    ("hostaddr", AppValues::Text),
    ("options", AppValues::Text),
    ("application_name", AppValues::Text),
    // TLS is read by the application itself (genesis-api's `tls`), as libpq reads it, and
    // only the rest goes to the driver.
    (
        "sslmode",
        AppValues::OneOf(&[
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ]),
    ),
    ("sslrootcert", AppValues::Text),
    ("sslcert", AppValues::Text),
    ("sslkey", AppValues::Text),
    ("connect_timeout", AppValues::Integer),
    ("tcp_user_timeout", AppValues::Integer),
    ("keepalives", AppValues::Integer),
    ("keepalives_idle", AppValues::Integer),
    ("keepalives_interval", AppValues::Integer),
    (
        "target_session_attrs",
        AppValues::OneOf(&["any", "read-write", "read-only"]),
    ),
    (
        "channel_binding",
        AppValues::OneOf(&["disable", "prefer", "require"]),
    ),
];

impl ServiceUrl {
    /// Refuses what the application's driver would refuse or read differently: no host or a
    /// Unix-socket host it cannot reach, no user, and any libpq parameter it does not know or
    /// value it does not accept. The reason names parameters, never their values.
    pub fn check_app_support(&self) -> Result<(), UrlProblem> {
        if self.scheme != Scheme::Postgres {
            return Ok(());
        }
        if self.hosts.is_empty() {
            return Err(malformed(
                "it names no host; the application's driver has no default socket: \
                 name the server, or its socket folder with ?host=/var/run/postgresql",
            ));
        }
        if self.user.is_none() {
            return Err(malformed(
                "it names no user; the application's driver has no default user",
            ));
        }
        for (key, value) in &self.params {
            let Some((_, accepted)) = APP_PARAMETERS.iter().find(|(k, _)| k == key) else {
                return Err(malformed(format!(
                    "the libpq parameter {key} is not supported by the application's driver \
                     (tokio-postgres): remove it"
                )));
            };
            // Integers as the driver reads them: digits only (libpq also skips spaces
            // around them, which the driver refuses).
            let ok = match accepted {
                AppValues::Text => true,
                AppValues::Integer => value.parse::<i64>().is_ok(),
                AppValues::OneOf(words) => words.contains(&value.as_str()),
            };
            let ok = ok
                && match key.as_str() {
                    "hostaddr" => value
                        .split(',')
                        .all(|a| a.parse::<std::net::IpAddr>().is_ok()),
                    "keepalives" => value.parse::<u64>().is_ok(),
                    // libpq waits for ever with 0 or less; the application always bounds it.
                    "connect_timeout" => value.parse::<i64>().is_ok_and(|n| n > 0),
                    _ => true,
                };
            if !ok {
                let expected = match (accepted, key.as_str()) {
                    (_, "connect_timeout") => {
                        "whole seconds, at least 1: the application never waits for ever".to_owned()
                    }
                    (AppValues::Text, _) => "an IP address per host".to_owned(),
                    (AppValues::Integer, _) => "an integer, digits only".to_owned(),
                    (AppValues::OneOf(words), _) => words.join(", "),
                };
                return Err(malformed(format!(
                    "the value of {key} is not one the application's driver accepts ({expected})"
                )));
            }
        }
        Ok(())
    }
}

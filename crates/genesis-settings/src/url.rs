//! Service URLs (PostgreSQL and Redis) that keep their password out of every printout.

use std::fmt;

use crate::secret::{MASK, Secret, redact};

/// What kind of service a URL points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Postgres,
    Redis,
}

impl Scheme {
    fn canonical(self, tls: bool) -> &'static str {
        match (self, tls) {
            (Scheme::Postgres, _) => "postgresql",
            (Scheme::Redis, false) => "redis",
            (Scheme::Redis, true) => "rediss",
        }
    }
}

/// Why a URL was refused. The caller adds the variable and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlProblem {
    Sqlite,
    WrongScheme { found: String, expected: Scheme },
    Malformed(&'static str),
}

/// A parsed service URL. `Display` and `Debug` mask the password; [`ServiceUrl::expose`] gives
/// the full URL to the one caller that connects.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceUrl {
    scheme: Scheme,
    /// `rediss://`: Redis over TLS. (PostgreSQL says it with `sslmode` in the tail.)
    tls: bool,
    user: String,
    password: Option<Secret>,
    host: String,
    port: Option<u16>,
    /// Everything after the authority: `/db?params`.
    tail: String,
}

impl ServiceUrl {
    /// Parses `raw` as a URL of `expected` kind. The Python era's driver-qualified spellings
    /// (`postgresql+asyncpg://`, `postgres://`) are normalised to `postgresql://`.
    pub fn parse(raw: &str, expected: Scheme) -> Result<ServiceUrl, UrlProblem> {
        let raw = raw.trim();
        let lower = raw.to_ascii_lowercase();
        if lower.starts_with("sqlite") {
            return Err(UrlProblem::Sqlite);
        }
        let Some((scheme, rest)) = raw.split_once("://") else {
            return Err(UrlProblem::Malformed("expected scheme://host"));
        };
        let base = scheme
            .split('+')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let found = match base.as_str() {
            "postgresql" | "postgres" => Scheme::Postgres,
            "redis" | "rediss" => Scheme::Redis,
            _ => {
                return Err(UrlProblem::WrongScheme {
                    found: scheme.to_owned(),
                    expected,
                });
            }
        };
        if found != expected {
            return Err(UrlProblem::WrongScheme {
                found: scheme.to_owned(),
                expected,
            });
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(info) => match info.split_once(':') {
                Some((u, p)) => (u.to_owned(), Some(Secret::new(p))),
                None => (info.to_owned(), None),
            },
            None => (String::new(), None),
        };
        let (host, port) = match hostport.strip_prefix('[') {
            // An IPv6 literal: `[::1]:5432`.
            Some(v6) => {
                let (h, after) = v6
                    .split_once(']')
                    .ok_or(UrlProblem::Malformed("an unclosed [ in the host"))?;
                (format!("[{h}]"), after.strip_prefix(':'))
            }
            None => match hostport.split_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (hostport.to_owned(), None),
            },
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| UrlProblem::Malformed("the port is not a number"))
            })
            .transpose()?;
        if host.is_empty() {
            return Err(UrlProblem::Malformed("the host is missing"));
        }
        if found == Scheme::Postgres
            && tail
                .trim_start_matches('/')
                .split('?')
                .next()
                .unwrap_or("")
                .is_empty()
        {
            return Err(UrlProblem::Malformed("the database name is missing"));
        }
        Ok(ServiceUrl {
            scheme: found,
            tls: base == "rediss",
            user,
            password,
            host,
            port,
            tail: tail.to_owned(),
        })
    }

    /// Whether the scheme itself asks for TLS (`rediss://`).
    pub fn scheme_is_tls(&self) -> bool {
        self.tls
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    /// The database name of a PostgreSQL URL (the path without its parameters).
    pub fn database(&self) -> &str {
        self.tail
            .trim_start_matches('/')
            .split('?')
            .next()
            .unwrap_or("")
    }

    /// The same URL with another host and port (used to translate host addresses into
    /// in-network ones).
    pub fn with_address(&self, host: &str, port: u16) -> ServiceUrl {
        ServiceUrl {
            host: host.to_owned(),
            port: Some(port),
            ..self.clone()
        }
    }

    /// The same URL pointing at another database on the same server.
    pub fn with_database(&self, database: &str) -> ServiceUrl {
        let params = self
            .tail
            .split_once('?')
            .map(|(_, q)| format!("?{q}"))
            .unwrap_or_default();
        ServiceUrl {
            tail: format!("/{database}{params}"),
            ..self.clone()
        }
    }

    /// The full URL, password included: only for opening a connection.
    pub fn expose(&self) -> String {
        self.render(self.password.as_ref().map(Secret::expose))
    }

    fn render(&self, password: Option<&str>) -> String {
        let mut out = format!("{}://", self.scheme.canonical(self.tls));
        if !self.user.is_empty() || password.is_some() {
            out.push_str(&self.user);
            if let Some(p) = password {
                out.push(':');
                out.push_str(p);
            }
            out.push('@');
        }
        out.push_str(&self.host);
        if let Some(port) = self.port {
            out.push_str(&format!(":{port}"));
        }
        out.push_str(&self.tail);
        out
    }
}

impl fmt::Display for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The tail may carry `password=` parameters: redact it too.
        f.write_str(&redact(&self.render(self.password.as_ref().map(|_| MASK))))
    }
}

impl fmt::Debug for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, expected_exposed: &str, expected_shown: &str) {
        let url = ServiceUrl::parse(raw, Scheme::Postgres).unwrap();
        assert_eq!(url.expose(), expected_exposed);
        assert_eq!(url.to_string(), expected_shown);
    }

    #[test]
    fn normalises_python_era_spellings() {
        check(
            "postgresql+asyncpg://test_user:test_password@localhost:5433/test_db",
            "postgresql://test_user:test_password@localhost:5433/test_db",
            "postgresql://test_user:***@localhost:5433/test_db",
        );
        check(
            "postgres://u:p@h/db",
            "postgresql://u:p@h/db",
            "postgresql://u:***@h/db",
        );
        check(
            "postgresql://u@h:1/db?sslmode=require&password=zz",
            "postgresql://u@h:1/db?sslmode=require&password=zz",
            "postgresql://u@h:1/db?sslmode=require&password=***",
        );
    }

    #[test]
    fn rejects() {
        let problem = |raw| ServiceUrl::parse(raw, Scheme::Postgres).unwrap_err();
        assert_eq!(problem("sqlite:///./genesis.db"), UrlProblem::Sqlite);
        assert_eq!(problem("sqlite+aiosqlite:///x.db"), UrlProblem::Sqlite);
        assert!(matches!(
            problem("mysql://u:p@h/db"),
            UrlProblem::WrongScheme { .. }
        ));
        assert!(matches!(
            problem("redis://h:6379/0"),
            UrlProblem::WrongScheme { .. }
        ));
        assert!(matches!(
            problem("postgresql://u:p@h:x/db"),
            UrlProblem::Malformed(_)
        ));
        assert!(matches!(
            problem("postgresql://u:p@h:5432"),
            UrlProblem::Malformed(_)
        ));
        assert!(matches!(
            problem("localhost:5432"),
            UrlProblem::Malformed(_)
        ));
    }

    #[test]
    fn rewrites_address_and_database() {
        let url = ServiceUrl::parse(
            "postgresql://u:p@localhost:5433/test_db?x=1",
            Scheme::Postgres,
        )
        .unwrap();
        assert_eq!(
            url.with_address("test-db", 5432).expose(),
            "postgresql://u:p@test-db:5432/test_db?x=1"
        );
        assert_eq!(
            url.with_database("other").expose(),
            "postgresql://u:p@localhost:5433/other?x=1"
        );
        assert_eq!(url.database(), "test_db");
        let redis = ServiceUrl::parse("redis://:pw@localhost:6380/0", Scheme::Redis).unwrap();
        assert_eq!(redis.to_string(), "redis://:***@localhost:6380/0");
        // TLS is part of the scheme and must survive the round trip.
        let rediss = ServiceUrl::parse("rediss://:pw@cache.example.com:6380/0", Scheme::Redis);
        assert_eq!(
            rediss.unwrap().expose(),
            "rediss://:pw@cache.example.com:6380/0"
        );
    }
}

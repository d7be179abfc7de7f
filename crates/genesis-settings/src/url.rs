//! Service URLs (PostgreSQL and Redis): read as their real readers read them, rendered back in
//! one canonical, fully percent-encoded form, and never printed with their password.
//!
//! A PostgreSQL URL is read with libpq's own algorithm (`conninfo_uri_parse_options` in
//! `src/interfaces/libpq/fe-connect.c`): the user information ends at the first `@` or `/`, the
//! user at the first `:`, hosts are separated by `,`, every component is percent-decoded (a bad
//! `%` sequence or `%00` is an error), and query parameters are libpq keywords that override
//! the URL's own parts. The decoded parts are what this type holds; [`ServiceUrl::expose`]
//! renders them with every reserved character percent-encoded, so that libpq and the
//! application's driver read the same user, password, hosts, ports, database and parameters
//! whatever characters they hold. The tests compare the reading with libpq's `PQconninfoParse`
//! itself (`crate::libpq_oracle`).

mod params;
mod parse;
mod render;

pub use self::params::{APP_PARAMETERS, AppValues, LIBPQ_KEYWORDS};
use self::parse::{parse_libpq, parse_redis};
use crate::secret::Secret;

/// What kind of service a URL points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Postgres,
    Redis,
}

impl Scheme {
    fn canonical(self) -> &'static str {
        match self {
            Scheme::Postgres => "postgresql",
            Scheme::Redis => "redis",
        }
    }
}

/// Why a URL was refused. The caller adds the variable and where it came from. No variant
/// holds any part of the URL's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlProblem {
    Sqlite,
    WrongScheme { found: String, expected: Scheme },
    Malformed(String),
}

fn malformed(reason: impl Into<String>) -> UrlProblem {
    UrlProblem::Malformed(reason.into())
}

/// A parsed service URL: decoded parts. `Display` and `Debug` mask the password;
/// [`ServiceUrl::expose`] gives the canonical URL to the one caller that connects.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceUrl {
    scheme: Scheme,
    /// `rediss://`: Redis over TLS.
    tls: bool,
    /// Host names, IP addresses or (PostgreSQL) Unix-socket directories, in order; empty when
    /// the URL names none (libpq then uses its default socket).
    hosts: Vec<String>,
    /// One port per host, or a single one for all; `None` is the default port.
    ports: Vec<Option<u16>>,
    user: Option<String>,
    password: Option<Secret>,
    /// The PostgreSQL database, or the Redis database number.
    database: Option<String>,
    /// The other parameters, in the order they were given, each keyword once.
    params: Vec<(String, String)>,
}

impl ServiceUrl {
    /// Parses `raw` as a URL of `expected` kind. The Python era's driver-qualified spellings
    /// (`postgresql+asyncpg://`, `postgres://`) are normalised to `postgresql://`.
    ///
    /// Refused as libpq refuses them, rather than read another way: whitespace or a control
    /// character around the URL (libpq reads a leading one as the start of a `key=value`
    /// string and a trailing one, a newline included, as part of the database name or of the
    /// last parameter), and a scheme in capitals (libpq knows only the lowercase ones).
    pub fn parse(raw: &str, expected: Scheme) -> Result<ServiceUrl, UrlProblem> {
        let lower = raw.trim().to_ascii_lowercase();
        if lower.starts_with("sqlite") {
            return Err(UrlProblem::Sqlite);
        }
        let edge = |c: Option<char>| c.is_some_and(|c| c.is_whitespace() || c.is_control());
        if edge(raw.chars().next()) || edge(raw.chars().next_back()) {
            return Err(malformed(
                "it starts or ends with whitespace or a control character (a newline, a \
                 space), which libpq would read as part of the URL: remove it",
            ));
        }
        let Some((scheme, rest)) = raw.split_once("://") else {
            return Err(malformed("expected scheme://host"));
        };
        let base = scheme
            .split('+')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if expected == Scheme::Postgres
            && matches!(base.as_str(), "postgresql" | "postgres")
            && !scheme.starts_with(base.as_str())
        {
            return Err(malformed(
                "the scheme is not lowercase; libpq reads only postgresql:// and postgres://",
            ));
        }
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
        match found {
            Scheme::Postgres => parse_libpq(rest),
            Scheme::Redis => parse_redis(rest).map(|url| ServiceUrl {
                tls: base == "rediss",
                ..url
            }),
        }
    }

    /// A `postgresql://` URL built from its decoded parts, with no parsing: the model's own
    /// databases, whose parts are known.
    pub fn postgres(
        host: &str,
        port: u16,
        user: &str,
        database: &str,
        password: Option<Secret>,
    ) -> ServiceUrl {
        ServiceUrl {
            scheme: Scheme::Postgres,
            tls: false,
            hosts: vec![host.to_owned()],
            ports: vec![Some(port)],
            user: Some(user.to_owned()),
            password,
            database: Some(database.to_owned()),
            params: Vec::new(),
        }
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Whether the URL asks for TLS by its scheme (`rediss://`). PostgreSQL asks through
    /// `sslmode` ([`ServiceUrl::param`]).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The first host (the only one of a single-host URL), decoded; `""` when there is none.
    pub fn host(&self) -> &str {
        self.hosts.first().map_or("", String::as_str)
    }

    /// Every host, decoded, in the order libpq tries them.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The first host's port, when the URL gives one.
    pub fn port(&self) -> Option<u16> {
        self.ports.first().copied().flatten()
    }

    /// The ports as given: one per host, or one for all; `None` is the default port.
    pub fn ports(&self) -> &[Option<u16>] {
        &self.ports
    }

    /// Each host with its port (`default` where the URL gives none).
    pub fn endpoints(&self, default: u16) -> Vec<(String, u16)> {
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let port = match self.ports.len() {
                    0 => None,
                    1 => self.ports[0],
                    _ => self.ports.get(i).copied().flatten(),
                };
                (host.clone(), port.unwrap_or(default))
            })
            .collect()
    }

    /// The user, decoded; `""` when the URL names none.
    pub fn user(&self) -> &str {
        self.user.as_deref().unwrap_or("")
    }

    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    /// The database name, decoded (a PostgreSQL URL always has one).
    pub fn database(&self) -> &str {
        self.database.as_deref().unwrap_or("")
    }

    /// The other libpq parameters (`sslmode`, `sslrootcert`, `application_name`, ...),
    /// decoded, in the order given.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// One parameter's decoded value.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The same URL with one host and port (used to translate host addresses into in-network
    /// ones).
    pub fn with_address(&self, host: &str, port: u16) -> ServiceUrl {
        ServiceUrl {
            hosts: vec![host.to_owned()],
            ports: vec![Some(port)],
            ..self.clone()
        }
    }

    /// The same URL with another password (none: libpq's other sources, such as a passfile).
    pub fn with_password(&self, password: Option<Secret>) -> ServiceUrl {
        ServiceUrl {
            password,
            ..self.clone()
        }
    }

    /// The same URL pointing at another database on the same server.
    pub fn with_database(&self, database: &str) -> ServiceUrl {
        ServiceUrl {
            database: Some(database.to_owned()),
            ..self.clone()
        }
    }

    /// The same URL without the parameters `keys` (the application reads its TLS parameters
    /// itself and gives the driver the rest).
    pub fn without_params(&self, keys: &[&str]) -> ServiceUrl {
        ServiceUrl {
            params: self
                .params
                .iter()
                .filter(|(k, _)| !keys.contains(&k.as_str()))
                .cloned()
                .collect(),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests;

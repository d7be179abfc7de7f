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
//! whatever characters they hold. `tests/libpq_oracle.rs`-style checks in this crate compare
//! the reading with libpq's `PQconninfoParse` itself.

use std::fmt;

use percent_encoding::{percent_decode_str, utf8_percent_encode};

use crate::secret::{MASK, Secret, URL_PART, redact};

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

fn encode(value: &str) -> String {
    utf8_percent_encode(value, URL_PART).to_string()
}

/// libpq's `conninfo_uri_decode`: `%XX` with two hex digits, never `%00`; the result must be
/// UTF-8 (the driver refuses anything else).
fn decode(part: &str, what: &str) -> Result<String, UrlProblem> {
    let bytes = part.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            match hex {
                Some(h) if h.iter().all(u8::is_ascii_hexdigit) => {
                    if h == b"00" {
                        return Err(malformed(format!(
                            "the {what} holds %00, which libpq forbids"
                        )));
                    }
                    i += 3;
                }
                _ => {
                    return Err(malformed(format!(
                        "the {what} holds a % that does not start a %XX escape \
                         (write a literal % as %25)"
                    )));
                }
            }
        } else {
            i += 1;
        }
    }
    percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| malformed(format!("the {what} is not UTF-8 once percent-decoded")))
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

    /// The canonical URL, password included: only for opening a connection.
    pub fn expose(&self) -> String {
        self.render(self.password.as_ref().map(|p| encode(p.expose())))
    }

    /// The parts as `key=value` pairs (password masked), for `check-config`: exactly what the
    /// driver and libpq are given.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.hosts.is_empty() {
            parts.push(format!("host={}", self.hosts.join(",")));
        }
        if !self.ports.is_empty() {
            parts.push(format!("port={}", self.port_list()));
        }
        if let Some(user) = &self.user {
            parts.push(format!("user={user}"));
        }
        if self.password.is_some() {
            parts.push(format!("password={MASK}"));
        }
        if let Some(db) = &self.database {
            let key = match self.scheme {
                Scheme::Postgres => "dbname",
                Scheme::Redis => "db",
            };
            parts.push(format!("{key}={db}"));
        }
        for (k, v) in &self.params {
            parts.push(format!("{k}={v}"));
        }
        redact(&parts.join(" "))
    }

    /// The ports as libpq's `port` parameter spells them: one per host, empty for the default.
    fn port_list(&self) -> String {
        let ports: Vec<String> = self
            .ports
            .iter()
            .map(|p| p.map(|p| p.to_string()).unwrap_or_default())
            .collect();
        ports.join(",")
    }

    fn render(&self, password: Option<String>) -> String {
        let scheme = if self.tls {
            "rediss"
        } else {
            self.scheme.canonical()
        };
        let mut out = format!("{scheme}://");
        if self.user.is_some() || password.is_some() {
            out.push_str(&encode(self.user()));
            if let Some(p) = password {
                out.push(':');
                out.push_str(&p);
            }
            out.push('@');
        }
        let sockets = self.hosts.iter().any(|h| h.starts_with('/'));
        let mut params: Vec<(String, String)> = Vec::new();
        if sockets {
            // A socket folder cannot sit in the authority: hosts and ports go to parameters,
            // which libpq and the driver both read.
            params.push(("host".into(), self.hosts.join(",")));
            if !self.ports.is_empty() {
                params.push(("port".into(), self.port_list()));
            }
        } else {
            let multi = self.hosts.len() > 1;
            let endpoints: Vec<String> = self
                .hosts
                .iter()
                .enumerate()
                .map(|(i, host)| {
                    let host = if host.contains(':') {
                        format!("[{host}]")
                    } else {
                        encode(host)
                    };
                    // Every host of a multi-host URL gets its port written out: libpq and the
                    // driver default a missing one differently when the URL lists them.
                    let port = match self.ports.len() {
                        0 if multi => Some(crate::model::POSTGRES_PORT),
                        0 => None,
                        1 if multi => Some(self.ports[0].unwrap_or(crate::model::POSTGRES_PORT)),
                        1 => self.ports[0],
                        _ => Some(self.ports[i].unwrap_or(crate::model::POSTGRES_PORT)),
                    };
                    match port {
                        Some(port) => format!("{host}:{port}"),
                        None => host,
                    }
                })
                .collect();
            out.push_str(&endpoints.join(","));
        }
        if let Some(db) = &self.database {
            out.push('/');
            out.push_str(&encode(db));
        }
        params.extend(self.params.iter().cloned());
        for (i, (k, v)) in params.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(&encode(k));
            out.push('=');
            // A value masked by `Display` stays readable as the mask.
            if v == MASK {
                out.push_str(MASK);
            } else {
                out.push_str(&encode(v));
            }
        }
        out
    }
}

/// libpq's reading of what follows `postgresql://`.
fn parse_libpq(rest: &str) -> Result<ServiceUrl, UrlProblem> {
    // libpq looks for the user information up to the first `@` or `/` (not `?`).
    let mut user = None;
    let mut password = None;
    let mut p = rest;
    let userinfo_end = p.find(['@', '/']).filter(|&end| p.as_bytes()[end] == b'@');
    if let Some(end) = userinfo_end {
        let info = &p[..end];
        let (u, pw) = match info.split_once(':') {
            Some((u, pw)) => (u, Some(pw)),
            None => (info, None),
        };
        if !u.is_empty() {
            user = Some(decode(u, "user")?);
        }
        if let Some(pw) = pw.filter(|pw| !pw.is_empty()) {
            password = Some(decode(pw, "password")?);
        }
        p = &p[end + 1..];
    }

    // Hosts and ports, up to the first `/` or `?`.
    let mut hostbuf = String::new();
    let mut portbuf = String::new();
    let terminator;
    loop {
        let host;
        if let Some(v6) = p.strip_prefix('[') {
            let close = v6
                .find(']')
                .ok_or_else(|| malformed("an IPv6 address in the host has no closing ]"))?;
            if close == 0 {
                return Err(malformed("an IPv6 host address is empty"));
            }
            host = &v6[..close];
            p = &v6[close + 1..];
            if !p.is_empty() && !p.starts_with([':', '/', '?', ',']) {
                return Err(malformed(
                    "an unexpected character follows an IPv6 host address (expected : or /)",
                ));
            }
        } else {
            let end = p.find([':', '/', '?', ',']).unwrap_or(p.len());
            host = &p[..end];
            p = &p[end..];
        }
        hostbuf.push_str(host);
        let mut next = p.chars().next();
        if next == Some(':') {
            let port_end = p[1..].find(['/', '?', ',']).map_or(p.len(), |i| i + 1);
            portbuf.push_str(&p[1..port_end]);
            p = &p[port_end..];
            next = p.chars().next();
        }
        if next != Some(',') {
            terminator = next;
            break;
        }
        p = &p[1..];
        hostbuf.push(',');
        portbuf.push(',');
    }

    let mut options: Vec<(String, String)> = Vec::new();
    let store = |key: &str, value: String, options: &mut Vec<(String, String)>| {
        options.retain(|(k, _)| k != key);
        options.push((key.to_owned(), value));
    };
    if let Some(u) = user {
        store("user", u, &mut options);
    }
    if let Some(pw) = password {
        store("password", pw, &mut options);
    }
    if !hostbuf.is_empty() {
        store("host", decode(&hostbuf, "host")?, &mut options);
    }
    if !portbuf.is_empty() {
        store("port", decode(&portbuf, "port")?, &mut options);
    }
    let mut query = None;
    match terminator {
        Some('/') => {
            let path = &p[1..];
            let (db, q) = match path.split_once('?') {
                Some((db, q)) => (db, Some(q)),
                None => (path, None),
            };
            if !db.is_empty() {
                store("dbname", decode(db, "database name")?, &mut options);
            }
            query = q;
        }
        Some('?') => query = Some(&p[1..]),
        _ => {}
    }
    // libpq stops at the end of the text, so one trailing `&` is harmless to it.
    let query = query.map(|q| q.strip_suffix('&').filter(|r| !r.is_empty()).unwrap_or(q));
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        for pair in query.split('&') {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(malformed("a query parameter has no = (expected key=value)"));
            };
            if value.contains('=') {
                return Err(malformed(
                    "a query parameter holds a second = (write = in a value as %3D)",
                ));
            }
            let key = decode(key, "parameter name")?;
            let named = LIBPQ_KEYWORDS.contains(&key.as_str()) || key == "ssl";
            let value = decode(
                value,
                &if named {
                    format!("value of {key}")
                } else {
                    "value of a parameter".to_owned()
                },
            )?;
            let (key, value) = if key == "ssl" && value == "true" {
                ("sslmode".to_owned(), "require".to_owned())
            } else {
                (key, value)
            };
            if !LIBPQ_KEYWORDS.contains(&key.as_str()) {
                // Named only when it looks like a keyword: a misplaced `?` or `&` in a
                // password makes the rest of it a parameter name.
                let keyword_like =
                    key.len() <= 40 && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                let shown = if keyword_like {
                    redact(&key)
                } else {
                    "a query parameter".to_owned()
                };
                return Err(malformed(format!(
                    "{shown} is not a libpq connection parameter (they are lowercase: \
                     sslmode, sslrootcert, application_name, ...; a ? or & in a password must \
                     be written %3F or %26)"
                )));
            }
            store(&key, value, &mut options);
        }
    }

    let take = |options: &mut Vec<(String, String)>, key: &str| {
        let at = options.iter().position(|(k, _)| k == key)?;
        Some(options.remove(at).1)
    };
    let hosts: Vec<String> = match take(&mut options, "host") {
        Some(h) if !h.is_empty() => h.split(',').map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    if hosts.len() > 1 && hosts.iter().any(String::is_empty) {
        return Err(malformed("the host list has an empty entry"));
    }
    for host in &hosts {
        check_host(host)?;
    }
    let ports: Vec<Option<u16>> = match take(&mut options, "port") {
        Some(p) if !p.is_empty() => p
            .split(',')
            .map(|port| {
                if port.is_empty() {
                    return Ok(None);
                }
                match port.parse::<u16>() {
                    Ok(n) if n > 0 => Ok(Some(n)),
                    _ => Err(malformed(
                        "a port is not a number from 1 to 65535 (a / or : in a user name or \
                         password must be written %2F or %3A)",
                    )),
                }
            })
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    // libpq connects to one address per `hostaddr` entry when it is given, else one per host;
    // a host list of another length is refused (`could not match N host names to M hostaddr
    // values`), and so is a port list of another length than one.
    let hostaddrs = options
        .iter()
        .find(|(k, _)| k == "hostaddr")
        .map(|(_, v)| v.split(',').count())
        .filter(|_| {
            options
                .iter()
                .any(|(k, v)| k == "hostaddr" && !v.is_empty())
        });
    if let Some(addrs) = hostaddrs {
        if !hosts.is_empty() && hosts.len() != addrs {
            return Err(malformed(format!(
                "{} hosts for {addrs} hostaddr values: libpq needs one host per hostaddr",
                hosts.len()
            )));
        }
    }
    let connections = hostaddrs.unwrap_or(hosts.len().max(1));
    if ports.len() > 1 && ports.len() != connections {
        return Err(malformed(format!(
            "{} ports for {connections} hosts: give one port, or one per host",
            ports.len(),
        )));
    }
    // An empty user or password is libpq's default (the login name, the password file), as
    // an absent one is.
    let user = take(&mut options, "user").filter(|u| !u.is_empty());
    let password = take(&mut options, "password")
        .filter(|p| !p.is_empty())
        .map(Secret::new);
    let database = take(&mut options, "dbname").filter(|d| !d.is_empty());
    let Some(database) = database else {
        return Err(malformed("the database name is missing"));
    };
    Ok(ServiceUrl {
        scheme: Scheme::Postgres,
        tls: false,
        hosts,
        ports,
        user,
        password,
        database: Some(database),
        params: options,
    })
}

/// A host libpq and the driver both read the same way: a name, an IP address, or an absolute
/// Unix-socket folder. The reason never repeats the host (it may hold a misplaced password).
fn check_host(host: &str) -> Result<(), UrlProblem> {
    if host.starts_with('/') {
        return Ok(());
    }
    if host.starts_with('@') {
        return Err(malformed(
            "a host starting with @ is an abstract Unix socket to libpq, which the driver \
             cannot reach",
        ));
    }
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(());
    }
    let name_like = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !name_like {
        let hint = if host.contains('@') {
            ": an @ in a user name or password must be written %40"
        } else {
            ""
        };
        return Err(malformed(format!(
            "a host is not a host name, an IP address or a socket folder{hint}"
        )));
    }
    Ok(())
}

/// A Redis URL: `redis://[user[:password]@]host[:port][/db][?params]`. The Redis client reads
/// it with a WHATWG URL parser, which ends the user information at the last `@`; libpq-style
/// readers end it at the first. Both agree only when there is one `@`, so a second is refused.
fn parse_redis(rest: &str) -> Result<ServiceUrl, UrlProblem> {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.matches('@').count() > 1 {
        return Err(malformed(
            "the address holds more than one @: an @ in the password must be written %40",
        ));
    }
    let (userinfo, hostport) = match authority.split_once('@') {
        Some((info, hp)) => (Some(info), hp),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(info) => {
            let (u, p) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (info, None),
            };
            let user = (!u.is_empty()).then(|| decode(u, "user")).transpose()?;
            let password = p
                .filter(|p| !p.is_empty())
                .map(|p| decode(p, "password"))
                .transpose()?
                .map(Secret::new);
            (user, password)
        }
        None => (None, None),
    };
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| malformed("an unclosed [ in the host"))?;
            (h.to_owned(), after.strip_prefix(':'))
        }
        None => match hostport.split_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (hostport.to_owned(), None),
        },
    };
    if host.is_empty() {
        return Err(malformed("the host is missing"));
    }
    check_host(&host)?;
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| malformed("the port is not a number"))
        })
        .transpose()?;
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    let db = path.trim_start_matches('/');
    let database = (!db.is_empty())
        .then(|| decode(db, "database"))
        .transpose()?;
    // The Redis client refuses any database that is not a number.
    if database
        .as_deref()
        .is_some_and(|db| db.parse::<u32>().is_err())
    {
        return Err(malformed(
            "the database is not a number (Redis databases are 0, 1, 2, ...)",
        ));
    }
    let mut params = Vec::new();
    if let Some(query) = query {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            params.push((decode(k, "parameter name")?, decode(v, "parameter value")?));
        }
    }
    Ok(ServiceUrl {
        scheme: Scheme::Redis,
        tls: false,
        hosts: vec![host],
        ports: vec![port],
        user,
        password,
        database,
        params,
    })
}

impl fmt::Display for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A parameter may carry a secret in its name (`sslpassword=`) or, percent-encoded, in
        // its value (`options=-c%20my.password%3D...`), where no pattern can see it once
        // encoded: such a value is masked whole, decided on its decoded form.
        let shown = ServiceUrl {
            params: self
                .params
                .iter()
                .map(|(k, v)| {
                    let line = format!("{k}={v}");
                    if redact(&line) == line {
                        (k.clone(), v.clone())
                    } else {
                        (k.clone(), MASK.to_owned())
                    }
                })
                .collect(),
            ..self.clone()
        };
        f.write_str(&redact(
            &shown.render(self.password.as_ref().map(|_| MASK.to_owned())),
        ))
    }
}

impl fmt::Debug for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceUrl({self})")
    }
}

#[cfg(test)]
mod tests;

//! Reading a service URL: libpq's algorithm for PostgreSQL, the Redis client's reading
//! where the two agree, and percent-decoding as libpq does it.

use percent_encoding::percent_decode_str;

use super::{LIBPQ_KEYWORDS, Scheme, ServiceUrl, UrlProblem, malformed};
use crate::secret::{Secret, redact};

/// libpq's `conninfo_uri_decode`: `%XX` with two hex digits, never `%00`; the result must be
/// UTF-8 (the driver refuses anything else).
pub(super) fn decode(part: &str, what: &str) -> Result<String, UrlProblem> {
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

/// libpq's reading of what follows `postgresql://`.
pub(super) fn parse_libpq(rest: &str) -> Result<ServiceUrl, UrlProblem> {
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
pub(super) fn check_host(host: &str) -> Result<(), UrlProblem> {
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
pub(super) fn parse_redis(rest: &str) -> Result<ServiceUrl, UrlProblem> {
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

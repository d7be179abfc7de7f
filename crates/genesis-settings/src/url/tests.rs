//! The URL tests: unit cases, and the corpus compared with libpq's own parser and with the
//! application's driver.

use std::collections::BTreeMap;

use super::*;
use crate::libpq_oracle::Oracle;

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
}

#[test]
fn decodes_every_part_and_renders_them_encoded() {
    let raw = "postgresql://genesis_user:p%40ss%3Aw%2Frd%2541%24x%231%20%22q%22@localhost:5435/genesis_db";
    let url = ServiceUrl::parse(raw, Scheme::Postgres).unwrap();
    assert_eq!(url.password().unwrap().expose(), "p@ss:w/rd%41$x#1 \"q\"");
    assert_eq!(url.user(), "genesis_user");
    assert_eq!(url.hosts(), ["localhost"]);
    assert_eq!(url.expose(), raw);
    assert_eq!(
        url.to_string(),
        "postgresql://genesis_user:***@localhost:5435/genesis_db"
    );

    // libpq ends the user information at the first @: the rest is a host, refused as one.
    let err = ServiceUrl::parse("postgresql://u:p@ss@db/x", Scheme::Postgres).unwrap_err();
    assert_eq!(
        err,
        UrlProblem::Malformed(
            "a host is not a host name, an IP address or a socket folder: an @ in a user \
             name or password must be written %40"
                .into()
        )
    );
}

#[test]
fn parameters_hosts_and_sockets() {
    let url = ServiceUrl::parse(
        "postgresql://u@h1:1,h2/db?sslmode=verify-full&sslrootcert=%2Fca%20x.pem&application_name=a%26b",
        Scheme::Postgres,
    )
    .unwrap();
    assert_eq!(url.hosts(), ["h1", "h2"]);
    assert_eq!(url.ports(), [Some(1), None]);
    assert_eq!(url.param("sslrootcert"), Some("/ca x.pem"));
    assert_eq!(url.param("application_name"), Some("a&b"));
    assert_eq!(
        url.expose(),
        "postgresql://u@h1:1,h2:5432/db?sslmode=verify-full&sslrootcert=%2Fca%20x.pem&application_name=a%26b"
    );
    // verify-full and sslrootcert are read by the application itself (genesis-api's tls).
    url.check_app_support().unwrap();

    let socket = ServiceUrl::parse(
        "postgresql:///genesis_db?host=/var/run/postgresql&user=u",
        Scheme::Postgres,
    )
    .unwrap();
    assert_eq!(socket.hosts(), ["/var/run/postgresql"]);
    assert_eq!(
        socket.expose(),
        "postgresql://u@/genesis_db?host=%2Fvar%2Frun%2Fpostgresql"
    );
    socket.check_app_support().unwrap();
    assert_eq!(
        socket.describe(),
        "host=/var/run/postgresql user=u dbname=genesis_db"
    );

    // A query password overrides the URL's, and is masked wherever it is shown.
    let url = ServiceUrl::parse(
        "postgresql://u:x@h/db?password=ab'SECRETTAIL",
        Scheme::Postgres,
    )
    .unwrap();
    assert_eq!(url.password().unwrap().expose(), "ab'SECRETTAIL");
    assert!(!url.to_string().contains("SECRETTAIL"), "{url}");
    assert!(!url.describe().contains("SECRETTAIL"));
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
    for raw in [
        "postgresql://u:p@h:x/db",
        "postgresql://u:p@h:5432",
        "localhost:5432",
        "postgresql://u:p@h/db?foo=1",
        "postgresql://u:p@h/db?PASSWORD=x",
        "postgresql://u:%zz@h/db",
    ] {
        assert!(matches!(problem(raw), UrlProblem::Malformed(_)), "{raw}");
    }
    let app = |raw| {
        ServiceUrl::parse(raw, Scheme::Postgres)
            .unwrap()
            .check_app_support()
    };
    assert!(app("postgresql://u:p@h/db?sslmode=require&connect_timeout=3").is_ok());
    assert!(app("postgresql:///db").is_err());
    assert!(app("postgresql://h/db").is_err());
    assert!(app("postgresql://u@h/db?keepalives_count=3").is_err());
    assert!(app("postgresql://u@h/db?sslmode=verify-ca").is_ok());
    assert!(app("postgresql://u@h/db?sslcrl=/crl.pem").is_err());
    assert!(app("postgresql://u@h/db?sslmode=verify_ca").is_err());

    // What libpq refuses or reads another way, refused.
    for (raw, why) in [
        ("POSTGRESQL://u:p@h/db", "not lowercase"),
        ("Postgres://u:p@h/db", "not lowercase"),
        (" postgresql://u:p@h/db", "whitespace"),
        ("postgresql://u:p@h/db\n", "whitespace"),
        ("postgresql://u:p@h/db\u{a0}", "whitespace"),
        (
            "postgresql://u:p@h1,h2/db?hostaddr=10.0.0.1",
            "2 hosts for 1 hostaddr",
        ),
        (
            "postgresql://u:p@h/db?hostaddr=10.0.0.1,10.0.0.2",
            "1 hosts for 2 hostaddr",
        ),
        (
            "postgresql://u:p@h/db?hostaddr=10.0.0.1&port=1,2",
            "2 ports for 1 hosts",
        ),
    ] {
        match problem(raw) {
            UrlProblem::Malformed(reason) => assert!(reason.contains(why), "{raw:?}: {reason}"),
            other => panic!("{raw:?}: {other:?}"),
        }
    }
    assert!(
        ServiceUrl::parse(
            "postgresql://u:p@h1,h2/db?hostaddr=10.0.0.1,::1",
            Scheme::Postgres
        )
        .is_ok()
    );
    // Integers as the driver reads them, and never "wait for ever".
    for bad in [
        "connect_timeout=0",
        "connect_timeout=-1",
        "connect_timeout=%205",
        "tcp_user_timeout=1.5",
        "keepalives=-1",
    ] {
        let raw = format!("postgresql://u@h/db?{bad}");
        let url = ServiceUrl::parse(&raw, Scheme::Postgres).unwrap();
        assert!(url.check_app_support().is_err(), "{bad}");
    }
    assert!(app("postgresql://u@h/db?tcp_user_timeout=5000&connect_timeout=1").is_ok());
    // The Redis client refuses a database that is not a number.
    assert!(ServiceUrl::parse("redis://h:6379/zero", Scheme::Redis).is_err());
}

#[test]
fn a_parameter_holding_a_credential_is_masked_whole_in_the_url() {
    let url = ServiceUrl::parse(
        "postgresql://u:pw@h/d?options=-c%20my.password%3DCanary&application_name=a%20b",
        Scheme::Postgres,
    )
    .unwrap();
    assert_eq!(
        url.to_string(),
        "postgresql://u:***@h/d?options=***&application_name=a%20b"
    );
    assert_eq!(
        url.describe(),
        "host=h user=u password=*** dbname=d options=-c my.password=*** application_name=a b"
    );
}

#[test]
fn rewrites_address_and_database() {
    let url = ServiceUrl::parse(
        "postgresql://u:p@localhost:5433/test_db?application_name=x",
        Scheme::Postgres,
    )
    .unwrap();
    assert_eq!(
        url.with_address("test-db", 5432).expose(),
        "postgresql://u:p@test-db:5432/test_db?application_name=x"
    );
    assert_eq!(
        url.with_database("other").expose(),
        "postgresql://u:p@localhost:5433/other?application_name=x"
    );
    assert_eq!(url.database(), "test_db");
    let redis = ServiceUrl::parse("redis://:pw@localhost:6380/0", Scheme::Redis).unwrap();
    assert_eq!(redis.to_string(), "redis://:***@localhost:6380/0");
    let redis = ServiceUrl::parse("redis://:p%40w@localhost:6380/0", Scheme::Redis).unwrap();
    assert_eq!(redis.password().unwrap().expose(), "p@w");
    assert_eq!(redis.expose(), "redis://:p%40w@localhost:6380/0");
    assert!(ServiceUrl::parse("redis://:p@w@localhost:6380/0", Scheme::Redis).is_err());
    let tls = ServiceUrl::parse("rediss://:pw@cache.example:6380/0", Scheme::Redis).unwrap();
    assert_eq!(tls.expose(), "rediss://:pw@cache.example:6380/0");
}

// ---- the libpq oracle -----------------------------------------------------------------------

/// The URLs of `corpus.txt`, its escapes (`\\n`, `\\r`, `\\t`, `\\s` for a space, `\\\\`)
/// replaced, so that a line can hold what a line cannot show.
fn corpus() -> Vec<String> {
    include_str!("corpus.txt")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("# "))
        .map(|line| {
            let mut out = String::new();
            let mut chars = line.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some('s') => out.push(' '),
                    Some('\\') => out.push('\\'),
                    other => panic!("corpus.txt: unknown escape \\{other:?} in {line}"),
                }
            }
            out
        })
        .collect()
}

/// Our reading in libpq's terms: the options libpq would hold.
fn as_libpq(url: &ServiceUrl) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = url.params().iter().cloned().collect();
    if !url.hosts().is_empty() {
        map.insert("host".into(), url.hosts().join(","));
    }
    let ports: Vec<String> = url
        .ports()
        .iter()
        .map(|p| p.map(|p| p.to_string()).unwrap_or_default())
        .collect();
    if !ports.is_empty() {
        map.insert("port".into(), ports.join(","));
    }
    if let Some(user) = &url.user {
        map.insert("user".into(), user.clone());
    }
    if let Some(password) = url.password() {
        map.insert("password".into(), password.expose().to_owned());
    }
    map.insert("dbname".into(), url.database().to_owned());
    map
}

/// libpq's options with the port written out for every host, 5432 where it is left empty.
fn with_default_ports(map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut map = map.clone();
    let hosts = map.get("host").map_or(1, |h| h.split(',').count());
    let ports: Vec<String> = map
        .get("port")
        .map(|p| p.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let port_of = |i: usize| {
        let p = match ports.len() {
            0 => "",
            1 => ports[0].as_str(),
            _ => ports[i].as_str(),
        };
        if p.is_empty() {
            "5432".to_owned()
        } else {
            p.to_owned()
        }
    };
    let all: Vec<String> = (0..hosts).map(port_of).collect();
    map.insert("port".into(), all.join(","));
    map
}

#[test]
fn libpq_reads_every_url_of_the_corpus_as_we_do() {
    let Some(oracle) = Oracle::build() else {
        return;
    };
    let corpus = corpus();
    assert!(corpus.len() >= 130, "the corpus shrank");
    // The spellings the settings normalise (`postgresql+asyncpg://`) are given to libpq
    // normalised: what is compared is the rest of the URL. Everything else (capitals, spaces
    // around, a trailing newline) goes to libpq as written.
    let normalised: Vec<String> = corpus
        .iter()
        .map(|raw| match raw.split_once("://") {
            Some((scheme, rest)) if scheme.starts_with("postgres") && scheme.contains('+') => {
                format!("postgresql://{rest}")
            }
            _ => raw.clone(),
        })
        .collect();
    let theirs = oracle.read(&normalised);
    let ours: Vec<Result<ServiceUrl, UrlProblem>> = corpus
        .iter()
        .map(|raw| ServiceUrl::parse(raw, Scheme::Postgres))
        .collect();
    let rendered: Vec<String> = ours
        .iter()
        .filter_map(|o| o.as_ref().ok().map(ServiceUrl::expose))
        .collect();
    let reread = oracle.read(&rendered);
    let mut reread = reread.into_iter();

    let (mut both, mut stricter, mut disagreements) = (0, 0, Vec::new());
    for ((raw, ours), theirs) in corpus.iter().zip(&ours).zip(&theirs) {
        // An empty `host`, `port`, `user` or `password` (`?host=`) is libpq's default, as an
        // absent one is.
        let theirs = &theirs.clone().map(|mut map| {
            map.retain(|k, v| {
                !(matches!(k.as_str(), "host" | "port" | "user" | "password") && v.is_empty())
            });
            map
        });
        match (ours, theirs) {
            (Ok(url), Ok(libpq)) => {
                both += 1;
                // libpq gives the empty `dbname` of `postgresql://h/` no value; we refuse it.
                if &as_libpq(url) != libpq {
                    disagreements.push(format!("{raw}: libpq {libpq:?}, we {:?}", as_libpq(url)));
                }
            }
            (Ok(url), Err(err)) => {
                disagreements.push(format!("{raw}: libpq refuses ({err}), we read {url:?}"))
            }
            (Err(why), Ok(_)) => {
                stricter += 1;
                eprintln!("refused only by us: {raw} ({why:?})");
            }
            (Err(_), Err(_)) => {}
        }
        if let Ok(url) = ours {
            // The canonical rendering means the same to libpq as the original.
            // Where libpq leaves a port empty it uses 5432 (the xtask clears PGPORT), which the
            // rendering writes out.
            match reread.next().unwrap() {
                Ok(libpq) if with_default_ports(&libpq) == with_default_ports(&as_libpq(url)) => {}
                other => disagreements.push(format!(
                    "{raw}: rendered as {}, which libpq reads as {other:?}",
                    url.expose()
                )),
            }
        }
    }
    drop(oracle);
    eprintln!(
        "libpq oracle: {} URLs, {both} read by both, {stricter} refused only by us, {} disagreements",
        corpus.len(),
        disagreements.len()
    );
    assert!(
        disagreements.is_empty(),
        "libpq disagrees:\n{}",
        disagreements.join("\n")
    );
}

/// The application's driver reads the canonical rendering of every URL the settings accept
/// for it as we read it: same hosts, ports, user, password, database and parameters.
#[test]
fn the_driver_reads_every_accepted_url_as_we_do() {
    use tokio_postgres::config::Host;

    let corpus = corpus();
    let mut accepted = 0;
    let mut disagreements = Vec::new();
    for raw in &corpus {
        let Ok(url) = ServiceUrl::parse(raw, Scheme::Postgres) else {
            continue;
        };
        if url.check_app_support().is_err() {
            continue;
        }
        accepted += 1;
        // The application reads the TLS parameters itself (genesis-api's tls::split_url) and
        // gives the driver the rest.
        let exposed = url.expose();
        let (base, query) = exposed.split_once('?').unwrap_or((&exposed, ""));
        let rest: Vec<&str> = query
            .split('&')
            .filter(|p| {
                !p.is_empty()
                    && !["sslmode", "sslrootcert", "sslcert", "sslkey"]
                        .contains(&p.split('=').next().unwrap_or(""))
            })
            .collect();
        let driver_url = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let config: tokio_postgres::Config = match driver_url.parse() {
            Ok(config) => config,
            Err(err) => {
                disagreements.push(format!("{raw}: the driver refuses it: {err}"));
                continue;
            }
        };
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let ports: Vec<u16> = url.endpoints(5432).iter().map(|(_, p)| *p).collect();
        // The driver, like libpq, uses 5432 for a host without a port.
        let theirs_ports: Vec<u16> = match config.get_ports() {
            [] => vec![5432; hosts.len()],
            [one] if hosts.len() > 1 => vec![*one; hosts.len()],
            ports => ports.to_vec(),
        };
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let same = hosts == url.hosts()
            && theirs_ports == ports
            && config.get_user() == Some(url.user())
            && password.as_deref() == url.password().map(Secret::expose)
            && config.get_dbname() == Some(url.database())
            && config.get_application_name() == url.param("application_name")
            && config.get_options() == url.param("options");
        if !same {
            disagreements.push(format!("{raw}: the driver reads {config:?}"));
        }
    }
    eprintln!(
        "driver oracle: {} URLs, {accepted} accepted for the application, {} disagreements",
        corpus.len(),
        disagreements.len()
    );
    assert!(accepted >= 30, "the corpus lost its accepted URLs");
    assert!(
        disagreements.is_empty(),
        "the driver disagrees:\n{}",
        disagreements.join("\n")
    );
}

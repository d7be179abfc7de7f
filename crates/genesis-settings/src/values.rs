//! Reading the settings' values: URLs as libpq and the driver read them, booleans, the
//! database URL assembled from `POSTGRES_*`, and the host-to-network address translation
//! inside a container.

use genesis_model::{self as model, Env};

use crate::sources::Vars;
use crate::{ConfigError, Scheme, ServiceUrl, Source, UrlProblem, secret};

/// Inside a container, the model's host addresses (`localhost:5433`) mean nothing: translate
/// them to the in-network ones (`test-db:5432`). Any other address is left as the user wrote it.
pub(crate) fn to_network(url: ServiceUrl) -> ServiceUrl {
    let pairs = [model::TEST_DB, model::DEV_DB]
        .iter()
        .filter_map(|db| db.compose())
        .map(|db| (db.host_address, db.network_address))
        .chain([(model::REDIS.host_address, model::REDIS.network_address)]);
    for (host, network) in pairs {
        let is_local = matches!(url.host(), "localhost" | "127.0.0.1" | "::1");
        if url.hosts().len() == 1 && is_local && url.port() == Some(host.port) {
            return url.with_address(network.host, network.port);
        }
    }
    url
}

/// A URL of the application's database: read as libpq reads it, then refused if the
/// application's driver would refuse it or read it differently.
pub(crate) fn parse_app_url(
    var: &str,
    raw: &str,
    origin: Source,
) -> Result<ServiceUrl, ConfigError> {
    let url = parse_url(var, raw, origin.clone(), Scheme::Postgres)?;
    url.check_app_support()
        .map_err(|problem| ConfigError::InvalidUrl {
            var: var.into(),
            origin,
            expected: "PostgreSQL",
            reason: match problem {
                UrlProblem::Malformed(reason) => reason,
                other => format!("{other:?}"),
            },
        })?;
    Ok(url)
}

pub(crate) fn parse_url(
    var: &str,
    raw: &str,
    origin: Source,
    scheme: Scheme,
) -> Result<ServiceUrl, ConfigError> {
    let expected = match scheme {
        Scheme::Postgres => "PostgreSQL",
        Scheme::Redis => "Redis",
    };
    ServiceUrl::parse(raw, scheme).map_err(|problem| match problem {
        UrlProblem::Sqlite => ConfigError::Sqlite {
            var: var.into(),
            origin,
        },
        UrlProblem::WrongScheme { found, .. } => ConfigError::InvalidUrl {
            var: var.into(),
            origin,
            expected,
            reason: format!("the scheme {found}:// is not accepted"),
        },
        UrlProblem::Malformed(reason) => ConfigError::InvalidUrl {
            var: var.into(),
            origin,
            expected,
            reason,
        },
    })
}

pub(crate) fn assemble_database_url(
    vars: &Vars,
    server: &str,
    environment: Env,
) -> Result<ServiceUrl, ConfigError> {
    let required = |var: &'static str| match vars.get(var) {
        Ok(Some((value, _))) if !value.is_empty() => Ok(value),
        Ok(_) => Err(ConfigError::MissingPart { var }),
        Err(err) => Err(err),
    };
    let user = required("POSTGRES_USER")?;
    let db = required("POSTGRES_DB")?;
    // The dev database always has a password (its compose service needs one): without it the
    // URL would only fail later, at login.
    let password = if environment == Env::Dev {
        required("POSTGRES_PASSWORD")?
    } else {
        vars.get("POSTGRES_PASSWORD")?
            .map(|(p, _)| p)
            .unwrap_or_default()
    };
    let port = match vars.get("POSTGRES_PORT")? {
        Some((port, origin)) => port.parse::<u16>().map_err(|_| ConfigError::InvalidValue {
            var: "POSTGRES_PORT".into(),
            origin,
            value: port,
            expected: "a port number",
        })?,
        None => model::POSTGRES_PORT,
    };
    // Every part is percent-encoded: a password with `@`, `:`, `/` or `%` means itself.
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, secret::URL_PART).to_string();
    let host = if server.contains(':') {
        format!("[{server}]")
    } else {
        enc(server)
    };
    let raw = if password.is_empty() {
        format!("postgresql://{}@{host}:{port}/{}", enc(&user), enc(&db))
    } else {
        format!(
            "postgresql://{}:{}@{host}:{port}/{}",
            enc(&user),
            enc(&password),
            enc(&db)
        )
    };
    parse_app_url("DATABASE_URL", &raw, Source::Assembled)
}

//! The settings against real env files and environments: precedence, URL handling, container
//! detection and redaction.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

const CANARY: &str = "canary-Zq8w1x";

/// A folder with the given env files, removed when dropped.
struct Fixture(PathBuf);

impl Fixture {
    fn new(files: &[(&str, &str)]) -> Fixture {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "genesis-settings-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Fixture(dir)
    }

    fn resolve(&self, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::resolve(&env, &self.0, None)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const ENV_TEST: &str = "TEST_DATABASE_URL=postgresql+asyncpg://test_user:test_password@localhost:5433/test_db\nTESTING_MODE=true\nSTRICT_HEALTH_CHECKS=false\n";

#[test]
fn assembles_database_url_from_parts() {
    let fx = Fixture::new(&[]);
    let s = fx
        .resolve(&[
            ("POSTGRES_SERVER", "db.internal"),
            ("POSTGRES_PORT", "6543"),
            ("POSTGRES_USER", "genesis_user"),
            ("POSTGRES_PASSWORD", CANARY),
            ("POSTGRES_DB", "genesis_db"),
        ])
        .unwrap();
    let url = s.database_url.unwrap();
    assert_eq!(
        url.expose(),
        format!("postgresql://genesis_user:{CANARY}@db.internal:6543/genesis_db")
    );
    assert_eq!(s.sources["DATABASE_URL"], Source::Assembled);

    let err = fx
        .resolve(&[("POSTGRES_SERVER", "h"), ("POSTGRES_USER", "u")])
        .unwrap_err();
    assert!(
        err.to_string().starts_with("POSTGRES_DB is not set"),
        "{err}"
    );
}

#[test]
fn explicit_database_url_wins_over_parts() {
    let fx = Fixture::new(&[]);
    let s = fx
        .resolve(&[
            ("DATABASE_URL", "postgresql://a:b@h:1/x"),
            ("POSTGRES_SERVER", "other"),
        ])
        .unwrap();
    assert_eq!(s.database_url.unwrap().host(), "h");
}

#[test]
fn test_database_on_the_host_and_in_a_container() {
    let fx = Fixture::new(&[(".env.test", ENV_TEST)]);
    let host = fx.resolve(&[("ENVIRONMENT", "test")]).unwrap();
    assert_eq!(host.runtime, Runtime::Host);
    assert_eq!(
        host.test_database_url.expose(),
        "postgresql://test_user:test_password@localhost:5433/test_db"
    );
    assert_eq!(host.redis_url.expose(), "redis://localhost:6380/0");

    // Inside a container the same .env.test, written for the host, resolves in-network.
    let container = fx
        .resolve(&[("ENVIRONMENT", "test"), ("RUNNING_IN_DOCKER", "1")])
        .unwrap();
    assert_eq!(container.runtime, Runtime::Container);
    assert_eq!(
        container.test_database_url.expose(),
        "postgresql://test_user:test_password@test-db:5432/test_db"
    );
    assert_eq!(container.redis_url.expose(), "redis://redis:6379/0");
    assert_eq!(container.bind.to_string(), "0.0.0.0:8000");

    // With no env file at all the model's defaults give the same addresses.
    let bare = Fixture::new(&[]);
    let s = bare.resolve(&[("RUNNING_IN_DOCKER", "true")]).unwrap();
    assert_eq!(
        s.test_database_url.to_string(),
        "postgresql://test_user:***@test-db:5432/test_db"
    );
    assert_eq!(s.sources["TEST_DATABASE_URL"], Source::Default);

    // An address that is not the model's is left as written.
    let s = bare
        .resolve(&[
            ("RUNNING_IN_DOCKER", "1"),
            ("TEST_DATABASE_URL", "postgresql://u:p@db.example:5432/t"),
        ])
        .unwrap();
    assert_eq!(s.test_database_url.host(), "db.example");
}

#[test]
fn sqlite_is_rejected_naming_variable_and_source() {
    let fx = Fixture::new(&[(
        ".env.local",
        "ENVIRONMENT=development\nDATABASE_URL=sqlite:///./genesis.db\n",
    )]);
    let err = fx.resolve(&[]).unwrap_err().to_string();
    assert!(err.starts_with("DATABASE_URL (from "), "{err}");
    assert!(err.contains(".env.local:2) is a SQLite URL"), "{err}");

    let err = fx
        .resolve(&[
            ("TEST_DATABASE_URL", "sqlite+aiosqlite:///t.db"),
            ("ENVIRONMENT", "test"),
        ])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "TEST_DATABASE_URL (from the environment) is a SQLite URL; Genesis runs on PostgreSQL only: \
         set it to a postgresql:// URL of the server"
    );
}

#[test]
fn asyncpg_urls_are_normalised() {
    let fx = Fixture::new(&[]);
    let s = fx
        .resolve(&[(
            "DATABASE_URL",
            &format!("postgresql+asyncpg://genesis_user:{CANARY}@localhost:5435/genesis_db"),
        )])
        .unwrap();
    assert_eq!(
        s.database_url.unwrap().expose(),
        format!("postgresql://genesis_user:{CANARY}@localhost:5435/genesis_db")
    );
}

#[test]
fn production_refuses_missing_url_and_default_secret() {
    let prod_file = "DATABASE_URL=${DATABASE_URL}\nPOSTGRES_PASSWORD=${POSTGRES_PASSWORD}\nENVIRONMENT=production\nSTRICT_HEALTH_CHECKS=true\n";
    let fx = Fixture::new(&[(".env.production", prod_file)]);
    let strong = STRONG_SECRET.to_owned();

    let err = fx
        .resolve(&[("ENVIRONMENT", "production"), ("TOKEN_SECRET", &strong)])
        .unwrap_err();
    assert!(
        matches!(err, ConfigError::ProductionWithoutDatabaseUrl),
        "{err}"
    );

    let parts = [
        ("ENVIRONMENT", "production"),
        ("TOKEN_SECRET", &strong),
        ("POSTGRES_SERVER", "h"),
        ("POSTGRES_USER", "u"),
        ("POSTGRES_DB", "d"),
    ];
    assert!(matches!(
        fx.resolve(&parts).unwrap_err(),
        ConfigError::ProductionWithoutDatabaseUrl
    ));

    let url = "postgresql://genesis_prod_user:pw@db.cloud:5432/genesis_ai_prod";
    let err = fx
        .resolve(&[("ENVIRONMENT", "production"), ("DATABASE_URL", url)])
        .unwrap_err();
    assert!(matches!(err, ConfigError::WeakTokenSecret), "{err}");
    let err = fx
        .resolve(&[
            ("ENVIRONMENT", "production"),
            ("DATABASE_URL", url),
            ("TOKEN_SECRET", model::DEV_TOKEN_SECRET),
        ])
        .unwrap_err();
    assert!(matches!(err, ConfigError::WeakTokenSecret), "{err}");
    // The message tells the user what to do, and holds no secret for the redaction to eat.
    assert_eq!(redact(&err.to_string()), err.to_string());
    assert!(err.to_string().contains("32 random characters"), "{err}");

    // Long enough, but a repeated pattern.
    for weak in ["a".repeat(32), "ab".repeat(20), "0123".repeat(8)] {
        let err = fx
            .resolve(&[
                ("ENVIRONMENT", "production"),
                ("DATABASE_URL", url),
                ("TOKEN_SECRET", &weak),
            ])
            .unwrap_err();
        assert!(matches!(err, ConfigError::WeakTokenSecret), "{weak}: {err}");
        assert!(err.to_string().contains("openssl rand -hex 32"), "{err}");
    }

    let s = fx
        .resolve(&[
            ("ENVIRONMENT", "production"),
            ("DATABASE_URL", url),
            ("TOKEN_SECRET", &strong),
        ])
        .unwrap();
    assert!(s.strict_health_checks);
    assert_eq!(s.app_database_url().unwrap().host(), "db.cloud");

    // Redis: TLS to anything but this machine.
    let redis = |value: &str| {
        fx.resolve(&[
            ("ENVIRONMENT", "production"),
            ("DATABASE_URL", url),
            ("TOKEN_SECRET", &strong),
            ("REDIS_URL", value),
        ])
    };
    let err = redis("redis://:pw@cache.example:6379/0").unwrap_err();
    assert!(matches!(err, ConfigError::PlaintextRedis { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "REDIS_URL (from the environment) is a plaintext redis:// URL to a host that is not \
         this machine; production requires TLS: write it rediss://"
    );
    for fine in [
        "rediss://:pw@cache.example:6379/0",
        "redis://localhost:6380/0",
        "redis://127.0.0.1:6379/0",
        "redis://[::1]:6379/0",
    ] {
        redis(fine).unwrap_or_else(|err| panic!("{fine}: {err}"));
    }
    // The Redis client refuses a database that is not a number; so do the settings.
    let err = fx
        .resolve(&[("REDIS_URL", "redis://localhost:6379/zero")])
        .unwrap_err();
    assert!(err.to_string().contains("not a number"), "{err}");
}

/// A token secret production accepts: 64 hexadecimal digits, as `openssl rand -hex 32` makes.
const STRONG_SECRET: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

#[test]
fn malformed_env_file_names_file_and_line() {
    let fx = Fixture::new(&[(
        ".env.test",
        "TESTING_MODE=true\nTEST_DATABASE_URL postgresql://x\n",
    )]);
    let err = fx
        .resolve(&[("ENVIRONMENT", "test")])
        .unwrap_err()
        .to_string();
    assert!(err.contains(".env.test:2: expected KEY=VALUE"), "{err}");
}

#[test]
fn unknown_environment_and_bad_flags_are_named() {
    let fx = Fixture::new(&[(".env.test", "STRICT_HEALTH_CHECKS=maybe\n")]);
    let err = fx
        .resolve(&[("ENVIRONMENT", "staging")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "ENVIRONMENT (from the environment) is \"staging\"; expected development, test or production"
    );
    let err = fx
        .resolve(&[("ENVIRONMENT", "test")])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("STRICT_HEALTH_CHECKS (from ") && err.contains(".env.test:1)"),
        "{err}"
    );
}

#[test]
fn dev_password_comes_from_dot_env() {
    let local = "DATABASE_URL=postgresql://genesis_user:${POSTGRES_PASSWORD}@localhost:5435/genesis_db\nENVIRONMENT=development\nDEBUG=true\n";
    let fx = Fixture::new(&[
        (".env.local", local),
        (".env", &format!("POSTGRES_PASSWORD={CANARY}\n")),
    ]);
    let s = fx.resolve(&[]).unwrap();
    assert_eq!(
        s.database_url
            .as_ref()
            .unwrap()
            .password()
            .unwrap()
            .expose(),
        CANARY
    );
    assert!(s.debug);

    let only_local = Fixture::new(&[(".env.local", local)]);
    let err = only_local.resolve(&[]).unwrap_err().to_string();
    assert!(
        err.contains("refers to ${POSTGRES_PASSWORD}, which is not set"),
        "{err}"
    );
}

#[test]
fn the_canary_password_is_never_shown() {
    let fx = Fixture::new(&[]);
    let url =
        format!("postgresql://genesis_user:{CANARY}@localhost:5435/genesis_db?password={CANARY}");
    let s = fx
        .resolve(&[
            ("DATABASE_URL", &url),
            ("TOKEN_SECRET", CANARY),
            ("REDIS_URL", &format!("redis://:{CANARY}@localhost:6380/0")),
        ])
        .unwrap();
    let mut shown = format!("{s:?}\n{}\n", s.database_url.as_ref().unwrap());
    for (name, value, source) in s.report() {
        shown.push_str(&format!("{name} {value} {source}\n"));
    }
    // Errors built from secret-bearing input do not carry it either.
    let bad = [
        (
            "DATABASE_URL",
            format!("postgresql://u:{CANARY}@h:notaport/db"),
        ),
        ("DATABASE_URL", format!("mysql://u:{CANARY}@h/db")),
        ("DATABASE_URL", format!("sqlite:///{CANARY}.db")),
        ("REDIS_URL", format!("postgresql://u:{CANARY}@h/db")),
    ];
    for (var, value) in bad {
        let err = fx.resolve(&[(var, &value)]).unwrap_err();
        shown.push_str(&format!("{err}\n{err:?}\n"));
    }
    assert!(!shown.contains(CANARY), "the canary leaked:\n{shown}");
    assert!(shown.contains("genesis_user:***@localhost:5435"), "{shown}");
}

#[test]
fn limits_have_defaults_and_refuse_bad_numbers() {
    let fx = Fixture::new(&[(".env.test", "DB_POOL_SIZE=25\n")]);
    let settings = fx
        .resolve(&[("ENVIRONMENT", "test"), ("REQUEST_TIMEOUT_SECS", "12")])
        .unwrap();
    assert_eq!(settings.pool_size, 25);
    assert_eq!(settings.request_timeout, Duration::from_secs(12));
    assert_eq!(settings.pool_timeout, Duration::from_secs(5));
    assert_eq!(settings.health_check_timeout, Duration::from_millis(1500));
    assert!(settings.hash_concurrency >= 1);
    let settings = fx
        .resolve(&[("ENVIRONMENT", "test"), ("HEALTH_CHECK_TIMEOUT_MS", "800")])
        .unwrap();
    assert_eq!(settings.health_check_timeout, Duration::from_millis(800));
    for (var, value) in [
        ("DB_POOL_SIZE", "0"),
        ("DB_POOL_SIZE", "ten"),
        ("HASH_CONCURRENCY", "-1"),
        ("DB_POOL_TIMEOUT_SECS", "1.5"),
        ("REQUEST_TIMEOUT_SECS", "99999"),
        ("HEALTH_CHECK_TIMEOUT_MS", "10"),
    ] {
        let err = fx
            .resolve(&[("ENVIRONMENT", "test"), (var, value)])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{var} (from the environment) is {value:?}")),
            "{err}"
        );
    }
}

const NASTY: &str = "p@ss:w/rd%41$x#1 \"q\"";

#[test]
fn assembles_a_url_whose_password_means_itself() {
    let fx = Fixture::new(&[]);
    let s = fx
        .resolve(&[
            ("POSTGRES_SERVER", "localhost"),
            ("POSTGRES_PORT", "5435"),
            ("POSTGRES_USER", "genesis_user"),
            ("POSTGRES_PASSWORD", NASTY),
            ("POSTGRES_DB", "genesis_db"),
        ])
        .unwrap();
    let url = s.database_url.as_ref().unwrap();
    assert_eq!(url.password().unwrap().expose(), NASTY);
    assert_eq!(url.hosts(), ["localhost"]);
    assert_eq!(url.user(), "genesis_user");
    assert_eq!(
        url.expose(),
        "postgresql://genesis_user:p%40ss%3Aw%2Frd%2541%24x%231%20%22q%22@localhost:5435/genesis_db"
    );
    let shown: String = s
        .report()
        .iter()
        .map(|(n, v, o)| format!("{n} {v} {o}\n"))
        .collect();
    assert!(
        !shown.contains("p@ss") && !shown.contains("p%40ss"),
        "{shown}"
    );
    assert!(
        shown.contains("host=localhost port=5435 user=genesis_user password=*** dbname=genesis_db"),
        "{shown}"
    );
}

#[test]
fn dot_env_read_as_compose_reads_it_and_winning_over_env_local() {
    let local = "POSTGRES_SERVER=localhost\nPOSTGRES_PORT=5435\nPOSTGRES_USER=genesis_user\nPOSTGRES_DB=genesis_db\nPOSTGRES_PASSWORD=from-local\n";
    let fx = Fixture::new(&[
        (".env.local", local),
        (".env", &format!("POSTGRES_PASSWORD='{NASTY}'\n")),
    ]);
    let s = fx.resolve(&[]).unwrap();
    let url = s.database_url.unwrap();
    assert_eq!(url.password().unwrap().expose(), NASTY);
    assert_eq!(url.port(), Some(5435));

    // A value Compose v1 and v2 read differently is refused with its file and line.
    let fx = Fixture::new(&[
        (".env.local", local),
        (".env", "POSTGRES_PASSWORD=pa$word\n"),
    ]);
    let err = fx.resolve(&[]).unwrap_err().to_string();
    assert!(err.contains(".env:1: $NAME without braces"), "{err}");
}

#[test]
fn refuses_what_the_driver_would_refuse_naming_the_variable() {
    let fx = Fixture::new(&[]);
    for (url, why) in [
        (
            "postgresql://u:p@h/db?foo=1",
            "foo is not a libpq connection parameter",
        ),
        (
            "postgresql://u:p@h/db?PASSWORD=x",
            "is not a libpq connection parameter",
        ),
        (
            "postgresql://u:p@ss@h/db",
            "an @ in a user name or password must be written %40",
        ),
        ("postgresql:///db", "names no host"),
        (
            "postgresql://u@h/db?sslcrl=/crl.pem",
            "not supported by the application's driver",
        ),
    ] {
        let err = fx
            .resolve(&[("DATABASE_URL", url)])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("DATABASE_URL (from the environment) is not a valid PostgreSQL URL: ")
                && err.contains(why),
            "{url}: {err}"
        );
        assert!(!err.contains("ss@h"), "{err}");
    }
    // Sockets and several hosts work.
    let s = fx
        .resolve(&[(
            "DATABASE_URL",
            "postgresql://u@/genesis_db?host=/var/run/postgresql&port=5501",
        )])
        .unwrap();
    assert_eq!(s.database_url.unwrap().hosts(), ["/var/run/postgresql"]);
    let s = fx
        .resolve(&[("DATABASE_URL", "postgresql://u@h1:1,h2:2/db")])
        .unwrap();
    assert_eq!(s.database_url.unwrap().hosts(), ["h1", "h2"]);
}

#[test]
fn the_search_stops_at_the_workspace_root_and_refuses_non_files() {
    // A parent folder's .env is not the workspace's.
    let outer = Fixture::new(&[(".env", "BIND_ADDR=0.0.0.0:9\n")]);
    let inner = outer.0.join("checkout");
    std::fs::create_dir_all(inner.join("crates")).unwrap();
    std::fs::write(inner.join("Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
    let s = Settings::resolve(&[], &inner.join("crates"), None).unwrap();
    assert_eq!(s.bind.to_string(), "127.0.0.1:8000");
    assert!(s.files.is_empty(), "{:?}", s.files);

    // A folder or a broken link named .env.local is an error, not a file to skip.
    std::fs::create_dir_all(inner.join(".env.local")).unwrap();
    let err = Settings::resolve(&[], &inner, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains(".env.local: it is not a file"), "{err}");
    std::fs::remove_dir(inner.join(".env.local")).unwrap();
    std::os::unix::fs::symlink(inner.join("nowhere"), inner.join(".env.local")).unwrap();
    let err = Settings::resolve(&[], &inner, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains(".env.local"), "{err}");
}

#[test]
fn every_password_the_settings_know_is_masked_by_value() {
    let fx = Fixture::new(&[(".env", "POSTGRES_PASSWORD='zq-file-9Kx'\n")]);
    fx.resolve(&[
        ("DATABASE_URL", "postgresql://u@h/db"),
        ("REDIS_PASSWORD", "zq-env-7Hw"),
    ])
    .unwrap();
    let text = "a log line with zq-file-9Kx, zq-env-7Hw and zq-file-9Kx again";
    assert_eq!(redact(text), "a log line with ***, *** and *** again");

    // Secret by name, except our own public switches.
    assert!(is_secret_key("POSTGRES_PASSWORD") && is_secret_key("token_secret"));
    assert!(!is_secret_key(PASSWORD_HASH_COST));
}

#[test]
fn password_cost_is_the_minimum_in_test_only_and_production_refuses_less() {
    let fx = Fixture::new(&[]);
    let cost = |env: &[(&str, &str)]| fx.resolve(env).map(|s| s.password_cost.name);
    assert_eq!(cost(&[("ENVIRONMENT", "test")]).unwrap(), "minimum");
    assert_eq!(
        cost(&[("ENVIRONMENT", "development")]).unwrap(),
        "production"
    );
    assert_eq!(
        cost(&[("ENVIRONMENT", "test"), (PASSWORD_HASH_COST, "production")]).unwrap(),
        "production"
    );
    let err = cost(&[("ENVIRONMENT", "test"), (PASSWORD_HASH_COST, "low")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "PASSWORD_HASH_COST (from the environment) is \"low\"; expected production or minimum"
    );

    let strong = STRONG_SECRET;
    let prod = [
        ("ENVIRONMENT", "production"),
        (
            "DATABASE_URL",
            "postgresql://u:p@db.cloud:5432/genesis_ai_prod",
        ),
        ("TOKEN_SECRET", strong),
    ];
    assert_eq!(cost(&prod).unwrap(), "production");
    let err = fx
        .resolve(&[prod.as_slice(), &[(PASSWORD_HASH_COST, "minimum")]].concat())
        .unwrap_err();
    assert!(matches!(err, ConfigError::WeakPasswordCost { .. }), "{err}");
}

#[test]
fn every_config_error_has_its_message() {
    fn check(err: ConfigError, expected: &str) {
        assert_eq!(err.to_string(), expected);
    }
    let origin = || Source::File {
        path: PathBuf::from(".env"),
        line: 3,
    };
    check(
        ConfigError::Sqlite {
            var: "DATABASE_URL".into(),
            origin: Source::Environment,
        },
        "DATABASE_URL (from the environment) is a SQLite URL; Genesis runs on PostgreSQL only: \
         set it to a postgresql:// URL of the server",
    );
    check(
        ConfigError::InvalidUrl {
            var: "REDIS_URL".into(),
            origin: origin(),
            expected: "Redis",
            reason: "no host".into(),
        },
        "REDIS_URL (from .env:3) is not a valid Redis URL: no host",
    );
    check(
        ConfigError::EnvFile {
            path: PathBuf::from("dir/.env.test"),
            line: 7,
            reason: "unterminated quote".into(),
        },
        "dir/.env.test:7: unterminated quote",
    );
    check(
        ConfigError::Io {
            path: PathBuf::from("/x/.env"),
            reason: "permission denied".into(),
        },
        "cannot read /x/.env: permission denied",
    );
    check(
        ConfigError::InvalidValue {
            var: "DEBUG".into(),
            origin: Source::Assembled,
            value: "maybe \"so\"".into(),
            expected: "true or false",
        },
        "DEBUG (from the POSTGRES_* variables) is \"maybe \\\"so\\\"\"; expected true or false",
    );
    check(
        ConfigError::Unresolved {
            var: "DATABASE_URL".into(),
            origin: Source::Default,
            missing: "POSTGRES_PASSWORD".into(),
        },
        "DATABASE_URL (from the model's default) refers to ${POSTGRES_PASSWORD}, which is not set",
    );
    check(
        ConfigError::MissingPart { var: "POSTGRES_DB" },
        "POSTGRES_DB is not set; it is needed to assemble DATABASE_URL from POSTGRES_SERVER",
    );
    check(
        ConfigError::ProductionWithoutDatabaseUrl,
        "production requires an explicit DATABASE_URL in the environment \
         (.env.production only refers to it, and POSTGRES_* parts are not accepted there)",
    );
    check(
        ConfigError::WeakTokenSecret,
        "production requires a TOKEN_SECRET of at least 32 random characters holding at \
         least 96 bits of entropy, not the development default nor a repeated pattern: \
         generate one with `openssl rand -hex 32`",
    );
    check(
        ConfigError::WeakPasswordCost { origin: origin() },
        "PASSWORD_HASH_COST (from .env:3) lowers the password hashing cost; production keeps \
         `production`",
    );
    let err: &dyn std::error::Error = &ConfigError::WeakTokenSecret;
    assert!(err.source().is_none());
}

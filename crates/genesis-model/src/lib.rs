//! The typed environment model: the single source of truth for every environment, service,
//! address, credential source and image of the Genesis workspace.
//!
//! The xtask renders `docker-compose.yml` and the env files from it, and the application's
//! settings take their defaults from it. Nothing else in the workspace repeats these values.
//! This crate has no dependencies so that both sides can read it cheaply.

use std::fmt;

mod service;

pub use service::Service;

/// The prefix of every compose project the xtask runs: a stack's project is
/// `genesis-<checkout id>` (the default stack) or `genesis-<checkout id>-<stack>`, so that
/// checkouts and stacks sharing one Docker engine never share a container, network or volume.
pub const COMPOSE_PROJECT: &str = "genesis";

/// The variable (and the `--stack` flag's environment spelling) that selects a stack.
pub const STACK_VAR: &str = "GENESIS_STACK";

/// The label on every container, network and volume of a stack naming the checkout (its
/// workspace folder) it belongs to, and the compose variable that carries it.
pub const CHECKOUT_LABEL: &str = "org.genesis.checkout";
pub const CHECKOUT_VAR: &str = "GENESIS_CHECKOUT";

/// The label on every container naming the run that started it (`kept` for `db-up`, which
/// leaves its services running on purpose), and the compose variable that carries it.
pub const RUN_LABEL: &str = "org.genesis.run";
pub const RUN_VAR: &str = "GENESIS_RUN";
/// The `uid:gid` the `genesis-api` container runs as: the checkout's owner, set by the xtask
/// (root when compose is run by hand without it).
pub const USER_VAR: &str = "GENESIS_USER";

/// The variable through which compose takes a service's host port. Unset, it is the model's
/// port (the default stack); empty, the engine chooses a free one (every other stack), which
/// the xtask discovers after the start.
pub fn host_port_var(service: &str) -> String {
    format!(
        "GENESIS_{}_PORT",
        service.to_ascii_uppercase().replace('-', "_")
    )
}

/// A deployment environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Env {
    Test,
    Dev,
    Prod,
}

impl Env {
    pub const ALL: [Env; 3] = [Env::Test, Env::Dev, Env::Prod];

    /// The short name used on the command line (`--env test`).
    pub const fn name(self) -> &'static str {
        match self {
            Env::Test => "test",
            Env::Dev => "dev",
            Env::Prod => "prod",
        }
    }

    /// Parses a command-line name or an `ENVIRONMENT` value.
    pub fn parse(s: &str) -> Option<Env> {
        match s.trim().to_ascii_lowercase().as_str() {
            "test" | "testing" => Some(Env::Test),
            "dev" | "development" | "local" => Some(Env::Dev),
            "prod" | "production" => Some(Env::Prod),
            _ => None,
        }
    }

    /// The value of `ENVIRONMENT` the application sees in this environment.
    pub const fn environment_value(self) -> &'static str {
        match self {
            Env::Test => "test",
            Env::Dev => "development",
            Env::Prod => "production",
        }
    }

    /// The committed env file the application loads in this environment.
    pub const fn env_file(self) -> &'static str {
        match self {
            Env::Test => ".env.test",
            Env::Dev => ".env.local",
            Env::Prod => ".env.production",
        }
    }

    pub const fn database(self) -> &'static Database {
        match self {
            Env::Test => &TEST_DB,
            Env::Dev => &DEV_DB,
            Env::Prod => &PROD_DB,
        }
    }
}

impl fmt::Display for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `host:port` pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    pub host: &'static str,
    pub port: u16,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Where a database password comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Password {
    /// A password that is public by design (the disposable test database).
    Public(&'static str),
    /// Read from this variable in the user's environment; never committed.
    FromEnv(&'static str),
}

/// How a compose database keeps its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// In memory (tmpfs), with durability settings off: test data is disposable.
    Disposable,
    /// On a named compose volume that survives `db-down` unless `--volumes` is given.
    Volume(&'static str),
}

/// A database that runs as a compose service: everything about it is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComposeDb {
    pub service: &'static str,
    /// Where the host reaches it on the default stack.
    pub host_address: Address,
    /// Where containers on the compose network reach it.
    pub network_address: Address,
    pub storage: Storage,
}

/// Where a database runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hosting {
    Compose(ComposeDb),
    /// A managed server outside compose (production), reached through `DATABASE_URL` only.
    Managed,
}

/// One PostgreSQL database of an environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Database {
    pub env: Env,
    pub hosting: Hosting,
    pub name: &'static str,
    pub user: &'static str,
    pub password: Password,
    /// The variable that carries this database's URL in the application's settings.
    pub url_var: &'static str,
}

impl Database {
    /// The compose service that runs it; `None` for a managed server.
    pub const fn compose(&self) -> Option<ComposeDb> {
        match self.hosting {
            Hosting::Compose(db) => Some(db),
            Hosting::Managed => None,
        }
    }

    /// The libpq URI as seen from `address`, with the password written as `password`.
    /// Callers choose what `password` is: the real secret, a `${VAR}` placeholder, or a mask.
    pub fn url_with(&self, address: Address, password: &str) -> String {
        format!(
            "postgresql://{}:{}@{}/{}",
            self.user, password, address, self.name
        )
    }
}

/// The application's settings variables that the xtask sets for a process it starts, by name
/// (the settings read the same names; the database URL variables are each database's `url_var`).
pub const ENVIRONMENT_VAR: &str = "ENVIRONMENT";
pub const DATABASE_URL_VAR: &str = "DATABASE_URL";
pub const BIND_ADDR_VAR: &str = "BIND_ADDR";
pub const STRICT_HEALTH_CHECKS_VAR: &str = "STRICT_HEALTH_CHECKS";
pub const DEBUG_VAR: &str = "DEBUG";
pub const TOKEN_SECRET_VAR: &str = "TOKEN_SECRET";

/// PostgreSQL's port inside every container.
pub const POSTGRES_PORT: u16 = 5432;

/// The test database's password: public by design, its data is disposable.
pub const TEST_DB_PASSWORD: &str = "test_password";

/// The variable that holds the dev and production passwords; never committed.
pub const PASSWORD_VAR: &str = "POSTGRES_PASSWORD";

pub const TEST_DB_SERVICE: ComposeDb = ComposeDb {
    service: "test-db",
    host_address: Address {
        host: "localhost",
        port: 5433,
    },
    network_address: Address {
        host: "test-db",
        port: POSTGRES_PORT,
    },
    storage: Storage::Disposable,
};

pub const TEST_DB: Database = Database {
    env: Env::Test,
    hosting: Hosting::Compose(TEST_DB_SERVICE),
    name: "test_db",
    user: "test_user",
    password: Password::Public(TEST_DB_PASSWORD),
    url_var: "TEST_DATABASE_URL",
};

pub const DEV_DB_SERVICE: ComposeDb = ComposeDb {
    service: "postgres",
    host_address: Address {
        host: "localhost",
        port: 5435,
    },
    network_address: Address {
        host: "postgres",
        port: POSTGRES_PORT,
    },
    storage: Storage::Volume("dev-data"),
};

pub const DEV_DB: Database = Database {
    env: Env::Dev,
    hosting: Hosting::Compose(DEV_DB_SERVICE),
    name: "genesis_db",
    user: "genesis_user",
    password: Password::FromEnv(PASSWORD_VAR),
    url_var: DATABASE_URL_VAR,
};

pub const PROD_DB: Database = Database {
    env: Env::Prod,
    hosting: Hosting::Managed,
    name: "genesis_ai_prod",
    user: "genesis_prod_user",
    password: Password::FromEnv(PASSWORD_VAR),
    url_var: DATABASE_URL_VAR,
};

/// The Redis service the API and the tests use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redis {
    pub service: &'static str,
    /// Published on the host on 6380, not 6379, so that it never collides with a Redis
    /// server a developer already runs on the default port.
    pub host_address: Address,
    pub network_address: Address,
    pub url_var: &'static str,
}

impl Redis {
    pub fn url(&self, address: Address) -> String {
        format!("redis://{address}/0")
    }
}

pub const REDIS: Redis = Redis {
    service: "redis",
    host_address: Address {
        host: "localhost",
        port: 6380,
    },
    network_address: Address {
        host: "redis",
        port: 6379,
    },
    url_var: "REDIS_URL",
};

/// TLS of the test database. The test set-up makes a CA and a server certificate (for the host
/// and network names of the test database) under `dir` in the workspace; the server reads them
/// from `mount`, copied to a folder its own user owns (PostgreSQL refuses a key file it does
/// not own); the suites find the CA through `ca_var`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestDbTls {
    pub dir: &'static str,
    /// The compose variable the folder is mounted from: required, so that compose run by hand
    /// before the certificates exist fails at once instead of starting a server that exits.
    pub dir_var: &'static str,
    pub mount: &'static str,
    pub ca_var: &'static str,
}

pub const TEST_DB_TLS: TestDbTls = TestDbTls {
    dir: "target/xtask/tls",
    dir_var: "GENESIS_TEST_DB_TLS",
    mount: "/tls",
    ca_var: "TEST_DATABASE_CA",
};

/// The application service, inside which the container-mode tests run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Api {
    pub service: &'static str,
    pub port: u16,
    /// Where the workspace is mounted inside the container.
    pub workdir: &'static str,
    /// The variable that tells the application it runs inside a container.
    pub in_container_var: &'static str,
}

pub const API: Api = Api {
    service: "genesis-api",
    port: 8000,
    workdir: "/workspace",
    in_container_var: "RUNNING_IN_DOCKER",
};

/// A container image: a public default, the variable that overrides it, and the local drop-in
/// that `cargo xtask images` builds from Debian packages where no registry can be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Image {
    pub var: &'static str,
    pub public: &'static str,
    pub local: &'static str,
}

impl Image {
    /// The compose spelling: `${VAR:-public}`.
    pub fn compose_ref(&self) -> String {
        format!("${{{}:-{}}}", self.var, self.public)
    }
}

pub const POSTGRES_IMAGE: Image = Image {
    var: "GENESIS_POSTGRES_IMAGE",
    public: "postgres:15-alpine",
    local: "genesis-local/postgres:15",
};

pub const REDIS_IMAGE: Image = Image {
    var: "GENESIS_REDIS_IMAGE",
    public: "redis:7-alpine",
    local: "genesis-local/redis:7",
};

/// The application's base. It must run binaries built on the host, so its C library must be
/// at least as new as the host's: Debian bookworm matches this project's machines.
pub const API_IMAGE: Image = Image {
    var: "GENESIS_API_IMAGE",
    public: "debian:bookworm-slim",
    local: "genesis-local/base:bookworm",
};

pub const IMAGES: [Image; 3] = [POSTGRES_IMAGE, REDIS_IMAGE, API_IMAGE];

/// The GitHub Actions pipeline `cargo xtask codegen` writes (`.github/workflows/ci.yml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GithubCi {
    /// The runner every job runs on, pinned: the application container must run binaries built
    /// on it (see `api_image`), so a runner that moves to a newer release must move both.
    pub runner: &'static str,
    /// The public image the application container runs there: the runner's own release, so
    /// that its C library is as new as the one the archive was built against.
    pub api_image: &'static str,
    /// How many shard jobs share the suites (`--partition slice:M/N`).
    pub shards: u32,
}

pub const GITHUB_CI: GithubCi = GithubCi {
    runner: "ubuntu-24.04",
    api_image: "ubuntu:24.04",
    shards: 2,
};

/// Healthcheck timing shared by every service: probe every second.
pub const HEALTH_INTERVAL_S: u32 = 1;
pub const HEALTH_TIMEOUT_S: u32 = 3;
pub const HEALTH_RETRIES: u32 = 60;

/// Server settings that make the disposable test database fast: no durability at all.
pub const TEST_DB_SERVER_FLAGS: [(&str, &str); 3] = [
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
];

/// The cost of hashing a password with Argon2id, by name (`PASSWORD_HASH_COST`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordCost {
    pub name: &'static str,
    /// Memory in KiB, iterations and lanes: Argon2's `m`, `t` and `p`.
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// What production pays per password: the `argon2` crate's defaults, OWASP's recommendation
/// (`m=19456,t=2,p=1`).
pub const PASSWORD_COST_PRODUCTION: PasswordCost = PasswordCost {
    name: "production",
    memory_kib: 19456,
    iterations: 2,
    parallelism: 1,
};

/// The least Argon2id accepts (`m=8,t=1,p=1`): for the test suites only, whose passwords are
/// disposable, through the same code path as production. Production refuses it.
pub const PASSWORD_COST_MINIMUM: PasswordCost = PasswordCost {
    name: "minimum",
    memory_kib: 8,
    iterations: 1,
    parallelism: 1,
};

pub const PASSWORD_COSTS: [PasswordCost; 2] = [PASSWORD_COST_PRODUCTION, PASSWORD_COST_MINIMUM];

impl Env {
    /// The password hashing cost of this environment when `PASSWORD_HASH_COST` is unset.
    pub const fn password_cost(self) -> PasswordCost {
        match self {
            Env::Test => PASSWORD_COST_MINIMUM,
            Env::Dev | Env::Prod => PASSWORD_COST_PRODUCTION,
        }
    }
}

/// The default token secret of development and test. Production refuses it.
pub const DEV_TOKEN_SECRET: &str = "dev-only-insecure-token-secret";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_round_trip() {
        for env in Env::ALL {
            assert_eq!(Env::parse(env.name()), Some(env));
            assert_eq!(Env::parse(env.environment_value()), Some(env));
            assert_eq!(env.database().env, env);
        }
        assert_eq!(Env::parse("staging"), None);
    }

    #[test]
    fn seed_addresses() {
        let test = TEST_DB.url_with(TEST_DB_SERVICE.host_address, TEST_DB_PASSWORD);
        assert_eq!(
            test,
            "postgresql://test_user:test_password@localhost:5433/test_db"
        );
        let net = TEST_DB.url_with(TEST_DB_SERVICE.network_address, "x");
        assert_eq!(net, "postgresql://test_user:x@test-db:5432/test_db");
        assert_eq!(DEV_DB.compose().unwrap().host_address.port, 5435);
        assert_eq!(PROD_DB.compose(), None);
        assert_eq!(host_port_var("test-db"), "GENESIS_TEST_DB_PORT");
        assert_eq!(
            POSTGRES_IMAGE.compose_ref(),
            "${GENESIS_POSTGRES_IMAGE:-postgres:15-alpine}"
        );
    }
}

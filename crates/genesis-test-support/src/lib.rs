//! What both suites share: settings for the test environment, a database per test handed out
//! by a pool of clones of a migrated template ([`pool`]), the real API served on an ephemeral
//! port, and Redis keys namespaced per test.
//!
//! The template is named after a digest of the migrations, so editing one builds a new
//! template. It is built once, under a PostgreSQL advisory lock, by whichever test process gets
//! there first: parallel test threads, concurrent `cargo test` runs, and a host run beside a
//! container run against the same server all wait for it rather than race. Per-test databases
//! carry the `genesis_t_` prefix and their creation time, are dropped when the test ends (even
//! when it fails, unless `GENESIS_KEEP_FAILED_DB=1` keeps them), and leftovers older than
//! [`STALE_AFTER`] are swept.
//!
//! Everything is found through `Settings::load_for(Env::Test)`; an unreachable service fails
//! the test with the command that starts it. Nothing here writes to the source tree.

mod app;
pub mod pool;

pub use crate::app::{RedisNs, TestApp, redis_connection, serve, silent_listener, texts};

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use genesis_api::db;
use genesis_api::migrate::{MIGRATIONS, fingerprint};
use genesis_model::Env;
use genesis_settings::{Scheme, ServiceUrl, Settings};
use rand_core::{OsRng, RngCore};
use tokio_postgres::Client;

/// The prefix of every per-test database.
pub const DB_PREFIX: &str = "genesis_t_";
/// The prefix of the templates.
pub const TEMPLATE_PREFIX: &str = "genesis_tpl_";
/// Per-test databases older than this are leftovers of a killed run.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// Templates of other migration sets older than this are dropped.
const STALE_TEMPLATE_AFTER: Duration = Duration::from_secs(60 * 60);
/// How long a test waits for an asynchronous effect (a drop behind an answer, an expiry, a
/// recovery) before it fails: as long as the run lets a test live (the nextest profiles end a
/// test after 4 periods of 30 s), so that a loaded machine fails no test by being slow.
pub const EFFECT_WAIT: Duration = Duration::from_secs(120);
/// The advisory lock that serialises template builds and sweeps ("gentmpl" in ASCII).
const TEMPLATE_LOCK: i64 = 0x0067_656e_746d_706c;

const HINT: &str = "start the test services with `cargo xtask db-up --with redis` \
    (or point TEST_DATABASE_URL and REDIS_URL at running ones)";

/// The test environment's settings, as the application would resolve them here.
pub fn settings() -> Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS
        .get_or_init(|| {
            Settings::load_for(Env::Test).unwrap_or_else(|err| {
                panic!(
                    "the test settings are invalid: {}",
                    genesis_settings::redact(&err.to_string())
                )
            })
        })
        .clone()
}

/// `scheme://...` parsed, for tests that point a dependency somewhere else.
pub fn url(raw: &str, scheme: Scheme) -> ServiceUrl {
    ServiceUrl::parse(raw, scheme).expect("a valid test URL")
}

/// A URL on which nothing listens: port 1 is closed on the host and in a container alike.
pub fn closed_redis_url() -> ServiceUrl {
    url("redis://127.0.0.1:1/0", Scheme::Redis)
}

pub fn closed_postgres_url() -> ServiceUrl {
    url(
        "postgresql://test_user:test_password@127.0.0.1:1/test_db",
        Scheme::Postgres,
    )
}

/// A name unique across threads, processes, and the host and container runs:
/// `<unix seconds>_<pid>_<counter>_<random>`.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}_{}_{n}_{:08x}",
        now_secs(),
        std::process::id(),
        OsRng.next_u32()
    )
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// The comment that marks a failed test's database kept for inspection.
const KEPT: &str = "genesis kept";

/// A connection to the test server's own database (`test_db`), from which databases are
/// created and dropped. Fails the test, saying how to start the server, when it is unreachable.
pub async fn admin() -> Client {
    let url = settings().test_database_url;
    match db::connect(&url).await {
        Ok(client) => client,
        Err(err) => panic!("cannot reach the test database: {err}\n{HINT}"),
    }
}

/// The digest of this build's migrations that names its template.
pub fn template_digest() -> &'static str {
    static DIGEST: OnceLock<String> = OnceLock::new();
    DIGEST.get_or_init(|| fingerprint(MIGRATIONS)[..16].to_owned())
}

/// The template database holding this build's migrated schema, built if needed under the
/// template lock.
pub async fn template(admin: &Client) -> String {
    let name = format!("{TEMPLATE_PREFIX}{}", template_digest());
    if is_template(admin, &name).await {
        return name;
    }
    admin
        .execute("select pg_advisory_lock($1)", &[&TEMPLATE_LOCK])
        .await
        .expect("take the template lock");
    let built = build_template_locked(admin, &name).await;
    admin
        .execute("select pg_advisory_unlock($1)", &[&TEMPLATE_LOCK])
        .await
        .expect("release the template lock");
    if let Err(err) = built {
        panic!("cannot build the test template {name}: {err}");
    }
    name
}

/// Sweeps leftovers under the template lock; the pool does it once per process, off the
/// hand-out path.
pub async fn sweep(admin: &Client) {
    let current = format!("{TEMPLATE_PREFIX}{}", template_digest());
    if admin
        .execute("select pg_advisory_lock($1)", &[&TEMPLATE_LOCK])
        .await
        .is_err()
    {
        return;
    }
    sweep_locked(admin, &current).await;
    let _ = admin
        .execute("select pg_advisory_unlock($1)", &[&TEMPLATE_LOCK])
        .await;
}

async fn is_template(admin: &Client, name: &str) -> bool {
    admin
        .query_opt(
            "select 1 from pg_database where datname = $1 and datistemplate",
            &[&name],
        )
        .await
        .expect("read pg_database")
        .is_some()
}

async fn exists(admin: &Client, name: &str) -> bool {
    admin
        .query_opt("select 1 from pg_database where datname = $1", &[&name])
        .await
        .expect("read pg_database")
        .is_some()
}

async fn build_template_locked(admin: &Client, name: &str) -> Result<(), String> {
    if is_template(admin, name).await {
        return Ok(()); // Another process built it while we waited for the lock.
    }
    // A database of this name that is not yet a template was left by a builder that died.
    drop_database(admin, name).await;
    // Identifiers cannot be bound as parameters; every name here is ours and checked.
    admin
        .batch_execute(&format!(
            "create database {} template template0 encoding 'UTF8' lc_collate 'C' lc_ctype 'C'",
            ident(name)
        ))
        .await
        .map_err(|e| db::error_chain(&e))?;
    let url = settings().test_database_url.with_database(name);
    let migrated = async {
        let mut client = db::connect(&url).await.map_err(|e| e.to_string())?;
        genesis_api::migrate::migrate(&mut client)
            .await
            .map_err(|e| db::error_chain(&e))
    }
    .await;
    if let Err(err) = migrated {
        drop_database(admin, name).await;
        return Err(err);
    }
    admin
        .batch_execute(&format!(
            "comment on database {0} is 'genesis test template, built at {1}';
             alter database {0} with is_template true allow_connections false",
            ident(name),
            now_secs()
        ))
        .await
        .map_err(|e| db::error_chain(&e))?;
    Ok(())
}

/// Drops per-test databases older than [`STALE_AFTER`] (unless kept for inspection), other
/// migration sets' templates older than an hour, and the ready clones of templates that are
/// gone. Runs under the template lock.
async fn sweep_locked(admin: &Client, current: &str) {
    let rows = admin
        .query(
            "select datname, coalesce(shobj_description(oid, 'pg_database'), '')
             from pg_database where datname like 'genesis\\_t%' or datname like 'genesis\\_p\\_%'",
            &[],
        )
        .await
        .expect("list test databases");
    let now = now_secs();
    let mut templates = vec![current.to_owned()];
    let mut clones = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        let comment: String = row.get(1);
        let stale = if let Some(rest) = name.strip_prefix(DB_PREFIX) {
            !comment.starts_with(KEPT)
                && created_at(rest).is_some_and(|t| now.saturating_sub(t) > STALE_AFTER.as_secs())
        } else if name.starts_with(TEMPLATE_PREFIX) && name != current {
            let built = comment
                .rsplit(' ')
                .next()
                .and_then(|t| t.parse::<u64>().ok());
            let stale =
                built.is_none_or(|t| now.saturating_sub(t) > STALE_TEMPLATE_AFTER.as_secs());
            if !stale {
                templates.push(name.clone());
            }
            stale
        } else {
            if name.starts_with(pool::POOL_PREFIX) {
                clones.push(name.clone());
            }
            false
        };
        if stale {
            drop_database(admin, &name).await;
        }
    }
    for clone in clones {
        let digest = clone[pool::POOL_PREFIX.len()..].split('_').next();
        let live = templates
            .iter()
            .any(|t| Some(&t[TEMPLATE_PREFIX.len()..]) == digest);
        if !live {
            drop_database(admin, &clone).await;
        }
    }
}

fn created_at(suffix: &str) -> Option<u64> {
    suffix.split('_').next()?.parse().ok()
}

/// Whether the database `name` is gone, waiting up to [`EFFECT_WAIT`] for a drop that runs
/// behind a pool server's answer.
pub async fn dropped(admin: &Client, name: &str) -> bool {
    let deadline = Instant::now() + EFFECT_WAIT;
    while exists(admin, name).await {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// `drop database ... with (force)`, after clearing the template flag a template carries.
pub async fn drop_database(admin: &Client, name: &str) {
    if !exists(admin, name).await {
        return;
    }
    // Two statements, not one batch: a batch is one transaction, and DROP DATABASE refuses
    // to run inside one.
    let unmark = format!("alter database {} with is_template false", ident(name));
    let drop = format!("drop database if exists {} with (force)", ident(name));
    let result = match admin.batch_execute(&unmark).await {
        Ok(()) => admin.batch_execute(&drop).await,
        Err(err) => Err(err),
    };
    if let Err(err) = result {
        // A concurrent sweeper may have dropped it first.
        if exists(admin, name).await {
            eprintln!("warning: cannot drop {name}: {}", db::error_chain(&err));
        }
    }
}

/// A quoted identifier. Only names this module generates reach it, and it checks them.
fn ident(name: &str) -> String {
    assert!(
        !name.is_empty()
            && name.len() < 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "unexpected database name {name:?}"
    );
    format!("\"{name}\"")
}

/// A quoted SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A database of its own for one test, dropped when the value is dropped.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: ServiceUrl,
}

impl TestDb {
    /// A clone of the migrated template, handed out by the pool.
    pub async fn new() -> TestDb {
        let start = Instant::now();
        let handout = pool::checkout(start).await;
        record(&handout);
        TestDb {
            url: settings().test_database_url.with_database(&handout.name),
            name: handout.name,
        }
    }

    /// A clone of the template made now, bypassing the pool: the cost the pool hides, for
    /// `examples/test_db_cost.rs`.
    pub async fn cloned() -> TestDb {
        let admin = admin().await;
        let name = format!("{DB_PREFIX}{}", unique_suffix());
        pool::pool().clone_template(&admin, &name).await;
        TestDb::adopt(name)
    }

    /// Takes charge of a database handed out by the pool.
    pub fn adopt(name: String) -> TestDb {
        TestDb {
            url: settings().test_database_url.with_database(&name),
            name,
        }
    }

    /// An empty database (no migrations), for the migration runner's own tests.
    pub async fn empty() -> TestDb {
        let admin = admin().await;
        let name = format!("{DB_PREFIX}{}", unique_suffix());
        admin
            .batch_execute(&format!(
                "create database {} template template0 encoding 'UTF8' lc_collate 'C' lc_ctype 'C'",
                ident(&name)
            ))
            .await
            .unwrap_or_else(|e| panic!("create {name}: {}", db::error_chain(&e)));
        TestDb {
            url: settings().test_database_url.with_database(&name),
            name,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn url(&self) -> &ServiceUrl {
        &self.url
    }

    /// A new connection to this database.
    pub async fn client(&self) -> Client {
        db::connect(&self.url)
            .await
            .unwrap_or_else(|err| panic!("connect to {}: {err}", self.name))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let keep = (std::thread::panicking() && pool::keep_failed()).then(|| {
            let test = std::thread::current().name().unwrap_or("?").to_owned();
            eprintln!(
                "{}=1: kept the database of failed test {test}: {} \
                 (`drop database {}` when done)",
                pool::KEEP_VAR,
                self.url,
                self.name
            );
            format!("failed test {test}")
        });
        pool::release(std::mem::take(&mut self.name), keep);
    }
}

/// Appends one hand-out to the file [`pool::TIMINGS_VAR`] names, when it is set.
fn record(handout: &pool::Handout) {
    let Some(path) = std::env::var_os(pool::TIMINGS_VAR) else {
        return;
    };
    use std::io::Write;
    let line = format!(
        "{:.3} {}\n",
        handout.elapsed.as_secs_f64() * 1000.0,
        if handout.hit { "hit" } else { "miss" }
    );
    // One short write with O_APPEND: lines of parallel processes never interleave.
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = file.write_all(line.as_bytes());
    }
}

//! The migration runner: applies the SQL files of `migrations/` (embedded at build time) in
//! version order, each in its own transaction, under a PostgreSQL advisory lock so that
//! concurrent starters are safe. Applied migrations are recorded in `schema_migrations` with
//! their checksum; a recorded migration whose file has changed since is an error.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

/// One migration: `migrations/NNNN_name.sql`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// The SHA-256 of the SQL text, in hex.
    pub fn checksum(&self) -> String {
        hex(&Sha256::digest(self.sql.as_bytes()))
    }
}

impl fmt::Debug for Migration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Migration({:04}_{})", self.version, self.name)
    }
}

/// The migrations of this build, in version order.
pub static MIGRATIONS: &[Migration] = include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// The advisory lock every migrator of a database takes ("genesis" in ASCII).
pub const LOCK_KEY: i64 = 0x0067_656e_6573_6973;

/// A digest of the whole migration set: it changes when any migration is added or edited.
pub fn fingerprint(migrations: &[Migration]) -> String {
    let mut hasher = Sha256::new();
    for m in migrations {
        hasher.update(format!("{}:{}:{}\n", m.version, m.name, m.checksum()));
    }
    hex(&hasher.finalize())
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "migration {version} ({name}) was edited after it was applied: its checksum is {actual} \
         in this build but {recorded} in schema_migrations; restore the file and add a new \
         migration instead"
    )]
    ChecksumMismatch {
        version: i64,
        name: String,
        recorded: String,
        actual: String,
    },
    #[error(
        "the database has migration {version} ({name}) applied, which this build does not have; \
         it was migrated by a newer build"
    )]
    UnknownApplied { version: i64, name: String },
    #[error("the migrations are not in strictly increasing version order at version {0}")]
    Unordered(i64),
    #[error("migration {version} ({name}) failed and was rolled back: {source}")]
    Failed {
        version: i64,
        name: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("the database is unreachable: {0}")]
    Unreachable(String),
    #[error("{context}: {source}")]
    Database {
        context: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl MigrateError {
    /// Whether the error comes from reaching the database rather than from the migrations.
    pub fn is_connection(&self) -> bool {
        match self {
            MigrateError::Unreachable(_) => true,
            MigrateError::Database { source, .. } => source.as_db_error().is_none(),
            _ => false,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// The versions this run applied, in order.
    pub applied: Vec<i64>,
    /// How many were already applied before this run.
    pub already_applied: usize,
}

/// Applies this build's migrations to the database `client` is connected to.
pub async fn migrate(client: &mut Client) -> Result<MigrationReport, MigrateError> {
    run(client, MIGRATIONS).await
}

/// Applies `migrations` (in strictly increasing version order) to the database `client` is
/// connected to.
pub async fn run(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<MigrationReport, MigrateError> {
    for pair in migrations.windows(2) {
        if pair[0].version >= pair[1].version {
            return Err(MigrateError::Unordered(pair[1].version));
        }
    }
    client
        .execute("select pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(database("take the migration lock"))?;
    let result = run_locked(client, migrations).await;
    // A failed migration's transaction was dropped, which queues its rollback before this.
    let unlocked = client
        .execute("select pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await
        .map_err(database("release the migration lock"));
    let report = result?;
    unlocked?;
    Ok(report)
}

async fn run_locked(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<MigrationReport, MigrateError> {
    client
        .batch_execute(
            "create table if not exists schema_migrations (
                version bigint primary key,
                name text not null,
                checksum text not null,
                applied_at timestamptz not null default now()
            )",
        )
        .await
        .map_err(database("create schema_migrations"))?;
    let rows = client
        .query("select version, name, checksum from schema_migrations", &[])
        .await
        .map_err(database("read schema_migrations"))?;
    let recorded: BTreeMap<i64, (String, String)> = rows
        .iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect();

    for (version, (name, checksum)) in &recorded {
        match migrations.iter().find(|m| m.version == *version) {
            None => {
                return Err(MigrateError::UnknownApplied {
                    version: *version,
                    name: name.clone(),
                });
            }
            Some(m) if m.checksum() != *checksum => {
                return Err(MigrateError::ChecksumMismatch {
                    version: *version,
                    name: m.name.to_owned(),
                    recorded: checksum.clone(),
                    actual: m.checksum(),
                });
            }
            Some(_) => {}
        }
    }

    let mut report = MigrationReport {
        applied: Vec::new(),
        already_applied: recorded.len(),
    };
    for m in migrations
        .iter()
        .filter(|m| !recorded.contains_key(&m.version))
    {
        let failed = |source| MigrateError::Failed {
            version: m.version,
            name: m.name.to_owned(),
            source,
        };
        let tx = client.transaction().await.map_err(failed)?;
        tx.batch_execute(m.sql).await.map_err(failed)?;
        tx.execute(
            "insert into schema_migrations (version, name, checksum) values ($1, $2, $3)",
            &[&m.version, &m.name, &m.checksum()],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
        report.applied.push(m.version);
    }
    Ok(report)
}

/// Where one migration stands in a database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MigrationState {
    /// Applied, and the file still has the checksum recorded then.
    Applied,
    /// In this build, not applied yet.
    Pending,
    /// Applied, but the file changed since: `recorded` is the checksum of what was applied.
    Edited { recorded: String },
    /// Recorded in the database, absent from this build's files.
    Unknown,
}

impl MigrationState {
    pub fn as_str(&self) -> &'static str {
        match self {
            MigrationState::Applied => "applied",
            MigrationState::Pending => "pending",
            MigrationState::Edited { .. } => "edited",
            MigrationState::Unknown => "unknown",
        }
    }
}

/// One row of [`status`]: a migration of this build, of the database, or of both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationStatus {
    pub version: i64,
    pub name: String,
    pub state: MigrationState,
    /// The checksum of this build's file; for an unknown migration, the recorded one.
    pub checksum: String,
    /// When it was applied (UTC, RFC 3339), for applied and edited migrations.
    pub applied_at: Option<String>,
}

/// Where each of `migrations` stands in the database `client` is connected to, with the
/// database's own migrations that `migrations` lacks, in version order. Reads only: a database
/// without `schema_migrations` has every migration pending.
pub async fn status(
    client: &Client,
    migrations: &[Migration],
) -> Result<Vec<MigrationStatus>, MigrateError> {
    let exists: bool = client
        .query_one("select to_regclass('schema_migrations') is not null", &[])
        .await
        .map_err(database("look for schema_migrations"))?
        .get(0);
    let mut recorded: BTreeMap<i64, (String, String, String)> = BTreeMap::new();
    if exists {
        let rows = client
            .query(
                "select version, name, checksum, \
                 to_char(applied_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
                 from schema_migrations",
                &[],
            )
            .await
            .map_err(database("read schema_migrations"))?;
        for row in rows {
            recorded.insert(row.get(0), (row.get(1), row.get(2), row.get(3)));
        }
    }
    let mut out: Vec<MigrationStatus> = migrations
        .iter()
        .map(|m| {
            let checksum = m.checksum();
            let (state, applied_at) = match recorded.remove(&m.version) {
                None => (MigrationState::Pending, None),
                Some((_, recorded, at)) if recorded == checksum => {
                    (MigrationState::Applied, Some(at))
                }
                Some((_, recorded, at)) => (MigrationState::Edited { recorded }, Some(at)),
            };
            MigrationStatus {
                version: m.version,
                name: m.name.to_owned(),
                state,
                checksum,
                applied_at,
            }
        })
        .collect();
    out.extend(
        recorded
            .into_iter()
            .map(|(version, (name, checksum, at))| MigrationStatus {
                version,
                name,
                state: MigrationState::Unknown,
                checksum,
                applied_at: Some(at),
            }),
    );
    out.sort_by_key(|row| row.version);
    Ok(out)
}

fn database(context: &'static str) -> impl Fn(tokio_postgres::Error) -> MigrateError {
    move |source| MigrateError::Database { context, source }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_are_ordered_and_named() {
        assert!(MIGRATIONS.len() >= 2);
        assert_eq!(MIGRATIONS[0].version, 1);
        assert_eq!(MIGRATIONS[0].name, "users_and_tokens");
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
        assert!(MIGRATIONS.iter().all(|m| !m.sql.trim().is_empty()));
    }

    #[test]
    fn checksum_and_fingerprint_follow_the_text() {
        let a = Migration {
            version: 1,
            name: "a",
            sql: "select 1",
        };
        let b = Migration {
            sql: "select 2",
            ..a
        };
        assert_eq!(a.checksum().len(), 64);
        assert_ne!(a.checksum(), b.checksum());
        assert_ne!(fingerprint(&[a]), fingerprint(&[b]));
        assert_eq!(fingerprint(&[a]), fingerprint(&[a]));
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }
}

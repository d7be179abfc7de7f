//! The command line: every command and its flags (clap derive). Behaviour lives in the
//! command modules; this file only describes.

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    version,
    about = "The Genesis database workflow: generated files, services, test suites, parity and migration checks.",
    after_help = "Exit codes: 0 success, 1 a failed check, 2 bad usage or a missing prerequisite, 130 interrupted."
)]
pub struct Xtask {
    /// The stack to work on: its own compose project, network, volumes and engine-chosen host
    /// ports [env: GENESIS_STACK; default: the default stack, on the model's ports].
    #[arg(long, global = true, value_name = "NAME")]
    pub stack: Option<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    Setup(Setup),
    Codegen(Codegen),
    Doctor(Doctor),
    DbUp(DbUp),
    DbDown(DbDown),
    DbStatus(DbStatus),
    DbLogs(DbLogs),
    DbShell(DbShell),
    DbBackup(DbBackup),
    DbRestore(DbRestore),
    DbMigrate(DbMigrate),
    DbReset(DbReset),
    Test(Test),
    VerifyMigration(VerifyMigration),
    Ci(Ci),
    Bench(Bench),
    Load(Load),
    Images(Images),
    Migration(Migration),
    Parity(Parity),
    Env(EnvVars),
    Completions(Completions),
}

/// Print the shell exports that point the application (`cargo run -p genesis-api`) and plain
/// `cargo test`/`cargo nextest run` at a stack's running services, as `eval "$(cargo xtask env)"`
/// takes them. The test password is public and printed; the dev password is not: the
/// application reads it from `.env`.
#[derive(Debug, Args)]
pub struct EnvVars {
    /// The environment whose database the exports name.
    #[arg(long, value_enum, default_value_t = EnvName::Test)]
    pub env: EnvName,
}

/// Print a shell completion script for an `xtask` alias of `cargo xtask` (shells complete one
/// word): `alias xtask='cargo xtask'; source <(cargo xtask completions bash)`.
#[derive(Debug, Args)]
pub struct Completions {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Write the generated files: docker-compose.yml, the env files and the GitHub Actions workflow
/// from the environment model, docs/commands.md from the command line.
#[derive(Debug, Args)]
pub struct Codegen {
    /// Change nothing: show what differs from the model and exit 1 when anything does.
    #[arg(long)]
    pub check: bool,
}

/// Set up this machine and checkout, once: install cargo-nextest (cargo install --locked) and,
/// as root, the PostgreSQL client tools, openssl and mmdebstrap (apt-get); get the images
/// (pulled, or built from Debian packages where no registry answers); make the test database's
/// certificate and the git-ignored .env. Docker and Compose themselves are checked, not installed.
#[derive(Debug, Args)]
pub struct Setup {}

/// Check tools, Docker daemon, compose flavour, ports and images; print the fix for each problem.
#[derive(Debug, Args)]
pub struct Doctor {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run the auth and integration suites on the host, in the genesis-api container, or both at
/// once, and compare the two runs test by test.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("mode").args(["host", "container", "both_modes"])))]
pub struct Test {
    /// Run on the host against the stack's test database (the default).
    #[arg(long)]
    pub host: bool,
    /// Run the same test binaries inside the application container, on the stack's network.
    #[arg(long)]
    pub container: bool,
    /// Run both modes at the same time and check parity test by test.
    #[arg(long)]
    pub both_modes: bool,
    /// Which suite to run.
    #[arg(long, value_enum, default_value_t = Suite::All)]
    pub suite: Suite,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Run this nextest archive (`cargo nextest archive -p genesis-api`, built once, possibly
    /// elsewhere) instead of building one.
    #[arg(long, value_name = "FILE")]
    pub archive: Option<std::path::PathBuf>,
    /// Run one slice of the selected tests (nextest's `slice:M/N`, `count:M/N` or `hash:M/N`).
    /// The report still lists every selected test, for `cargo xtask parity merge`.
    #[arg(long, value_name = "KIND:M/N", value_parser = parse_partition)]
    pub partition: Option<String>,
    /// Build the archive (target/xtask/genesis-tests.tar.zst) and the application binary
    /// (target/debug/genesis-api) that `--archive` runs elsewhere, and run nothing.
    #[arg(long, conflicts_with_all = ["host", "container", "both_modes", "archive", "partition", "json", "filters"])]
    pub build_archive_only: bool,
    /// Run the suites this many times, without stopping at the first failure, and report every
    /// test that failed at least once (a flake report; with --json, as JSON).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Keep every CPU busy (one spinning thread per CPU in this process) while the suites
    /// run: a machine as loaded as a shared CI runner.
    #[arg(long)]
    pub cpu_load: bool,
    /// Keep the services warm for the next `test --keep` on this stack, which reuses them while
    /// their recipe (compose file, images, certificates) holds, scrubbed as a fresh start
    /// would leave them; `cargo xtask db-down --all` removes them.
    #[arg(long)]
    pub keep: bool,
    /// Test name filters, passed to nextest after `--` (`cargo xtask test -- login health::`).
    #[arg(last = true, value_name = "FILTERS")]
    pub filters: Vec<String>,
}

/// Parity reports of shards run on several machines.
#[derive(Debug, Args)]
pub struct Parity {
    #[command(subcommand)]
    pub cmd: ParityCmd,
}

#[derive(Debug, Subcommand)]
pub enum ParityCmd {
    Merge(ParityMerge),
}

/// Merge the parity.json of shards of one archive (`cargo xtask test --archive FILE
/// --partition slice:M/N` on each machine); exit 1 when a test of the archive ran in no shard,
/// in one mode only, or with different outcomes.
#[derive(Debug, Args)]
pub struct ParityMerge {
    /// The shards' parity reports (target/xtask/parity.json of each run).
    #[arg(required = true, value_name = "REPORTS")]
    pub reports: Vec<std::path::PathBuf>,
    /// Print the merged report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    Auth,
    Integrations,
    All,
}

impl Suite {
    /// The nextest filter expression that selects the suite's test binaries.
    pub fn filter(self) -> &'static str {
        match self {
            Suite::Auth => "binary(=auth)",
            Suite::Integrations => "binary(=integrations)",
            Suite::All => "binary(=auth) | binary(=integrations)",
        }
    }
}

/// The migration checklist: no SQLite left, PostgreSQL everywhere, both suites green in both
/// modes, the application ready in strict mode. One line per item, then a verdict.
#[derive(Debug, Args)]
pub struct VerifyMigration {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Everything CI needs, in order: formatting, clippy, unit tests, codegen --check, images where
/// no registry answers, the service tests, db-up, test --both-modes, verify-migration, and the
/// services removed at the end whatever happened.
#[derive(Debug, Args)]
pub struct Ci {}

/// Measure the workflow against its baselines: db-up against a raw start and the engine's
/// floor, a test database's hand-out and clone against migrations, the main job (both modes)
/// and its harness share, and the xtask's cold build. Writes target/xtask/bench.json.
#[derive(Debug, Args)]
pub struct Bench {
    /// Repetitions of each measurement (the test database ones twenty times as many).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// A checkout of the old version (for example `git worktree add ../genesis-a2230f8 a2230f8`)
    /// whose `cargo xtask test --both-modes` runs alternately with this one's main job.
    #[arg(long, value_name = "CHECKOUT")]
    pub baseline: Option<std::path::PathBuf>,
    /// Measure nothing: render the table of this bench.json (for example to update the docs).
    #[arg(long, value_name = "BENCH_JSON")]
    pub from: Option<std::path::PathBuf>,
    /// Write the table into docs/performance.md, between its bench markers.
    #[arg(long, alias = "update-readme")]
    pub update_docs: bool,
}

/// An environment of the model, as `--env` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EnvName {
    Test,
    #[value(alias = "development")]
    Dev,
    #[value(alias = "production")]
    Prod,
}

impl EnvName {
    pub fn model(self) -> genesis_model::Env {
        match self {
            EnvName::Test => genesis_model::Env::Test,
            EnvName::Dev => genesis_model::Env::Dev,
            EnvName::Prod => genesis_model::Env::Prod,
        }
    }
}

/// A service started beside an environment's database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Extra {
    Redis,
}

/// Start an environment's database and return when it accepts a real connection as the app's
/// role on the app's database; print its URL, password hidden. Harmless when already up.
#[derive(Debug, Args)]
pub struct DbUp {
    /// The environment (prod is a managed server and is refused).
    #[arg(long, value_enum, default_value_t = EnvName::Test)]
    pub env: EnvName,
    /// Also start this service and wait for it (repeatable).
    #[arg(long = "with", value_enum)]
    pub with: Vec<Extra>,
    /// Seconds to wait for readiness before failing with the service's last log lines.
    #[arg(long, default_value_t = crate::services::READY_TIMEOUT.as_secs(), value_name = "SECONDS")]
    pub timeout: u64,
}

/// Stop an environment's services (or all with --all); data volumes are kept unless --volumes.
#[derive(Debug, Args)]
pub struct DbDown {
    /// The environment whose services stop.
    #[arg(long, value_enum, default_value_t = EnvName::Test, conflicts_with = "all")]
    pub env: EnvName,
    /// Also stop this service (repeatable).
    #[arg(long = "with", value_enum, conflicts_with = "all")]
    pub with: Vec<Extra>,
    /// Stop and remove every service of the project, and its network.
    #[arg(long)]
    pub all: bool,
    /// Also delete the data volumes (the dev database's data is lost).
    #[arg(long)]
    pub volumes: bool,
}

/// Show every service of the project: state, health, published ports, the URL the host reaches
/// it at (the test password is public and shown, dev's is masked); and the data volumes.
#[derive(Debug, Args)]
pub struct DbStatus {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Show the services' logs (all services, or the ones named), passwords masked.
#[derive(Debug, Args)]
pub struct DbLogs {
    /// Keep printing new lines as they come.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only the last N lines of each service.
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
    /// Services to show (test-db, postgres, redis, genesis-api).
    #[arg(value_name = "SERVICE")]
    pub services: Vec<String>,
}

/// Open psql on an environment's database (prod: the server DATABASE_URL names).
#[derive(Debug, Args)]
pub struct DbShell {
    #[arg(long, value_enum, default_value_t = EnvName::Test)]
    pub env: EnvName,
    /// Open psql on this server instead of the environment's (postgresql:// URL).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

/// Take a custom-format dump, verify it (header, table of contents, full read, restore into a
/// scratch database, row counts equal to those at dump time) and store its checksum, server
/// version and row counts beside it.
#[derive(Debug, Args)]
pub struct DbBackup {
    /// The environment to back up.
    #[arg(long, value_enum)]
    pub env: EnvName,
    /// Where to write the dump [default: backups/<env>-<UTC time>.dump]. Never overwritten.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub server: Server,
}

/// Verify a dump against its checksum and archive, then restore it over an environment's
/// database in one transaction that stops on the first error, and compare row counts.
#[derive(Debug, Args)]
pub struct DbRestore {
    /// The environment to restore into.
    #[arg(long, value_enum)]
    pub env: EnvName,
    /// The dump (its FILE.meta.json must be beside it).
    #[arg(value_name = "FILE")]
    pub file: std::path::PathBuf,
    /// Restore a dump of another environment, database, server or schema over a database that
    /// has tables: name the dump's source database, as the refusal shows it.
    #[arg(long, value_name = "DATABASE")]
    pub from: Option<String>,
    /// Restore without asking (required when there is no terminal to ask on).
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub server: Server,
}

/// Build drop-in images for PostgreSQL 15, Redis and the application's base from Debian
/// packages, for machines where no image registry can be reached.
#[derive(Debug, Args)]
pub struct Images {
    /// Build the local images even if the registry could serve the public ones.
    #[arg(long)]
    pub offline: bool,
    /// Rebuild even when the local images are up to date with their recipe.
    #[arg(long)]
    pub force: bool,
}

/// The server a backup or a restore works on, and what it may touch beyond local,
/// non-production databases (a backup's verification creates and drops a scratch database
/// there; a restore overwrites tables).
#[derive(Debug, Args)]
pub struct Server {
    /// Use this server instead of the environment's (postgresql:// URL).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Allow working on production (refused by default, saying why).
    #[arg(long)]
    pub allow_production: bool,
    /// Allow working on a server that is not on this machine (refused by default).
    #[arg(long)]
    pub allow_remote: bool,
}

/// The application's migrations: create the next one, or show where a database stands.
#[derive(Debug, Args)]
pub struct Migration {
    #[command(subcommand)]
    pub cmd: MigrationCmd,
}

#[derive(Debug, Subcommand)]
pub enum MigrationCmd {
    New(MigrationNew),
    Status(MigrationStatus),
}

/// Show where an environment's database stands: each migration applied (when, checksum),
/// pending, or edited after it was applied, and migrations the database has that the tree
/// lacks. Reads only (production included). Exit 1 when one is edited or unknown.
#[derive(Debug, Args)]
pub struct MigrationStatus {
    /// The environment whose database is read.
    #[arg(long, value_enum, default_value_t = EnvName::Test)]
    pub env: EnvName,
    /// Read this server instead of the environment's (postgresql:// URL).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Apply the pending migrations to an environment's database through the application's own
/// migrator (`genesis-api migrate`: the same advisory lock and checksum rules as start-up) and
/// report what it applied. Refuses (exit 1, naming it) a migration edited after it was applied.
#[derive(Debug, Args)]
pub struct DbMigrate {
    /// The environment whose database is migrated.
    #[arg(long, value_enum, default_value_t = EnvName::Test)]
    pub env: EnvName,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: Server,
}

/// Drop and recreate a test or dev database on this machine, apply the migrations, and run
/// crates/genesis-api/seeds/<env>.sql when it exists. Dev gets a verified backup first. Never
/// production, never a server on another machine.
#[derive(Debug, Args)]
pub struct DbReset {
    /// The environment whose database is reset (prod is refused).
    #[arg(long, value_enum, default_value_t = EnvName::Test)]
    pub env: EnvName,
    /// Reset without asking (required when there is no terminal to ask on).
    #[arg(long)]
    pub yes: bool,
    /// Skip the verified backup taken before a dev database is dropped.
    #[arg(long)]
    pub no_backup: bool,
    /// Reset this database instead of the environment's (a postgresql:// URL on this machine).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Create the next numbered migration file under crates/genesis-api/migrations/.
#[derive(Debug, Args)]
pub struct MigrationNew {
    /// A plain identifier: lowercase ASCII letters, digits and underscores (e.g. add_tags).
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// Load the API with wrk (login and /auth/me) and report throughput, latency, statuses and
/// peak memory. Needs `wrk`; uses DATABASE_URL and REDIS_URL when set, else the stack's test
/// database and Redis (started for the run if they are not up).
#[derive(Debug, Args)]
pub struct Load {
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    pub connections: u32,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 20)]
    pub duration: u32,
    /// The loopback port the API listens on during the run.
    #[arg(long, default_value_t = 8089)]
    pub port: u16,
}

/// `KIND:M/N` as nextest's `--partition` takes it: `slice`, `count` or `hash`, 1 <= M <= N.
pub fn parse_partition(value: &str) -> Result<String, String> {
    let bad = || format!("{value:?} is not KIND:M/N (slice:1/2, count:1/3, hash:2/2)");
    let (kind, rest) = value.split_once(':').ok_or_else(bad)?;
    let (m, n) = rest.split_once('/').ok_or_else(bad)?;
    let (m, n): (u32, u32) = (m.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
    if !matches!(kind, "slice" | "count" | "hash") || m == 0 || m > n {
        return Err(bad());
    }
    Ok(format!("{kind}:{m}/{n}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_checked() {
        assert_eq!(parse_partition("slice:1/2").unwrap(), "slice:1/2");
        for bad in [
            "slice:0/2",
            "slice:3/2",
            "slice:1",
            "part:1/2",
            "1/2",
            "slice:a/2",
        ] {
            assert!(parse_partition(bad).is_err(), "{bad}");
        }
    }
}

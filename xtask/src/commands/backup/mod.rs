//! `db-backup` and `db-restore`: custom-format dumps that are verified before they are kept and
//! again before they are restored (SPEC section 8).
//!
//! A backup exports a snapshot from a REPEATABLE READ transaction, counts every table's rows in
//! that transaction and has `pg_dump --snapshot` dump exactly that snapshot, so the counts are
//! those of the dump and not of a moment near it. The dump goes to a temporary name; it is
//! renamed, with its sidecar `FILE.meta.json`, only once the archive has been read in full and
//! restored into a scratch database whose row counts equal the snapshot's.

mod restore;

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use genesis_model::Env;
use genesis_settings::redact;
use serde::{Deserialize, Serialize};
use xshell::{Shell, cmd};

use crate::flags;
use crate::services::Stack;
use crate::tools::child::{OnOurDeath, Session, check_output, run_checked, tied};
use crate::tools::pg::{self, ROW_COUNTS_SQL, TableRows, Target};
use crate::tools::util;
use crate::tools::util::{check_failed, confirm, project_root, sha256_file, usage, utc_timestamp};

/// The first bytes of every pg_dump archive.
const MAGIC: &[u8] = b"PGDMP";
/// The format byte of the header (after the magic and five version and size bytes): custom.
const FORMAT_CUSTOM: u8 = 1;
const SIDECAR_FORMAT: &str = "genesis-backup/1";

/// What a backup records beside its dump.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format: String,
    file: String,
    sha256: String,
    size_bytes: u64,
    created_at: String,
    env: String,
    database: String,
    /// The server's URL, password masked.
    server: String,
    /// The cluster's system identifier (see `pg::IDENTITY_SQL`); absent in older sidecars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server_id: Option<String>,
    /// The latest migration applied to the dumped database, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schema: Option<String>,
    server_version: String,
    pg_dump_version: String,
    /// How the row counts relate to the dump.
    counted_in: String,
    toc_entries: usize,
    tables: Vec<TableRows>,
}

fn sidecar_of(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".meta.json");
    file.with_file_name(name)
}

/// A path from the command line, relative to where the user ran the command (the shell itself
/// works from the project root).
fn user_path(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_owned());
    }
    Ok(std::env::current_dir()
        .context("read the current folder")?
        .join(path))
}

/// Refuses production and servers on other machines unless the user allowed them, saying why.
/// `--env prod` is refused before its URL is even looked at; any other connection is judged on
/// what it is (the production model's database, user or host, and the address libpq will
/// connect to), not on its label.
pub fn resolve_allowed(
    stack: &Stack,
    env: Env,
    server: &flags::Server,
    why: &str,
) -> Result<Target> {
    if env == Env::Prod && !server.allow_production {
        return Err(usage(format!(
            "refusing to touch production: {why}; pass --allow-production if that is what you mean"
        )));
    }
    let mut target = Target::resolve(env, server.url.as_deref())?;
    stack.aim(&mut target)?;
    let url = target.masked_url();
    if !server.allow_production {
        if let Some(reason) = target.production_reason(&|key| std::env::var(key).ok()) {
            return Err(usage(format!(
                "refusing to touch {url}, which is production ({reason}): {why}; pass \
                 --allow-production if that is what you mean"
            )));
        }
    }
    if !target.is_local() && !server.allow_remote {
        return Err(usage(format!(
            "refusing to touch {url}, which is not on this machine: {why}; pass --allow-remote if that is what you mean"
        )));
    }
    Ok(target)
}

/// Connects once: the server's version, or how to make it reachable.
pub fn reach(sh: &Shell, target: &Target) -> Result<(String, u32)> {
    target.server_version(sh).map_err(|err| {
        let hint = match target.env.database().compose() {
            Some(_) if target.origin == pg::Origin::Model => {
                format!("start it with `cargo xtask db-up --env {}`", target.env)
            }
            _ => "check the URL and that the server is up".to_owned(),
        };
        usage(format!(
            "cannot connect to {} ({err}): {hint}",
            target.masked_url()
        ))
    })
}

fn tools(sh: &Shell, names: &[&str]) -> Result<Vec<(String, u32)>> {
    let found = names
        .iter()
        .map(|tool| pg::pg_tool(sh, tool))
        .collect::<Result<Vec<_>>>()?;
    cmd!(sh, "sha256sum --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .map_err(|_| usage("`sha256sum` is not installed: `apt-get install coreutils`"))?;
    Ok(found)
}

// ---- db-backup ----------------------------------------------------------------------------

/// Ctrl-C (or SIGTERM) during a backup: the first one only makes the running step fail (the
/// children in the terminal's process group get it too), so that the guards remove the partial
/// dump and the scratch database; a second one exits at once.
struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    fn install() -> Result<Interrupt> {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag))
                .context("install the Ctrl-C handler")?;
            signal_hook::flag::register(signal, Arc::clone(&flag))
                .context("install the Ctrl-C handler")?;
        }
        Ok(Interrupt(flag))
    }

    /// A step's result, or once interrupted, the interruption instead of the step's own error.
    fn check<T>(&self, step: Result<T>) -> Result<T> {
        if self.0.load(Ordering::SeqCst) {
            return Err(check_failed(
                "interrupted: the partial dump and the scratch database are removed, nothing is kept",
            ));
        }
        step
    }
}

/// What marks a file being written, before the writer's process id: `FILE.dump.partial-PID`
/// and `FILE.dump.meta.partial-PID`.
const PARTIAL: &str = ".partial-";

/// The prefix of the scratch databases of verifications: `genesis_verify_<PID>_<hex>`.
const SCRATCH_PREFIX: &str = "genesis_verify_";

/// Whether a process of this machine with that id runs (a partial file's or a scratch
/// database's writer).
fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// The writer's process id of a partial file's or a scratch database's name, if it has one.
fn writer_pid(name: &str, marker: &str) -> Option<u32> {
    let (_, rest) = name.rsplit_once(marker)?;
    rest.split('_').next()?.parse().ok()
}

/// Removes the partial files of backups whose process is gone (killed before its guards ran).
fn sweep_partials(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = writer_pid(&name, PARTIAL)
            && !alive(pid)
            && std::fs::remove_file(entry.path()).is_ok()
        {
            eprintln!(
                "removed {}, left by a backup that was killed",
                entry.path().display()
            );
        }
    }
}

/// Drops the scratch databases that killed verifications left on `target`'s server: those
/// whose process is gone, and those of older versions without one. A database still in use is
/// not dropped (no `FORCE`). Only on this machine, where a process id means something.
fn sweep_scratch_databases(sh: &Shell, target: &Target) {
    if !target.is_local() {
        return;
    }
    let list = target.query(
        sh,
        &format!(
            "select datname from pg_catalog.pg_database where datname like '{SCRATCH_PREFIX}%'"
        ),
    );
    for name in list.unwrap_or_default().lines().map(str::trim) {
        let ours = name
            .strip_prefix(SCRATCH_PREFIX)
            .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        let stale = match writer_pid(name, SCRATCH_PREFIX) {
            Some(pid) => !alive(pid),
            None => true,
        };
        if ours
            && stale
            && target
                .query(sh, &format!("drop database if exists {name}"))
                .is_ok()
        {
            eprintln!(
                "dropped the scratch database {name}, left by a verification that was killed"
            );
        }
    }
}

/// The dump being written: removed on drop unless it was kept, so that a failed backup leaves
/// nothing half-written behind.
struct Partial {
    path: PathBuf,
    kept: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl flags::DbBackup {
    pub fn run(self, sh: &Shell, stack: &Stack) -> Result<()> {
        let env = self.env.model();
        let target = resolve_allowed(
            stack,
            env,
            &self.server,
            "verifying a backup creates, fills and drops a scratch database on the server it backs up",
        )?;
        crate::services::reset_marker::warn_after_killed_reset(stack, env);
        let output = self.output.as_deref().map(user_path).transpose()?;
        let taken = take(sh, &target, output)?;
        println!(
            "backed up {} (PostgreSQL {}) in {:.1} s",
            target.masked_url(),
            taken.meta.server_version,
            taken.seconds
        );
        println!(
            "  dump     {} ({} bytes)",
            taken.output.display(),
            taken.meta.size_bytes
        );
        println!(
            "  sidecar  {} (sha256 {})",
            taken.sidecar.display(),
            taken.meta.sha256
        );
        println!(
            "  verified header, table of contents ({} entries), full read, restore \
             into a scratch database, row counts of {} tables",
            taken.meta.toc_entries,
            taken.meta.tables.len()
        );
        print_counts(&taken.meta.tables, None);
        Ok(())
    }
}

/// A verified backup, kept with its sidecar.
pub struct Taken {
    pub output: PathBuf,
    pub sidecar: PathBuf,
    meta: Meta,
    pub seconds: f64,
}

impl Taken {
    pub fn tables(&self) -> usize {
        self.meta.tables.len()
    }
}

/// Takes a verified backup of `target` (already past [`resolve_allowed`]) into `output`
/// [default: `backups/<env>-<UTC time>.dump`]: `db-backup`, and `db-reset` before it drops a
/// development database.
pub fn take(sh: &Shell, target: &Target, output: Option<PathBuf>) -> Result<Taken> {
    let env = target.env;
    let found = tools(sh, &["pg_dump", "pg_restore", "psql"])?;
    let (pg_dump_version, pg_dump_major) = found[0].clone();
    let now = SystemTime::now();
    let (stamp, created_at) = utc_timestamp(now);
    let output = output.unwrap_or_else(|| {
        project_root()
            .join("backups")
            .join(format!("{env}-{stamp}.dump"))
    });
    let sidecar = sidecar_of(&output);
    for path in [&output, &sidecar] {
        if path.exists() {
            return Err(usage(format!(
                "{} already exists: a backup never overwrites one; choose another --output",
                path.display()
            )));
        }
    }
    let (server_version, server_major) = reach(sh, target)?;
    if pg_dump_major < server_major {
        return Err(usage(format!(
            "pg_dump {pg_dump_major} cannot dump a PostgreSQL {server_major} server: \
             `apt-get install postgresql-client-{server_major}`"
        )));
    }

    let interrupt = Interrupt::install()?;
    let started = Instant::now();
    let dir = output.parent().context("the output has no folder")?;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("create {}", dir.display()))?;
    }
    sweep_partials(dir);
    sweep_scratch_databases(sh, target);
    let mut partial = Partial {
        path: output.with_file_name(format!(
            "{}{PARTIAL}{}",
            output.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        )),
        kept: false,
    };
    // Created here, readable by the owner only, before pg_dump (which truncates and keeps the
    // mode) writes a byte of the data into it.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial.path)
        .with_context(|| format!("create {}", partial.path.display()))?;

    let (counts, identity) = interrupt.check(dump_in_one_snapshot(sh, target, &partial.path))?;
    // A dump holds the database's data: owner-only, like the sidecar below.
    std::fs::set_permissions(&partial.path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restrict {}", partial.path.display()))?;
    let toc_entries = interrupt.check(verify_archive(sh, &partial.path, counts.is_empty()))?;
    interrupt.check(verify_by_restoring(sh, target, &partial.path, &counts))?;

    let meta = Meta {
        format: SIDECAR_FORMAT.to_owned(),
        file: output
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        sha256: sha256_file(&partial.path)?,
        size_bytes: std::fs::metadata(&partial.path)?.len(),
        created_at,
        env: env.to_string(),
        database: target.database.clone(),
        server: target.masked_url(),
        server_id: Some(identity.server),
        schema: identity.schema,
        server_version,
        pg_dump_version,
        counted_in: "the exported snapshot pg_dump dumped (pg_dump --snapshot)".to_owned(),
        toc_entries,
        tables: counts,
    };
    let sidecar_partial = partial
        .path
        .with_extension(format!("meta{PARTIAL}{}", std::process::id()));
    let mut sidecar_guard = Partial {
        path: sidecar_partial.clone(),
        kept: false,
    };
    let sidecar_text = serde_json::to_string_pretty(&meta)? + "\n";
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&sidecar_partial)
        .and_then(|mut f| f.write_all(sidecar_text.as_bytes()))
        .with_context(|| format!("write {}", sidecar_partial.display()))?;
    interrupt.check(Ok(()))?;
    std::fs::rename(&partial.path, &output)
        .with_context(|| format!("rename the dump to {}", output.display()))?;
    partial.path = output.clone();
    std::fs::rename(&sidecar_partial, &sidecar)
        .with_context(|| format!("rename the sidecar to {}", sidecar.display()))?;
    sidecar_guard.kept = true;
    partial.kept = true;
    Ok(Taken {
        output,
        sidecar,
        meta,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Dumps `target` into `file` with `pg_dump -Fc` (written by pg_dump itself, never through a
/// terminal) and returns the row counts of the very snapshot it dumped: a `psql` session exports
/// its REPEATABLE READ snapshot, counts in it, and holds it open while pg_dump imports it.
fn dump_in_one_snapshot(
    sh: &Shell,
    target: &Target,
    file: &Path,
) -> Result<(Vec<TableRows>, pg::Identity)> {
    let mut session = Session::spawn(target.psql(sh)).context("open the snapshot session")?;
    session.send(
        "begin isolation level repeatable read, read only;\nselect pg_export_snapshot();\n",
    )?;
    let snapshot = session.read_line().context("export a snapshot")?;
    if snapshot.is_empty()
        || !snapshot
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        anyhow::bail!("unexpected snapshot id {snapshot:?}");
    }
    session.send(&format!("{ROW_COUNTS_SQL};\n"))?;
    let counts = pg::parse_row_counts(&session.read_line().context("count rows in the snapshot")?)?;
    session.send(&format!("{};\n", pg::IDENTITY_SQL))?;
    let identity = pg::Identity::parse(&session.read_line().context("identify the database")?)?;
    let out = target
        .tool(sh, "pg_dump")
        .args(["--format=custom", "--no-password"])
        .arg(format!("--snapshot={snapshot}"))
        .arg("--file")
        .arg(file)
        .ignore_status()
        .output()
        .context("run pg_dump")?;
    session.send("commit;\n")?;
    session.finish().context("close the snapshot session")?;
    check_output(&out, "pg_dump failed")?;
    Ok((counts, identity))
}

/// The archive's own checks: the header, a readable table of contents, a full read. Returns
/// the number of table-of-contents entries. The list is empty only for a database without
/// any object (`empty_database`: the snapshot counted no table); a dump cut short anywhere,
/// even one of an empty database, fails `pg_restore --list` or the full read.
fn verify_archive(sh: &Shell, file: &Path, empty_database: bool) -> Result<usize> {
    let name = file.display();
    let mut header = [0u8; 11];
    let read = std::fs::File::open(file)
        .and_then(|mut f| f.read(&mut header))
        .with_context(|| format!("read {name}"))?;
    if read < MAGIC.len() || &header[..MAGIC.len()] != MAGIC {
        return Err(check_failed(format!(
            "{name} is not a pg_dump archive (it does not start with PGDMP)"
        )));
    }
    if read < header.len() || header[10] != FORMAT_CUSTOM {
        return Err(check_failed(format!(
            "{name} is not a custom-format dump (its header says format {}); backups are `pg_dump -Fc`",
            header.get(10).copied().unwrap_or_default()
        )));
    }
    let list = run_checked(
        cmd!(sh, "pg_restore --list {file}").quiet(),
        "run pg_restore --list",
        format!("{name} has an unreadable table of contents"),
    )?;
    let entries = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .count();
    if entries == 0 && !empty_database {
        return Err(check_failed(format!(
            "{name} has an empty table of contents, but the database had tables"
        )));
    }
    // Reading every entry, data included, is what finds a dump cut short or rewritten.
    run_checked(
        cmd!(sh, "pg_restore --file /dev/null {file}").quiet(),
        "run pg_restore",
        format!("{name} cannot be read to its end"),
    )?;
    Ok(entries)
}

/// A scratch database on the backed-up server, dropped whatever happens.
struct Scratch<'a> {
    sh: &'a Shell,
    server: &'a Target,
    name: String,
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        let sql = format!("drop database if exists {}", self.name);
        if let Err(err) = self.server.query(self.sh, &sql) {
            eprintln!(
                "warning: could not drop the scratch database {}: {}",
                self.name,
                redact(&err.to_string())
            );
        }
    }
}

/// Restores `file` into a new scratch database and compares its row counts with `expected`.
fn verify_by_restoring(
    sh: &Shell,
    target: &Target,
    file: &Path,
    expected: &[TableRows],
) -> Result<()> {
    // Only [a-z0-9_]: safe to write into SQL unquoted.
    let name = format!(
        "{SCRATCH_PREFIX}{}_{}",
        std::process::id(),
        util::random_hex(6)?
    );
    target
        .query(sh, &format!("create database {name} template template0"))
        .with_context(|| format!("create the scratch database {name} (the role needs CREATEDB)"))?;
    let scratch = Scratch {
        sh,
        server: target,
        name: name.clone(),
    };
    let db = target.with_database(&name);
    let restore = db
        .tool(sh, "pg_restore")
        .args([
            "--single-transaction",
            "--exit-on-error",
            "--no-owner",
            "--no-acl",
        ])
        .arg(file);
    run_checked(
        restore,
        "run pg_restore",
        "the dump does not restore into a scratch database",
    )?;
    let restored = pg::row_counts(sh, &db)?;
    drop(scratch);
    let problems = count_differences(expected, &restored, true);
    if !problems.is_empty() {
        return Err(check_failed(format!(
            "the restored copy differs from the snapshot: {}",
            problems.join("; ")
        )));
    }
    Ok(())
}

/// How `restored` differs from `expected`, table by table.
/// With `extras`, a restored table that was not counted is one too (a scratch database holds
/// only the dump; a restore's target may hold tables of its own that the dump leaves alone).
fn count_differences(expected: &[TableRows], restored: &[TableRows], extras: bool) -> Vec<String> {
    let mut problems: Vec<String> = pg::compare_counts(expected, restored)
        .into_iter()
        .filter(|(_, want, got)| *got != Some(*want))
        .map(|(table, want, got)| match got {
            Some(got) => format!("{table}: {want} rows at dump time, {got} restored"),
            None => format!("{table}: {want} rows at dump time, missing after the restore"),
        })
        .collect();
    for extra in pg::compare_counts(restored, expected)
        .into_iter()
        .filter(|(_, _, got)| extras && got.is_none())
    {
        problems.push(format!(
            "{}: restored but not counted at dump time",
            extra.0
        ));
    }
    problems
}

/// Prints the row counts, and beside them the restored ones; returns whether all are equal.
fn print_counts(expected: &[TableRows], restored: Option<&[TableRows]>) -> bool {
    let width = expected
        .iter()
        .map(|t| t.name().len())
        .max()
        .unwrap_or(0)
        .max("TABLE".len());
    let Some(restored) = restored else {
        println!("  {:width$}  ROWS", "TABLE");
        for t in expected {
            println!("  {:width$}  {}", t.name(), t.rows);
        }
        return true;
    };
    println!(
        "  {:width$}  {:>10}  {:>10}",
        "TABLE", "AT DUMP", "RESTORED"
    );
    let mut equal = true;
    for (table, want, got) in pg::compare_counts(expected, restored) {
        let got_text = got.map_or_else(|| "missing".to_owned(), |g| g.to_string());
        let mark = if got == Some(want) { "" } else { "  DIFFERENT" };
        equal &= got == Some(want);
        println!("  {table:width$}  {want:>10}  {got_text:>10}{mark}");
    }
    equal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_files_and_scratch_databases_carry_their_writer() {
        assert_eq!(writer_pid("x.dump.partial-1234", PARTIAL), Some(1234));
        assert_eq!(writer_pid("x.dump.meta.partial-77", PARTIAL), Some(77));
        assert_eq!(writer_pid("x.dump", PARTIAL), None);
        assert_eq!(writer_pid("x.dump.partial-", PARTIAL), None);
        assert_eq!(
            writer_pid("genesis_verify_4321_a1b2c3d4e5f6", SCRATCH_PREFIX),
            Some(4321)
        );
        // Older scratch databases have no process id: they are stale by definition.
        assert_eq!(
            writer_pid("genesis_verify_a1b2c3d4e5f6", SCRATCH_PREFIX),
            None
        );
        assert!(alive(std::process::id()));
    }

    #[test]
    fn restored_counts_are_compared_table_by_table() {
        let rows = |list: &[(&str, i64)]| -> Vec<TableRows> {
            list.iter()
                .map(|(t, n)| TableRows {
                    schema: "public".into(),
                    table: (*t).into(),
                    rows: *n,
                })
                .collect()
        };
        let dumped = rows(&[("a", 3), ("b", 0)]);
        assert!(count_differences(&dumped, &rows(&[("a", 3), ("b", 0)]), true).is_empty());
        assert_eq!(
            count_differences(&dumped, &rows(&[("a", 2), ("c", 1)]), true),
            [
                "public.a: 3 rows at dump time, 2 restored",
                "public.b: 0 rows at dump time, missing after the restore",
                "public.c: restored but not counted at dump time"
            ]
        );
        // A restore's target may keep tables of its own.
        assert!(
            count_differences(&dumped, &rows(&[("a", 3), ("b", 0), ("c", 1)]), false).is_empty()
        );
    }

    #[test]
    fn sidecar_sits_beside_the_dump() {
        assert_eq!(
            sidecar_of(Path::new("/b/test-1.dump")),
            PathBuf::from("/b/test-1.dump.meta.json")
        );
    }
}

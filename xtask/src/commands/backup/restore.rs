//! `cargo xtask db-restore`: a backup checked against its sidecar and its source, restored in
//! one transaction whose row counts are compared before it commits.

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use genesis_settings::redact;
use xshell::Shell;

use super::*;
use crate::tools::util::sha256_file;

impl flags::DbRestore {
    pub fn run(self, sh: &Shell, stack: &Stack) -> Result<()> {
        let env = self.env.model();
        let target = resolve_allowed(
            stack,
            env,
            &self.server,
            "a restore drops and recreates the dump's tables in that database",
        )?;
        let ask = format!(
            "db-restore would overwrite {} with {} (the dump's tables are dropped and recreated)",
            target.masked_url(),
            self.file.display()
        );
        // Without a terminal, refused before anything is read; with one, asked once the dump
        // has been checked, right before the restore.
        if !self.yes && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            confirm(&ask, false, "nothing was restored")?;
        }
        tools(sh, &["pg_restore", "psql"])?;
        let file = user_path(&self.file)?;
        if !file.is_file() {
            return Err(usage(format!("{} is not a file", file.display())));
        }
        let sidecar = sidecar_of(&file);
        let meta: Meta = match std::fs::read_to_string(&sidecar) {
            Ok(text) => serde_json::from_str(&text).map_err(|err| {
                check_failed(format!(
                    "{} is not a backup sidecar: {err}",
                    sidecar.display()
                ))
            })?,
            Err(_) => {
                return Err(usage(format!(
                    "{} is missing: a dump cannot be verified without its sidecar \
                     (backups taken with `cargo xtask db-backup` have one)",
                    sidecar.display()
                )));
            }
        };

        // Everything about the file is checked before the target is touched.
        verify_checksum(&file, &sidecar, &meta)?;
        let toc_entries =
            verify_archive(sh, &file, meta.tables.is_empty() && meta.toc_entries == 0)?;
        crate::services::reset_marker::warn_after_killed_reset(stack, env);
        if let pg::Probe::Missing(_) = target.probe(sh)
            && target.origin == pg::Origin::Model
            && crate::services::reset_marker::after_killed_reset(stack, env).is_some()
        {
            // The reset was killed between its drop and its create: the restore brings the
            // database back too.
            pg::create_database(sh, &target)?;
            eprintln!("created {} again, empty, to restore into", target.database);
        }
        let (server_version, _) = reach(sh, &target)?;
        sweep_scratch_databases(sh, &target);
        check_source(sh, &target, &meta, self.from.as_deref())?;
        confirm(&ask, self.yes, "nothing was restored")?;

        let started = Instant::now();
        let restored = restore_in_one_transaction(sh, &target, &file, &meta.tables)?;
        crate::services::reset_marker::Marker::clear(stack, &target);
        println!(
            "restored {} ({toc_entries} entries, sha256 verified) into {} (PostgreSQL {server_version}) in {:.1} s",
            file.display(),
            target.masked_url(),
            started.elapsed().as_secs_f64()
        );
        print_counts(&meta.tables, Some(&restored));
        println!(
            "row counts equal for {} tables, checked before the commit",
            meta.tables.len()
        );
        Ok(())
    }
}

/// Refuses a dump of another environment, database, server or schema over `target`, unless
/// `--from` names the dump's database. A target without a table has nothing to lose and takes
/// any dump (a server recreated after a lost volume).
fn check_source(sh: &Shell, target: &Target, meta: &Meta, from: Option<&str>) -> Result<()> {
    let now = pg::Identity::of(sh, target).context("identify the target database")?;
    let tables = pg::row_counts(sh, target)?;
    let mut differences = Vec::new();
    if meta.env != target.env.name() {
        differences.push(format!(
            "it is a dump of {}, the target is {}",
            meta.env, target.env
        ));
    }
    if meta.database != target.database {
        differences.push(format!(
            "it is a dump of the database {}, the target is {}",
            meta.database, target.database
        ));
    }
    if let Some(then) = &meta.server_id
        && *then != now.server
    {
        differences.push(format!(
            "it was taken on another server ({}, system id {then}; the target's is {})",
            meta.server, now.server
        ));
    }
    if let (Some(then), Some(current)) = (&meta.schema, &now.schema)
        && then != current
    {
        differences.push(format!(
            "its schema is at migration {then}, the target's at {current}"
        ));
    }
    if differences.is_empty() {
        return Ok(());
    }
    if tables.is_empty() {
        // Nothing to lose (a database recreated after a lost volume), but never silent.
        eprintln!(
            "note: restoring a dump of {} ({}) into {}, which has no table: {}",
            meta.database,
            meta.env,
            target.masked_url(),
            differences.join("; ")
        );
        return Ok(());
    }
    match from {
        Some(name) if name == meta.database => {
            eprintln!(
                "note: restoring a dump of {} ({}) over {} as --from asks: {}",
                meta.database,
                meta.env,
                target.masked_url(),
                differences.join("; ")
            );
            Ok(())
        }
        Some(name) => Err(usage(format!(
            "--from {name} does not name the dump's source: it is a dump of {} ({}); nothing was restored",
            meta.database, meta.server
        ))),
        None => Err(usage(format!(
            "refusing to restore a dump of {} ({}) over {} ({} tables): {}; pass --from {} if \
             that is what you mean; nothing was restored",
            meta.database,
            meta.server,
            target.masked_url(),
            tables.len(),
            differences.join("; "),
            meta.database
        ))),
    }
}

/// Restores `file` over `target` in one transaction that this process holds: `pg_restore`
/// writes the dump as SQL, which is streamed into a `psql` session after its `BEGIN`; the row
/// counts are compared inside that transaction, and only when they equal `expected` is it
/// committed. Any failure, a Ctrl-C, or a `kill -9` of the xtask (which closes the session's
/// input and, through the parent-death signal, ends both tools) leaves the transaction
/// uncommitted, so the server rolls it back.
fn restore_in_one_transaction(
    sh: &Shell,
    target: &Target,
    file: &Path,
    expected: &[TableRows],
) -> Result<Vec<TableRows>> {
    let unchanged = |why: String| {
        check_failed(format!(
            "{why}; the transaction was rolled back, {} is unchanged",
            target.database
        ))
    };
    let mut session = Session::spawn(target.psql(sh)).context("open the restore session")?;
    // The script's own output (its `select set_config(...)`) goes nowhere, so that only the
    // counts come back; warnings only, so that stderr cannot fill while nobody reads it.
    session.send("set client_min_messages = warning;\nbegin;\n\\o /dev/null\n")?;
    let script = tied(sh, pg::program(sh, "pg_restore"), OnOurDeath::Kill)
        .quiet()
        .args([
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-acl",
            "--exit-on-error",
            "--file=-",
        ])
        .arg(file);
    let mut producer = std::process::Command::from(script)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("run pg_restore")?;
    let mut script_out = producer.stdout.take().context("pg_restore's output")?;
    let fed = session.send_from(&mut script_out);
    // A session that stopped reading leaves pg_restore on a closed pipe: it ends.
    drop(script_out);
    let status = producer.wait().context("wait for pg_restore")?;
    let mut stderr = String::new();
    if let Some(mut pipe) = producer.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    util::check_interrupted().map_err(|_| unchanged("interrupted".to_owned()))?;
    if let Err(err) = fed {
        return Err(unchanged(format!(
            "the restore stopped at its first error: {}",
            redact(&format!("{err:#}"))
        )));
    }
    if !status.success() {
        return Err(unchanged(format!(
            "pg_restore failed: {}",
            redact(stderr.trim())
        )));
    }
    session.send(&format!("\\o\nreset search_path;\n{ROW_COUNTS_SQL};\n"))?;
    let restored = pg::parse_row_counts(
        &session
            .read_line()
            .map_err(|err| unchanged(format!("count the restored rows: {err:#}")))?,
    )?;
    let problems = count_differences(expected, &restored, false);
    if !problems.is_empty() {
        session.send("rollback;\n")?;
        session.finish().context("roll the restore back")?;
        print_counts(expected, Some(&restored));
        return Err(unchanged(format!(
            "the restored rows differ from those at dump time: {}",
            problems.join("; ")
        )));
    }
    util::check_interrupted().map_err(|_| unchanged("interrupted".to_owned()))?;
    session.send("commit;\n")?;
    session
        .finish()
        .map_err(|err| unchanged(format!("the commit failed: {err:#}")))?;
    Ok(restored)
}

/// Size and checksum against the sidecar, with the likely cause when they differ.
fn verify_checksum(file: &Path, sidecar: &Path, meta: &Meta) -> Result<()> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("read {}", file.display()))?
        .len();
    if size == meta.size_bytes && sha256_file(file)? == meta.sha256 {
        return Ok(());
    }
    let want = meta.size_bytes;
    let why = if size < want {
        format!("it is cut short: {size} of {want} bytes")
    } else if size > want && crlf_pairs(file)? == size - want {
        "its line endings were rewritten (every LF became CRLF, as a text-mode transfer does)"
            .to_owned()
    } else if size != want {
        format!("it has {size} bytes, not {want}")
    } else {
        "its content changed".to_owned()
    };
    Err(check_failed(format!(
        "{} does not match the checksum in {}: {why}; nothing was restored",
        file.display(),
        sidecar.display()
    )))
}

/// How many CR LF pairs the file holds.
fn crlf_pairs(file: &Path) -> Result<u64> {
    let mut reader = std::fs::File::open(file)?;
    let mut buf = vec![0u8; 1 << 16];
    let (mut pairs, mut previous) = (0u64, 0u8);
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(pairs);
        }
        for &byte in &buf[..n] {
            if previous == b'\r' && byte == b'\n' {
                pairs += 1;
            }
            previous = byte;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_crlf_pairs_across_buffer_edges() {
        let dir = std::env::temp_dir().join(format!("xtask-crlf-{}", util::random_hex(4).unwrap()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let mut bytes = vec![b'x'; (1 << 16) - 1];
        bytes.extend_from_slice(b"\r\n\r\r\nab\n");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(crlf_pairs(&path).unwrap(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

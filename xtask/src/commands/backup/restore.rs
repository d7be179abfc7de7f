//! `cargo xtask db-restore`: a backup checked against its sidecar, restored and counted.

use std::io::Read;

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use genesis_settings::redact;
use xshell::Shell;

use super::{
    Meta, print_counts, reach, resolve_allowed, sidecar_of, tools, user_path, verify_archive,
};
use crate::flags;
use crate::services::Stack;
use crate::tools::pg;
use crate::tools::util::{check_failed, sha256_file, usage};

impl flags::DbRestore {
    pub fn run(self, sh: &Shell, stack: &Stack) -> Result<()> {
        let env = self.env.model();
        let target = resolve_allowed(
            sh,
            stack,
            env,
            &self.server,
            "a restore drops and recreates the dump's tables in that database",
        )?;
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
        let (server_version, _) = reach(sh, &target)?;
        if meta.env != env.name() {
            eprintln!(
                "note: the dump was taken from {} ({}); restoring into {env} ({})",
                meta.env, meta.database, target.database
            );
        }

        let started = Instant::now();
        let out = target
            .tool(sh, "pg_restore")
            .args([
                "--single-transaction",
                "--exit-on-error",
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-acl",
            ])
            .arg(&file)
            .ignore_status()
            .output()
            .context("run pg_restore")?;
        if !out.status.success() {
            return Err(check_failed(format!(
                "the restore stopped at its first error and was rolled back, {} is unchanged: {}",
                target.database,
                redact(String::from_utf8_lossy(&out.stderr).trim())
            )));
        }
        let restored = pg::row_counts(sh, &target)?;
        println!(
            "restored {} ({toc_entries} entries, sha256 verified) into {} (PostgreSQL {server_version}) in {:.1} s",
            file.display(),
            target.masked_url(),
            started.elapsed().as_secs_f64()
        );
        let equal = print_counts(&meta.tables, Some(&restored));
        if !equal {
            return Err(check_failed(
                "row counts after the restore differ from those at dump time",
            ));
        }
        println!("row counts equal for {} tables", meta.tables.len());
        Ok(())
    }
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
        let dir = std::env::temp_dir().join(format!(
            "xtask-crlf-{}",
            crate::tools::util::random_hex(4).unwrap()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let mut bytes = vec![b'x'; (1 << 16) - 1];
        bytes.extend_from_slice(b"\r\n\r\r\nab\n");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(crlf_pairs(&path).unwrap(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

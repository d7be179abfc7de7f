//! The suites' nextest archive: built once (or given, and checked before anything is touched),
//! listed, and identified by its binaries so that shards built apart still merge.

use std::ffi::OsString;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::commands::parity;
use crate::commands::pool::POOL_SERVER;
use crate::services::preflight;
use crate::tools::util::{
    as_from_a_shell, one_line, project_root, sha256_file, sha256_hex, target_dir, usage, xtask_dir,
};

pub const ARCHIVE: &str = "genesis-tests.tar.zst";

/// Where `--build-archive-only` leaves the archive, from the workspace root.
pub const ARCHIVE_PATH: &str = "target/xtask/genesis-tests.tar.zst";

/// The application binary the container serves, which a shard needs beside the archive.
pub const API_BINARY_PATH: &str = "target/debug/genesis-api";

/// How hard the archive is compressed: the fastest level for one that stays on this machine
/// (it halves the archiving, 0.45 s against 0.9-1.2 s on 2 loaded cores, for 62 MB against
/// 34 MB, and speeds the extraction); nextest's default for one that other machines download.
#[derive(Debug, Clone, Copy)]
pub enum Zstd {
    Fastest,
    Default,
}

/// Builds the application, the pool server and the suites with one `cargo test --no-run`,
/// showing cargo's own progress (a first build takes minutes), then the suites' nextest archive
/// at `archive`, unless the archive there was made from these very binaries: archiving
/// unchanged binaries again cost 0.7 s of every run, and its extraction more.
pub fn build_archive(sh: &Shell, archive: &Path, zstd: Zstd) -> Result<()> {
    let level = match zstd {
        Zstd::Fastest => "-7",
        Zstd::Default => "0",
    };
    let target = target_dir();
    let started = Instant::now();
    eprintln!("building the suites (one archive for every mode)");
    let cargo = crate::tools::util::cargo();
    // `cargo test --no-run` builds the examples (the pool server) and the application binary
    // the suites start, with the features nextest's own build uses.
    let built = as_from_a_shell(cmd!(
        sh,
        "{cargo} test --no-run -p genesis-api --target-dir {target} --message-format json-render-diagnostics"
    ))
    .quiet()
    .read()
    .context("build genesis-api and its suites")?;
    let pool_server = target.join(format!("debug/examples/{POOL_SERVER}"));
    if !pool_server.is_file() {
        bail!("the build made no {}", pool_server.display());
    }
    let inputs = format!(
        "zstd {level}\nnextest {}\n{}",
        file_stamp(&preflight::nextest()?),
        built_from(&built)?
    );
    let stamp = built_from_stamp(archive);
    let current = |inputs: &str| format!("{inputs}archive {}\n", file_stamp(archive));
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(current(&inputs).as_str()) {
        eprintln!(
            "built in {:.1} s; the binaries are those of the archive, which is kept",
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let _ = std::fs::remove_file(&stamp);
    as_from_a_shell(cmd!(
        sh,
        "cargo nextest archive -p genesis-api --target-dir {target} --archive-file {archive} --zstd-level={level}"
    ))
    .quiet()
    .run()
    .context("build the test archive")?;
    std::fs::write(&stamp, current(&inputs))
        .with_context(|| format!("write {}", stamp.display()))?;
    eprintln!("built in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Every executable of a build that the archive holds (the test binaries and the
/// application, not the examples), one line each with its size and modification time, from
/// cargo's JSON messages: what the archive holds changes only with one of them.
fn built_from(messages: &str) -> Result<String> {
    let mut lines = Vec::new();
    for message in messages.lines().filter(|l| l.starts_with('{')) {
        let message: serde_json::Value =
            serde_json::from_str(message).context("read cargo's build messages")?;
        let example = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "example"));
        if message["reason"] != "compiler-artifact" || example {
            continue;
        }
        if let Some(executable) = message["executable"].as_str() {
            lines.push(format!(
                "{} {}\n",
                message["target"]["name"].as_str().unwrap_or_default(),
                file_stamp(Path::new(executable))
            ));
        }
    }
    if lines.is_empty() {
        bail!("cargo built no executable");
    }
    lines.sort();
    Ok(lines.concat())
}

/// A file's path, size and modification time, or its path and `missing`.
fn file_stamp(path: &Path) -> String {
    match std::fs::metadata(path).and_then(|m| Ok((m.len(), m.modified()?))) {
        Ok((len, modified)) => {
            let since = modified
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            format!("{} {len} {}", path.display(), since.as_nanos())
        }
        Err(_) => format!("{} missing", path.display()),
    }
}

/// `test --build-archive-only`: what a shard on another machine needs, built once here: the
/// suites' archive and the application binary the container serves (`target/debug/genesis-api`).
pub fn build_only(sh: &Shell) -> Result<()> {
    preflight::nextest()?;
    let dir = xtask_dir();
    std::fs::create_dir_all(&dir).context("create target/xtask")?;
    let archive = dir.join(ARCHIVE);
    build_archive(sh, &archive, Zstd::Default)?;
    println!(
        "built {} and {}: run them elsewhere with `cargo xtask test --archive {ARCHIVE_PATH} --partition slice:M/N`",
        archive.display(),
        target_dir().join("debug/genesis-api").display()
    );
    Ok(())
}

/// Every test the run selects from the archive, and this partition's share, from
/// `cargo nextest list` (which needs no services). The archive is extracted to `extract`
/// unless that holds its extraction already (the same file, size and time, extracted whole).
pub fn list_archive(
    sh: &Shell,
    archive: &Path,
    extract: &Path,
    filter: &str,
    partition: Option<String>,
    filters: &[String],
) -> Result<parity::ArchiveTests> {
    let root = project_root();
    std::fs::create_dir_all(extract)?;
    let partition_args = partition
        .as_ref()
        .map(|p| vec!["--partition".to_owned(), p.clone()])
        .unwrap_or_default();
    // Written once the extraction and the binaries' digest are done: a stamp from an
    // extraction cut short is never there.
    let stamp = extract.join(".extracted-from");
    let archive_stamp = format!("{}\n", file_stamp(&std::fs::canonicalize(archive)?));
    let mut kept = std::fs::read_to_string(&stamp)
        .ok()
        .and_then(|text| Some(text.strip_prefix(&archive_stamp)?.trim().to_owned()))
        .filter(|digest| !digest.is_empty());
    let list = |kept: bool| {
        let source = list_source(archive, extract, kept);
        let partition_args = &partition_args;
        cmd!(sh, "cargo nextest list {source...} --workspace-remap {root} -E {filter} {partition_args...} --message-format json -- {filters...}")
            .quiet()
            .ignore_status()
            .output()
            .context("list the tests of the archive")
    };
    if kept.is_none() {
        let _ = std::fs::remove_file(&stamp);
    }
    let mut out = list(kept.is_some())?;
    if !out.status.success() && kept.is_some() {
        // An extraction touched since: extracted again.
        let _ = std::fs::remove_file(&stamp);
        kept = None;
        out = list(false)?;
    }
    if !out.status.success() {
        bail!(
            "`cargo nextest list` cannot read {}: {}",
            archive.display(),
            one_line(&out.stderr)
        );
    }
    let json = String::from_utf8_lossy(&out.stdout);
    let (tests, shard) = parity::parse_list(&json)?;
    let binaries = match kept {
        Some(digest) => digest,
        None => {
            let digest = binaries_digest(&parity::list_binaries(&json)?)?;
            std::fs::write(&stamp, format!("{archive_stamp}{digest}\n"))
                .with_context(|| format!("write {}", stamp.display()))?;
            digest
        }
    };
    let mut all_filters = vec![filter.to_owned()];
    all_filters.extend(filters.iter().cloned());
    Ok(parity::ArchiveTests {
        file: archive
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
        bytes: std::fs::metadata(archive).map(|m| m.len()).unwrap_or(0),
        binaries,
        partition,
        filters: all_filters,
        tests,
        shard,
    })
}

/// Where `cargo nextest list` finds the archive's binaries: `extract` as it is when `kept`,
/// else the archive, extracted there first.
fn list_source(archive: &Path, extract: &Path, kept: bool) -> Vec<OsString> {
    if kept {
        let extracted = extract.join("target");
        let nextest = extracted.join("nextest");
        vec![
            "--binaries-metadata".into(),
            nextest.join("binaries-metadata.json").into(),
            "--cargo-metadata".into(),
            nextest.join("cargo-metadata.json").into(),
            "--target-dir-remap".into(),
            extracted.into(),
        ]
    } else {
        vec![
            "--archive-file".into(),
            archive.into(),
            "--extract-to".into(),
            extract.into(),
            "--extract-overwrite".into(),
        ]
    }
}

/// The file beside an archive that says which build it was made from.
pub fn built_from_stamp(archive: &Path) -> std::path::PathBuf {
    archive.with_extension("built-from")
}

/// One SHA-256 over the test binaries' own digests, each beside its binary id: what two
/// archives of the same build share, whatever their tar headers say. The binaries are hashed
/// in this process, each on a thread of its own (SHA-256 with the CPU's own instructions where
/// it has them: ~0.1 s for the suites' 150 MB, where `sha256sum` took 0.6 s).
pub fn binaries_digest(binaries: &[(String, String)]) -> Result<String> {
    let sums: Vec<Result<String>> = std::thread::scope(|scope| {
        let hashing: Vec<_> = binaries
            .iter()
            .map(|(_, path)| scope.spawn(move || sha256_file(Path::new(path))))
            .collect();
        hashing
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("hashing a test binary panicked")))
            })
            .collect()
    });
    let mut lines = String::new();
    for ((id, _), sum) in binaries.iter().zip(sums) {
        let sum = sum.context("checksum the test binaries")?;
        lines.push_str(&format!("{sum}  {id}\n"));
    }
    Ok(sha256_hex(lines.as_bytes()))
}

/// Refuses a file that is not a nextest archive before anything is replaced or started: its
/// first bytes (zstd's frame), then its listing (which reads every binary's test list).
pub fn check_archive_file(given: &Path) -> Result<()> {
    const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    let mut head = [0u8; 4];
    let read = std::fs::File::open(given)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .with_context(|| format!("read {}", given.display()))?;
    if read < head.len() || head != ZSTD_MAGIC {
        return Err(usage(format!(
            "{} is not a nextest archive (not a .tar.zst: it does not start with zstd's \
             magic number); make one with `cargo nextest archive -p genesis-api \
             --archive-file FILE`; nothing was replaced or started",
            given.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::built_from;

    #[test]
    fn the_archive_is_stamped_with_its_executables_not_the_examples() {
        let dir = std::env::temp_dir().join(format!("xtask-built-from-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (auth, example) = (dir.join("auth-1"), dir.join("test_db_pool"));
        std::fs::write(&auth, b"1234").unwrap();
        std::fs::write(&example, b"12").unwrap();
        let message = |kind: &str, name: &str, path: &std::path::Path| {
            serde_json::json!({
                "reason": "compiler-artifact",
                "target": { "kind": [kind], "name": name },
                "executable": path,
            })
            .to_string()
        };
        let messages = [
            message("test", "auth", &auth),
            message("example", "test_db_pool", &example),
            message("bin", "genesis-api", &dir.join("gone")),
            r#"{"reason":"build-finished","success":true}"#.to_owned(),
        ]
        .join("\n");
        let stamp = built_from(&messages).unwrap();
        let lines: Vec<&str> = stamp.lines().collect();
        assert_eq!(lines.len(), 2, "{stamp}");
        assert!(lines[0].starts_with(&format!("auth {} 4 ", auth.display())));
        assert_eq!(
            lines[1],
            format!("genesis-api {} missing", dir.join("gone").display())
        );
        // A relinked binary changes the stamp.
        std::fs::write(&auth, b"12345").unwrap();
        assert_ne!(built_from(&messages).unwrap(), stamp);
        assert!(built_from("").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

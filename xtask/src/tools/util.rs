//! Small helpers shared by the commands: the project root, the interrupt flag, exit codes,
//! writing generated files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use genesis_settings::redact;
use sha2::{Digest, Sha256};

static ROOT: OnceLock<PathBuf> = OnceLock::new();

/// The workspace root of the checkout this run works on, found once at start-up by
/// [`find_project_root`]. Never a path compiled into the binary: checkouts that share a
/// `CARGO_TARGET_DIR` share the binary too.
pub fn project_root() -> PathBuf {
    ROOT.get_or_init(|| {
        find_project_root().unwrap_or_else(|err| {
            eprintln!("error: {err:#}");
            std::process::exit(2)
        })
    })
    .clone()
}

/// `cargo run` (which `cargo xtask` is) puts the xtask package's folder in the child's
/// `CARGO_MANIFEST_DIR`, for the checkout cargo found the manifest in; the workspace is its
/// parent. Run any other way (the binary by hand, a test), the nearest folder above the current
/// one holding `xtask/Cargo.toml` and a `Cargo.toml` is the workspace.
pub fn find_project_root() -> Result<PathBuf> {
    let is_root =
        |dir: &Path| dir.join("Cargo.toml").is_file() && dir.join("xtask/Cargo.toml").is_file();
    if let Some(manifest) = std::env::var_os("CARGO_MANIFEST_DIR") {
        let manifest = PathBuf::from(manifest);
        if manifest.ends_with("xtask") {
            if let Some(parent) = manifest.parent().filter(|p| is_root(p)) {
                return Ok(parent
                    .canonicalize()
                    .unwrap_or_else(|_| parent.to_path_buf()));
            }
        }
    }
    let cwd = std::env::current_dir().context("read the current folder")?;
    cwd.ancestors()
        .find(|dir| is_root(dir))
        .map(|dir| dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()))
        .ok_or_else(|| {
            usage(format!(
                "{} is not inside a Genesis workspace (no xtask/Cargo.toml above it): run `cargo xtask` from the checkout",
                cwd.display()
            ))
        })
}

static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Installs the one process-wide Ctrl-C (and SIGTERM) handler: the first signal sets the flag
/// that every wait loop reads, so the command stops and its guards remove what it started; a
/// second one exits at once.
pub fn install_interrupt_handler() -> Result<()> {
    let flag = Arc::clone(INTERRUPTED.get_or_init(Default::default));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag))
            .context("install the Ctrl-C handler")?;
        signal_hook::flag::register(signal, Arc::clone(&flag))
            .context("install the Ctrl-C handler")?;
    }
    Ok(())
}

/// Whether Ctrl-C (or SIGTERM) arrived.
pub fn interrupted() -> bool {
    INTERRUPTED
        .get()
        .is_some_and(|flag| flag.load(Ordering::SeqCst))
}

/// An error when Ctrl-C arrived: what wait loops return so that guards clean up on the way out.
pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        Err(check_failed("interrupted"))
    } else {
        Ok(())
    }
}

/// The target folder of the builds the xtask runs or mounts: always `<workspace>/target`, even
/// when the user's `CARGO_TARGET_DIR` points elsewhere, because the `genesis-api` container
/// sees the workspace (and so this folder) at `/workspace`.
pub fn target_dir() -> PathBuf {
    project_root().join("target")
}

/// Where the xtask keeps its build products and reports, under `target/`.
pub fn xtask_dir() -> PathBuf {
    target_dir().join("xtask")
}

/// The failures that map to a documented exit code. Any other error exits 1.
#[derive(Debug)]
pub enum Failure {
    /// A check ran and failed (exit 1).
    Check(String),
    /// Bad usage or a missing prerequisite: nothing was touched (exit 2).
    Usage(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Check(msg) | Failure::Usage(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Failure {}

/// Whether the user agrees to `action`, which overwrites data: `--yes`, or a "y" typed on the
/// terminal. Without a terminal and without `--yes` it refuses at once (exit 2), as a "no" does;
/// `nothing` says what was left as it was.
pub fn confirm(action: &str, yes: bool, nothing: &str) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(usage(format!(
            "{action}; there is no terminal to ask on: pass --yes; {nothing}"
        )));
    }
    eprint!("{action}? [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .context("read the answer")?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(usage(format!("not confirmed: {nothing}")))
    }
}

/// A child's stderr on one line: its non-empty lines, trimmed and joined by a space.
pub fn one_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A failed check (exit 1).
pub fn check_failed(msg: impl Into<String>) -> anyhow::Error {
    Failure::Check(msg.into()).into()
}

/// Bad usage or a missing prerequisite (exit 2). `msg` says what to do.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    Failure::Usage(msg.into()).into()
}

/// Prints the error chain on one line, credentials masked, and picks the exit code.
pub fn report_error(err: &anyhow::Error) -> ExitCode {
    let chain: Vec<String> = err.chain().map(ToString::to_string).collect();
    let text = redact(&chain.join(": "));
    if interrupted() {
        // Ctrl-C (or SIGTERM) ended the run, whatever step failed because of it: that step's
        // first line is enough (a child's own report of the signal can be a long traceback).
        let first = text.lines().next().unwrap_or_default();
        if first.starts_with("interrupted") {
            eprintln!("error: {first}");
        } else {
            eprintln!("error: interrupted (a step stopped by it: {first})");
        }
        return ExitCode::from(130);
    }
    eprintln!("error: {text}");
    match err.downcast_ref::<Failure>() {
        Some(Failure::Usage(_)) => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}

/// Whether a generated file is written or only compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Write,
    Check,
}

/// What [`ensure_file_contents`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileState {
    UpToDate,
    /// Written (in `Mode::Write`) or found stale (in `Mode::Check`), with a diff of the change.
    Changed {
        diff: String,
    },
}

/// Makes `path` hold `contents`, or in check mode reports how it differs. A write goes through a
/// temporary file and a rename, so a failure never leaves a half-written file.
pub fn ensure_file_contents(path: &Path, contents: &str, mode: Mode) -> Result<FileState> {
    let current = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(anyhow::Error::new(err).context(format!("read {}", path.display()))),
    };
    if current.as_deref() == Some(contents) {
        return Ok(FileState::UpToDate);
    }
    let diff = match &current {
        Some(old) => line_diff(old, contents),
        None => "  (the file does not exist)\n".to_owned(),
    };
    if mode == Mode::Write {
        let tmp = path.with_extension("xtask-tmp");
        std::fs::write(&tmp, contents)
            .map_err(|e| anyhow::Error::new(e).context(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| anyhow::Error::new(e).context(format!("replace {}", path.display())))?;
    }
    Ok(FileState::Changed { diff })
}

/// The lines that differ, `-` for lines of `old` and `+` for `new`, each with its line number.
pub fn line_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut out = String::new();
    for change in similar::TextDiff::from_slices(&a, &b).iter_all_changes() {
        let (sign, line) = match change.tag() {
            similar::ChangeTag::Equal => continue,
            similar::ChangeTag::Delete => ('-', change.old_index()),
            similar::ChangeTag::Insert => ('+', change.new_index()),
        };
        let number = line.map_or(0, |i| i + 1);
        out.push_str(&format!("  {number:>4} {sign} {}\n", change.value()));
    }
    if old.ends_with('\n') != new.ends_with('\n') {
        out.push_str("  (the final newline differs)\n");
    }
    out
}

/// Terminal colours: only on a terminal, and never when `NO_COLOR` is set.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    color: bool,
}

impl Style {
    pub fn stdout() -> Style {
        use std::io::IsTerminal;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            color: !no_color && std::io::stdout().is_terminal(),
        }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub fn green(self, text: &str) -> String {
        self.paint("32", text)
    }

    pub fn red(self, text: &str) -> String {
        self.paint("31", text)
    }
}

/// A long wait shown on stderr: a line of elapsed seconds rewritten in place on a terminal; on
/// anything else (or with `NO_COLOR`) a plain line when the wait starts to take time, then one
/// every ten seconds.
#[derive(Debug)]
pub struct Progress {
    label: String,
    live: bool,
    started: std::time::Instant,
    timeout: std::time::Duration,
    shown_secs: Option<u64>,
}

impl Progress {
    pub fn start(label: &str, timeout: std::time::Duration) -> Progress {
        use std::io::IsTerminal;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Progress {
            label: label.to_owned(),
            live: !no_color && std::io::stderr().is_terminal(),
            started: std::time::Instant::now(),
            timeout,
            shown_secs: None,
        }
    }

    pub fn tick(&mut self) {
        let elapsed = self.started.elapsed();
        let secs = elapsed.as_secs();
        if elapsed.as_millis() < 1000 || self.shown_secs == Some(secs) {
            return;
        }
        let limit = self.timeout.as_secs();
        if self.live {
            eprint!("\r{}: {secs} s (up to {limit} s)  ", self.label);
            self.shown_secs = Some(secs);
        } else if self.shown_secs.is_none_or(|shown| secs >= shown + 10) {
            eprintln!("{}: {secs} s (up to {limit} s)", self.label);
            self.shown_secs = Some(secs);
        }
    }

    /// Clears the live line, if one was drawn.
    pub fn finish(&mut self) {
        if self.live && self.shown_secs.take().is_some() {
            eprint!("\r\x1b[2K");
        }
    }
}

/// A UTC time as `(compact, rfc3339)`: `20240131T235959Z` for file names, `2024-01-31T23:59:59Z`.
pub fn utc_timestamp(time: std::time::SystemTime) -> (String, String) {
    let time = chrono::DateTime::<chrono::Utc>::from(time);
    (
        time.format("%Y%m%dT%H%M%SZ").to_string(),
        time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// The cargo that runs this xtask (`$CARGO`, which cargo sets for `cargo run`), else `cargo`
/// from the PATH: the toolchain that built the xtask builds what it builds.
pub fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// `cmd` (a cargo build) without the package variables `cargo run` gave this xtask
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, ...). Build scripts watch some of them (ring's
/// `rerun-if-env-changed=CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`), so a build started with them
/// and one started from a shell (`cargo test`) would each rebuild ring and everything above it
/// (~25 s here) after the other.
pub fn as_from_a_shell(cmd: xshell::Cmd<'_>) -> xshell::Cmd<'_> {
    let ours = |name: &str| {
        name.starts_with("CARGO_PKG_")
            || matches!(
                name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            )
    };
    std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| ours(name))
        .fold(cmd, |cmd, name| cmd.env_remove(name))
}

/// `bytes` random bytes from the operating system, as lowercase hex.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf)
        .map_err(|err| anyhow::anyhow!("get random bytes from the operating system: {err}"))?;
    Ok(hex(&buf))
}

/// The SHA-256 of a file's bytes, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("checksum {}", path.display()))?;
    Ok(hex(&hasher.finalize()))
}

/// The SHA-256 of `bytes`, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How many tests each mode runs at once: `NEXTEST_TEST_THREADS` when set, else one per CPU
/// (nextest's default). Both modes run at the same time, so that is already two per CPU:
/// here (2 CPUs) 4 or 6 per mode took as long as 2 and made hand-outs 5 to 30 times slower.
pub fn test_threads() -> usize {
    std::env::var("NEXTEST_TEST_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_is_the_standard_digest() {
        // FIPS 180-2's example: the digest of "abc".
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(random_hex(4).unwrap().len(), 8);
    }

    #[test]
    fn diff_shows_changed_lines() {
        assert_eq!(
            line_diff("a\nb\nc\n", "a\nB\nc\n"),
            "     2 - b\n     2 + B\n"
        );
        assert_eq!(line_diff("a\n", "a\nb\n"), "     2 + b\n");
        assert_eq!(line_diff("a\nb\n", "a\nb\n"), "");
    }

    #[test]
    fn utc_timestamps() {
        let at = |secs| utc_timestamp(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
        assert_eq!(
            at(0),
            ("19700101T000000Z".into(), "1970-01-01T00:00:00Z".into())
        );
        assert_eq!(at(951_782_400).1, "2000-02-29T00:00:00Z");
        assert_eq!(at(1_706_745_599).1, "2024-01-31T23:59:59Z");
    }
}

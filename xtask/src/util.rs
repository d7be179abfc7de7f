//! Small helpers shared by the commands: the project root, exit codes, writing generated files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use genesis_settings::redact;

/// The workspace root (the parent of the xtask crate).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
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
    eprintln!("error: {}", redact(&chain.join(": ")));
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

/// A minimal line diff (longest common subsequence), `-` for lines of `old` and `+` for `new`.
pub fn line_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("  {:>4} - {}\n", i + 1, a[i]));
            i += 1;
        } else {
            out.push_str(&format!("  {:>4} + {}\n", j + 1, b[j]));
            j += 1;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_changed_lines() {
        assert_eq!(
            line_diff("a\nb\nc\n", "a\nB\nc\n"),
            "     2 - b\n     2 + B\n"
        );
        assert_eq!(line_diff("a\n", "a\nb\n"), "     2 + b\n");
        assert_eq!(line_diff("a\nb\n", "a\nb\n"), "");
    }
}

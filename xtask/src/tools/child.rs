//! The child processes xshell 0.2 cannot run by itself: an interactive one (the terminal passed
//! through), a streamed one (lines post-processed as they come), one in the background with its
//! output in a log file, and a long-lived session that is talked to over a pipe. Each is still built with `xshell::cmd!`; only the running is here.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};

use anyhow::{Context, Result};
use xshell::Cmd;

/// Runs `cmd` with the terminal: stdin, stdout and stderr inherited.
pub fn interactive(cmd: Cmd<'_>) -> Result<ExitStatus> {
    let mut command = Command::from(cmd);
    let what = program(&command);
    command
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    command.status().with_context(|| format!("run {what}"))
}

/// Runs `cmd` and hands each line of its stdout (stderr merged is up to the caller's flags) to
/// `each` as it arrives, so that a `--follow` can be post-processed.
pub fn stream_lines(cmd: Cmd<'_>, mut each: impl FnMut(&str)) -> Result<ExitStatus> {
    let mut command = Command::from(cmd);
    let what = program(&command);
    command.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut child = command.spawn().with_context(|| format!("run {what}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        match line {
            Ok(line) => each(&line),
            Err(_) => break,
        }
    }
    child.wait().with_context(|| format!("wait for {what}"))
}

/// Starts `cmd` in the background with stdin closed and stdout and stderr in `log`; the caller
/// polls or kills the returned child.
pub fn background(cmd: Cmd<'_>, log: &Path) -> Result<Child> {
    let out = File::create(log).with_context(|| format!("create {}", log.display()))?;
    let err = out.try_clone()?;
    let mut command = Command::from(cmd);
    let what = program(&command);
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    command.spawn().with_context(|| format!("start {what}"))
}

/// A child kept open and talked to line by line (a `psql` session holding a transaction).
/// Dropping it closes its stdin and waits for it.
#[derive(Debug)]
pub struct Session {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Session {
    pub fn spawn(cmd: Cmd<'_>) -> Result<Session> {
        let mut command = Command::from(cmd);
        let what = program(&command);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().with_context(|| format!("run {what}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        Ok(Session {
            what,
            child,
            stdin,
            stdout,
        })
    }

    pub fn send(&mut self, text: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .context("the session's input is closed")?;
        stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|_| self.failure())
    }

    /// The next line of output, without its newline. The end of the output is an error that
    /// carries the child's stderr.
    pub fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) | Err(_) => Err(self.failure()),
            Ok(_) => Ok(line.trim_end_matches(['\n', '\r']).to_owned()),
        }
    }

    /// Closes the input and waits; an unsuccessful exit is an error with the child's stderr.
    pub fn finish(mut self) -> Result<()> {
        self.stdin.take();
        let status = self
            .child
            .wait()
            .with_context(|| format!("wait for {}", self.what))?;
        if status.success() {
            Ok(())
        } else {
            Err(self.failure())
        }
    }

    fn failure(&mut self) -> anyhow::Error {
        self.stdin.take();
        let _ = self.child.wait();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let stderr = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
        anyhow::anyhow!(
            "{} failed: {}",
            self.what,
            if stderr.is_empty() {
                "no message"
            } else {
                &stderr
            }
        )
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.wait();
    }
}

/// The program's name, for messages (never its arguments or environment).
fn program(command: &Command) -> String {
    command.get_program().to_string_lossy().into_owned()
}

//! The child processes xshell 0.2 cannot run by itself: an interactive one (the terminal passed
//! through), a streamed one (lines post-processed as they come), one in the background with its
//! output in a log file, and a long-lived session that is talked to over a pipe. Each is still built with `xshell::cmd!`; only the running is here.
//!
//! [`tied`] makes a child die with this process even when no guard runs (`kill -9`): the kernel's
//! parent-death signal, set by util-linux's `setpriv --pdeathsig` before it executes the
//! program, since setting it ourselves would need `pre_exec`, which is `unsafe`.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Output, Stdio};

use anyhow::{Context, Result};
use genesis_settings::redact;
use xshell::{Cmd, Shell};

use crate::tools::util::check_failed;

/// Runs `cmd` with its output captured. `running` is the context of an error starting it; a
/// child that fails is a failed check (exit 1) reading `{failed}: {stderr}`, its stderr
/// trimmed and redacted. The output is returned for its stdout.
pub fn run_checked(cmd: Cmd<'_>, running: &str, failed: impl std::fmt::Display) -> Result<Output> {
    let out = cmd
        .ignore_status()
        .output()
        .with_context(|| running.to_owned())?;
    check_output(&out, failed)?;
    Ok(out)
}

/// A failed check reading `{failed}: {stderr}` (stderr trimmed and redacted) when `out` is a
/// failure, for a child run by other means than [`run_checked`].
pub fn check_output(out: &Output, failed: impl std::fmt::Display) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    Err(check_failed(format!(
        "{failed}: {}",
        redact(String::from_utf8_lossy(&out.stderr).trim())
    )))
}

/// The signal a [`tied`] child gets when this process dies.
#[derive(Clone, Copy, Debug)]
pub enum OnOurDeath {
    /// A client tool in the middle of a transaction: its connection closes and the server
    /// rolls the transaction back.
    Kill,
    /// A process with clean-up of its own (compose, the pool server).
    Term,
}

/// `program` run so that the kernel sends it `signal` when the thread that started it ends,
/// which for the xtask's children is the xtask's death, `kill -9` included: `setpriv
/// --pdeathsig SIG program ...` sets the parent-death signal and then executes the program in
/// the same process (the signal survives `execve`). Without `setpriv` (not Linux, no
/// util-linux) the program is run as it is, and a `kill -9` of the xtask may leave it running.
/// A child started from a thread other than the main one must be waited for by that thread.
pub fn tied<'a>(sh: &'a Shell, program: impl AsRef<OsStr>, signal: OnOurDeath) -> Cmd<'a> {
    let program = program.as_ref();
    match setpriv() {
        Some(setpriv) => {
            let signal = signal.name();
            xshell::cmd!(sh, "{setpriv} --pdeathsig {signal} {program}")
        }
        None => xshell::cmd!(sh, "{program}"),
    }
}

impl OnOurDeath {
    fn name(self) -> &'static str {
        match self {
            OnOurDeath::Kill => "KILL",
            OnOurDeath::Term => "TERM",
        }
    }
}

fn setpriv() -> Option<&'static Path> {
    static SETPRIV: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    SETPRIV
        .get_or_init(|| which::which("setpriv").ok())
        .as_deref()
}

/// `cmd` as a [`tied`] command (unless it is one already): the same program, arguments,
/// folder and environment changes, behind `setpriv --pdeathsig`.
fn tie(cmd: Cmd<'_>, signal: OnOurDeath) -> Command {
    let original = Command::from(cmd);
    let Some(setpriv) = setpriv() else {
        return original;
    };
    if Path::new(original.get_program()).file_name() == Some(OsStr::new("setpriv")) {
        return original;
    }
    let mut command = Command::new(setpriv);
    command
        .args(["--pdeathsig", signal.name()])
        .arg(original.get_program())
        .args(original.get_args());
    if let Some(dir) = original.get_current_dir() {
        command.current_dir(dir);
    }
    for (key, value) in original.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command
}

/// Asks `child` to stop (SIGTERM, which compose and the servers handle by cleaning up), then
/// kills it if it has not after `grace`.
pub fn stop(child: &mut Child, grace: std::time::Duration) {
    let pid = child.id().to_string();
    let _ = Command::new("kill")
        .args(["-TERM", &pid])
        .stderr(Stdio::null())
        .status();
    if exited_within(child, grace) {
        return;
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether `child` ends by itself within `grace`. This wait does not read the interrupt flag:
/// it is the bounded end of a child being stopped, which is what Ctrl-C asks for.
fn exited_within(child: &mut Child, grace: std::time::Duration) -> bool {
    let until = std::time::Instant::now() + grace;
    while std::time::Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// Runs `cmd` with the terminal: stdin, stdout and stderr inherited.
pub fn interactive(cmd: Cmd<'_>) -> Result<ExitStatus> {
    let mut command = tie(cmd, OnOurDeath::Term);
    let what = program(&command);
    command
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    command.status().with_context(|| format!("run {what}"))
}

/// Runs `cmd` and hands each line of its stdout (stderr merged is up to the caller's flags) to
/// `each` as it arrives, so that a `--follow` can be post-processed. Ctrl-C stops the child
/// (SIGTERM, then SIGKILL) and returns an interruption, whether or not the child heeds the
/// signal itself.
pub fn stream_lines(cmd: Cmd<'_>, mut each: impl FnMut(&str)) -> Result<ExitStatus> {
    let mut command = tie(cmd, OnOurDeath::Term);
    let what = program(&command);
    command.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut child = command.spawn().with_context(|| format!("run {what}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (lines, received) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        match received.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(line) => each(&line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if crate::tools::util::interrupted() {
            stop(&mut child, std::time::Duration::from_secs(2));
            let _ = reader.join();
            return Err(check_failed(format!("interrupted; {what} was stopped")));
        }
    }
    let _ = reader.join();
    child.wait().with_context(|| format!("wait for {what}"))
}

/// Starts `cmd` in the background with stdin closed and stdout and stderr in `log`; the caller
/// polls or kills the returned child.
pub fn background(cmd: Cmd<'_>, log: &Path) -> Result<Child> {
    let out = File::create(log).with_context(|| format!("create {}", log.display()))?;
    let err = out.try_clone()?;
    let mut command = tie(cmd, OnOurDeath::Term);
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
    /// Not [`tied`] here: a session ends when its input does, which this process's death
    /// closes, and a session that cleans up on that (the pool server drops its clones) would
    /// lose the chance to a signal. A client tool is tied by `pg::Target::tool` already.
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

    /// Copies everything `reader` gives into the session's input (a script streamed into a
    /// held transaction); an input the session stopped reading is an error with its stderr.
    pub fn send_from(&mut self, reader: &mut impl Read) -> Result<u64> {
        let stdin = self
            .stdin
            .as_mut()
            .context("the session's input is closed")?;
        let copied = std::io::copy(reader, stdin);
        match copied.and_then(|n| stdin.flush().map(|()| n)) {
            Ok(n) => Ok(n),
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Err(self.failure()),
            Err(err) => Err(anyhow::Error::new(err).context(format!("feed {}", self.what))),
        }
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

    /// Closes the input and gives the child `grace` to end by itself, then kills it: a child
    /// whose clean-up cannot finish (its server is gone) or that the user no longer waits for.
    pub fn stop(mut self, grace: std::time::Duration) {
        self.stdin.take();
        if exited_within(&mut self.child, grace) {
            return;
        }
        let _ = self.child.kill();
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

/// The program's name, for messages (never its arguments or environment): the one a [`tied`]
/// `setpriv` runs, not `setpriv`.
fn program(command: &Command) -> String {
    let name = command.get_program();
    let tied = Path::new(name).file_name() == Some(OsStr::new("setpriv"));
    let name = match command.get_args().nth(2) {
        Some(run) if tied => run,
        _ => name,
    };
    Path::new(name)
        .file_name()
        .unwrap_or(name)
        .to_string_lossy()
        .into_owned()
}

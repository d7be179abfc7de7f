//! Debian packages the xtask installs itself where it can: with apt-get, as root, saying so;
//! otherwise refused with the command that installs them.

use anyhow::{Context, Result};
use xshell::{Shell, cmd};

use crate::tools::util::usage;

/// Installs Debian packages with apt-get when this process is root, saying so; otherwise
/// refuses with the command that installs them.
pub fn install(sh: &Shell, packages: &[&str], why: &str) -> Result<()> {
    let list = packages.join(" ");
    let root = cmd!(sh, "id -u")
        .quiet()
        .read()
        .is_ok_and(|uid| uid.trim() == "0");
    if !root || which::which("apt-get").is_err() {
        return Err(usage(format!(
            "{list} {} not installed (needed for {why}): run `sudo apt-get install {list}`",
            if packages.len() == 1 { "is" } else { "are" }
        )));
    }
    println!("installing {list} with apt-get (needed for {why})");
    cmd!(sh, "apt-get update -qq")
        .quiet()
        .run()
        .context("apt-get update")?;
    cmd!(
        sh,
        "apt-get install -y -qq --no-install-recommends {packages...}"
    )
    .env("DEBIAN_FRONTEND", "noninteractive")
    .quiet()
    .ignore_stdout()
    .run()
    .with_context(|| format!("apt-get install {list}"))
}

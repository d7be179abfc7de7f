//! `cargo xtask setup`: everything a fresh machine needs before the everyday commands, done by
//! the xtask where it can (saying so) and otherwise refused with the command that does it:
//! cargo-nextest (`cargo install --locked`), the PostgreSQL client tools and openssl (apt-get,
//! as root), the images (pulled, or built from Debian packages with mmdebstrap, which it also
//! installs as root), the test database's certificate, and the git-ignored `.env` (the dev
//! password, and what the seed's compose commands need to reach the default stack).

use anyhow::{Context, Result};
use xshell::{Shell, cmd};

use crate::compose::Compose;
use crate::services::Service;
use crate::util::usage;
use crate::{certs, flags, preflight};

impl flags::Setup {
    pub fn run(self, sh: &Shell) -> Result<()> {
        // What the xtask cannot install: a Docker engine and Compose.
        preflight::docker_client(sh)?;
        preflight::docker_daemon(sh)?;
        let compose = Compose::detect(sh)?;
        println!("compose: {}", compose.describe(sh)?);
        if preflight::on_path("cargo-nextest").is_none() {
            println!(
                "installing cargo-nextest: `cargo install --locked cargo-nextest` (a few minutes, once)"
            );
            cmd!(sh, "cargo install --locked cargo-nextest")
                .run()
                .context("install cargo-nextest")?;
        }
        let mut packages = Vec::new();
        for (tool, package) in [
            ("psql", "postgresql-client"),
            ("pg_dump", "postgresql-client"),
            ("openssl", "openssl"),
        ] {
            if preflight::on_path(tool).is_none() && !packages.contains(&package) {
                packages.push(package);
            }
        }
        if !packages.is_empty() {
            apt_install(sh, &packages, "the database tools and the test certificate")?;
        }
        preflight::pg_tool(sh, "psql")?;
        preflight::images_for(sh, &Service::ALL)?;
        certs::ensure_test_db_certs(sh)?;
        println!(
            "set up: tools, images, the test database's certificate and .env (the dev password; \
             what `docker-compose` typed here needs). Next: `cargo xtask doctor`"
        );
        Ok(())
    }
}

/// Installs Debian packages with apt-get when this process is root, saying so; otherwise
/// refuses with the command that installs them.
pub fn apt_install(sh: &Shell, packages: &[&str], why: &str) -> Result<()> {
    let list = packages.join(" ");
    let root = cmd!(sh, "id -u")
        .quiet()
        .read()
        .is_ok_and(|uid| uid.trim() == "0");
    if !root || preflight::on_path("apt-get").is_none() {
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

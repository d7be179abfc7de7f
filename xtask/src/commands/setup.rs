//! `cargo xtask setup`: everything a fresh machine needs before the everyday commands, done by
//! the xtask where it can (saying so) and otherwise refused with the command that does it:
//! cargo-nextest (`cargo install --locked`), the PostgreSQL client tools and openssl (apt-get,
//! as root), the images (pulled, or built from Debian packages with mmdebstrap, which it also
//! installs as root), the test database's certificate, and the git-ignored `.env` (the dev
//! password, and what the seed's compose commands need to reach the default stack).

use anyhow::{Context, Result};
use xshell::{Shell, cmd};

use crate::flags;
use crate::services::Service;
use crate::services::compose::Compose;
use crate::services::{certs, preflight};

impl flags::Setup {
    pub fn run(self, sh: &Shell) -> Result<()> {
        // What the xtask cannot install: a Docker engine and Compose.
        preflight::docker_client(sh)?;
        preflight::docker_daemon()?;
        let compose = Compose::detect(sh)?;
        println!("compose: {}", compose.describe(sh)?);
        if which::which("cargo-nextest").is_err() {
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
            if which::which(tool).is_err() && !packages.contains(&package) {
                packages.push(package);
            }
        }
        if !packages.is_empty() {
            crate::tools::apt::install(
                sh,
                &packages,
                "the database tools and the test certificate",
            )?;
        }
        crate::tools::pg::pg_tool(sh, "psql")?;
        crate::services::images::images_for(sh, &Service::ALL)?;
        certs::ensure_test_db_certs(sh)?;
        println!(
            "set up: tools, images, the test database's certificate and .env (the dev password; \
             what `docker-compose` typed here needs). Next: `cargo xtask doctor`"
        );
        Ok(())
    }
}

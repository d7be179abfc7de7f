//! The command line: every command and its flags (clap derive). Behaviour lives in the
//! command modules; this file only describes.

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "The Genesis database workflow: generated files, services, test suites, parity and migration checks.",
    after_help = "Exit codes: 0 success, 1 a failed check, 2 bad usage or a missing prerequisite."
)]
pub struct Xtask {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    Codegen(Codegen),
    Doctor(Doctor),
    Test(Test),
    VerifyMigration(VerifyMigration),
}

/// Write docker-compose.yml and the env files from the environment model.
#[derive(Debug, Args)]
pub struct Codegen {
    /// Change nothing: show what differs from the model and exit 1 when anything does.
    #[arg(long)]
    pub check: bool,
}

/// Check tools, Docker daemon, compose flavour, ports and images; print the fix for each problem.
#[derive(Debug, Args)]
pub struct Doctor {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run the auth and integration suites on the host, in the genesis-api container, or both at
/// once, and compare the two runs test by test.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("mode").args(["host", "container", "both_modes"])))]
pub struct Test {
    /// Run on the host against localhost:5433 (the default).
    #[arg(long)]
    pub host: bool,
    /// Run the same test binaries inside the genesis-api container against test-db:5432.
    #[arg(long)]
    pub container: bool,
    /// Run both modes at the same time and check parity test by test.
    #[arg(long)]
    pub both_modes: bool,
    /// Which suite to run.
    #[arg(long, value_enum, default_value_t = Suite::All)]
    pub suite: Suite,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    Auth,
    Integrations,
    All,
}

impl Suite {
    /// The nextest filter expression that selects the suite's test binaries.
    pub fn filter(self) -> &'static str {
        match self {
            Suite::Auth => "binary(=auth)",
            Suite::Integrations => "binary(=integrations)",
            Suite::All => "binary(=auth) | binary(=integrations)",
        }
    }
}

/// The migration checklist: no SQLite left, PostgreSQL everywhere, both suites green in both
/// modes, the application ready in strict mode. One line per item, then a verdict.
#[derive(Debug, Args)]
pub struct VerifyMigration {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

//! The command line: every command and its flags (clap derive). Behaviour lives in the
//! command modules; this file only describes.

use clap::{Args, Parser, Subcommand};

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

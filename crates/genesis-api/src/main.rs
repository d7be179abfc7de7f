//! The `genesis-api` binary: `check-config` prints the resolved settings.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use genesis_settings::{Settings, redact};

#[derive(Debug, Parser)]
#[command(name = "genesis-api", about = "The Genesis AI web API", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the resolved settings (secrets hidden) and exit non-zero when they are invalid.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig => check_config(),
    }
}

fn check_config() -> ExitCode {
    match Settings::load() {
        Ok(settings) => {
            let width = settings
                .report()
                .iter()
                .map(|(name, ..)| name.len())
                .max()
                .unwrap_or(0);
            for (name, value, source) in settings.report() {
                let source = if source == "-" {
                    String::new()
                } else {
                    format!("  ({source})")
                };
                println!("{name:width$}  {value}{source}");
            }
            if let Err(err) = settings.app_database_url() {
                eprintln!("warning: {}", redact(&err.to_string()));
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: invalid configuration: {}", redact(&err.to_string()));
            ExitCode::FAILURE
        }
    }
}

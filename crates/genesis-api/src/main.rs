//! The `genesis-api` binary: `serve` (the default) runs the API; `check-config` prints the
//! resolved settings.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use genesis_api::{Server, shutdown_signal};
use genesis_settings::{Settings, redact};

#[derive(Debug, Parser)]
#[command(name = "genesis-api", about = "The Genesis AI web API", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API on BIND_ADDR (the default command).
    Serve,
    /// Print the resolved settings (secrets hidden) and exit non-zero when they are invalid.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(),
        Command::CheckConfig => check_config(),
    }
}

fn serve() -> ExitCode {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("error: invalid configuration: {}", redact(&err.to_string()));
            return ExitCode::FAILURE;
        }
    };
    genesis_api::logging::init(&settings);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match Server::build(&settings).await {
            Ok(server) => server,
            Err(err) => {
                eprintln!(
                    "error: genesis-api did not start: {}",
                    redact(&err.to_string())
                );
                return ExitCode::FAILURE;
            }
        };
        match server.local_addr() {
            Ok(addr) => tracing::info!(
                %addr,
                environment = %settings.environment,
                database = %server.state().database_url(),
                "listening"
            ),
            Err(err) => tracing::warn!(%err, "listening on an unknown address"),
        }
        match server.run_until(shutdown_signal()).await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: the server failed: {}", redact(&err.to_string()));
                ExitCode::FAILURE
            }
        }
    })
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

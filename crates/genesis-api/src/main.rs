//! The `genesis-api` binary: `serve` (the default) runs the API; `check-config` prints the
//! resolved settings.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use genesis_api::db::check_database_tls;
use genesis_api::{Server, shutdown_signal};
use genesis_model::Env;
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
    if std::env::var_os("ENVIRONMENT").is_none() {
        tracing::warn!("{UNSET_ENVIRONMENT}");
    }
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
                environment = %environment(&settings),
                database = %server.state().database_url(),
                database_tls = %server.state().database_tls().describe(),
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

const UNSET_ENVIRONMENT: &str =
    "ENVIRONMENT is not set: development is the default, with its insecure token secret";

/// The environment, saying so when `ENVIRONMENT` is unset and development is only the default.
fn environment(settings: &Settings) -> String {
    if std::env::var_os("ENVIRONMENT").is_none() {
        format!("{} ({UNSET_ENVIRONMENT})", settings.environment)
    } else {
        settings.environment.to_string()
    }
}

fn check_config() -> ExitCode {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("error: invalid configuration: {}", redact(&err.to_string()));
            return ExitCode::FAILURE;
        }
    };
    genesis_api::tls::install_crypto_provider();
    let mut rows = settings.report();
    if std::env::var_os("ENVIRONMENT").is_none() {
        rows[0].1 = format!("{} ({UNSET_ENVIRONMENT})", rows[0].1);
    }
    // The database's TLS as libpq would read it; production refuses a plaintext-capable one.
    let tls = settings
        .app_database_url()
        .map_err(|err| err.to_string())
        .and_then(|_| check_database_tls(&settings).map_err(|err| err.to_string()));
    let tls_row = match &tls {
        Ok(tls) => tls.describe(),
        Err(_) => "(not usable, see below)".to_owned(),
    };
    rows.insert(3, ("database sslmode", tls_row, "DATABASE_URL".to_owned()));
    let width = rows.iter().map(|(name, ..)| name.len()).max().unwrap_or(0);
    for (name, value, source) in rows {
        let source = if source == "-" {
            String::new()
        } else {
            format!("  ({source})")
        };
        println!("{name:width$}  {value}{source}");
    }
    match tls {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) if settings.environment == Env::Prod => {
            eprintln!("error: {}", redact(&err));
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("warning: {}", redact(&err));
            ExitCode::SUCCESS
        }
    }
}

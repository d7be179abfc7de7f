//! The `genesis-api` binary: `serve` (the default) runs the API; `check-config` prints the
//! resolved settings; `migrate` applies the migrations (or shows where they stand) without
//! serving, for `cargo xtask db-migrate` and `migration status`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use genesis_api::db::{Applied, error_chain};
use genesis_api::{
    AppState, MIGRATIONS, Migration, MigrationState, MigrationStatus, Server, StartupError,
    migrate, shutdown_signal,
};
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
    /// Apply this build's pending migrations to the application's database, under the same
    /// advisory lock and checksum rules as start-up. Exit 1 when a migration was edited after
    /// it was applied or fails; 2 when the settings are invalid or the database unreachable.
    Migrate {
        /// Change nothing: show each migration as applied, pending, edited or unknown.
        #[arg(long)]
        status: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    // A panic is a bug; its message is printed redacted, never with a secret it held.
    genesis_settings::install_panic_hook("genesis-api");
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(),
        Command::CheckConfig => check_config(),
        Command::Migrate { status, json } => migrate(status, json),
    }
}

/// The one validation `serve` runs before it binds or connects, and `check-config` with it:
/// the settings, then the state built from them (database URL, TLS files, pool, Redis
/// client), which opens no connection.
fn validate(settings: &Settings) -> Result<AppState, StartupError> {
    genesis_api::tls::install_crypto_provider();
    AppState::new(settings)
}

/// How `serve` and `check-config` both word a configuration `serve` refuses.
fn refusal(err: &StartupError) -> String {
    format!("error: {}", redact(&err.to_string()))
}

fn load() -> Result<Settings, StartupError> {
    Settings::load().map_err(StartupError::Config)
}

fn serve() -> ExitCode {
    let settings = match load() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("{}", refusal(&err));
            return ExitCode::FAILURE;
        }
    };
    if let Err(err) = validate(&settings) {
        eprintln!("{}", refusal(&err));
        return ExitCode::FAILURE;
    }
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
    let settings = match load() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("{}", refusal(&err));
            return ExitCode::FAILURE;
        }
    };
    let mut rows = settings.report();
    if std::env::var_os("ENVIRONMENT").is_none() {
        rows[0].1 = format!("{} ({UNSET_ENVIRONMENT})", rows[0].1);
    }
    // Exactly what `serve` checks before it binds: the same refusals, the same words.
    let state = validate(&settings);
    // The database's TLS as libpq would read it, and what the application sets itself.
    let (tls_row, applied_row) = match &state {
        Ok(state) => (
            state.database_tls().describe(),
            Applied::of(state.database_url()).describe(),
        ),
        Err(_) => ("(not usable, see below)".to_owned(), "-".to_owned()),
    };
    // After DATABASE_URL and the rows that detail it.
    let at = rows
        .iter()
        .position(|(name, ..)| *name == "DATABASE_URL")
        .map_or(rows.len(), |i| {
            i + 1
                + rows[i + 1..]
                    .iter()
                    .take_while(|(n, ..)| n.starts_with(' '))
                    .count()
        });
    rows.insert(at, ("database TLS", tls_row, "DATABASE_URL".to_owned()));
    rows.insert(
        at + 1,
        ("  set by the application", applied_row, "-".to_owned()),
    );
    let width = rows.iter().map(|(name, ..)| name.len()).max().unwrap_or(0);
    for (name, value, source) in rows {
        let source = if source == "-" {
            String::new()
        } else {
            format!("  ({source})")
        };
        println!("{name:width$}  {}", redact(&format!("{value}{source}")));
    }
    match state {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", refusal(&err));
            ExitCode::FAILURE
        }
    }
}

fn migrate(status_only: bool, json: bool) -> ExitCode {
    const UNUSABLE: u8 = 2;
    let url = match Settings::load().and_then(|s| s.app_database_url().cloned()) {
        Ok(url) => url,
        Err(err) => {
            eprintln!("error: invalid configuration: {}", redact(&err.to_string()));
            return ExitCode::from(UNUSABLE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let mut client = match genesis_api::db::connect(&url).await {
            Ok(client) => client,
            Err(err) => {
                eprintln!("error: {}", redact(&err.to_string()));
                return ExitCode::from(UNUSABLE);
            }
        };
        if status_only {
            return match migrate::status(&client, MIGRATIONS).await {
                Ok(rows) => {
                    print_status(&url.to_string(), &rows, json);
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("error: {}", redact(&error_chain(&err)));
                    ExitCode::FAILURE
                }
            };
        }
        match migrate::migrate(&mut client).await {
            Ok(report) => {
                let applied: Vec<&Migration> = report
                    .applied
                    .iter()
                    .filter_map(|v| MIGRATIONS.iter().find(|m| m.version == *v))
                    .collect();
                if json {
                    let applied: Vec<_> = applied
                        .iter()
                        .map(|m| serde_json::json!({"version": m.version, "name": m.name}))
                        .collect();
                    let out = serde_json::json!({
                        "database": url.to_string(),
                        "applied": applied,
                        "already_applied": report.already_applied,
                    });
                    println!("{out}");
                } else {
                    for m in &applied {
                        println!("applied {:04}_{}", m.version, m.name);
                    }
                    println!(
                        "{} applied, {} already applied, at {url}",
                        applied.len(),
                        report.already_applied
                    );
                }
                ExitCode::SUCCESS
            }
            Err(err) if err.is_connection() => {
                eprintln!("error: {}", redact(&error_chain(&err)));
                ExitCode::from(UNUSABLE)
            }
            Err(err) => {
                eprintln!("error: {}", redact(&error_chain(&err)));
                ExitCode::FAILURE
            }
        }
    })
}

fn print_status(database: &str, rows: &[MigrationStatus], json: bool) {
    if json {
        let rows: Vec<_> = rows
            .iter()
            .map(|row| {
                let recorded = match &row.state {
                    MigrationState::Edited { recorded } => Some(recorded.as_str()),
                    _ => None,
                };
                serde_json::json!({
                    "version": row.version,
                    "name": row.name,
                    "state": row.state.as_str(),
                    "checksum": row.checksum,
                    "recorded_checksum": recorded,
                    "applied_at": row.applied_at,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"database": database, "migrations": rows})
        );
        return;
    }
    println!("migrations of {database}");
    for row in rows {
        let at = row.applied_at.as_deref().unwrap_or("-");
        let short = |sum: &str| sum.get(..12).unwrap_or(sum).to_owned();
        let checksum = match &row.state {
            MigrationState::Edited { recorded } => {
                format!("{} (applied as {})", short(&row.checksum), short(recorded))
            }
            _ => short(&row.checksum),
        };
        println!(
            "  {:04}_{:<30} {:<8} {at:<20}  {checksum}",
            row.version,
            row.name,
            row.state.as_str(),
        );
    }
}

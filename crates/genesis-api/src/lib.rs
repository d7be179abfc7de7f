//! The Genesis AI web API: auth and health on PostgreSQL and Redis.
//!
//! Everything is configured through [`genesis_settings::Settings`]. [`Server::build`] checks the
//! dependencies, applies the embedded migrations and binds; [`router`] is the HTTP surface, which
//! the test suites serve on an ephemeral port against their own database.

mod auth;
pub mod db;
mod error;
pub mod health;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod migrate;
mod startup;
mod state;
pub mod tls;

pub use crate::error::{ApiError, ErrorBody};
pub use crate::migrate::{
    MIGRATIONS, MigrateError, Migration, MigrationReport, MigrationState, MigrationStatus,
};
pub use crate::startup::{Server, StartupError, router, shutdown_signal};
pub use crate::state::{AppState, CheckTimeouts};

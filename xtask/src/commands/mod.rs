//! The commands: one module per `cargo xtask` command, glue over the service layer and the
//! tools. `flags.rs` describes them; each module here holds the behaviour.

pub mod archive;
pub mod backup;
pub mod bench;
pub mod ci;
pub mod codegen;
pub mod db;
pub mod doctor;
pub mod env;
pub mod images;
pub mod load;
pub mod migration;
pub mod modes;
pub mod parity;
/// The suites' shared pool of test databases, for `test`.
pub mod pool;
pub mod reset;
pub mod run_state;
pub mod setup;
pub mod stress;
pub mod test;
pub mod timings;
pub mod verify;

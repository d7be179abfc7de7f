//! The commands: one module per `cargo xtask` command, glue over the service layer and the
//! tools. `flags.rs` describes them; each module here holds the behaviour.

pub mod backup;
pub mod bench;
pub mod ci;
pub mod codegen;
pub mod db;
pub mod doctor;
pub mod images;
pub mod load;
pub mod migration;
pub mod parity;
pub mod reset;
pub mod test;
pub mod verify;

//! `cargo xtask`: the Genesis database workflow as Rust code.
//!
//! This file is a table of contents: the flags live in `flags.rs` and every command in its own
//! module. See ARCHITECTURE.md for the map and the invariants.

mod backup;
mod bench;
mod certs;
mod child;
mod ci;
mod codegen;
mod compose;
mod db;
mod devpass;
mod doctor;
mod flags;
mod images;
mod load;
mod migration;
mod parity;
mod pg;
mod preflight;
mod reset;
mod services;
mod stress;
mod test;
mod util;
mod verify;
mod yaml;

use std::process::ExitCode;

use clap::Parser;
use xshell::Shell;

fn main() -> ExitCode {
    let flags = flags::Xtask::parse();
    let result = Shell::new().map_err(anyhow::Error::from).and_then(|sh| {
        util::install_interrupt_handler()?;
        let root = util::find_project_root()?;
        sh.change_dir(&root);
        // Every password this process can know is masked by value in all it prints.
        devpass::register_known_secrets(&root);
        let name = flags
            .stack
            .or_else(|| std::env::var(genesis_model::STACK_VAR).ok());
        let stack = services::Stack::select(name.as_deref())?;
        match flags.cmd {
            flags::Cmd::Codegen(cmd) => cmd.run(&sh),
            flags::Cmd::Doctor(cmd) => cmd.run(&sh, &stack),
            flags::Cmd::DbUp(cmd) => cmd.run(&sh, &stack),
            flags::Cmd::DbDown(cmd) => cmd.run(&sh, &stack),
            flags::Cmd::DbStatus(cmd) => cmd.run(&sh, &stack),
            flags::Cmd::DbLogs(cmd) => cmd.run(&sh, &stack),
            flags::Cmd::DbShell(cmd) => cmd.run(&sh, &stack),
            flags::Cmd::DbBackup(cmd) => cmd.run(&sh, &stack),
            flags::Cmd::DbRestore(cmd) => cmd.run(&sh, &stack),
            flags::Cmd::DbMigrate(cmd) => cmd.run(&sh, &stack),
            flags::Cmd::DbReset(cmd) => cmd.run(&sh, &stack),
            flags::Cmd::Test(cmd) => cmd.run(&sh, &stack),
            flags::Cmd::VerifyMigration(cmd) => cmd.run(&sh, &stack),
            flags::Cmd::Images(cmd) => cmd.run(&sh),
            flags::Cmd::Ci(cmd) => cmd.run(&sh),
            flags::Cmd::Bench(cmd) => cmd.run(&sh, &stack),
            flags::Cmd::Load(cmd) => cmd.run(&sh, &stack),
            flags::Cmd::Migration(cmd) => cmd.run(&sh, &stack),
            flags::Cmd::Parity(cmd) => cmd.run(&sh),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => util::report_error(&err),
    }
}

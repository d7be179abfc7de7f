//! `cargo xtask`: the Genesis database workflow as Rust code.
//!
//! This file is a table of contents: the flags live in `flags.rs` and every command in its own
//! module. See ARCHITECTURE.md for the map and the invariants.

mod commands;
mod flags;
mod services;
mod tools;

use std::process::ExitCode;

use clap::Parser;
use xshell::Shell;

fn main() -> ExitCode {
    // A panic is a bug; its message is printed redacted, never with a secret it held.
    genesis_settings::install_panic_hook("cargo xtask");
    let flags = flags::Xtask::parse();
    let result = Shell::new().map_err(anyhow::Error::from).and_then(|sh| {
        tools::util::install_interrupt_handler()?;
        let root = tools::util::find_project_root()?;
        sh.change_dir(&root);
        // Every password this process can know is masked by value in all it prints.
        tools::devpass::register_known_secrets(&root);
        let name = flags
            .stack
            .or_else(|| std::env::var(genesis_model::STACK_VAR).ok());
        let stack = services::Stack::select(name.as_deref())?;
        match flags.cmd {
            flags::Cmd::Setup(cmd) => cmd.run(&sh),
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
            flags::Cmd::Env(cmd) => cmd.run(&sh, &stack),
            flags::Cmd::Completions(cmd) => cmd.run(),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => tools::util::report_error(&err),
    }
}

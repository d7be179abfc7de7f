//! The host ports of the default stack: who holds one that a service needs.

use std::net::{Ipv4Addr, TcpListener};

use anyhow::Result;
use genesis_model::{self as model};
use xshell::{Shell, cmd};

use super::container::{Container, inspect};
use super::stack::Stack;
use crate::tools::util::usage;
use genesis_model::Service;

/// A default-stack port must be free before its service starts: held by another checkout's
/// stack, another container or another process, the start is refused with whose it is.
pub(super) fn check_port_free(sh: &Shell, service: Service, stack: &Stack) -> Result<()> {
    let port = service.model_port();
    if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
        return Ok(());
    }
    let name = service.name();
    let problem = match port_holder(sh, port) {
        Some(holder) if holder.project == stack.project => return Ok(()),
        Some(holder) => match &holder.checkout {
            Some(checkout) => format!(
                "port {port} is published by {} of compose project {}, a stack of the checkout \
                 {checkout}, so {name} cannot publish it: stop it there (`cargo xtask db-down --all` \
                 in that checkout), or run here on a stack of your own with `--stack NAME` \
                 (or {}=NAME)",
                holder.name,
                holder.project,
                model::STACK_VAR
            ),
            None => format!(
                "port {port} is published by container {}, which is not of this project, so \
                 {name} cannot publish it: stop it, or run on a stack of your own with \
                 `--stack NAME` (or {}=NAME)",
                holder.name,
                model::STACK_VAR
            ),
        },
        None => format!(
            "port {port} is taken by another process, so {name} cannot publish it on \
             127.0.0.1:{port}: stop what listens there (`ss -ltnp 'sport = :{port}'` shows it), \
             or run on a stack of your own with `--stack NAME` (or {}=NAME)",
            model::STACK_VAR
        ),
    };
    Err(usage(problem))
}

/// The container that publishes `port` on the host, if one does.
pub fn port_holder(sh: &Shell, port: u16) -> Option<Container> {
    let filter = format!("publish={port}");
    let ids = cmd!(sh, "docker ps -q --filter {filter}")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()?;
    let ids: Vec<&str> = ids.lines().collect();
    inspect(sh, &ids).ok()?.into_iter().next()
}

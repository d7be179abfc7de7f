//! The host ports of the default stack: who holds one that a service needs.

use std::net::{Ipv4Addr, TcpListener};

use anyhow::Result;
use genesis_model::{self as model, Env};

use super::container::{Container, inspect};
use super::engine::Engine;
use super::stack::Stack;
use crate::tools::pg;
use crate::tools::util::usage;
use genesis_model::Service;

/// A default-stack port must be free before its service starts: held by another checkout's
/// stack, another container or another process, the start is refused with whose it is.
pub(super) fn check_port_free(service: Service, stack: &Stack) -> Result<()> {
    let port = service.model_port();
    if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
        return Ok(());
    }
    let name = service.name();
    let problem = match port_holder(port) {
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
pub fn port_holder(port: u16) -> Option<Container> {
    let listed = Engine::get()
        .ok()?
        .containers(&[], Some(port), false)
        .ok()?;
    let ids: Vec<&str> = listed.iter().map(|c| c.id.as_str()).collect();
    inspect(&ids).ok()?.into_iter().next()
}

impl Stack {
    /// Points a database target the model placed (not a `--url` or `DATABASE_URL`) at this
    /// stack's running service: its discovered host port. The default stack's service that
    /// does not run keeps the model's port, so the caller's own "start it" message applies;
    /// on any other stack there is no port to guess.
    pub fn aim(&self, target: &mut pg::Target) -> Result<()> {
        if target.origin != pg::Origin::Model {
            return Ok(());
        }
        let Some(service) = Service::database(target.env) else {
            return Ok(());
        };
        let port = self
            .containers()?
            .into_iter()
            .find(|c| c.service == service.name() && c.running())
            .and_then(|c| c.host_port(service.container_port()));
        match port {
            Some(port) => target.set_port(port),
            None => return Err(self.not_running(service, target.env)),
        }
        Ok(())
    }

    /// Why a command cannot reach `service` of this stack, which does not run it: the fix is
    /// `db-up`, and on the default stack, when its port is held by another stack or process,
    /// whose it is (that one is never used in its place).
    fn not_running(&self, service: Service, env: Env) -> anyhow::Error {
        let name = service.name();
        let start = format!("cargo xtask db-up --env {env}{}", self.flag());
        let port = service.model_port();
        let held = self.is_default() && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err();
        let problem = match port_holder(port).filter(|_| held) {
            Some(holder) => format!(
                "{name} does not run on stack {} of this checkout ({}); port {port} is \
                published by {} of compose project {}{}, which this command never uses in its \
                place: start this checkout's own with `{start}` once that one is stopped, or \
                use a stack of your own with `--stack NAME` (or {}=NAME)",
                self.name(),
                self.checkout.display(),
                holder.name,
                holder.project,
                holder
                    .checkout
                    .map_or(String::new(), |c| format!(", a stack of the checkout {c}")),
                model::STACK_VAR
            ),
            None if held => format!(
                "{name} does not run on stack {} of this checkout ({}); port {port} is held by \
                another process, which this command never uses in its place: start this \
                checkout's own with `{start}` once that port is free (`ss -ltnp 'sport = \
                :{port}'` shows what listens there), or use `--stack NAME` (or {}=NAME)",
                self.name(),
                self.checkout.display(),
                model::STACK_VAR
            ),
            None => format!(
                "{name} does not run on stack {}: start it with `{start}`",
                self.name()
            ),
        };
        usage(problem)
    }
}

//! Waiting until a service is ready: one probe per service (a login, `PING`, `GET /health`),
//! one timeout policy, one wording.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Result;
use genesis_model::Storage;
use genesis_settings::redact;

use super::http::http_get;
use super::running::Running;
use super::stack::Stack;
use crate::tools::pg::{self, Probe};
use crate::tools::util::{Progress, check_failed, interrupted};
use genesis_model::Service;

/// How long a service may take to become ready, unless the command says otherwise.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the wait sleeps between two probes: briefly while a service usually comes up
/// (a probe costs ~10 ms), then every 100 ms.
fn poll_interval(waited: Duration, listening: bool) -> Duration {
    if !listening {
        // Nothing listens yet: the next look is a connection attempt, not a login.
        LISTEN_POLL
    } else if waited < Duration::from_secs(3) {
        Duration::from_millis(25)
    } else {
        Duration::from_millis(100)
    }
}
/// How often a database that does not listen yet is looked at again (a look costs ~1 ms).
const LISTEN_POLL: Duration = Duration::from_millis(5);
/// How long an accepted connection must stay open to tell a server from Docker's port proxy,
/// which accepts for a port nobody listens on yet and closes at once.
const PROXY_GRACE: Duration = Duration::from_millis(20);
/// How often the container's own state is looked at while waiting (a crash ends the wait).
const STATE_EVERY: Duration = Duration::from_secs(2);
/// How long a refused password may persist: a server that is still initialising can refuse
/// briefly, one that keeps refusing holds another password.
const AUTH_GRACE: Duration = Duration::from_secs(3);
/// Log lines shown when a service does not become ready.
const LOG_LINES: u32 = 20;

enum Waiting {
    Ready,
    NotYet(String),
}

impl Running<'_> {
    /// One probe per service, one timeout policy, one wording: polls until ready, looks at the
    /// container's state now and then, stops on Ctrl-C, and on failure shows the last logs.
    pub(super) fn wait_ready(&self, service: Service, timeout: Duration) -> Result<()> {
        let port = self.port(service);
        // The one probe of each service: a real login as the app's role for a database,
        // `PING` for Redis, `GET /health` for the application.
        enum Check {
            Database(Box<pg::Target>),
            Redis,
            Http,
        }
        let check = match (service.env(), service) {
            (Some(env), _) => Check::Database(Box::new(self.database(env)?)),
            (None, Service::Redis) => Check::Redis,
            (None, _) => Check::Http,
        };
        let mut refused_since: Option<Instant> = None;
        let mut listening: bool;
        let mut probe = |listening: &mut bool| -> std::result::Result<Waiting, String> {
            match &check {
                Check::Database(_) if !accepts(port) => {
                    *listening = false;
                    Ok(Waiting::NotYet(format!(
                        "nothing listens on port {port} yet"
                    )))
                }
                Check::Database(target) => match target.probe(self.sh) {
                    Probe::Ready => Ok(Waiting::Ready),
                    Probe::NotYet(why) => {
                        refused_since = None;
                        Ok(Waiting::NotYet(why))
                    }
                    Probe::AuthFailed(why) => {
                        let since = *refused_since.get_or_insert_with(Instant::now);
                        if since.elapsed() < AUTH_GRACE {
                            return Ok(Waiting::NotYet(why));
                        }
                        Err(self.refused_password(service, target, &why))
                    }
                    Probe::Missing(why) => {
                        // Given the same grace as a refused password: an image whose server
                        // listens before its database exists has it by then.
                        let since = *refused_since.get_or_insert_with(Instant::now);
                        if since.elapsed() < AUTH_GRACE {
                            return Ok(Waiting::NotYet(why));
                        }
                        Err(missing_database(&self.stack, service, target, &why))
                    }
                },
                Check::Redis => Ok(redis_ping(port)),
                Check::Http => Ok(match http_get(port, "/health") {
                    Ok((200, _)) => Waiting::Ready,
                    Ok((status, _)) => Waiting::NotYet(format!("/health answered {status}")),
                    Err(err) => Waiting::NotYet(err.to_string()),
                }),
            }
        };
        let name = service.name();
        let started = Instant::now();
        let mut progress = Progress::start(&format!("waiting for {name}"), timeout);
        let mut last_state_check = Instant::now();
        let mut last_error: String;
        let failure = loop {
            listening = true;
            match probe(&mut listening) {
                Ok(Waiting::Ready) => {
                    progress.finish();
                    return Ok(());
                }
                Ok(Waiting::NotYet(why)) => last_error = why,
                Err(fatal) => break fatal,
            }
            if interrupted() {
                progress.finish();
                return Err(check_failed(format!(
                    "interrupted while waiting for {name}"
                )));
            }
            if last_state_check.elapsed() >= STATE_EVERY {
                last_state_check = Instant::now();
                let containers = self.stack.containers().unwrap_or_default();
                if let Some(c) = containers.iter().find(|c| c.service == name) {
                    if c.state == "exited" || c.state == "dead" {
                        break format!("{name} stopped while starting ({})", c.state);
                    }
                }
            }
            if started.elapsed() >= timeout {
                break format!(
                    "{name} was not ready after {} s (last error: {last_error})",
                    timeout.as_secs()
                );
            }
            progress.tick();
            std::thread::sleep(poll_interval(started.elapsed(), listening));
        };
        progress.finish();
        let logs = self.stack.log_tail(self.sh, &self.compose, name, LOG_LINES);
        Err(check_failed(redact(&format!(
            "{failure}\n--- last {LOG_LINES} log lines of {name} ---\n{logs}"
        ))))
    }

    fn refused_password(&self, service: Service, target: &pg::Target, why: &str) -> String {
        let fix = match service.storage() {
            Storage::Volume(volume) => format!(
                "the data in volume {} was initialised with another password; set \
                 POSTGRES_PASSWORD (in your environment or .env) to that one, or start afresh \
                 with `cargo xtask db-down --env {}{} --volumes` (this deletes the data)",
                self.stack.volume_name(volume),
                target.env,
                self.stack.flag()
            ),
            _ => "the server was initialised with another password".to_owned(),
        };
        format!(
            "{} refuses the password of {} ({why}): {fix}",
            service.name(),
            target.user
        )
    }
}

/// Whether a server accepts on the published `port`: a connection that Docker's port proxy
/// accepts is closed at once while no server listens behind it, and stays open when one does.
/// Nothing is sent, which PostgreSQL does not log. Only a first look: the login decides.
fn accepts(port: u16) -> bool {
    let address = (Ipv4Addr::LOCALHOST, port).into();
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) else {
        return false;
    };
    if stream.set_read_timeout(Some(PROXY_GRACE)).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        // Closed by the proxy, or reset.
        Ok(0) => false,
        Ok(_) => true,
        Err(err) => matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Redis answers `PING` with `+PONG` on its published port.
fn redis_ping(port: u16) -> Waiting {
    let answer = (|| -> std::io::Result<String> {
        let timeout = Duration::from_secs(1);
        let mut stream = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"PING\r\n")?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
    })();
    match answer {
        Ok(reply) if reply == "+PONG" => Waiting::Ready,
        Ok(reply) => Waiting::NotYet(format!("redis answered {reply:?}")),
        Err(err) => Waiting::NotYet(err.to_string()),
    }
}

/// A database server that answers without the database: what happened, if a killed reset
/// says, and how to get it back.
fn missing_database(stack: &Stack, service: Service, target: &pg::Target, why: &str) -> String {
    let env = target.env;
    let fix = super::reset_marker::after_killed_reset(stack, env).unwrap_or_else(|| {
        format!(
            "`cargo xtask db-reset --env {env}{}` creates it (or `db-restore` a backup)",
            stack.flag()
        )
    });
    format!("{} answers, but {why}: {fix}", service.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_server_that_holds_the_connection_accepts_and_a_closed_port_does_not() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        // The connection waits in the backlog, open and silent, as a server's does.
        assert!(accepts(port));
        drop(listener);
        assert!(!accepts(port));
    }
}

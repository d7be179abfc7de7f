//! `cargo xtask doctor`: tools, Docker daemon, compose flavour, ports and images; for each
//! problem, the command that fixes it.

use anyhow::Result;
use genesis_model::{self as model, Image};
use serde::Serialize;
use xshell::Shell;

use crate::flags;
use crate::services::compose::Compose;
use crate::services::images;
use crate::services::preflight::{self, PortState};
use crate::services::{Service, Stack};
use crate::tools::pg;
use crate::tools::util::{Style, check_failed};

#[derive(Debug, Serialize)]
struct Row {
    check: String,
    ok: bool,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

impl Row {
    fn ok(check: impl Into<String>, detail: impl Into<String>) -> Row {
        Row {
            check: check.into(),
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    fn problem(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Row {
        Row {
            check: check.into(),
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// A row from a preflight check whose error message already says how to fix it.
    fn from_result(check: &str, result: Result<String>) -> Row {
        match result {
            Ok(found) => Row::ok(check, found),
            Err(err) => {
                let msg = err.to_string();
                let (what, fix) = msg.split_once(": ").unwrap_or((&msg, ""));
                Row::problem(check, what, fix)
            }
        }
    }
}

impl flags::Doctor {
    pub fn run(self, sh: &Shell, stack: &Stack) -> Result<()> {
        let rows = diagnose(sh, stack);
        if self.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            let style = Style::stdout();
            let width = rows.iter().map(|r| r.check.len()).max().unwrap_or(0);
            for row in &rows {
                let mark = if row.ok {
                    style.green("ok  ")
                } else {
                    style.red("FAIL")
                };
                println!("{mark} {:width$}  {}", row.check, row.detail);
                if let Some(fix) = &row.fix {
                    println!("     {:width$}  fix: {fix}", "");
                }
            }
        }
        let problems = rows.iter().filter(|r| !r.ok).count();
        if problems > 0 {
            return Err(check_failed(format!("doctor found {problems} problem(s)")));
        }
        Ok(())
    }
}

fn diagnose(sh: &Shell, stack: &Stack) -> Vec<Row> {
    let mut rows = vec![Row::from_result(
        "docker client",
        preflight::docker_client(sh),
    )];
    let daemon = preflight::docker_daemon().map(|v| format!("engine {v}"));
    let daemon_up = daemon.is_ok();
    rows.push(Row::from_result("docker daemon", daemon));
    let compose = Compose::detect(sh);
    if let Ok(compose) = &compose {
        let config = compose.check_file(sh, stack);
        rows.push(match config {
            Ok(()) => Row::ok("docker-compose.yml", "accepted by compose"),
            Err(_) => Row::problem(
                "docker-compose.yml",
                "rejected by compose",
                "`cargo xtask codegen` rewrites it from the model; `docker-compose config` shows why",
            ),
        });
    }
    rows.insert(
        2,
        Row::from_result("compose", compose.and_then(|c| c.describe(sh))),
    );
    for tool in ["psql", "pg_dump", "pg_restore"] {
        let row = match pg::pg_tool(sh, tool) {
            Ok((version, major)) if major >= 15 => Row::ok(tool, version),
            Ok((version, _)) => Row::problem(
                tool,
                format!("{version} is older than the servers (15)"),
                "`apt-get install postgresql-client-15` (or newer)",
            ),
            Err(err) => Row::from_result(tool, Err(err)),
        };
        rows.push(row);
    }
    rows.push(Row::from_result(
        "cargo-nextest (test)",
        preflight::nextest().map(|p| p.display().to_string()),
    ));
    rows.push(Row::from_result(
        "mmdebstrap (images)",
        preflight::mmdebstrap().map(|p| p.display().to_string()),
    ));
    if stack.is_default() {
        for service in Service::ALL {
            let port = service.model_port();
            let check = format!("port {port} ({})", service.name());
            rows.push(match preflight::port_state(port, stack) {
                PortState::Free => Row::ok(check, "free"),
                PortState::Ours(container) => Row::ok(check, format!("published by {container}")),
                PortState::Other(container, whose) => Row::problem(
                    check,
                    format!("published by {container}, {whose}"),
                    "stop it there, or use a stack of your own: `--stack NAME` (or GENESIS_STACK=NAME)",
                ),
                PortState::Taken => Row::problem(
                    check,
                    "taken by another process",
                    format!("stop what listens on it (`ss -ltnp 'sport = :{port}'` shows it)"),
                ),
            });
        }
    } else {
        rows.push(Row::ok(
            format!("stack {}", stack.name()),
            format!(
                "compose project {}, host ports chosen by the engine",
                stack.project()
            ),
        ));
    }
    if daemon_up {
        for image in model::IMAGES {
            rows.push(image_row(image));
        }
    }
    rows
}

fn image_row(image: Image) -> Row {
    let check = format!("image {}", image.public);
    match images::image_available(image) {
        Ok(name) if name == image.public => Row::ok(check, "present"),
        Ok(name) => Row::ok(check, format!("{name} is used in its place")),
        Err(err) => Row::problem(check, "not in the engine", err.to_string()),
    }
}

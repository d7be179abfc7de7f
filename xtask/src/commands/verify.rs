//! `cargo xtask verify-migration`: the seed's migration checklist as a report, one line per
//! item with its verdict and, for a failure, where; then a final verdict.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use genesis_model::{self as model, Env};
use genesis_settings::{Scheme, ServiceUrl, Settings, UrlProblem, parse_env_file};
use serde::Serialize;
use xshell::{Shell, cmd};

use crate::commands::codegen;
use crate::commands::parity::{Outcome, Report, Target};
use crate::commands::test::run_suites;
use crate::flags::{self, Suite};
use crate::services::api::ApiProcess;
use crate::services::compose::Compose;
use crate::services::{Lifetime, READY_TIMEOUT, Service, Stack};
use crate::tools::util::{
    FileState, Mode, Style, check_failed, ensure_file_contents, project_root, target_dir,
};

/// The checker itself names what it looks for.
const THIS_FILE: &str = "xtask/src/commands/verify.rs";

/// What in a line of non-test code means SQLite is still used: a URL or a driver.
const SQLITE_USE: &[&str] = &[
    "sqlite:",
    "sqlite+",
    "sqlite3",
    "rusqlite",
    "aiosqlite",
    "sqlx-sqlite",
    "sqlx::sqlite",
];

#[derive(Debug, Serialize)]
pub struct Item {
    pub item: &'static str,
    pub ok: bool,
    pub detail: String,
    /// Where each failure is: `file:line: what`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<String>,
}

impl Item {
    fn new(item: &'static str, locations: Vec<String>, ok_detail: impl Into<String>) -> Item {
        let ok = locations.is_empty();
        let detail = if ok {
            ok_detail.into()
        } else {
            format!("{} problem(s)", locations.len())
        };
        Item {
            item,
            ok,
            detail,
            locations,
        }
    }

    fn from_result(item: &'static str, result: Result<String>) -> Item {
        match result {
            Ok(detail) => Item {
                item,
                ok: true,
                detail,
                locations: Vec::new(),
            },
            Err(err) => Item {
                item,
                ok: false,
                detail: genesis_settings::redact(&format!("{err:#}")),
                locations: Vec::new(),
            },
        }
    }
}

impl flags::VerifyMigration {
    pub fn run(self, sh: &Shell, stack: &Stack) -> Result<()> {
        let items = checklist(sh, stack, None)?;
        report(&items, self.json)
    }
}

/// Prints the checklist and fails (exit 1) unless every item passed.
pub fn report(items: &[Item], json: bool) -> Result<()> {
    let ok = items.iter().all(|i| i.ok);
    if json {
        let out = serde_json::json!({ "verdict": if ok { "complete" } else { "incomplete" }, "items": items });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let style = Style::stdout();
        for item in items {
            let mark = if item.ok {
                style.green("PASS")
            } else {
                style.red("FAIL")
            };
            println!("{mark}  {}: {}", item.item, item.detail);
            for location in &item.locations {
                println!("        {location}");
            }
        }
        let passed = items.iter().filter(|i| i.ok).count();
        println!(
            "\nmigration from SQLite: {} ({passed}/{} items pass)",
            if ok { "COMPLETE" } else { "INCOMPLETE" },
            items.len()
        );
    }
    if ok {
        Ok(())
    } else {
        Err(check_failed("the migration checklist has failing items"))
    }
}

/// Runs every item. `suites` is a parity report the caller already has (from `cargo xtask ci`),
/// so the suites are not run twice.
pub fn checklist(sh: &Shell, stack: &Stack, suites: Option<Report>) -> Result<Vec<Item>> {
    let root = project_root();
    let mut items = vec![
        Item::from_result("settings reject SQLite", settings_reject_sqlite(sh)),
        Item::new(
            "env files and test configuration point at PostgreSQL",
            env_files_point_at_postgres(&root),
            "every database URL is postgresql://",
        ),
        Item::new(
            "no SQLite in the repository's configuration or code",
            sqlite_remnants(sh, &root)?,
            "none found",
        ),
        Item::from_result(
            "docker-compose.yml exposes the model's database ports and matches it",
            compose_matches(sh),
        ),
    ];
    let report = match suites {
        Some(report) => Ok(report),
        None => run_suites(sh, stack, &[Target::Host, Target::Container], Suite::All)
            .map(|(report, _)| report),
    };
    match report {
        Ok(report) => {
            items.push(suite_item(
                "auth suite passes in both modes",
                &report,
                "auth",
            ));
            items.push(suite_item(
                "integration suite passes",
                &report,
                "integrations",
            ));
        }
        Err(err) => {
            let msg = format!("{err:#}");
            items.push(Item::from_result(
                "auth suite passes in both modes",
                Err(anyhow::anyhow!(msg.clone())),
            ));
            items.push(Item::from_result(
                "integration suite passes",
                Err(anyhow::anyhow!(msg)),
            ));
        }
    }
    items.push(Item::from_result(
        "the application starts and is ready in strict mode",
        app_ready_in_strict_mode(sh, stack),
    ));
    Ok(items)
}

fn genesis_api_binary(sh: &Shell) -> Result<std::path::PathBuf> {
    let target = target_dir();
    let cargo = crate::tools::util::cargo();
    cmd!(
        sh,
        "{cargo} build --quiet -p genesis-api --bin genesis-api --target-dir {target}"
    )
    .run()
    .context("build genesis-api")?;
    Ok(target.join("debug/genesis-api"))
}

/// The real binary, given a SQLite URL, must refuse to start and name the variable.
fn settings_reject_sqlite(sh: &Shell) -> Result<String> {
    let bin = genesis_api_binary(sh)?;
    let out = cmd!(sh, "{bin} check-config")
        .env(model::DATABASE_URL_VAR, "sqlite:///./genesis.db")
        .quiet()
        .ignore_status()
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        !out.status.success(),
        "`genesis-api check-config` accepted DATABASE_URL=sqlite:///./genesis.db"
    );
    anyhow::ensure!(
        stderr.contains(model::DATABASE_URL_VAR) && stderr.contains("SQLite"),
        "the refusal does not name DATABASE_URL: {}",
        stderr.trim()
    );
    Ok("`genesis-api check-config` refuses DATABASE_URL=sqlite:… and names it".to_owned())
}

fn env_files_point_at_postgres(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut files: Vec<&str> = Env::ALL.iter().map(|e| e.env_file()).collect();
    files.push(".env");
    for name in files {
        let path = root.join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            if name != ".env" {
                problems.push(format!("{name}: missing (run `cargo xtask codegen`)"));
            }
            continue;
        };
        let entries = match parse_env_file(Path::new(name), &text) {
            Ok(entries) => entries,
            Err(err) => {
                problems.push(err.to_string());
                continue;
            }
        };
        for entry in entries {
            let is_database = entry.key.contains("DATABASE") && entry.key.ends_with("_URL");
            let placeholder = entry.value.starts_with("${") && entry.value.ends_with('}');
            let mentions_sqlite = entry.value.to_ascii_lowercase().contains("sqlite");
            if mentions_sqlite || (is_database && !placeholder) {
                match ServiceUrl::parse(&entry.value, Scheme::Postgres) {
                    Ok(_) => {}
                    Err(UrlProblem::Sqlite) => problems.push(format!(
                        "{name}:{}: {} is a SQLite URL",
                        entry.line, entry.key
                    )),
                    Err(_) => problems.push(format!(
                        "{name}:{}: {} is not a PostgreSQL URL",
                        entry.line, entry.key
                    )),
                }
            }
        }
    }
    // The test configuration: what the suites will resolve, with this process's environment.
    match Settings::load_for(Env::Test) {
        Ok(_) => {}
        Err(err) => problems.push(format!(
            "test settings: {}",
            genesis_settings::redact(&err.to_string())
        )),
    }
    problems
}

/// SQLite left in the files git knows (tracked, or new and not ignored): any mention in
/// configuration (env files, manifests, lock files, compose, scripts), a SQLite URL or driver in
/// non-test code, or a SQLite database file. Prose and tests may name SQLite: the code that
/// rejects it, and its tests, have to.
fn sqlite_remnants(sh: &Shell, root: &Path) -> Result<Vec<String>> {
    let listing = cmd!(sh, "git ls-files --cached --others --exclude-standard")
        .quiet()
        .read()
        .context("list the repository's files")?;
    let mut problems = Vec::new();
    for file in listing.lines() {
        let Ok(text) = std::fs::read_to_string(root.join(file)) else {
            if file_kind(file) == FileKind::Database {
                problems.push(format!("{file}: a SQLite database file"));
            }
            continue;
        };
        problems.extend(sqlite_in(file, &text));
    }
    Ok(problems)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileKind {
    Prose,
    Test,
    Code,
    Database,
    Config,
}

fn file_kind(path: &str) -> FileKind {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    if path == THIS_FILE || matches!(ext, "md" | "txt") {
        FileKind::Prose
    } else if matches!(ext, "db" | "sqlite" | "sqlite3") {
        FileKind::Database
    } else if path.split('/').any(|part| part == "tests")
        || name == "tests.rs"
        || name.starts_with("test_")
    {
        FileKind::Test
    } else if matches!(ext, "rs" | "py") {
        FileKind::Code
    } else {
        FileKind::Config
    }
}

/// The SQLite remnants in one file, as `file:line: text`.
fn sqlite_in(path: &str, text: &str) -> Vec<String> {
    let kind = file_kind(path);
    let mut problems = Vec::new();
    if kind == FileKind::Database {
        problems.push(format!("{path}: a SQLite database file"));
    }
    if matches!(kind, FileKind::Prose | FileKind::Test | FileKind::Database) {
        return problems;
    }
    for (idx, line) in text.lines().enumerate() {
        // In code, the unit tests at the end of a module may name SQLite to test its rejection.
        if kind == FileKind::Code && line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let lower = line.to_ascii_lowercase();
        let found = match kind {
            FileKind::Config => lower.contains("sqlite"),
            _ => SQLITE_USE.iter().any(|pattern| lower.contains(pattern)),
        };
        if found {
            problems.push(format!(
                "{path}:{}: {}",
                idx + 1,
                genesis_settings::redact(line.trim())
            ));
        }
    }
    problems
}

fn compose_matches(sh: &Shell) -> Result<String> {
    let path = project_root().join("docker-compose.yml");
    if let FileState::Changed { diff } =
        ensure_file_contents(&path, &codegen::render_compose(), Mode::Check)?
    {
        anyhow::bail!(
            "docker-compose.yml differs from the model (run `cargo xtask codegen`):\n{diff}"
        );
    }
    let compose = Compose::detect(sh)?;
    let ports = compose.published_ports(sh)?;
    let mut found = Vec::new();
    for env in [Env::Test, Env::Dev] {
        let service = Service::database(env).context("a compose database")?;
        let expected = service.model_port();
        let published = ports
            .iter()
            .find(|(s, _)| s == service.name())
            .map(|(_, p)| p.clone())
            .unwrap_or_default();
        anyhow::ensure!(
            published == [expected],
            "compose publishes {} on {published:?}, not {expected}",
            service.name()
        );
        found.push(format!("{} on {expected}", service.name()));
    }
    Ok(format!(
        "{}, as {} reads it",
        found.join(", "),
        compose.describe(sh)?
    ))
}

fn suite_item(item: &'static str, report: &Report, suite: &str) -> Item {
    let Some(summary) = report.suites.get(suite) else {
        return Item::from_result(item, Err(anyhow::anyhow!("the {suite} suite did not run")));
    };
    let rows: Vec<_> = report
        .tests
        .iter()
        .filter(|t| t.id.suite == suite)
        .collect();
    let mut locations = Vec::new();
    for row in &rows {
        for mode in [Target::Host, Target::Container] {
            match row.outcomes.get(&mode) {
                Some(Some(Outcome::Passed)) => {}
                Some(Some(other)) => {
                    locations.push(format!("{}: {:?} on the {}", row.id, other, mode.name()))
                }
                _ => locations.push(format!("{}: did not run on the {}", row.id, mode.name())),
            }
        }
    }
    Item::new(
        item,
        locations,
        format!(
            "{} tests passed on the host and in the container",
            summary.tests
        ),
    )
}

/// Starts the real binary on the host in strict mode and waits for `/health/ready` to answer 200.
fn app_ready_in_strict_mode(sh: &Shell, stack: &Stack) -> Result<String> {
    let bin = genesis_api_binary(sh)?;
    let compose = Compose::detect(sh)?;
    let running = stack.start(
        sh,
        &compose,
        &[Service::TestDb, Service::Redis],
        Lifetime::ThisRun,
        READY_TIMEOUT,
    )?;
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port();
    std::fs::create_dir_all(stack.state_dir())?;
    let log = stack.state_dir().join("strict-start.log");
    let serve = cmd!(sh, "{bin} serve")
        .env("ENVIRONMENT", Env::Test.environment_value())
        .env("STRICT_HEALTH_CHECKS", "true")
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env_remove(model::API.in_container_var)
        .envs(running.host_settings()?);
    let started = Instant::now();
    let api = ApiProcess::start(serve, port, &log, READY_TIMEOUT)?;
    let ready = format!(
        "ready in {:.1} s with STRICT_HEALTH_CHECKS=true",
        started.elapsed().as_secs_f64()
    );
    drop(api);
    Ok(ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str, text: &str, expected: &[&str]) {
        assert_eq!(sqlite_in(path, text), expected, "{path}");
    }

    #[test]
    fn configuration_may_not_mention_sqlite() {
        check(
            ".env.local",
            "A=1\nDATABASE_URL=sqlite:///./genesis.db\n",
            &[".env.local:2: DATABASE_URL=sqlite:///./genesis.db"],
        );
        check(
            "Cargo.lock",
            "name = \"libsqlite3-sys\"\n",
            &["Cargo.lock:1: name = \"libsqlite3-sys\""],
        );
        check("docker-compose.yml", "image: postgres:15-alpine\n", &[]);
    }

    #[test]
    fn code_may_reject_sqlite_but_not_use_it() {
        check(
            "src/db.rs",
            "// SQLite is refused here\nif url.starts_with(\"sqlite\") {}\n",
            &[],
        );
        check(
            "src/db.rs",
            "let url = \"sqlite:///x.db\";\n",
            &["src/db.rs:1: let url = \"sqlite:///x.db\";"],
        );
        check(
            "src/db.rs",
            "use rusqlite::Connection;\n",
            &["src/db.rs:1: use rusqlite::Connection;"],
        );
        check(
            "src/db.rs",
            "fn f() {}\n#[cfg(test)]\nmod tests { const U: &str = \"sqlite:///t.db\"; }\n",
            &[],
        );
        check(
            "crates/x/tests/config.rs",
            "const U: &str = \"sqlite:///t.db\";\n",
            &[],
        );
        check(
            "README.md",
            "The SQLite era is over: sqlite:/// URLs are refused.\n",
            &[],
        );
        check(
            "data/genesis.db",
            "",
            &["data/genesis.db: a SQLite database file"],
        );
    }
}

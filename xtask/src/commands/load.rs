//! `cargo xtask load`: the API under load. A release build of `genesis-api` is started on
//! loopback against running services, then `wrk` drives wrong-password logins and `/auth/me`
//! (64 connections, 20 s each by default). Reported: throughput, p50/p99 latency, answers by
//! status, socket errors and timeouts, and the server's peak memory (`VmHWM`). Fails (exit 1)
//! on any 5xx other than the hashing bound's 503, or peak memory of 512 MiB or more. Writes
//! target/xtask/load.json.
//!
//! The services come from `DATABASE_URL` and `REDIS_URL` in the environment when it sets them
//! (never the command line, which would show a password); otherwise the stack's test database
//! and Redis, started for the run when they are not up and removed after it. Timings on a
//! shared machine are noisy; compare runs on one machine.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use genesis_model as model;
use serde::{Deserialize, Serialize};
use xshell::{Shell, cmd};

use crate::flags;
use crate::services::api::ApiProcess;
use crate::services::compose::Compose;
use crate::services::{Lifetime, READY_TIMEOUT, Service, Stack, http_request};
use crate::tools::child;
use crate::tools::util::{check_failed, target_dir, usage};

/// The peak memory the acceptance allows.
const MEMORY_LIMIT_MIB: f64 = 512.0;

/// What the Lua script prints at the end of a wrk run.
#[derive(Debug, Deserialize, Serialize)]
struct Outcome {
    requests: u64,
    duration_us: u64,
    p50_us: u64,
    p99_us: u64,
    timeouts: u64,
    connect_errors: u64,
    read_errors: u64,
    write_errors: u64,
    /// Answers by HTTP status.
    statuses: BTreeMap<String, u64>,
}

impl Outcome {
    fn throughput(&self) -> f64 {
        self.requests as f64 / (self.duration_us as f64 / 1e6)
    }
}

#[derive(Debug, Serialize)]
struct Report {
    connections: u32,
    duration_s: u32,
    login: Outcome,
    me: Outcome,
    peak_memory_mib: f64,
    note: &'static str,
}

impl flags::Load {
    pub fn run(self, sh: &Shell, stack: &Stack) -> Result<()> {
        let wrk = which_wrk(sh)?;
        let given = |var: &str| std::env::var(var).ok().filter(|v| !v.trim().is_empty());
        // Started only when the caller named no server; removed when the run ends.
        let mut running = None;
        let (database_url, redis_url) =
            match (given(model::DATABASE_URL_VAR), given(model::REDIS.url_var)) {
                (Some(database), Some(redis)) => (database, redis),
                (database, redis) => {
                    let compose = Compose::detect(sh)?;
                    let started = running.insert(stack.start(
                        sh,
                        &compose,
                        &[Service::TestDb, Service::Redis],
                        Lifetime::ThisRun,
                        READY_TIMEOUT,
                    )?);
                    let settings: BTreeMap<&str, String> =
                        started.host_settings()?.into_iter().collect();
                    let setting = |var: &str| {
                        settings
                            .get(var)
                            .cloned()
                            .with_context(|| format!("stack {} gave no {var}", stack.name()))
                    };
                    (
                        database.map_or_else(|| setting(model::TEST_DB.url_var), Ok)?,
                        redis.map_or_else(|| setting(model::REDIS.url_var), Ok)?,
                    )
                }
            };

        let dir = stack.state_dir().join("load");
        std::fs::create_dir_all(&dir).context("create target/xtask/load")?;
        eprintln!("building genesis-api (release)");
        let target = target_dir();
        let cargo = crate::tools::util::cargo();
        cmd!(
            sh,
            "{cargo} build --quiet --release -p genesis-api --bin genesis-api --target-dir {target}"
        )
        .run()
        .context("build genesis-api in release mode")?;

        let bin = target.join("release/genesis-api");
        let bind = format!("127.0.0.1:{}", self.port);
        let secret = format!("load-{:032x}", nanos());
        let log = dir.join("server.log");
        // Development with every variable explicit: the process environment wins over env files.
        let server = cmd!(sh, "{bin} serve")
            .env(model::ENVIRONMENT_VAR, model::Env::Dev.environment_value())
            .env(model::DATABASE_URL_VAR, &database_url)
            .env(model::REDIS.url_var, &redis_url)
            .env(model::BIND_ADDR_VAR, &bind)
            .env(model::STRICT_HEALTH_CHECKS_VAR, "true")
            .env(model::DEBUG_VAR, "false")
            .env(model::TOKEN_SECRET_VAR, &secret)
            .env("RUST_LOG", "warn");
        let server = ApiProcess::start(server, self.port, &log, READY_TIMEOUT)?;

        let email = format!("load-{}@example.com", nanos());
        let password = "load check password";
        post(self.port, "/auth/register", &credentials(&email, password))?;
        let (status, body) = post(self.port, "/auth/login", &credentials(&email, password))?;
        if status != 200 {
            bail!("login before the run answered {status}: {body}");
        }
        let token: serde_json::Value = serde_json::from_str(&body).context("read the token")?;
        let token = token["access_token"].as_str().context("no access_token")?;

        let base = format!("http://{bind}");
        let login_script = script(
            &dir.join("login.lua"),
            "POST",
            &[("Content-Type", "application/json")],
            &credentials(&email, "wrong password"),
        )?;
        let me_script = script(
            &dir.join("me.lua"),
            "GET",
            &[("Authorization", &format!("Bearer {token}"))],
            "",
        )?;
        let login = run_wrk(
            sh,
            &wrk,
            &self,
            &login_script,
            &format!("{base}/auth/login"),
        )?;
        let me = run_wrk(sh, &wrk, &self, &me_script, &format!("{base}/auth/me"))?;
        let peak_memory_mib = peak_memory_mib(server.pid())?;
        drop(server);

        let report = Report {
            connections: self.connections,
            duration_s: self.duration,
            login,
            me,
            peak_memory_mib,
            note: "measured on the machine that ran it; a shared machine makes these numbers noisy",
        };
        print_report(&report);
        std::fs::write(
            stack.state_dir().join("load.json"),
            serde_json::to_string_pretty(&report)?,
        )
        .context("write target/xtask/load.json")?;

        let mut problems = Vec::new();
        for (name, outcome) in [("login", &report.login), ("/auth/me", &report.me)] {
            for (status, count) in &outcome.statuses {
                if status.starts_with('5') && status != "503" {
                    problems.push(format!("{name}: {count} answers with status {status}"));
                }
            }
        }
        if peak_memory_mib >= MEMORY_LIMIT_MIB {
            problems.push(format!(
                "peak memory {peak_memory_mib:.0} MiB is over {MEMORY_LIMIT_MIB} MiB"
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(check_failed(format!(
                "the load check failed: {}",
                problems.join("; ")
            )))
        }
    }
}

fn which_wrk(sh: &Shell) -> Result<String> {
    // `wrk --version` prints its version, then its usage, and exits 1.
    match cmd!(sh, "wrk --version").quiet().ignore_status().output() {
        Ok(out) if out.stdout.starts_with(b"wrk ") => Ok("wrk".to_owned()),
        _ => Err(usage("wrk is not installed: run `apt-get install wrk`")),
    }
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn credentials(email: &str, password: &str) -> String {
    serde_json::json!({ "email": email, "password": password }).to_string()
}

/// A POST of a JSON body on loopback, waiting up to 10 s for the answer (a registration hashes).
fn post(port: u16, path: &str, body: &str) -> Result<(u16, String)> {
    http_request(port, "POST", path, Some(body), Duration::from_secs(10))
}

/// A wrk script for one request, counting answers by status in every thread and printing the
/// outcome as one JSON line at the end.
fn script(path: &Path, method: &str, headers: &[(&str, &str)], body: &str) -> Result<String> {
    let lua_string = |s: &str| serde_json::to_string(s).expect("a string serialises");
    let mut text = format!("wrk.method = {}\n", lua_string(method));
    for (name, value) in headers {
        text.push_str(&format!(
            "wrk.headers[{}] = {}\n",
            lua_string(name),
            lua_string(value)
        ));
    }
    if !body.is_empty() {
        text.push_str(&format!("wrk.body = {}\n", lua_string(body)));
    }
    text.push_str(LUA_COUNTERS);
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    Ok(path.display().to_string())
}

const LUA_COUNTERS: &str = r#"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local all = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      all[status] = (all[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(all) do
    table.insert(parts, string.format('"%d":%d', status, count))
  end
  io.write(string.format(
    'LOAD-RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,' ..
    '"timeouts":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.timeout, summary.errors.connect, summary.errors.read, summary.errors.write,
    table.concat(parts, ",")))
end
"#;

fn run_wrk(sh: &Shell, wrk: &str, load: &flags::Load, script: &str, url: &str) -> Result<Outcome> {
    let connections = load.connections.to_string();
    let duration = format!("{}s", load.duration);
    eprintln!("wrk: {url}, {connections} connections, {duration}");
    // Tied: a `kill -9` of the xtask ends wrk too, instead of leaving it loading the API.
    let output = child::tied(sh, wrk, child::OnOurDeath::Term)
        .args(["-t2", &format!("-c{connections}"), &format!("-d{duration}")])
        .args(["--timeout", "2s", "-s", script, url])
        .quiet()
        .read()
        .context("run wrk")?;
    let line = output
        .lines()
        .find_map(|l| l.strip_prefix("LOAD-RESULT "))
        .with_context(|| format!("wrk printed no result:\n{output}"))?;
    serde_json::from_str(line).with_context(|| format!("read wrk's result: {line}"))
}

/// The peak resident memory of `pid` (`VmHWM` in /proc), in MiB.
fn peak_memory_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("read the server's /proc status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc status")?;
    Ok(kib / 1024.0)
}

fn print_report(report: &Report) {
    println!(
        "{} connections, {} s per scenario ({})",
        report.connections, report.duration_s, report.note
    );
    for (name, o) in [
        ("login (wrong password)", &report.login),
        ("/auth/me", &report.me),
    ] {
        let statuses: Vec<String> = o
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        println!(
            "{name:24} {:8.1} req/s  p50 {:7.1} ms  p99 {:7.1} ms  statuses {{{}}}  timeouts {}  socket errors {}",
            o.throughput(),
            o.p50_us as f64 / 1000.0,
            o.p99_us as f64 / 1000.0,
            statuses.join(", "),
            o.timeouts,
            o.connect_errors + o.read_errors + o.write_errors,
        );
    }
    println!(
        "server peak memory (VmHWM): {:.0} MiB",
        report.peak_memory_mib
    );
}

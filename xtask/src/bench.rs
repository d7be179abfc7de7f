//! `cargo xtask bench`: how fast the workflow is, each figure measured side by side with its
//! baseline, interleaved in one run so that ratios hold on a noisy machine.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use genesis_model::{self as model, Password};
use serde::Serialize;
use serde_json::json;
use xshell::{Shell, cmd};

use crate::compose::Compose;
use crate::flags;
use crate::services::{Lifetime, READY_TIMEOUT, Service, Stack};
use crate::test::xtask_dir;

#[derive(Debug, Serialize)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
    samples: Vec<f64>,
}

impl Stats {
    fn of(mut samples: Vec<f64>) -> Stats {
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let median = if n % 2 == 1 {
            samples[n / 2]
        } else {
            (samples[n / 2 - 1] + samples[n / 2]) / 2.0
        };
        Stats {
            median,
            min: samples[0],
            max: samples[n - 1],
            samples,
        }
    }
}

type Row = (String, String, String, String);

impl flags::Bench {
    pub fn run(self, sh: &Shell, stack: &Stack) -> Result<()> {
        let reps = self.reps.max(1);
        // The xtask commands measured below work on the same stack.
        let _stack_var = sh.push_env(model::STACK_VAR, stack.name());
        let compose = Compose::detect(sh)?;
        let xtask = std::env::current_exe().context("find the xtask binary")?;
        let mut rows: Vec<Row> = Vec::new();
        let mut out = serde_json::Map::new();

        eprintln!("1/4 db-up to ready, xtask against raw compose + psql loop ({reps} reps each)");
        let (xt, raw) = bench_db_up(sh, &compose, stack, &xtask, reps)?;
        rows.push(row("db-up to ready (s)", "xtask", &xt, "raw", &raw));
        out.insert(
            "db_up_ready_s".into(),
            json!({ "xtask": xt, "raw": raw, "ratio": xt.median / raw.median }),
        );

        eprintln!(
            "2/4 one isolated test database: template clone against migrations ({} each)",
            reps * 5
        );
        let (clone, migrate) = bench_test_db(sh, &compose, stack, reps * 5)?;
        rows.push((
            "test database (ms)".into(),
            format!("template clone {}", show(&clone)),
            format!("migrations {}", show(&migrate)),
            format!("{:.2}x cheaper", migrate.median / clone.median),
        ));
        out.insert(
            "test_db_ms".into(),
            json!({ "template_clone": clone, "migrations": migrate, "ratio": migrate.median / clone.median }),
        );

        eprintln!("3/4 suite wall time: host, container, both modes ({reps} reps each)");
        let (host, container, both) = bench_suites(sh, &xtask, reps)?;
        let slower = host.median.max(container.median);
        rows.push(row(
            "suites, one mode (s)",
            "host",
            &host,
            "container",
            &container,
        ));
        rows.push((
            "suites, both modes (s)".into(),
            format!("both {}", show(&both)),
            format!("slower single {slower:.2}"),
            format!("{:.2}x", both.median / slower),
        ));
        out.insert(
            "suite_wall_s".into(),
            json!({ "host": host, "container": container, "both": both, "ratio_both_to_slower": both.median / slower }),
        );

        eprintln!("4/4 the xtask's cold build ({reps} reps)");
        let (build, crates) = bench_cold_build(sh, reps)?;
        rows.push((
            "xtask cold build (s)".into(),
            show(&build),
            format!("{crates} crates"),
            String::new(),
        ));
        out.insert("xtask_cold_build_s".into(), serde_json::to_value(&build)?);
        out.insert("xtask_crates".into(), crates.into());
        out.insert("machine".into(), machine(sh));

        println!(
            "\n{:<24} {:<34} {:<34} ratio",
            "measure", "subject (median [min..max])", "baseline"
        );
        for (name, a, b, ratio) in &rows {
            println!("{name:<24} {a:<34} {b:<34} {ratio}");
        }
        let path = xtask_dir().join("bench.json");
        std::fs::create_dir_all(xtask_dir())?;
        std::fs::write(&path, serde_json::to_string_pretty(&out)?)?;
        println!("\nwritten to {}", path.display());
        Ok(())
    }
}

fn show(s: &Stats) -> String {
    format!("{:.2} [{:.2}..{:.2}]", s.median, s.min, s.max)
}

fn row(name: &str, a: &str, sa: &Stats, b: &str, sb: &Stats) -> Row {
    (
        name.to_owned(),
        format!("{a} {}", show(sa)),
        format!("{b} {}", show(sb)),
        format!("{:.2}x", sa.median / sb.median),
    )
}

fn timed(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let started = Instant::now();
    f()?;
    Ok(started.elapsed().as_secs_f64())
}

fn test_db_url(port: u16) -> String {
    let db = model::TEST_DB;
    let Password::Public(password) = db.password else {
        unreachable!("the test password is public")
    };
    let mut address = db.host_address.expect("test-db is published");
    address.port = port;
    db.url_with(address, password)
}

/// `cargo xtask db-up` against `compose up -d test-db` and a `psql -c 'select 1'` loop, each
/// from a removed container, on a warm image.
fn bench_db_up(
    sh: &Shell,
    compose: &Compose,
    stack: &Stack,
    xtask: &Path,
    reps: usize,
) -> Result<(Stats, Stats)> {
    let service = Service::TestDb.name();
    let was_running = stack
        .containers(sh)?
        .iter()
        .any(|c| c.service == service && c.running());
    let remove = || stack.remove(sh, compose, &[service]);
    let port = |sh: &Shell| -> Result<u16> {
        stack
            .containers(sh)?
            .iter()
            .find(|c| c.service == service)
            .and_then(|c| c.host_port(Service::TestDb.container_port()))
            .context("test-db publishes no port")
    };
    let (mut xt, mut raw) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        remove()?;
        xt.push(timed(|| {
            cmd!(sh, "{xtask} db-up --env test")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run()
                .context("xtask db-up")
        })?);
        remove()?;
        raw.push(timed(|| {
            compose
                .cmd(sh, stack)
                .args(["up", "-d", service])
                .quiet()
                .ignore_stderr()
                .run()?;
            let url = test_db_url(port(sh)?);
            let deadline = Instant::now() + Duration::from_secs(90);
            while cmd!(sh, "psql {url} -XAtqc 'select 1'")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run()
                .is_err()
            {
                if Instant::now() > deadline {
                    bail!("raw start: test-db not ready within 90 s");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        })?);
        eprintln!(
            "  rep {}: xtask {:.2} s, raw {:.2} s",
            rep + 1,
            xt[rep],
            raw[rep]
        );
    }
    if !was_running {
        remove()?;
    }
    Ok((Stats::of(xt), Stats::of(raw)))
}

/// Per-database cost as the suites pay it, measured in-process by the API crate's
/// `test_db_cost` example with the suites' own support module: a clone of the migrated template
/// against an empty database and the migration runner, interleaved, connection included.
fn bench_test_db(
    sh: &Shell,
    compose: &Compose,
    stack: &Stack,
    count: usize,
) -> Result<(Stats, Stats)> {
    let running = stack.start(
        sh,
        compose,
        &[Service::TestDb],
        Lifetime::ThisRun,
        READY_TIMEOUT,
    )?;
    cmd!(
        sh,
        "cargo build --quiet -p genesis-api --example test_db_cost"
    )
    .run()
    .context("build the test_db_cost example")?;
    let count = count.to_string();
    let out = cmd!(
        sh,
        "cargo run --quiet -p genesis-api --example test_db_cost -- {count}"
    )
    .env_remove(model::API.in_container_var)
    .envs(running.host_settings()?)
    .read()
    .context("run the test_db_cost example")?;
    let json: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .context("read test_db_cost's output")?;
    let samples = |key: &str| -> Result<Vec<f64>> {
        json[key]
            .as_array()
            .with_context(|| format!("test_db_cost printed no {key}"))?
            .iter()
            .map(|v| v.as_f64().context("not a number"))
            .collect()
    };
    Ok((
        Stats::of(samples("template_clone")?),
        Stats::of(samples("migrations")?),
    ))
}

/// Wall time of the three test commands, interleaved.
fn bench_suites(sh: &Shell, xtask: &Path, reps: usize) -> Result<(Stats, Stats, Stats)> {
    // One untimed run builds everything, so every timed run measures running, not compiling.
    cmd!(sh, "{xtask} test --host")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .context("warm-up run of the suites")?;
    let (mut host, mut container, mut both) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        for (flag, samples) in [
            ("--host", &mut host),
            ("--container", &mut container),
            ("--both-modes", &mut both),
        ] {
            let run = || {
                cmd!(sh, "{xtask} test {flag}")
                    .quiet()
                    .ignore_stdout()
                    .ignore_stderr()
                    .run()
                    .with_context(|| format!("xtask test {flag}"))
            };
            samples.push(timed(run)?);
        }
        eprintln!(
            "  rep {}: host {:.1} s, container {:.1} s, both {:.1} s",
            rep + 1,
            host[rep],
            container[rep],
            both[rep]
        );
    }
    Ok((Stats::of(host), Stats::of(container), Stats::of(both)))
}

/// The xtask built from nothing in a target folder of its own (dependencies already
/// downloaded), and the number of crates in its dependency graph.
fn bench_cold_build(sh: &Shell, reps: usize) -> Result<(Stats, usize)> {
    let dir = xtask_dir().join("cold-build");
    let mut samples = Vec::new();
    for _ in 0..reps {
        let _ = std::fs::remove_dir_all(&dir);
        samples.push(timed(|| {
            cmd!(sh, "cargo build --quiet -p xtask --target-dir {dir}")
                .quiet()
                .run()
                .context("cold build of the xtask")
        })?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let tree = cmd!(sh, "cargo tree -p xtask -e normal,build --prefix none")
        .quiet()
        .read()?;
    let mut crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    crates.sort_unstable();
    crates.dedup();
    Ok((Stats::of(samples), crates.len()))
}

fn machine(sh: &Shell) -> serde_json::Value {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let memory = cmd!(sh, "free -g").quiet().read().ok().and_then(|t| {
        t.lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
    });
    json!({ "cores": cores, "cpu": cpu, "memory_gib": memory })
}

//! `cargo xtask bench`: how fast the workflow is, each figure measured side by side with its
//! baseline, interleaved in one run so that ratios hold on a noisy machine.

mod edit_loop;
mod table;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use genesis_model as model;
use serde::Serialize;
use serde_json::json;
use xshell::{Shell, cmd};

use crate::commands::parity;
use crate::commands::timings::Timings;
use crate::flags;
use crate::services::compose::Compose;
use crate::services::{Lifetime, READY_TIMEOUT, Service, Stack};
use crate::services::{docker, images};
use crate::tools::util::{check_interrupted, usage, xtask_dir};

/// The variable the suites' support code reads to record each database hand-out
/// (`crates/genesis-test-support/src/pool.rs`).
const TIMINGS_VAR: &str = "GENESIS_TEST_DB_TIMINGS";

#[derive(Debug, Serialize)]
struct Stats {
    median: f64,
    p95: f64,
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
        // Nearest rank: the smallest sample with at least 95 % of the samples at or below it.
        let p95 = samples[(n * 95).div_ceil(100).max(1) - 1];
        Stats {
            median,
            p95,
            min: samples[0],
            max: samples[n - 1],
            samples,
        }
    }
}

type Row = (String, String, String, String);

impl flags::Bench {
    pub fn run(self, sh: &Shell, stack: &Stack) -> Result<()> {
        if let Some(path) = &self.from {
            let text = std::fs::read_to_string(path)
                .map_err(|err| usage(format!("cannot read {}: {err}", path.display())))?;
            let json = serde_json::from_str(&text)
                .map_err(|err| usage(format!("{} is not a bench.json: {err}", path.display())))?;
            return self.finish(&json);
        }
        let reps = self.reps.max(1);
        // The xtask commands measured below work on the same stack.
        let _stack_var = sh.push_env(model::STACK_VAR, stack.name());
        let compose = Compose::detect(sh)?;
        let xtask = std::env::current_exe().context("find the xtask binary")?;
        let mut rows: Vec<Row> = Vec::new();
        let mut out = serde_json::Map::new();

        eprintln!(
            "1/5 db-up to ready, xtask against raw compose + psql loop and the engine's floor ({reps} reps each)"
        );
        let DbUp {
            xt,
            raw,
            floor,
            xt_v2,
            up,
            up_v2,
        } = bench_db_up(sh, &compose, stack, &xtask, reps)?;
        rows.push(row("db-up to ready (s)", "xtask", &xt, "raw", &raw));
        rows.push(row(
            "db-up against the floor (s)",
            "xtask",
            &xt,
            "docker run --rm",
            &floor,
        ));
        if let Some(v2) = &xt_v2 {
            rows.push(row(
                "db-up, Compose v2 (s)",
                "xtask",
                v2,
                "docker run --rm",
                &floor,
            ));
        }
        out.insert(
            "db_up_ready_s".into(),
            json!({ "xtask": xt, "raw": raw, "compose_up": up, "ratio": xt.median / raw.median, "ratio_to_floor": xt.median / floor.median, "compose": compose.describe(sh)? }),
        );
        if let Some(v2) = &xt_v2 {
            out.insert(
                "db_up_ready_compose_v2_s".into(),
                json!({ "xtask": v2, "compose_up": up_v2, "ratio_to_floor": v2.median / floor.median }),
            );
        }
        out.insert("engine_floor_s".into(), serde_json::to_value(&floor)?);

        eprintln!(
            "2/5 one isolated test database: template clone against migrations ({} each)",
            reps * 20
        );
        // Enough hand-outs for a p95 that is not simply the slowest of a few (60 at 3 reps).
        let cost = bench_test_db(sh, &compose, stack, reps * 20)?;
        rows.push((
            "test database (ms)".into(),
            format!("template clone {}", show(&cost.clone)),
            format!("migrations {}", show(&cost.migrations)),
            format!("{:.2}x cheaper", cost.migrations.median / cost.clone.median),
        ));
        rows.push((
            "test database hand-out (ms)".into(),
            format!("pool p50/p95/max {}", show_tail(&cost.handout)),
            format!("migrations {}", show(&cost.migrations)),
            format!(
                "{:.1}x cheaper",
                cost.migrations.median / cost.handout.median
            ),
        ));
        out.insert(
            "test_db_ms".into(),
            json!({
                "handout": cost.handout,
                "handout_misses": cost.misses,
                "handout_hits": cost.hits,
                "handout_own_pool": cost.own_pool,
                "handout_in_process": cost.in_process,
                "template_clone": cost.clone,
                "migrations": cost.migrations,
                "ratio": cost.migrations.median / cost.clone.median,
                "ratio_handout": cost.migrations.median / cost.handout.median,
            }),
        );

        eprintln!(
            "3/5 the edit-and-rerun loop: touch tests/auth.rs, then test --both-modes -- auth::login, cold and warm (--keep) ({reps} reps each)"
        );
        let edit = edit_loop::bench_loop(sh, &compose, stack, &xtask, reps)?;
        rows.push((
            "loop, cold (s)".into(),
            format!("loop {}", show(&edit.cold)),
            format!("build + slower mode {}", show(&edit.cold_floor)),
            format!("{:.2}x", edit.cold.median / edit.cold_floor.median),
        ));
        rows.push((
            "loop, warm --keep (s)".into(),
            format!("loop {}", show(&edit.warm)),
            format!("build + slower mode {}", show(&edit.warm_floor)),
            format!("{:.2}x", edit.warm.median / edit.warm_floor.median),
        ));
        out.insert(
            "loop_s".into(),
            json!({
                "cold": edit.cold,
                "warm": edit.warm,
                "cold_floor": edit.cold_floor,
                "warm_floor": edit.warm_floor,
                "ratio_warm_to_floor": edit.warm.median / edit.warm_floor.median,
                "ratio_cold_to_floor": edit.cold.median / edit.cold_floor.median,
                "definition": "touch crates/genesis-api/tests/auth.rs, then `cargo xtask test --both-modes -- auth::login` (warm: with --keep, services kept by the previous run); floor = the run's own build time + its slower mode's run time",
            }),
        );

        eprintln!("4/5 suite wall time: host, container, both modes ({reps} reps each)");
        let suites = bench_suites(sh, stack, &xtask, reps, self.baseline.as_deref())?;
        let (host, container, both) = (suites.host, suites.container, suites.both);
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
        rows.push((
            "main job (s)".into(),
            format!("test --both-modes {}", show(&both)),
            format!("harness {:.0} %", suites.harness_share * 100.0),
            String::new(),
        ));
        let phases = Timings::median(&suites.phases);
        rows.push((
            "main job phases (median)".into(),
            phases.phases(),
            String::new(),
            String::new(),
        ));
        out.insert(
            "main_job_phases".into(),
            json!({
                "median": phases,
                "runs": suites.phases,
                "definition": "each both-modes run's own timings.json, in seconds; listing runs beside services",
            }),
        );
        if let Some(handout) = &suites.handout {
            rows.push((
                "hand-out in the suites (ms)".into(),
                format!("p50/p95/max {}", show_tail(handout)),
                format!("{} hand-outs", handout.samples.len()),
                String::new(),
            ));
        }
        out.insert(
            "suite_wall_s".into(),
            json!({ "host": host, "container": container, "both": both, "ratio_both_to_slower": both.median / slower }),
        );
        out.insert("main_job_s".into(), serde_json::to_value(&both)?);
        if let Some(baseline) = &suites.baseline {
            rows.push(row(
                "main job against the baseline (s)",
                "this",
                &both,
                "baseline",
                baseline,
            ));
            out.insert(
                "main_job_baseline_s".into(),
                json!({ "stats": baseline, "checkout": self.baseline.as_ref().map(|p| p.display().to_string()), "ratio": both.median / baseline.median }),
            );
        }
        out.insert("harness_share".into(), suites.harness_share.into());
        out.insert(
            "harness".into(),
            json!({
                "main_job_s": both.median,
                "test_bodies_s": suites.bodies_s,
                "parallelism": suites.parallelism,
                "definition": "(wall time - sum of the test bodies of both modes / parallelism) / wall time, on the last both-modes run; parallelism = nextest's threads per mode x 2 modes",
            }),
        );
        if let Some(handout) = &suites.handout {
            out.insert("test_db_ms_suites".into(), json!({ "handout": handout }));
        }

        eprintln!("5/5 the xtask's cold build ({reps} reps)");
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
        let out = serde_json::Value::Object(out);
        std::fs::write(&path, serde_json::to_string_pretty(&out)?)?;
        println!("\nwritten to {}", path.display());
        self.finish(&out)
    }
}

fn show_tail(s: &Stats) -> String {
    format!("{:.1}/{:.1}/{:.1}", s.median, s.p95, s.max)
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

/// The test database's URL on `port`, without its password (psql reads it from PGPASSWORD).
fn test_db_url(port: u16) -> String {
    let mut address = model::TEST_DB_SERVICE.host_address;
    address.port = port;
    format!(
        "postgresql://{}@{address}/{}",
        model::TEST_DB.user,
        model::TEST_DB.name
    )
}

/// What `db-up` costs, and what it is made of.
struct DbUp {
    /// `cargo xtask db-up --env test` to a real login, under the machine's compose.
    xt: Stats,
    /// `compose up -d test-db` and a `psql` loop to a real login.
    raw: Stats,
    /// The engine's own floor: `docker run --rm` of the image running `true`.
    floor: Stats,
    /// `cargo xtask db-up` under Compose v2, where it is at hand beside the machine's v1.
    xt_v2: Option<Stats>,
    /// `compose up -d test-db` alone, until compose returns, under the machine's compose.
    up: Stats,
    /// The same under Compose v2.
    up_v2: Option<Stats>,
}

/// `cargo xtask db-up` against `compose up -d test-db` and a `psql -c 'select 1'` loop, each
/// from a removed container, on a warm image; and the engine's own floor, `docker run --rm` of
/// the same image running `true`.
fn bench_db_up(
    sh: &Shell,
    compose: &Compose,
    stack: &Stack,
    xtask: &Path,
    reps: usize,
) -> Result<DbUp> {
    let service = Service::TestDb.name();
    let image = images::image_available(model::POSTGRES_IMAGE)?;
    let was_running = stack
        .containers()?
        .iter()
        .any(|c| c.service == service && c.running());
    let remove = || stack.remove(sh, compose, &[service]);
    let port = || -> Result<u16> {
        stack
            .containers()?
            .iter()
            .find(|c| c.service == service)
            .and_then(|c| c.host_port(Service::TestDb.container_port()))
            .context("test-db publishes no port")
    };
    // Compose v1's `up` creates every volume the project declares (the dev database's too):
    // the ones this measurement made are removed with its containers.
    let volumes_before = stack.volumes()?;
    // Where Compose v2 is at hand beside the machine's v1, `db-up` runs under it too: the
    // flavour costs more than anything else in the start.
    let v2 = (compose.flavour == crate::services::compose::Flavour::V1)
        .then(|| std::env::var_os(crate::services::compose::V2_VAR))
        .flatten()
        .filter(|dir| !dir.is_empty());
    let compose_v2 = v2.as_ref().and_then(|dir| Compose::v2_of(Path::new(dir)));
    let (mut xt, mut raw, mut floor, mut xt_v2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut up, mut up_v2) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        floor.push(timed(|| docker::run_nothing(sh, &image))?);
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
        if let Some(dir) = &v2 {
            xt_v2.push(timed(|| {
                cmd!(sh, "{xtask} db-up --env test")
                    .env("DOCKER_CONFIG", dir)
                    .quiet()
                    .ignore_stdout()
                    .ignore_stderr()
                    .run()
                    .context("xtask db-up under Compose v2")
            })?);
            remove()?;
        }
        if let Some(v2) = &compose_v2 {
            up_v2.push(timed(|| stack.up_plain(sh, v2, &[service]))?);
            remove()?;
        }
        raw.push(timed(|| {
            let started = Instant::now();
            stack.up_plain(sh, compose, &[service])?;
            up.push(started.elapsed().as_secs_f64());
            let url = test_db_url(port()?);
            let deadline = Instant::now() + Duration::from_secs(90);
            // The password in the environment, not on psql's command line.
            while cmd!(sh, "psql {url} -XAtqc 'select 1'")
                .env("PGPASSWORD", model::TEST_DB_PASSWORD)
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run()
                .is_err()
            {
                if Instant::now() > deadline {
                    bail!("raw start: test-db not ready within 90 s");
                }
                check_interrupted().context("raw start: waiting for test-db")?;
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        })?);
        eprintln!(
            "  rep {}: xtask {:.2} s{}, raw {:.2} s, floor {:.2} s",
            rep + 1,
            xt[rep],
            xt_v2
                .get(rep)
                .map_or(String::new(), |t| format!(" (under Compose v2 {t:.2} s)")),
            raw[rep],
            floor[rep]
        );
    }
    if !was_running {
        remove()?;
    }
    for volume in stack.volumes()? {
        if !volumes_before.contains(&volume) {
            docker::remove_volume(&volume)?;
        }
    }
    Ok(DbUp {
        xt: Stats::of(xt),
        raw: Stats::of(raw),
        floor: Stats::of(floor),
        xt_v2: (!xt_v2.is_empty()).then(|| Stats::of(xt_v2)),
        up: Stats::of(up),
        up_v2: (!up_v2.is_empty()).then(|| Stats::of(up_v2)),
    })
}

/// What one test's database costs.
struct TestDbCost {
    /// From the pool server, one process per hand-out as nextest runs tests, two at a time.
    handout: Stats,
    misses: u64,
    /// The hand-outs a ready clone served (the misses waited for a clone being made).
    hits: Option<Stats>,
    /// From a pool of each process's own, its login included (no pool server).
    own_pool: Stats,
    /// From the pool, to tasks of one process over its persistent connection.
    in_process: Stats,
    clone: Stats,
    migrations: Stats,
}

/// Per-database cost as the suites pay it, measured by the API crate's `test_db_cost` example
/// with the suites' own support module: the pool's hand-out, a clone of the migrated template
/// made on demand, and an empty database with the migration runner, connection included.
fn bench_test_db(sh: &Shell, compose: &Compose, stack: &Stack, count: usize) -> Result<TestDbCost> {
    let running = stack.start(
        sh,
        compose,
        &[Service::TestDb],
        Lifetime::ThisRun,
        READY_TIMEOUT,
    )?;
    let cargo = crate::tools::util::cargo();
    crate::tools::util::as_from_a_shell(cmd!(
        sh,
        "{cargo} build --quiet -p genesis-api --example test_db_cost"
    ))
    .run()
    .context("build the test_db_cost example")?;
    let count = count.to_string();
    let cargo = crate::tools::util::cargo();
    let out = crate::tools::util::as_from_a_shell(cmd!(
        sh,
        "{cargo} run --quiet -p genesis-api --example test_db_cost -- {count}"
    ))
    .env_remove(model::API.in_container_var)
    .envs(running.host_settings()?)
    .read()
    .context("run the test_db_cost example")?;
    let json: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .context("read test_db_cost's output")?;
    let samples = |key: &str| -> Result<Stats> {
        let values: Vec<f64> = json[key]
            .as_array()
            .with_context(|| format!("test_db_cost printed no {key}"))?
            .iter()
            .map(|v| v.as_f64().context("not a number"))
            .collect::<Result<_>>()?;
        if values.is_empty() {
            bail!("test_db_cost printed no sample of {key}");
        }
        Ok(Stats::of(values))
    };
    Ok(TestDbCost {
        handout: samples("handout")?,
        misses: json["handout_misses"].as_u64().unwrap_or(0),
        hits: samples("handout_hits").ok(),
        own_pool: samples("handout_own_pool")?,
        in_process: samples("handout_in_process")?,
        clone: samples("template_clone")?,
        migrations: samples("migrations")?,
    })
}

struct Suites {
    host: Stats,
    container: Stats,
    both: Stats,
    /// Of the last both-modes run: the sum of its test bodies (both modes, from JUnit), the
    /// parallelism they had, and the share of its wall time that was not test bodies.
    bodies_s: f64,
    parallelism: usize,
    harness_share: f64,
    /// Every hand-out of a test database in the host runs (the support code records them).
    handout: Option<Stats>,
    /// `cargo xtask test --both-modes` of the baseline checkout, alternated with this one's.
    baseline: Option<Stats>,
    /// Where each both-modes run's time went, as the run itself timed it (`timings.json`).
    phases: Vec<Timings>,
}

/// The baseline checkout's own `cargo xtask test --both-modes`, run in it as its README says;
/// once its xtask is built, that binary is run directly, as this checkout's is, so that
/// neither pays cargo's own check of the xtask in the comparison.
/// The untimed warm-up (`warm_up`) goes through cargo, which builds what is missing.
fn baseline_main_job(sh: &Shell, checkout: &Path, warm_up: bool) -> Result<()> {
    let _dir = sh.push_dir(checkout);
    let built = checkout.join("target/debug/xtask");
    let main_job = if warm_up || !built.is_file() {
        cmd!(sh, "cargo xtask test --both-modes")
    } else {
        cmd!(sh, "{built} test --both-modes")
    };
    main_job
        .env_remove(model::STACK_VAR)
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .with_context(|| format!("the main job of the baseline {}", checkout.display()))
}

/// Wall time of the three test commands, interleaved, and of the baseline's main job (a
/// checkout of the old version) alternated with this one's.
fn bench_suites(
    sh: &Shell,
    stack: &Stack,
    xtask: &Path,
    reps: usize,
    baseline: Option<&Path>,
) -> Result<Suites> {
    // One untimed run builds everything, so every timed run measures running, not compiling.
    cmd!(sh, "{xtask} test --host")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .context("warm-up run of the suites")?;
    if let Some(checkout) = baseline {
        baseline_main_job(sh, checkout, true)?;
    }
    let mut old = Vec::new();
    let handouts = xtask_dir().join("bench-handouts.txt");
    let _ = std::fs::remove_file(&handouts);
    let (mut host, mut container, mut both) = (Vec::new(), Vec::new(), Vec::new());
    let mut last_both = 0.0;
    let mut phases = Vec::new();
    for rep in 0..reps {
        for (flag, samples) in [
            ("--host", &mut host),
            ("--container", &mut container),
            ("--both-modes", &mut both),
        ] {
            let run = || {
                cmd!(sh, "{xtask} test {flag}")
                    .env(TIMINGS_VAR, &handouts)
                    .quiet()
                    .ignore_stdout()
                    .ignore_stderr()
                    .run()
                    .with_context(|| format!("xtask test {flag}"))
            };
            samples.push(timed(run)?);
        }
        last_both = both[rep];
        phases.push(Timings::read(&stack.state_dir())?);
        if let Some(checkout) = baseline {
            old.push(timed(|| baseline_main_job(sh, checkout, false))?);
            eprintln!("  rep {}: baseline both {:.1} s", rep + 1, old[rep]);
        }
        eprintln!(
            "  rep {}: host {:.1} s, container {:.1} s, both {:.1} s",
            rep + 1,
            host[rep],
            container[rep],
            both[rep]
        );
    }
    // The last run was --both-modes: its JUnit reports are still there.
    let mut bodies_s = 0.0;
    for mode in ["host", "container"] {
        let path = stack.state_dir().join(format!("junit-{mode}.xml"));
        let xml =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        bodies_s +=
            parity::body_seconds(&xml).with_context(|| format!("read {}", path.display()))?;
    }
    let parallelism = crate::tools::util::test_threads() * 2;
    let handout = std::fs::read_to_string(&handouts).ok().and_then(|text| {
        let ms: Vec<f64> = text
            .lines()
            .filter_map(|line| line.split_whitespace().next()?.parse().ok())
            .collect();
        (!ms.is_empty()).then(|| Stats::of(ms))
    });
    Ok(Suites {
        host: Stats::of(host),
        container: Stats::of(container),
        both: Stats::of(both),
        bodies_s,
        parallelism,
        harness_share: harness_share(last_both, bodies_s, parallelism),
        handout,
        baseline: (!old.is_empty()).then(|| Stats::of(old)),
        phases,
    })
}

/// The share of a run's wall time that its test bodies do not explain: what the harness
/// (build check, services, archive extraction, process start, reports) costs.
fn harness_share(wall_s: f64, bodies_s: f64, parallelism: usize) -> f64 {
    let bodies_wall = bodies_s / parallelism.max(1) as f64;
    ((wall_s - bodies_wall) / wall_s).clamp(0.0, 1.0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_is_the_nearest_rank() {
        let s = Stats::of((1..=20).map(f64::from).collect());
        assert_eq!((s.median, s.p95, s.max), (10.5, 19.0, 20.0));
        let one = Stats::of(vec![4.0]);
        assert_eq!((one.median, one.p95), (4.0, 4.0));
    }

    #[test]
    fn the_harness_share_is_what_the_bodies_do_not_explain() {
        // 20 s of bodies on 4 slots explain 5 s of a 10 s run.
        assert_eq!(harness_share(10.0, 20.0, 4), 0.5);
        assert_eq!(harness_share(10.0, 80.0, 4), 0.0);
    }
}

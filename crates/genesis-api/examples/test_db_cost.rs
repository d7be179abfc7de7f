//! The cost of one isolated test database as the suites pay it, measured in-process with the
//! suites' own support code: the pool's hand-out (what a test waits for), a clone of the
//! migrated template made on demand (the suites' way before the pool), and an empty database
//! with the migration runner (what each test would pay without the template). Each includes
//! connecting to the database; dropping it is not timed.
//!
//! The hand-out is measured as nextest runs the suites, one process per test: this program
//! starts itself `COUNT` times, `PARALLEL` (default 2) at once, and each child times its
//! hand-out from its first instruction: from a pool server as `cargo xtask test` runs one
//! (`handout`, the server being a thread of this program), and from a pool of the child's own,
//! its login included (`handout_own_pool`). `cargo xtask bench` runs this and reads the one
//! JSON line it prints: `{"handout": [ms...], "handout_misses": n, "handout_hits": [ms...], "handout_own_pool": [ms...],
//! "handout_in_process": [ms...], "template_clone": [ms...], "migrations": [ms...]}`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use genesis_test_support::{self as support, TestDb};

const CHILD: &str = "--one-handout";

fn main() {
    let start = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    if args.first().map(String::as_str) == Some(CHILD) {
        return runtime.block_on(child(start));
    }
    let number = |i: usize, default: usize| match args.get(i) {
        Some(arg) => arg.parse().expect("usage: test_db_cost [COUNT [PARALLEL]]"),
        None => default,
    };
    let (count, parallel) = (number(0, 15), number(1, 2).max(1));
    runtime.block_on(async {
        // The template is built (or found) and the pool filled once, untimed, as the first
        // tests of a run do.
        drop(TestDb::new().await);
    });
    let socket = std::env::temp_dir().join(format!("test_db_cost-{}.sock", std::process::id()));
    start_server(&socket);
    let (handout, hits) = handouts(count, parallel, Some(&socket));
    let misses = handout.len() - hits.len();
    let (own_pool, _) = handouts(count, parallel, None);
    let _ = std::fs::remove_file(&socket);
    let in_process = runtime.block_on(in_process(count, parallel));
    let (clone, migrations) = runtime.block_on(on_demand(count));
    println!(
        "{}",
        serde_json::json!({
            "handout": handout,
            "handout_misses": misses,
            "handout_hits": hits,
            "handout_own_pool": own_pool,
            "handout_in_process": in_process,
            "template_clone": clone,
            "migrations": migrations,
        })
    );
}

/// The pool server of a `cargo xtask test` run, on a thread of this program.
fn start_server(socket: &Path) {
    let socket = socket.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let ready = move || {
            let _ = tx.send(());
        };
        runtime
            .block_on(support::pool::serve(
                &socket,
                support::pool::Ready::Filled,
                ready,
                std::future::pending(),
            ))
            .expect("the pool server");
    });
    rx.recv().expect("the pool server started");
}

/// One test's hand-out, in a process of its own: prints `<ms> hit|miss`.
async fn child(start: Instant) {
    let handout = support::pool::checkout(start).await;
    let db = TestDb::adopt(handout.name);
    println!(
        "{:.3} {}",
        handout.elapsed.as_secs_f64() * 1000.0,
        if handout.hit { "hit" } else { "miss" }
    );
    drop(db);
}

/// `count` children, `parallel` at a time, served by the pool server at `socket` or by pools
/// of their own.
/// Every hand-out's time, and the times of those a ready clone served (the others waited for a
/// clone to be made).
fn handouts(count: usize, parallel: usize, socket: Option<&Path>) -> (Vec<f64>, Vec<f64>) {
    let exe = std::env::current_exe().expect("this program's path");
    let (mut ms, mut hits) = (Vec::new(), Vec::new());
    let mut left = count;
    while left > 0 {
        let batch = left.min(parallel);
        left -= batch;
        let children: Vec<_> = (0..batch)
            .map(|_| {
                let mut command = Command::new(&exe);
                match socket {
                    Some(socket) => command.env(support::pool::SOCKET_VAR, socket),
                    None => command.env_remove(support::pool::SOCKET_VAR),
                };
                command
                    .arg(CHILD)
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("start a child")
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().expect("a child's hand-out");
            assert!(out.status.success(), "a child failed: {}", out.status);
            let text = String::from_utf8_lossy(&out.stdout);
            let mut words = text.split_whitespace();
            let time: f64 = words.next().and_then(|w| w.parse().ok()).expect("a time");
            ms.push(time);
            if words.next() == Some("hit") {
                hits.push(time);
            }
        }
    }
    (ms, hits)
}

/// Hand-outs to `parallel` tasks of one process at a time, over its persistent connection (as
/// `cargo test` runs the suites, one thread per test).
async fn in_process(count: usize, parallel: usize) -> Vec<f64> {
    let mut ms = Vec::new();
    let mut left = count;
    while left > 0 {
        let batch = left.min(parallel);
        left -= batch;
        let tasks: Vec<_> = (0..batch)
            .map(|_| {
                tokio::spawn(async {
                    let handout = support::pool::pool().checkout(Instant::now()).await;
                    (handout.elapsed.as_secs_f64() * 1000.0, handout.name)
                })
            })
            .collect();
        let mut dbs = Vec::new();
        for task in tasks {
            let (t, name) = task.await.expect("a hand-out");
            ms.push(t);
            dbs.push(TestDb::adopt(name));
        }
        drop(dbs);
    }
    ms
}

/// Clone on demand against empty database + migrations, interleaved so that both see the same
/// machine.
async fn on_demand(count: usize) -> (Vec<f64>, Vec<f64>) {
    let ms = |start: Instant| start.elapsed().as_secs_f64() * 1000.0;
    let (mut clone, mut migrations) = (Vec::new(), Vec::new());
    for _ in 0..count {
        let start = Instant::now();
        let db = TestDb::cloned().await;
        let client = db.client().await;
        clone.push(ms(start));
        drop((client, db));

        let start = Instant::now();
        let db = TestDb::empty().await;
        let mut client = db.client().await;
        genesis_api::migrate::migrate(&mut client)
            .await
            .expect("run the migrations");
        migrations.push(ms(start));
        drop((client, db));
    }
    (clone, migrations)
}

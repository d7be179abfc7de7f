//! The cost of one isolated test database as the suites pay it, measured in-process: a clone
//! of the migrated template (the suites' way), against an empty database and the migration
//! runner (what each test would pay without the template). Both include making the database
//! and connecting to it; dropping it is not timed. `cargo xtask bench` runs this and reads the
//! one JSON line it prints: `{"template_clone": [ms...], "migrations": [ms...]}`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use support::TestDb;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let count: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().expect("usage: test_db_cost [COUNT]"),
        None => 15,
    };
    // The template is built (or found) once, untimed, as the first test of a run does.
    drop(TestDb::new().await);
    let ms = |start: Instant| start.elapsed().as_secs_f64() * 1000.0;
    let (mut clone, mut migrations) = (Vec::new(), Vec::new());
    // Interleaved, so that both sides see the same machine.
    for _ in 0..count {
        let start = Instant::now();
        let db = TestDb::new().await;
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
    println!(
        "{}",
        serde_json::json!({ "template_clone": clone, "migrations": migrations })
    );
}

//! Embeds the SQL files of `migrations/` in the binary, in version order, so that the API and
//! the test suites never read the source tree at run time.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest).join("migrations");
    println!("cargo::rerun-if-changed={}", dir.display());

    let mut migrations = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("read migrations/") {
        let path = entry.expect("read migrations/").path();
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("migration file names are UTF-8")
            .to_owned();
        let Some(stem) = file.strip_suffix(".sql") else {
            continue;
        };
        let (version, name) = stem
            .split_once('_')
            .unwrap_or_else(|| panic!("migrations/{file}: expected NNNN_name.sql"));
        let version: i64 = version.parse().unwrap_or_else(|_| {
            panic!("migrations/{file}: the version {version:?} is not a number")
        });
        migrations.push((version, name.to_owned(), path));
    }
    migrations.sort();
    for pair in migrations.windows(2) {
        assert!(
            pair[0].0 != pair[1].0,
            "migrations/: version {} is used twice",
            pair[0].0
        );
    }

    let mut out = String::from("&[\n");
    for (version, name, path) in &migrations {
        writeln!(
            out,
            "    Migration {{ version: {version}, name: {name:?}, sql: include_str!({:?}) }},",
            path.display().to_string()
        )
        .unwrap();
    }
    out.push_str("]\n");
    let target =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("migrations.rs");
    std::fs::write(target, out).expect("write migrations.rs");
}

//! Tidiness of the workspace's sources: every module says what it is in a `//!` line, and the
//! model's values (host ports, database names, the test database's service) are written as
//! literals only in the model and in tests, so that no other file can drift from it.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every Rust file of the workspace, as a path from the root.
fn rust_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    walk(&path, out);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    let root = root();
    let mut files = Vec::new();
    for top in ["xtask", "crates"] {
        walk(&root.join(top), &mut files);
    }
    files.sort();
    files
        .into_iter()
        .map(|p| p.strip_prefix(&root).unwrap().to_path_buf())
        .collect()
}

#[test]
fn every_module_has_a_doc_line() {
    let files = rust_files();
    assert!(files.len() > 20, "the walk found too few files: {files:?}");
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(root().join(f)).unwrap();
            !text.lines().any(|l| l.starts_with("//!"))
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a `//!` line: {missing:?}"
    );
}

/// The literals that belong to the model alone. Two service names are left out because other
/// things rightly share them: `postgres` (the server program, the URL scheme) and `genesis-api`
/// (the application's binary and crate).
fn model_literals() -> Vec<String> {
    let mut literals = Vec::new();
    for db in [genesis_model::TEST_DB, genesis_model::DEV_DB] {
        literals.push(db.compose().unwrap().host_address.port.to_string());
        literals.push(format!("\"{}\"", db.name));
    }
    literals.push(format!("\"{}\"", genesis_model::TEST_DB_SERVICE.service));
    literals.push(genesis_model::REDIS.host_address.port.to_string());
    literals
}

/// The lines of `text` that are code outside tests: comments (doc comments too) and
/// `#[cfg(test)]` modules (which this workspace keeps at the end of a file) are left out.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .filter(|(_, l)| {
            let t = l.trim_start();
            !t.starts_with("//")
        })
}

fn check(path: &str, text: &str) -> Vec<String> {
    let literals = model_literals();
    let mut found = Vec::new();
    for (idx, line) in code_lines(text) {
        for literal in &literals {
            if line.contains(literal.as_str()) {
                found.push(format!("{path}:{}: {literal}", idx + 1));
            }
        }
    }
    found
}

#[test]
fn the_checker_sees_a_repeated_model_value() {
    assert_eq!(
        check("x.rs", "/// on localhost:5433\nconst P: u16 = 5433;\n"),
        ["x.rs:2: 5433"]
    );
    assert_eq!(
        check(
            "x.rs",
            "let s = \"test-db\";\n#[cfg(test)]\nmod tests { const P: u16 = 5435; }\n"
        ),
        ["x.rs:1: \"test-db\""]
    );
    assert!(check("x.rs", "// a comment on 6380\n").is_empty());
}

#[test]
fn model_values_are_literals_only_in_the_model_and_in_tests() {
    let mut found = Vec::new();
    for file in rust_files() {
        let path = file.display().to_string();
        let in_tests = file.components().any(|c| c.as_os_str() == "tests")
            || path.ends_with("/tests.rs")
            || path.contains("/examples/");
        if in_tests || path.starts_with("crates/genesis-model/") {
            continue;
        }
        let text = std::fs::read_to_string(root().join(&file)).unwrap();
        found.extend(check(&path, &text));
    }
    assert!(
        found.is_empty(),
        "model values repeated outside the model (read them from genesis_model):\n{}",
        found.join("\n")
    );
}

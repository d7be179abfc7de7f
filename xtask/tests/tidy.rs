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

/// The xtask's own modules outside its tests, as `(path, text)`.
fn xtask_sources() -> Vec<(String, String)> {
    rust_files()
        .into_iter()
        .map(|f| f.display().to_string())
        .filter(|p| p.starts_with("xtask/src/"))
        .map(|p| {
            let text = std::fs::read_to_string(root().join(&p)).unwrap();
            (p, text)
        })
        .collect()
}

/// The code of `text` outside comments and tests, as one string.
fn code_text(text: &str) -> String {
    code_lines(text)
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where `code` starts a child process on `docker` (compose v1 and v2 included): the first
/// string literal of every `cmd!(` names the program. A compose command built through
/// `Compose::cmd` (`.cmd(sh, …)`) counts too.
fn docker_calls(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in code.match_indices("cmd!(") {
        let rest = &code[at..];
        let Some(quote) = rest.find('"') else {
            continue;
        };
        let literal: String = rest[quote + 1..]
            .chars()
            .take_while(|c| *c != '"')
            .collect();
        let program = literal.split_whitespace().next().unwrap_or_default();
        if program == "docker" || program == "docker-compose" {
            found.push(format!("cmd!(… \"{literal}\")"));
        }
    }
    for (at, _) in code.match_indices(".cmd(sh") {
        found.push(code[at..].lines().next().unwrap_or_default().to_owned());
    }
    found
}

#[test]
fn the_checker_sees_a_docker_call() {
    assert_eq!(
        docker_calls("let x = cmd!(sh, \"docker volume rm {v}\").run();"),
        ["cmd!(… \"docker volume rm {v}\")"]
    );
    assert_eq!(
        docker_calls("cmd!(\n    sh,\n    \"docker-compose version\"\n)").len(),
        1
    );
    assert_eq!(docker_calls("compose.cmd(sh, stack).arg(\"ps\")").len(), 1);
    assert!(docker_calls("cmd!(sh, \"psql {url}\"); let m = \"docker volume create\";").is_empty());
}

/// ARCHITECTURE.md: the service layer (`xtask/src/services/`, the images' build among it) is
/// the one place that talks to Docker and Compose; commands are glue over it.
#[test]
fn docker_is_called_only_from_the_service_layer() {
    let mut found = Vec::new();
    for (path, text) in xtask_sources() {
        if path.starts_with("xtask/src/services/") {
            continue;
        }
        for call in docker_calls(&code_text(&text)) {
            found.push(format!("{path}: {call}"));
        }
    }
    assert!(
        found.is_empty(),
        "docker or compose called outside xtask/src/services/ (add a function to the service \
         layer and call that):\n{}",
        found.join("\n")
    );
}

/// ARCHITECTURE.md: one interrupt flag, read by every wait loop. A function of the xtask that
/// sleeps is a wait loop, so it reads the flag (`interrupted()` or `check_interrupted()`).
#[test]
fn every_wait_loop_reads_the_interrupt_flag() {
    let mut found = Vec::new();
    for (path, text) in xtask_sources() {
        let code = code_text(&text);
        // Split at each function: the sleep and the flag must be in the same one.
        for (i, body) in code.split("fn ").enumerate().skip(1) {
            // The one exception: the bounded grace given to a child being stopped, which is
            // itself the answer to Ctrl-C (`tools/child.rs`).
            let stopping = path == "xtask/src/tools/child.rs" && body.starts_with("exited_within(");
            if body.contains("sleep(") && !body.contains("interrupted()") && !stopping {
                let name: String = body
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.push(format!("{path}: fn {name} (function {i})"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "wait loops that do not read the interrupt flag (Ctrl-C would not end them):\n{}",
        found.join("\n")
    );
}

/// `flags.rs` describes the command line and imports no command: commands depend on it, never
/// the other way round (rust-analyzer's `flags.rs` imports nothing).
#[test]
fn flags_imports_no_command() {
    let text = std::fs::read_to_string(root().join("xtask/src/flags.rs")).unwrap();
    let code = code_text(&text);
    let commands: Vec<String> = std::fs::read_dir(root().join("xtask/src/commands"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| Some(p.file_stem()?.to_string_lossy().into_owned()))
        .filter(|name| name != "mod")
        .collect();
    assert!(commands.len() > 5, "found too few commands: {commands:?}");
    let found: Vec<String> = commands
        .iter()
        .filter(|name| {
            code.contains(&format!("commands::{name}")) || code.contains(&format!("crate::{name}"))
        })
        .cloned()
        .collect();
    assert!(
        found.is_empty(),
        "flags.rs imports the command modules {found:?}: move what it needs into flags.rs"
    );
    assert!(
        !code.contains("crate::commands"),
        "flags.rs names crate::commands"
    );
}

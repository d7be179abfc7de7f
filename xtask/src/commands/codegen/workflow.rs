//! The GitHub Actions pipeline `codegen` writes (`.github/workflows/ci.yml`): the lint and unit
//! steps, the suites built once into a nextest archive, a matrix of shard jobs that run one
//! slice each in both modes with the public images, one job that merges the shards' parity
//! reports and fails as `parity merge` does, and `verify-migration`.
//!
//! Every command a job runs is kept as its words ([`Job::commands`]), so a test can hand each
//! `cargo xtask` line of the committed file to the xtask's own command line parser.

use serde_json::{Value, json};

use genesis_model::{self as model, GITHUB_CI};

use crate::commands::archive::{API_BINARY_PATH, ARCHIVE_PATH};

/// The workflow's path from the workspace root.
pub const PATH: &str = ".github/workflows/ci.yml";

/// The matrix variable of the shard jobs, as a GitHub expression.
const SHARD: &str = "${{ matrix.shard }}";

/// Where the merge job downloads the shards' reports.
const REPORTS: &str = "reports";

/// A `run:` step: a name and one command line, its words joined by spaces (none holds a space
/// or a quote once the matrix variable is in, so the line is the words).
fn run(name: &str, words: &[&str]) -> Value {
    debug_assert!(words.iter().all(|w| {
        let w = w.replace(SHARD, "1");
        !w.is_empty() && !w.contains([' ', '"', '\'', '\\', '$'])
    }));
    json!({"name": name, "run": words.join(" ")})
}

fn uses(action: &str, with: Value) -> Value {
    if with.as_object().is_some_and(|m| m.is_empty()) {
        json!({"uses": action})
    } else {
        json!({"uses": action, "with": with})
    }
}

/// The steps every job starts with: the checkout, the stable toolchain, cargo's cache.
fn setup() -> Vec<Value> {
    vec![
        uses("actions/checkout@v4", json!({})),
        run(
            "Rust toolchain",
            &[
                "rustup",
                "toolchain",
                "install",
                "stable",
                "--profile",
                "minimal",
                "--component",
                "rustfmt,clippy",
                "--no-self-update",
            ],
        ),
        uses("Swatinem/rust-cache@v2", json!({})),
    ]
}

fn nextest() -> Value {
    uses(
        "taiki-e/install-action@v2",
        json!({"tool": "cargo-nextest"}),
    )
}

/// The public application image, pulled before the xtask looks for it (an image its variable
/// names must be in the engine).
fn pull_api_image() -> Value {
    run(
        "Pull the application image",
        &["docker", "pull", GITHUB_CI.api_image],
    )
}

fn shard_numbers() -> Vec<u32> {
    (1..=GITHUB_CI.shards).collect()
}

/// The shard job's test command, with the matrix variable in it.
fn shard_command(shard: &str) -> Vec<String> {
    [
        "cargo",
        "xtask",
        "test",
        "--both-modes",
        "--archive",
        ARCHIVE_PATH,
        "--partition",
    ]
    .map(str::to_owned)
    .into_iter()
    .chain([format!("slice:{shard}/{}", GITHUB_CI.shards)])
    .collect()
}

fn merge_command() -> Vec<String> {
    ["cargo", "xtask", "parity", "merge"]
        .map(str::to_owned)
        .into_iter()
        .chain(
            shard_numbers()
                .into_iter()
                .map(|i| format!("{REPORTS}/shard-{i}/parity.json")),
        )
        .collect()
}

fn words(line: &[String]) -> Vec<&str> {
    line.iter().map(String::as_str).collect()
}

fn jobs() -> Value {
    let runner = GITHUB_CI.runner;
    let archive_files = [ARCHIVE_PATH, API_BINARY_PATH].join("\n");

    let mut checks = setup();
    checks.extend([
        // The unit tests compare the env-file reader with both Compose flavours and the URL
        // parser with libpq's (with `CI=true` a missing oracle fails them): the runner has
        // Compose v2, v1 and libpq come from Ubuntu.
        run("Package lists", &["sudo", "apt-get", "update", "-qq"]),
        run(
            "Compose v1 and libpq for the oracle tests",
            &[
                "sudo",
                "apt-get",
                "install",
                "-y",
                "--no-install-recommends",
                "docker-compose",
                "libpq5",
            ],
        ),
        run("Formatting", &["cargo", "fmt", "--all", "--", "--check"]),
        run(
            "Clippy",
            &[
                "cargo",
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        run(
            "Unit tests",
            &["cargo", "test", "--workspace", "--lib", "--bins"],
        ),
        run("Tidy", &["cargo", "test", "-p", "xtask", "--test", "tidy"]),
        run("Generated files", &["cargo", "xtask", "codegen", "--check"]),
    ]);

    let mut archive = setup();
    archive.extend([
        nextest(),
        run(
            "Build the suites once",
            &["cargo", "xtask", "test", "--build-archive-only"],
        ),
        uses(
            "actions/upload-artifact@v4",
            json!({"name": "suites", "path": archive_files, "if-no-files-found": "error", "retention-days": 1}),
        ),
    ]);

    let mut shard = setup();
    let test = shard_command(SHARD);
    shard.extend([
        nextest(),
        uses(
            "actions/download-artifact@v4",
            json!({"name": "suites", "path": "target"}),
        ),
        // Artifacts do not keep file modes.
        run(
            "Make the application binary executable",
            &["chmod", "+x", API_BINARY_PATH],
        ),
        pull_api_image(),
        run("Run one slice in both modes", &words(&test)),
        json!({
            "if": "${{ !cancelled() }}",
            "uses": "actions/upload-artifact@v4",
            "with": {
                "name": format!("shard-{SHARD}"),
                "path": "target/xtask/parity.json\ntarget/xtask/junit-*.xml\ntarget/xtask/*.log",
                "if-no-files-found": "warn",
            },
        }),
    ]);

    let mut merge = setup();
    merge.extend([
        uses(
            "actions/download-artifact@v4",
            json!({"pattern": "shard-*", "path": REPORTS}),
        ),
        run("Merge the shards' parity reports", &words(&merge_command())),
    ]);

    let mut verify = setup();
    verify.extend([
        nextest(),
        pull_api_image(),
        run(
            "The migration checklist",
            &["cargo", "xtask", "verify-migration"],
        ),
    ]);

    json!({
        "checks": {"name": "lint and unit tests", "runs-on": runner, "steps": checks},
        "archive": {"name": "build the suites", "runs-on": runner, "steps": archive},
        "shard": {
            "name": format!("suites, slice {SHARD} of {}", GITHUB_CI.shards),
            "needs": "archive",
            "runs-on": runner,
            "strategy": {"fail-fast": false, "matrix": {"shard": shard_numbers()}},
            "steps": shard,
        },
        "parity": {
            "name": "parity across the shards",
            "needs": "shard",
            // Also when a shard failed: the merge names what differs or did not run.
            "if": "${{ !cancelled() }}",
            "runs-on": runner,
            "steps": merge,
        },
        "verify-migration": {"name": "verify-migration", "runs-on": runner, "steps": verify},
    })
}

/// The workflow as committed: a pure function of the model.
pub fn render() -> String {
    let workflow = json!({
        "name": "ci",
        "on": {"push": {"branches": ["main"]}, "pull_request": {}, "workflow_dispatch": {}},
        "permissions": {"contents": "read"},
        "env": {
            "CARGO_TERM_COLOR": "always",
            // The application container runs the binaries built on the runner.
            model::API_IMAGE.var: GITHUB_CI.api_image,
        },
        "jobs": jobs(),
    });
    format!(
        "# Generated by `cargo xtask codegen` from the environment model (crates/genesis-model). Do not edit.\n{}",
        crate::tools::yaml::to_string(&workflow)
    )
}

/// Every `cargo xtask` command line of a workflow's `run:` steps, as words, with each matrix
/// value in turn in place of its variable: what the jobs will run.
#[cfg(test)]
pub fn xtask_commands(workflow: &Value) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for job in workflow["jobs"]
        .as_object()
        .into_iter()
        .flat_map(|j| j.values())
    {
        let shards: Vec<String> = job["strategy"]["matrix"]["shard"]
            .as_array()
            .map(|a| a.iter().map(|v| v.to_string()).collect())
            .unwrap_or_default();
        for step in job["steps"].as_array().into_iter().flatten() {
            let Some(line) = step["run"].as_str() else {
                continue;
            };
            let lines: Vec<String> = if line.contains(SHARD) {
                assert!(!shards.is_empty(), "{line} uses the matrix outside one");
                shards.iter().map(|s| line.replace(SHARD, s)).collect()
            } else {
                vec![line.to_owned()]
            };
            for line in lines {
                let words: Vec<String> = line.split(' ').map(str::to_owned).collect();
                if words.starts_with(&["cargo".to_owned(), "xtask".to_owned()]) {
                    out.push(words);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::flags;
    use crate::tools::util::project_root;

    /// The committed workflow, as GitHub reads it (YAML; read here through Compose v2's own
    /// reader would need a compose file, so through the JSON it was emitted from and back).
    fn committed() -> Value {
        let text = std::fs::read_to_string(project_root().join(PATH)).unwrap();
        yaml_to_json(&text)
    }

    /// YAML read by Python's PyYAML, the reader Compose v1 and most tools share.
    fn yaml_to_json(text: &str) -> Value {
        let sh = xshell::Shell::new().unwrap();
        let script = "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)";
        let out = xshell::cmd!(sh, "python3 -c {script}")
            .stdin(text)
            .quiet()
            .read()
            .expect("python3 with PyYAML reads the workflow");
        serde_json::from_str(&out).unwrap()
    }

    /// Every `cargo xtask` line of the committed workflow, matrix values substituted, is a
    /// command line the xtask accepts: no flag it names is missing or misspelt.
    #[test]
    fn every_xtask_command_of_the_workflow_parses() {
        let workflow = committed();
        let commands = xtask_commands(&workflow);
        let shards = commands
            .iter()
            .filter(|c| c.contains(&"--partition".to_owned()))
            .count();
        assert_eq!(shards, GITHUB_CI.shards as usize, "{commands:?}");
        assert!(
            commands
                .iter()
                .any(|c| c[2..4] == ["parity".to_owned(), "merge".to_owned()])
        );
        for words in &commands {
            let argv = std::iter::once("cargo xtask").chain(words[2..].iter().map(String::as_str));
            if let Err(err) = flags::Xtask::try_parse_from(argv) {
                panic!("`{}` does not parse: {err}", words.join(" "));
            }
        }
    }

    /// The shards cover every slice once, and the merge reads every shard's report.
    #[test]
    fn shards_and_merge_agree() {
        let commands = xtask_commands(&committed());
        let mut slices: Vec<&str> = commands
            .iter()
            .filter_map(|c| {
                let i = c.iter().position(|w| w == "--partition")?;
                Some(c[i + 1].as_str())
            })
            .collect();
        slices.sort_unstable();
        let expected: Vec<String> = shard_numbers()
            .iter()
            .map(|i| format!("slice:{i}/{}", GITHUB_CI.shards))
            .collect();
        assert_eq!(slices, expected);
        assert_eq!(
            merge_command()[4..].len(),
            GITHUB_CI.shards as usize,
            "one report per shard"
        );
        assert!(ARCHIVE_PATH.ends_with(crate::commands::archive::ARCHIVE));
    }

    /// The emitted YAML means what it was emitted from.
    #[test]
    fn the_file_reads_back_as_its_model() {
        let text = render();
        let body = text.split_once('\n').unwrap().1;
        let read = yaml_to_json(body);
        assert_eq!(read["on"]["push"]["branches"], json!(["main"]));
        assert_eq!(read["jobs"], jobs());
    }
}

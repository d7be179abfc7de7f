//! The env-file tests: unit cases, and the corpus compared with Docker Compose v2 and v1.

use std::collections::BTreeMap;
use std::process::Command;

use super::*;

fn ok(text: &str) -> Vec<(String, String)> {
    parse(Path::new(".env.x"), text)
        .unwrap()
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect()
}

fn err(text: &str) -> String {
    parse(Path::new(".env.x"), text).unwrap_err().to_string()
}

#[test]
fn reads_what_both_compose_flavours_read_alike() {
    let pairs = ok(
        "\u{feff}# c\n\nA=1\nexport B = two words \nC=\"x # y\"\nD='q'\nE=v # note\nF=\n\
         G='p@ss:w/rd%41$x#1 \"q\"'\nH=\"a\\\\b\\n\\\"\"\nI=${A}-${Z:-d}\nJ=a$-1\r\n",
    );
    let expected = [
        ("A", "1"),
        ("B", "two words"),
        ("C", "x # y"),
        ("D", "q"),
        ("E", "v"),
        ("F", ""),
        ("G", "p@ss:w/rd%41$x#1 \"q\""),
        ("H", "a\\b\n\""),
        ("I", "${A}-${Z:-d}"),
        ("J", "a$-1"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(pairs, expected);
}

#[test]
fn refuses_what_the_flavours_read_differently_naming_file_and_line() {
    assert_eq!(
        err("A=1\nnot a pair\n"),
        ".env.x:2: expected KEY=VALUE, the key made of letters, digits and underscores"
    );
    assert!(err("A=1\n\n1A=2").starts_with(".env.x:3: the key must be"));
    assert!(err("A=\"open").starts_with(".env.x:1: a double quote is not closed"));
    assert_eq!(err("A=1\nA=2"), ".env.x:2: A is already set on line 1");
    for line in [
        "P=pa$word",
        "P=pa$$word",
        "P=\"a\\$b\"",
        "P='${X}'",
        "P=${X-d}",
        "P=${X:?e}",
        "P=\"x\" junk",
        "P=a\t#c",
        "P='a\\\\b'",
        "P",
    ] {
        assert!(err(line).starts_with(".env.x:1: "), "{line}");
    }
}

/// Whitespace as Compose v1 (Python's `str.strip`, python-dotenv's `\s`) and v2 (Go's
/// `unicode.IsSpace`, compose-go's `isSpace`) both trim it; every line they read differently
/// refused with its line. The corpus checks the same classes against the real readers.
#[test]
fn whitespace_as_both_flavours_trim_it() {
    for (line, value) in [
        ("A=pw\u{a0}", "pw"),
        ("A=\u{a0}pw", "pw"),
        ("A=pw\u{3000}", "pw"),
        ("A=pw\u{2028}", "pw"),
        ("A=\u{b}v\u{c}", "v"),
        ("\u{c}\u{3000}A=v", "v"),
        ("A\u{a0}=\u{85}v", "v"),
        ("A=v\u{2028}w", "v\u{2028}w"),
        ("A=\"v\u{3000}\"", "v\u{3000}"),
        ("A=v\u{1c}w", "v\u{1c}w"),
        ("A=v\t #c", "v"),
        ("A=\"v\"\u{a0}", "v"),
        ("A=caf\u{e9} \u{1f600}", "caf\u{e9} \u{1f600}"),
    ] {
        assert_eq!(ok(line), [("A".to_owned(), value.to_owned())], "{line:?}");
    }
    for (text, why) in [
        (
            "A=\u{3000}pw",
            "whitespace U+3000 at the start of the value",
        ),
        ("A\u{3000}=v", "whitespace U+3000 before the ="),
        ("A=hello\rB=world", "a carriage return inside the line"),
        ("A=\"a\rb\"", "a carriage return inside the line"),
        ("# note\rA=v", "a carriage return inside the line"),
        ("A=v\u{85}w", "U+0085"),
        ("A=\"v\u{85}\"", "U+0085"),
        ("A=v\u{1c}", "U+001C..U+001F"),
        ("\u{1f}A=v", "U+001C..U+001F"),
        ("A=v\u{a0}#c", "whitespace U+00A0 before #"),
        ("A=v \t#c", "a tab before #"),
        ("export\u{b}A=v", "export followed by whitespace"),
        ("A=\"v\"\u{1c}", "text after the closing quote"),
    ] {
        let err = err(&format!("B=1\n{text}\n"));
        assert!(err.starts_with(".env.x:2: "), "{text:?}: {err}");
        assert!(err.contains(why), "{text:?}: {err}");
    }
}

#[test]
fn expands_references() {
    let lookup = |k: &str| match k {
        "P" => Some("pw".to_owned()),
        "E" => Some(String::new()),
        _ => None,
    };
    assert_eq!(
        expand("postgresql://u:${P}@h/db", lookup),
        Ok("postgresql://u:pw@h/db".to_owned())
    );
    assert_eq!(
        expand("${Q}-${R}", lookup),
        Err(vec!["Q".to_owned(), "R".to_owned()])
    );
    assert_eq!(expand("${Q:-d}${E:-e}", lookup), Ok("de".to_owned()));
    assert_eq!(expand("plain", lookup), Ok("plain".to_owned()));
}

#[test]
fn resolves_chains_in_order_and_refuses_what_the_flavours_resolve_differently() {
    let path = Path::new(".env");
    let entries = parse(path, "C=${B}\nA=1\nB=${A}\nD=${B}\nX=file\nY=${X}\n").unwrap();
    let process = |k: &str| (k == "X").then(|| "env".to_owned());
    let resolved = resolve(path, entries, &process, &[]);
    let get = |k: &str| {
        resolved
            .iter()
            .find(|r| r.key == k)
            .unwrap()
            .value
            .clone()
            .map_err(|e| e.to_string())
    };
    // A reference to a line below: Compose reads it as empty, we refuse it.
    assert!(
        get("C")
            .unwrap_err()
            .contains(".env:1: C refers to ${B}, which is set only below, on line 3")
    );
    assert_eq!(get("D"), Ok(Some("1".to_owned())));
    assert!(
        get("Y")
            .unwrap_err()
            .contains("set both in the environment and on line 5")
    );
}

// ---- the Compose oracle -------------------------------------------------------------------

const ORACLE_ENV: (&str, &str) = ("GENESIS_ORACLE_ENV", "from-env");

/// A Compose flavour that can run `config`, or `None` outside CI when it is not installed.
fn flavour(name: &str) -> Option<Command> {
    let mut cmd = match name {
        "v2" => {
            let mut cmd = Command::new("docker");
            if let Ok(dir) = std::env::var("GENESIS_COMPOSE_V2_DOCKER_CONFIG") {
                cmd.env("DOCKER_CONFIG", dir);
            }
            cmd.arg("compose");
            cmd
        }
        _ => Command::new("docker-compose"),
    };
    let mut probe = match name {
        "v2" => {
            let mut p = Command::new("docker");
            if let Ok(dir) = std::env::var("GENESIS_COMPOSE_V2_DOCKER_CONFIG") {
                p.env("DOCKER_CONFIG", dir);
            }
            p.args(["compose", "version", "--short"]);
            p
        }
        _ => {
            let mut p = Command::new("docker-compose");
            p.args(["version", "--short"]);
            p
        }
    };
    let found = probe
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let expected_major = if name == "v2" { "2." } else { "1." };
    match found {
        Some(version) if version.trim_start_matches('v').starts_with(expected_major) => {
            cmd.env(ORACLE_ENV.0, ORACLE_ENV.1)
                .env_remove("GENESIS_ORACLE_UNSET");
            Some(cmd)
        }
        other => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "Compose {name} is needed for the env-file oracle in CI (found {other:?}); \
                 `.ci/run` installs both"
            );
            eprintln!("note: the Compose {name} oracle is skipped outside CI: not installed");
            None
        }
    }
}

/// What a Compose flavour makes of `env_text` as a project's `.env`: every key's value, or
/// Compose's error.
fn compose_reads(
    mut compose: Command,
    name: &str,
    env_text: &str,
    keys: &[String],
) -> Result<BTreeMap<String, String>, String> {
    let dir = std::env::temp_dir().join(format!(
        "genesis-compose-oracle-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".env"), env_text).unwrap();
    let mut file = String::from("services:\n  oracle:\n    image: scratch\n    environment:\n");
    for key in keys {
        file.push_str(&format!("      {key}: \"${{{key}}}\"\n"));
    }
    std::fs::write(dir.join("compose.yml"), file).unwrap();
    compose
        .current_dir(&dir)
        .args(["-p", "genesis-oracle", "config"]);
    if name == "v2" {
        compose.args(["--format", "json"]);
    }
    let out = compose.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() || stderr.contains("could not parse") {
        return Err(stderr);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value: serde_json::Value = if name == "v2" {
        serde_json::from_str(&stdout).unwrap()
    } else {
        v1_yaml_to_json(&stdout)
    };
    let env: BTreeMap<String, Option<String>> =
        serde_json::from_value(value["services"]["oracle"]["environment"].clone()).unwrap();
    // Both print a `$` of a value as `$$`, so that the output could be read as a compose file.
    Ok(env
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default().replace("$$", "$")))
        .collect())
}

/// v1's YAML (it has no JSON output) as JSON, read by v1's own YAML library: PyYAML, under
/// the Python of the `docker-compose` script's `#!` line.
fn v1_yaml_to_json(yaml: &str) -> serde_json::Value {
    use std::io::{Read, Write};

    let path = std::env::var_os("PATH").unwrap_or_default();
    let script = std::env::split_paths(&path)
        .map(|dir| dir.join("docker-compose"))
        .find(|file| file.is_file())
        .expect("docker-compose on the PATH");
    let mut head = String::new();
    let _ = std::fs::File::open(&script)
        .unwrap()
        .take(512)
        .read_to_string(&mut head);
    let shebang = head
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("#!"))
        .unwrap_or_else(|| panic!("{} is not a Python script", script.display()));
    let mut words = shebang.split_whitespace();
    let mut python = Command::new(words.next().expect("an interpreter"));
    python
        .args(words)
        .args([
            "-c",
            "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = python.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "PyYAML could not read {yaml}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn compose_reads_every_accepted_line_of_the_corpus_as_we_do() {
    let corpus = include_str!("corpus.env");
    let path = Path::new("corpus.env");
    let lines: Vec<&str> = corpus
        .split_inclusive('\n')
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert!(lines.len() >= 100, "the corpus shrank");
    let accepted: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| parse(path, l).is_ok())
        .collect();
    let batch: String = accepted.concat();
    let entries = parse(path, &batch).expect("the accepted lines read together");
    let process = |k: &str| (k == ORACLE_ENV.0).then(|| ORACLE_ENV.1.to_owned());
    let ours: BTreeMap<String, Option<String>> = resolve(path, entries, &process, &[])
        .into_iter()
        .map(|r| (r.key, r.value.ok().flatten()))
        .collect();
    let keys: Vec<String> = ours.keys().cloned().collect();

    let mut disagreements = Vec::new();
    let mut flavours = 0;
    for name in ["v2", "v1"] {
        let Some(compose) = flavour(name) else {
            continue;
        };
        flavours += 1;
        match compose_reads(compose, name, &batch, &keys) {
            Err(err) => {
                disagreements.push(format!("Compose {name} refuses the batch: {err}"));
                for (i, line) in batch.split_inclusive('\n').enumerate() {
                    disagreements.push(format!("  batch line {}: {line:?}", i + 1));
                }
                // Name the lines it refuses on their own.
                for line in &accepted {
                    let key = line.split('=').next().unwrap_or("").trim();
                    let key = key.trim_start_matches("export").trim().to_owned();
                    let alone = flavour(name).unwrap();
                    if compose_reads(alone, name, line, &[key]).is_err() {
                        disagreements.push(format!("Compose {name} refuses {line:?}"));
                    }
                }
            }
            Ok(theirs) => {
                for (key, value) in &ours {
                    // A value we refuse to resolve (a reference to an unset variable) needs no
                    // agreement: refusing is never reading differently.
                    let Some(value) = value else { continue };
                    if theirs.get(key) != Some(value) {
                        disagreements.push(format!(
                            "{key}: Compose {name} reads {:?}, we read {value:?}",
                            theirs.get(key)
                        ));
                    }
                }
            }
        }
    }
    let resolved = ours.values().filter(|v| v.is_some()).count();
    eprintln!(
        "Compose oracle ({flavours} flavours): {} lines, {} accepted ({resolved} resolved), \
         {} refused, {} disagreements",
        lines.len(),
        accepted.len(),
        lines.len() - accepted.len(),
        disagreements.len()
    );
    assert!(
        disagreements.is_empty(),
        "Compose disagrees:\n{}",
        disagreements.join("\n")
    );
}

//! libpq's own reading of connection strings, for tests: `url/libpq_oracle.c` compiled against
//! libpq.so.5, fed hex-encoded strings, answering what `PQconninfoParse` makes of each. The
//! one build of the oracle, used by this crate's URL tests and by the xtask's (feature
//! `libpq-oracle`, never in a release build).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// What libpq's `PQconninfoParse` made of a string: its options (values decoded), or its
/// error.
pub type Reading = Result<BTreeMap<String, String>, String>;

/// The oracle program, built in a folder of its own that is removed when it is dropped.
#[derive(Debug)]
pub struct Oracle {
    dir: PathBuf,
    bin: PathBuf,
}

impl Oracle {
    /// The oracle compiled for this run; `None` (outside CI) when no C compiler or no
    /// libpq.so.5 is at hand. In CI (`CI=true`) a missing oracle panics: the test fails.
    pub fn build() -> Option<Oracle> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "genesis-libpq-oracle-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("libpq-oracle");
        let source = concat!(env!("CARGO_MANIFEST_DIR"), "/src/url/libpq_oracle.c");
        let built = Command::new("cc")
            .arg("-o")
            .arg(&bin)
            .arg(source)
            .arg("-l:libpq.so.5")
            .output();
        match built {
            Ok(out) if out.status.success() => Some(Oracle { dir, bin }),
            other => {
                let _ = std::fs::remove_dir_all(&dir);
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
                    Err(err) => err.to_string(),
                };
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "the libpq oracle cannot be built (install gcc and libpq5): {why}"
                );
                eprintln!("note: libpq oracle skipped outside CI: {why}");
                None
            }
        }
    }

    /// libpq's reading of each of `inputs`, in order.
    pub fn read(&self, inputs: &[String]) -> Vec<Reading> {
        let mut child = Command::new(&self.bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for input in inputs {
            writeln!(stdin, "{}", hex(input)).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let readings: Vec<Reading> = text
            .lines()
            .map(|line| match line.strip_prefix("ERR ") {
                Some(err) => Err(unhex(err).trim().to_owned()),
                None => Ok(line
                    .trim_start_matches("OK")
                    .split_whitespace()
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        (k.to_owned(), unhex(v))
                    })
                    .collect()),
            })
            .collect();
        assert_eq!(
            readings.len(),
            inputs.len(),
            "the oracle answered every line"
        );
        readings
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> String {
    let bytes: Vec<u8> = (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

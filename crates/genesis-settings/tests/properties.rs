//! Property tests of everything that reads outside input: any text in gives a value or an
//! error, never a panic; a canary password never appears in what is printed or returned as
//! an error; a URL read, rendered and read again is the same URL.
//!
//! A test binary of its own: every password these tests parse is registered for redaction in
//! this process, which must not be the process of the other tests.

use std::path::Path;

use proptest::prelude::*;

use genesis_settings::{
    LIBPQ_KEYWORDS, Scheme, Secret, ServiceUrl, parse_env_file, read_env_file, redact,
};

/// The password every property hides. Registered as a secret, as the settings register every
/// password they read.
const CANARY: &str = "Canary-7f3a9e";

fn canary() {
    let _ = Secret::new(CANARY);
}

/// Text of any Unicode, weighted towards what URLs, env files and redaction treat specially.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9:/@?&=%#$'\"\\\\{}\\[\\], \t\r\n\u{85}\u{a0}\u{3000}\u{1c}é😀-]{0,40}",
        "(password|passwd|secret|PASSWORD|://|%[0-9A-Fa-f]{2}|é|\u{a0}|[=:@ '\"\\\\])*",
    ]
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn redaction_is_total_and_masks_a_known_secret_anywhere(before in text(), after in text()) {
        canary();
        let _ = redact(&before);
        let masked = redact(&format!("{before}{CANARY}{after}"));
        prop_assert!(!masked.contains(CANARY), "{masked:?}");
    }

    #[test]
    fn the_url_parser_is_total(raw in text(), tail in text()) {
        for input in [raw.clone(), format!("postgresql://{raw}"), format!("redis://{raw}"),
                      format!("postgresql://u:p@h/db?{raw}={tail}")] {
            for scheme in [Scheme::Postgres, Scheme::Redis] {
                if let Ok(url) = ServiceUrl::parse(&input, scheme) {
                    let _ = (url.to_string(), url.describe(), url.check_app_support());
                }
            }
        }
    }

    /// The canary, wherever a credential may sit (the password, `password=`, a `-c
    /// x.password=` option), raw or percent-encoded, is in no output and no error.
    #[test]
    fn a_canary_password_is_never_shown(
        before in text(), after in text(), host in "[a-z]{1,8}", db in text()
    ) {
        canary();
        let secret = format!("{before}{CANARY}{after}");
        let db = if db.is_empty() { "d".to_owned() } else { db };
        let inputs = [
            format!("postgresql://u:{}@{host}/{}", encode(&secret), encode(&db)),
            format!("postgresql://u:{secret}@{host}/{db}"),
            format!("postgresql://u@{host}/{}?password={}", encode(&db), encode(&secret)),
            format!("postgresql://u@{host}/d?options=-c%20my.password%3D{}", encode(&secret)),
            format!("redis://:{}@{host}:6379/0", encode(&secret)),
        ];
        for input in &inputs {
            let scheme = if input.starts_with("redis") { Scheme::Redis } else { Scheme::Postgres };
            match ServiceUrl::parse(input, scheme) {
                Ok(url) => {
                    for shown in [url.to_string(), url.describe(), format!("{url:?}")] {
                        prop_assert!(!shown.contains(CANARY), "{input:?} shown as {shown:?}");
                    }
                    if let Err(problem) = url.check_app_support() {
                        let shown = format!("{problem:?}");
                        prop_assert!(!shown.contains(CANARY), "{}", shown);
                    }
                }
                Err(problem) => {
                    let shown = format!("{problem:?}");
                    prop_assert!(!shown.contains(CANARY), "{}", shown);
                }
            }
        }
    }

    /// What the parser accepts, rendered canonically, reads back as the same URL (the port
    /// of every host written out where the original left libpq's default), and the rendering
    /// is then a fixed point.
    #[test]
    fn a_url_read_rendered_and_read_again_is_the_same(
        user in text(), password in text(), db in text(), value in text(),
        hosts in proptest::collection::vec("[a-z][a-z0-9.-]{0,8}|127\\.0\\.0\\.[0-9]|\\[::1\\]", 1..3),
        port in proptest::option::of(1u16..),
        key in proptest::sample::select(LIBPQ_KEYWORDS),
        raw_parts in any::<bool>(),
    ) {
        let part = |s: &str| if raw_parts { s.to_owned() } else { encode(s) };
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let hosts: Vec<String> = hosts.iter().map(|h| format!("{h}{port}")).collect();
        let raw = format!(
            "postgresql://{}:{}@{}/{}?{key}={}",
            part(&user), part(&password), hosts.join(","), part(&db), part(&value)
        );
        if let Ok(url) = ServiceUrl::parse(&raw, Scheme::Postgres) {
            let again = ServiceUrl::parse(&url.expose(), Scheme::Postgres);
            let Ok(again) = again else {
                return Err(TestCaseError::fail(format!("{raw:?} rendered {:?}: {again:?}", url.expose())));
            };
            prop_assert_eq!(again.endpoints(5432), url.endpoints(5432));
            prop_assert_eq!(
                (again.user(), again.password(), again.database(), again.params()),
                (url.user(), url.password(), url.database(), url.params())
            );
            prop_assert_eq!(&again.expose(), &url.expose());
            let third = ServiceUrl::parse(&again.expose(), Scheme::Postgres);
            prop_assert_eq!(third.as_ref(), Ok(&again));
        }
    }

    #[test]
    fn the_env_file_reader_is_total(text in text(), lines in proptest::collection::vec(text(), 0..6)) {
        let _ = parse_env_file(Path::new(".env"), &text);
        let _ = parse_env_file(Path::new(".env"), &lines.join("\n"));
    }

    /// A secret's value, whatever surrounds it on its line, is in no error of the reader.
    #[test]
    fn an_env_file_error_never_quotes_a_secret(
        before in text(), after in text(), quote in proptest::sample::select(&["", "'", "\""][..])
    ) {
        canary();
        let value = format!("{before}{CANARY}{after}");
        let file = format!("A=1\nPOSTGRES_PASSWORD={quote}{value}{quote}\nB=2\n");
        if let Err(err) = parse_env_file(Path::new("jürgen/.env"), &file) {
            let shown = redact(&err.to_string());
            prop_assert!(!err.to_string().contains(CANARY), "{err}");
            prop_assert!(!shown.contains(CANARY));
        }
    }
}

/// The parser's lines are cut at `\n` only; the reader refuses a file that is not UTF-8 by
/// its name instead of reading it lossily.
#[test]
fn a_file_that_is_not_utf8_is_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("genesis-envbytes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(".env");
    std::fs::write(&path, b"A=caf\xe9\n").unwrap();
    let err = read_env_file(&path).unwrap_err().to_string();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        err.starts_with(&format!("cannot read {}", path.display())),
        "{err}"
    );
}

/// A panic (a bug) under the panic hook prints its message redacted: not a password found by
/// pattern, nor one the process knows, whatever characters surround them.
#[test]
fn a_panic_prints_no_secret() {
    const CHILD: &str = "GENESIS_PANIC_HOOK_CHILD";
    if std::env::var_os(CHILD).is_some() {
        genesis_settings::install_panic_hook("the child");
        let _ = Secret::new("Canary-panic-42");
        panic!("connecting to postgresql://u:Canary-panic-42@h/dä with password=hunter2 (jürgen)");
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_panic_prints_no_secret", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("error: the child hit a bug at "),
        "{stderr}"
    );
    assert!(stderr.contains("postgresql://u:***@h/dä"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(!stderr.contains("Canary-panic-42"), "{stderr}");
}

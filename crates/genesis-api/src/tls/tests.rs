//! libpq's reading of the TLS parameters: modes, files, defaults, and what is refused.

use std::path::PathBuf;

use super::*;

/// A folder with a `root.crt`, a client pair and a `.postgresql` home, unique to the test and
/// removed when dropped.
struct Fixture(PathBuf);

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::ops::Deref for Fixture {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

fn fixture(name: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("genesis-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("home/.postgresql")).unwrap();
    for file in ["ca.pem", "client.crt", "home/.postgresql/root.crt"] {
        std::fs::write(dir.join(file), "not read by split_url").unwrap();
    }
    Fixture(dir)
}

fn split(url: &str, env: &[(&str, &str)]) -> Result<(PgTls, String), String> {
    let lookup = |var: &str| {
        env.iter()
            .find(|(k, _)| *k == var)
            .map(|(_, v)| v.to_string())
    };
    let url = ServiceUrl::parse(url, genesis_settings::Scheme::Postgres)
        .map_err(|problem| format!("{problem:?}"))?;
    split_url(&url, &lookup).map(|(tls, rest)| (tls, rest.expose()))
}

fn check(url: &str, env: &[(&str, &str)], mode: SslMode, roots: Option<Roots>, rest: &str) {
    let (tls, stripped) = split(url, env).unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(
        (tls.mode, tls.roots, stripped.as_str()),
        (mode, roots, rest),
        "{url}"
    );
}

fn refused(url: &str, env: &[(&str, &str)], expected: &str) {
    let err = split(url, env).expect_err(url);
    assert!(err.contains(expected), "{url}: {err}");
}

#[test]
fn modes_and_libpq_defaults() {
    let dir = fixture("modes");
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().unwrap();
    let base = "postgresql://u:p@db.example.com:5432/app";
    check(base, &[], SslMode::Prefer, None, base);
    check(
        &format!("{base}?sslmode=disable"),
        &[],
        SslMode::Disable,
        None,
        base,
    );
    check(
        &format!("{base}?sslmode=allow"),
        &[],
        SslMode::Allow,
        None,
        base,
    );
    check(
        &format!("{base}?application_name=x&sslmode=require&connect_timeout=3"),
        &[],
        SslMode::Require,
        None,
        &format!("{base}?application_name=x&connect_timeout=3"),
    );
    let file = Some(Roots::File(PathBuf::from(ca)));
    check(
        &format!("{base}?sslmode=verify-full&sslrootcert={ca}"),
        &[],
        SslMode::VerifyFull,
        file.clone(),
        base,
    );
    // Percent-encoded paths are decoded as libpq does.
    check(
        &format!(
            "{base}?sslmode=verify-ca&sslrootcert={}",
            ca.replace('/', "%2F")
        ),
        &[],
        SslMode::VerifyCa,
        file.clone(),
        base,
    );
    // The environment applies where the URL is silent; the URL wins.
    check(
        base,
        &[("PGSSLMODE", "require")],
        SslMode::Require,
        None,
        base,
    );
    check(
        &format!("{base}?sslmode=disable"),
        &[("PGSSLMODE", "verify-full")],
        SslMode::Disable,
        None,
        base,
    );
    check(
        base,
        &[("PGSSLMODE", "verify-ca"), ("PGSSLROOTCERT", ca)],
        SslMode::VerifyCa,
        file,
        base,
    );
    // `~/.postgresql/root.crt` makes every TLS mode verify the chain, as in libpq.
    let home = dir.join("home");
    let default_root = Some(Roots::File(home.join(".postgresql/root.crt")));
    let home = home.to_str().unwrap();
    check(
        &format!("{base}?sslmode=require"),
        &[("HOME", home)],
        SslMode::Require,
        default_root.clone(),
        base,
    );
    check(base, &[("HOME", home)], SslMode::Prefer, default_root, base);
    check(
        &format!("{base}?sslmode=disable"),
        &[("HOME", home)],
        SslMode::Disable,
        None,
        base,
    );
    check(
        &format!("{base}?sslmode=verify-full&sslrootcert=system"),
        &[],
        SslMode::VerifyFull,
        Some(Roots::System),
        base,
    );
}

#[test]
fn refusals() {
    let base = "postgresql://u:p@db.example.com:5432/app";
    refused(&format!("{base}?sslmode=Require"), &[], "is not one of");
    refused(&format!("{base}?sslmode=verify_full"), &[], "is not one of");
    refused(base, &[("PGSSLMODE", "strict")], "is not one of");
    refused(
        &format!("{base}?sslmode=verify-full"),
        &[],
        "needs the server's root certificate",
    );
    refused(
        &format!("{base}?sslmode=verify-ca"),
        &[("HOME", "/nonexistent")],
        "sslrootcert",
    );
    refused(
        &format!("{base}?sslmode=require&sslrootcert=/nonexistent/ca.pem"),
        &[],
        "does not exist",
    );
    refused(
        &format!("{base}?sslmode=require&sslrootcert=system"),
        &[],
        "verify-full",
    );
    // libpq 16 and later refuse `system` with every weaker mode, `disable` included, from the
    // URL or from PGSSLROOTCERT.
    refused(
        &format!("{base}?sslmode=disable&sslrootcert=system"),
        &[],
        "needs sslmode=verify-full, not disable",
    );
    refused(
        &format!("{base}?sslmode=disable"),
        &[("PGSSLROOTCERT", "system")],
        "needs sslmode=verify-full, not disable",
    );
    refused(base, &[("PGSSLROOTCERT", "system")], "not prefer");
    refused(
        &format!("{base}?sslmode=require&sslcert=/nonexistent.crt"),
        &[],
        "does not exist",
    );
    // Malformed parameters are the settings' reader's to refuse.
    refused(&format!("{base}?sslrootcert=%zz"), &[], "Malformed");
    refused(&format!("{base}?sslmode"), &[], "Malformed");
    let dir = fixture("refusals");
    let cert = dir.join("client.crt");
    refused(
        &format!("{base}?sslmode=require&sslcert={}", cert.display()),
        &[],
        "sslkey is not",
    );
}

#[test]
fn plaintext_over_network_spares_unix_sockets() {
    let check = |url: &str, expected: bool| {
        let (tls, rest) = split(url, &[]).unwrap();
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(tls.plaintext_over_network(&config), expected, "{url}");
    };
    check("postgresql://u@db.example.com/app", true);
    check("postgresql://u@db.example.com/app?sslmode=allow", true);
    check("postgresql://u@db.example.com/app?sslmode=require", false);
    check(
        "postgresql://u@%2Fvar%2Frun%2Fpostgresql/app?sslmode=disable",
        false,
    );
    check("postgresql://u@localhost/app?sslmode=disable", true);
}

#[test]
fn key_files_follow_libpq_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = fixture("keys");
    let key = dir.join("client.key");
    std::fs::write(&key, "x").unwrap();
    let uid_is_root = std::fs::metadata(&key)
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap();
    for (mode, fine_for_user, fine_for_root) in [
        (0o600, true, true),
        (0o400, true, true),
        (0o640, false, true),
        (0o660, false, false),
        (0o644, false, false),
    ] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let expected = if uid_is_root {
            fine_for_root
        } else {
            fine_for_user
        };
        assert_eq!(
            check_key_permissions(&key).is_ok(),
            expected,
            "mode {mode:o}"
        );
    }
}

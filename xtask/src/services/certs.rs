//! The test database's certificates: a CA and a server certificate for `localhost`,
//! `127.0.0.1` and the in-network name, made with `openssl` under `target/xtask/tls` when they
//! are missing. The CA's key stays there (git-ignored, disposable); nothing is committed.

use std::path::PathBuf;

use anyhow::{Context, Result};
use genesis_model as model;
use xshell::{Shell, cmd};

use crate::tools::util::{project_root, usage};

/// How long the certificates are valid: long enough never to expire under a checkout.
const DAYS: &str = "3650";

/// The folder holding `ca.crt`, `server.crt` and `server.key`, made if needed.
pub fn ensure_test_db_certs(sh: &Shell) -> Result<PathBuf> {
    let dir = project_root().join(model::TEST_DB_TLS.dir);
    make(sh, &dir)?;
    Ok(dir)
}

/// Makes the set in `dir` unless it is complete there.
fn make(sh: &Shell, dir: &std::path::Path) -> Result<()> {
    if ["ca.crt", "server.crt", "server.key"]
        .iter()
        .all(|f| dir.join(f).is_file())
    {
        return Ok(());
    }
    if cmd!(sh, "openssl version")
        .quiet()
        .ignore_stdout()
        .run()
        .is_err()
    {
        return Err(usage(
            "openssl is needed to make the test database's certificates: run `apt-get install openssl`",
        ));
    }
    // Made beside the final folder and renamed into place, so that a run never sees half a set.
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    let _dir = sh.push_dir(&tmp);
    let db = model::TEST_DB_SERVICE;
    let (host, network) = (db.host_address.host, db.network_address.host);
    let sans = format!("subjectAltName=DNS:{host},IP:127.0.0.1,DNS:{network}");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    cmd!(sh, "openssl req -x509 {ec...} -days {DAYS} -subj /CN=genesis-test-ca -keyout ca.key -out ca.crt")
        .quiet()
        .ignore_stderr()
        .run()
        .context("make the test CA")?;
    cmd!(
        sh,
        "openssl req {ec...} -subj /CN={host} -addext {sans} -keyout server.key -out server.csr"
    )
    .quiet()
    .ignore_stderr()
    .run()
    .context("make the test database's key")?;
    cmd!(sh, "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days {DAYS} -copy_extensions copy -out server.crt")
        .quiet()
        .ignore_stderr()
        .run()
        .context("sign the test database's certificate")?;
    drop(_dir);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir).with_context(|| format!("move {} into place", tmp.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_certificate_is_signed_by_the_ca_for_every_name() {
        let sh = Shell::new().unwrap();
        let dir = std::env::temp_dir().join(format!("genesis-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        make(&sh, &dir).unwrap();
        let (ca, server) = (dir.join("ca.crt"), dir.join("server.crt"));
        let verified = cmd!(sh, "openssl verify -CAfile {ca} {server}")
            .read()
            .unwrap();
        assert!(verified.ends_with(": OK"), "{verified}");
        let sans = cmd!(sh, "openssl x509 -noout -ext subjectAltName -in {server}")
            .read()
            .unwrap();
        for name in ["DNS:localhost", "IP Address:127.0.0.1", "DNS:test-db"] {
            assert!(sans.contains(name), "{name} missing from {sans}");
        }
        // A complete set is kept as it is.
        let before = std::fs::read(&ca).unwrap();
        make(&sh, &dir).unwrap();
        assert_eq!(std::fs::read(&ca).unwrap(), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

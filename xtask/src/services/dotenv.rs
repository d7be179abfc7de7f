//! The git-ignored `.env` beside the compose file, which Compose v1 and v2 read by themselves:
//! the dev password (`devpass`), and a block the xtask keeps so that the seed's compose
//! commands typed in the checkout (`docker-compose ps`, `logs test-db`, `exec test-db psql`,
//! `up -d test-db redis`, `down`) reach this checkout's default stack as the xtask runs it: its
//! compose project, its labels, the images it uses, the test database's certificate folder.
//!
//! The compose file requires the password and the certificate folder (`${VAR:?...}`), so a
//! compose command typed before the xtask has set them up fails at once with the command that
//! does, rather than starting a container that exits behind a success.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};
use genesis_model::{self as model, IMAGES};

use crate::services::Stack;
use crate::tools::devpass::{self, PasswordSource};
use crate::tools::util::project_root;

const BEGIN: &str = "# >>> kept by `cargo xtask`: the seed's compose commands reach this checkout's default stack. Rewritten by the xtask; your own lines go outside this block.";
const END: &str = "# <<< kept by `cargo xtask`";

/// The variable compose mounts the test database's certificate folder from, as a path from
/// the workspace root.
pub fn tls_dir_value() -> String {
    format!("./{}", model::TEST_DB_TLS.dir)
}

/// What compose needs beyond the file to run the default stack as the xtask does: its project,
/// the checkout label, the user of the application container, the certificate folder, and
/// the local drop-in images where the xtask uses them.
fn compose_vars(root: &Path) -> Vec<(&'static str, String)> {
    let mut vars = vec![
        (
            "COMPOSE_PROJECT_NAME",
            Stack::default_stack().project().to_owned(),
        ),
        (model::CHECKOUT_VAR, root.display().to_string()),
        (model::USER_VAR, checkout_owner(root)),
        (model::TEST_DB_TLS.dir_var, tls_dir_value()),
    ];
    for image in IMAGES {
        if std::env::var_os(image.var).is_none() && super::images::image_present(image.local) {
            vars.push((image.var, image.local.to_owned()));
        }
    }
    vars
}

/// A value Compose v1 and v2 both read as itself from an unquoted `.env` line.
fn plain(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:+@,".contains(&b))
}

/// `text` without the xtask's block, and the block's current lines.
fn split(text: &str) -> (String, Vec<&str>) {
    let mut outside = String::new();
    let mut block = Vec::new();
    let mut inside = false;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        if bare == BEGIN {
            inside = true;
        } else if inside && bare == END {
            inside = false;
        } else if inside {
            block.push(bare);
        } else {
            outside.push_str(line);
        }
    }
    (outside, block)
}

/// The file with the block for `vars` at its end; keys the user set outside it are left out.
fn render(text: &str, vars: &[(&'static str, String)]) -> String {
    let (mut out, _) = split(text);
    let own_keys: Vec<String> = out
        .lines()
        .filter_map(|l| {
            let l = l
                .trim_start()
                .strip_prefix("export ")
                .unwrap_or(l.trim_start());
            (!l.starts_with('#')).then(|| l.split('=').next().unwrap_or_default().trim().to_owned())
        })
        .collect();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(BEGIN);
    out.push('\n');
    for (key, value) in vars {
        if !own_keys.iter().any(|k| k == key) && plain(value) {
            out.push_str(&format!("{key}={value}\n"));
        }
    }
    out.push_str(END);
    out.push('\n');
    out
}

/// Makes `.env` hold a dev password and the block for this machine, once per command. The
/// file stays owner-only; lines outside the block are kept as they are.
pub fn sync() -> Result<()> {
    static DONE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let Ok(mut done) = DONE.lock() else {
        return Ok(());
    };
    if *done {
        return Ok(());
    }
    let root = project_root();
    let (_, source) = devpass::ensure_dev_password_here(&root)?;
    if let PasswordSource::Generated(path) = source {
        eprintln!(
            "generated a password for the dev database into {} (owner-only, git-ignored; compose reads it from there)",
            path.display()
        );
    }
    let path = root.join(".env");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(anyhow::Error::new(err).context(format!("read {}", path.display()))),
    };
    let vars = compose_vars(&root);
    if let Some((key, value)) = vars.iter().find(|(_, v)| !plain(v)) {
        eprintln!(
            "note: {key}={value} cannot be written to .env so that Compose v1 and v2 read it alike; \
             compose typed by hand here needs it in its environment"
        );
    }
    let wanted = render(&text, &vars);
    if wanted != text {
        let tmp = path.with_extension(format!("xtask-tmp-{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("write {}", tmp.display()))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .and_then(|()| file.write_all(wanted.as_bytes()))
            .with_context(|| format!("write {}", tmp.display()))?;
        // Another command may have added a line meanwhile (a password): then its file stands.
        let now = std::fs::read_to_string(&path).unwrap_or_default();
        if now == text {
            std::fs::rename(&tmp, &path).with_context(|| format!("replace {}", path.display()))?;
        } else {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    *done = true;
    Ok(())
}

/// `uid:gid` of the checkout's owner, whom the `genesis-api` container runs as.
pub(crate) fn checkout_owner(root: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(root) {
        Ok(meta) => format!("{}:{}", meta.uid(), meta.gid()),
        // Unreadable root: compose's own default (root) rather than a guess.
        Err(_) => "0:0".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_is_replaced_and_the_users_lines_kept() {
        let vars = vec![
            ("COMPOSE_PROJECT_NAME", "genesis-abc".to_owned()),
            ("GENESIS_USER", "1000:1000".to_owned()),
        ];
        let user = "# mine\nPOSTGRES_PASSWORD=secret\nGENESIS_USER=0:0";
        let once = render(user, &vars);
        assert_eq!(
            once,
            format!(
                "# mine\nPOSTGRES_PASSWORD=secret\nGENESIS_USER=0:0\n{BEGIN}\nCOMPOSE_PROJECT_NAME=genesis-abc\n{END}\n"
            )
        );
        assert_eq!(render(&once, &vars), once, "idempotent");
        let moved = render(&once, &[("COMPOSE_PROJECT_NAME", "genesis-def".to_owned())]);
        assert!(moved.contains("COMPOSE_PROJECT_NAME=genesis-def\n"));
        assert!(!moved.contains("genesis-abc"));
        // What compose reads from it, as compose reads it.
        let entries = genesis_settings::parse_env_file(Path::new(".env"), &once).unwrap();
        let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["POSTGRES_PASSWORD", "GENESIS_USER", "COMPOSE_PROJECT_NAME"]
        );
    }

    #[test]
    fn only_values_both_composes_read_alike_are_written() {
        assert!(plain("/work/h20"));
        assert!(plain("genesis-local/postgres:15"));
        for odd in ["", "a b", "a$b", "a#b", "'a'", "a\"b", "a\\b"] {
            assert!(!plain(odd), "{odd:?}");
        }
        let text = render("", &[(model::CHECKOUT_VAR, "/a path".to_owned())]);
        assert!(!text.contains("/a path"));
    }
}

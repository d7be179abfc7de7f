//! `cargo xtask env [--env E] [--stack S]`: the shell exports that point the application and
//! plain `cargo test` at a stack's running services (`eval "$(cargo xtask env)"`), as
//! `supabase status -o env` does. Only public values are printed: the dev password stays in
//! `.env`, where the application's settings read it.

use anyhow::Result;
use genesis_model::{self as model, Env};
use xshell::Shell;

use crate::flags;
use crate::services::preflight;
use crate::services::{Service, Stack};
use crate::tools::util::{project_root, usage};

impl flags::EnvVars {
    pub fn run(self, sh: &Shell, stack: &Stack) -> Result<()> {
        let env = self.env.model();
        let Some(db_service) = Service::database(env) else {
            return Err(usage(
                "prod has no stack: its settings come from the deployment's environment (DATABASE_URL)",
            ));
        };
        preflight::docker_client(sh)?;
        preflight::docker_daemon()?;
        let containers = stack.containers()?;
        let port = |service: Service| {
            containers
                .iter()
                .find(|c| c.service == service.name() && c.running())
                .and_then(|c| c.host_port(service.container_port()))
        };
        let db_port = port(db_service).ok_or_else(|| {
            usage(format!(
                "{} does not run on stack {}: start it with `cargo xtask db-up --env {env}{}`",
                db_service.name(),
                stack.name(),
                stack.flag()
            ))
        })?;
        for line in exports(env, db_port, port(Service::Redis), stack) {
            println!("{line}");
        }
        Ok(())
    }
}

/// The lines to print: one `export` per variable, and a comment for what does not run.
fn exports(env: Env, db_port: u16, redis_port: Option<u16>, stack: &Stack) -> Vec<String> {
    let db = env.database();
    let mut vars: Vec<(&str, String)> = vec![("ENVIRONMENT", env.environment_value().to_owned())];
    let mut address = model::TEST_DB_SERVICE.host_address;
    address.port = db_port;
    match env {
        Env::Test => {
            vars.push((db.url_var, db.url_with(address, model::TEST_DB_PASSWORD)));
            vars.push((
                model::TEST_DB_TLS.ca_var,
                project_root()
                    .join(model::TEST_DB_TLS.dir)
                    .join("ca.crt")
                    .display()
                    .to_string(),
            ));
        }
        // The parts: the settings assemble DATABASE_URL from them and POSTGRES_PASSWORD, which
        // they read from `.env` (never printed).
        _ => {
            vars.extend([
                ("POSTGRES_SERVER", address.host.to_owned()),
                ("POSTGRES_PORT", db_port.to_string()),
                ("POSTGRES_USER", db.user.to_owned()),
                ("POSTGRES_DB", db.name.to_owned()),
            ]);
        }
    }
    let mut lines = vec![format!(
        "# stack {} ({}), {} database",
        stack.name(),
        stack.project(),
        env
    )];
    match redis_port {
        Some(port) => {
            let mut redis = model::REDIS.host_address;
            redis.port = port;
            vars.push((model::REDIS.url_var, model::REDIS.url(redis)));
        }
        None => lines.push(format!(
            "# redis does not run on stack {}: `cargo xtask db-up --env {env} --with redis{}` starts it",
            stack.name(),
            stack.flag()
        )),
    }
    lines.extend(
        vars.into_iter()
            .map(|(key, value)| format!("export {key}={}", shell_quote(&value))),
    );
    lines
}

/// `value` as one POSIX shell word.
fn shell_quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:@,+=%".contains(&b))
    {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_name_the_stacks_ports_and_no_dev_password() {
        let stack = Stack::select(Some("x")).unwrap();
        let test = exports(Env::Test, 40001, Some(40002), &stack).join("\n");
        assert!(test.contains("export TEST_DATABASE_URL=postgresql://test_user:test_password@localhost:40001/test_db"), "{test}");
        assert!(
            test.contains("export REDIS_URL=redis://localhost:40002/0"),
            "{test}"
        );
        assert!(test.contains("export ENVIRONMENT=test"), "{test}");
        let dev = exports(Env::Dev, 40003, None, &stack).join("\n");
        assert!(dev.contains("export POSTGRES_PORT=40003"), "{dev}");
        assert!(!dev.contains("PASSWORD"), "{dev}");
        assert!(dev.contains("--with redis --stack x"), "{dev}");
        assert_eq!(shell_quote("a b'c"), r"'a b'\''c'");
    }
}

//! Rendering a service URL: the canonical, fully percent-encoded form (password included
//! only in `expose`), the `key=value` description, and `Display`/`Debug` with the password
//! masked.

use std::fmt;

use percent_encoding::utf8_percent_encode;

use super::{Scheme, ServiceUrl};
use crate::secret::{MASK, URL_PART, redact};

pub(super) fn encode(value: &str) -> String {
    utf8_percent_encode(value, URL_PART).to_string()
}

impl ServiceUrl {
    /// The canonical URL, password included: only for opening a connection.
    pub fn expose(&self) -> String {
        self.render(self.password.as_ref().map(|p| encode(p.expose())))
    }

    /// The parts as `key=value` pairs (password masked), for `check-config`: exactly what the
    /// driver and libpq are given.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.hosts.is_empty() {
            parts.push(format!("host={}", self.hosts.join(",")));
        }
        if !self.ports.is_empty() {
            parts.push(format!("port={}", self.port_list()));
        }
        if let Some(user) = &self.user {
            parts.push(format!("user={user}"));
        }
        if self.password.is_some() {
            parts.push(format!("password={MASK}"));
        }
        if let Some(db) = &self.database {
            let key = match self.scheme {
                Scheme::Postgres => "dbname",
                Scheme::Redis => "db",
            };
            parts.push(format!("{key}={db}"));
        }
        for (k, v) in &self.params {
            parts.push(format!("{k}={v}"));
        }
        redact(&parts.join(" "))
    }

    /// The ports as libpq's `port` parameter spells them: one per host, empty for the default.
    fn port_list(&self) -> String {
        let ports: Vec<String> = self
            .ports
            .iter()
            .map(|p| p.map(|p| p.to_string()).unwrap_or_default())
            .collect();
        ports.join(",")
    }

    fn render(&self, password: Option<String>) -> String {
        let scheme = if self.tls {
            "rediss"
        } else {
            self.scheme.canonical()
        };
        let mut out = format!("{scheme}://");
        if self.user.is_some() || password.is_some() {
            out.push_str(&encode(self.user()));
            if let Some(p) = password {
                out.push(':');
                out.push_str(&p);
            }
            out.push('@');
        }
        let sockets = self.hosts.iter().any(|h| h.starts_with('/'));
        let mut params: Vec<(String, String)> = Vec::new();
        if sockets {
            // A socket folder cannot sit in the authority: hosts and ports go to parameters,
            // which libpq and the driver both read.
            params.push(("host".into(), self.hosts.join(",")));
            if !self.ports.is_empty() {
                params.push(("port".into(), self.port_list()));
            }
        } else {
            let multi = self.hosts.len() > 1;
            let endpoints: Vec<String> = self
                .hosts
                .iter()
                .enumerate()
                .map(|(i, host)| {
                    let host = if host.contains(':') {
                        format!("[{host}]")
                    } else {
                        encode(host)
                    };
                    // Every host of a multi-host URL gets its port written out: libpq and the
                    // driver default a missing one differently when the URL lists them.
                    let port = match self.ports.len() {
                        0 if multi => Some(crate::model::POSTGRES_PORT),
                        0 => None,
                        1 if multi => Some(self.ports[0].unwrap_or(crate::model::POSTGRES_PORT)),
                        1 => self.ports[0],
                        _ => Some(self.ports[i].unwrap_or(crate::model::POSTGRES_PORT)),
                    };
                    match port {
                        Some(port) => format!("{host}:{port}"),
                        None => host,
                    }
                })
                .collect();
            out.push_str(&endpoints.join(","));
        }
        if let Some(db) = &self.database {
            out.push('/');
            out.push_str(&encode(db));
        }
        params.extend(self.params.iter().cloned());
        for (i, (k, v)) in params.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(&encode(k));
            out.push('=');
            // A value masked by `Display` stays readable as the mask.
            if v == MASK {
                out.push_str(MASK);
            } else {
                out.push_str(&encode(v));
            }
        }
        out
    }
}

impl fmt::Display for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A parameter may carry a secret in its name (`sslpassword=`) or, percent-encoded, in
        // its value (`options=-c%20my.password%3D...`), where no pattern can see it once
        // encoded: such a value is masked whole, decided on its decoded form.
        let shown = ServiceUrl {
            params: self
                .params
                .iter()
                .map(|(k, v)| {
                    let line = format!("{k}={v}");
                    if redact(&line) == line {
                        (k.clone(), v.clone())
                    } else {
                        (k.clone(), MASK.to_owned())
                    }
                })
                .collect(),
            ..self.clone()
        };
        f.write_str(&redact(
            &shown.render(self.password.as_ref().map(|_| MASK.to_owned())),
        ))
    }
}

impl fmt::Debug for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceUrl({self})")
    }
}

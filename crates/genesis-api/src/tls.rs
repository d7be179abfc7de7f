//! TLS to PostgreSQL as libpq does it (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`), and the
//! TLS configuration of `rediss://`, both with rustls.
//!
//! libpq's rules, as `fe-connect.c` and `fe-secure-openssl.c` apply them:
//! - `disable` never uses TLS; `allow` tries plaintext and retries with TLS when the server
//!   refuses; `prefer` (the default) tries TLS and falls back to plaintext; `require`,
//!   `verify-ca` and `verify-full` never fall back.
//! - A root certificate file (`sslrootcert`, default `~/.postgresql/root.crt` when it exists)
//!   makes every mode that uses TLS verify the server's chain, so `require` with a root file is
//!   `verify-ca`; `verify-full` also checks the host name against the certificate.
//!   `sslrootcert=system` uses the system's trust store and demands `verify-full`.
//! - A client certificate (`sslcert`, default `~/.postgresql/postgresql.crt`) is sent with its
//!   key (`sslkey`, default `~/.postgresql/postgresql.key`), which must not be readable by group
//!   or others (or, owned by root, not writable by group nor readable by others).
//!
//! Where libpq would silently ignore a value we refuse it instead: an `sslrootcert`, `sslcert` or
//! `sslkey` file named explicitly that does not exist is an error, not "no verification".

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use deadpool_postgres::Connect;
use genesis_settings::ServiceUrl;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use tokio_postgres::config::{Host, SslMode as DriverSslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    const ALL: [SslMode; 6] = [
        SslMode::Disable,
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Option<SslMode> {
        SslMode::ALL.into_iter().find(|mode| mode.as_str() == value)
    }

    /// Whether a connection in this mode may end up unencrypted.
    pub fn allows_plaintext(self) -> bool {
        self < SslMode::Require
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the certificates that vouch for the server come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roots {
    File(PathBuf),
    /// `sslrootcert=system`: the platform's trust store.
    System,
}

/// The TLS side of one PostgreSQL connection string, as libpq reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgTls {
    pub mode: SslMode,
    /// Set when the server's chain is verified.
    pub roots: Option<Roots>,
    /// The client certificate and its key, when one is sent.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// The libpq parameters this module reads; the rest of the URL goes to tokio-postgres.
pub const SSL_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// The TLS settings of a PostgreSQL URL, and the URL without them for the driver.
///
/// The URL's parameters come decoded from the settings' libpq reader; `env` looks up libpq's
/// environment variables (`PGSSLMODE`, ...), which apply when the URL does not set the
/// parameter, and `HOME`, for libpq's default files. This is the one place that reads the TLS
/// parameters of a connection string.
pub fn split_url(
    url: &ServiceUrl,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(PgTls, ServiceUrl), String> {
    let given = |key: &str| url.param(key).map(str::to_owned);
    let from_env = |value: Option<String>, var: &str| value.or_else(|| env(var));
    let mode = match from_env(given("sslmode"), "PGSSLMODE") {
        Some(value) => SslMode::parse(&value).ok_or_else(|| {
            format!(
                "sslmode={value:?} is not one of disable, allow, prefer, require, verify-ca, \
                 verify-full"
            )
        })?,
        None => SslMode::Prefer,
    };
    let home_file = |name: &str| {
        env("HOME")
            .map(|home| Path::new(&home).join(".postgresql").join(name))
            .filter(|path| path.exists())
    };
    let explicit_file = |value: String, key: &str| {
        let path = PathBuf::from(value);
        if path.exists() {
            Ok(path)
        } else {
            Err(format!("{key}={} does not exist", path.display()))
        }
    };

    let rootcert = from_env(given("sslrootcert"), "PGSSLROOTCERT");
    // libpq 16 and later refuse `system` with any weaker mode, `disable` included.
    if rootcert.as_deref() == Some("system") && mode != SslMode::VerifyFull {
        return Err(format!(
            "sslrootcert=system needs sslmode=verify-full, not {mode} (libpq refuses it too)"
        ));
    }
    let roots = if mode == SslMode::Disable {
        None
    } else {
        match rootcert {
            Some(value) if value == "system" => Some(Roots::System),
            Some(value) => Some(Roots::File(explicit_file(value, "sslrootcert")?)),
            None => home_file("root.crt").map(Roots::File),
        }
    };
    if roots.is_none() && mode >= SslMode::VerifyCa {
        return Err(format!(
            "sslmode={mode} needs the server's root certificate: set sslrootcert to a file, or \
             to `system` for the platform's trust store"
        ));
    }
    let client = if mode == SslMode::Disable {
        None
    } else {
        let cert = match from_env(given("sslcert"), "PGSSLCERT") {
            Some(value) => Some(explicit_file(value, "sslcert")?),
            None => home_file("postgresql.crt"),
        };
        match cert {
            Some(cert) => {
                let key = match from_env(given("sslkey"), "PGSSLKEY") {
                    Some(value) => explicit_file(value, "sslkey")?,
                    None => home_file("postgresql.key").ok_or_else(|| {
                        format!("sslcert={} is set but sslkey is not", cert.display())
                    })?,
                };
                Some((cert, key))
            }
            None => None,
        }
    };
    Ok((
        PgTls {
            mode,
            roots,
            client,
        },
        url.without_params(&SSL_KEYS),
    ))
}

impl PgTls {
    /// Whether a connection to `config`'s hosts may travel unencrypted over a network: the mode
    /// allows plaintext and some host is not a Unix socket.
    pub fn plaintext_over_network(&self, config: &tokio_postgres::Config) -> bool {
        self.mode.allows_plaintext()
            && config
                .get_hosts()
                .iter()
                .any(|host| !matches!(host, Host::Unix(_)))
    }

    /// One line for `check-config` and the start-up log.
    pub fn describe(&self) -> String {
        let mut out = self.mode.to_string();
        if self.mode != SslMode::Disable {
            match &self.roots {
                Some(Roots::File(path)) => out.push_str(&format!(
                    ", server chain verified against {}",
                    path.display()
                )),
                Some(Roots::System) => out.push_str(", server chain verified by the system roots"),
                None => out.push_str(", server certificate not verified"),
            }
            if self.mode == SslMode::VerifyFull {
                out.push_str(", host name checked");
            }
            if let Some((cert, _)) = &self.client {
                out.push_str(&format!(", client certificate {}", cert.display()));
            }
        }
        out
    }

    /// The connector for this configuration: reads the certificate files now, so that a bad one
    /// stops start-up with its name.
    pub fn connector(&self, config: tokio_postgres::Config) -> Result<PgConnect, String> {
        let tls = if self.mode == SslMode::Disable {
            None
        } else {
            Some(MakeRustlsConnect::new(self.client_config()?))
        };
        Ok(PgConnect {
            mode: self.mode,
            config,
            tls,
        })
    }

    fn client_config(&self) -> Result<ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| format!("TLS set-up: {err}"))?;
        let verifier: Arc<dyn ServerCertVerifier> = match &self.roots {
            None => Arc::new(NoVerification(provider.signature_verification_algorithms)),
            Some(roots) => {
                let store = Arc::new(root_store(roots)?);
                let webpki = WebPkiServerVerifier::builder_with_provider(store, provider)
                    .build()
                    .map_err(|err| format!("TLS set-up: {err}"))?;
                if self.mode == SslMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(ChainOnly(webpki))
                }
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        match &self.client {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                let chain = read_certs(cert, "sslcert")?;
                check_key_permissions(key)?;
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|err| format!("sslkey={}: {err}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|err| format!("sslcert/sslkey: {err}"))
            }
        }
    }
}

/// The root certificates `roots` names.
pub fn root_store(roots: &Roots) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(path) => {
            for cert in read_certs(path, "sslrootcert")? {
                store
                    .add(cert)
                    .map_err(|err| format!("sslrootcert={}: {err}", path.display()))?;
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "sslrootcert=system: the system trust store holds no certificate".into(),
                );
            }
        }
    }
    Ok(store)
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|err| format!("{key}={}: {err}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{key}={} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// libpq's rule for a private key file: not readable by group or others, or owned by root and
/// at most 0640.
fn check_key_permissions(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(path).map_err(|err| format!("sslkey={}: {err}", path.display()))?;
    let mode = meta.mode() & 0o777;
    let fine = if meta.uid() == 0 {
        mode & 0o037 == 0
    } else {
        mode & 0o077 == 0
    };
    if fine {
        Ok(())
    } else {
        Err(format!(
            "sslkey={} has group or world access (mode {mode:o}); it must be u=rw (0600) or \
             less, or owned by root and u=rw,g=r (0640) or less",
            path.display()
        ))
    }
}

/// Opens connections in the configured mode; the pool and single connections share it.
#[derive(Clone)]
pub struct PgConnect {
    mode: SslMode,
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
}

impl fmt::Debug for PgConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConnect")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

type Connected = (tokio_postgres::Client, JoinHandle<()>);

impl PgConnect {
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// One connection, its task spawned on the current runtime.
    pub async fn open(&self) -> Result<Connected, tokio_postgres::Error> {
        match (self.mode, &self.tls) {
            (SslMode::Disable, _) | (_, None) => self.plain().await,
            // Plaintext first; TLS when the server refuses the plaintext connection.
            (SslMode::Allow, Some(tls)) => match self.plain().await {
                Err(err) if err.as_db_error().is_some() => {
                    self.encrypted(tls, DriverSslMode::Require).await
                }
                other => other,
            },
            // tokio-postgres falls back when the server declines TLS; libpq also when the TLS
            // handshake itself fails.
            (SslMode::Prefer, Some(tls)) => {
                match self.encrypted(tls, DriverSslMode::Prefer).await {
                    Err(err) if err.as_db_error().is_none() => self.plain().await,
                    other => other,
                }
            }
            (_, Some(tls)) => self.encrypted(tls, DriverSslMode::Require).await,
        }
    }

    async fn plain(&self) -> Result<Connected, tokio_postgres::Error> {
        let mut config = self.config.clone();
        config.ssl_mode(DriverSslMode::Disable);
        let (client, connection) = config.connect(NoTls).await?;
        Ok((client, spawn_connection(connection)))
    }

    async fn encrypted(
        &self,
        tls: &MakeRustlsConnect,
        mode: DriverSslMode,
    ) -> Result<Connected, tokio_postgres::Error> {
        let mut config = self.config.clone();
        config.ssl_mode(mode);
        let (client, connection) = config.connect(tls.clone()).await?;
        Ok((client, spawn_connection(connection)))
    }
}

fn spawn_connection<F>(connection: F) -> JoinHandle<()>
where
    F: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(
                error = %genesis_settings::redact(&err.to_string()),
                "postgres connection closed"
            );
        }
    })
}

impl Connect for PgConnect {
    fn connect(
        &self,
        _: &tokio_postgres::Config,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Connected, tokio_postgres::Error>> + Send + '_>>
    {
        Box::pin(self.open())
    }
}

/// `require` without a root certificate: encryption, no authentication of the server (the
/// handshake's signatures are still checked, so the session key is bound to the certificate).
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain before the name, so a name error means the chain is good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The provider every TLS user in the process shares (redis builds its own configs through
/// rustls' process default).
pub fn install_crypto_provider() {
    let _ = CryptoProvider::install_default(rustls::crypto::ring::default_provider());
}

#[cfg(test)]
mod tests;

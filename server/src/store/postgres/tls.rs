//! Which TLS the server asks of PostgreSQL, decided once for a `DATABASE_URL` and used by both
//! of its connection paths (sqlx's pool and the pipelined read connections), so that they
//! cannot disagree about whether the database's certificate is checked.
//!
//! `sslmode` has libpq's meanings. Without one in the URL it is `verify-full` (the certificate
//! must come from a trusted CA and name the host), except for a database on this machine (a
//! Unix socket, `localhost` or a loopback address), where no one sits between the server and
//! the database and `prefer` is kept. An `sslmode` in the URL always wins; `PGSSLMODE` is not
//! read, so that the decision is the URL's alone.

use anyhow::{Context, Result, bail};
use rustls::pki_types::CertificateDer;
use std::net::IpAddr;
use std::str::FromStr;
use tokio_postgres::config::Host;

/// libpq's `sslmode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => bail!("DATABASE_URL has an unknown sslmode {other:?}"),
        })
    }

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

    /// Whether the database's certificate is checked at all.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }

    /// The same for sqlx.
    pub fn for_sqlx(self) -> sqlx::postgres::PgSslMode {
        use sqlx::postgres::PgSslMode;
        match self {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Allow => PgSslMode::Allow,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        }
    }
}

/// What a `DATABASE_URL` asks of TLS, with the rest of it as tokio-postgres reads it.
pub struct Settings {
    /// The effective `sslmode` (see [`effective_ssl_mode`]).
    pub mode: SslMode,
    /// `sslrootcert`: a PEM file of the CAs to trust instead of the public (webpki) roots.
    pub root_cert: Option<String>,
    /// The URL's connection settings without `sslmode` and `sslrootcert` (which tokio-postgres
    /// does not know); its `ssl_mode` is still to be set.
    pub config: tokio_postgres::Config,
}

/// Reads `url`'s TLS settings and decides its effective `sslmode`.
pub fn settings(url: &str) -> Result<Settings> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut explicit = None;
    let mut root_cert = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", value)) => explicit = Some(SslMode::parse(value)?),
            Some(("sslrootcert", value)) => root_cert = Some(percent_decode(value)),
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let config = tokio_postgres::Config::from_str(&url)
        .context("DATABASE_URL is not a PostgreSQL URL that the read connections understand")?;
    Ok(Settings {
        mode: effective_ssl_mode(explicit, config.get_hosts()),
        root_cert,
        config,
    })
}

/// The one decision: the URL's own `sslmode` when it has one; otherwise `prefer` when every
/// host is on this machine (no URL host at all means libpq's default Unix socket), and
/// `verify-full` when any is not.
pub fn effective_ssl_mode(explicit: Option<SslMode>, hosts: &[Host]) -> SslMode {
    match explicit {
        Some(mode) => mode,
        None if hosts.iter().all(is_local) => SslMode::Prefer,
        None => SslMode::VerifyFull,
    }
}

/// A Unix socket, `localhost`, or a loopback address (127.0.0.0/8, `::1`).
fn is_local(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .parse::<IpAddr>()
                    .is_ok_and(|address| address.to_canonical().is_loopback())
        }
    }
}

/// The certificates of an `sslrootcert` file.
pub fn root_certs(path: &str) -> Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).with_context(|| format!("could not read sslrootcert {path}"))?;
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("sslrootcert {path} is not a PEM file of certificates"))
}

/// A failed connection attempt, said plainly when the cause was the database's certificate:
/// rustls's reason, and how to trust a private CA. The URL (and so its password) is not part
/// of the message.
pub fn connect_error<E>(err: E, mode: SslMode) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    match certificate_refusal(&err) {
        // rustls's reason is the whole story; the drivers' wrappings of it would repeat it.
        Some(reason) => anyhow::anyhow!(
            "PostgreSQL's TLS certificate was refused (sslmode={}): {reason}. It must be signed \
             by a CA in DATABASE_URL's sslrootcert=FILE (without one, by a public CA) and name \
             the URL's host; see docs/operating.md, PostgreSQL",
            mode.as_str()
        ),
        None => anyhow::Error::new(err).context("could not connect to PostgreSQL"),
    }
}

/// rustls's refusal of the peer's certificate somewhere in `err`'s causes (sqlx and
/// tokio-postgres both carry it inside an `io::Error`, whose `source` skips it).
fn certificate_refusal(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if let Some(refusal @ rustls::Error::InvalidCertificate(_)) =
            err.downcast_ref::<rustls::Error>()
        {
            return Some(refusal.to_string());
        }
        if let Some(refusal) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| certificate_refusal(inner))
        {
            return Some(refusal);
        }
        cause = err.source();
    }
    None
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::{SslMode, connect_error, settings};

    fn mode(url: &str) -> SslMode {
        settings(url).unwrap().mode
    }

    #[test]
    fn an_explicit_sslmode_is_kept_whatever_the_host() {
        for (url, expected) in [
            (
                "postgres://u:p@db.example.com/d?sslmode=prefer",
                SslMode::Prefer,
            ),
            (
                "postgres://u:p@db.example.com/d?sslmode=disable",
                SslMode::Disable,
            ),
            (
                "postgres://u:p@10.1.2.3/d?sslmode=require",
                SslMode::Require,
            ),
            (
                "postgres://u:p@localhost/d?sslmode=verify-full",
                SslMode::VerifyFull,
            ),
            (
                "postgres://u:p@127.0.0.1/d?sslmode=verify-ca",
                SslMode::VerifyCa,
            ),
            (
                "postgres:///d?host=/var/run/postgresql&sslmode=allow",
                SslMode::Allow,
            ),
        ] {
            assert_eq!(mode(url), expected, "{url}");
        }
        assert!(settings("postgres://u:p@h/d?sslmode=sometimes").is_err());
    }

    #[test]
    fn a_database_on_this_machine_keeps_prefer() {
        for url in [
            "postgres://u:p@localhost/d",
            "postgres://u:p@LocalHost:5433/d",
            "postgres://u:p@127.0.0.1:5432/d",
            "postgres://u:p@127.1.2.3/d",
            "postgres://u:p@[::1]:5432/d",
            "postgres:///d?host=/var/run/postgresql",
            "postgres://%2Fvar%2Frun%2Fpostgresql/d",
            "postgres:///d",
            "postgres://u:p@localhost,127.0.0.1/d",
        ] {
            assert_eq!(mode(url), SslMode::Prefer, "{url}");
        }
    }

    #[test]
    fn a_database_elsewhere_is_verified_in_full() {
        for url in [
            "postgres://u:p@db.example.com/d",
            "postgres://u:p@db.example.com:5433/d?application_name=x",
            "postgres://u:p@10.1.2.3/d",
            "postgres://u:p@[fd00::2]/d",
            "postgres://u:p@localhost.example.com/d",
            // One host elsewhere is enough.
            "postgres://u:p@localhost,db.example.com/d",
            "postgres:///d?host=db.example.com",
        ] {
            assert_eq!(mode(url), SslMode::VerifyFull, "{url}");
        }
    }

    #[test]
    fn sslrootcert_is_taken_out_and_decoded() {
        let read =
            settings("postgres://u:p@db/d?sslrootcert=%2Fetc%2Fca.pem&application_name=x").unwrap();
        assert_eq!(read.root_cert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(read.config.get_application_name(), Some("x"));
    }

    #[test]
    fn a_refused_certificate_is_found_inside_an_io_error_and_said_once() {
        let refused = || {
            let reason = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
            sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, reason))
        };
        let message = format!("{:#}", connect_error(refused(), SslMode::VerifyFull));
        assert!(
            message.starts_with(
                "PostgreSQL's TLS certificate was refused (sslmode=verify-full): \
                 invalid peer certificate: UnknownIssuer. "
            ),
            "{message}"
        );
        assert_eq!(message.matches("UnknownIssuer").count(), 1, "{message}");
        let other = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let message = format!(
            "{:#}",
            connect_error(sqlx::Error::Io(other), SslMode::VerifyFull)
        );
        assert!(
            message.starts_with("could not connect to PostgreSQL: "),
            "{message}"
        );
    }
}

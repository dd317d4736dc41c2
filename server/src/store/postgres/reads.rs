//! getLinkedCustomer's reads on a few pipelined connections (tokio-postgres): a lookup is sent
//! while earlier ones are still being answered, so one connection carries many requests at a
//! time and PostgreSQL answers them back to back. sqlx sends one statement per connection at a
//! time, and its pool of them cost a lookup most of its time (BENCHMARKS.md).
//!
//! A connection that fails is replaced at the next lookup that would have used it.

use super::super::{DatabaseLimits, LOOKUP_SQL, Lookup, LookupKey, SubscriberAccess, Unreachable};
use super::tls::{self, SslMode as TlsMode};
use anyhow::{Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio_postgres::config::SslMode;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

pub struct Reads {
    config: tokio_postgres::Config,
    limits: DatabaseLimits,
    tls: MakeRustlsConnect,
    /// The effective `sslmode`, for the message of a refused certificate.
    ssl_mode: TlsMode,
    slots: Vec<RwLock<Option<Arc<Connection>>>>,
    next: AtomicUsize,
}

struct Connection {
    client: Client,
    lookup: Statement,
}

/// The replica's state, for readiness and the lag metric: seconds behind the primary (0 when it
/// has replayed all it received, or when the database is not a standby at all).
const REPLICATION_LAG: &str = "
    SELECT CASE
        WHEN NOT pg_is_in_recovery() THEN 0
        WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
        ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)
    END::float8";

/// The longest a replication-lag probe waits for its answer.
const PROBE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

impl Reads {
    /// Opens `connections` connections to the database of `url` (a `DATABASE_URL`).
    pub async fn open(url: &str, connections: usize, limits: DatabaseLimits) -> Result<Reads> {
        let reads = Reads::new(url, connections, limits)?;
        for slot in 0..reads.slots.len() {
            reads.connection(slot).await?;
        }
        Ok(reads)
    }

    /// The same, with no connection opened yet: each is opened by the first lookup that needs
    /// it (a replica that is down when the server starts).
    pub fn new(url: &str, connections: usize, limits: DatabaseLimits) -> Result<Reads> {
        let (mut config, tls, ssl_mode) = config(url)?;
        // PostgreSQL ends a statement that runs too long itself, so that a stuck lookup costs
        // the database nothing after the request has been answered.
        let options: Vec<String> = super::session_settings(&limits)
            .iter()
            .map(|(name, value)| format!("-c {name}={value}"))
            .collect();
        config.options(options.join(" "));
        config.connect_timeout(limits.acquire_timeout);
        Ok(Reads {
            config,
            limits,
            tls,
            ssl_mode,
            slots: (0..connections.max(1)).map(|_| RwLock::new(None)).collect(),
            next: AtomicUsize::new(0),
        })
    }

    /// How many seconds the database is behind its primary (see [`REPLICATION_LAG`]), on the
    /// first connection (opened again if needed), within the statement timeout.
    pub async fn replication_lag(&self) -> Result<f64> {
        let connection = self.connection(0).await?;
        let query = connection.client.query_one(REPLICATION_LAG, &[]);
        // A probe every second: one that takes longer is a replica to leave alone.
        let deadline = self.limits.statement_timeout.min(PROBE_DEADLINE);
        let row = tokio::time::timeout(deadline, query)
            .await
            .context("the replication lag query timed out")??;
        Ok(row.try_get(0)?)
    }

    pub async fn lookup(&self, key: &LookupKey<'_>) -> Result<Option<Lookup>> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let connection = self.connection(slot).await?;
        let (department, entity, entity_id) = (
            key.department.as_str(),
            key.entity.as_str(),
            key.entity_id.get(),
        );
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
            &key.username,
            &department,
            &key.scope,
            &entity,
            &entity_id,
            &key.verified_hash,
        ];
        let query = connection.client.query_opt(&connection.lookup, &params);
        let row = tokio::time::timeout(self.limits.statement_timeout, query)
            .await
            .context("the lookup timed out")??;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(Lookup {
            access: SubscriberAccess {
                subscriber_id: row.try_get(0)?,
                password_hash: row.try_get(1)?,
                granted: row.try_get(2)?,
            },
            document: row.try_get(3)?,
        }))
    }

    /// The connection of `slot`, opened again if it is missing or closed.
    async fn connection(&self, slot: usize) -> Result<Arc<Connection>> {
        let current = self.slots[slot]
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if let Some(connection) = current
            && !connection.client.is_closed()
        {
            return Ok(connection);
        }
        let connect = self.config.connect(self.tls.clone());
        let (client, driver) = tokio::time::timeout(self.limits.acquire_timeout, connect)
            .await
            .context("connecting to PostgreSQL timed out")
            .context(Unreachable)?
            .map_err(|err| tls::connect_error(err, self.ssl_mode))
            .context(Unreachable)?;
        tokio::spawn(async move {
            if let Err(err) = driver.await {
                tracing::warn!(error = %err, "a PostgreSQL read connection closed");
            }
        });
        let types = [
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
        ];
        let lookup = client
            .prepare_typed(LOOKUP_SQL, &types)
            .await
            .context(Unreachable)?;
        let connection = Arc::new(Connection { client, lookup });
        *self.slots[slot]
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(connection.clone());
        Ok(connection)
    }
}

/// The connection settings of `url`, and TLS as its effective `sslmode` asks (libpq's
/// meanings, decided in `tls`): `disable`; `prefer` and `require` encrypt without checking the
/// certificate; `verify-ca` and `verify-full` check it against `sslrootcert` (a PEM file) or,
/// without one, the Mozilla roots, and both check the host name.
fn config(url: &str) -> Result<(tokio_postgres::Config, MakeRustlsConnect, TlsMode)> {
    let tls::Settings {
        mode,
        root_cert,
        mut config,
    } = tls::settings(url)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS set-up")?;
    let client = if mode.verifies() {
        // tokio-postgres has no verify modes of its own: it requires TLS, and rustls checks.
        config.ssl_mode(SslMode::Require);
        let mut roots = rustls::RootCertStore::empty();
        match root_cert {
            Some(path) => {
                for cert in tls::root_certs(&path)? {
                    roots
                        .add(cert)
                        .context("sslrootcert holds an unusable certificate")?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        config.ssl_mode(match mode {
            TlsMode::Disable | TlsMode::Allow => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        });
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
            .with_no_client_auth()
    };
    Ok((config, MakeRustlsConnect::new(client), mode))
}

/// `prefer` and `require`: encrypted, the certificate taken as it comes (as libpq does).
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::config;
    use tokio_postgres::config::SslMode;

    #[test]
    fn sslmode_is_read_as_libpq_reads_it() {
        let (c, _, _) = config("postgres://u:p@localhost:5433/db").unwrap();
        assert_eq!(c.get_ssl_mode(), SslMode::Prefer);
        assert_eq!(c.get_ports(), [5433]);
        // A host elsewhere is verified by default (`tls`): TLS required, rustls checking.
        let (c, _, mode) = config("postgres://u:p@h:5433/db").unwrap();
        assert_eq!(
            (c.get_ssl_mode(), mode.as_str()),
            (SslMode::Require, "verify-full")
        );
        let (c, _, _) = config("postgres://u:p@h/db?sslmode=disable&application_name=x").unwrap();
        assert_eq!(c.get_ssl_mode(), SslMode::Disable);
        assert_eq!(c.get_application_name(), Some("x"));
        let (c, _, _) = config("postgres://u:p@h/db?sslmode=prefer").unwrap();
        assert_eq!(c.get_ssl_mode(), SslMode::Prefer);
        let (c, _, _) = config("postgres://u:p@h/db?sslmode=verify-full").unwrap();
        assert_eq!(c.get_ssl_mode(), SslMode::Require);
        assert!(config("postgres://u:p@h/db?sslmode=sometimes").is_err());
        assert!(config("postgres://u:p@h/db?sslmode=verify-ca&sslrootcert=/nonexistent").is_err());
    }
}

//! TLS on the listener: rustls with ring, TLS 1.2 and 1.3 only, HTTP/1.1 by ALPN (actix-web adds
//! `http/1.1` to the offer, and the server is built without HTTP/2: see the workspace's
//! Cargo.toml). The certificate and key are read from their PEM files at start and again on
//! SIGHUP: new connections get the new certificate, connections already open keep theirs and
//! finish undisturbed. A reload that fails (a file half-written, a key that does not match)
//! keeps the certificate in use and says why in the log.

use anyhow::{Context, Result};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// Where the certificate chain and its private key are read from (PEM).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificate in use, swapped whole on a reload.
#[derive(Debug)]
pub struct Certificates {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificates {
    /// Reads the files; an unusable pair stops the start.
    pub fn load(files: TlsFiles) -> Result<Arc<Certificates>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = read(&files, &provider)?;
        Ok(Arc::new(Certificates {
            files,
            provider,
            current: RwLock::new(Arc::new(current)),
        }))
    }

    /// Reads the files again; on success, new connections get the new certificate.
    pub fn reload(&self) -> Result<()> {
        let fresh = Arc::new(read(&self.files, &self.provider)?);
        let mut current = self
            .current
            .write()
            .map_err(|_| anyhow::anyhow!("the certificate lock is poisoned"))?;
        *current = fresh;
        Ok(())
    }

    /// The listener's configuration: TLS 1.2 and 1.3, no client certificates, this resolver.
    pub fn server_config(self: &Arc<Self>) -> Result<ServerConfig> {
        let config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS 1.2 and 1.3 with ring")?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        Ok(config)
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|current| Arc::clone(&current))
    }
}

fn read(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("could not read certificates from {}", files.cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{} holds no certificate",
        files.cert.display()
    );
    let pem = std::fs::read(&files.key)
        .with_context(|| format!("could not read {}", files.key.display()))?;
    // What is wrong with a key file is told without any of its content.
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        anyhow::anyhow!(
            "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            files.key.display()
        )
    })?;
    CertifiedKey::from_der(chain, key, provider).with_context(|| {
        format!(
            "{} and {} are not a certificate and its key",
            files.cert.display(),
            files.key.display()
        )
    })
}

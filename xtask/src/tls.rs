//! TLS for xtask's own runs: a CA made in the run (rcgen) with the certificates it issues, and a
//! client (rustls) that trusts that CA alone. `cargo xtask pg-tls` gives PostgreSQL its
//! certificates from here, `cargo xtask cluster` gives HAProxy its, and `cargo xtask bench`
//! the server's; the cluster and the bench send their TLS requests through [`Client`].

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The names a certificate for a listener on this machine carries: clients connect to
/// `127.0.0.1` (an IP address in the certificate) or `localhost`.
pub(crate) const LOCAL_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A certificate authority made for one run; its key never leaves this process.
pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate (PEM), for the clients to trust.
    pub(crate) pem: String,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Result<Ca> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key)?.pem();
        Ok(Ca {
            issuer: Issuer::new(params, key),
            pem,
        })
    }

    /// A certificate for `names` (the first is also its common name) and its key, both PEM.
    pub(crate) fn issue(&self, names: &[&str]) -> Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(
            names
                .iter()
                .map(|name| name.to_string())
                .collect::<Vec<_>>(),
        )?;
        let common_name = names.first().context("a certificate needs a name")?;
        params
            .distinguished_name
            .push(DnType::CommonName, *common_name);
        Ok((
            params.signed_by(&key, &self.issuer)?.pem(),
            key.serialize_pem(),
        ))
    }
}

/// A listener's certificate for this machine ([`LOCAL_NAMES`]) from a CA made for it, in files,
/// and a client that trusts that CA.
pub(crate) struct LocalTls {
    /// The CA's certificate (PEM), for other clients (curl's `--cacert`).
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    /// Readable by this user only.
    pub(crate) key: PathBuf,
    pub(crate) client: Client,
}

impl LocalTls {
    /// `NAME-ca.pem`, `NAME.crt` and `NAME.key` in `dir`, made anew.
    pub(crate) fn make(dir: &Path, name: &str) -> Result<LocalTls> {
        let ca = Ca::new(&format!("linked-customer {name} CA"))?;
        let (cert_pem, key_pem) = ca.issue(&LOCAL_NAMES)?;
        let made = LocalTls {
            ca: dir.join(format!("{name}-ca.pem")),
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            client: Client::trusting(&ca.pem)?,
        };
        std::fs::write(&made.ca, &ca.pem)?;
        std::fs::write(&made.cert, cert_pem)?;
        crate::bench::write_private(&made.key, &key_pem)?;
        Ok(made)
    }
}

/// A TLS client that trusts one CA, offers HTTP/1.1 by ALPN and never resumes a session: every
/// connection costs a full handshake, as a new client's does.
#[derive(Clone)]
pub(crate) struct Client {
    config: Arc<rustls::ClientConfig>,
}

impl Client {
    pub(crate) fn trusting(ca_pem: &str) -> Result<Client> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).context("the CA's PEM")?)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Client {
            config: Arc::new(config),
        })
    }

    /// One HTTP/1.1 GET over TLS on a new connection to `address` (`127.0.0.1:PORT`, the name
    /// the certificate is checked against): (status, body).
    pub(crate) fn get(
        &self,
        address: &str,
        path: &str,
        auth: Option<&str>,
    ) -> Result<(u16, String)> {
        let host = address
            .rsplit_once(':')
            .map_or(address, |(host, _)| host)
            .to_string();
        let name = ServerName::try_from(host).context("the server's name")?;
        let connection = rustls::ClientConnection::new(self.config.clone(), name)?;
        let tcp = TcpStream::connect(address)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        // The handshake's last flight and the request go out in two writes: with Nagle the
        // second waits for the server's delayed ACK (40 ms), which no real client pays.
        tcp.set_nodelay(true)?;
        crate::bench::exchange(
            rustls::StreamOwned::new(connection, tcp),
            address,
            path,
            auth,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use std::io::{Read, Write};

    /// A one-answer TLS server on loopback with a certificate of `ca`: its address.
    fn serve_once(ca: &Ca) -> String {
        let (cert, key) = ca.issue(&LOCAL_NAMES).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let connection = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            let mut stream = rustls::StreamOwned::new(connection, tcp);
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            // Closed without close_notify, as some servers do after `Connection: close`.
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
        });
        address
    }

    #[test]
    fn the_client_trusts_its_ca_and_no_other() {
        let ca = Ca::new("test CA").unwrap();
        let address = serve_once(&ca);
        let client = Client::trusting(&ca.pem).unwrap();
        assert_eq!(
            client.get(&address, "/", None).unwrap(),
            (200, "hi".to_string())
        );
        let other = Client::trusting(&Ca::new("other CA").unwrap().pem).unwrap();
        let refused = other.get(&serve_once(&ca), "/", None).unwrap_err();
        assert!(
            format!("{refused:#}").contains("UnknownIssuer"),
            "{refused:#}"
        );
    }
}

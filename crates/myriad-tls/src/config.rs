//! Building rustls configurations from PEM files.

use crate::session::SessionStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors from loading certificates or building a TLS configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the configuration (key does not match, bad CA, ...).
    #[error("tls configuration: {0}")]
    Config(String),
}

fn pem_err(path: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reads every certificate of a PEM file (a chain: leaf first).
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(path, e))?;
    if certs.is_empty() {
        return Err(pem_err(path, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_err(path, e))
}

fn certified_key(chain: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = load_certs(chain)?;
    let key = load_key(key)?;
    let signing = crate::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Config(format!("{}: {e}", chain.display())))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| {
        TlsError::Config(format!(
            "{}: key does not match certificate: {e}",
            chain.display()
        ))
    })?;
    Ok(Arc::new(ck))
}

/// Whether clients must present a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificates (the default).
    None,
    /// Clients may present a certificate; if they do it must chain to the CA.
    Optional(PathBuf),
    /// Clients must present a certificate that chains to the CA (mutual TLS).
    Required(PathBuf),
}

/// Server-side TLS settings.
///
/// ```no_run
/// use myriad_tls::{ClientAuth, ServerTlsConfig};
/// let mut cfg = ServerTlsConfig::from_pem_files("cert.pem", "key.pem")?;
/// cfg.alpn = vec!["http/1.1".into()];
/// cfg.sni.push(("api.example.com".into(), "api.pem".into(), "api.key".into()));
/// cfg.client_auth = ClientAuth::Required("clients-ca.pem".into());
/// # Ok::<(), myriad_tls::TlsError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ServerTlsConfig {
    /// Default certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Private key of the default certificate (PEM).
    pub key: PathBuf,
    /// More certificates chosen by SNI name: `(name, chain, key)`.
    pub sni: Vec<(String, PathBuf, PathBuf)>,
    /// ALPN protocols in order of preference (empty: no ALPN).
    pub alpn: Vec<String>,
    /// Client certificates.
    pub client_auth: ClientAuth,
    /// Size of the server-side session cache (0 disables it).
    pub session_cache: usize,
    /// Issue stateless session tickets.
    pub tickets: bool,
    /// Offer TLS 1.2 as well as 1.3.
    pub tls12: bool,
}

impl ServerTlsConfig {
    /// Settings with a default certificate and key, everything else default
    /// (no ALPN, no client certificates, session cache and tickets on,
    /// TLS 1.2 and 1.3). Files are read by [`crate::TlsAcceptor::new`].
    ///
    /// ```
    /// let cfg = myriad_tls::ServerTlsConfig::from_pem_files("cert.pem", "key.pem").unwrap();
    /// assert!(cfg.tickets);
    /// ```
    pub fn from_pem_files(
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Result<Self, TlsError> {
        Ok(ServerTlsConfig {
            cert: cert.into(),
            key: key.into(),
            sni: Vec::new(),
            alpn: Vec::new(),
            client_auth: ClientAuth::None,
            session_cache: 4096,
            tickets: true,
            tls12: true,
        })
    }

    /// Builds the rustls configuration (reads every file). Public so that
    /// other stacks (a tokio-rustls baseline in the benchmarks) can use the
    /// very same configuration.
    ///
    /// ```no_run
    /// let cfg = myriad_tls::ServerTlsConfig::from_pem_files("cert.pem", "key.pem")?.build()?;
    /// # Ok::<(), myriad_tls::TlsError>(())
    /// ```
    pub fn build(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = crate::provider();
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls12 {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &self.client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Optional(ca) | ClientAuth::Required(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in load_certs(ca)? {
                    roots.add(c).map_err(|e| pem_err(ca, e))?;
                }
                let v =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let v = if matches!(self.client_auth, ClientAuth::Optional(_)) {
                    v.allow_unauthenticated()
                } else {
                    v
                };
                builder.with_client_cert_verifier(
                    v.build().map_err(|e| TlsError::Config(e.to_string()))?,
                )
            }
        };
        let default = certified_key(&self.cert, &self.key)?;
        let mut by_name = Vec::new();
        for (name, chain, key) in &self.sni {
            by_name.push((name.to_ascii_lowercase(), certified_key(chain, key)?));
        }
        let mut cfg = builder.with_cert_resolver(Arc::new(SniResolver { default, by_name }));
        cfg.alpn_protocols = self.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        cfg.session_storage = if self.session_cache > 0 {
            rustls::server::ServerSessionMemoryCache::new(self.session_cache)
        } else {
            Arc::new(rustls::server::NoServerSessionStorage {})
        };
        if self.tickets {
            cfg.ticketer = rustls::crypto::ring::Ticketer::new()
                .map_err(|e| TlsError::Config(e.to_string()))?;
        }
        Ok(Arc::new(cfg))
    }
}

/// Picks a certificate by SNI name, else the default one.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: Vec<(String, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            for (n, ck) in &self.by_name {
                if n.eq_ignore_ascii_case(name) {
                    return Some(ck.clone());
                }
            }
        }
        Some(self.default.clone())
    }
}

/// Client-side TLS settings.
///
/// ```no_run
/// let mut cfg = myriad_tls::ClientTlsConfig::with_ca_file("ca.pem");
/// cfg.alpn = vec!["h2".into()];
/// ```
#[derive(Debug, Clone)]
pub struct ClientTlsConfig {
    /// CA certificates (PEM) the server's chain must lead to.
    pub ca: PathBuf,
    /// A client certificate and key for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// ALPN protocols to offer.
    pub alpn: Vec<String>,
    /// Offer TLS 1.2 as well as 1.3.
    pub tls12: bool,
    /// Resume sessions (tickets or session ids) with servers seen before.
    pub resumption: bool,
    /// TLS 1.3 tickets kept per server for resumption (each is used
    /// once; see [`crate::SessionStore`]). Set it to the number of
    /// connections to one server you keep in flight.
    pub tickets_per_server: usize,
}

impl ClientTlsConfig {
    /// Trust the CAs in `ca` (PEM); no client certificate, no ALPN.
    ///
    /// ```
    /// let cfg = myriad_tls::ClientTlsConfig::with_ca_file("ca.pem");
    /// assert!(cfg.client_cert.is_none());
    /// ```
    pub fn with_ca_file(ca: impl Into<PathBuf>) -> Self {
        ClientTlsConfig {
            ca: ca.into(),
            client_cert: None,
            alpn: Vec::new(),
            tls12: true,
            resumption: true,
            tickets_per_server: 64,
        }
    }

    /// The rustls configuration, and the session store it resumes from
    /// (`None` when resumption is off).
    pub(crate) fn build(
        &self,
    ) -> Result<(Arc<rustls::ClientConfig>, Option<Arc<SessionStore>>), TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in load_certs(&self.ca)? {
            roots.add(c).map_err(|e| pem_err(&self.ca, e))?;
        }
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls12 {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let b = rustls::ClientConfig::builder_with_provider(crate::provider())
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let mut cfg = match &self.client_cert {
            None => b.with_no_client_auth(),
            Some((chain, key)) => b
                .with_client_auth_cert(load_certs(chain)?, load_key(key)?)
                .map_err(|e| TlsError::Config(e.to_string()))?,
        };
        cfg.alpn_protocols = self.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let store = if self.resumption {
            let store = Arc::new(SessionStore::new(self.tickets_per_server));
            cfg.resumption = rustls::client::Resumption::store(store.clone());
            Some(store)
        } else {
            cfg.resumption = rustls::client::Resumption::disabled();
            None
        };
        Ok((Arc::new(cfg), store))
    }
}

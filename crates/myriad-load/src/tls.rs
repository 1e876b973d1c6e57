//! TLS for `tls://` and `wss://` targets: the rustls client configuration
//! built from the flags, handed to the engine's connector as a
//! `myriad-tls` filter factory (one rustls client connection per
//! connection; `on_open` runs once its handshake is done).
//!
//! Trust: `--ca FILE`, else the system's CA bundle (the usual Linux paths),
//! else `--insecure` (no certificate check at all — testing only). The
//! server name (`--sni`, default the URL's host) is sent as SNI and checked
//! against the certificate; an IP address is checked against the
//! certificate's IP entries and not sent. `--tls-resume` shares one session
//! cache among all connections of a process, so that after the first full
//! handshakes connections resume (TLS 1.3 tickets, TLS 1.2 session ids);
//! without it every connection makes a full handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use myriad::FilterFactory;
use myriad_tls::rustls;
use myriad_tls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use myriad_tls::rustls::pki_types::pem::PemObject;
use myriad_tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use myriad_tls::rustls::{DigitallySignedStruct, SignatureScheme};

/// `--tls-version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsVersion {
    /// TLS 1.3 or 1.2, as the server prefers (1.3 first).
    Any,
    /// TLS 1.2 only.
    #[value(name = "1.2")]
    V12,
    /// TLS 1.3 only.
    #[value(name = "1.3")]
    V13,
}

/// Where the trusted CAs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// These PEM files (`--ca`, or the system bundle).
    Ca(PathBuf),
    /// No verification (`--insecure`).
    Insecure,
}

/// The TLS settings of a run.
#[derive(Debug, Clone)]
pub struct TlsOpts {
    /// Trusted CAs, or none.
    pub trust: Trust,
    /// Server name for SNI and the certificate check.
    pub server_name: String,
    /// ALPN protocols offered, in order.
    pub alpn: Vec<String>,
    /// Share a session cache among the connections.
    pub resume: bool,
    /// TLS 1.3 tickets kept for resumption (the connections in flight).
    pub tickets: usize,
    /// Protocol versions offered.
    pub version: TlsVersion,
    /// Client certificate chain and key (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// CA bundles of the common Linux distributions, in order of preference.
pub const SYSTEM_CA_FILES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The first system CA bundle that exists.
pub fn system_ca() -> Option<PathBuf> {
    SYSTEM_CA_FILES
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_path_buf)
}

/// A configuration problem, naming the flag it comes from.
#[derive(Debug)]
pub struct TlsSetupError {
    /// The flag (`--ca`, `--sni`, `--client-cert`, ...).
    pub flag: &'static str,
    /// What is wrong.
    pub message: String,
}

fn err(flag: &'static str, message: impl std::fmt::Display) -> TlsSetupError {
    TlsSetupError {
        flag,
        message: message.to_string(),
    }
}

fn read_certs(
    path: &Path,
    flag: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(flag, format!("{}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(flag, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(err(
            flag,
            format!("{}: no CERTIFICATE block found", path.display()),
        ));
    }
    Ok(certs)
}

impl TlsOpts {
    /// The rustls client configuration (reads every file).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
        let provider = myriad_tls::provider();
        let versions: &[&rustls::SupportedProtocolVersion] = match self.version {
            TlsVersion::Any => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::V12 => &[&rustls::version::TLS12],
            TlsVersion::V13 => &[&rustls::version::TLS13],
        };
        let b = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| err("--tls-version", e))?;
        let b = match &self.trust {
            Trust::Ca(path) => {
                let mut roots = rustls::RootCertStore::empty();
                let (added, _ignored) = roots.add_parsable_certificates(read_certs(path, "--ca")?);
                if added == 0 {
                    return Err(err(
                        "--ca",
                        format!("{}: no usable CA certificate", path.display()),
                    ));
                }
                b.with_root_certificates(roots)
            }
            Trust::Insecure => b
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider))),
        };
        let mut cfg = match &self.client_cert {
            None => b.with_no_client_auth(),
            Some((chain, key)) => {
                let certs = read_certs(chain, "--client-cert")?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| err("--client-key", format!("{}: {e}", key.display())))?;
                b.with_client_auth_cert(certs, key)
                    .map_err(|e| err("--client-key", e))?
            }
        };
        cfg.alpn_protocols = self.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        cfg.resumption = if self.resume {
            // rustls's own cache keeps 8 TLS 1.3 tickets per server, and
            // each is used once: with more connections in flight than
            // that, the rest would silently make full handshakes.
            rustls::client::Resumption::store(Arc::new(myriad_tls::SessionStore::new(self.tickets)))
        } else {
            rustls::client::Resumption::disabled()
        };
        Ok(Arc::new(cfg))
    }

    /// The filter factory for the connector, and the connector (which
    /// counts the handshakes by kind).
    pub fn factory(&self) -> Result<(FilterFactory, myriad_tls::TlsConnector), TlsSetupError> {
        // Checked first: a bad name is the more basic mistake.
        ServerName::try_from(self.server_name.clone()).map_err(|e| {
            err(
                "--sni",
                format!("{:?} is not a server name: {e}", self.server_name),
            )
        })?;
        let connector = myriad_tls::TlsConnector::from_config(self.client_config()?);
        let factory = connector
            .factory(&self.server_name)
            .map_err(|e| err("--sni", e))?;
        Ok((factory, connector))
    }
}

/// `--insecure`: accepts any certificate for any name. The handshake
/// signatures are still checked (so the key exchange is what the server
/// signed), which keeps the cost of the handshake that of a real one.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
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

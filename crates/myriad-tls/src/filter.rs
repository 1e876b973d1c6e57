//! The rustls filters.
//!
//! rustls's buffered API is used: ciphertext is copied into rustls's
//! deframer, decrypted in place, and the plaintext copied out into the
//! engine's per-loop scratch buffer; written plaintext is encrypted into
//! rustls's send buffer and drained into the connection's pooled write
//! queue. Between calls rustls keeps its own buffers only (it releases the
//! deframer buffer when empty), so an idle TLS connection holds no
//! plaintext or ciphertext of ours.

use crate::config::{ClientTlsConfig, ServerTlsConfig, TlsError};
use crate::session::SessionStore;
use myriad::{Filter, FilterError};
use rustls::pki_types::ServerName;
use std::io::{self, BufRead, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

/// Server-side TLS: makes one filter per accepted connection from the
/// current configuration, which can be swapped at run time.
///
/// ```no_run
/// use myriad_tls::{ServerTlsConfig, TlsAcceptor};
/// let cfg = ServerTlsConfig::from_pem_files("cert.pem", "key.pem")?;
/// let acceptor = TlsAcceptor::new(&cfg)?;
/// // later, e.g. on SIGHUP, after the files were replaced:
/// acceptor.reload(&cfg)?;
/// # Ok::<(), myriad_tls::TlsError>(())
/// ```
#[derive(Clone)]
pub struct TlsAcceptor {
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
    counters: Arc<Counters>,
}

/// Handshakes completed through one [`TlsAcceptor`] or [`TlsConnector`]
/// (all its clones and filters), by kind.
///
/// ```
/// let c = myriad_tls::HandshakeCounts::default();
/// assert_eq!(c.full + c.resumed, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandshakeCounts {
    /// Full handshakes (including those with a HelloRetryRequest).
    pub full: u64,
    /// Resumed handshakes (TLS 1.3 PSK or TLS 1.2 session id / ticket).
    pub resumed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    full: AtomicU64,
    resumed: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> HandshakeCounts {
        HandshakeCounts {
            full: self.full.load(Relaxed),
            resumed: self.resumed.load(Relaxed),
        }
    }
}

impl TlsAcceptor {
    /// Loads certificates and keys and builds the configuration.
    ///
    /// ```no_run
    /// # use myriad_tls::{ServerTlsConfig, TlsAcceptor};
    /// let a = TlsAcceptor::new(&ServerTlsConfig::from_pem_files("cert.pem", "key.pem")?)?;
    /// # Ok::<(), myriad_tls::TlsError>(())
    /// ```
    pub fn new(cfg: &ServerTlsConfig) -> Result<Self, TlsError> {
        Ok(TlsAcceptor {
            current: Arc::new(RwLock::new(cfg.build()?)),
            counters: Arc::default(),
        })
    }

    /// Rebuilds the configuration from `cfg` (re-reading the files) and
    /// uses it for every new connection; established connections keep the
    /// configuration they started with. On error the old one stays.
    ///
    /// ```no_run
    /// # use myriad_tls::{ServerTlsConfig, TlsAcceptor};
    /// # let cfg = ServerTlsConfig::from_pem_files("cert.pem", "key.pem")?;
    /// # let a = TlsAcceptor::new(&cfg)?;
    /// if let Err(e) = a.reload(&cfg) { eprintln!("keeping old certificates: {e}"); }
    /// # Ok::<(), myriad_tls::TlsError>(())
    /// ```
    pub fn reload(&self, cfg: &ServerTlsConfig) -> Result<(), TlsError> {
        let new = cfg.build()?;
        match self.current.write() {
            Ok(mut g) => *g = new,
            Err(p) => *p.into_inner() = new,
        }
        Ok(())
    }

    /// Handshakes completed so far on connections from this acceptor (a
    /// server's resumption rate, say); reloads keep counting.
    ///
    /// ```no_run
    /// # fn f(a: &myriad_tls::TlsAcceptor) {
    /// let h = a.handshakes();
    /// println!("{} full, {} resumed", h.full, h.resumed);
    /// # }
    /// ```
    pub fn handshakes(&self) -> HandshakeCounts {
        self.counters.snapshot()
    }

    fn config(&self) -> Arc<rustls::ServerConfig> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// A filter for one new connection.
    ///
    /// ```no_run
    /// # fn f(a: &myriad_tls::TlsAcceptor) {
    /// let filter: Box<dyn myriad::Filter> = a.filter();
    /// # }
    /// ```
    pub fn filter(&self) -> Box<dyn Filter> {
        match rustls::ServerConnection::new(self.config()) {
            Ok(conn) => Box::new(TlsFilter {
                conn: Conn::Server(conn),
                counters: self.counters.clone(),
            }),
            Err(e) => Box::new(Failed(e.to_string())),
        }
    }

    /// A factory for [`myriad::Service::filter`].
    ///
    /// ```no_run
    /// # use myriad::{Ctx, Handler, Service};
    /// # struct E; impl Handler for E { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// # fn f(a: &myriad_tls::TlsAcceptor) {
    /// let svc = Service::new("tls", "127.0.0.1:7443".parse().unwrap(), || E).filter(a.factory());
    /// # }
    /// ```
    pub fn factory(&self) -> impl Fn() -> Box<dyn Filter> + Send + Sync + 'static {
        let me = self.clone();
        move || me.filter()
    }
}

/// Client-side TLS for outbound connections.
///
/// ```no_run
/// use myriad::ConnectOptions;
/// use myriad_tls::{ClientTlsConfig, TlsConnector};
/// let c = TlsConnector::new(&ClientTlsConfig::with_ca_file("ca.pem"))?;
/// let opts = ConnectOptions { filter: Some(c.factory("localhost")?), ..Default::default() };
/// # Ok::<(), myriad_tls::TlsError>(())
/// ```
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    store: Option<Arc<SessionStore>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("handshakes", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// Builds the client configuration (reads the CA file).
    ///
    /// ```no_run
    /// let c = myriad_tls::TlsConnector::new(&myriad_tls::ClientTlsConfig::with_ca_file("ca.pem"))?;
    /// # Ok::<(), myriad_tls::TlsError>(())
    /// ```
    pub fn new(cfg: &ClientTlsConfig) -> Result<Self, TlsError> {
        let (config, store) = cfg.build()?;
        Ok(TlsConnector {
            config,
            store,
            counters: Arc::default(),
        })
    }

    /// Handshakes completed so far on connections made with this
    /// connector's factories, by kind.
    ///
    /// ```no_run
    /// # fn f(c: &myriad_tls::TlsConnector) {
    /// let h = c.handshakes();
    /// println!("{} of {} resumed", h.resumed, h.full + h.resumed);
    /// # }
    /// ```
    pub fn handshakes(&self) -> HandshakeCounts {
        self.counters.snapshot()
    }

    /// The session store new connections resume from, when resumption is
    /// on: its [`SessionStore::hits`] and [`SessionStore::misses`] say how
    /// many connections could offer a ticket.
    ///
    /// ```no_run
    /// let c = myriad_tls::TlsConnector::new(&myriad_tls::ClientTlsConfig::with_ca_file("ca.pem"))?;
    /// if let Some(s) = c.session_store() { println!("{} resumed offers", s.hits()); }
    /// # Ok::<(), myriad_tls::TlsError>(())
    /// ```
    pub fn session_store(&self) -> Option<&Arc<SessionStore>> {
        self.store.as_ref()
    }

    /// A connector over a rustls configuration built by the caller (a load
    /// generator with its own verifier or trust store, say). Build it with
    /// [`crate::provider`] so that both sides use the same crypto.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// let cfg = myriad_tls::rustls::ClientConfig::builder_with_provider(myriad_tls::provider())
    ///     .with_safe_default_protocol_versions()?
    ///     .with_root_certificates(myriad_tls::rustls::RootCertStore::empty())
    ///     .with_no_client_auth();
    /// let c = myriad_tls::TlsConnector::from_config(Arc::new(cfg));
    /// # Ok::<(), myriad_tls::rustls::Error>(())
    /// ```
    pub fn from_config(config: Arc<rustls::ClientConfig>) -> Self {
        TlsConnector {
            config,
            store: None,
            counters: Arc::default(),
        }
    }

    /// A filter factory for connections to `server_name` (checked against
    /// the server's certificate and sent as SNI).
    ///
    /// ```no_run
    /// # fn f(c: &myriad_tls::TlsConnector) -> Result<(), myriad_tls::TlsError> {
    /// let factory = c.factory("localhost")?;
    /// # Ok(()) }
    /// ```
    pub fn factory(&self, server_name: &str) -> Result<myriad::FilterFactory, TlsError> {
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| TlsError::Config(format!("server name {server_name:?}: {e}")))?;
        let cfg = self.config.clone();
        let counters = self.counters.clone();
        Ok(Arc::new(move || -> Box<dyn Filter> {
            match rustls::ClientConnection::new(cfg.clone(), name.clone()) {
                Ok(conn) => Box::new(TlsFilter {
                    conn: Conn::Client(conn),
                    counters: counters.clone(),
                }),
                Err(e) => Box::new(Failed(e.to_string())),
            }
        }))
    }
}

enum Conn {
    Server(rustls::ServerConnection),
    Client(rustls::ClientConnection),
}

// `ConnectionCommon<Data>` differs per side; a small macro keeps the two
// arms identical without an unsafe cast.
macro_rules! with_conn {
    ($c:expr, $x:ident => $body:expr) => {
        match $c {
            Conn::Server($x) => $body,
            Conn::Client($x) => $body,
        }
    };
}

struct TlsFilter {
    conn: Conn,
    counters: Arc<Counters>,
}

struct Net<'a>(&'a mut dyn FnMut(&[u8]));

impl Write for Net<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (self.0)(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The kind used for counting a rustls error.
fn kind_of(e: &rustls::Error) -> &'static str {
    use rustls::Error as E;
    match e {
        E::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
        | E::InvalidMessage(rustls::InvalidMessage::UnknownProtocolVersion) => "not_tls",
        E::InvalidMessage(_) => "bad_record",
        E::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => "unknown_ca",
        E::InvalidCertificate(_) => "bad_certificate",
        E::NoCertificatesPresented => "no_client_certificate",
        E::DecryptError => "decrypt_error",
        E::AlertReceived(_) => "alert_received",
        E::PeerIncompatible(_) => "incompatible",
        E::PeerMisbehaved(_) => "peer_misbehaved",
        E::NoApplicationProtocol => "no_alpn_match",
        _ => "tls_error",
    }
}

fn flush_tls(conn: &mut Conn, net: &mut dyn FnMut(&[u8])) {
    let mut w = Net(net);
    with_conn!(conn, c => {
        // Bounded: each round drains rustls's queue; it cannot refill itself.
        for _ in 0..64 {
            if !c.wants_write() {
                break;
            }
            if c.write_tls(&mut w).is_err() {
                break;
            }
        }
    })
}

impl Filter for TlsFilter {
    fn start(&mut self, net: &mut dyn FnMut(&[u8])) -> Result<(), FilterError> {
        flush_tls(&mut self.conn, net);
        Ok(())
    }

    fn decode(
        &mut self,
        mut input: &[u8],
        app: &mut Vec<u8>,
        net: &mut dyn FnMut(&[u8]),
    ) -> Result<(), FilterError> {
        let mut result = Ok(());
        let was_handshaking = self.is_handshaking();
        with_conn!(&mut self.conn, c => {
            while !input.is_empty() {
                match c.read_tls(&mut input) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        result = Err(FilterError::new("bad_record", e.to_string()));
                        break;
                    }
                }
                match c.process_new_packets() {
                    Ok(state) => {
                        let n = state.plaintext_bytes_to_read();
                        if n > 0 {
                            // Straight from rustls's decrypted records into
                            // `app`: no zero-fill of a destination first.
                            // Bounded: each round consumes a non-empty chunk.
                            app.reserve(n);
                            let mut reader = c.reader();
                            for _ in 0..n {
                                match reader.fill_buf() {
                                    Ok([]) => break,
                                    Ok(chunk) => {
                                        let len = chunk.len();
                                        app.extend_from_slice(chunk);
                                        reader.consume(len);
                                    }
                                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                    Err(e) => {
                                        result = Err(FilterError::new("tls_error", e.to_string()));
                                        break;
                                    }
                                }
                            }
                            if result.is_err() {
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        result = Err(FilterError::new(kind_of(&e), e.to_string()));
                        break;
                    }
                }
            }
        });
        if was_handshaking && !self.is_handshaking() {
            let kind = with_conn!(&self.conn, c => c.handshake_kind());
            match kind {
                Some(rustls::HandshakeKind::Resumed) => &self.counters.resumed,
                _ => &self.counters.full,
            }
            .fetch_add(1, Relaxed);
        }
        // Handshake replies, session tickets, or the alert for an error.
        flush_tls(&mut self.conn, net);
        result
    }

    fn encode(&mut self, mut plain: &[u8], net: &mut dyn FnMut(&[u8])) -> Result<(), FilterError> {
        // rustls accepts plaintext up to its buffer limit per call; drain the
        // records it made and go on until everything is taken. (During the
        // handshake it buffers plaintext and sends it once the handshake
        // completes, flushed by a later decode.)
        loop {
            if plain.is_empty() {
                break;
            }
            let n = with_conn!(&mut self.conn, c => c.writer().write(plain))
                .map_err(|e| FilterError::new("tls_error", e.to_string()))?;
            plain = &plain[n..];
            flush_tls(&mut self.conn, net);
            if n == 0 {
                // Only possible while handshaking with a full buffer.
                return Err(FilterError::new(
                    "tls_error",
                    "too much data written before the handshake completed",
                ));
            }
        }
        flush_tls(&mut self.conn, net);
        Ok(())
    }

    fn eof(&mut self) -> Result<(), FilterError> {
        if self.is_handshaking() {
            // The engine reports a handshake cut short on its own.
            return Ok(());
        }
        with_conn!(&mut self.conn, c => {
            let _ = c.read_tls(&mut &[][..]);
            if let Err(e) = c.process_new_packets() {
                return Err(FilterError::new(kind_of(&e), e.to_string()));
            }
            let mut one = [0u8; 1];
            match c.reader().read(&mut one) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    Err(FilterError::new("truncated", "peer closed without close_notify"))
                }
                _ => Ok(()),
            }
        })
    }

    fn close(&mut self, net: &mut dyn FnMut(&[u8])) {
        with_conn!(&mut self.conn, c => c.send_close_notify());
        flush_tls(&mut self.conn, net);
    }

    fn is_handshaking(&self) -> bool {
        match &self.conn {
            Conn::Server(c) => c.is_handshaking(),
            Conn::Client(c) => c.is_handshaking(),
        }
    }
}

/// A filter that could not even be created: fails the connection at once.
struct Failed(String);

impl Filter for Failed {
    fn decode(
        &mut self,
        _: &[u8],
        _: &mut Vec<u8>,
        _: &mut dyn FnMut(&[u8]),
    ) -> Result<(), FilterError> {
        Err(FilterError::new("tls_error", self.0.clone()))
    }
    fn encode(&mut self, _: &[u8], _: &mut dyn FnMut(&[u8])) -> Result<(), FilterError> {
        Err(FilterError::new("tls_error", self.0.clone()))
    }
    fn start(&mut self, _: &mut dyn FnMut(&[u8])) -> Result<(), FilterError> {
        Err(FilterError::new("tls_error", self.0.clone()))
    }
    fn is_handshaking(&self) -> bool {
        true
    }
}

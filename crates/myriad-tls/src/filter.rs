//! The rustls filters.
//!
//! rustls's *unbuffered* API is used, because the buffered one copies every
//! received byte into its own deframer buffer (which it grows 4 KiB at a
//! time, zero-filling and reallocating, and shrinks again when empty) and
//! every encrypted record once more on its way out. Here:
//!
//! * received records are decrypted **in place in the engine's receive
//!   buffer**; only a record cut by the end of a receive is copied, into a
//!   per-connection carry buffer that is freed as soon as it is empty;
//! * written plaintext is encrypted record by record straight into the
//!   connection's write-queue chunk ([`myriad::Outbound::push_with`]).
//!
//! rustls 0.23 still copies each decrypted record into a `Vec` of its own
//! (its `ReadTraffic` has no in-place variant yet), and its encrypter into
//! another before the chunk; those two copies remain.
//!
//! An idle TLS connection holds no plaintext or ciphertext buffer of ours:
//! the carry buffer and the buffer for plaintext written before the
//! handshake completed are released when empty.

use crate::config::{ClientTlsConfig, ServerTlsConfig, TlsError};
use crate::session::SessionStore;
use myriad::{Filter, FilterError, Outbound};
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic,
};
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
    /// An acceptor over a rustls configuration built elsewhere (a custom
    /// crypto provider, say: the simulation's seeded one). `reload` then
    /// replaces it with one built from files.
    ///
    /// ```no_run
    /// # fn f(config: std::sync::Arc<myriad_tls::rustls::ServerConfig>) {
    /// let a = myriad_tls::TlsAcceptor::from_config(config);
    /// # }
    /// ```
    pub fn from_config(config: Arc<rustls::ServerConfig>) -> Self {
        TlsAcceptor {
            current: Arc::new(RwLock::new(config)),
            counters: Arc::default(),
        }
    }

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
        match UnbufferedServerConnection::new(self.config()) {
            Ok(conn) => Box::new(TlsFilter::new(Conn::Server(conn), self.counters.clone())),
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
            match UnbufferedClientConnection::new(cfg.clone(), name.clone()) {
                Ok(conn) => Box::new(TlsFilter::new(Conn::Client(conn), counters.clone())),
                Err(e) => Box::new(Failed(e.to_string())),
            }
        }))
    }
}

enum Conn {
    Server(UnbufferedServerConnection),
    Client(UnbufferedClientConnection),
}

// `process_tls_records` is defined per side (the states are generic); a
// small macro keeps the two arms identical without an unsafe cast.
macro_rules! with_conn {
    ($c:expr, $x:ident => $body:expr) => {
        match $c {
            Conn::Server($x) => $body,
            Conn::Client($x) => $body,
        }
    };
}

/// Plaintext a handler may write before the handshake completes (rustls's
/// buffered API allows the same).
const MAX_PENDING: usize = 64 * 1024;

/// The most the carry buffer may hold: a handshake message being joined
/// (rustls allows 64 KiB) plus one record. rustls rejects anything larger
/// long before; this bounds memory even if it did not.
const MAX_CARRY: usize = 64 * 1024 + 2 * RECORD_MAX;

/// A TLS record's header: type, version, length.
const RECORD_HEADER: usize = 5;

/// The largest record: TLS 1.2 allows 2 KiB of expansion over the 16 KiB
/// of plaintext.
const RECORD_MAX: usize = RECORD_HEADER + 16384 + 2048;

/// Plaintext per encryption call: one full record.
const FRAGMENT: usize = 16384;

/// Room asked for beyond the plaintext of one record: header, tag, nonce,
/// content type (29 bytes at most with the suites `ring` offers). A
/// shortfall (a key update queued ahead, say) is retried with the exact
/// size rustls reports.
const RECORD_OVERHEAD: usize = 64;

/// Upper bound on the states one call walks through; each state either
/// consumes input, produces output or stops, so this is never reached by
/// a sound rustls.
const MAX_STEPS: usize = 1 << 16;

struct TlsFilter {
    tls: Tls,
    /// Received bytes rustls has not consumed yet: the start of a record
    /// cut by the end of a receive, or handshake records being joined.
    /// Always the front of the buffer the next `process_tls_records` call
    /// sees, as the unbuffered API requires.
    carry: Vec<u8>,
    counters: Arc<Counters>,
}

/// The connection and what the state machine keeps besides it (apart
/// from the carried bytes, which are the buffer it runs over).
struct Tls {
    conn: Conn,
    /// Plaintext written during the handshake.
    pending: Vec<u8>,
    /// The peer's close_notify arrived.
    peer_closed: bool,
}

/// What one state asked for.
enum Flow {
    /// Call `process_tls_records` again.
    Again,
    /// Nothing more to do until more bytes arrive.
    Stop,
}

/// What the caller wants done once the connection can send application
/// data.
enum Want<'p> {
    Nothing,
    Encrypt(&'p [u8]),
    CloseNotify,
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

fn tls_error(e: &rustls::Error) -> FilterError {
    FilterError::new(kind_of(e), e.to_string())
}

/// How many more bytes `buf` needs to end on a record boundary: 0 if it
/// does, else the rest of the last record (or of its header). Lengths are
/// the peer's: rustls rejects a bad one as soon as it sees the header, and
/// the caller feeds it the header first.
fn missing(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        let left = buf.len() - at;
        if left == 0 {
            return 0;
        }
        if left < RECORD_HEADER {
            return RECORD_HEADER - left;
        }
        let body = u16::from_be_bytes([buf[at + 3], buf[at + 4]]) as usize;
        let end = RECORD_HEADER + body;
        if left < end {
            return end - left;
        }
        at += end;
    }
}

/// Why rustls could not write into the space it was lent.
enum Refused {
    /// The space was short: this many bytes are needed.
    Short(usize),
    /// Anything else (a record already encoded, keys exhausted).
    Failed(String),
}

impl From<EncodeError> for Refused {
    fn from(e: EncodeError) -> Self {
        match e {
            EncodeError::InsufficientSize(s) => Refused::Short(s.required_size),
            e => Refused::Failed(e.to_string()),
        }
    }
}

impl From<EncryptError> for Refused {
    fn from(e: EncryptError) -> Self {
        match e {
            EncryptError::InsufficientSize(s) => Refused::Short(s.required_size),
            e => Refused::Failed(e.to_string()),
        }
    }
}

/// Lets `write` (rustls encoding or encrypting into a caller's buffer)
/// write straight into the write queue: `room` bytes first, then the exact
/// size rustls asks for if that was short (a key update queued ahead, say).
fn push_sized(
    net: &mut dyn Outbound,
    mut room: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Refused>,
) -> Result<(), FilterError> {
    // Bounded: the second try has the exact size.
    for _ in 0..3 {
        let mut refused = None;
        net.push_with(room, &mut |out| match write(out) {
            Ok(n) => n,
            Err(r) => {
                refused = Some(r);
                0
            }
        });
        match refused {
            None => return Ok(()),
            Some(Refused::Short(need)) => room = need,
            Some(Refused::Failed(why)) => return Err(FilterError::new("tls_error", why)),
        }
    }
    Err(FilterError::new(
        "tls_error",
        "no room for an encrypted record",
    ))
}

/// Moves one handshake record (or queued alert) into the write queue.
fn encode_hs<Data>(
    e: &mut rustls::unbuffered::EncodeTlsData<'_, Data>,
    net: &mut dyn Outbound,
) -> Result<(), FilterError> {
    // An empty buffer makes rustls report the exact size without encoding.
    let need = match e.encode(&mut []) {
        Ok(_) | Err(EncodeError::AlreadyEncoded) => return Ok(()),
        Err(EncodeError::InsufficientSize(s)) => s.required_size,
    };
    push_sized(net, need, |out| Ok(e.encode(out)?))
}

/// Encrypts the plaintext written during the handshake, and lets its
/// buffer go.
fn flush_pending<Data>(
    w: &mut WriteTraffic<'_, Data>,
    pending: &mut Vec<u8>,
    net: &mut dyn Outbound,
) -> Result<(), FilterError> {
    if pending.is_empty() {
        return Ok(());
    }
    let res = encrypt_into(w, pending, net);
    *pending = Vec::new();
    res
}

/// Encrypts `plain` record by record straight into the write queue.
fn encrypt_into<Data>(
    w: &mut WriteTraffic<'_, Data>,
    mut plain: &[u8],
    net: &mut dyn Outbound,
) -> Result<(), FilterError> {
    while !plain.is_empty() {
        let (record, rest) = plain.split_at(plain.len().min(FRAGMENT));
        push_sized(net, record.len() + RECORD_OVERHEAD, |out| {
            Ok(w.encrypt(record, out)?)
        })?;
        plain = rest;
    }
    Ok(())
}

/// Handles one state of the connection; returns the bytes to discard from
/// the front of the buffer it was given, and whether to go on.
fn step<Data>(
    status: UnbufferedStatus<'_, '_, Data>,
    app: &mut Vec<u8>,
    net: &mut dyn Outbound,
    pending: &mut Vec<u8>,
    peer_closed: &mut bool,
    want: &mut Want<'_>,
) -> (usize, Result<Flow, FilterError>) {
    let mut discard = status.discard;
    let state = match status.state {
        Ok(s) => s,
        Err(e) => return (discard, Err(tls_error(&e))),
    };
    let flow = match state {
        ConnectionState::ReadTraffic(mut r) => {
            // Bounded by the records rustls has decrypted.
            let mut res = Ok(Flow::Again);
            while let Some(rec) = r.next_record() {
                match rec {
                    Ok(rec) => {
                        discard += rec.discard;
                        app.extend_from_slice(rec.payload);
                    }
                    Err(e) => {
                        res = Err(tls_error(&e));
                        break;
                    }
                }
            }
            res
        }
        ConnectionState::PeerClosed => {
            *peer_closed = true;
            Ok(Flow::Again)
        }
        ConnectionState::Closed => Ok(Flow::Stop),
        ConnectionState::ReadEarlyData(_) => {
            // Our servers never accept 0-RTT data; dropping some silently
            // would lose a peer's bytes.
            Err(FilterError::new("tls_error", "unexpected early data"))
        }
        ConnectionState::EncodeTlsData(mut e) => encode_hs(&mut e, net).map(|_| Flow::Again),
        ConnectionState::TransmitTlsData(mut t) => {
            // What was encoded is already in the write queue, which sends it.
            let res = match t.may_encrypt_app_data() {
                Some(mut w) => flush_pending(&mut w, pending, net),
                None => Ok(()),
            };
            t.done();
            res.map(|_| Flow::Again)
        }
        ConnectionState::BlockedHandshake => {
            match std::mem::replace(want, Want::Nothing) {
                Want::Encrypt(plain) => {
                    if pending.len() + plain.len() > MAX_PENDING {
                        return (
                            discard,
                            Err(FilterError::new(
                                "tls_error",
                                "too much data written before the handshake completed",
                            )),
                        );
                    }
                    pending.extend_from_slice(plain);
                }
                // No close_notify before the keys exist; the engine closes.
                Want::CloseNotify | Want::Nothing => {}
            }
            Ok(Flow::Stop)
        }
        ConnectionState::WriteTraffic(mut w) => flush_pending(&mut w, pending, net)
            .and_then(|_| match std::mem::replace(want, Want::Nothing) {
                Want::Nothing => Ok(()),
                Want::Encrypt(plain) => encrypt_into(&mut w, plain, net),
                Want::CloseNotify => push_sized(net, 64, |out| Ok(w.queue_close_notify(out)?)),
            })
            .map(|_| Flow::Stop),
        _ => Err(FilterError::new(
            "tls_error",
            "unknown rustls connection state",
        )),
    };
    (discard, flow)
}

/// After an error rustls has queued its fatal alert: move it to the
/// write queue (the engine sends it before closing). Only while rustls
/// has records queued: past them it would parse the bad input again
/// (and queue a second alert).
fn send_alert(conn: &mut Conn, buf: &mut [u8], net: &mut dyn Outbound) {
    let mut pos = 0;
    let len = buf.len();
    // Bounded: each round takes one queued record.
    for _ in 0..16 {
        let more = with_conn!(&mut *conn, c => {
            if !c.wants_write() {
                false
            } else {
                let status = c.process_tls_records(&mut buf[pos..]);
                pos = (pos + status.discard).min(len);
                match status.state {
                    Ok(ConnectionState::EncodeTlsData(mut e)) => encode_hs(&mut e, net).is_ok(),
                    // Plaintext decrypted before the error: the
                    // connection is failing, nobody will read it.
                    Ok(ConnectionState::ReadTraffic(mut r)) => {
                        while let Some(Ok(_)) = r.next_record() {}
                        true
                    }
                    _ => false,
                }
            }
        });
        if !more {
            break;
        }
    }
}

impl Tls {
    /// Runs the state machine over `buf` (the carry buffer, or a receive
    /// buffer when nothing is carried) until it needs more bytes; returns
    /// how many bytes at the front of `buf` it is done with. On an error,
    /// queues the alert rustls prepared first.
    fn drive(
        &mut self,
        buf: &mut [u8],
        app: &mut Vec<u8>,
        net: &mut dyn Outbound,
        mut want: Want<'_>,
    ) -> Result<usize, FilterError> {
        let Tls {
            conn,
            pending,
            peer_closed,
        } = self;
        let mut pos = 0;
        for _ in 0..MAX_STEPS {
            let (discard, flow) = with_conn!(&mut *conn, c => {
                let status = c.process_tls_records(&mut buf[pos..]);
                step(status, app, net, pending, peer_closed, &mut want)
            });
            pos = (pos + discard).min(buf.len());
            match flow {
                Ok(Flow::Again) => {}
                Ok(Flow::Stop) => return Ok(pos),
                Err(e) => {
                    send_alert(conn, &mut buf[pos..], net);
                    return Err(e);
                }
            }
        }
        Err(FilterError::new(
            "tls_error",
            "TLS state machine did not settle",
        ))
    }
}

impl TlsFilter {
    fn new(conn: Conn, counters: Arc<Counters>) -> Self {
        TlsFilter {
            tls: Tls {
                conn,
                pending: Vec::new(),
                peer_closed: false,
            },
            carry: Vec::new(),
            counters,
        }
    }

    /// Runs the state machine over what is carried, with no new bytes (to
    /// encrypt, or to say goodbye).
    fn drive_carried(&mut self, want: Want<'_>, net: &mut dyn Outbound) -> Result<(), FilterError> {
        let mut app = Vec::new();
        let used = self.tls.drive(&mut self.carry, &mut app, net, want)?;
        self.discard_carried(used);
        if !app.is_empty() {
            // Cannot happen: every decoded record was handed on by `decode`.
            return Err(FilterError::new(
                "tls_error",
                "application data outside decode",
            ));
        }
        Ok(())
    }

    fn discard_carried(&mut self, used: usize) {
        if used >= self.carry.len() {
            // Idle connections keep no buffer.
            self.carry = Vec::new();
        } else if used > 0 {
            self.carry.drain(..used);
        }
    }

    fn carry_more(&mut self, bytes: &[u8]) -> Result<(), FilterError> {
        if self.carry.len() + bytes.len() > MAX_CARRY {
            return Err(FilterError::new(
                "bad_record",
                "too many bytes without a whole record",
            ));
        }
        if self.carry.capacity() == 0 {
            self.carry.reserve(bytes.len().max(RECORD_MAX));
        }
        self.carry.extend_from_slice(bytes);
        Ok(())
    }

    fn count_handshake(&self) {
        let kind = with_conn!(&self.tls.conn, c => c.handshake_kind());
        match kind {
            Some(rustls::HandshakeKind::Resumed) => &self.counters.resumed,
            _ => &self.counters.full,
        }
        .fetch_add(1, Relaxed);
    }

    fn decode_inner(
        &mut self,
        mut input: &mut [u8],
        app: &mut Vec<u8>,
        net: &mut dyn Outbound,
    ) -> Result<(), FilterError> {
        // First complete what is carried, taking from `input` only what the
        // carried record lacks, so that the records after it are decrypted
        // where they are. Bounded: every round moves at least one byte.
        while !self.carry.is_empty() && !input.is_empty() && !self.tls.peer_closed {
            let need = missing(&self.carry);
            // Ends on a record boundary yet not consumed: handshake records
            // being joined; keep adding to them.
            let take = if need == 0 {
                input.len()
            } else {
                need.min(input.len())
            };
            let (head, rest) = std::mem::take(&mut input).split_at_mut(take);
            input = rest;
            self.carry_more(head)?;
            let used = self.tls.drive(&mut self.carry, app, net, Want::Nothing)?;
            self.discard_carried(used);
        }
        if self.carry.is_empty() && !input.is_empty() && !self.tls.peer_closed {
            let used = self.tls.drive(input, app, net, Want::Nothing)?;
            if used < input.len() && !self.tls.peer_closed {
                self.carry_more(&input[used..])?;
            }
        }
        if self.tls.peer_closed {
            // Whatever follows close_notify is not part of the stream (rustls
            // stops reading there); keeping it would only grow the carry.
            self.carry = Vec::new();
        }
        Ok(())
    }
}

impl Filter for TlsFilter {
    fn start(&mut self, net: &mut dyn Outbound) -> Result<(), FilterError> {
        // The client's ClientHello is ready; a server has nothing to say.
        self.drive_carried(Want::Nothing, net)
    }

    fn decode(
        &mut self,
        input: &mut [u8],
        app: &mut Vec<u8>,
        net: &mut dyn Outbound,
    ) -> Result<(), FilterError> {
        let was_handshaking = self.is_handshaking();
        let res = self.decode_inner(input, app, net);
        if was_handshaking && !self.is_handshaking() {
            self.count_handshake();
        }
        res
    }

    fn encode(&mut self, plain: &[u8], net: &mut dyn Outbound) -> Result<(), FilterError> {
        if plain.is_empty() {
            return Ok(());
        }
        self.drive_carried(Want::Encrypt(plain), net)
    }

    fn eof(&mut self) -> Result<(), FilterError> {
        if self.is_handshaking() {
            // The engine reports a handshake cut short on its own.
            return Ok(());
        }
        if !self.carry.is_empty() {
            return Err(FilterError::new(
                "truncated",
                "peer closed in the middle of a record",
            ));
        }
        if !self.tls.peer_closed {
            return Err(FilterError::new(
                "truncated",
                "peer closed without close_notify",
            ));
        }
        Ok(())
    }

    fn close(&mut self, net: &mut dyn Outbound) {
        let _ = self.drive_carried(Want::CloseNotify, net);
    }

    fn is_handshaking(&self) -> bool {
        with_conn!(&self.tls.conn, c => c.is_handshaking())
    }
}

/// A filter that could not even be created: fails the connection at once.
struct Failed(String);

impl Filter for Failed {
    fn decode(
        &mut self,
        _: &mut [u8],
        _: &mut Vec<u8>,
        _: &mut dyn Outbound,
    ) -> Result<(), FilterError> {
        Err(FilterError::new("tls_error", self.0.clone()))
    }
    fn encode(&mut self, _: &[u8], _: &mut dyn Outbound) -> Result<(), FilterError> {
        Err(FilterError::new("tls_error", self.0.clone()))
    }
    fn start(&mut self, _: &mut dyn Outbound) -> Result<(), FilterError> {
        Err(FilterError::new("tls_error", self.0.clone()))
    }
    fn is_handshaking(&self) -> bool {
        true
    }
}

//! What the TLS simulation (`tests/sim.rs`) and its loopback twin
//! (`tests/loopback.rs`) share: a crypto provider whose randomness comes
//! from a seed, the scenario a seed makes (clients, what each sends, in
//! which pieces), and the client, a rustls connection that answers what
//! the server sends.
//!
//! Determinism: rustls takes its randomness from the provider's
//! `secure_random` (client and server randoms, session ids, tickets'
//! `age_add`), but `ring` draws the ephemeral key-exchange secrets and
//! ECDSA/RSA-PSS signature nonces from the system. So the provider here
//! also brings its own X25519 key exchange (private keys from the seed,
//! the curve from `x25519-dalek`, checked against RFC 7748 and against
//! `ring`), and the
//! server's certificate is Ed25519 (deterministic signatures) made from a
//! fixed key. Time is fixed too. With that, a seed gives the same bytes on
//! the wire every time.

#![allow(dead_code)] // each test binary uses its own part

use myriad::{Ctx, Handler};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, SecureRandom, SharedSecret, SupportedKxGroup,
    WebPkiSupportedAlgorithms,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::time_provider::TimeProvider;
use rustls::{DigitallySignedStruct, NamedGroup, SignatureScheme};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

/// The simulation's own generator (splitmix64).
pub use myriad::sim::Rng;

// ---- X25519 (RFC 7748) ----

/// X25519(k, u) of RFC 7748 (`x25519-dalek`): ring computes the same
/// function but only on secrets it draws from the system itself, which a
/// seeded run cannot use.
pub fn x25519(k: &[u8; 32], u: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::x25519(*k, *u)
}

/// The base point's u.
pub const BASE: [u8; 32] = {
    let mut b = [0u8; 32];
    b[0] = 9;
    b
};

// ---- the seeded provider ----

/// rustls's randomness, from a seed (test only: predictable by design).
#[derive(Debug)]
struct SeededRandom(Mutex<Rng>);

impl SecureRandom for SeededRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        let mut rng = self.0.lock().map_err(|_| rustls::crypto::GetRandomFailed)?;
        for chunk in buf.chunks_mut(8) {
            let v = rng.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
}

/// X25519 with private keys from the seeded randomness.
#[derive(Debug)]
struct SeededX25519(&'static SeededRandom);

struct Exchange {
    secret: [u8; 32],
    public: [u8; 32],
}

impl SupportedKxGroup for SeededX25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let mut secret = [0u8; 32];
        self.0
            .fill(&mut secret)
            .map_err(|_| rustls::Error::FailedToGetRandomBytes)?;
        Ok(Box::new(Exchange {
            secret,
            public: x25519(&secret, &BASE),
        }))
    }
    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

impl ActiveKeyExchange for Exchange {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, rustls::Error> {
        let peer: &[u8; 32] = peer
            .try_into()
            .map_err(|_| rustls::Error::from(rustls::PeerMisbehaved::InvalidKeyShare))?;
        let shared = x25519(&self.secret, peer);
        if shared == [0; 32] {
            return Err(rustls::PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared[..]))
    }
    fn pub_key(&self) -> &[u8] {
        &self.public
    }
    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// `ring`'s provider with randomness and key exchange from `seed`. Each
/// call leaks two small objects (rustls wants them `'static`): a few per
/// seed in a test process.
pub fn provider(seed: u64) -> Arc<CryptoProvider> {
    let random: &'static SeededRandom = Box::leak(Box::new(SeededRandom(Mutex::new(Rng(seed)))));
    let kx: &'static SeededX25519 = Box::leak(Box::new(SeededX25519(random)));
    Arc::new(CryptoProvider {
        secure_random: random,
        kx_groups: vec![kx],
        ..rustls::crypto::ring::default_provider()
    })
}

/// A fixed "now" (2023-11-14): nothing in the scenario depends on the
/// wall clock.
#[derive(Debug)]
struct FixedTime;

impl TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            1_700_000_000,
        )))
    }
}

/// The server's certificate (self-signed, for "sim.test") and its key:
/// Ed25519 from a fixed seed, so the same bytes in every process.
pub fn server_identity() -> (CertificateDer<'static>, Vec<u8>) {
    // PKCS#8 v1 for an Ed25519 key: the fixed prefix, then the 32-byte seed
    let mut pkcs8 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    pkcs8.extend((0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(11)));
    let key = rcgen::KeyPair::try_from(&pkcs8[..]).expect("the fixed Ed25519 key");
    let cert = rcgen::CertificateParams::new(vec!["sim.test".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed certificate");
    (cert.der().clone(), pkcs8)
}

/// Accepts exactly the server's certificate; checks handshake signatures
/// as webpki would.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::CertificateError::UnknownIssuer.into())
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

fn versions(tls13: bool) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static V13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    static V12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    if tls13 {
        &V13
    } else {
        &V12
    }
}

/// The server's configuration, its randomness from `seed`.
pub fn server_config(seed: u64, tls13: bool) -> Arc<rustls::ServerConfig> {
    let (cert, key) = server_identity();
    let cfg = rustls::ServerConfig::builder_with_details(provider(seed), Arc::new(FixedTime))
        .with_protocol_versions(versions(tls13))
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], PrivateKeyDer::Pkcs8(key.into()))
        .expect("server certificate");
    Arc::new(cfg)
}

/// A client's configuration, its randomness from `seed`, trusting exactly
/// the server's certificate.
pub fn client_config(seed: u64, tls13: bool) -> rustls::ClientConfig {
    let (cert, _) = server_identity();
    let provider = provider(seed);
    let algs = provider.signature_verification_algorithms;
    rustls::ClientConfig::builder_with_details(provider, Arc::new(FixedTime))
        .with_protocol_versions(versions(tls13))
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { cert, algs }))
        .with_no_client_auth()
}

// ---- the scenario ----

/// One client of a scenario: what it sends, in which writes (each write is
/// one record or more), and its largest record.
pub struct ClientSpec {
    pub seed: u64,
    pub data: Vec<u8>,
    pub writes: Vec<usize>,
    pub max_fragment: Option<usize>,
}

/// What a seed makes: the protocol version, and 1–3 clients.
pub struct Scenario {
    pub tls13: bool,
    pub clients: Vec<ClientSpec>,
}

impl Scenario {
    pub fn new(seed: u64) -> Scenario {
        let mut rng = Rng(seed);
        let tls13 = rng.below(3) != 0;
        let clients = (0..1 + rng.below(3))
            .map(|i| {
                let len = match rng.below(4) {
                    0 => rng.below(4),
                    1 | 2 => rng.below(600),
                    _ => rng.below(40_000),
                };
                let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                // record sizes: single bytes, small, or up to a full record
                let piece = [1, 16, 700, 20_000][rng.below(4)];
                let mut writes = Vec::new();
                let mut left = len;
                while left > 0 {
                    let n = (1 + rng.below(piece)).min(left);
                    writes.push(n);
                    left -= n;
                }
                let max_fragment = [None, None, Some(32 + rng.below(2000))][rng.below(3)];
                ClientSpec {
                    seed: seed << 8 | (i as u64 + 1),
                    data,
                    writes,
                    max_fragment,
                }
            })
            .collect();
        Scenario { tls13, clients }
    }
}

/// A TLS client that sends its data once the handshake is done, then
/// close_notify, and decrypts what comes back.
pub struct Client {
    conn: rustls::ClientConnection,
    spec: ClientSpec,
    /// It sent its data and close_notify.
    pub closed: bool,
    /// The application data the server sent.
    pub plain: Vec<u8>,
    /// The server's close_notify arrived.
    pub close_notify: bool,
    /// What went wrong (a TLS error), if anything.
    pub error: Option<String>,
}

impl Client {
    /// The client and its first words (the ClientHello).
    pub fn new(spec: ClientSpec, tls13: bool) -> (Client, Vec<u8>) {
        let mut cfg = client_config(spec.seed ^ 0x00c1_1e47, tls13);
        cfg.max_fragment_size = spec.max_fragment;
        let name = ServerName::try_from("sim.test").expect("name");
        let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).expect("client");
        // all of the data is written at once, up to 40 KB
        conn.set_buffer_limit(None);
        let mut c = Client {
            conn,
            spec,
            closed: false,
            plain: Vec::new(),
            close_notify: false,
            error: None,
        };
        let mut hello = Vec::new();
        c.pump(&mut hello);
        (c, hello)
    }

    /// What the client sent (and expects back).
    pub fn data(&self) -> &[u8] {
        &self.spec.data
    }

    /// Once the handshake is done: the data in its writes, close_notify.
    /// Then everything rustls has to send goes to `out`.
    fn pump(&mut self, out: &mut Vec<u8>) {
        if !self.conn.is_handshaking() && !self.closed && self.error.is_none() {
            let mut at = 0;
            for &n in &self.spec.writes {
                if let Err(e) = self.conn.writer().write_all(&self.spec.data[at..at + n]) {
                    self.error = Some(format!("write: {e}"));
                }
                at += n;
            }
            self.conn.send_close_notify();
            self.closed = true;
        }
        // bounded: each round writes something or stops
        for _ in 0..1 << 16 {
            if !self.conn.wants_write() {
                break;
            }
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// The server sent `data`; what the client answers goes to `out`.
    pub fn received(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        let mut buf = vec![0u8; 16 << 10];
        // each round consumes input or stops
        while !data.is_empty() && self.error.is_none() && !self.close_notify {
            match self.conn.read_tls(&mut data) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    self.error = Some(format!("read_tls: {e}"));
                    break;
                }
            }
            if let Err(e) = self.conn.process_new_packets() {
                self.error = Some(format!("tls: {e}"));
                break;
            }
            for _ in 0..1 << 16 {
                match self.conn.reader().read(&mut buf) {
                    Ok(0) => {
                        self.close_notify = true;
                        break;
                    }
                    Ok(n) => self.plain.extend_from_slice(&buf[..n]),
                    Err(_) => break, // would block: nothing more yet
                }
            }
        }
        self.pump(out);
    }

    /// It has nothing more to say (its data and close_notify are out, or
    /// it failed).
    pub fn done(&self) -> bool {
        self.closed || self.error.is_some()
    }
}

/// Echoes what it gets, nothing past the high-water mark (the engine
/// keeps the rest and delivers it again).
pub struct Echo;

impl Handler for Echo {
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        if cx.is_backpressured() {
            return 0;
        }
        cx.write(data);
        data.len()
    }
}

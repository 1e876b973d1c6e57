//! The TLS filters on their own, without an engine or sockets: a client and
//! a server filter hand each other their bytes in pieces of arbitrary sizes
//! (records cut anywhere, several records in one piece), as receives do.
//! This is where the carry logic of the unbuffered filter is exercised.

use myriad::{Filter, FilterError};
use myriad_tls::{provider, rustls, ClientTlsConfig, ServerTlsConfig, TlsAcceptor, TlsConnector};
use proptest::prelude::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

struct Pki {
    dir: PathBuf,
}

/// One CA and a server certificate for "localhost", made once per test
/// process (in a directory named by the process id; statics are never
/// dropped, so it is left in the temp directory).
fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let dir = std::env::temp_dir().join(format!("myriad-tls-filter-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        Pki { dir }
    })
}

fn acceptor() -> TlsAcceptor {
    let p = pki();
    TlsAcceptor::new(
        &ServerTlsConfig::from_pem_files(p.dir.join("server.pem"), p.dir.join("server.key"))
            .unwrap(),
    )
    .unwrap()
}

/// A connector offering TLS 1.3 and 1.2, or 1.2 only.
fn connector(tls12_only: bool) -> TlsConnector {
    let p = pki();
    if !tls12_only {
        return TlsConnector::new(&ClientTlsConfig::with_ca_file(p.dir.join("ca.pem"))).unwrap();
    }
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_file_iter(p.dir.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from_config(Arc::new(cfg))
}

/// Piece sizes, cycled: each decode call gets the next one.
struct Cuts {
    sizes: Vec<usize>,
    at: AtomicUsize,
}

impl Cuts {
    fn new(sizes: Vec<usize>) -> Self {
        Cuts {
            sizes,
            at: AtomicUsize::new(0),
        }
    }

    fn next(&self) -> usize {
        let i = self.at.fetch_add(1, Ordering::Relaxed);
        self.sizes[i % self.sizes.len()].max(1)
    }
}

/// One side: its filter, what it received for the application, and what
/// it has queued for the peer.
struct Side {
    filter: Box<dyn Filter>,
    app: Vec<u8>,
    out: Vec<u8>,
}

impl Side {
    fn new(filter: Box<dyn Filter>) -> Self {
        Side {
            filter,
            app: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Hands `wire` to the filter in pieces.
    fn receive(&mut self, mut wire: Vec<u8>, cuts: &Cuts) -> Result<(), FilterError> {
        let mut at = 0;
        // Bounded: every round takes at least one byte.
        while at < wire.len() {
            let n = cuts.next().min(wire.len() - at);
            self.filter
                .decode(&mut wire[at..at + n], &mut self.app, &mut self.out)?;
            at += n;
        }
        Ok(())
    }
}

fn pair(c: &TlsConnector) -> (Side, Side) {
    let mut client = Side::new((c.factory("localhost").unwrap())());
    client.filter.start(&mut client.out).unwrap();
    let server = Side::new(acceptor().filter());
    (client, server)
}

/// Moves bytes both ways until neither side has anything to say.
fn pump(a: &mut Side, b: &mut Side, cuts: &Cuts) -> Result<(), FilterError> {
    pump_flipping(a, b, cuts, &mut 0, usize::MAX, 0)
}

fn message(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Handshake, then the client sends `msg` (written before the handshake
/// completes when `early`), the server echoes it back.
fn echo_once(tls12_only: bool, msg: &[u8], early: bool, cuts: &Cuts) {
    let (mut client, mut server) = pair(&connector(tls12_only));
    if early {
        client.filter.encode(msg, &mut client.out).unwrap();
    }
    pump(&mut client, &mut server, cuts).unwrap();
    assert!(!client.filter.is_handshaking() && !server.filter.is_handshaking());
    if !early {
        client.filter.encode(msg, &mut client.out).unwrap();
        pump(&mut client, &mut server, cuts).unwrap();
    }
    assert!(
        server.app == msg,
        "server got {} of {} bytes",
        server.app.len(),
        msg.len()
    );
    let got = std::mem::take(&mut server.app);
    server.filter.encode(&got, &mut server.out).unwrap();
    pump(&mut client, &mut server, cuts).unwrap();
    assert!(
        client.app == msg,
        "client got {} of {} bytes",
        client.app.len(),
        msg.len()
    );
    // A clean goodbye: close_notify, then the end of the stream is no error.
    client.filter.close(&mut client.out);
    pump(&mut client, &mut server, cuts).unwrap();
    server.filter.eof().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever the pieces, every byte arrives once and in order, both
    /// ways, with TLS 1.3 and 1.2.
    #[test]
    fn any_cuts_deliver_everything(
        len in prop_oneof![0usize..64, 16_000usize..16_800, 0usize..100_000],
        sizes in prop::collection::vec(prop_oneof![1usize..8, 1usize..600, 1usize..40_000], 1..12),
        tls12_only in any::<bool>(),
        early in any::<bool>(),
    ) {
        let cuts = Cuts::new(sizes);
        // Before the handshake completes a filter buffers at most 64 KiB.
        let early = early && len <= 64 * 1024;
        echo_once(tls12_only, &message(len, 7), early, &cuts);
    }
}

/// Moves bytes both ways until neither side has anything to say, flipping
/// the bits of `mask` in the `at`-th byte the client sends (`sent` counts
/// them across calls).
fn pump_flipping(
    client: &mut Side,
    server: &mut Side,
    cuts: &Cuts,
    sent: &mut usize,
    at: usize,
    mask: u8,
) -> Result<(), FilterError> {
    // Bounded: a handshake takes a few flights; an echo one more.
    for _ in 0..32 {
        if client.out.is_empty() && server.out.is_empty() {
            return Ok(());
        }
        let mut to_server = std::mem::take(&mut client.out);
        if at >= *sent && at < *sent + to_server.len() {
            to_server[at - *sent] ^= mask;
        }
        *sent += to_server.len();
        server.receive(to_server, cuts)?;
        let to_client = std::mem::take(&mut server.out);
        client.receive(to_client, cuts)?;
    }
    panic!("the filters kept talking");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever a peer sends, a server filter fails with an error or waits
    /// for more; it never panics and never hands anything on as
    /// application data.
    #[test]
    fn garbage_is_refused_without_panic(
        body in prop::collection::vec(any::<u8>(), 0..3000),
        header in prop::option::of((20u8..24, 0u8..5, any::<u16>())),
        cut in 1usize..700,
    ) {
        let mut wire = Vec::new();
        if let Some((typ, minor, len)) = header {
            // A plausible record header, so that parsing goes further.
            wire.extend_from_slice(&[typ, 3, minor]);
            wire.extend_from_slice(&len.to_be_bytes());
        }
        wire.extend_from_slice(&body);
        let cuts = Cuts::new(vec![cut]);
        let (_, mut server) = pair(&connector(false));
        let _ = server.receive(wire, &cuts);
        prop_assert!(server.app.is_empty());
        let _ = server.filter.eof();
    }

    /// A whole conversation with one byte flipped anywhere in what the
    /// client sends: it fails with an error or stalls, but the server's
    /// application never sees altered bytes, and nothing panics.
    #[test]
    fn a_flipped_byte_anywhere_is_caught(
        at in 0usize..3000,
        mask in 1u8..=255,
        len in 1usize..2000,
        cut in prop_oneof![1usize..10, 1usize..5000],
        tls12_only in any::<bool>(),
    ) {
        let cuts = Cuts::new(vec![cut]);
        let (mut client, mut server) = pair(&connector(tls12_only));
        let msg = message(len, 9);
        let mut sent = 0;
        let res = pump_flipping(&mut client, &mut server, &cuts, &mut sent, at, mask)
            .and_then(|_| client.filter.encode(&msg, &mut client.out))
            .and_then(|_| pump_flipping(&mut client, &mut server, &cuts, &mut sent, at, mask));
        // A flip in a length field leaves a side waiting for bytes that
        // never come (the engine's handshake or idle timeout ends that):
        // less arrives, but never something else.
        let _ = res;
        prop_assert!(msg.starts_with(&server.app), "{} bytes arrived altered", len);
    }
}

#[test]
fn byte_by_byte() {
    let cuts = Cuts::new(vec![1]);
    echo_once(false, &message(20_000, 1), false, &cuts);
    echo_once(true, &message(20_000, 2), true, &cuts);
}

#[test]
fn at_most_64_kib_before_the_handshake_completes() {
    let (mut client, _) = pair(&connector(false));
    let out = &mut client.out;
    client.filter.encode(&message(64 * 1024, 0), out).unwrap();
    let e = client.filter.encode(b"x", out).unwrap_err();
    assert!(e.message.contains("before the handshake completed"), "{e}");
}

#[test]
fn resumed_handshake_with_cuts() {
    let cuts = Cuts::new(vec![3, 700, 1, 5000]);
    let c = connector(false);
    let server = acceptor();
    for _ in 0..2 {
        let (mut client, _) = pair(&c);
        let mut srv = Side::new(server.filter());
        pump(&mut client, &mut srv, &cuts).unwrap();
        client.filter.encode(b"ping", &mut client.out).unwrap();
        pump(&mut client, &mut srv, &cuts).unwrap();
        assert_eq!(srv.app, b"ping");
    }
    assert_eq!(c.handshakes().resumed, 1, "{:?}", c.handshakes());
    assert_eq!(server.handshakes().resumed, 1);
}

#[test]
fn end_of_stream_without_close_notify_or_mid_record_is_truncation() {
    let cuts = Cuts::new(vec![1 << 20]);
    // No close_notify.
    let (mut client, mut server) = pair(&connector(false));
    pump(&mut client, &mut server, &cuts).unwrap();
    assert_eq!(server.filter.eof().unwrap_err().kind, "truncated");
    // A record cut short.
    let (mut client, mut server) = pair(&connector(false));
    pump(&mut client, &mut server, &cuts).unwrap();
    client
        .filter
        .encode(&message(1000, 3), &mut client.out)
        .unwrap();
    let mut wire = std::mem::take(&mut client.out);
    wire.truncate(wire.len() - 10);
    server.receive(wire, &cuts).unwrap();
    assert!(server.app.is_empty());
    let e = server.filter.eof().unwrap_err();
    assert_eq!(e.kind, "truncated");
    assert!(e.message.contains("middle of a record"), "{e}");
}

#[test]
fn plaintext_gets_a_decode_error_alert() {
    let cuts = Cuts::new(vec![4]);
    let (_, mut server) = pair(&connector(false));
    let e = server
        .receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), &cuts)
        .unwrap_err();
    assert_eq!(e.kind, "not_tls");
    // One alert record: content type 21, fatal (2), decode_error (50).
    assert_eq!(server.out, [21, 3, 3, 0, 2, 2, 50]);
}

#[test]
fn a_flipped_bit_is_a_bad_record_mac() {
    let cuts = Cuts::new(vec![1 << 20]);
    let (mut client, mut server) = pair(&connector(false));
    pump(&mut client, &mut server, &cuts).unwrap();
    client.filter.encode(b"hello", &mut client.out).unwrap();
    let mut wire = std::mem::take(&mut client.out);
    let last = wire.len() - 1;
    wire[last] ^= 1;
    let e = server.receive(wire, &cuts).unwrap_err();
    assert_eq!(e.kind, "decrypt_error");
    assert!(!server.out.is_empty(), "the alert is queued");
    assert!(server.app.is_empty());
}

#[test]
fn bytes_after_close_notify_are_ignored() {
    let cuts = Cuts::new(vec![1 << 20]);
    let (mut client, mut server) = pair(&connector(false));
    pump(&mut client, &mut server, &cuts).unwrap();
    client.filter.encode(b"last", &mut client.out).unwrap();
    client.filter.close(&mut client.out);
    let mut wire = std::mem::take(&mut client.out);
    wire.extend_from_slice(b"trailing junk after the goodbye");
    server.receive(wire, &cuts).unwrap();
    assert_eq!(server.app, b"last");
    server.filter.eof().unwrap();
}

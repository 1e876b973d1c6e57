//! Arbitrary bytes to a server `TlsAcceptor` filter's `decode`, cut into
//! pieces the way receives deliver them (no engine, no sockets; as in
//! `tests/filter.rs`). The first byte chooses the mode and the piece size:
//!
//! * mode 0: the bytes are all the server hears (ClientHello parsing, alerts,
//!   record framing before any key);
//! * modes 1 and 2: a real client completes a TLS 1.3 (1) or 1.2 (2)
//!   handshake first, then the bytes arrive as garbage records;
//! * mode 3: after a handshake the client encrypts the bytes as application
//!   data, and the server must deliver exactly them, then accept a clean
//!   close_notify.
//!
//! A decode error ends the connection there (the engine closes it), so
//! nothing more is fed after one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myriad::{Filter, FilterError};
use myriad_tls::{provider, rustls, ServerTlsConfig, TlsAcceptor, TlsConnector};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// A CA and a "localhost" certificate valid from 2000 to 2099, committed in
/// `pki/` (P-256 keys).
fn pki(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pki").join(file)
}

struct Fixture {
    acceptor: TlsAcceptor,
    tls13: TlsConnector,
    tls12: TlsConnector,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let server = ServerTlsConfig::from_pem_files(pki("server.pem"), pki("server.key")).unwrap();
        let client = |versions: &[&'static rustls::SupportedProtocolVersion]| {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls::pki_types::CertificateDer::pem_file_iter(pki("ca.pem")).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            let cfg = rustls::ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            TlsConnector::from_config(Arc::new(cfg))
        };
        Fixture {
            acceptor: TlsAcceptor::new(&server).unwrap(),
            tls13: client(&[&rustls::version::TLS13]),
            tls12: client(&[&rustls::version::TLS12]),
        }
    })
}

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

    /// Hands `wire` to the filter in pieces of `step` bytes.
    fn receive(&mut self, wire: &[u8], step: usize) -> Result<(), FilterError> {
        let mut buf = wire.to_vec();
        for piece in buf.chunks_mut(step) {
            self.filter.decode(piece, &mut self.app, &mut self.out)?;
        }
        Ok(())
    }
}

/// Moves bytes both ways until neither side has anything to say.
fn pump(client: &mut Side, server: &mut Side, step: usize) {
    for _ in 0..64 {
        if client.out.is_empty() && server.out.is_empty() {
            return;
        }
        let c = std::mem::take(&mut client.out);
        server
            .receive(&c, step)
            .expect("server decode of a real client");
        let s = std::mem::take(&mut server.out);
        client
            .receive(&s, step)
            .expect("client decode of a real server");
    }
    panic!("the handshake did not settle");
}

fn handshake(tls12: bool, step: usize) -> (Side, Side) {
    let f = fixture();
    let connector = if tls12 { &f.tls12 } else { &f.tls13 };
    let mut client = Side::new((connector.factory("localhost").unwrap())());
    client.filter.start(&mut client.out).unwrap();
    let mut server = Side::new(f.acceptor.filter());
    pump(&mut client, &mut server, step);
    assert!(!client.filter.is_handshaking() && !server.filter.is_handshaking());
    (client, server)
}

const STEPS: [usize; 10] = [1, 2, 3, 5, 7, 64, 517, 4096, 16_389, usize::MAX];

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let step = STEPS[usize::from(ctl >> 4) % STEPS.len()];
    match ctl & 3 {
        0 => {
            let mut server = Side::new(fixture().acceptor.filter());
            if server.receive(rest, step).is_ok() {
                let _ = server.filter.eof();
            }
        }
        mode @ (1 | 2) => {
            let (_client, mut server) = handshake(mode == 2, step);
            if server.receive(rest, step).is_ok() {
                let _ = server.filter.eof();
            }
        }
        _ => {
            let (mut client, mut server) = handshake(ctl & 4 != 0, step);
            for msg in rest.chunks(step.min(1 << 20)) {
                client.filter.encode(msg, &mut client.out).unwrap();
            }
            pump(&mut client, &mut server, step);
            assert!(
                server.app == rest,
                "server got {} of {} bytes",
                server.app.len(),
                rest.len()
            );
            client.filter.close(&mut client.out);
            pump(&mut client, &mut server, step);
            server.filter.eof().expect("a clean close_notify");
        }
    }
});

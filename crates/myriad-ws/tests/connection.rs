//! Connection-level tests: handshakes (good, bad, legacy), automatic pong,
//! close handshake, deflate end to end, prepared messages.

use std::sync::Arc;

use myriad_ws::handshake::LegacyDrafts;
use myriad_ws::{
    ClientConfig, ClientConnection, CloseCode, ConnectionState, DeflateConfig, Error, Event,
    HandshakeError, MessageKind, PreparedMessage, ProtocolError, ServerConfig, ServerConnection,
};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

fn own(e: Event<'_>) -> Ev {
    match e {
        Event::Text(t) => Ev::Text(t.to_owned()),
        Event::Binary(b) => Ev::Binary(b.to_vec()),
        Event::Ping(b) => Ev::Ping(b.to_vec()),
        Event::Pong(b) => Ev::Pong(b.to_vec()),
        Event::Close { code, reason } => Ev::Close(code.map(|c| c.0), reason.to_owned()),
    }
}

/// A server side: pending input, events seen, output written.
struct Srv {
    conn: ServerConnection,
    pending: Vec<u8>,
    events: Vec<Ev>,
    echo: bool,
}

impl Srv {
    fn new(cfg: ServerConfig) -> Self {
        Srv {
            conn: ServerConnection::new(Arc::new(cfg)),
            pending: Vec::new(),
            events: Vec::new(),
            echo: false,
        }
    }

    /// Feeds `bytes` one chunk at a time of size `step`; returns output.
    fn feed(&mut self, bytes: &[u8], step: usize) -> (Vec<u8>, Result<(), Error>) {
        let mut out = Vec::new();
        for chunk in bytes.chunks(step.max(1)) {
            self.pending.extend_from_slice(chunk);
            let echo = self.echo;
            let events = &mut self.events;
            match self.conn.feed(&mut self.pending, &mut out, &mut |e, tx| {
                if echo {
                    match e {
                        Event::Text(t) => tx.send_text(t).unwrap(),
                        Event::Binary(b) => tx.send_binary(b).unwrap(),
                        _ => {}
                    }
                }
                events.push(own(e));
            }) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) => return (out, Err(e)),
            }
        }
        (out, Ok(()))
    }
}

struct Cli {
    conn: ClientConnection,
    pending: Vec<u8>,
    events: Vec<Ev>,
}

impl Cli {
    fn new(cfg: ClientConfig) -> Self {
        Cli {
            conn: ClientConnection::new(cfg, "example.com", "/chat"),
            pending: Vec::new(),
            events: Vec::new(),
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> (Vec<u8>, Result<(), Error>) {
        let mut out = Vec::new();
        self.pending.extend_from_slice(bytes);
        let events = &mut self.events;
        let r = self
            .conn
            .feed(&mut self.pending, &mut out, &mut |e, _| events.push(own(e)));
        match r {
            Ok(n) => {
                self.pending.drain(..n);
                (out, Ok(()))
            }
            Err(e) => (out, Err(e)),
        }
    }
}

/// Connects a client and a server; the request is fed to the server in
/// pieces of `step` bytes.
fn connect(scfg: ServerConfig, ccfg: ClientConfig, step: usize) -> (Srv, Cli) {
    let mut srv = Srv::new(scfg);
    let mut cli = Cli::new(ccfg);
    let mut req = Vec::new();
    cli.conn.start(&mut req);
    let (resp, r) = srv.feed(&req, step);
    r.unwrap();
    assert!(srv.conn.is_open());
    let (out, r) = cli.feed(&resp);
    r.unwrap();
    assert!(out.is_empty());
    assert!(cli.conn.is_open());
    (srv, cli)
}

fn status_line(out: &[u8]) -> String {
    let s = String::from_utf8_lossy(out);
    s.lines().next().unwrap_or_default().to_owned()
}

const REQ: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[test]
fn handshake_in_pieces_and_messages_both_ways() {
    for step in [1, 2, 7, 1000] {
        let (mut srv, mut cli) = connect(ServerConfig::default(), ClientConfig::default(), step);
        srv.echo = true;
        let mut wire = Vec::new();
        cli.conn.send_text(&mut wire, "hello").unwrap();
        cli.conn.send_binary(&mut wire, &[1, 2, 3]).unwrap();
        cli.conn.send_ping(&mut wire, b"are you there").unwrap();
        let (back, r) = srv.feed(&wire, step);
        r.unwrap();
        assert_eq!(
            srv.events,
            [
                Ev::Text("hello".into()),
                Ev::Binary(vec![1, 2, 3]),
                Ev::Ping(b"are you there".to_vec())
            ]
        );
        let (_, r) = cli.feed(&back);
        r.unwrap();
        assert_eq!(
            cli.events,
            [
                Ev::Text("hello".into()),
                Ev::Binary(vec![1, 2, 3]),
                Ev::Pong(b"are you there".to_vec())
            ]
        );
    }
}

#[test]
fn subprotocol_selection() {
    let scfg = ServerConfig {
        protocols: vec!["v2".into(), "v1".into()],
        ..ServerConfig::default()
    };
    let ccfg = ClientConfig {
        protocols: vec!["v1".into(), "v2".into()],
        ..ClientConfig::default()
    };
    let (srv, cli) = connect(scfg, ccfg, 1000);
    // the client's preference order wins among the supported ones
    assert_eq!(srv.conn.protocol(), Some("v1"));
    assert_eq!(cli.conn.protocol(), Some("v1"));
    let req = srv.conn.request().unwrap();
    assert_eq!(
        (req.path.as_str(), req.host.as_str()),
        ("/chat", "example.com")
    );
}

#[test]
fn malformed_request_400() {
    let mut srv = Srv::new(ServerConfig::default());
    let (out, r) = srv.feed(b"GET / HTTP/1.1\r\nHost\r\n\r\n", 1000);
    assert_eq!(r, Err(Error::Handshake(HandshakeError::Malformed)));
    assert_eq!(status_line(&out), "HTTP/1.1 400 Bad Request");
    assert_eq!(srv.conn.state(), ConnectionState::Closed);
}

#[test]
fn version_12_is_426_with_header() {
    let mut srv = Srv::new(ServerConfig::default());
    let (out, r) = srv.feed(REQ.replace("Version: 13", "Version: 12").as_bytes(), 1000);
    assert_eq!(r, Err(Error::Handshake(HandshakeError::UnsupportedVersion)));
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
    assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
}

#[test]
fn missing_key_400() {
    let mut srv = Srv::new(ServerConfig::default());
    let (out, r) = srv.feed(
        REQ.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "")
            .as_bytes(),
        1000,
    );
    assert_eq!(r, Err(Error::Handshake(HandshakeError::MissingKey)));
    assert_eq!(status_line(&out), "HTTP/1.1 400 Bad Request");
}

#[test]
fn origin_hook_403() {
    let cfg = ServerConfig {
        origin_check: Some(Arc::new(|o: Option<&str>| {
            o == Some("https://good.example")
        })),
        ..ServerConfig::default()
    };
    let mut srv = Srv::new(cfg.clone());
    let (out, r) = srv.feed(REQ.as_bytes(), 1000);
    assert_eq!(r, Err(Error::Handshake(HandshakeError::OriginRefused)));
    assert_eq!(status_line(&out), "HTTP/1.1 403 Forbidden");
    let mut srv = Srv::new(cfg);
    let (out, r) = srv.feed(
        REQ.replace("http://example.com", "https://good.example")
            .as_bytes(),
        1000,
    );
    r.unwrap();
    assert_eq!(status_line(&out), "HTTP/1.1 101 Switching Protocols");
}

#[test]
fn oversized_header_431() {
    let mut srv = Srv::new(ServerConfig::default());
    let mut req = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    req.resize(9000, b'a');
    let (out, r) = srv.feed(&req, 512);
    assert_eq!(r, Err(Error::Handshake(HandshakeError::HeaderTooLarge)));
    assert_eq!(
        status_line(&out),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
}

#[test]
fn client_initiated_close_handshake() {
    let (mut srv, mut cli) = connect(ServerConfig::default(), ClientConfig::default(), 1000);
    let mut wire = Vec::new();
    cli.conn.close(&mut wire, CloseCode::NORMAL, "bye").unwrap();
    assert_eq!(cli.conn.state(), ConnectionState::Closing);
    assert_eq!(cli.conn.send_text(&mut wire, "late"), Err(Error::NotOpen));
    let (back, r) = srv.feed(&wire, 1000);
    r.unwrap();
    assert_eq!(srv.events, [Ev::Close(Some(1000), "bye".into())]);
    assert_eq!(srv.conn.state(), ConnectionState::Closed);
    assert_eq!(back, [0x88, 2, 0x03, 0xE8]); // echo of the code
    let (out, r) = cli.feed(&back);
    r.unwrap();
    assert!(out.is_empty()); // no second echo
    assert_eq!(cli.conn.state(), ConnectionState::Closed);
}

#[test]
fn server_initiated_close_handshake() {
    let (mut srv, mut cli) = connect(ServerConfig::default(), ClientConfig::default(), 1000);
    let mut wire = Vec::new();
    srv.conn
        .close(&mut wire, CloseCode::GOING_AWAY, "restart")
        .unwrap();
    let (back, r) = cli.feed(&wire);
    r.unwrap();
    assert_eq!(cli.events, [Ev::Close(Some(1001), "restart".into())]);
    assert!(cli.conn.is_closed());
    let (_, r) = srv.feed(&back, 1000);
    r.unwrap();
    assert!(srv.conn.is_closed());
    // invalid arguments are refused without writing anything
    let (mut srv, _) = connect(ServerConfig::default(), ClientConfig::default(), 1000);
    let mut out = Vec::new();
    assert!(srv.conn.close(&mut out, CloseCode(1006), "").is_err());
    assert!(srv
        .conn
        .close(&mut out, CloseCode::NORMAL, &"x".repeat(124))
        .is_err());
    assert!(srv.conn.send_ping(&mut out, &[0; 126]).is_err());
    assert!(out.is_empty());
}

#[test]
fn protocol_error_sends_close_1002() {
    let (mut srv, _) = connect(ServerConfig::default(), ClientConfig::default(), 1000);
    // unmasked frame from the client
    let (out, r) = srv.feed(&[0x81, 1, b'x'], 1000);
    assert_eq!(r, Err(Error::Protocol(ProtocolError::UnmaskedFrame)));
    assert_eq!(&out[..4], &[0x88, out[1], 0x03, 0xEA]);
    assert!(srv.conn.is_closed());
    // invalid UTF-8: 1007
    let (mut srv, mut cli) = connect(ServerConfig::default(), ClientConfig::default(), 1000);
    let mut wire = Vec::new();
    cli.conn.sender(&mut wire).send_binary(b"\xff").unwrap();
    wire[0] = 0x81; // turn it into a text frame
    let (out, r) = srv.feed(&wire, 1000);
    assert_eq!(r, Err(Error::Protocol(ProtocolError::InvalidUtf8)));
    assert_eq!(&out[2..4], &1007u16.to_be_bytes());
}

#[test]
fn deflate_end_to_end() {
    let sets = [
        (DeflateConfig::default(), DeflateConfig::default()),
        (
            DeflateConfig {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                ..DeflateConfig::default()
            },
            DeflateConfig::default(),
        ),
        (
            DeflateConfig {
                server_max_window_bits: 10,
                client_max_window_bits: 9,
                ..DeflateConfig::default()
            },
            DeflateConfig::default(),
        ),
        (
            DeflateConfig::default(),
            DeflateConfig {
                server_max_window_bits: 11,
                client_max_window_bits: 12,
                client_no_context_takeover: true,
                ..DeflateConfig::default()
            },
        ),
    ];
    for (client_d, server_d) in sets {
        let scfg = ServerConfig {
            deflate: Some(DeflateConfig {
                threshold: 16,
                ..server_d
            }),
            ..ServerConfig::default()
        };
        let ccfg = ClientConfig {
            deflate: Some(DeflateConfig {
                threshold: 16,
                ..client_d
            }),
            ..ClientConfig::default()
        };
        let (mut srv, mut cli) = connect(scfg, ccfg, 1000);
        assert!(srv.conn.deflate().is_some() && cli.conn.deflate().is_some());
        srv.echo = true;
        let big = "the quick brown fox jumps over the lazy dog ".repeat(50);
        let mut wire = Vec::new();
        for _ in 0..3 {
            cli.conn.send_text(&mut wire, &big).unwrap();
        }
        cli.conn.send_text(&mut wire, "tiny").unwrap();
        assert!(wire.len() < big.len(), "compressed on the wire");
        assert_eq!(wire[0] & 0x40, 0x40, "RSV1 on a large message");
        let (back, r) = srv.feed(&wire, 333);
        r.unwrap();
        let tiny = back.len() - 6;
        assert_eq!(back[tiny] & 0x40, 0, "no RSV1 below the threshold");
        let (_, r) = cli.feed(&back);
        r.unwrap();
        let want = [
            Ev::Text(big.clone()),
            Ev::Text(big.clone()),
            Ev::Text(big.clone()),
            Ev::Text("tiny".into()),
        ];
        assert_eq!(srv.events, want);
        assert_eq!(cli.events, want);
    }
}

#[test]
fn deflate_not_offered_is_not_used() {
    let scfg = ServerConfig {
        deflate: Some(DeflateConfig::default()),
        ..ServerConfig::default()
    };
    let (srv, cli) = connect(scfg, ClientConfig::default(), 1000);
    assert!(srv.conn.deflate().is_none() && cli.conn.deflate().is_none());
}

#[test]
fn client_rejects_unoffered_extension() {
    let mut cli = Cli::new(ClientConfig::default());
    let mut req = Vec::new();
    cli.conn.start(&mut req);
    let mut srv = Srv::new(ServerConfig::default());
    let (resp, r) = srv.feed(&req, 1000);
    r.unwrap();
    let resp = String::from_utf8(resp).unwrap().replace(
        "\r\n\r\n",
        "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
    );
    let (_, r) = cli.feed(resp.as_bytes());
    assert_eq!(r, Err(Error::Handshake(HandshakeError::BadExtension)));
}

#[test]
fn prepared_message_fan_out() {
    let msg_text = "broadcast ".repeat(100);
    let prepared = PreparedMessage::with_deflate(MessageKind::Text, msg_text.as_bytes(), 15, 6);
    let plain_deflate = DeflateConfig {
        threshold: 0,
        ..DeflateConfig::default()
    };
    let small_window = DeflateConfig {
        server_max_window_bits: 10,
        ..plain_deflate.clone()
    };
    let configs = [
        (None, None),
        (Some(plain_deflate.clone()), Some(plain_deflate.clone())),
        (Some(plain_deflate.clone()), Some(small_window)),
    ];
    for (sd, cd) in configs {
        let scfg = ServerConfig {
            deflate: sd,
            ..ServerConfig::default()
        };
        let ccfg = ClientConfig {
            deflate: cd.clone(),
            ..ClientConfig::default()
        };
        let (mut srv, mut cli) = connect(scfg, ccfg, 1000);
        let mut wire = Vec::new();
        // own message, prepared, own message again (context restarts)
        srv.conn.send_text(&mut wire, &msg_text).unwrap();
        srv.conn.send_prepared(&mut wire, &prepared).unwrap();
        srv.conn.send_text(&mut wire, &msg_text).unwrap();
        srv.conn.send_prepared(&mut wire, &prepared).unwrap();
        let (_, r) = cli.feed(&wire);
        r.unwrap();
        assert_eq!(cli.events, vec![Ev::Text(msg_text.clone()); 4]);
        match (&cd, srv.conn.deflate()) {
            (None, _) => assert!(wire
                .windows(prepared.bytes().len())
                .any(|w| w == prepared.bytes())),
            (Some(c), Some(_)) if c.server_max_window_bits == 15 => {
                let z = prepared.deflated_bytes().unwrap();
                assert!(wire.windows(z.len()).any(|w| w == z));
            }
            _ => {}
        }
    }
}

const HIXIE_REQ: &[u8] = b"GET /demo HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nSec-WebSocket-Key2: 1_ tx7X d  <  nw  334J702) 7]o}` 0\r\nSec-WebSocket-Protocol: sample\r\nUpgrade: WebSocket\r\nSec-WebSocket-Key1: 18x 6]8vM;54 *(5:  {   U1]8  z [  8\r\nOrigin: http://example.com\r\n\r\nTm[K T2u";

fn legacy_all() -> ServerConfig {
    ServerConfig {
        legacy: LegacyDrafts {
            hixie76: true,
            hybi07_08: true,
        },
        protocols: vec!["sample".into()],
        ..ServerConfig::default()
    }
}

#[test]
fn hixie76_connection() {
    for step in [1, 5, 1000] {
        let mut srv = Srv::new(legacy_all());
        srv.echo = true;
        let mut input = HIXIE_REQ.to_vec();
        input.extend_from_slice(b"\x00hello\xff");
        let (out, r) = srv.feed(&input, step);
        r.unwrap();
        let expected_head = "HTTP/1.1 101 WebSocket Protocol Handshake\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nSec-WebSocket-Origin: http://example.com\r\nSec-WebSocket-Location: ws://example.com/demo\r\nSec-WebSocket-Protocol: sample\r\n\r\nfQJ,fN/4F4!~K~MH";
        assert!(out.starts_with(expected_head.as_bytes()));
        assert_eq!(&out[expected_head.len()..], b"\x00hello\xff");
        assert_eq!(srv.events, [Ev::Text("hello".into())]);
        let mut out = Vec::new();
        assert_eq!(
            srv.conn.send_binary(&mut out, b"x"),
            Err(Error::Unsupported)
        );
        assert_eq!(srv.conn.send_ping(&mut out, b"x"), Err(Error::Unsupported));
        let (out, r) = srv.feed(b"\xff\x00", step);
        r.unwrap();
        assert_eq!(out, [0xFF, 0x00]);
        assert!(srv.conn.is_closed());
    }
}

#[test]
fn hixie76_disabled_by_default() {
    let mut srv = Srv::new(ServerConfig::default());
    let (out, r) = srv.feed(HIXIE_REQ, 1000);
    assert_eq!(r, Err(Error::Handshake(HandshakeError::UnsupportedVersion)));
    assert!(status_line(&out).contains("426"));
}

#[test]
fn hybi_07_08_connections() {
    for v in ["7", "8"] {
        let req = REQ
            .replace("Version: 13", &format!("Version: {v}"))
            .replace("Origin:", "Sec-WebSocket-Origin:");
        let mut srv = Srv::new(legacy_all());
        srv.echo = true;
        let (out, r) = srv.feed(req.as_bytes(), 1000);
        r.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert_eq!(
            srv.conn.request().unwrap().origin.as_deref(),
            Some("http://example.com")
        );
        // same framing as RFC 6455
        let mut frame = vec![0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        let (out, r) = srv.feed(&frame, 1000);
        r.unwrap();
        assert_eq!(out, [0x81, 2, b'h', b'i']);
        frame.clear();
        // disabled: 426 listing only 13
        let mut srv = Srv::new(ServerConfig::default());
        let (out, _) = srv.feed(req.as_bytes(), 1000);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("Sec-WebSocket-Version: 13\r\n"));
    }
    // enabled: the 426 answer lists the legacy versions too
    let mut srv = Srv::new(legacy_all());
    let (out, _) = srv.feed(REQ.replace("Version: 13", "Version: 6").as_bytes(), 1000);
    assert!(String::from_utf8(out)
        .unwrap()
        .contains("Sec-WebSocket-Version: 13, 8, 7\r\n"));
}

#[test]
fn frames_right_behind_the_request_and_response() {
    // pipelined: request + frame in one read
    let mut srv = Srv::new(ServerConfig::default());
    let mut input = REQ.as_bytes().to_vec();
    input.extend_from_slice(&[0x82, 0x81, 0, 0, 0, 0, 7]);
    let (_, r) = srv.feed(&input, 1000);
    r.unwrap();
    assert_eq!(srv.events, [Ev::Binary(vec![7])]);
    assert!(srv.pending.is_empty());
}

#[test]
fn connection_state_is_small() {
    // a million idle connections: keep the per-connection state compact
    let size = std::mem::size_of::<ServerConnection>();
    assert!(size <= 128, "ServerConnection is {size} bytes");
    eprintln!(
        "ServerConnection: {size} bytes, Decoder: {} bytes",
        std::mem::size_of::<myriad_ws::Decoder>()
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn feed_split<F>(mut feed: F, bytes: &[u8], cuts: &[usize]) -> Vec<u8>
    where
        F: FnMut(&mut Vec<u8>, &mut Vec<u8>) -> Result<usize, Error>,
    {
        let mut pending = Vec::new();
        let mut out = Vec::new();
        let mut start = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.sort_unstable();
        points.push(bytes.len());
        for p in points {
            pending.extend_from_slice(&bytes[start..p]);
            start = p;
            let n = feed(&mut pending, &mut out).unwrap();
            pending.drain(..n);
        }
        assert!(pending.is_empty());
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Client -> server (echo) -> client, everything cut at random
        /// points, with and without deflate and fragmentation.
        #[test]
        fn echo_roundtrip(
            msgs in proptest::collection::vec(
                prop_oneof![
                    "\\PC{0,200}".prop_map(|s| (true, s.into_bytes())),
                    proptest::collection::vec(any::<u8>(), 0..3000).prop_map(|b| (false, b)),
                ],
                1..8,
            ),
            deflate in any::<bool>(),
            frag in 0usize..100,
            cuts1 in proptest::collection::vec(any::<usize>(), 0..10),
            cuts2 in proptest::collection::vec(any::<usize>(), 0..10),
        ) {
            let d = deflate.then(|| DeflateConfig { threshold: 8, ..DeflateConfig::default() });
            let scfg = ServerConfig { deflate: d.clone(), max_fragment_size: frag, ..ServerConfig::default() };
            let ccfg = ClientConfig { deflate: d, max_fragment_size: frag, mask_seed: Some(9), ..ClientConfig::default() };
            let mut server = ServerConnection::new(Arc::new(scfg));
            let mut client = ClientConnection::new(ccfg, "h", "/");
            let mut wire = Vec::new();
            client.start(&mut wire);
            let resp = feed_split(
                |p, o| server.feed(p, o, &mut |_, _| {}),
                &wire,
                &cuts1,
            );
            let _ = feed_split(|p, o| client.feed(p, o, &mut |_, _| {}), &resp, &cuts2);
            prop_assert!(client.is_open() && server.is_open());
            prop_assert_eq!(client.deflate().is_some(), deflate);

            let mut wire = Vec::new();
            for (text, m) in &msgs {
                if *text {
                    client.send_text(&mut wire, std::str::from_utf8(m).unwrap()).unwrap();
                } else {
                    client.send_binary(&mut wire, m).unwrap();
                }
            }
            client.close(&mut wire, CloseCode::NORMAL, "end").unwrap();
            let back = feed_split(
                |p, o| server.feed(p, o, &mut |e, tx| {
                    let _ = match e {
                        Event::Text(t) => tx.send_text(t),
                        Event::Binary(b) => tx.send_binary(b),
                        _ => Ok(()),
                    };
                }),
                &wire,
                &cuts1,
            );
            prop_assert!(server.is_closed());
            let mut got = Vec::new();
            let _ = feed_split(
                |p, o| client.feed(p, o, &mut |e, _| got.push(own(e))),
                &back,
                &cuts2,
            );
            let mut want: Vec<Ev> = msgs
                .iter()
                .map(|(t, m)| if *t { Ev::Text(String::from_utf8(m.clone()).unwrap()) } else { Ev::Binary(m.clone()) })
                .collect();
            want.push(Ev::Close(Some(1000), String::new()));
            prop_assert_eq!(got, want);
            prop_assert!(client.is_closed());
        }
    }
}

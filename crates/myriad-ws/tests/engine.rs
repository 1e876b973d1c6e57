//! WebSocket on the Myriad engine, over real loopback sockets, on both
//! backends: servers driven by blocking std clients (speaking the sans-I/O
//! codec, or raw bytes for malformed input) and by the engine's own
//! WebSocket client.
#![cfg(feature = "engine")]

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use myriad::{BackendKind, ConnectOptions, Engine, Service};
use myriad_ws::client::WsClient;
use myriad_ws::server::{HttpResponse, WsServer};
use myriad_ws::{
    apply_mask, ClientConfig, ClientConnection, CloseCode, DeflateConfig, Event, Handshake,
    Message, MessageKind, PreparedMessage, Room, Upgrade, UpgradeInfo, WsCtx, WsHandler,
};

const IO_TIMEOUT: Duration = Duration::from_secs(20);

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn io_uring() {
                    super::$name(myriad::BackendKind::IoUring)
                }
                #[test]
                fn epoll() {
                    super::$name(myriad::BackendKind::Epoll)
                }
            }
        )*
    };
}

both_backends!(
    echo_text_binary_ping,
    pipelined_batch,
    fragmented_both_ways,
    deflate_roundtrip,
    deflate_idle_holds_no_zlib_streams,
    deflate_inflate_ratio_bound,
    close_codes,
    bad_handshakes,
    malformed_frame_isolated,
    invalid_utf8_and_too_big,
    handshake_timeout,
    engine_client_roundtrip,
    room_fanout_across_loops,
    room_broadcast_to_a_busy_loop_is_bounded,
    message_rate_limit,
    decoding_stops_at_high_water,
    keepalive_closes_a_silent_peer,
    legacy_hixie76,
    shutdown_sends_1001,
    http_fallback_page,
    subprotocol_and_headers,
    peer_behind_proxy_protocol,
    large_echoes_from_the_receive_buffer,
);

// ----- helpers -----

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

struct Echo;

impl WsHandler for Echo {
    fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
        let _ = cx.send(msg);
    }
}

fn start(kind: BackendKind, threads: usize, svc: Service) -> (Engine, SocketAddr) {
    let engine = Engine::builder()
        .threads(threads)
        .backend(kind)
        .service(svc)
        .start()
        .expect("engine starts");
    assert_eq!(engine.backend(), kind);
    let addr = engine.local_addrs(0)[0];
    (engine, addr)
}

fn echo_server(kind: BackendKind, ws: &WsServer) -> (Engine, SocketAddr) {
    start(kind, 2, ws.service("ws", localhost(), || Echo))
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + IO_TIMEOUT;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("timed out waiting for {what}");
}

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

/// A blocking client over std::net speaking the sans-I/O codec.
struct Blocking {
    s: TcpStream,
    conn: ClientConnection,
    buf: Vec<u8>,
    events: VecDeque<Ev>,
    eof: bool,
}

impl Blocking {
    fn connect(addr: SocketAddr, cfg: ClientConfig, path: &str) -> Self {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        let mut c = Blocking {
            s,
            conn: ClientConnection::new(cfg, "localhost", path),
            buf: Vec::new(),
            events: VecDeque::new(),
            eof: false,
        };
        let mut out = Vec::new();
        c.conn.start(&mut out);
        c.s.write_all(&out).unwrap();
        while !c.conn.is_open() {
            assert!(c.read_some(), "eof during handshake");
        }
        c
    }

    /// Reads once and feeds; false at EOF.
    fn read_some(&mut self) -> bool {
        let mut tmp = [0u8; 65536];
        let n = match self.s.read(&mut tmp) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("read: {e}"),
        };
        if n == 0 {
            self.eof = true;
            return false;
        }
        self.buf.extend_from_slice(&tmp[..n]);
        let mut out = Vec::new();
        let mut evs = Vec::new();
        let r = self
            .conn
            .feed(&mut self.buf, &mut out, &mut |e, _| evs.push(own(e)));
        let used = r.expect("server frames are valid");
        self.buf.drain(..used);
        self.events.extend(evs);
        if !out.is_empty() {
            let _ = self.s.write_all(&out);
        }
        true
    }

    fn next(&mut self) -> Ev {
        loop {
            if let Some(e) = self.events.pop_front() {
                return e;
            }
            assert!(self.read_some(), "eof while waiting for an event");
        }
    }

    fn send(&mut self, f: impl FnOnce(&mut ClientConnection, &mut Vec<u8>)) {
        let mut out = Vec::new();
        f(&mut self.conn, &mut out);
        self.s.write_all(&out).unwrap();
    }

    fn text(&mut self, t: &str) {
        self.send(|c, o| c.send_text(o, t).unwrap());
    }

    /// Waits for EOF (the server closed the TCP connection).
    fn expect_eof(&mut self) {
        while !self.eof {
            if !self.read_some() {
                break;
            }
        }
    }
}

/// A masked frame built by hand (can express invalid frames).
fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![b0];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    let mut p = payload.to_vec();
    apply_mask(&mut p, key, 0);
    out.extend_from_slice(&p);
    out
}

fn raw_request(addr: SocketAddr, req: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(req).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    String::from_utf8_lossy(&resp).into_owned()
}

const UPGRADE: &str = "GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

// ----- tests -----

fn echo_text_binary_ping(kind: BackendKind) {
    let ws = WsServer::builder().deflate(false).build();
    let (engine, addr) = echo_server(kind, &ws);
    let mut c = Blocking::connect(addr, ClientConfig::default(), "/");
    c.text("hello");
    assert_eq!(c.next(), Ev::Text("hello".into()));
    c.send(|c, o| c.send_binary(o, &[0, 1, 2, 255]).unwrap());
    assert_eq!(c.next(), Ev::Binary(vec![0, 1, 2, 255]));
    c.send(|c, o| c.send_ping(o, b"p1").unwrap());
    assert_eq!(c.next(), Ev::Pong(b"p1".to_vec()));
    // a 1 MiB message: streamed in, echoed out
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    c.send(|c, o| c.send_binary(o, &big).unwrap());
    assert_eq!(c.next(), Ev::Binary(big));
    // empty messages
    c.text("");
    assert_eq!(c.next(), Ev::Text(String::new()));
    c.send(|c, o| c.close(o, CloseCode::NORMAL, "bye").unwrap());
    assert_eq!(c.next(), Ev::Close(Some(1000), String::new()));
    c.expect_eof();
    eventually("closed", || engine.stats().closed == 1);
    let st = ws.stats();
    assert_eq!((st.handshakes, st.messages_in), (1, 4));
}

fn pipelined_batch(kind: BackendKind) {
    let ws = WsServer::builder().deflate(false).build();
    let (engine, addr) = echo_server(kind, &ws);
    let mut c = Blocking::connect(addr, ClientConfig::default(), "/");
    // 1000 messages in one write: processed in a handful of reads, and
    // answered with about as many sends, not one per message
    let mut out = Vec::new();
    for i in 0..1000 {
        c.conn.send_text(&mut out, &format!("m{i}")).unwrap();
    }
    let writes_before = engine.stats().writes;
    c.s.write_all(&out).unwrap();
    for i in 0..1000 {
        assert_eq!(c.next(), Ev::Text(format!("m{i}")));
    }
    let writes = engine.stats().writes - writes_before;
    assert!(writes < 100, "{writes} sends for 1000 pipelined messages");
}

fn fragmented_both_ways(kind: BackendKind) {
    let ws = WsServer::builder()
        .deflate(false)
        .config(myriad_ws::ServerConfig {
            max_fragment_size: 7,
            ..myriad_ws::ServerConfig::default()
        })
        .build();
    let (_engine, addr) = echo_server(kind, &ws);
    let cfg = ClientConfig {
        max_fragment_size: 3,
        ..ClientConfig::default()
    };
    let mut c = Blocking::connect(addr, cfg, "/");
    let text = "fragmented ünïcödé message, split mid-character";
    c.text(text);
    assert_eq!(c.next(), Ev::Text(text.into()));
    // control frames interleaved with fragments, by hand
    let mut raw = masked(0x01, b"par");
    raw.extend(masked(0x89, b"ping"));
    raw.extend(masked(0x00, b"ts "));
    raw.extend(masked(0x8A, b"unsolicited pong"));
    raw.extend(masked(0x80, b"joined"));
    c.s.write_all(&raw).unwrap();
    assert_eq!(c.next(), Ev::Pong(b"ping".to_vec()));
    assert_eq!(c.next(), Ev::Text("parts joined".into()));
}

fn deflate_roundtrip(kind: BackendKind) {
    let ws = WsServer::builder().build(); // deflate on by default
    let (_engine, addr) = echo_server(kind, &ws);
    let cfg = ClientConfig {
        deflate: Some(DeflateConfig::default()),
        ..ClientConfig::default()
    };
    let mut c = Blocking::connect(addr, cfg, "/");
    assert!(c.conn.deflate().is_some(), "permessage-deflate negotiated");
    let long = "compress me please ".repeat(500);
    for _ in 0..3 {
        c.text(&long);
        assert_eq!(c.next(), Ev::Text(long.clone()));
    }
    c.text("short");
    assert_eq!(c.next(), Ev::Text("short".into()));
    // also against a client that keeps no context
    let cfg = ClientConfig {
        deflate: Some(DeflateConfig {
            client_no_context_takeover: true,
            server_no_context_takeover: true,
            client_max_window_bits: 9,
            ..DeflateConfig::default()
        }),
        ..ClientConfig::default()
    };
    let mut c = Blocking::connect(addr, cfg, "/");
    let p = *c.conn.deflate().expect("negotiated");
    assert!(p.server_no_context_takeover && p.client_no_context_takeover);
    for _ in 0..3 {
        c.text(&long);
        assert_eq!(c.next(), Ev::Text(long.clone()));
    }
    // invalid compressed data: 1007
    let mut raw = masked(0xC1, &[0xff, 0xff, 0xff, 0xff]);
    raw.extend(masked(0x81, b"never seen"));
    c.s.write_all(&raw).unwrap();
    assert_eq!(
        c.next(),
        Ev::Close(Some(1007), "invalid compressed data".into())
    );
    c.expect_eof();
    eventually("counted", || ws.stats().closed_1007 == 1);
}

/// Echoes, and answers `streams?` with the zlib streams of its loop: held
/// by connections (live minus pooled), and pooled.
struct StreamProbe;

impl WsHandler for StreamProbe {
    fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
        if msg == Message::Text("streams?") {
            let z = myriad_ws::zlib_streams();
            let _ = cx.send_text(&format!("{} {}", z.live - z.pooled, z.pooled));
        } else {
            let _ = cx.send(msg);
        }
    }
}

fn held_streams(c: &mut Blocking) -> (usize, usize) {
    c.text("streams?");
    let Ev::Text(t) = c.next() else {
        panic!("expected the probe's answer")
    };
    let (held, pooled) = t.split_once(' ').expect("two numbers");
    (held.parse().unwrap(), pooled.parse().unwrap())
}

/// With the default settings (no context takeover either way) connections
/// that exchanged compressed messages, interleaved on one loop, hold no
/// zlib stream once idle: the loop's pool lends them for one message. With
/// context takeover each connection keeps two (it did by default before).
fn deflate_idle_holds_no_zlib_streams(kind: BackendKind) {
    const N: usize = 16;
    let long = |i: usize, round: usize| format!("connection {i} round {round} ").repeat(40);
    for takeover in [false, true] {
        let ws = WsServer::builder()
            .deflate_config(Some(DeflateConfig {
                context_takeover: takeover,
                ..DeflateConfig::default()
            }))
            .build();
        let (_engine, addr) = start(kind, 1, ws.service("ws", localhost(), || StreamProbe));
        let cfg = ClientConfig {
            deflate: Some(DeflateConfig::default()),
            ..ClientConfig::default()
        };
        let mut cs: Vec<Blocking> = (0..N)
            .map(|_| Blocking::connect(addr, cfg.clone(), "/"))
            .collect();
        for c in &cs {
            let p = c.conn.deflate().expect("negotiated");
            assert_eq!(
                p.server_no_context_takeover && p.client_no_context_takeover,
                !takeover
            );
        }
        for round in 0..3 {
            // every connection's message is in flight before any answer
            for (i, c) in cs.iter_mut().enumerate() {
                c.text(&long(i, round));
            }
            for (i, c) in cs.iter_mut().enumerate() {
                assert_eq!(c.next(), Ev::Text(long(i, round)));
            }
        }
        let (held, pooled) = held_streams(&mut cs[0]);
        if takeover {
            assert_eq!(held, 2 * N, "a compressor and a decompressor each");
        } else {
            assert_eq!(held, 0, "idle connections hold no zlib stream");
            assert!(pooled >= 2, "the loop's pool has them ({pooled})");
        }
    }
}

/// A small compressed message that inflates a thousandfold fails the
/// connection with 1009 and is counted.
fn deflate_inflate_ratio_bound(kind: BackendKind) {
    let ws = WsServer::builder().build();
    let (_engine, addr) = echo_server(kind, &ws);
    let cfg = ClientConfig {
        deflate: Some(DeflateConfig::default()),
        ..ClientConfig::default()
    };
    let mut c = Blocking::connect(addr, cfg, "/");
    // ordinary text goes through
    let text = "an ordinary sentence, repeated. ".repeat(3000);
    c.text(&text);
    assert_eq!(c.next(), Ev::Text(text));
    c.text(&"\0".repeat(4 << 20));
    assert_eq!(
        c.next(),
        Ev::Close(Some(1009), "compression ratio over the limit".into())
    );
    c.expect_eof();
    eventually("counted", || {
        let s = ws.stats();
        s.closed_1009 == 1 && s.inflate_ratio_exceeded == 1
    });
}

/// Records what the handler saw at close.
struct CloseProbe {
    tx: mpsc::Sender<(u16, String)>,
}

impl WsHandler for CloseProbe {
    fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
        if let Message::Text(t) = msg {
            if let Some(code) = t.strip_prefix("close ") {
                let code: u16 = code.parse().unwrap_or(1000);
                let _ = cx.close(CloseCode(code), "as you wish");
                // nothing may be sent after our close frame
                assert!(cx.send_text("too late").is_err());
            } else {
                let _ = cx.send(msg);
            }
        }
    }
    fn on_close(&mut self, _cx: &mut WsCtx<'_, '_>, code: CloseCode, reason: &str) {
        let _ = self.tx.send((code.0, reason.to_owned()));
    }
}

fn close_codes(kind: BackendKind) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let ws = WsServer::builder().deflate(false).build();
    let (_engine, addr) = start(
        kind,
        1,
        ws.service("ws", localhost(), move || CloseProbe {
            tx: tx.lock().unwrap().clone(),
        }),
    );
    // client-initiated close with a code and reason
    let mut c = Blocking::connect(addr, ClientConfig::default(), "/");
    c.send(|c, o| c.close(o, CloseCode(4000), "app reason").unwrap());
    assert_eq!(c.next(), Ev::Close(Some(4000), String::new()));
    c.expect_eof();
    assert_eq!(
        rx.recv_timeout(IO_TIMEOUT).unwrap(),
        (4000, "app reason".into())
    );
    // empty close frame: 1005 to the handler
    let mut c = Blocking::connect(addr, ClientConfig::default(), "/");
    c.s.write_all(&masked(0x88, b"")).unwrap();
    assert_eq!(c.next(), Ev::Close(None, String::new()));
    c.expect_eof();
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap().0, 1005);
    // server-initiated close
    let mut c = Blocking::connect(addr, ClientConfig::default(), "/");
    c.text("close 4321");
    assert_eq!(c.next(), Ev::Close(Some(4321), "as you wish".into()));
    // the client answers (ClientConnection echoes), the server closes
    c.expect_eof();
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap().0, 4321);
    // invalid close code from the peer: 1002
    let mut c = Blocking::connect(addr, ClientConfig::default(), "/");
    c.s.write_all(&masked(0x88, &999u16.to_be_bytes())).unwrap();
    assert_eq!(c.next(), Ev::Close(Some(1002), "invalid close code".into()));
    c.expect_eof();
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap().0, 1002);
    // TCP dropped without a close frame: 1006
    let c = Blocking::connect(addr, ClientConfig::default(), "/");
    drop(c);
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap().0, 1006);
    assert_eq!(ws.stats().closed_1002, 1);
}

fn bad_handshakes(kind: BackendKind) {
    let ws = WsServer::builder()
        .origin_check(|o| o != Some("https://evil.example"))
        .build();
    let (engine, addr) = echo_server(kind, &ws);
    // not an upgrade at all
    let r = raw_request(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    // garbage
    let r = raw_request(addr, b"\x16\x03\x01\x02\x00 hello\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    // missing key
    let r = raw_request(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    // unsupported version: 426 naming the supported one
    let req = UPGRADE.replace("Version: 13", "Version: 9") + "\r\n";
    let r = raw_request(addr, req.as_bytes());
    assert!(r.starts_with("HTTP/1.1 426 "), "{r}");
    assert!(r.contains("Sec-WebSocket-Version: 13\r\n"), "{r}");
    // refused origin
    let req = format!("{UPGRADE}Origin: https://evil.example\r\n\r\n");
    let r = raw_request(addr, req.as_bytes());
    assert!(r.starts_with("HTTP/1.1 403 "), "{r}");
    // a huge header: 431
    let req = format!("{UPGRADE}X-Big: {}\r\n\r\n", "a".repeat(20_000));
    let r = raw_request(addr, req.as_bytes());
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
    // a good one still works
    let req = format!("{UPGRADE}Origin: https://good.example\r\n\r\n");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    let resp = String::from_utf8_lossy(&buf[..n]);
    assert!(resp.starts_with("HTTP/1.1 101 "), "{resp}");
    assert!(resp.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{resp}");
    let st = ws.stats();
    assert_eq!(
        (
            st.rejected_400,
            st.rejected_426,
            st.rejected_403,
            st.rejected_431,
            st.handshakes
        ),
        (3, 1, 1, 1, 1)
    );
    drop(s);
    eventually("all closed", || engine.stats().open == 0);
}

fn malformed_frame_isolated(kind: BackendKind) {
    let ws = WsServer::builder().deflate(false).build();
    let (engine, addr) = start(kind, 1, ws.service("ws", localhost(), || Echo));
    let mut good: Vec<Blocking> = (0..5)
        .map(|_| Blocking::connect(addr, ClientConfig::default(), "/"))
        .collect();
    let mut bad = Blocking::connect(addr, ClientConfig::default(), "/");
    // an unmasked frame from a client, with a pipelined valid one behind it
    let mut raw = vec![0x81, 0x02, b'h', b'i'];
    raw.extend(masked(0x81, b"after"));
    bad.s.write_all(&raw).unwrap();
    assert_eq!(
        bad.next(),
        Ev::Close(Some(1002), "unmasked client frame".into())
    );
    bad.expect_eof();
    // reserved opcode, reserved bits, fragmented ping: each 1002
    for frame in [masked(0x83, b"x"), masked(0xB1, b"x"), masked(0x09, b"x")] {
        let mut b = Blocking::connect(addr, ClientConfig::default(), "/");
        b.s.write_all(&frame).unwrap();
        match b.next() {
            Ev::Close(Some(1002), _) => {}
            other => panic!("expected 1002, got {other:?}"),
        }
        b.expect_eof();
    }
    for (i, g) in good.iter_mut().enumerate() {
        let t = format!("still alive {i}");
        g.text(&t);
        assert_eq!(g.next(), Ev::Text(t));
    }
    assert_eq!(ws.stats().closed_1002, 4);
    drop(bad);
    eventually("only the good ones open", || engine.stats().open == 5);
}

fn invalid_utf8_and_too_big(kind: BackendKind) {
    let ws = WsServer::builder()
        .deflate(false)
        .max_message_size(1000)
        .build();
    let (_engine, addr) = echo_server(kind, &ws);
    let mut c = Blocking::connect(addr, ClientConfig::default(), "/");
    c.s.write_all(&masked(0x81, &[b'o', b'k', 0xff, 0xfe]))
        .unwrap();
    assert_eq!(c.next(), Ev::Close(Some(1007), "invalid UTF-8".into()));
    c.expect_eof();
    // invalid UTF-8 split over fragments
    let mut c = Blocking::connect(addr, ClientConfig::default(), "/");
    let mut raw = masked(0x01, &[0xce]);
    raw.extend(masked(0x80, &[0x41]));
    c.s.write_all(&raw).unwrap();
    assert_eq!(c.next(), Ev::Close(Some(1007), "invalid UTF-8".into()));
    c.expect_eof();
    // too big in one frame
    let mut c = Blocking::connect(addr, ClientConfig::default(), "/");
    c.s.write_all(&masked(0x82, &[0u8; 1001])).unwrap();
    assert!(matches!(c.next(), Ev::Close(Some(1009), _)));
    c.expect_eof();
    // too big over fragments
    let mut c = Blocking::connect(addr, ClientConfig::default(), "/");
    let mut raw = masked(0x02, &[0u8; 600]);
    raw.extend(masked(0x80, &[0u8; 600]));
    c.s.write_all(&raw).unwrap();
    assert!(matches!(c.next(), Ev::Close(Some(1009), _)));
    c.expect_eof();
    // exactly the limit is fine
    let mut c = Blocking::connect(addr, ClientConfig::default(), "/");
    c.send(|c, o| c.send_binary(o, &[7u8; 1000]).unwrap());
    assert_eq!(c.next(), Ev::Binary(vec![7u8; 1000]));
    let st = ws.stats();
    assert_eq!((st.closed_1007, st.closed_1009), (2, 2));
}

fn handshake_timeout(kind: BackendKind) {
    let ws = WsServer::builder()
        .handshake_timeout(Some(Duration::from_millis(200)))
        .build();
    let (engine, addr) = echo_server(kind, &ws);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: slow\r\n").unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 64];
    let r = s.read(&mut buf);
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(ws.stats().handshake_timeouts, 1);
    // a connection that finished its handshake is not affected
    let mut c = Blocking::connect(addr, ClientConfig::default(), "/");
    std::thread::sleep(Duration::from_millis(400));
    c.text("late");
    assert_eq!(c.next(), Ev::Text("late".into()));
    eventually("one open", || engine.stats().open == 1);
}

/// An engine client: sends `count` messages one at a time (fragmented and
/// compressed as configured) and checks each echo, then closes.
struct Pinger {
    left: u32,
    size: usize,
    done: mpsc::Sender<Result<u32, String>>,
    got: u32,
    protocol: Option<String>,
}

impl Pinger {
    fn payload(&self) -> Vec<u8> {
        (0..self.size)
            .map(|i| (i as u32 + self.left) as u8)
            .collect()
    }
}

impl WsHandler for Pinger {
    fn on_open(&mut self, cx: &mut WsCtx<'_, '_>, hs: &Handshake<'_>) {
        self.protocol = hs.protocol().map(str::to_owned);
        let p = self.payload();
        let _ = cx.send_binary(&p);
    }
    fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
        if msg != Message::Binary(&self.payload()) {
            let _ = self.done.send(Err(format!("bad echo at {}", self.left)));
            let _ = cx.close(CloseCode::PROTOCOL_ERROR, "");
            return;
        }
        self.got += 1;
        self.left -= 1;
        if self.left == 0 {
            let _ = cx.close(CloseCode::NORMAL, "done");
        } else {
            let p = self.payload();
            let _ = cx.send_binary(&p);
        }
    }
    fn on_close(&mut self, _cx: &mut WsCtx<'_, '_>, code: CloseCode, reason: &str) {
        let r = if self.left == 0 && code == CloseCode::NORMAL {
            Ok(self.got)
        } else {
            Err(format!(
                "closed {} {reason} with {} left",
                code.0, self.left
            ))
        };
        let _ = self.done.send(r);
    }
}

fn engine_client_roundtrip(kind: BackendKind) {
    let ws = WsServer::builder().protocols(["echo.v1"]).build();
    let (server, addr) = echo_server(kind, &ws);
    let client = Engine::builder().threads(2).backend(kind).start().unwrap();
    let (tx, rx) = mpsc::channel();
    let cases = [
        (0usize, None, 0usize),
        (100, None, 0),
        (70_000, None, 1000),
        (100, Some(DeflateConfig::default()), 0),
        (
            20_000,
            Some(DeflateConfig {
                client_no_context_takeover: true,
                ..DeflateConfig::default()
            }),
            4096,
        ),
    ];
    const N: u32 = 40;
    for (i, (size, deflate, frag)) in cases.iter().enumerate() {
        let cfg = ClientConfig {
            deflate: deflate.clone(),
            max_fragment_size: *frag,
            protocols: vec!["other".into(), "echo.v1".into()],
            ..ClientConfig::default()
        };
        let c = WsClient::new(
            cfg,
            "localhost",
            "/",
            Pinger {
                left: N,
                size: *size,
                done: tx.clone(),
                got: 0,
                protocol: None,
            },
        );
        assert!(client
            .loop_handle(i % 2)
            .connect(addr, ConnectOptions::default(), c));
    }
    for _ in 0..cases.len() {
        match rx.recv_timeout(IO_TIMEOUT).expect("client finished") {
            Ok(n) => assert_eq!(n, N),
            Err(e) => panic!("client failed: {e}"),
        }
    }
    eventually("server closed all", || {
        server.stats().closed == cases.len() as u64
    });
    assert_eq!(ws.stats().messages_in, N as u64 * cases.len() as u64);
    // a client against a port that refuses: on_close 1006
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = l.local_addr().unwrap();
    drop(l);
    let c = WsClient::new(
        ClientConfig::default(),
        "localhost",
        "/",
        Pinger {
            left: 1,
            size: 1,
            done: tx.clone(),
            got: 0,
            protocol: None,
        },
    );
    client
        .loop_handle(0)
        .connect(dead, ConnectOptions::default(), c);
    let r = rx.recv_timeout(IO_TIMEOUT).expect("failure reported");
    assert!(
        matches!(&r, Err(e) if e.starts_with("closed 1006")),
        "{r:?}"
    );
}

/// Broadcasts every text message to the room; tells the test when open.
struct Member {
    room: Room,
    opened: mpsc::Sender<()>,
}

impl WsHandler for Member {
    fn on_open(&mut self, cx: &mut WsCtx<'_, '_>, _hs: &Handshake<'_>) {
        assert!(self.room.join(cx));
        let _ = self.opened.send(());
    }
    fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
        if let Message::Text(t) = msg {
            let m = PreparedMessage::with_deflate(MessageKind::Text, t.as_bytes(), 15, 6);
            self.room.broadcast(cx.loop_cx(), &m);
        }
    }
    fn on_close(&mut self, cx: &mut WsCtx<'_, '_>, _code: CloseCode, _reason: &str) {
        self.room.leave(cx);
    }
}

fn room_fanout_across_loops(kind: BackendKind) {
    let room = Room::new();
    let (otx, orx) = mpsc::channel();
    let otx = Mutex::new(otx);
    let ws = WsServer::builder().build();
    let r2 = room.clone();
    let (_engine, addr) = start(
        kind,
        2,
        ws.service("chat", localhost(), move || Member {
            room: r2.clone(),
            opened: otx.lock().unwrap().clone(),
        }),
    );
    const N: usize = 20;
    let mut clients: Vec<Blocking> = (0..N)
        .map(|i| {
            let cfg = ClientConfig {
                deflate: (i % 2 == 0).then(DeflateConfig::default),
                ..ClientConfig::default()
            };
            Blocking::connect(addr, cfg, "/room")
        })
        .collect();
    for _ in 0..N {
        orx.recv_timeout(IO_TIMEOUT).unwrap();
    }
    assert_eq!(room.len(), N);
    let long = "x".repeat(300);
    clients[3].text("hello room");
    clients[4].text(&long);
    for c in clients.iter_mut() {
        let mut got = vec![c.next(), c.next()];
        got.sort_by_key(|e| format!("{e:?}").len());
        assert_eq!(got, [Ev::Text("hello room".into()), Ev::Text(long.clone())]);
    }
    // members that leave are not written to
    let gone = clients.pop().unwrap();
    drop(gone);
    eventually("left", || room.len() == N - 1);
    clients[0].text("after");
    for c in clients.iter_mut() {
        assert_eq!(c.next(), Ev::Text("after".into()));
    }
}

fn legacy_hixie76(kind: BackendKind) {
    // legacy drafts are off by default: Hixie-76 (no version) gets 426
    let off = WsServer::builder().build();
    let (_e1, addr_off) = echo_server(kind, &off);
    // the example handshake of draft-hixie-thewebsocketprotocol-76
    let req: &[u8] = b"GET /demo HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key2: 12998 5 Y3 1  .P00\r\nSec-WebSocket-Protocol: sample\r\nUpgrade: WebSocket\r\n\
Sec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\nOrigin: http://example.com\r\n\r\n^n:ds[4U";
    let r = raw_request(addr_off, req);
    assert!(r.starts_with("HTTP/1.1 426 "), "{r}");

    let on = WsServer::builder().legacy_drafts(true).build();
    let (_e2, addr) = echo_server(kind, &on);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(req).unwrap();
    let mut resp = Vec::new();
    let mut buf = [0u8; 1024];
    while !resp.ends_with(b"8jKS'y:G*Co,Wxa-") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "eof: {}", String::from_utf8_lossy(&resp));
        resp.extend_from_slice(&buf[..n]);
    }
    assert!(resp.starts_with(b"HTTP/1.1 101 "));
    s.write_all(b"\x00hello hixie\xff").unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"\xff") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"\x00hello hixie\xff");
    s.write_all(b"\xff\x00").unwrap();
    let mut end = Vec::new();
    let _ = s.read_to_end(&mut end);
    assert_eq!(end, b"\xff\x00");

    // HyBi-08: RFC 6455 framing, version 8
    let req = UPGRADE.replace("Version: 13", "Version: 8") + "\r\n";
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 101 "));
    s.write_all(&masked(0x81, b"hybi")).unwrap();
    let mut got = [0u8; 6];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, [0x81, 4, b'h', b'y', b'b', b'i']);
}

fn shutdown_sends_1001(kind: BackendKind) {
    let ws = WsServer::builder().build();
    let (engine, addr) = echo_server(kind, &ws);
    let mut c = Blocking::connect(addr, ClientConfig::default(), "/");
    c.text("x");
    assert_eq!(c.next(), Ev::Text("x".into()));
    let waiter = std::thread::spawn(move || {
        engine.shutdown(Duration::from_secs(5));
        engine.wait()
    });
    assert_eq!(
        c.next(),
        Ev::Close(Some(1001), "server shutting down".into())
    );
    // our echo of the close lets the server finish at once
    c.expect_eof();
    let t = Instant::now();
    waiter.join().unwrap().unwrap();
    assert!(t.elapsed() < Duration::from_secs(4));
}

fn http_fallback_page(kind: BackendKind) {
    let page: Arc<[u8]> = Arc::from(&b"<html>chat</html>"[..]);
    let ws = WsServer::builder()
        .http(move |req| {
            (req.path() == "/").then(|| HttpResponse::new(200, "text/html", page.clone()))
        })
        .build();
    let (_engine, addr) = echo_server(kind, &ws);
    let r = raw_request(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.ends_with("\r\n\r\n<html>chat</html>"), "{r}");
    let r = raw_request(addr, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
    // WebSocket on the same port
    let mut c = Blocking::connect(addr, ClientConfig::default(), "/chat");
    c.text("ws too");
    assert_eq!(c.next(), Ev::Text("ws too".into()));
    assert_eq!(ws.stats().http_responses, 2);
}

/// Reports what on_open saw.
struct OpenProbe {
    tx: mpsc::Sender<(String, Option<String>, Option<String>)>,
}

impl WsHandler for OpenProbe {
    fn on_open(&mut self, cx: &mut WsCtx<'_, '_>, hs: &Handshake<'_>) {
        let _ = self.tx.send((
            hs.path().to_owned(),
            hs.header("x-token").map(str::to_owned),
            hs.protocol().map(str::to_owned),
        ));
        let _ = cx.send_text("welcome");
    }
    fn on_message(&mut self, _cx: &mut WsCtx<'_, '_>, _msg: Message<'_>) {}
}

fn subprotocol_and_headers(kind: BackendKind) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let ws = WsServer::builder().protocols(["v2", "v1"]).build();
    let (_engine, addr) = start(
        kind,
        1,
        ws.service("ws", localhost(), move || OpenProbe {
            tx: tx.lock().unwrap().clone(),
        }),
    );
    let cfg = ClientConfig {
        protocols: vec!["v1".into(), "v2".into()],
        headers: vec![("X-Token".into(), "secret".into())],
        ..ClientConfig::default()
    };
    let mut c = Blocking::connect(addr, cfg, "/p?q=1");
    assert_eq!(c.conn.protocol(), Some("v1"));
    assert_eq!(c.next(), Ev::Text("welcome".into()));
    assert_eq!(
        rx.recv_timeout(IO_TIMEOUT).unwrap(),
        ("/p?q=1".into(), Some("secret".into()), Some("v1".into()))
    );
}

/// A member that says which loop it is on, can block its loop, and floods
/// the room.
struct Lagging {
    room: Room,
}

impl WsHandler for Lagging {
    fn on_open(&mut self, cx: &mut WsCtx<'_, '_>, _hs: &Handshake<'_>) {
        assert!(self.room.join(cx));
        let i = cx.loop_cx().loop_index();
        let _ = cx.send_text(&format!("loop {i}"));
    }
    fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
        match msg {
            Message::Text("block") => std::thread::sleep(Duration::from_millis(1500)),
            Message::Text("flood") => {
                let big = PreparedMessage::new(MessageKind::Binary, &vec![7u8; 1 << 20]);
                for _ in 0..40 {
                    self.room.broadcast(cx.loop_cx(), &big);
                }
            }
            _ => {}
        }
    }
    fn on_close(&mut self, cx: &mut WsCtx<'_, '_>, _code: CloseCode, _reason: &str) {
        self.room.leave(cx);
    }
}

/// Broadcasts waiting for a loop that is behind are bounded: past
/// `MAX_IN_FLIGHT` bytes its members miss messages (counted) instead of the
/// task queue growing without bound; they get every message posted before.
fn room_broadcast_to_a_busy_loop_is_bounded(kind: BackendKind) {
    let room = Room::new();
    let ws = WsServer::builder().max_message_size(2 << 20).build();
    let r2 = room.clone();
    let (_engine, addr) = start(
        kind,
        2,
        ws.service("room", localhost(), move || Lagging { room: r2.clone() })
            .write_hard_limit(1 << 30),
    );
    let cfg = || ClientConfig {
        limits: myriad_ws::DecoderConfig {
            max_message_size: 2 << 20,
            ..Default::default()
        },
        ..ClientConfig::default()
    };
    // two members on different loops
    let mut members: Vec<(Blocking, String)> = Vec::new();
    for _ in 0..40 {
        let mut c = Blocking::connect(addr, cfg(), "/");
        let Ev::Text(l) = c.next() else {
            panic!("no loop index")
        };
        members.push((c, l));
        if members.iter().any(|m| m.1 == "loop 0") && members.iter().any(|m| m.1 == "loop 1") {
            break;
        }
    }
    let a = members
        .iter()
        .position(|m| m.1 == "loop 0")
        .expect("a member on loop 0");
    let b = members
        .iter()
        .position(|m| m.1 == "loop 1")
        .expect("a member on loop 1");
    members[b].0.text("block");
    std::thread::sleep(Duration::from_millis(200));
    members[a].0.text("flood");
    eventually("broadcasts dropped for the busy loop", || {
        room.dropped() > 0
    });
    let dropped = room.dropped() as usize;
    // 16 MiB in flight holds 15 framed 1 MiB messages
    assert!(
        dropped <= 40 - 15,
        "at least MAX_IN_FLIGHT's worth is kept: {dropped}"
    );
    let got = (0..40 - dropped)
        .filter(|_| matches!(members[b].0.next(), Ev::Binary(ref v) if v.len() == 1 << 20))
        .count();
    assert_eq!(got, 40 - dropped);
}

/// A connection that sends faster than its message rate is closed with
/// 1008 and counted; one within its burst is served.
fn message_rate_limit(kind: BackendKind) {
    let ws = WsServer::builder().message_rate(2, 5).build();
    let (_engine, addr) = echo_server(kind, &ws);
    let mut calm = Blocking::connect(addr, ClientConfig::default(), "/");
    for i in 0..5 {
        calm.text(&format!("m{i}"));
        assert_eq!(calm.next(), Ev::Text(format!("m{i}")));
    }
    let mut fast = Blocking::connect(addr, ClientConfig::default(), "/");
    for i in 0..30 {
        fast.text(&format!("x{i}"));
    }
    loop {
        match fast.next() {
            Ev::Close(code, _) => {
                assert_eq!(code, Some(1008));
                break;
            }
            Ev::Text(_) => {}
            e => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ws.stats().rate_limited, 1);
}

/// Answers every message with 64 KiB and records the most bytes it ever
/// found queued before answering.
struct Amplify {
    most: Arc<std::sync::atomic::AtomicUsize>,
}

impl WsHandler for Amplify {
    fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
        self.most
            .fetch_max(cx.queued(), std::sync::atomic::Ordering::Relaxed);
        let tag = match msg {
            Message::Text(t) => t.as_bytes().to_vec(),
            Message::Binary(b) => b.to_vec(),
        };
        let mut reply = vec![b'.'; 64 << 10];
        reply[..tag.len()].copy_from_slice(&tag);
        let _ = cx.send_binary(&reply);
    }
}

/// Many small messages in one receive, each answered with 64 KiB: the
/// server stops decoding once its queue passes the high-water mark and
/// goes on after it drained, so that what it holds stays near the mark
/// (without the stop it queued all 300 answers, 19 MiB, in one turn), and
/// every message is still answered, in order.
fn decoding_stops_at_high_water(kind: BackendKind) {
    let ws = WsServer::builder().build();
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let m = most.clone();
    let svc = ws
        .service("ws", localhost(), move || Amplify { most: m.clone() })
        .write_high_water(128 << 10);
    let (_engine, addr) = start(kind, 1, svc);
    let mut c = Blocking::connect(addr, ClientConfig::default(), "/");
    let mut burst = Vec::new();
    for i in 0..300u32 {
        c.conn
            .send_text(&mut burst, &format!("{i:05}"))
            .expect("encode");
    }
    // one write: the server sees many messages per receive
    c.s.write_all(&burst).unwrap();
    for i in 0..300u32 {
        match c.next() {
            Ev::Binary(b) => {
                assert_eq!(b.len(), 64 << 10);
                assert_eq!(&b[..5], format!("{i:05}").as_bytes(), "reply {i}");
            }
            e => panic!("unexpected {e:?}"),
        }
    }
    let most = most.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        most < (128 << 10) + (64 << 10) + 64,
        "{most} bytes were queued before an answer (high-water 128 KiB)"
    );
}

/// Keepalive: a peer that answers the server's pings stays connected; one
/// that sends nothing after a ping is closed at the pong timeout (its
/// handler told 1006 "pong timeout") and counted.
fn keepalive_closes_a_silent_peer(kind: BackendKind) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let ws = WsServer::builder()
        .keepalive(Some(Duration::from_millis(100)), Duration::from_millis(50))
        .build();
    let (_engine, addr) = start(
        kind,
        1,
        ws.service("ws", localhost(), move || CloseProbe {
            tx: tx.lock().unwrap().clone(),
        }),
    );
    // answers pings (the client codec queues the pong, read_some sends it)
    let mut alive = Blocking::connect(addr, ClientConfig::default(), "/");
    // never reads, so never answers
    let mut silent = Blocking::connect(addr, ClientConfig::default(), "/");
    let mut pings = 0;
    while pings < 5 {
        match alive.next() {
            Ev::Ping(p) => {
                assert!(p.is_empty());
                pings += 1;
            }
            e => panic!("unexpected {e:?}"),
        }
    }
    // the silent one was closed long ago (its first ping's deadline)
    assert_eq!(
        rx.recv_timeout(IO_TIMEOUT).unwrap(),
        (1006, "pong timeout".into())
    );
    let st = ws.stats();
    assert_eq!(st.pong_timeouts, 1, "{st:?}");
    assert!(st.pings_sent >= 6, "{st:?}");
    // what the silent peer sees: the ping, then the end
    let mut saw_ping = false;
    loop {
        if let Some(e) = silent.events.pop_front() {
            saw_ping |= e == Ev::Ping(Vec::new());
            continue;
        }
        let mut tmp = [0u8; 1024];
        match silent.s.read(&mut tmp) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                silent.buf.extend_from_slice(&tmp[..n]);
                let mut out = Vec::new();
                let mut evs = Vec::new();
                if let Ok(used) = silent
                    .conn
                    .feed(&mut silent.buf, &mut out, &mut |e, _| evs.push(own(e)))
                {
                    silent.buf.drain(..used);
                }
                silent.events.extend(evs);
            }
        }
    }
    assert!(saw_ping);
    // the live one is still served
    alive.text("still here");
    loop {
        match alive.next() {
            Ev::Text(t) => {
                assert_eq!(t, "still here");
                break;
            }
            Ev::Ping(_) => {}
            e => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ws.stats().pong_timeouts, 1);
}

/// Reports the client address the upgrade and the open connection see.
struct PeerProbe {
    tx: mpsc::Sender<(Option<SocketAddr>, Option<SocketAddr>)>,
    at_upgrade: Option<SocketAddr>,
}

impl WsHandler for PeerProbe {
    fn on_upgrade(&mut self, req: &UpgradeInfo<'_>) -> Upgrade {
        self.at_upgrade = req.peer();
        Upgrade::Accept
    }
    fn on_open(&mut self, cx: &mut WsCtx<'_, '_>, _hs: &Handshake<'_>) {
        let _ = self.tx.send((self.at_upgrade, cx.peer_addr().ok()));
    }
    fn on_message(&mut self, _cx: &mut WsCtx<'_, '_>, _msg: Message<'_>) {}
}

/// Behind a PROXY-protocol listener both `UpgradeInfo::peer` and
/// `WsCtx::peer_addr` give the client from the header, not the load
/// balancer's address.
fn peer_behind_proxy_protocol(kind: BackendKind) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let ws = WsServer::builder().build();
    let svc = myriad::proxy::proxied(
        ws.service("ws", localhost(), move || PeerProbe {
            tx: tx.lock().unwrap().clone(),
            at_upgrade: None,
        }),
        myriad::proxy::DEFAULT_HEADER_TIMEOUT,
    );
    let (_engine, addr) = start(kind, 1, svc);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(format!("PROXY TCP4 10.0.0.1 127.0.0.1 12345 8080\r\n{UPGRADE}\r\n").as_bytes())
        .unwrap();
    let mut resp = [0u8; 12];
    s.read_exact(&mut resp).unwrap();
    assert_eq!(&resp, b"HTTP/1.1 101");
    let client: SocketAddr = "10.0.0.1:12345".parse().unwrap();
    assert_eq!(
        rx.recv_timeout(IO_TIMEOUT).unwrap(),
        (Some(client), Some(client))
    );
}

/// Echoes around the engine's lending threshold (2 KiB) and the receive
/// buffer size (32 KiB), one per write and several in one write: on
/// io_uring a whole frame is sent from the receive buffer with the server
/// header put in place of the client's, and must come back byte-exact.
fn large_echoes_from_the_receive_buffer(kind: BackendKind) {
    let ws = WsServer::builder().deflate(false).build();
    let (_engine, addr) = echo_server(kind, &ws);
    let mut c = Blocking::connect(addr, ClientConfig::default(), "/");
    let sizes = [
        125, 126, 2047, 2048, 5000, 16384, 30000, 32768, 65535, 65536, 70000,
    ];
    let payload = |n: usize, seed: usize| -> Vec<u8> {
        (0..n).map(|i| ((i * 31 + seed) % 251) as u8).collect()
    };
    for (k, &n) in sizes.iter().enumerate() {
        let b = payload(n, k);
        c.send(|c, o| c.send_binary(o, &b).unwrap());
        assert_eq!(c.next(), Ev::Binary(b), "binary of {n} bytes");
        let t: String = (0..n)
            .map(|i| (b'a' + ((i + k) % 26) as u8) as char)
            .collect();
        c.text(&t);
        assert_eq!(c.next(), Ev::Text(t), "text of {n} bytes");
    }
    // several frames in one write: several slices of one receive buffer
    for round in 0..5 {
        let mut out = Vec::new();
        let msgs: Vec<Vec<u8>> = sizes.iter().map(|&n| payload(n, round)).collect();
        for m in &msgs {
            c.conn.send_binary(&mut out, m).unwrap();
        }
        c.s.write_all(&out).unwrap();
        for m in msgs {
            let n = m.len();
            assert_eq!(c.next(), Ev::Binary(m), "round {round}: {n} bytes");
        }
    }
}

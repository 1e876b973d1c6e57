//! Unit and property tests of the codec, driven the way the engine drives
//! it: unconsumed bytes are kept and shown again in front of new ones.

use crate::*;
use proptest::prelude::*;
use std::time::{Duration, Instant};

const DATE: [u8; 29] = *b"Sun, 06 Nov 1994 08:49:37 GMT";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Head {
        method: String,
        target: String,
        version: Version,
        headers: Vec<(String, Vec<u8>)>,
    },
    /// All body events of one request, joined.
    Body(Vec<u8>),
    End,
}

/// The engine's contract around one connection, with an echo application.
struct Harness {
    conn: ServerConn,
    t0: Instant,
    pending: Vec<u8>,
    out: Vec<u8>,
    events: Vec<Ev>,
    body: Vec<u8>,
    err: Option<RequestError>,
    /// Respond with a streamed (chunked) body instead of Content-Length.
    streamed: bool,
}

impl Harness {
    fn new(cfg: Config) -> Self {
        let t0 = Instant::now();
        Harness {
            conn: ServerConn::new(cfg, t0),
            t0,
            pending: Vec::new(),
            out: Vec::new(),
            events: Vec::new(),
            body: Vec::new(),
            err: None,
            streamed: false,
        }
    }

    fn at(&self, ms: u64) -> Now {
        Now::new(self.t0 + Duration::from_millis(ms), DATE)
    }

    fn push(&mut self, bytes: &[u8]) {
        self.push_at(bytes, 0);
    }

    fn push_at(&mut self, bytes: &[u8], ms: u64) {
        self.pending.extend_from_slice(bytes);
        let now = self.at(ms);
        let mut at = 0;
        // Bounded: every turn consumes bytes or yields an event that
        // changes the state; a misbehaving codec fails the test instead of
        // looping forever.
        for _ in 0..100_000 {
            match self.conn.feed(&mut self.pending[at..], now, &mut self.out) {
                Ok((n, ev)) => {
                    at += n;
                    match ev {
                        Event::Head(r) => self.events.push(Ev::Head {
                            method: r.method().into(),
                            target: r.target().into(),
                            version: r.version(),
                            headers: r
                                .headers()
                                .map(|(n, v)| (n.to_string(), v.to_vec()))
                                .collect(),
                        }),
                        Event::Body(b) => {
                            assert!(!b.is_empty(), "empty body event");
                            self.body.extend_from_slice(b);
                        }
                        Event::End => {
                            if !self.body.is_empty() {
                                self.events.push(Ev::Body(self.body.clone()));
                            }
                            self.events.push(Ev::End);
                            if self.streamed {
                                self.conn
                                    .respond(
                                        &Response::new(200),
                                        BodySize::Streamed,
                                        now,
                                        &mut self.out,
                                    )
                                    .unwrap();
                                for part in self.body.chunks(3) {
                                    self.conn.send_body(part, &mut self.out).unwrap();
                                }
                                self.conn.finish(now, &mut self.out).unwrap();
                            } else {
                                self.conn
                                    .respond_full(
                                        &Response::new(200),
                                        &self.body,
                                        now,
                                        &mut self.out,
                                    )
                                    .unwrap();
                            }
                            self.body.clear();
                        }
                        _ => break,
                    }
                }
                Err(e) => {
                    self.err = Some(e);
                    at = self.pending.len();
                    break;
                }
            }
        }
        self.pending.drain(..at);
    }

    fn out_str(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    /// The status codes of the responses written so far.
    fn statuses(&self) -> Vec<u16> {
        let s = self.out_str();
        // Bodies here never contain a status line.
        s.match_indices("HTTP/1.")
            .filter_map(|(i, _)| s.get(i + 9..i + 12)?.parse().ok())
            .collect()
    }
}

fn run(req: &[u8]) -> Harness {
    let mut h = Harness::new(Config::default());
    h.push(req);
    h
}

#[test]
fn simple_get_keep_alive() {
    let mut h = run(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        h.out_str(),
        "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 0\r\n\r\n"
    );
    assert!(!h.conn.is_closed());
    assert!(h.conn.is_idle());
    h.push(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.statuses(), [200, 200]);
}

#[test]
fn pipelined_with_bodies_in_order() {
    let h = run(
        b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\none\
POST /2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n\
GET /3 HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert_eq!(h.statuses(), [200, 200, 200]);
    let s = h.out_str();
    let one = s.find("\r\n\r\none").unwrap();
    let two = s.find("\r\n\r\ntwo").unwrap();
    assert!(one < two);
    assert!(s.ends_with("Content-Length: 0\r\n\r\n"));
}

#[test]
fn chunked_with_extensions_and_trailers() {
    let h = run(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip-not, chunked\r\n\r\n");
    assert_eq!(h.err, Some(RequestError::UnsupportedTransferCoding));
    assert_eq!(h.statuses(), [501]);

    let h = run(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
5;name=value\r\nhello\r\nA \t; x\r\n, world!!!\r\n0\r\nX-Trailer: yes\r\n\r\n",
    );
    assert_eq!(h.err, None);
    assert!(h.events.contains(&Ev::Body(b"hello, world!!!".to_vec())));
    assert!(h
        .out_str()
        .ends_with("Content-Length: 15\r\n\r\nhello, world!!!"));
}

#[test]
fn expect_continue() {
    let mut h = Harness::new(Config::default());
    h.push(b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    assert_eq!(h.out_str(), "HTTP/1.1 100 Continue\r\n\r\n");
    h.push(b"data");
    assert_eq!(h.statuses(), [100, 200]);
    assert!(h.out_str().ends_with("\r\n\r\ndata"));

    // No 100 to HTTP/1.0, nor without a body.
    let h = run(b"PUT /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nz");
    assert_eq!(h.statuses(), [200]);
    let h = run(b"GET /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(h.statuses(), [200]);
    // Unknown expectations: 417.
    let h = run(b"GET /x HTTP/1.1\r\nHost: a\r\nExpect: tea\r\n\r\n");
    assert_eq!(h.statuses(), [417]);
    // Too large: 413 at once, no 100.
    let h = run(
        b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 99999999\r\n\r\n",
    );
    assert_eq!(h.statuses(), [413]);
}

#[test]
fn early_final_answer_to_expect_closes() {
    let t = Instant::now();
    let now = Now::new(t, DATE);
    let mut c = ServerConn::new(Config::default(), t);
    let mut out = Vec::new();
    let mut req =
        b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n".to_vec();
    let (n, ev) = c.feed(&mut req, now, &mut out).unwrap();
    assert!(matches!(ev, Event::Head(_)));
    assert_eq!(n, req.len());
    c.respond_full(&Response::new(403), b"", now, &mut out)
        .unwrap();
    let s = String::from_utf8(out).unwrap();
    assert!(s.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{s}");
    assert!(s.contains("Connection: close\r\n"));
    assert!(c.is_closed());
}

/// Status lines from the table of known statuses and for unknown ones
/// (digits, then the empty reason), in both versions, with header fields.
#[test]
fn status_lines_and_fields() {
    for (req, version) in [
        (&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], "HTTP/1.1"),
        (
            &b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"[..],
            "HTTP/1.0",
        ),
    ] {
        for (status, line) in [
            (200, "200 OK"),
            (404, "404 Not Found"),
            (505, "505 HTTP Version Not Supported"),
            (299, "299 "),
            (999, "999 "),
        ] {
            let mut h = Harness::new(Config::default());
            let now = h.at(0);
            let mut input = req.to_vec();
            let (_, ev) = h.conn.feed(&mut input, now, &mut h.out).unwrap();
            assert!(matches!(ev, Event::Head(_)));
            let (_, ev) = h.conn.feed(&mut [], now, &mut h.out).unwrap();
            assert!(matches!(ev, Event::End));
            let res = Response::new(status)
                .with_headers(&[("X-A", b"1"), ("Content-Type", b"text/plain")]);
            h.conn.respond_full(&res, b"hey", now, &mut h.out).unwrap();
            let keep = if version == "HTTP/1.0" {
                "Connection: keep-alive\r\n"
            } else {
                ""
            };
            assert_eq!(
                h.out_str(),
                format!(
                    "{version} {line}\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nX-A: 1\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n{keep}\r\nhey"
                )
            );
        }
    }
}

#[test]
fn head_has_no_body() {
    let h = run(b"HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
    assert!(h.out_str().ends_with("Content-Length: 3\r\n\r\n"));
    let mut h = Harness::new(Config::default());
    h.streamed = true;
    h.push(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(h.out_str().ends_with("Transfer-Encoding: chunked\r\n\r\n"));
}

#[test]
fn http10() {
    let h = run(b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi");
    let s = h.out_str();
    assert!(s.starts_with("HTTP/1.0 200 OK\r\n"), "{s}");
    assert!(s.contains("Connection: close\r\n"));
    assert!(s.ends_with("Content-Length: 2\r\nConnection: close\r\n\r\nhi"));
    assert!(h.conn.is_closed());

    let mut h = run(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert!(h.out_str().contains("Connection: keep-alive\r\n"));
    assert!(!h.conn.is_closed());
    h.push(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(h.statuses(), [200, 200]);
    assert!(h.conn.is_closed());

    // Streamed to 1.0: no chunked, close-delimited.
    let mut h = Harness::new(Config::default());
    h.streamed = true;
    h.push(b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello");
    let s = h.out_str();
    assert!(!s.contains("chunked"), "{s}");
    assert!(s.ends_with("Connection: close\r\n\r\nhello"), "{s}");
    assert!(h.conn.is_closed());

    // Chunked request in 1.0: 400.
    let h = run(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_eq!(h.statuses(), [400]);
    assert!(h.out_str().starts_with("HTTP/1.0 400"));
}

#[test]
fn streamed_chunked_response() {
    let mut h = Harness::new(Config::default());
    h.streamed = true;
    h.push(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    assert!(h
        .out_str()
        .ends_with("Transfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"));
    assert!(!h.conn.is_closed());
}

#[test]
fn connection_close() {
    let mut h = run(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\nGET / HTTP/1.1\r\n",
    );
    assert_eq!(h.statuses(), [200]);
    assert!(h.out_str().contains("Connection: close\r\n"));
    assert!(h.conn.is_closed());
    h.push(b"Host: a\r\n\r\n");
    assert_eq!(h.statuses(), [200]);
}

/// Every strictness case: the request, the status, and that the connection
/// is closed with `Connection: close`.
#[test]
fn strictness_table() {
    let cases: &[(&[u8], u16)] = &[
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x1\r\n\r\nx", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: a\n\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\n", 400),
        (b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX\x01Y: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX Y: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX : a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\n: a\r\n\r\n", 400),
        // RFC 9112 §6.3 (4): chunked not last means the length cannot be
        // known: 400 (a MUST, over §6.1's 501 for an unknown coding).
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 400),
        // Chunked last, the framing is known, a coding before it is not.
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400),
        (b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / FOO\r\nHost: a\r\n\r\n", 400),
        (b"GET /\r\nHost: a\r\n\r\n", 400),
        (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
        (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        // No tunnel mode: a 2xx to CONNECT would promise one (RFC 9110
        // §9.3.6), so 501 whatever the handler.
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501),
        // RFC 3986 / RFC 9112 §3.2: no raw non-ASCII octets, no fragment.
        (b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET /a?b=\x80 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET /path#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET http://a/#f HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        // RFC 9110 §4.2.1: an http URI with an empty host is invalid, and
        // an origin-form target URI takes its authority from Host.
        (b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
        (b"OPTIONS * HTTP/1.1\r\nHost:\r\n\r\n", 400),
        (b"GET / HTTP/1.0\r\nHost: \r\n\r\n", 400),
        // Leading zeros: valid 1*DIGIT, but octal to some parsers (strict
        // choice, no second reading of the length).
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n1234567", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 00\r\n\r\n", 400),
        // RFC 9110 §5.3: Content-Type is a singleton field.
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Type: a/b\r\ncontent-type: c/d\r\n\r\nx", 400),
        (b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        // Chunked body errors.
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 x\r\nx\r\n0\r\n\r\n", 400),
        // RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS
        // value ] ), name a token, value a token or quoted-string; BWS
        // only before a ';'.
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\nx\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;\r\nx\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1; \r\nx\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;bad[=x\r\nx\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\r\nx\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\"x\r\nx\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\"x\"y\r\nx\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a b\r\nx\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a;\r\nx\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a=b \r\nx\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: \x01\r\n\r\n", 400),
        // Limits.
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1048577\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n100001\r\n", 413),
    ];
    for (req, status) in cases {
        let h = run(req);
        let shown = String::from_utf8_lossy(req);
        assert!(h.err.is_some(), "accepted: {shown:?}\n{}", h.out_str());
        assert_eq!(h.err.unwrap().status(), *status, "{shown:?}");
        assert_eq!(
            h.statuses().last(),
            Some(status),
            "{shown:?}: {}",
            h.out_str()
        );
        assert!(h.out_str().contains("Connection: close\r\n"), "{shown:?}");
        assert!(h.conn.is_closed());
    }
}

#[test]
fn accepted_variants() {
    let ok: &[&[u8]] = &[
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http://a/b HTTP/1.1\r\nHost: \r\n\r\n",
        b"GET /caf%C3%A9?q=a/b?c HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
        b"GET http://a/b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: \xff\xfe obs-text \t ok\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \tChunked \r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  7 \r\n\r\n1234567",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Type: a/b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 ; a=\"x;\\\"y\" ;b= c\t;d\r\nx\r\n0\r\n\r\n",
    ];
    for req in ok {
        let h = run(req);
        assert_eq!(h.err, None, "{:?}", String::from_utf8_lossy(req));
        assert_eq!(h.statuses(), [200], "{:?}", String::from_utf8_lossy(req));
    }
}

#[test]
fn minor_version_above_one_is_http11() {
    let h = run(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n");
    assert_eq!(h.statuses(), [200]);
    assert!(h.out_str().starts_with("HTTP/1.1 200"));
    let h = run(b"GET / HTTP/1.9\r\n\r\n");
    assert_eq!(h.statuses(), [400]); // as 1.1: Host is required
}

#[test]
fn header_limits() {
    let cfg = Config {
        max_head: 100,
        max_headers: 3,
        ..Config::default()
    };
    // Incomplete and already over the limit: 431 without waiting.
    let mut h = Harness::new(cfg);
    h.push(b"GET / HTTP/1.1\r\nHost: a\r\nX: ");
    assert_eq!(h.err, None);
    h.push(&[b'y'; 80]);
    assert_eq!(h.err, Some(RequestError::HeadTooLarge));
    assert_eq!(h.statuses(), [431]);
    // RFC 9112 §3: a request-target longer than the server parses is 414
    // (a MUST); a first line with no space is no request line at all: 400.
    let mut h = Harness::new(cfg);
    h.push(b"GET /");
    h.push(&[b'a'; 120]);
    assert_eq!(h.err, Some(RequestError::UriTooLong));
    assert_eq!(h.statuses(), [414]);
    let mut h = Harness::new(cfg);
    h.push(&[b'A'; 120]);
    assert_eq!(h.err, Some(RequestError::BadRequestLine));
    assert_eq!(h.statuses(), [400]);
    let mut h = Harness::new(cfg);
    h.push(
        &[
            b"GET /".as_slice(),
            &[b'a'; 120],
            b" HTTP/1.1\r\nHost: a\r\n\r\n",
        ]
        .concat(),
    );
    assert_eq!(h.statuses(), [414]);
    // Complete but over.
    let mut h = Harness::new(cfg);
    h.push(
        &[
            b"GET / HTTP/1.1\r\nHost: a\r\nX: ".as_slice(),
            &[b'y'; 70],
            b"\r\n\r\n",
        ]
        .concat(),
    );
    assert_eq!(h.statuses(), [431]);
    // Too many fields.
    let h = {
        let mut h = Harness::new(cfg);
        h.push(b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n");
        h
    };
    assert_eq!(h.err, Some(RequestError::TooManyHeaders));
    assert_eq!(h.statuses(), [431]);
    // Trailers count against max_head too.
    let mut h = Harness::new(cfg);
    h.push(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n");
    h.push(&[b'T'; 101]);
    assert_eq!(h.err, Some(RequestError::TrailersTooLarge));
}

#[test]
fn chunked_body_limit_counts_all_chunks() {
    let cfg = Config {
        max_body: 10,
        ..Config::default()
    };
    let mut h = Harness::new(cfg);
    h.push(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n");
    assert_eq!(h.err, None);
    h.push(b"6\r\n");
    assert_eq!(h.err, Some(RequestError::BodyTooLarge));
    assert_eq!(h.statuses(), [413]);
}

#[test]
fn header_timeout() {
    let cfg = Config {
        header_timeout: Some(Duration::from_secs(10)),
        keep_alive_timeout: Some(Duration::from_secs(60)),
        ..Config::default()
    };
    let mut h = Harness::new(cfg);
    assert_eq!(h.conn.deadline(), Some(h.t0 + Duration::from_secs(60)));
    h.push_at(b"GET / HTTP/1.1\r\n", 1000);
    let d = h.conn.deadline().unwrap();
    assert_eq!(d, h.t0 + Duration::from_secs(11));
    // More bytes do not move the deadline.
    h.push_at(b"Host: a\r\n", 5000);
    assert_eq!(h.conn.deadline(), Some(d));
    let now = h.at(10_999);
    assert_eq!(h.conn.handle_timeout(now, &mut h.out), None);
    let now = h.at(11_000);
    assert_eq!(
        h.conn.handle_timeout(now, &mut h.out),
        Some(Timeout::Header)
    );
    assert_eq!(h.statuses(), [408]);
    assert!(h.out_str().contains("Connection: close\r\n"));
    assert!(h.conn.is_closed());
    assert_eq!(h.conn.deadline(), None);
}

#[test]
fn idle_timeout_closes_silently() {
    let mut h = Harness::new(Config::default());
    h.push_at(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 2000);
    assert_eq!(h.conn.deadline(), Some(h.t0 + Duration::from_secs(62)));
    let len = h.out.len();
    let now = h.at(62_000);
    assert_eq!(h.conn.handle_timeout(now, &mut h.out), Some(Timeout::Idle));
    assert_eq!(h.out.len(), len);
    assert!(h.conn.is_closed());
}

#[test]
fn body_rate_timeout() {
    let cfg = Config {
        min_body_rate: Some(MinRate::new(100, Duration::from_secs(1))),
        ..Config::default()
    };
    let mut h = Harness::new(cfg);
    h.push(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n");
    assert_eq!(h.conn.deadline(), Some(h.t0 + Duration::from_secs(1)));
    h.push_at(&[b'x'; 200], 500);
    // 200 bytes earn 2 s at 100 B/s.
    assert_eq!(h.conn.deadline(), Some(h.t0 + Duration::from_secs(3)));
    let now = h.at(3000);
    assert_eq!(h.conn.handle_timeout(now, &mut h.out), Some(Timeout::Body));
    assert_eq!(h.statuses(), [408]);
    assert!(h.conn.is_closed());

    // While a 100-continue is owed, no deadline: the client waits for us.
    let mut h = Harness::new(cfg);
    let t = h.t0;
    let mut req =
        b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n".to_vec();
    let mut out = Vec::new();
    h.conn.feed(&mut req, Now::new(t, DATE), &mut out).unwrap();
    assert_eq!(h.conn.deadline(), None);
}

#[test]
fn response_misuse() {
    let t = Instant::now();
    let now = Now::new(t, DATE);
    let mut c = ServerConn::new(Config::default(), t);
    let mut out = Vec::new();
    assert_eq!(
        c.respond_full(&Response::new(200), b"", now, &mut out),
        Err(ResponseError::NoRequest)
    );
    let mut req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    c.feed(&mut req, now, &mut out).unwrap();
    let bad: &[(&str, &[u8])] = &[("X", b"a\r\nInjected: 1")];
    assert_eq!(
        c.respond(
            &Response::new(200).with_headers(bad),
            BodySize::Known(0),
            now,
            &mut out
        ),
        Err(ResponseError::BadHeader)
    );
    let bad: &[(&str, &[u8])] = &[("Content-Length", b"5")];
    assert_eq!(
        c.respond(
            &Response::new(200).with_headers(bad),
            BodySize::Known(0),
            now,
            &mut out
        ),
        Err(ResponseError::ReservedHeader)
    );
    assert_eq!(
        c.respond(&Response::new(101), BodySize::Known(0), now, &mut out),
        Err(ResponseError::BadStatus)
    );
    assert_eq!(
        c.respond(&Response::new(204), BodySize::Known(1), now, &mut out),
        Err(ResponseError::BodyNotAllowed)
    );
    assert!(out.is_empty());
    c.respond(&Response::new(200), BodySize::Known(3), now, &mut out)
        .unwrap();
    assert_eq!(
        c.respond(&Response::new(200), BodySize::Known(3), now, &mut out),
        Err(ResponseError::AlreadyStarted)
    );
    assert_eq!(
        c.send_body(b"abcd", &mut out),
        Err(ResponseError::BodyTooLong)
    );
    c.send_body(b"ab", &mut out).unwrap();
    assert_eq!(c.finish(now, &mut out), Err(ResponseError::BodyTooShort));
    assert!(c.is_closed());
}

#[test]
fn no_content_has_no_framing() {
    let t = Instant::now();
    let now = Now::new(t, DATE);
    let mut c = ServerConn::new(Config::default(), t);
    let mut out = Vec::new();
    let mut req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    c.feed(&mut req, now, &mut out).unwrap();
    c.respond_full(&Response::new(204), b"", now, &mut out)
        .unwrap();
    let s = String::from_utf8(out).unwrap();
    assert_eq!(
        s,
        "HTTP/1.1 204 No Content\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n"
    );
    assert!(c.is_idle());
}

#[test]
fn shutdown_closes_idle_and_marks_busy() {
    let t = Instant::now();
    let now = Now::new(t, DATE);
    let mut c = ServerConn::new(Config::default(), t);
    c.close_after_response();
    assert!(c.is_closed());
    let mut c = ServerConn::new(Config::default(), t);
    let mut out = Vec::new();
    let mut req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    c.feed(&mut req, now, &mut out).unwrap();
    c.close_after_response();
    c.respond_full(&Response::new(200), b"", now, &mut out)
        .unwrap();
    assert!(String::from_utf8(out)
        .unwrap()
        .contains("Connection: close\r\n"));
    assert!(c.is_closed());
    // Asked while a head is still arriving: kept when the head completes.
    let mut c = ServerConn::new(Config::default(), t);
    let mut out = Vec::new();
    let mut part = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    assert!(matches!(
        c.feed(&mut part, now, &mut out),
        Ok((0, Event::NeedData))
    ));
    c.close_after_response();
    assert!(!c.is_closed());
    let mut whole = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    c.feed(&mut whole, now, &mut out).unwrap();
    c.respond_full(&Response::new(200), b"", now, &mut out)
        .unwrap();
    assert!(String::from_utf8(out)
        .unwrap()
        .contains("Connection: close\r\n"));
    assert!(c.is_closed());
}

#[test]
fn head_arriving_bytewise_is_scanned_once() {
    // A head cut into single bytes parses the same, and a complete head is
    // handed over with nothing consumed before.
    let req = b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Long: 0123456789\r\n\r\n";
    let mut h = Harness::new(Config::default());
    for b in req.iter() {
        h.push(std::slice::from_ref(b));
    }
    assert_eq!(h.statuses(), [200]);
    assert_eq!(h.conn.deadline(), Some(h.t0 + Duration::from_secs(60)));
}

/// A pipeline of valid requests of every framing.
fn pipeline() -> impl Strategy<Value = Vec<u8>> {
    let one = prop_oneof![
        "[a-z/]{1,12}"
            .prop_map(|p| format!("GET /{p} HTTP/1.1\r\nHost: h\r\nX-Y: v\r\n\r\n").into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| {
            let mut r = format!(
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
                b.len()
            )
            .into_bytes();
            r.extend_from_slice(&b);
            r
        }),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..20), 0..4).prop_map(
            |chunks| {
                let mut r =
                    b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                for c in chunks {
                    r.extend_from_slice(format!("{:x};e=1\r\n", c.len()).as_bytes());
                    r.extend_from_slice(&c);
                    r.extend_from_slice(b"\r\n");
                }
                r.extend_from_slice(b"0\r\nT: 1\r\n\r\n");
                r
            }
        ),
        Just(b"HEAD /h HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n".to_vec()),
        Just(
            b"PUT /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"
                .to_vec()
        ),
    ];
    proptest::collection::vec(one, 1..5).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A pipeline cut at any two points gives the same events and the same
    /// output as in one piece.
    #[test]
    fn split_anywhere_same_result(input in pipeline(), a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
        let whole = run(&input);
        prop_assert_eq!(whole.err, None);
        let (mut i, mut j) = (a.index(input.len() + 1), b.index(input.len() + 1));
        if i > j { std::mem::swap(&mut i, &mut j); }
        let mut h = Harness::new(Config::default());
        h.push(&input[..i]);
        h.push(&input[i..j]);
        h.push(&input[j..]);
        prop_assert_eq!(&h.events, &whole.events);
        // 100 Continue may come at a different place (it is sent when the
        // body is first read); the final responses are the same.
        let strip = |s: String| s.replace("HTTP/1.1 100 Continue\r\n\r\n", "");
        prop_assert_eq!(strip(h.out_str()), strip(whole.out_str()));
        prop_assert_eq!(h.statuses().iter().filter(|&&s| s == 200).count(),
            whole.events.iter().filter(|e| **e == Ev::End).count());
    }

    /// Cut at every byte boundary: the same.
    #[test]
    fn every_boundary(input in pipeline()) {
        let whole = run(&input);
        for i in 0..=input.len() {
            let mut h = Harness::new(Config::default());
            h.push(&input[..i]);
            h.push(&input[i..]);
            prop_assert_eq!(&h.events, &whole.events);
        }
    }

    /// Garbage never panics; an error leaves exactly one answer, closing.
    #[test]
    fn garbage_is_answered(prefix in pipeline(), junk in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut h = Harness::new(Config::default());
        h.push(&prefix);
        h.push(&junk);
        if let Some(e) = h.err {
            let s = h.out_str();
            prop_assert!(h.conn.is_closed());
            let status = format!(" {} ", e.status());
            prop_assert!(s.contains(&status));
            prop_assert!(s.ends_with('\n'));
        }
    }

    /// Mutated valid requests: never a panic, and never a request accepted
    /// with a bare LF or a control character in its head.
    #[test]
    fn mutations(input in pipeline(), at in any::<prop::sample::Index>(), byte in prop_oneof![Just(b'\n'), Just(b'\r'), Just(0u8), Just(b' '), Just(b':'), any::<u8>()]) {
        let mut m = input.clone();
        let i = at.index(m.len());
        m[i] = byte;
        let _ = run(&m);
    }
}

//! `handler = "pubsub"` and a `publish` route end to end, on one node:
//! subscription by URL path and by the JSON protocol, `POST
//! /publish/:topic` with its bearer token, the delivery count, and
//! publishing by clients refused unless allowed.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use myriad_ws::{ClientConfig, ClientConnection, Event};

mod common;

use common::*;

const TOKEN: &str = "0123456789abcdef-token";

struct Ws {
    s: TcpStream,
    conn: ClientConnection,
    buf: Vec<u8>,
    events: VecDeque<String>,
}

impl Ws {
    fn connect(addr: &str, path: &str) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Ws {
            s,
            conn: ClientConnection::new(ClientConfig::default(), "localhost", path),
            buf: Vec::new(),
            events: VecDeque::new(),
        };
        let mut out = Vec::new();
        c.conn.start(&mut out);
        c.s.write_all(&out).unwrap();
        while !c.conn.is_open() {
            c.read_some();
        }
        c
    }

    fn read_some(&mut self) {
        let mut tmp = [0u8; 16384];
        let n = self.s.read(&mut tmp).expect("read");
        assert!(n > 0, "eof");
        self.buf.extend_from_slice(&tmp[..n]);
        let mut out = Vec::new();
        let mut evs = Vec::new();
        let used = self
            .conn
            .feed(&mut self.buf, &mut out, &mut |e, _| {
                if let Event::Text(t) = e {
                    evs.push(t.to_owned())
                }
            })
            .expect("valid frames");
        self.buf.drain(..used);
        self.events.extend(evs);
    }

    fn next(&mut self) -> serde_json::Value {
        loop {
            if let Some(e) = self.events.pop_front() {
                return serde_json::from_str(&e).expect("JSON");
            }
            self.read_some();
        }
    }

    fn send(&mut self, v: serde_json::Value) {
        let mut out = Vec::new();
        self.conn.send_text(&mut out, &v.to_string()).unwrap();
        self.s.write_all(&out).unwrap();
    }
}

/// POST with an optional bearer token: status and body.
fn post(addr: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[test]
fn pubsub_service_and_publish_route() {
    let _g = serial();
    let d = tmpdir("pubsub");
    let (ws_port, http_port) = (free_port(), free_port());
    let (ws_addr, http_addr) = (
        format!("127.0.0.1:{ws_port}"),
        format!("127.0.0.1:{http_port}"),
    );
    let cfg = d.join("pubsub.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[service]]\nname = \"push\"\nlisten = \"{ws_addr}\"\nstack = \"ws\"\nhandler = \"pubsub\"\n\n\
             [[service]]\nname = \"api\"\nlisten = \"{http_addr}\"\nstack = \"http\"\n\
             [[service.route]]\npath = \"/publish/:topic\"\npublish = \"push\"\ntoken = \"{TOKEN}\"\n"
        ),
    )
    .unwrap();
    let (code, msg) = check(&cfg);
    assert_eq!(code, 0, "{msg}");
    let _server = Server(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(&ws_addr);
    wait_port(&http_addr);

    // By URL path, and by the JSON protocol.
    let mut a = Ws::connect(&ws_addr, "/news");
    assert_eq!(
        a.next(),
        serde_json::json!({"event": "subscribed", "topic": "news"})
    );
    let mut b = Ws::connect(&ws_addr, "/");
    b.send(serde_json::json!({"op": "subscribe", "topic": "news"}));
    assert_eq!(
        b.next(),
        serde_json::json!({"event": "subscribed", "topic": "news"})
    );
    b.send(serde_json::json!({"op": "subscribe", "topic": "other"}));
    assert_eq!(b.next()["event"], "subscribed");

    // The publish route: token checks, then two local deliveries.
    assert_eq!(post(&http_addr, "/publish/news", None, "x").0, 401);
    assert_eq!(
        post(
            &http_addr,
            "/publish/news",
            Some("wrong-token-0123456"),
            "x"
        )
        .0,
        403
    );
    let (status, body) = post(&http_addr, "/publish/news", Some(TOKEN), "hello");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, serde_json::json!({"topic": "news", "deliveries": 2}));
    let want = serde_json::json!({"topic": "news", "data": "hello"});
    assert_eq!(a.next(), want);
    assert_eq!(b.next(), want);
    let (_, body) = post(&http_addr, "/publish/other", Some(TOKEN), "only b");
    assert!(body.contains("\"deliveries\":1"), "{body}");
    assert_eq!(b.next()["data"], "only b");

    // Clients may not publish here; unsubscribing stops deliveries.
    a.send(serde_json::json!({"op": "publish", "topic": "news", "data": "x"}));
    assert_eq!(a.next()["reason"], "publishing is not allowed");
    b.send(serde_json::json!({"op": "unsubscribe", "topic": "news"}));
    assert_eq!(b.next()["event"], "unsubscribed");
    let (_, body) = post(&http_addr, "/publish/news", Some(TOKEN), "again");
    assert!(body.contains("\"deliveries\":1"), "{body}");
    assert_eq!(a.next()["data"], "again");
    a.send(serde_json::json!({"op": "nonsense", "topic": "x"}));
    assert_eq!(a.next()["event"], "error");
    // b got nothing after its unsubscribe: the next thing it sees is this.
    b.send(serde_json::json!({"op": "subscribe", "topic": "marker"}));
    assert_eq!(
        b.next(),
        serde_json::json!({"event": "subscribed", "topic": "marker"})
    );
}

//! `proxy_protocol = true`: the server behind a PROXY-protocol load
//! balancer (headers written by hand here; scripts/cluster-demo drives
//! HAProxy's `send-proxy-v2`).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::*;

fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < n {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    out
}

#[test]
fn proxy_protocol_listener() {
    let _g = serial();
    let d = tmpdir("proxy");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = d.join("proxy.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[service]]\nname = \"e\"\nlisten = \"{addr}\"\nstack = \"tcp\"\nhandler = \"echo\"\nproxy_protocol = true\nhandshake_timeout = \"1s\"\n"
        ),
    )
    .unwrap();
    assert_eq!(check(&cfg).0, 0);
    let _server = Server(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(&addr);
    let connect = || {
        let s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    // v2 then data: only the data is echoed.
    let mut s = connect();
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[
        0x21, 0x11, 0, 12, 10, 0, 0, 1, 127, 0, 0, 1, 0x30, 0x39, 0x1f, 0x90,
    ]);
    h.extend_from_slice(b"hello");
    s.write_all(&h).unwrap();
    assert_eq!(read_n(&mut s, 5), b"hello");
    // v1 too.
    let mut s = connect();
    s.write_all(b"PROXY TCP4 10.0.0.1 127.0.0.1 12345 8080\r\nv1")
        .unwrap();
    assert_eq!(read_n(&mut s, 2), b"v1");
    // No header: closed, nothing echoed.
    let mut s = connect();
    s.write_all(b"hello").unwrap();
    assert_eq!(read_n(&mut s, 1), b"");
    // A header that never completes: closed after handshake_timeout.
    let mut s = connect();
    s.write_all(&h[..10]).unwrap();
    assert_eq!(read_n(&mut s, 1), b"");
}

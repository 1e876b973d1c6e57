//! `proxy_protocol = true`: the server behind a PROXY-protocol load
//! balancer (headers written by hand here; scripts/cluster-demo drives
//! HAProxy's `send-proxy-v2`).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
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
    let _server = serve(&cfg);
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

/// On TLS stacks (tls, wss) the header comes before the ClientHello, as
/// HAProxy sends it in `mode tcp` with `send-proxy-v2` (TLS passthrough).
#[test]
fn proxy_protocol_before_tls() {
    let _g = serial();
    let d = tmpdir("proxy-tls");
    self_signed_cert(&d);
    let (pt, pw) = (free_port(), free_port());
    let cfg = d.join("proxy-tls.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[service]]\nname = \"t\"\nlisten = \"127.0.0.1:{pt}\"\nstack = \"tls\"\nhandler = \"echo\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\nproxy_protocol = true\nhandshake_timeout = \"2s\"\n\
             [[service]]\nname = \"w\"\nlisten = \"127.0.0.1:{pw}\"\nstack = \"wss\"\nhandler = \"ws-echo\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\nproxy_protocol = true\n"
        ),
    )
    .unwrap();
    assert_eq!(check(&cfg).0, 0);
    let _server = serve(&cfg);
    wait_port(&format!("127.0.0.1:{pt}"));
    wait_port(&format!("127.0.0.1:{pw}"));
    let script = r#"
import socket, ssl, sys
ca, pt, pw = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(cafile=ca)
v2 = b"\r\n\r\n\0\r\nQUIT\n" + bytes([0x21, 0x11, 0, 12, 10, 0, 0, 1, 127, 0, 0, 1, 0x30, 0x39, 0x01, 0xbb])
raw = socket.create_connection(("127.0.0.1", pt), timeout=10)
raw.sendall(v2)
s = ctx.wrap_socket(raw, server_hostname="localhost")
s.sendall(b"over tls"); got = b""
while len(got) < 8: got += s.recv(64)
print("TLS", got.decode())
raw = socket.create_connection(("127.0.0.1", pw), timeout=10)
raw.sendall(b"PROXY TCP4 10.0.0.1 127.0.0.1 12345 443\r\n")
w = ctx.wrap_socket(raw, server_hostname="localhost")
w.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
r = b""
while b"\r\n\r\n" not in r: r += w.recv(1024)
head, _, rest = r.partition(b"\r\n\r\n")
mask = b"\x01\x02\x03\x04"; p = b"over wss"
w.sendall(bytes([0x81, 0x80 | len(p)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(p)))
while len(rest) < 2 + len(p): rest += w.recv(64)
print("WSS", head.split(b"\r\n")[0].decode(), rest[2:2 + len(p)].decode())
# Without a header the TLS handshake is refused.
try:
    n = ctx.wrap_socket(socket.create_connection(("127.0.0.1", pt), timeout=10), server_hostname="localhost")
    n.sendall(b"x"); print("NOHEADER", n.recv(64))
except (ssl.SSLError, OSError) as e:
    print("NOHEADER refused")
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(d.join("cert.pem"))
        .args([pt.to_string(), pw.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("TLS over tls"), "{text}{err}");
    assert!(
        text.contains("WSS HTTP/1.1 101 Switching Protocols over wss"),
        "{text}{err}"
    );
    assert!(text.contains("NOHEADER refused"), "{text}{err}");
}

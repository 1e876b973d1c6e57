//! WebSocket echo server on fastwebsockets, as in its echo example: one task
//! per connection, `FragmentCollector::read_frame` then `write_frame` per
//! message (one write per frame), automatic pongs and close. The HTTP
//! upgrade is parsed by hand (fastwebsockets' own server upgrade needs
//! hyper). Exits 0 on SIGINT/SIGTERM.
//!
//! `ws-echo-fastwebsockets --addr 127.0.0.1:19203 [--threads N]`

#[path = "../common.rs"]
mod common;

use base64::Engine as _;
use fastwebsockets::{FragmentCollector, OpCode, Role, WebSocket};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

async fn handshake(stream: &mut TcpStream) -> Option<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut tmp = [0u8; 1024];
    let end = loop {
        let n = stream.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if buf.len() > 8192 {
            return None;
        }
    };
    // the client sends nothing before our answer
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let key = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| v.trim().to_owned())
    })?;
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(h.finalize());
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(resp.as_bytes()).await.ok()
}

async fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    if handshake(&mut stream).await.is_none() {
        return;
    }
    let mut ws = FragmentCollector::new(WebSocket::after_handshake(stream, Role::Server));
    loop {
        let Ok(frame) = ws.read_frame().await else {
            return;
        };
        match frame.opcode {
            OpCode::Close => return,
            OpCode::Text | OpCode::Binary => {
                if ws.write_frame(frame).await.is_err() {
                    return;
                }
            }
            _ => {}
        }
    }
}

fn main() {
    let args = common::args("ws-echo-fastwebsockets");
    common::runtime(args.threads).block_on(async move {
        let listener = TcpListener::bind(args.addr).await.expect("bind");
        eprintln!("ws-echo-fastwebsockets: listening on {}", args.addr);
        let accept = async {
            loop {
                if let Ok((s, _)) = listener.accept().await {
                    tokio::spawn(serve(s));
                }
            }
        };
        tokio::select! {
            _ = accept => {}
            _ = common::shutdown_signal() => {}
        }
    });
}

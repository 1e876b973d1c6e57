//! A blocking client over `std::net`: connects, sends a few messages
//! (optionally with permessage-deflate), checks the echoes, closes.
//!
//! ```text
//! cargo run -p myriad-ws --example echo_client -- 127.0.0.1:9001 [deflate]
//! ```

use std::io::{self, Read, Write};
use std::net::TcpStream;

use myriad_ws::{ClientConfig, ClientConnection, CloseCode, DeflateConfig, Event};

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let deflate = std::env::args().nth(2).as_deref() == Some("deflate");
    let config = ClientConfig {
        deflate: deflate.then(|| DeflateConfig {
            server_max_window_bits: 12,
            client_max_window_bits: 11,
            ..DeflateConfig::default()
        }),
        ..ClientConfig::default()
    };
    let mut stream = TcpStream::connect(&addr)?;
    let mut conn = ClientConnection::new(config, &addr, "/");
    let mut out = Vec::new();
    conn.start(&mut out);
    stream.write_all(&out)?;
    out.clear();

    let messages: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        "é€😀".repeat(3000).into_bytes(),
        vec![b'z'; 300_000],
    ];
    let mut sent = false;
    let mut echoed: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut filled = 0;
    while !conn.is_closed() {
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
        let r = conn.feed(&mut buf[..filled], &mut out, &mut |ev, _| match ev {
            Event::Text(t) => echoed.push(t.as_bytes().to_vec()),
            Event::Binary(b) => echoed.push(b.to_vec()),
            _ => {}
        });
        let consumed = r.map_err(io::Error::other)?;
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
        if conn.is_open() && !sent {
            sent = true;
            eprintln!("open; deflate: {:?}", conn.deflate());
            for m in &messages {
                match std::str::from_utf8(m) {
                    Ok(t) => conn.send_text(&mut out, t),
                    Err(_) => conn.send_binary(&mut out, m),
                }
                .map_err(io::Error::other)?;
            }
            conn.send_ping(&mut out, b"ping")
                .map_err(io::Error::other)?;
        }
        if conn.is_open() && echoed.len() == messages.len() {
            assert_eq!(echoed, messages, "echo mismatch");
            eprintln!("all {} echoes match", messages.len());
            conn.close(&mut out, CloseCode::NORMAL, "done")
                .map_err(io::Error::other)?;
        }
        stream.write_all(&out)?;
        out.clear();
    }
    eprintln!("closed: {:?}", conn.state());
    Ok(())
}

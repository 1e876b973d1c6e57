//! A blocking, thread-per-connection echo server over `std::net`, to try
//! the sans-I/O state machine against real clients (browsers, Autobahn's
//! fuzzingclient, other libraries). Not how Myriad serves: the engine drives
//! the same `ServerConnection` from its event loops.
//!
//! ```text
//! cargo run -p myriad-ws --example echo_server -- 127.0.0.1:9001
//! ```

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use myriad_ws::handshake::LegacyDrafts;
use myriad_ws::{DeflateConfig, Event, ServerConfig, ServerConnection};

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let config: Arc<ServerConfig> = ServerConfig {
        deflate: Some(DeflateConfig::default()),
        legacy: LegacyDrafts {
            hixie76: true,
            hybi07_08: true,
        },
        ..ServerConfig::default()
    }
    .into();
    let listener = TcpListener::bind(&addr)?;
    eprintln!("echo server on {addr}");
    for stream in listener.incoming() {
        let stream = stream?;
        let config = Arc::clone(&config);
        std::thread::spawn(move || {
            if let Err(e) = serve(stream, config) {
                eprintln!("connection: {e}");
            }
        });
    }
    Ok(())
}

fn serve(mut stream: TcpStream, config: Arc<ServerConfig>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut conn = ServerConnection::new(Arc::clone(&config));
    // room for the largest frame the decoder waits for, plus a read
    let mut buf = vec![0u8; config.limits.max_buffered_frame + 64 * 1024];
    let mut filled = 0;
    let mut out = Vec::new();
    loop {
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        let result = conn.feed(&mut buf[..filled], &mut out, &mut |ev, tx| {
            let _ = match ev {
                Event::Text(t) => tx.send_text(t),
                Event::Binary(b) => tx.send_binary(b),
                _ => Ok(()),
            };
        });
        // whatever happened, send what the connection wrote (answers,
        // echoes, pongs, close frames, HTTP errors)
        stream.write_all(&out)?;
        out.clear();
        match result {
            Ok(consumed) => {
                // keep the unconsumed bytes, in front of the next read
                buf.copy_within(consumed..filled, 0);
                filled -= consumed;
            }
            Err(e) => {
                eprintln!("closing: {e}");
                return Ok(());
            }
        }
        if conn.is_closed() {
            return Ok(());
        }
    }
}

//! WebSocket echo server on tokio-tungstenite, written the way its examples
//! are: one task per connection, `next()` then `send()` (which flushes) per
//! message. Default settings. Exits 0 on SIGINT/SIGTERM.
//!
//! `ws-echo-tungstenite --addr 127.0.0.1:19202 [--threads N]`

#[path = "../common.rs"]
mod common;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};

async fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        if msg.is_text() || msg.is_binary() {
            if ws.send(msg).await.is_err() {
                return;
            }
        } else if msg.is_close() {
            return;
        }
    }
}

fn main() {
    let args = common::args("ws-echo-tungstenite");
    common::runtime(args.threads).block_on(async move {
        let listener = TcpListener::bind(args.addr).await.expect("bind");
        eprintln!("ws-echo-tungstenite: listening on {}", args.addr);
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

//! A broadcast chat room on the Myriad engine: every text message a client
//! sends goes to every connected client, on every loop, framed once and
//! never copied per recipient. The same port serves, at `/`, a small page
//! that joins the room with the browser's WebSocket API.
//!
//! ```text
//! cargo run --release -p myriad-ws --example ws_chat -- 127.0.0.1:9002 \
//!     [--threads N] [--backend auto|io_uring|epoll] [--no-deflate]
//! ```
//!
//! Then open <http://127.0.0.1:9002/> in two browser tabs. Serves until
//! SIGINT or SIGTERM (clients get close 1001), then exits 0. A bad address
//! or flag prints a one-line error and exits 2.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use myriad::{BackendKind, Engine};
use myriad_ws::server::{HttpResponse, WsServer};
use myriad_ws::{
    CloseCode, Handshake, Message, MessageKind, PreparedMessage, Room, WsCtx, WsHandler,
};

#[derive(Parser)]
#[command(about = "Myriad WebSocket chat room")]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:9002.
    addr: SocketAddr,
    /// I/O threads (event loops); default: number of cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Backend: auto, io_uring or epoll.
    #[arg(long, default_value = "auto")]
    backend: BackendKind,
    /// Do not negotiate permessage-deflate.
    #[arg(long)]
    no_deflate: bool,
    /// Graceful-shutdown grace period in seconds.
    #[arg(long, default_value_t = 2.0)]
    grace: f64,
    /// Serve wss:// (and the page over https://) with this certificate
    /// chain (PEM; needs --key).
    #[arg(long, requires = "key")]
    cert: Option<std::path::PathBuf>,
    /// Private key for --cert (PEM).
    #[arg(long, requires = "cert")]
    key: Option<std::path::PathBuf>,
}

/// Largest chat message.
const MAX_MESSAGE: usize = 4096;

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Myriad chat</title>
<style>
 body { font: 15px system-ui, sans-serif; max-width: 40em; margin: 2em auto; }
 #log { list-style: none; padding: 0.5em; border: 1px solid #ccc; height: 20em; overflow-y: auto; }
 #status { color: #666; }
 form { display: flex; gap: 0.5em; margin-top: 0.5em; }
 #msg { flex: 1; }
</style>
</head>
<body>
<h1>Myriad chat</h1>
<p>Status: <span id="status">connecting</span></p>
<ul id="log"></ul>
<form id="form">
 <input id="msg" autocomplete="off" maxlength="1000" placeholder="Say something" autofocus>
 <button id="send" type="submit">Send</button>
</form>
<script>
"use strict";
const log = document.getElementById("log");
const status = document.getElementById("status");
const input = document.getElementById("msg");
const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/chat";
const ws = new WebSocket(url);
ws.onopen = () => { status.textContent = "connected"; };
ws.onclose = (e) => { status.textContent = "closed (" + e.code + ")"; };
ws.onerror = () => { status.textContent = "error"; };
ws.onmessage = (e) => {
  const li = document.createElement("li");
  li.className = "message";
  li.textContent = e.data;
  log.appendChild(li);
  log.scrollTop = log.scrollHeight;
};
document.getElementById("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = input.value.trim();
  if (text && ws.readyState === WebSocket.OPEN) { ws.send(text); }
  input.value = "";
});
</script>
</body>
</html>
"#;

struct Member {
    room: Room,
}

impl WsHandler for Member {
    fn on_open(&mut self, cx: &mut WsCtx<'_, '_>, _hs: &Handshake<'_>) {
        if !self.room.join(cx) {
            let _ = cx.close(CloseCode::UNSUPPORTED_DATA, "legacy protocol");
        }
    }

    fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
        match msg {
            Message::Text(t) => {
                // framed once; every member's queue shares the bytes
                let m = PreparedMessage::new(MessageKind::Text, t.as_bytes());
                self.room.broadcast(cx.loop_cx(), &m);
            }
            Message::Binary(_) => {
                let _ = cx.close(CloseCode::UNSUPPORTED_DATA, "text only");
            }
        }
    }

    fn on_close(&mut self, cx: &mut WsCtx<'_, '_>, _code: CloseCode, _reason: &str) {
        self.room.leave(cx);
    }
}

fn main() {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e)
            if e.kind() == clap::error::ErrorKind::DisplayHelp
                || e.kind() == clap::error::ErrorKind::DisplayVersion =>
        {
            print!("{e}");
            std::process::exit(0);
        }
        Err(e) => {
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid arguments");
            eprintln!("ws_chat: {}", first.trim_start_matches("error: "));
            std::process::exit(2);
        }
    };
    if args.threads == Some(0) || !args.grace.is_finite() {
        eprintln!("ws_chat: --threads and --grace must be positive");
        std::process::exit(2);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(args) {
        eprintln!("ws_chat: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let page = HttpResponse::new(200, "text/html; charset=utf-8", PAGE.as_bytes());
    let ws = WsServer::builder()
        .max_message_size(MAX_MESSAGE)
        .deflate(!args.no_deflate)
        .http(move |req| match req.path() {
            "/" | "/index.html" => Some(page.clone()),
            "/favicon.ico" => Some(HttpResponse::new(204, "image/x-icon", &b""[..])),
            _ => None,
        })
        .build();
    let room = Room::new();
    let mut b = Engine::builder().backend(args.backend);
    if let Some(t) = args.threads {
        b = b.threads(t);
    }
    let engine = b
        .service(with_tls(
            ws.service("ws_chat", args.addr, move || Member { room: room.clone() })
                .idle_timeout(Some(Duration::from_secs(600))),
            &args,
        )?)
        .start()?;
    eprintln!(
        "ws_chat: listening on {} ({} backend, {} threads); open http://{}/",
        engine.local_addrs(0)[0],
        engine.backend(),
        engine.loop_count(),
        engine.local_addrs(0)[0],
    );
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down");
    }
    engine.shutdown(Duration::from_secs_f64(args.grace.max(0.0)));
    engine.wait()?;
    let w = ws.stats();
    eprintln!(
        "ws_chat: stopped; {} handshakes, {} pages served, {} messages in",
        w.handshakes, w.http_responses, w.messages_in
    );
    Ok(())
}

/// wss://: TLS (myriad-tls) as the service's filter when --cert/--key are given.
fn with_tls(svc: myriad::Service, args: &Args) -> anyhow::Result<myriad::Service> {
    match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            let cfg = myriad_tls::ServerTlsConfig::from_pem_files(cert, key)?;
            let acceptor = myriad_tls::TlsAcceptor::new(&cfg)?;
            Ok(svc.filter(acceptor.factory()))
        }
        _ => Ok(svc),
    }
}

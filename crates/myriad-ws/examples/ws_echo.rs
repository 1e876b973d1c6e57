//! WebSocket echo server on the Myriad engine (the Autobahn and benchmark
//! target).
//!
//! ```text
//! cargo run --release -p myriad-ws --example ws_echo -- 127.0.0.1:9001 \
//!     [--threads N] [--legacy-drafts] [--no-deflate] [--backend auto|io_uring|epoll]
//!     [--deflate-level 0-9] [--deflate-threshold BYTES] [--deflate-context-takeover]
//!     [--max-message-size BYTES]
//! ```
//!
//! Echoes every text and binary message (messages up to 16 MiB;
//! permessage-deflate unless `--no-deflate`). Serves until SIGINT or
//! SIGTERM, then sends close 1001 to every client, waits for them (grace
//! period), prints its counters and exits 0. A bad address or flag prints a
//! one-line error and exits 2.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use myriad::{BackendKind, Engine};
use myriad_ws::server::WsServer;
use myriad_ws::{DeflateConfig, Message, WsCtx, WsHandler};

#[derive(Parser)]
#[command(about = "Myriad WebSocket echo server")]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:9001 or [::1]:9001.
    addr: SocketAddr,
    /// I/O threads (event loops); default: number of cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Backend: auto, io_uring or epoll.
    #[arg(long, default_value = "auto")]
    backend: BackendKind,
    /// Also accept the Hixie-76 / HyBi-00 and HyBi-07/08 drafts.
    #[arg(long)]
    legacy_drafts: bool,
    /// Do not negotiate permessage-deflate.
    #[arg(long)]
    no_deflate: bool,
    /// permessage-deflate compression level, 0-9 (an echo server favours
    /// speed; the library's default is 6; level 1 uses static codes only
    /// and cannot fall back to stored blocks, so 2 is the fast choice).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=9))]
    deflate_level: u32,
    /// Messages shorter than this are sent uncompressed.
    #[arg(long, default_value_t = 64)]
    deflate_threshold: usize,
    /// Let permessage-deflate keep compression contexts between messages
    /// (better ratio on similar messages; about 340 KiB of zlib state per
    /// connection for its whole life). Default: no context takeover either
    /// way, no zlib state on an idle connection.
    #[arg(long)]
    deflate_context_takeover: bool,
    /// Largest message in bytes (1009 above it).
    #[arg(long, default_value_t = 16 << 20)]
    max_message_size: usize,
    /// Drop connections that have not completed the opening handshake after
    /// this many seconds (0: never).
    #[arg(long, default_value_t = 10.0)]
    handshake_timeout: f64,
    /// Graceful-shutdown grace period in seconds.
    #[arg(long, default_value_t = 5.0)]
    grace: f64,
    /// Serve wss:// with this certificate chain (PEM; needs --key).
    #[arg(long, requires = "key")]
    cert: Option<std::path::PathBuf>,
    /// Private key for --cert (PEM).
    #[arg(long, requires = "cert")]
    key: Option<std::path::PathBuf>,
}

struct Echo;

impl WsHandler for Echo {
    fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
        // Written straight into the engine's out-queue; all replies to one
        // read leave in one send.
        let _ = cx.send(msg);
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
            eprintln!("ws_echo: {}", first.trim_start_matches("error: "));
            std::process::exit(2);
        }
    };
    if args.threads == Some(0)
        || !args.grace.is_finite()
        || !(args.handshake_timeout.is_finite() && args.handshake_timeout >= 0.0)
        || args.max_message_size == 0
    {
        eprintln!(
            "ws_echo: --threads, --grace, --handshake-timeout and --max-message-size must be positive"
        );
        std::process::exit(2);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(args) {
        eprintln!("ws_echo: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let ws = WsServer::builder()
        .max_message_size(args.max_message_size)
        .deflate_config((!args.no_deflate).then(|| DeflateConfig {
            level: args.deflate_level,
            threshold: args.deflate_threshold,
            context_takeover: args.deflate_context_takeover,
            ..DeflateConfig::default()
        }))
        .legacy_drafts(args.legacy_drafts)
        .handshake_timeout(
            (args.handshake_timeout > 0.0).then(|| Duration::from_secs_f64(args.handshake_timeout)),
        )
        .build();
    let mut b = Engine::builder().backend(args.backend);
    if let Some(t) = args.threads {
        b = b.threads(t);
    }
    let engine = b
        .service(with_tls(
            ws.service("ws_echo", args.addr, || Echo)
                .write_hard_limit(256 << 20),
            &args,
        )?)
        .start()?;
    eprintln!(
        "ws_echo: listening on {} ({} backend, {} threads, deflate {}, legacy drafts {})",
        engine.local_addrs(0)[0],
        engine.backend(),
        engine.loop_count(),
        if args.no_deflate { "off" } else { "on" },
        if args.legacy_drafts { "on" } else { "off" },
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
    let s = engine.stats();
    let w = ws.stats();
    eprintln!(
        "ws_echo: stopped; accepted {} connections, {} handshakes, {} messages in; \
         refused 400:{} 403:{} 426:{} 431:{}, handshake timeouts {}; failed 1002:{} 1007:{} 1009:{} \
         (inflate ratio {})",
        s.accepted,
        w.handshakes,
        w.messages_in,
        w.rejected_400,
        w.rejected_403,
        w.rejected_426,
        w.rejected_431,
        w.handshake_timeouts,
        w.closed_1002,
        w.closed_1007,
        w.closed_1009,
        w.inflate_ratio_exceeded
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

//! HTTP/1.1 echo server on Myriad.
//!
//! ```text
//! cargo run --release -p myriad-http --example http_echo -- 127.0.0.1:8080 \
//!     [--threads N] [--backend auto|io_uring|epoll] [--max-body BYTES] \
//!     [--header-timeout SECS] [--keep-alive-timeout SECS]
//! ```
//!
//! Answers every request (any method, any target) with `200 OK` and the
//! request body, with `Content-Length`; HEAD gets the head only; HTTP/1.0
//! clients get HTTP/1.0 answers. Malformed requests get their status (400,
//! 413, 414, 417, 431, 501 — an unknown transfer coding, or `CONNECT` —,
//! 505) and a close; slow heads and bodies get 408.
//! Serves until SIGINT or SIGTERM, then shuts down gracefully and exits 0.
//! A bad address or flag prints a one-line error and exits 2.

use clap::Parser;
use myriad::{BackendKind, Engine};
use myriad_http::engine::Echo;
use myriad_http::{Config, MinRate};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Myriad HTTP/1.1 echo server")]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:8080 or [::1]:8080.
    addr: SocketAddr,
    /// I/O threads (event loops); default: number of cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Backend: auto, io_uring or epoll.
    #[arg(long, default_value = "auto")]
    backend: BackendKind,
    /// Largest request body in bytes (413 past it).
    #[arg(long, default_value_t = 16 << 20)]
    max_body: u64,
    /// Seconds from the first byte of a request to the end of its head
    /// (408 past it).
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
    /// Seconds an idle keep-alive connection is kept.
    #[arg(long, default_value_t = 60.0)]
    keep_alive_timeout: f64,
    /// Slowest accepted body upload in bytes per second, after
    /// --header-timeout seconds of grace (408 past it).
    #[arg(long, default_value_t = 1024)]
    min_body_rate: u64,
    /// Graceful-shutdown grace period in seconds.
    #[arg(long, default_value_t = 5.0)]
    grace: f64,
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
            // One line: clap's first line names the flag and the problem.
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid arguments");
            eprintln!("http_echo: {}", first.trim_start_matches("error: "));
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args) {
        eprintln!("http_echo: {e}");
        std::process::exit(1);
    }
}

fn secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v.max(0.0)).unwrap_or(Duration::MAX)
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = Config::default();
    cfg.max_body = args.max_body;
    cfg.header_timeout = Some(secs(args.header_timeout));
    cfg.keep_alive_timeout = Some(secs(args.keep_alive_timeout));
    cfg.min_body_rate = Some(MinRate::new(args.min_body_rate, secs(args.header_timeout)));
    let mut b = Engine::builder().backend(args.backend);
    if let Some(t) = args.threads {
        b = b.threads(t);
    }
    // The engine's own bound on unconsumed input stays at its default
    // (16 MiB): besides a head or a chunk-size line, it holds what arrives
    // while reading is paused by back-pressure, and on io_uring the
    // receives in flight when the pause takes effect can bring a whole
    // socket buffer (megabytes). A bound of a head plus 64 KiB reset
    // clients that pipeline 2 MiB uploads (found by myriad-load -w 2).
    let service = Echo::service(args.addr, cfg);
    let engine = b.service(service).start()?;
    eprintln!(
        "http_echo: listening on {} ({} backend, {} threads)",
        engine.local_addrs(0)[0],
        engine.backend(),
        engine.loop_count()
    );
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    let _ = signals.forever().next();
    engine.shutdown(secs(args.grace));
    engine.wait()?;
    Ok(())
}

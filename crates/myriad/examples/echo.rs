//! TCP echo server on Myriad.
//!
//! ```text
//! cargo run --release --example echo -- 127.0.0.1:7000 [--threads N] [--backend io_uring|epoll]
//! ```
//!
//! Serves until SIGINT or SIGTERM, then shuts down gracefully (open
//! connections get `on_shutdown`, 5 s of grace) and exits 0. A bad address
//! or flag prints a one-line error and exits 2.

use clap::Parser;
use myriad::{BackendKind, Ctx, Engine, Handler, Service};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Myriad TCP echo server")]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:7000 or [::1]:7000.
    addr: SocketAddr,
    /// I/O threads (event loops); default: number of cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Backend: auto, io_uring or epoll.
    #[arg(long, default_value = "auto")]
    backend: BackendKind,
    /// Worker processes sharing the port (SO_REUSEPORT), under a
    /// supervisor that restarts dead workers and forwards signals.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Graceful-shutdown grace period in seconds.
    #[arg(long, default_value_t = 5.0)]
    grace: f64,
}

struct Echo;

impl Handler for Echo {
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        cx.write(data);
        data.len()
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
            // One line: clap's first line names the flag and the problem.
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid arguments");
            eprintln!("echo: {}", first.trim_start_matches("error: "));
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if args.workers > 1 && myriad::workers::worker_index().is_none() {
        if args.addr.port() == 0 {
            eprintln!("echo: --workers needs a fixed port (each worker binds the same one)");
            std::process::exit(2);
        }
        let code = myriad::workers::supervise(args.workers, |_| {
            let mut c = std::process::Command::new(
                std::env::current_exe().unwrap_or_else(|_| "echo".into()),
            );
            c.args(std::env::args_os().skip(1));
            c
        });
        match code {
            Ok(c) => std::process::exit(c),
            Err(e) => {
                eprintln!("echo: {e}");
                std::process::exit(1);
            }
        }
    }
    if let Err(e) = run(args) {
        eprintln!("echo: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut b = Engine::builder().backend(args.backend);
    if let Some(t) = args.threads {
        b = b.threads(t);
    }
    let engine = b
        .service(Service::new("echo", args.addr, || Echo))
        .start()?;
    eprintln!(
        "echo: listening on {} ({} backend, {} threads)",
        engine.local_addrs(0)[0],
        engine.backend(),
        engine.loop_count()
    );
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    // Under `--workers`, the supervisor waits for this (and gives up on a
    // worker that dies before it).
    myriad::workers::notify("READY=1");
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down");
    }
    engine.shutdown(Duration::from_secs_f64(args.grace.max(0.0)));
    engine.wait()?;
    let s = engine.stats();
    eprintln!(
        "echo: stopped; accepted {} connections, {} bytes in",
        s.accepted, s.bytes_in
    );
    Ok(())
}

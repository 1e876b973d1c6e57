//! The hello-world server of `bench-http` (myriad-bench): what a user of
//! the router writes to answer every request with a small text body.
//!
//! ```text
//! cargo run --release -p myriad-http --example http_hello -- 127.0.0.1:8080 --threads 1
//! curl http://127.0.0.1:8080/                 # Hello, World!
//! cargo run --release -p myriad-http --example http_hello -- 127.0.0.1:8080 --static ./public
//! curl http://127.0.0.1:8080/static/big.bin   # files under --static
//! ```
//!
//! `GET` (and `HEAD`) of any path answers 200 `Hello, World!` (13 bytes,
//! `Content-Type: text/plain`); with `--static DIR`, paths under `/static/`
//! are the files of `DIR` (`StaticDir`). SIGINT or SIGTERM shuts down.

use clap::Parser;
use myriad::{BackendKind, Engine};
use myriad_http::{Config, Router};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Myriad HTTP/1.1 hello-world server (bench-http)")]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:8080.
    addr: SocketAddr,
    /// I/O threads (event loops); default: number of cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Backend: auto, io_uring or epoll.
    #[arg(long, default_value = "auto")]
    backend: BackendKind,
    /// Directory served under /static.
    #[arg(long = "static", value_name = "DIR")]
    static_dir: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut router = Router::new().get("/*", |_, res| {
        let _ = res.send(200, &[("Content-Type", b"text/plain")], b"Hello, World!");
    })?;
    if let Some(dir) = &args.static_dir {
        router = router.static_dir("/static", dir)?;
    }
    let mut b = Engine::builder().backend(args.backend);
    if let Some(t) = args.threads {
        b = b.threads(t);
    }
    let engine = b
        .service(router.service("http-hello", args.addr, Config::default()))
        .start()?;
    eprintln!(
        "http_hello: listening on {} ({} backend)",
        engine.local_addrs(0)[0],
        engine.backend()
    );
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    let _ = signals.forever().next();
    engine.shutdown(Duration::from_secs(1));
    engine.wait()?;
    Ok(())
}

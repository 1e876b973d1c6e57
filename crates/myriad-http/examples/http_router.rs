//! An HTTP/1.1 site on Myriad: routes with parameters, a static
//! directory and health checks.
//!
//! ```text
//! cargo run -p myriad-http --example http_router -- 127.0.0.1:8080 --root ./public
//! curl http://127.0.0.1:8080/hello/world      # hello, world
//! curl -X POST --data-binary @file http://127.0.0.1:8080/echo
//! curl http://127.0.0.1:8080/static/index.html  # files under --root
//! curl http://127.0.0.1:8080/count/100000     # a streamed (chunked) body
//! curl -i http://127.0.0.1:8080/readyz        # 200 while serving
//! ```
//!
//! On SIGINT or SIGTERM, `/readyz` turns 503 (a load balancer stops
//! sending new clients), then the engine shuts down gracefully.

use clap::Parser;
use myriad::{BackendKind, Engine};
use myriad_http::{BodySize, BodySource, BodyWriter, Config, Fill, Response, Router};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Myriad HTTP/1.1 router example")]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:8080.
    addr: SocketAddr,
    /// Directory served under /static.
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// I/O threads (event loops); default: number of cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Backend: auto, io_uring or epoll.
    #[arg(long, default_value = "auto")]
    backend: BackendKind,
    /// Seconds between turning not-ready and shutting down.
    #[arg(long, default_value_t = 1.0)]
    drain: f64,
}

/// Numbers from 1 to `n`, one per line, produced as the client reads.
struct Count {
    next: u64,
    last: u64,
}

impl BodySource for Count {
    fn fill(&mut self, out: &mut BodyWriter<'_, '_>) -> std::io::Result<Fill> {
        while self.next <= self.last && !out.is_full() {
            out.write(format!("{}\n", self.next).as_bytes())
                .map_err(std::io::Error::other)?;
            self.next += 1;
        }
        Ok(if self.next > self.last {
            Fill::Done
        } else {
            Fill::More
        })
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let ready = Arc::new(AtomicBool::new(false));
    let router = Router::new()
        .get("/", |_, res| {
            let _ = res.text(
                200,
                "try /hello/NAME, POST /echo, /count/N, /static/, /healthz, /readyz\n",
            );
        })?
        .get("/hello/:name", |req, res| {
            let name = req.param("name").unwrap_or("");
            let name = myriad_http::percent_decode(name).unwrap_or_default();
            let _ = res.text(200, &format!("hello, {}\n", String::from_utf8_lossy(&name)));
        })?
        .post("/echo", |req, res| {
            let _ = res.send(
                200,
                &[("Content-Type", b"application/octet-stream")],
                req.body(),
            );
        })?
        .get("/count/:n", |req, res| {
            let Some(n) = req.param("n").and_then(|n| n.parse().ok()) else {
                let _ = res.text(400, "not a number\n");
                return;
            };
            let head = Response::new(200).with_headers(&[("Content-Type", b"text/plain")]);
            if res.start(&head, BodySize::Streamed).is_ok() {
                let _ = res.stream(Count { next: 1, last: n });
            }
        })?
        .static_dir("/static", &args.root)?
        .health(ready.clone())?;

    let mut b = Engine::builder().backend(args.backend);
    if let Some(t) = args.threads {
        b = b.threads(t);
    }
    let engine = b
        .service(router.service("http-router", args.addr, Config::default()))
        .start()?;
    ready.store(true, Ordering::Release);
    eprintln!(
        "http_router: listening on {} ({} backend), serving {} under /static",
        engine.local_addrs(0)[0],
        engine.backend(),
        args.root.display()
    );
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    let _ = signals.forever().next();
    ready.store(false, Ordering::Release);
    std::thread::sleep(Duration::try_from_secs_f64(args.drain.max(0.0)).unwrap_or_default());
    engine.shutdown(Duration::from_secs(5));
    engine.wait()?;
    Ok(())
}

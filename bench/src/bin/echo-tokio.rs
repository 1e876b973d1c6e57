//! `echo-tokio`: the idiomatic tokio TCP echo server, as a baseline.
//!
//! One task per connection, each with its own 4 KiB buffer
//! (`vec![0u8; 4096]`), `read` then `write_all` — the code most tokio users
//! would write. `TCP_NODELAY` is set on accepted sockets. `--mode current`
//! runs a `current_thread` runtime (one I/O thread, the fair comparison for a
//! single Myriad I/O thread); `--mode multi` the default multi-thread
//! runtime (`--threads N` overrides the worker count). The listen backlog is
//! 4096, like the other servers in the benchmark. Runs until SIGTERM or
//! SIGINT, then exits 0.
//!
//! ```text
//! echo-tokio --addr 127.0.0.1:19100 --mode current
//! ```

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// `tokio::runtime::Builder::new_current_thread`.
    Current,
    /// `tokio::runtime::Builder::new_multi_thread`.
    Multi,
}

/// Idiomatic tokio echo server (baseline for the Myriad benchmark).
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on (`host:port`).
    #[arg(long)]
    addr: String,
    /// Runtime flavour.
    #[arg(long, value_enum, default_value = "current")]
    mode: Mode,
    /// Worker threads for `--mode multi` (default: tokio's, one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let addr = myriad_bench::parse_addr(&args.addr)?;
    let rt = match args.mode {
        Mode::Current => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        Mode::Multi => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = args.threads {
                b.worker_threads(n.max(1));
            }
            b.enable_all().build()?
        }
    };
    rt.block_on(serve(addr))?;
    // Do not wait for thousands of idle connection tasks to be dropped.
    std::process::exit(0)
}

async fn serve(addr: SocketAddr) -> Result<()> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr).with_context(|| format!("bind {addr}"))?;
    let listener = socket.listen(4096)?;
    // The driver quotes this line: tokio's default worker count follows the
    // CPU affinity mask, so a multi-thread runtime pinned to one CPU gets 1.
    eprintln!(
        "echo-tokio: listening on {addr}, {} worker thread(s)",
        tokio::runtime::Handle::current().metrics().num_workers()
    );
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            res = listener.accept() => match res {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(echo(stream));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    eprintln!("echo-tokio: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    }
}

async fn echo(mut stream: TcpStream) {
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

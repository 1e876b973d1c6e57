//! Shared by both baseline servers: arguments, the runtime, signals.

use std::net::SocketAddr;

pub struct Args {
    pub addr: SocketAddr,
    pub threads: usize,
}

/// `--addr A [--threads N]` (N = 1: current-thread runtime).
pub fn args(name: &str) -> Args {
    let mut addr = None;
    let mut threads = 1usize;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--addr" => addr = it.next().and_then(|v| v.parse().ok()),
            "--threads" => threads = it.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            _ => {
                eprintln!("{name}: unknown argument {a}");
                std::process::exit(2);
            }
        }
    }
    match addr {
        Some(addr) if threads > 0 => Args { addr, threads },
        _ => {
            eprintln!("{name}: usage: {name} --addr HOST:PORT [--threads N]");
            std::process::exit(2);
        }
    }
}

pub fn runtime(threads: usize) -> tokio::runtime::Runtime {
    let mut b = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    b.enable_all().build().expect("tokio runtime")
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

//! `ws-idle`: opens many WebSocket connections and holds them idle.
//!
//! Used to measure a WebSocket server's memory per idle connection (`VmRSS`
//! before and after, divided by the count). Each connection does the
//! opening handshake (RFC 6455, no extensions offered unless `--deflate`)
//! and one 8-byte binary echo (checked), so the server has surely finished
//! the upgrade and handled a message. Then the program prints `READY n` on
//! stdout and holds the connections until its stdin is closed or
//! `--hold-secs` pass, closes them and exits 0.
//!
//! ```text
//! ws-idle --addr 127.0.0.1:19101 --connections 19000 --hold-secs 60
//! ```

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use rustix::event::epoll::{self, EventData, EventFlags};

/// Opens N WebSocket connections, echoes once on each, holds them idle.
#[derive(Parser, Debug)]
struct Args {
    /// Server address (`host:port`).
    #[arg(long)]
    addr: String,
    /// Number of connections.
    #[arg(long, default_value_t = 19_000)]
    connections: usize,
    /// Longest time to hold the connections (stdin closing ends it earlier).
    #[arg(long, default_value_t = 60.0)]
    hold_secs: f64,
    /// Seconds allowed for connecting, handshakes and echoes.
    #[arg(long, default_value_t = 90.0)]
    connect_timeout: f64,
    /// Connection handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    connect_batch: usize,
    /// Offer permessage-deflate.
    #[arg(long)]
    deflate: bool,
    /// Pin this process to the given CPU.
    #[arg(long)]
    cpu: Option<usize>,
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A masked binary frame carrying `i` as 8 bytes.
fn probe(i: u64) -> [u8; 14] {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut f = [0u8; 14];
    f[0] = 0x82;
    f[1] = 0x80 | 8;
    f[2..6].copy_from_slice(&mask);
    for (k, b) in i.to_be_bytes().iter().enumerate() {
        f[6 + k] = b ^ mask[k % 4];
    }
    f
}

fn main() -> Result<()> {
    let args = Args::parse();
    let addr = myriad_bench::parse_addr(&args.addr)?;
    myriad_bench::idle::check_times(args.hold_secs, args.connect_timeout)?;
    if let Some(cpu) = args.cpu {
        myriad_bench::affinity::pin_current_thread(cpu)?;
    }
    let timeout = Duration::from_secs_f64(args.connect_timeout);
    let deadline = Instant::now() + timeout;
    let n = args.connections;
    let ext = if args.deflate {
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
    );
    // Connect, upgrade and echo in chunks, so that no connection waits
    // for its upgrade longer than a server's handshake timeout.
    let chunk = (args.connect_batch.max(1) * 4).min(n.max(1));
    let mut fds = Vec::with_capacity(n);
    while fds.len() < n {
        let k = chunk.min(n - fds.len());
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("only {} of {n} connections ready in time", fds.len());
        }
        let part = myriad_bench::connect_many(addr, k, args.connect_batch, left)?;
        upgrade_and_echo(&part, fds.len(), request.as_bytes(), deadline)?;
        fds.extend(part);
    }

    myriad_bench::idle::ready_then_hold(n, args.hold_secs)?;
    drop(fds);
    Ok(())
}

/// Upgrades every connection of `fds` and echoes one message on each.
/// `base` numbers them (for the probe payload and messages).
fn upgrade_and_echo(
    fds: &[std::os::fd::OwnedFd],
    base: usize,
    request: &[u8],
    deadline: Instant,
) -> Result<()> {
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    for (j, fd) in fds.iter().enumerate() {
        let w = myriad_bench::write_nb(fd, request)
            .with_context(|| format!("conn {}: write", base + j))?;
        if w != request.len() {
            bail!("conn {}: short write of the upgrade request", base + j);
        }
        epoll::add(&ep, fd, EventData::new_u64(j as u64), EventFlags::IN)?;
    }
    let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); fds.len()];
    let mut stage = vec![0u8; fds.len()]; // 0: handshake, 1: echo, 2: done
    let mut left = fds.len();
    let mut buf = [0u8; 4096];
    let mut events = Vec::with_capacity(1024);
    let mut loops = 0u64;
    while left > 0 {
        loops += 1;
        if loops > 10_000_000 {
            bail!("handshake loop did not converge");
        }
        let now = Instant::now();
        if now >= deadline {
            bail!("{left} connections not upgraded and echoed in time");
        }
        let wait = deadline
            .saturating_duration_since(now)
            .min(Duration::from_millis(100));
        myriad_bench::wait_events(&ep, &mut events, wait)?;
        for ev in events.iter() {
            let j = ev.data.u64() as usize;
            let i = base + j;
            let Some(fd) = fds.get(j) else { continue };
            let k = match myriad_bench::read_nb(fd, &mut buf)
                .with_context(|| format!("conn {i}: read"))?
            {
                None => continue,
                Some(0) => bail!("conn {i}: server closed the connection"),
                Some(k) => k,
            };
            bufs[j].extend_from_slice(&buf[..k]);
            if stage[j] == 0 {
                let Some(end) = bufs[j].windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&bufs[j][..end]).into_owned();
                if !head.starts_with("HTTP/1.1 101 ") || !head.contains(ACCEPT) {
                    bail!("conn {i}: bad handshake answer: {head}");
                }
                bufs[j].drain(..end + 4);
                stage[j] = 1;
                let f = probe(i as u64);
                if myriad_bench::write_nb(fd, &f)? != f.len() {
                    bail!("conn {i}: short write");
                }
            }
            if stage[j] == 1 && bufs[j].len() >= 10 {
                let mut want = vec![0x82, 8];
                want.extend_from_slice(&(i as u64).to_be_bytes());
                if bufs[j][..10] != want[..] {
                    bail!("conn {i}: wrong echo {:?}", &bufs[j][..10]);
                }
                stage[j] = 2;
                bufs[j] = Vec::new();
                left -= 1;
                epoll::delete(&ep, fd)?;
            }
        }
    }
    Ok(())
}

//! `idle-conns`: opens many connections and holds them idle.
//!
//! Used by the driver to measure a server's memory per idle connection
//! (`VmRSS` before and after, divided by the count). Each connection does
//! one small echo round-trip (8 bytes, checked) so the server has surely
//! accepted it and done its first read — a server that allocates a buffer
//! per connection on first read shows it. Then the program prints
//! `READY n` on stdout and holds the connections until its stdin is closed
//! or `--hold-secs` pass, closes them and exits 0.
//!
//! Connects are paced (`--connect-batch` handshakes in flight) so a listen
//! backlog of a few thousand is not overrun. One process can hold up to its
//! open-files limit minus a few.
//!
//! ```text
//! idle-conns --addr 127.0.0.1:19100 --connections 19000 --hold-secs 60
//! ```

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use myriad_bench::pattern::Pattern;
use rustix::event::epoll::{self, EventData, EventFlags};

/// Opens N connections, echoes once on each, holds them idle.
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
    /// Seconds allowed for connecting and the echo round-trips.
    #[arg(long, default_value_t = 60.0)]
    connect_timeout: f64,
    /// Connection handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    connect_batch: usize,
    /// Pin this process to the given CPU.
    #[arg(long)]
    cpu: Option<usize>,
}

const PROBE: usize = 8;

fn main() -> Result<()> {
    let args = Args::parse();
    let addr = myriad_bench::parse_addr(&args.addr)?;
    myriad_bench::idle::check_times(args.hold_secs, args.connect_timeout)?;
    if args.connections > u32::MAX as usize {
        bail!("too many connections");
    }
    if let Some(cpu) = args.cpu {
        myriad_bench::affinity::pin_current_thread(cpu)?;
    }
    let timeout = Duration::from_secs_f64(args.connect_timeout);
    let deadline = Instant::now() + timeout;
    let n = args.connections;
    let fds = myriad_bench::connect_many(addr, n, args.connect_batch, timeout)?;

    // One echo round-trip per connection.
    let pattern = Pattern::new(PROBE);
    let mut msg = [0u8; PROBE];
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    for (i, fd) in fds.iter().enumerate() {
        pattern.fill(i as u32, 0, &mut msg);
        let w = myriad_bench::write_nb(fd, &msg).with_context(|| format!("conn {i}: write"))?;
        if w != PROBE {
            bail!("conn {i}: short write of {w} bytes on a fresh connection");
        }
        epoll::add(&ep, fd, EventData::new_u64(i as u64), EventFlags::IN)?;
    }
    let mut got = vec![0u8; n];
    let mut left = n;
    let mut buf = [0u8; 64];
    let mut events = Vec::with_capacity(1024);
    while left > 0 {
        let now = Instant::now();
        if now >= deadline {
            bail!("only {} of {n} connections echoed in time", n - left);
        }
        myriad_bench::wait_events(&ep, &mut events, deadline.saturating_duration_since(now))?;
        for ev in events.iter() {
            let i = ev.data.u64() as usize;
            let Some(fd) = fds.get(i) else { continue };
            let off = usize::from(got[i]);
            match myriad_bench::read_nb(fd, &mut buf).with_context(|| format!("conn {i}: read"))? {
                None => continue,
                Some(0) => bail!("conn {i}: server closed the connection"),
                Some(k) => {
                    if off + k > PROBE || !pattern.check(i as u32, 0, off, &buf[..k]) {
                        bail!("conn {i}: wrong echo");
                    }
                    got[i] = (off + k) as u8;
                    if off + k == PROBE {
                        left -= 1;
                        epoll::delete(&ep, fd)?;
                    }
                }
            }
        }
    }
    drop(ep);

    myriad_bench::idle::ready_then_hold(n, args.hold_secs)?;
    drop(fds);
    Ok(())
}

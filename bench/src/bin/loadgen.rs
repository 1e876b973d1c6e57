//! `loadgen`: a closed-loop echo load generator.
//!
//! Single-threaded, edge-triggered epoll, meant to be pinned to its own CPU
//! (the driver puts it on CPU 1 and the server on CPU 0). It opens
//! `--connections` non-blocking connections (`TCP_NODELAY`, connects paced
//! so the server's listen backlog does not overflow), then keeps `--window`
//! messages of `--size` bytes outstanding on each: whenever `size` bytes
//! have come back one message is complete and another is sent. With
//! `--window 1` this is ping-pong; larger windows pipeline.
//!
//! Every echoed byte is checked against the deterministic payload (per
//! connection and sequence number, see `myriad_bench::pattern`); a mismatch,
//! an unexpected close or a read error is counted as an error, the
//! connection is dropped, and the program exits 1 at the end.
//!
//! Cost per message is kept low because on a 2-core machine the load
//! generator can be the bottleneck: no allocation per message (one 256 KiB
//! read buffer shared by all connections, a per-connection output buffer of
//! `window × size` bytes reserved up front), edge-triggered epoll with each
//! socket registered once for input and output (no `epoll_ctl` after
//! setup, no re-polling of level-triggered entries), normally one `recv` per
//! readiness event (a short read means the socket is drained), and all
//! messages that became due on a connection written with one `send`.
//!
//! Output on stdout: `MEASURE_START` when the warm-up ends and the measured
//! window begins, `MEASURE_END` when it ends (the driver samples the server's
//! CPU time at these two lines), then one machine-readable line
//! `RESULT msgs=… secs=… msgs_per_sec=… errors=…`.
//!
//! ```text
//! loadgen --addr 127.0.0.1:19100 --connections 100 --size 64 --window 16 \
//!         --warmup 1 --duration 5
//! ```

use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use myriad_bench::closed_loop::{self, Conn, ErrorLog, LoadArgs, Shape, Step, Window};
use myriad_bench::pattern::Pattern;
use rustix::event::epoll::EventFlags;

/// Closed-loop echo load generator.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    load: LoadArgs,
}

fn main() {
    closed_loop::exit("loadgen", run());
}

fn run() -> Result<u64> {
    let args = Args::parse().load;
    let setup = args.setup()?;

    let size = args.size;
    let window = args.window;
    let pattern = Pattern::new(size);

    let (ep, mut conns) = closed_loop::register(setup.fds, window * size)?;

    let mut errors = ErrorLog::new("loadgen");
    let mut total_done = 0u64;

    // Prime every connection with a full window.
    let mut alive = closed_loop::prime(&mut conns, &mut errors, |conn| {
        queue(conn, &pattern, window)
    });

    let mut buf = vec![0u8; closed_loop::READ_BUF];
    let mut events = Vec::with_capacity(conns.len().clamp(64, 4096));
    let mut phases = Window::start(setup.warmup, setup.duration);

    let span = loop {
        let now = Instant::now();
        let wait = match phases.step(now, total_done, alive == 0)? {
            Step::Wait(wait) => wait,
            Step::End(span) => break span,
        };
        myriad_bench::wait_events(&ep, &mut events, wait)?;
        for ev in events.iter() {
            let idx = ev.data.u64() as usize;
            let flags = ev.flags;
            let Some(slot) = conns.get_mut(idx) else {
                continue;
            };
            let Some(conn) = slot else { continue };
            let res = on_event(conn, flags, &pattern, &mut buf, window);
            match res {
                Ok(n) => total_done += n,
                Err(e) => {
                    errors.report(format_args!("conn {}: {e:#}", conn.id));
                    *slot = None;
                    alive -= 1;
                }
            }
        }
    };

    drop(conns);
    let shape = Shape {
        connections: args.connections,
        size,
        window,
    };
    Ok(span.report("loadgen", errors.count(), &shape, alive))
}

/// Appends `count` new messages to the connection's output buffer.
fn queue(conn: &mut Conn, pattern: &Pattern, count: usize) {
    if conn.out_off > 0 {
        // Only after a short write: move the unsent tail to the front.
        conn.out.drain(..conn.out_off);
        conn.out_off = 0;
    }
    let size = pattern.size();
    for _ in 0..count {
        let start = conn.out.len();
        conn.out.resize(start + size, 0);
        pattern.fill(conn.id, conn.sent, &mut conn.out[start..]);
        conn.sent += 1;
    }
}

/// Handles one readiness event; returns the number of messages completed.
fn on_event(
    conn: &mut Conn,
    flags: EventFlags,
    pattern: &Pattern,
    buf: &mut [u8],
    window: usize,
) -> Result<u64> {
    let mut completed = 0u64;
    if flags.intersects(EventFlags::IN | EventFlags::RDHUP | EventFlags::HUP | EventFlags::ERR) {
        // Edge-triggered: read until the socket is drained, which a short
        // read shows. At most `window * size` bytes can be on the way back
        // (more is an error caught by `consume`), which bounds the loop.
        let max_reads = window * pattern.size() / buf.len() + 2;
        let mut drained = false;
        for _ in 0..max_reads {
            let n = match myriad_bench::read_nb(&conn.fd, buf).context("read")? {
                None => {
                    drained = true;
                    break;
                }
                Some(0) => bail!(
                    "server closed the connection ({} of {} messages echoed)",
                    conn.done,
                    conn.sent
                ),
                Some(n) => n,
            };
            completed += consume(conn, pattern, &buf[..n])?;
            if n < buf.len() {
                drained = true;
                break;
            }
        }
        if !drained {
            bail!("socket not drained after {max_reads} full reads");
        }
        if completed > 0 {
            // Closed loop: one new message per completed one. The window can
            // never be exceeded: outstanding = sent - done <= window.
            debug_assert!(conn.sent - conn.done + completed <= window as u64);
            queue(conn, pattern, completed as usize);
        }
    }
    // New messages, or an `EPOLLOUT` edge after a short write.
    if completed > 0 || flags.contains(EventFlags::OUT) {
        conn.flush()?;
    }
    Ok(completed)
}

/// Verifies echoed bytes and advances the receive position.
fn consume(conn: &mut Conn, pattern: &Pattern, mut data: &[u8]) -> Result<u64> {
    let size = pattern.size();
    let mut completed = 0u64;
    while !data.is_empty() {
        if conn.done >= conn.sent {
            bail!(
                "{} unexpected bytes after message {} (nothing outstanding)",
                data.len(),
                conn.done
            );
        }
        let k = (size - conn.recv_off).min(data.len());
        if !pattern.check(conn.id, conn.done, conn.recv_off, &data[..k]) {
            bail!(
                "payload mismatch in message {} at offset {}..{}",
                conn.done,
                conn.recv_off,
                conn.recv_off + k
            );
        }
        conn.recv_off += k;
        data = &data[k..];
        if conn.recv_off == size {
            conn.recv_off = 0;
            conn.done += 1;
            completed += 1;
        }
    }
    Ok(completed)
}

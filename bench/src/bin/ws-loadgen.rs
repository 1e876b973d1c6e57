//! `ws-loadgen`: a closed-loop WebSocket echo load generator.
//!
//! The TCP `loadgen` with WebSocket framing: after connecting it performs
//! the RFC 6455 opening handshake on every connection (no extensions), then
//! keeps `--window` binary messages of `--size` bytes outstanding on each.
//! Client frames are masked with an all-zero key (valid, and it keeps the
//! generator's own cost low; the server still runs its unmasking code), so
//! each message is a fixed header followed by the deterministic payload;
//! the echo must come back as one unmasked binary frame with the same
//! payload, which is checked byte for byte.
//!
//! Single-threaded, edge-triggered epoll, meant to be pinned to its own CPU.
//! Output: `MEASURE_START`, `MEASURE_END`, then
//! `RESULT msgs=… secs=… msgs_per_sec=… errors=…`.
//!
//! ```text
//! ws-loadgen --addr 127.0.0.1:19201 --connections 100 --size 64 --window 16 \
//!            --warmup 1 --duration 5
//! ```

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use myriad_bench::closed_loop::{self, Conn, ErrorLog, LoadArgs, Shape, Step, Window};
use myriad_bench::pattern::Pattern;
use rustix::event::epoll::{self, EventData, EventFlags};

/// Closed-loop WebSocket echo load generator.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    load: LoadArgs,
}

/// The client frame header of a binary message of `size` bytes, masked
/// with the key 0.
fn client_header(size: usize) -> Vec<u8> {
    let mut h = vec![0x82];
    if size <= 125 {
        h.push(0x80 | size as u8);
    } else if size <= 0xFFFF {
        h.push(0x80 | 126);
        h.extend_from_slice(&(size as u16).to_be_bytes());
    } else {
        h.push(0x80 | 127);
        h.extend_from_slice(&(size as u64).to_be_bytes());
    }
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

/// The server frame header expected in front of each echo.
fn server_header(size: usize) -> Vec<u8> {
    let mut h = client_header(size);
    h.truncate(h.len() - 4);
    h[1] &= 0x7F;
    h
}

/// Frames around each message.
struct Framing {
    tx: Vec<u8>,
    rx: Vec<u8>,
}

/// The opening handshake on every connection (blocking the whole program
/// until all are upgraded, which is before the measurement).
fn upgrade_all(fds: &[OwnedFd], addr: std::net::SocketAddr, timeout: Duration) -> Result<()> {
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let deadline = Instant::now() + timeout;
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).context("epoll_create")?;
    for (i, fd) in fds.iter().enumerate() {
        if myriad_bench::write_nb(fd, req.as_bytes())? != req.len() {
            bail!("conn {i}: short write of the upgrade request");
        }
        epoll::add(&ep, fd, EventData::new_u64(i as u64), EventFlags::IN)?;
    }
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); fds.len()];
    let mut left = fds.len();
    let mut buf = [0u8; 2048];
    let mut events = Vec::with_capacity(1024);
    while left > 0 {
        let now = Instant::now();
        if now >= deadline {
            bail!("{left} connections not upgraded in time");
        }
        myriad_bench::wait_events(&ep, &mut events, deadline - now)?;
        for ev in events.iter() {
            let i = ev.data.u64() as usize;
            let Some(fd) = fds.get(i) else { continue };
            match myriad_bench::read_nb(fd, &mut buf)? {
                None => continue,
                Some(0) => bail!("conn {i}: closed during the handshake"),
                Some(k) => got[i].extend_from_slice(&buf[..k]),
            }
            if got[i].ends_with(b"\r\n\r\n") {
                if !got[i].starts_with(b"HTTP/1.1 101") {
                    bail!(
                        "conn {i}: handshake refused: {}",
                        String::from_utf8_lossy(&got[i])
                    );
                }
                epoll::delete(&ep, fd)?;
                left -= 1;
            } else if got[i].len() > 4096 {
                bail!("conn {i}: handshake answer too long or followed by data");
            }
        }
    }
    Ok(())
}

fn main() {
    closed_loop::exit("ws-loadgen", run());
}

fn run() -> Result<u64> {
    let args = Args::parse().load;
    let setup = args.setup()?;

    let size = args.size;
    let window = args.window;
    let pattern = Pattern::new(size);

    upgrade_all(&setup.fds, setup.addr, setup.connect_timeout)?;
    let framing = Framing {
        tx: client_header(size),
        rx: server_header(size),
    };
    let (ep, mut conns) = closed_loop::register(setup.fds, window * (size + framing.tx.len()))?;

    let mut errors = ErrorLog::new("ws-loadgen");
    let mut total_done = 0u64;

    // Prime every connection with a full window.
    let mut alive = closed_loop::prime(&mut conns, &mut errors, |conn| {
        queue(conn, &pattern, &framing, window)
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
            let res = on_event(conn, flags, &pattern, &framing, &mut buf, window);
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
    Ok(span.report("ws-loadgen", errors.count(), &shape, alive))
}

/// Appends `count` new messages to the connection's output buffer.
fn queue(conn: &mut Conn, pattern: &Pattern, framing: &Framing, count: usize) {
    if conn.out_off > 0 {
        // Only after a short write: move the unsent tail to the front.
        conn.out.drain(..conn.out_off);
        conn.out_off = 0;
    }
    let size = pattern.size();
    for _ in 0..count {
        conn.out.extend_from_slice(&framing.tx);
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
    framing: &Framing,
    buf: &mut [u8],
    window: usize,
) -> Result<u64> {
    let mut completed = 0u64;
    if flags.intersects(EventFlags::IN | EventFlags::RDHUP | EventFlags::HUP | EventFlags::ERR) {
        // Edge-triggered: read until the socket is drained, which a short
        // read shows. At most `window * size` bytes can be on the way back
        // (more is an error caught by `consume`), which bounds the loop.
        let max_reads = window * (pattern.size() + framing.rx.len()) / buf.len() + 2;
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
            completed += consume(conn, pattern, framing, &buf[..n])?;
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
            queue(conn, pattern, framing, completed as usize);
        }
    }
    // New messages, or an `EPOLLOUT` edge after a short write.
    if completed > 0 || flags.contains(EventFlags::OUT) {
        conn.flush()?;
    }
    Ok(completed)
}

/// Verifies echoed frames and advances the receive position (`recv_off`
/// counts the frame header, then the payload).
fn consume(conn: &mut Conn, pattern: &Pattern, framing: &Framing, mut data: &[u8]) -> Result<u64> {
    let size = pattern.size();
    let hlen = framing.rx.len();
    let mut completed = 0u64;
    while !data.is_empty() {
        if conn.done >= conn.sent {
            bail!(
                "{} unexpected bytes after message {} (nothing outstanding)",
                data.len(),
                conn.done
            );
        }
        if conn.recv_off < hlen {
            let k = (hlen - conn.recv_off).min(data.len());
            if data[..k] != framing.rx[conn.recv_off..conn.recv_off + k] {
                bail!(
                    "bad frame header for message {}: {:02x?}",
                    conn.done,
                    &data[..k]
                );
            }
            conn.recv_off += k;
            data = &data[k..];
            continue;
        }
        let off = conn.recv_off - hlen;
        let k = (size - off).min(data.len());
        if !pattern.check(conn.id, conn.done, off, &data[..k]) {
            bail!(
                "payload mismatch in message {} at offset {}..{}",
                conn.done,
                off,
                off + k
            );
        }
        conn.recv_off += k;
        data = &data[k..];
        if conn.recv_off == hlen + size {
            conn.recv_off = 0;
            conn.done += 1;
            completed += 1;
        }
    }
    Ok(completed)
}

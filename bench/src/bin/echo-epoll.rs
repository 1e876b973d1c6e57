//! `echo-epoll`: a minimal hand-written single-threaded epoll echo server.
//!
//! This is the "how fast can it be without a framework" baseline: one
//! thread, level-triggered epoll, one shared 64 KiB read buffer for all
//! connections (so an idle connection costs only its slot in a `Vec` and the
//! kernel socket). A readable connection is read once and the bytes are
//! written straight back; on a short write the remainder is kept for that
//! connection, which then waits for `EPOLLOUT` and is not read meanwhile
//! (back-pressure). `TCP_NODELAY` on accepted sockets, listen backlog 4096.
//! Exits 0 on SIGTERM or SIGINT.
//!
//! ```text
//! echo-epoll --addr 127.0.0.1:19100
//! ```

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::io::Errno;
use rustix::net::{self, SocketFlags};

/// Minimal single-threaded epoll echo server (baseline for the Myriad
/// benchmark).
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on (`host:port`).
    #[arg(long)]
    addr: String,
}

const LISTENER: u64 = u64::MAX;
const READ_BUF: usize = 64 * 1024;

struct Conn {
    fd: OwnedFd,
    /// Bytes read but not yet written back (only after a short write).
    pending: Vec<u8>,
    pending_off: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let addr = myriad_bench::parse_addr(&args.addr)?;

    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;

    let family = if addr.is_ipv4() {
        net::AddressFamily::INET
    } else {
        net::AddressFamily::INET6
    };
    let listener = net::socket_with(
        family,
        net::SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    net::sockopt::set_socket_reuseaddr(&listener, true)?;
    net::bind(&listener, &addr).with_context(|| format!("bind {addr}"))?;
    net::listen(&listener, 4096)?;

    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    epoll::add(&ep, &listener, EventData::new_u64(LISTENER), EventFlags::IN)?;

    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut buf = vec![0u8; READ_BUF];
    let mut events = Vec::with_capacity(1024);
    let mut accept_error_reported = false;
    // The signal handler only sets `stop`; epoll_wait returns EINTR on a
    // signal, and the timeout covers a signal landing just before the wait.
    let tick = myriad_bench::timespec(Duration::from_millis(500));

    while !stop.load(Ordering::Relaxed) {
        events.clear();
        match epoll::wait(
            &ep,
            rustix::buffer::spare_capacity(&mut events),
            Some(&tick),
        ) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(anyhow::Error::new(e).context("epoll_wait")),
        }
        for ev in events.iter() {
            let token = ev.data.u64();
            let flags = ev.flags;
            if token == LISTENER {
                // Accept a bounded batch; level-triggered epoll reports the
                // rest on the next round.
                for _ in 0..256 {
                    match net::accept_with(&listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)
                    {
                        Ok(fd) => {
                            let _ = net::sockopt::set_tcp_nodelay(&fd, true);
                            let idx = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            epoll::add(&ep, &fd, EventData::new_u64(idx as u64), EventFlags::IN)?;
                            conns[idx] = Some(Conn {
                                fd,
                                pending: Vec::new(),
                                pending_off: 0,
                            });
                        }
                        Err(Errno::AGAIN) => break,
                        Err(Errno::INTR) | Err(Errno::CONNABORTED) => continue,
                        Err(e) => {
                            // EMFILE/ENFILE/ENOBUFS: leave the rest in the
                            // backlog and try again later.
                            if !accept_error_reported {
                                eprintln!("echo-epoll: accept: {e}");
                                accept_error_reported = true;
                            }
                            std::thread::sleep(Duration::from_millis(1));
                            break;
                        }
                    }
                }
                continue;
            }
            let idx = token as usize;
            let Some(Some(conn)) = conns.get_mut(idx) else {
                continue; // stale event for a connection closed this round
            };
            let alive = if conn.pending_off < conn.pending.len() {
                if flags.intersects(EventFlags::OUT | EventFlags::ERR | EventFlags::HUP) {
                    on_writable(&ep, conn, idx)
                } else {
                    Ok(true)
                }
            } else if flags.intersects(EventFlags::IN | EventFlags::ERR | EventFlags::HUP) {
                on_readable(&ep, conn, idx, &mut buf)
            } else {
                Ok(true)
            };
            if !matches!(alive, Ok(true)) {
                // Dropping the fd closes it and removes it from epoll.
                conns[idx] = None;
                free.push(idx);
            }
        }
    }
    Ok(())
}

/// Reads once and echoes. Returns `Ok(false)` when the connection is done.
fn on_readable(ep: &OwnedFd, conn: &mut Conn, idx: usize, buf: &mut [u8]) -> Result<bool> {
    let n = match myriad_bench::read_nb(&conn.fd, buf) {
        Ok(Some(0)) | Err(_) => return Ok(false),
        Ok(None) => return Ok(true),
        Ok(Some(n)) => n,
    };
    let w = match myriad_bench::write_nb(&conn.fd, &buf[..n]) {
        Ok(w) => w,
        Err(_) => return Ok(false),
    };
    if w < n {
        conn.pending.clear();
        conn.pending.extend_from_slice(&buf[w..n]);
        conn.pending_off = 0;
        epoll::modify(
            ep,
            &conn.fd,
            EventData::new_u64(idx as u64),
            EventFlags::OUT,
        )?;
    }
    Ok(true)
}

/// Flushes the pending remainder; resumes reading once it is gone.
fn on_writable(ep: &OwnedFd, conn: &mut Conn, idx: usize) -> Result<bool> {
    let w = match myriad_bench::write_nb(&conn.fd, &conn.pending[conn.pending_off..]) {
        Ok(w) => w,
        Err(_) => return Ok(false),
    };
    conn.pending_off += w;
    if conn.pending_off == conn.pending.len() {
        conn.pending.clear();
        conn.pending.shrink_to(READ_BUF);
        conn.pending_off = 0;
        epoll::modify(ep, &conn.fd, EventData::new_u64(idx as u64), EventFlags::IN)?;
    }
    Ok(true)
}

//! `pubsub-load`: the load program of `bench-pubsub`: WebSocket
//! subscribers and one publisher, every delivery checked.
//!
//! It opens `--subscribers` connections to `--addr` and one publisher
//! connection to `--pub-addr` (default: the same server; another node for the
//! cluster latency scenarios), upgrades them (RFC 6455, no extensions),
//! subscribes connection `c` to the `--per-conn` topics
//! `t{(c * per_conn + j) % topics}` (text `sub TOPIC`) and waits for every
//! confirmation (text `ok TOPIC`). With `subscribers * per_conn` a multiple of
//! `topics`, every topic has the same number of subscribers.
//!
//! Then it publishes `--size`-byte binary messages round robin over the
//! topics: publish `g` goes to topic `g % topics` with per-topic sequence
//! number `g / topics`. A message is `[n][topic][g u64][topic u32][seq u64]
//! [sent ns u64][filler]`, the send time taken from this process's monotonic
//! clock, so the publish-to-delivery latency of every delivery is measured
//! on one clock even when the publisher and the subscribers are on
//! different nodes. At `--rate R` publishes are sent on a fixed schedule
//! (R per second); `--rate 0` is saturation: `--window` publishes not yet
//! delivered to all their subscribers are kept outstanding. At a fixed rate
//! `--window` bounds the outstanding publishes too; a publish held back by
//! it is counted in `held` (the stated rate was then not kept).
//!
//! Every delivery is checked: exact length, topic, the sequence number
//! expected next on that (connection, topic) (so a loss, a duplicate or a
//! reordering is an error) and every filler byte. After the measured window
//! publishing stops and the program waits (at most `--drain` s) until every
//! publish has reached all its subscribers; what did not is `lost`.
//!
//! Single-threaded, edge-triggered epoll, meant to be pinned to its own CPU.
//! Output: `MEASURE_START`, `MEASURE_END`, then `RESULT msgs=… (deliveries
//! in the window) secs=… msgs_per_sec=… publishes=… publish_rate=… p50_us=…
//! p99_us=… max_us=… held=… delivered=… expected=… lost=… errors=…`.
//! Exit status 0 only when every delivery arrived and was right.
//!
//! ```text
//! pubsub-load --addr 127.0.0.1:19500 --subscribers 10000 --topics 1 --per-conn 1 \
//!     --size 100 --rate 100 --warmup 1 --duration 5
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use rustix::event::epoll::{self, EventData, EventFlags};

#[derive(Parser, Debug)]
struct Args {
    /// Server the subscribers connect to.
    #[arg(long)]
    addr: SocketAddr,
    /// Server the publisher connects to (default: --addr).
    #[arg(long)]
    pub_addr: Option<SocketAddr>,
    /// Subscriber connections.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Topics.
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// Topics each subscriber connection subscribes to.
    #[arg(long, default_value_t = 1)]
    per_conn: usize,
    /// Message size in bytes (the whole WebSocket payload).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Publishes per second (0: saturation, --window outstanding).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Publishes outstanding (not yet delivered to every subscriber) at most.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Warm-up seconds (publishing, not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds to connect, upgrade and subscribe everything.
    #[arg(long, default_value_t = 60.0)]
    connect_timeout: f64,
    /// Seconds to wait after the window for the last deliveries.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
}

/// Fixed part of a message after the topic: g, topic, seq, sent ns.
const FIXED: usize = 8 + 4 + 8 + 8;
/// Latency histogram: 1 µs buckets up to this many µs (the last one
/// collects everything slower).
const HIST_US: usize = 1_000_000;

fn topic_name(t: usize) -> String {
    format!("t{t}")
}

/// A masked (key 0) client frame of `payload`.
fn client_frame(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    let n = payload.len();
    if n <= 125 {
        out.push(0x80 | n as u8);
    } else if n <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
}

/// One complete server frame at the start of `data`: (fin+opcode byte,
/// payload range, frame length), or `None` if incomplete.
fn server_frame(data: &[u8]) -> Result<Option<(u8, std::ops::Range<usize>)>> {
    if data.len() < 2 {
        return Ok(None);
    }
    ensure!(data[1] & 0x80 == 0, "masked frame from the server");
    let (len, h) = match data[1] & 0x7F {
        126 if data.len() >= 4 => (u16::from_be_bytes([data[2], data[3]]) as usize, 4),
        127 if data.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&data[2..10]);
            (
                usize::try_from(u64::from_be_bytes(b)).unwrap_or(usize::MAX),
                10,
            )
        }
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    ensure!(len <= 1 << 16, "frame of {len} bytes");
    if data.len() < h + len {
        return Ok(None);
    }
    Ok(Some((data[0], h..h + len)))
}

fn filler(g: u64, i: usize) -> u8 {
    (g as usize).wrapping_mul(31).wrapping_add(i) as u8
}

/// The opening handshake on every connection.
fn upgrade_all(fds: &[&OwnedFd], host: &str, deadline: Instant) -> Result<()> {
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).context("epoll_create")?;
    for (i, fd) in fds.iter().enumerate() {
        ensure!(
            myriad_bench::write_nb(fd, req.as_bytes())? == req.len(),
            "conn {i}: short write of the upgrade request"
        );
        epoll::add(&ep, fd, EventData::new_u64(i as u64), EventFlags::IN)?;
    }
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); fds.len()];
    let mut left = fds.len();
    let mut buf = [0u8; 2048];
    let mut events = Vec::with_capacity(1024);
    while left > 0 {
        let now = Instant::now();
        ensure!(now < deadline, "{left} connections not upgraded in time");
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
                ensure!(
                    got[i].starts_with(b"HTTP/1.1 101"),
                    "conn {i}: handshake refused: {}",
                    String::from_utf8_lossy(&got[i])
                );
                epoll::delete(&ep, fd)?;
                left -= 1;
            } else {
                ensure!(got[i].len() <= 4096, "conn {i}: handshake answer too long");
            }
        }
    }
    Ok(())
}

/// One subscriber connection.
struct Sub {
    fd: OwnedFd,
    /// Bytes of an incomplete frame.
    pending: Vec<u8>,
    /// Confirmations still awaited.
    unconfirmed: usize,
    /// Next sequence number expected per subscribed topic (index j).
    next_seq: Vec<u64>,
}

struct Load {
    topics: usize,
    per_conn: usize,
    size: usize,
    /// Deliveries still due per outstanding publish, from publish `base`.
    remaining: VecDeque<u32>,
    base: u64,
    delivered: u64,
    errors: u64,
    measuring: bool,
    window_deliveries: u64,
    hist: Vec<u64>,
    epoch: Instant,
}

impl Load {
    fn error(&mut self, conn: usize, what: std::fmt::Arguments<'_>) {
        self.errors += 1;
        if self.errors <= 10 {
            eprintln!("pubsub-load: conn {conn}: {what}");
        }
    }

    /// Checks one delivered message of connection `c`.
    fn delivery(&mut self, c: usize, sub: &mut Sub, msg: &[u8]) {
        if msg.len() != self.size {
            return self.error(c, format_args!("message of {} bytes", msg.len()));
        }
        let n = msg[0] as usize;
        let Some(rest) = msg.get(1 + n..) else {
            return self.error(c, format_args!("bad topic length"));
        };
        let word = |o: usize| -> u64 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&rest[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let g = word(0);
        let topic = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize;
        let seq = word(12);
        let sent = word(20);
        if msg[1..1 + n] != *topic_name(topic).as_bytes()
            || topic != (g % self.topics as u64) as usize
            || seq != g / self.topics as u64
        {
            return self.error(c, format_args!("inconsistent header (g {g} topic {topic})"));
        }
        // Which of this connection's topics it is.
        let first = (c * self.per_conn) % self.topics;
        let j = (topic + self.topics - first) % self.topics;
        let Some(expect) = sub.next_seq.get_mut(j) else {
            return self.error(c, format_args!("message of topic {topic} not subscribed"));
        };
        if seq != *expect {
            let e = *expect;
            return self.error(c, format_args!("topic {topic}: seq {seq}, expected {e}"));
        }
        *expect += 1;
        if rest[FIXED..]
            .iter()
            .enumerate()
            .any(|(i, &b)| b != filler(g, i))
        {
            return self.error(c, format_args!("filler mismatch in publish {g}"));
        }
        let Some(slot) = g
            .checked_sub(self.base)
            .and_then(|i| self.remaining.get_mut(i as usize))
        else {
            return self.error(c, format_args!("publish {g} not outstanding"));
        };
        *slot = slot.saturating_sub(1);
        while self.remaining.front() == Some(&0) {
            self.remaining.pop_front();
            self.base += 1;
        }
        self.delivered += 1;
        if self.measuring {
            self.window_deliveries += 1;
            let now = self.epoch.elapsed().as_nanos() as u64;
            let us = (now.saturating_sub(sent) / 1000) as usize;
            self.hist[us.min(HIST_US - 1)] += 1;
        }
    }

    /// Handles the complete frames at the start of `data`; returns how many
    /// bytes they took.
    fn frames(&mut self, c: usize, sub: &mut Sub, data: &[u8]) -> Result<usize> {
        let mut off = 0;
        while let Some((b0, range)) = server_frame(&data[off..])? {
            let payload = &data[off + range.start..off + range.end];
            match b0 {
                0x82 => self.delivery(c, sub, payload),
                0x81 if sub.unconfirmed > 0 && payload.starts_with(b"ok ") => sub.unconfirmed -= 1,
                _ => bail!(
                    "unexpected frame {b0:#04x}: {}",
                    String::from_utf8_lossy(payload)
                ),
            }
            off += range.end;
        }
        Ok(off)
    }

    /// Reads everything ready on subscriber `c`.
    fn readable(&mut self, c: usize, sub: &mut Sub, buf: &mut [u8]) -> Result<()> {
        for _ in 0..100_000 {
            let n = match myriad_bench::read_nb(&sub.fd, buf).context("read")? {
                None => return Ok(()),
                Some(0) => bail!("server closed the connection"),
                Some(n) => n,
            };
            if sub.pending.is_empty() {
                let used = self.frames(c, sub, &buf[..n])?;
                sub.pending.extend_from_slice(&buf[used..n]);
            } else {
                sub.pending.extend_from_slice(&buf[..n]);
                let data = std::mem::take(&mut sub.pending);
                let used = self.frames(c, sub, &data)?;
                sub.pending = data;
                sub.pending.drain(..used);
            }
            ensure!(sub.pending.len() <= 1 << 17, "partial frame too long");
            if n < buf.len() {
                return Ok(());
            }
        }
        bail!("socket not drained")
    }

    fn percentile(&self, p: f64) -> f64 {
        let total: u64 = self.hist.iter().sum();
        if total == 0 {
            return f64::NAN;
        }
        let want = ((total as f64 * p).ceil() as u64).max(1);
        let mut acc = 0;
        for (us, &k) in self.hist.iter().enumerate() {
            acc += k;
            if acc >= want {
                return us as f64;
            }
        }
        (HIST_US - 1) as f64
    }
}

fn main() {
    match run() {
        Ok(0) => {}
        Ok(_) => std::process::exit(1),
        Err(e) => {
            eprintln!("pubsub-load: error: {e:#}");
            std::process::exit(2);
        }
    }
}

fn run() -> Result<u64> {
    let a = Args::parse();
    ensure!(
        a.subscribers > 0 && a.topics > 0 && a.per_conn > 0 && a.per_conn <= a.topics,
        "--subscribers, --topics, --per-conn must be positive, --per-conn at most --topics"
    );
    ensure!(
        (a.subscribers * a.per_conn) % a.topics == 0,
        "subscribers x per-conn must be a multiple of topics (equal subscribers per topic)"
    );
    let max_name = topic_name(a.topics - 1).len();
    ensure!(
        a.size >= 1 + max_name + FIXED && a.size <= 125,
        "--size must be {}..=125",
        1 + max_name + FIXED
    );
    ensure!(a.rate >= 0.0 && a.rate.is_finite(), "--rate must be >= 0");
    ensure!(a.window > 0, "--window must be positive");
    let per_topic = (a.subscribers * a.per_conn / a.topics) as u32;
    let deadline = Instant::now() + Duration::from_secs_f64(a.connect_timeout);
    let pub_addr = a.pub_addr.unwrap_or(a.addr);

    let fds = myriad_bench::connect_many(
        a.addr,
        a.subscribers,
        256,
        Duration::from_secs_f64(a.connect_timeout),
    )?;
    let mut pubs = myriad_bench::connect_many(pub_addr, 1, 1, Duration::from_secs(10))?;
    let pub_fd = pubs.pop().context("no publisher connection")?;
    upgrade_all(
        &fds.iter().collect::<Vec<_>>(),
        &a.addr.to_string(),
        deadline,
    )?;
    upgrade_all(&[&pub_fd], &pub_addr.to_string(), deadline)?;

    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).context("epoll_create")?;
    let mut subs = Vec::with_capacity(fds.len());
    let mut frame = Vec::new();
    for (c, fd) in fds.into_iter().enumerate() {
        frame.clear();
        for j in 0..a.per_conn {
            let t = (c * a.per_conn + j) % a.topics;
            client_frame(0x1, format!("sub {}", topic_name(t)).as_bytes(), &mut frame);
        }
        ensure!(
            myriad_bench::write_nb(&fd, &frame)? == frame.len(),
            "conn {c}: short write of the subscriptions"
        );
        epoll::add(
            &ep,
            &fd,
            EventData::new_u64(c as u64),
            EventFlags::IN | EventFlags::ET | EventFlags::RDHUP,
        )?;
        subs.push(Some(Sub {
            fd,
            pending: Vec::new(),
            unconfirmed: a.per_conn,
            next_seq: vec![0; a.per_conn],
        }));
    }
    let pub_key = a.subscribers as u64;
    epoll::add(
        &ep,
        &pub_fd,
        EventData::new_u64(pub_key),
        EventFlags::IN | EventFlags::OUT | EventFlags::ET | EventFlags::RDHUP,
    )?;

    let mut load = Load {
        topics: a.topics,
        per_conn: a.per_conn,
        size: a.size,
        remaining: VecDeque::with_capacity(a.window),
        base: 0,
        delivered: 0,
        errors: 0,
        measuring: false,
        window_deliveries: 0,
        hist: vec![0; HIST_US],
        epoch: Instant::now(),
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = Vec::with_capacity(4096);
    let mut alive = subs.len();

    // Phase 1: every subscription confirmed.
    let mut unconfirmed = subs.len();
    while unconfirmed > 0 {
        let now = Instant::now();
        ensure!(
            now < deadline,
            "{unconfirmed} connections not confirmed in time"
        );
        myriad_bench::wait_events(&ep, &mut events, deadline - now)?;
        for ev in events.iter() {
            let c = ev.data.u64() as usize;
            let Some(Some(sub)) = subs.get_mut(c) else {
                continue;
            };
            let before = sub.unconfirmed;
            load.readable(c, sub, &mut buf)
                .with_context(|| format!("conn {c} while subscribing"))?;
            if before > 0 && sub.unconfirmed == 0 {
                unconfirmed -= 1;
            }
        }
    }
    eprintln!(
        "pubsub-load: {} subscribers, {} subscriptions on {} topics confirmed",
        subs.len(),
        subs.len() * a.per_conn,
        a.topics
    );

    // Phase 2: publish, warm-up then the measured window, then drain.
    let mut out: Vec<u8> = Vec::new();
    let mut out_off = 0usize;
    let mut next_g = 0u64;
    let mut held = 0u64;
    let mut msg = vec![0u8; a.size];
    let start = Instant::now();
    let measure_at = start + Duration::from_secs_f64(a.warmup);
    let end_at = measure_at + Duration::from_secs_f64(a.duration);
    let drain_until = end_at + Duration::from_secs_f64(a.drain);
    let (mut m_start, mut m_end) = (None, None);
    let mut window_pubs = 0u64;
    let mut pubs_at_start = 0u64;
    loop {
        let now = Instant::now();
        if m_start.is_none() && now >= measure_at {
            println!("MEASURE_START");
            m_start = Some(now);
            load.measuring = true;
            load.window_deliveries = 0;
            pubs_at_start = next_g;
        }
        if m_end.is_none() && now >= end_at {
            println!("MEASURE_END");
            m_end = Some(now);
            load.measuring = false;
            window_pubs = next_g - pubs_at_start;
        }
        let publishing = m_end.is_none();
        if !publishing && (load.remaining.is_empty() || now >= drain_until || alive == 0) {
            break;
        }
        // Publishes due now.
        if publishing {
            let due = if a.rate > 0.0 {
                ((now - start).as_secs_f64() * a.rate) as u64 + 1
            } else {
                u64::MAX
            };
            let mut queued = false;
            while next_g < due && out.len() - out_off < 1 << 16 {
                if load.remaining.len() >= a.window {
                    if a.rate > 0.0 {
                        held += 1;
                    }
                    break;
                }
                let g = next_g;
                let topic = (g % a.topics as u64) as usize;
                let name = topic_name(topic);
                msg[0] = name.len() as u8;
                msg[1..1 + name.len()].copy_from_slice(name.as_bytes());
                let r = &mut msg[1 + name.len()..];
                r[0..8].copy_from_slice(&g.to_le_bytes());
                r[8..12].copy_from_slice(&(topic as u32).to_le_bytes());
                r[12..20].copy_from_slice(&(g / a.topics as u64).to_le_bytes());
                let sent = load.epoch.elapsed().as_nanos() as u64;
                r[20..28].copy_from_slice(&sent.to_le_bytes());
                for (i, b) in r[FIXED..].iter_mut().enumerate() {
                    *b = filler(g, i);
                }
                client_frame(0x2, &msg, &mut out);
                load.remaining.push_back(per_topic);
                next_g += 1;
                queued = true;
            }
            if queued || out_off < out.len() {
                let k = myriad_bench::write_nb(&pub_fd, &out[out_off..]).context("publish")?;
                out_off += k;
                if out_off == out.len() {
                    out.clear();
                    out_off = 0;
                }
            }
        }
        // Wait for deliveries, or until the next publish is due.
        let mut wait = Duration::from_millis(50);
        if publishing && a.rate > 0.0 {
            let next_at = start + Duration::from_secs_f64(next_g as f64 / a.rate);
            wait = wait.min(next_at.saturating_duration_since(Instant::now()));
        }
        if publishing && a.rate == 0.0 && load.remaining.len() < a.window {
            wait = Duration::ZERO;
        }
        myriad_bench::wait_events(&ep, &mut events, wait)?;
        for ev in events.iter() {
            let c = ev.data.u64() as usize;
            let flags = ev.flags;
            if c as u64 == pub_key {
                if flags.intersects(EventFlags::RDHUP | EventFlags::HUP | EventFlags::ERR) {
                    bail!("the publisher's connection was closed");
                }
                continue;
            }
            let Some(slot) = subs.get_mut(c) else {
                continue;
            };
            let Some(sub) = slot else { continue };
            if let Err(e) = load.readable(c, sub, &mut buf) {
                load.error(c, format_args!("{e:#}"));
                *slot = None;
                alive -= 1;
            }
        }
    }
    let (Some(s), Some(e)) = (m_start, m_end) else {
        bail!("the run ended before its measured window");
    };
    let secs = e.duration_since(s).as_secs_f64().max(1e-9);
    let expected = next_g * per_topic as u64;
    let lost = expected - load.delivered.min(expected);
    let errors = load.errors + lost;
    println!(
        "RESULT msgs={} secs={secs:.3} msgs_per_sec={:.1} publishes={window_pubs} \
         publish_rate={:.1} p50_us={} p99_us={} max_us={} held={held} subscribers={} \
         subscriptions={} delivered={} expected={expected} lost={lost} errors={errors}",
        load.window_deliveries,
        load.window_deliveries as f64 / secs,
        window_pubs as f64 / secs,
        load.percentile(0.5),
        load.percentile(0.99),
        load.percentile(1.0),
        a.subscribers,
        a.subscribers * a.per_conn,
        load.delivered,
    );
    Ok(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames_parse_whole_or_not_at_all() {
        // A server frame is a client frame without the mask bit and key.
        for n in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut f = Vec::new();
            client_frame(0x2, &payload, &mut f);
            let h = match n {
                0..=125 => 2,
                126..=0xFFFF => 4,
                _ => 10,
            };
            let mut s = f[..h].to_vec();
            s[1] &= 0x7F;
            s.extend_from_slice(&payload);
            if n > 1 << 16 {
                assert!(server_frame(&s).is_err(), "{n}-byte frame refused");
                continue;
            }
            for cut in 0..s.len() {
                assert!(
                    server_frame(&s[..cut]).unwrap().is_none(),
                    "{n} cut at {cut}"
                );
            }
            let (b0, r) = server_frame(&s).unwrap().unwrap();
            assert_eq!(b0, 0x82);
            assert_eq!(&s[r], &payload[..]);
            // A masked frame from the server is an error.
            assert!(server_frame(&f).is_err());
        }
    }
}

//! The floor of `bench-pubsub`: the least work a server can do per
//! delivery when it delivers each message as it arrives — one `write(2)` of
//! a frame built once, per subscriber, per message. No WebSocket library,
//! no runtime, no queue unless the kernel refuses bytes: a `mio` poll loop
//! (epoll) on one thread.
//!
//! It exists to measure what the fixed-rate `fanout` scenario (one topic,
//! 10,000 subscribers, a few publishes/s) allows at all. At such rates each
//! subscriber has one message to send per publish, so no server that keeps
//! up can join two deliveries into one send; this program's CPU per
//! delivery is then the kernel's cost of one small loopback send (which on
//! loopback includes the receiving socket's TCP work, run in the sender's
//! context), one system call's entry and exit, and almost nothing else.
//! Its ratio to the baseline bounds from below every server that sends
//! each message as it arrives, up to the system-call overhead that
//! batching the sends (io_uring) saves.
//!
//! The protocol is `pubsub-myriad`'s: text `sub TOPIC` is answered by text
//! `ok TOPIC`; a binary `[n][n bytes of topic][rest]` is sent unchanged to
//! the topic's subscribers. Handshake and frame parsing are the minimum
//! `pubsub-load` needs (masked client frames, no fragments, no
//! extensions); anything else closes the connection.
//!
//! `pubsub-floor --addr 127.0.0.1:19500`

#[path = "../common.rs"]
#[allow(dead_code)]
mod common;

use std::collections::HashMap;
use std::io::{self, Read, Write};

use base64::Engine as _;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use sha1::{Digest, Sha1};

const LISTENER: Token = Token(usize::MAX);
/// Bytes a connection may have unparsed (a handshake or a frame).
const MAX_INPUT: usize = 64 * 1024;
/// Bytes the kernel refused that a connection may hold before it is closed.
const MAX_PENDING: usize = 16 * 1024 * 1024;

struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    /// Bytes the kernel has not taken yet; while non-empty, deliveries are
    /// appended here (order) and the socket waits for writability.
    pending: Vec<u8>,
    upgraded: bool,
    open: bool,
    topics: Vec<String>,
}

#[derive(Default)]
struct Server {
    conns: HashMap<usize, Conn>,
    topics: HashMap<String, Vec<usize>>,
    /// Connections marked closed since the last sweep.
    dead: Vec<usize>,
    next: usize,
}

fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A server frame (FIN, unmasked) of `opcode` around `payload`.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// One complete masked client frame at the start of `b`: (opcode,
/// unmasked payload, bytes used); `Ok(None)` if incomplete.
fn parse_frame(b: &[u8]) -> Result<Option<(u8, Vec<u8>, usize)>, ()> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[0] & 0x80 == 0 || b[1] & 0x80 == 0 {
        return Err(()); // fragments and unmasked client frames: not spoken here
    }
    let (len, mut at) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (usize::try_from(u64::from_be_bytes(n)).map_err(|_| ())?, 10)
        }
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    if len > MAX_INPUT {
        return Err(());
    }
    if b.len() < at + 4 + len {
        return Ok(None);
    }
    let mask = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    at += 4;
    let payload = b[at..at + len]
        .iter()
        .enumerate()
        .map(|(i, x)| x ^ mask[i % 4])
        .collect();
    Ok(Some((b[0] & 0x0f, payload, at + len)))
}

impl Conn {
    /// Sends `bytes` now (one `write`), or queues what the kernel refused.
    fn send(&mut self, bytes: &[u8], poll: &Poll, token: usize) {
        if !self.pending.is_empty() {
            if self.pending.len() + bytes.len() > MAX_PENDING {
                self.open = false;
            } else {
                self.pending.extend_from_slice(bytes);
            }
            return;
        }
        match self.stream.write(bytes) {
            Ok(n) if n == bytes.len() => {}
            Ok(n) => self.queue(&bytes[n..], poll, token),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.queue(bytes, poll, token),
            Err(_) => self.open = false,
        }
    }

    fn queue(&mut self, rest: &[u8], poll: &Poll, token: usize) {
        self.pending.extend_from_slice(rest);
        let interest = Interest::READABLE | Interest::WRITABLE;
        if poll
            .registry()
            .reregister(&mut self.stream, Token(token), interest)
            .is_err()
        {
            self.open = false;
        }
    }

    fn flush(&mut self, poll: &Poll, token: usize) {
        while !self.pending.is_empty() {
            match self.stream.write(&self.pending) {
                Ok(0) => {
                    self.open = false;
                    return;
                }
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.open = false;
                    return;
                }
            }
        }
        if poll
            .registry()
            .reregister(&mut self.stream, Token(token), Interest::READABLE)
            .is_err()
        {
            self.open = false;
        }
    }
}

impl Server {
    fn readable(&mut self, token: usize, poll: &Poll) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let Some(c) = self.conns.get_mut(&token) else {
                return;
            };
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    c.open = false;
                    break;
                }
                Ok(n) => {
                    c.input.extend_from_slice(&buf[..n]);
                    if c.input.len() > MAX_INPUT {
                        c.open = false;
                        break;
                    }
                    self.parse(token, poll);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    c.open = false;
                    break;
                }
            }
        }
    }

    fn parse(&mut self, token: usize, poll: &Poll) {
        loop {
            let Some(c) = self.conns.get_mut(&token) else {
                return;
            };
            if !c.open {
                return;
            }
            if !c.upgraded {
                // Handshake: the request ends with an empty line.
                let Some(end) = c.input.windows(4).position(|w| w == b"\r\n\r\n") else {
                    return;
                };
                let head = String::from_utf8_lossy(&c.input[..end]).into_owned();
                c.input.drain(..end + 4);
                let key = head.lines().find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.trim()
                        .eq_ignore_ascii_case("sec-websocket-key")
                        .then(|| v.trim().to_owned())
                });
                let Some(key) = key else {
                    c.open = false;
                    return;
                };
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    accept_key(key.as_bytes())
                );
                c.upgraded = true;
                c.send(answer.as_bytes(), poll, token);
                continue;
            }
            let (op, payload, used) = match parse_frame(&c.input) {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(()) => {
                    c.open = false;
                    return;
                }
            };
            c.input.drain(..used);
            match op {
                0x1 => {
                    let Some(topic) = std::str::from_utf8(&payload)
                        .ok()
                        .and_then(|t| t.strip_prefix("sub "))
                        .map(str::to_owned)
                    else {
                        c.open = false;
                        return;
                    };
                    c.send(&frame(0x1, format!("ok {topic}").as_bytes()), poll, token);
                    c.topics.push(topic.clone());
                    self.topics.entry(topic).or_default().push(token);
                }
                0x2 => {
                    let topic = payload
                        .split_first()
                        .and_then(|(&n, rest)| rest.get(..n as usize))
                        .and_then(|t| std::str::from_utf8(t).ok());
                    let Some(subs) = topic.and_then(|t| self.topics.get(t)) else {
                        continue;
                    };
                    // Framed once; one write per subscriber.
                    let f = frame(0x2, &payload);
                    for &s in subs {
                        if let Some(sc) = self.conns.get_mut(&s) {
                            sc.send(&f, poll, s);
                            if !sc.open {
                                self.dead.push(s);
                            }
                        }
                    }
                }
                0x8 => {
                    c.open = false;
                    return;
                }
                _ => {}
            }
        }
    }

    fn close_dead(&mut self, poll: &Poll) {
        for t in std::mem::take(&mut self.dead) {
            if let Some(mut c) = self.conns.remove(&t) {
                let _ = poll.registry().deregister(&mut c.stream);
                for topic in &c.topics {
                    if let Some(v) = self.topics.get_mut(topic) {
                        v.retain(|&x| x != t);
                    }
                }
            }
        }
    }
}

fn main() -> io::Result<()> {
    let args = common::args("pubsub-floor");
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(args.addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    eprintln!("pubsub-floor: listening on {}", args.addr);
    let mut server = Server::default();
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                while let Ok((mut stream, _)) = listener.accept() {
                    let _ = stream.set_nodelay(true);
                    let t = server.next;
                    server.next += 1;
                    if poll
                        .registry()
                        .register(&mut stream, Token(t), Interest::READABLE)
                        .is_ok()
                    {
                        server.conns.insert(
                            t,
                            Conn {
                                stream,
                                input: Vec::new(),
                                pending: Vec::new(),
                                upgraded: false,
                                open: true,
                                topics: Vec::new(),
                            },
                        );
                    }
                }
                continue;
            }
            let t = ev.token().0;
            if ev.is_writable() {
                if let Some(c) = server.conns.get_mut(&t) {
                    c.flush(&poll, t);
                }
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                server.readable(t, &poll);
            }
            if server.conns.get(&t).is_some_and(|c| !c.open) {
                server.dead.push(t);
            }
        }
        if !server.dead.is_empty() {
            server.close_dead(&poll);
        }
    }
}

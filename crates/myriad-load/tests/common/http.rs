//! A small HTTP/1.1 server for the tests, written apart from the load
//! generator's decoder (loopback only): keep-alive, pipelining,
//! Content-Length or chunked responses, and faults chosen by the request
//! path. The request logic ([`serve`]) is sans-I/O; [`HttpServer`] runs it
//! with a thread per connection on std::net, [`HttpHandler`] on a Myriad
//! engine (behind TLS for https://).
//!
//! Paths (`N`: the N-th response on the connection, counted from 1):
//!
//! * anything else: 200; a request with a body gets it echoed, a GET gets
//!   `Hello, World!` (13 bytes); Content-Length.
//! * `/chunked`: the same body, chunked (5-byte chunks, an extension, a
//!   trailer).
//! * `/close/N`: every N-th response says `Connection: close` and the
//!   server closes after it.
//! * `/status/N`: every N-th response is a 503 (with a body).
//! * `/short/N`: the N-th response announces one byte more than it sends,
//!   then the server closes.
//! * `/garbled/N`: the N-th response has a garbled status line.
//! * `/cut/N`: the N-th response stops in the middle of its head, then the
//!   server closes.
//! * `/flip/N`: the N-th response's body has its last byte changed.
//! * `/until-close`: HTTP/1.0-style responses, the body delimited by the
//!   end of the connection.
//! * `/silent-close`: the server closes after every response without
//!   saying so (an idle keep-alive connection closed).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use myriad::{Ctx, Handler};

/// Most bytes of requests buffered per connection.
const MAX_BUFFER: usize = 32 << 20;

fn every(path: &str, what: &str, k: u64) -> bool {
    path.strip_prefix(what)
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| n > 0 && k % n == 0)
}

fn nth(path: &str, what: &str, k: u64) -> bool {
    path.strip_prefix(what)
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| n == k)
}

/// Answers the complete requests at the start of `buf` (the `k`-th response
/// of the connection is number `*k + 1`), appending the responses to `out`.
/// Returns the bytes consumed and whether the connection must close after
/// `out` is sent (no further request is looked at then).
pub fn serve(buf: &[u8], k: &mut u64, out: &mut Vec<u8>) -> (usize, bool) {
    let mut pos = 0;
    // Bounded by the buffer: every pass consumes a request.
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let head = match req.parse(&buf[pos..]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return (pos, false),
            Err(_) => {
                out.extend_from_slice(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return (buf.len(), true);
            }
        };
        let len = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| {
                std::str::from_utf8(h.value)
                    .ok()?
                    .trim()
                    .parse::<usize>()
                    .ok()
            })
            .unwrap_or(0);
        if buf.len() - pos - head < len {
            return (pos, false);
        }
        let path = req.path.unwrap_or("/").to_string();
        let body_at = pos + head;
        let body: &[u8] = if len > 0 {
            &buf[body_at..body_at + len]
        } else {
            b"Hello, World!"
        };
        pos = body_at + len;
        *k += 1;
        let n = *k;
        if nth(&path, "/garbled/", n) {
            out.extend_from_slice(b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n");
            return (pos, true);
        }
        if nth(&path, "/cut/", n) {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Le");
            return (pos, true);
        }
        let status = if every(&path, "/status/", n) {
            "503 Service Unavailable"
        } else {
            "200 OK"
        };
        let close = every(&path, "/close/", n);
        let conn = if close { "Connection: close\r\n" } else { "" };
        if path == "/until-close" {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
            out.extend_from_slice(body);
            return (pos, true);
        }
        if path == "/chunked" {
            out.extend_from_slice(
                format!("HTTP/1.1 {status}\r\n{conn}Transfer-Encoding: chunked\r\n\r\n").as_bytes(),
            );
            for (i, c) in body.chunks(5).enumerate() {
                let ext = if i == 1 { ";x=y" } else { "" };
                out.extend_from_slice(format!("{:x}{ext}\r\n", c.len()).as_bytes());
                out.extend_from_slice(c);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\nX-Trailer: 1\r\n\r\n");
            if close {
                return (pos, true);
            }
            continue;
        }
        let short = nth(&path, "/short/", n);
        let announced = body.len() + usize::from(short);
        out.extend_from_slice(
            format!("HTTP/1.1 {status}\r\n{conn}Content-Length: {announced}\r\n\r\n").as_bytes(),
        );
        let at = out.len();
        out.extend_from_slice(body);
        if nth(&path, "/flip/", n) {
            if let Some(b) = out[at..].last_mut() {
                *b ^= 0x20;
            }
        }
        if close || short || path == "/silent-close" {
            return (pos, true);
        }
    }
}

/// The std::net server: a thread per connection.
pub struct HttpServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    pub fn start() -> HttpServer {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        l.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            // Bounded in time: the stop flag or two minutes.
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                match l.accept() {
                    Ok((c, _)) => {
                        std::thread::spawn(move || conn(c));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        HttpServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn conn(mut s: TcpStream) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut k = 0;
    // Bounded by the deadline (and each read by its timeout).
    while Instant::now() < deadline && buf.len() < MAX_BUFFER {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let (used, close) = serve(&buf, &mut k, &mut out);
        buf.drain(..used);
        if s.write_all(&out).is_err() {
            return;
        }
        out.clear();
        if close {
            linger(s);
            return;
        }
    }
}

/// Closes as a careful server does: FIN first, then reads (and drops) what
/// the client still sends, so that no reset destroys the last response.
fn linger(mut s: TcpStream) {
    let _ = s.shutdown(Shutdown::Write);
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 4096];
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        match s.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// The same logic as a Myriad handler (the engine keeps the unconsumed
/// part of a request and lingers on close).
#[derive(Default)]
pub struct HttpHandler {
    k: u64,
    out: Vec<u8>,
}

impl Handler for HttpHandler {
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        let (used, close) = serve(data, &mut self.k, &mut self.out);
        cx.write(&self.out);
        self.out.clear();
        if close {
            cx.close();
            return data.len();
        }
        used
    }
}

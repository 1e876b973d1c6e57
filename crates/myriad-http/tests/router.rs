//! The router, static files, health checks and the upgrade hook on the
//! engine, over loopback, on both backends. Every read has a timeout and
//! every loop a bound.

mod common;

use common::{start_service, stop};
use myriad::{BackendKind, Ctx, Engine, Handler, QUEUE_BUCKETS};
use myriad_http::{
    BodyHandler, BodySize, BodySource, BodyWriter, Config, Fill, Responder, Response, Router,
};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const KINDS: [BackendKind; 2] = [BackendKind::IoUring, BackendKind::Epoll];

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "myriad-http-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The site: `www/` is the root, `secret.txt` lies next to it (outside).
struct Site {
    dir: TempDir,
    big: Vec<u8>,
}

impl Site {
    fn new() -> Site {
        let dir = TempDir::new("site");
        let www = dir.0.join("www");
        std::fs::create_dir_all(www.join("sub")).unwrap();
        std::fs::create_dir_all(www.join("noindex")).unwrap();
        std::fs::write(www.join("index.html"), b"<h1>home</h1>\n").unwrap();
        std::fs::write(www.join("app.js"), b"console.log(1)\n").unwrap();
        std::fs::write(www.join("a b.txt"), b"spaced\n").unwrap();
        std::fs::write(www.join("sub/index.html"), b"<p>sub</p>\n").unwrap();
        std::fs::write(www.join("sub/style.css"), b"body{}\n").unwrap();
        std::fs::write(www.join(".env"), b"SECRET=1\n").unwrap();
        std::fs::write(www.join("digits.txt"), b"0123456789").unwrap();
        std::fs::write(dir.0.join("secret.txt"), b"TOP SECRET\n").unwrap();
        // A symlink leading out of the root, one inside it, and a
        // directory symlink leading out.
        std::os::unix::fs::symlink(dir.0.join("secret.txt"), www.join("leak.txt")).unwrap();
        std::os::unix::fs::symlink("../secret.txt", www.join("leak2.txt")).unwrap();
        std::os::unix::fs::symlink("digits.txt", www.join("alias.txt")).unwrap();
        std::os::unix::fs::symlink(&dir.0, www.join("up")).unwrap();
        let big: Vec<u8> = (0..8u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
        std::fs::write(www.join("big.bin"), &big).unwrap();
        Site { dir, big }
    }

    fn root(&self) -> PathBuf {
        self.dir.0.join("www")
    }
}

/// A dummy upgrade handler: answers `101`, then echoes the bytes after
/// the head upper-cased, and says how many head bytes it saw.
struct Shout {
    head_done: bool,
}

impl Handler for Shout {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        cx.write(b"OPEN\n");
    }

    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        let mut used = 0;
        if !self.head_done {
            let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                return 0;
            };
            let head = &data[..end + 4];
            assert!(head.starts_with(b"GET /shout HTTP/1.1\r\n"));
            cx.write(
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: shout\r\nConnection: upgrade\r\nX-Head-Len: {}\r\n\r\n",
                    head.len()
                )
                .as_bytes(),
            );
            self.head_done = true;
            used = end + 4;
        }
        let rest = &data[used..];
        cx.write(&rest.to_ascii_uppercase());
        data.len()
    }
}

/// A streamed request body: counts bytes and chunks.
struct Count {
    bytes: usize,
}

impl BodyHandler for Count {
    fn on_chunk(&mut self, chunk: &[u8], _res: &mut Responder<'_, '_>) {
        self.bytes += chunk.len();
    }

    fn on_end(&mut self, res: &mut Responder<'_, '_>) {
        let _ = res.text(200, &format!("{} bytes\n", self.bytes));
    }
}

/// A generated chunked body: `n` lines.
struct Lines {
    left: usize,
}

impl BodySource for Lines {
    fn fill(&mut self, out: &mut BodyWriter<'_, '_>) -> std::io::Result<Fill> {
        while self.left > 0 && !out.is_full() {
            out.write(format!("line {}\n", self.left).as_bytes())
                .map_err(std::io::Error::other)?;
            self.left -= 1;
        }
        Ok(if self.left == 0 {
            Fill::Done
        } else {
            Fill::More
        })
    }
}

fn router(site: &Site, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .get("/", |_, res| {
            let _ = res.text(200, "root\n");
        })
        .unwrap()
        .get("/users/:id", |req, res| {
            let _ = res.text(200, &format!("user {}\n", req.param("id").unwrap_or("?")));
        })
        .unwrap()
        .get("/users/:id/posts/:post", |req, res| {
            let _ = res.text(
                200,
                &format!(
                    "user {} post {} q={}\n",
                    req.param("id").unwrap_or("?"),
                    req.param("post").unwrap_or("?"),
                    req.query().unwrap_or("")
                ),
            );
        })
        .unwrap()
        .route(Some("DELETE"), "/users/:id", |_, res| {
            let _ = res.send(204, &[], b"");
        })
        .unwrap()
        .post("/echo", |req, res| {
            let _ = res.send(
                200,
                &[("Content-Type", b"application/octet-stream")],
                req.body(),
            );
        })
        .unwrap()
        .streaming(Some("PUT"), "/count", |_, _| Box::new(Count { bytes: 0 }))
        .unwrap()
        .get("/lines/:n", |req, res| {
            let n = req.param("n").and_then(|n| n.parse().ok()).unwrap_or(0);
            if res.start(&Response::new(200), BodySize::Streamed).is_ok() {
                let _ = res.stream(Lines { left: n });
            }
        })
        .unwrap()
        .get("/forgot", |_, _| {})
        .unwrap()
        // Answered later from another thread (a pool job in real use).
        .get("/later/:ms", |req, res| {
            let ms = req.param("ms").and_then(|m| m.parse().ok()).unwrap_or(0);
            let Ok(later) = res.defer() else { return };
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(ms));
                later.send(200, &[("X-Later", b"yes")], format!("after {ms} ms\n"));
            });
        })
        .unwrap()
        // Deferred, then dropped unanswered: 500.
        .get("/dropped", |_, res| {
            let later = res.defer();
            std::thread::spawn(move || drop(later));
        })
        .unwrap()
        .post("/later-echo", |req, res| {
            let body = req.body().to_vec();
            let Ok(later) = res.defer() else { return };
            std::thread::spawn(move || {
                later.send(200, &[], body);
            });
        })
        .unwrap()
        .upgrade("/shout", |req| {
            (req.header("x-allow") != Some(b"no"))
                .then(|| Box::new(Shout { head_done: false }) as Box<dyn Handler>)
        })
        .unwrap()
        .static_dir("/static", site.root())
        .unwrap()
        .health(ready)
        .unwrap()
}

fn start(kind: BackendKind, router: Router) -> (Engine, SocketAddr) {
    start_service(
        kind,
        router.service("web", "127.0.0.1:0".parse().unwrap(), Config::default()),
    )
}

fn connect(addr: SocketAddr) -> TcpStream {
    common::connect(addr, IO_TIMEOUT)
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn fill(s: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> bool {
    assert!(
        Instant::now() < deadline,
        "timeout; have {} bytes",
        buf.len()
    );
    let mut tmp = [0u8; 64 << 10];
    match s.read(&mut tmp) {
        Ok(0) => false,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
        Err(e) if e.kind() == ErrorKind::Interrupted => true,
        Err(e) => panic!("read: {e}"),
    }
}

/// Reads one response: `Content-Length` or chunked body (none for HEAD,
/// 204, 304). Bytes past it stay in `buf`.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>, head_req: bool) -> Resp {
    let deadline = Instant::now() + IO_TIMEOUT;
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        assert!(
            fill(s, buf, deadline),
            "EOF in head: {:?}",
            String::from_utf8_lossy(buf)
        );
    };
    let text = String::from_utf8(buf[..end - 4].to_vec()).unwrap();
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    buf.drain(..end);
    let mut r = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    if head_req || status == 204 || status == 304 || status == 101 {
        return r;
    }
    if r.header("transfer-encoding") == Some("chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                assert!(fill(s, buf, deadline), "EOF in chunk size");
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16).unwrap();
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                assert!(fill(s, buf, deadline), "EOF in chunk");
            }
            r.body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                return r;
            }
        }
    }
    let len: usize = r.header("content-length").map_or(0, |v| v.parse().unwrap());
    while buf.len() < len {
        assert!(
            fill(s, buf, deadline),
            "EOF in body ({} of {len})",
            buf.len()
        );
    }
    r.body = buf.drain(..len).collect();
    r
}

/// One request on a fresh connection.
fn get(addr: SocketAddr, target: &str, extra: &str) -> Resp {
    request(
        addr,
        &format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n"),
        false,
    )
}

fn request(addr: SocketAddr, raw: &str, head_req: bool) -> Resp {
    let mut s = connect(addr);
    s.write_all(raw.as_bytes()).unwrap();
    read_response(&mut s, &mut Vec::new(), head_req)
}

#[test]
fn routes_params_methods() {
    let site = Site::new();
    for kind in KINDS {
        let (engine, addr) = start(kind, router(&site, Arc::new(AtomicBool::new(true))));
        let r = get(addr, "/", "");
        assert_eq!((r.status, r.text().as_str()), (200, "root\n"));
        let r = get(addr, "/users/42", "");
        assert_eq!((r.status, r.text().as_str()), (200, "user 42\n"));
        let r = get(addr, "/users/7/posts/x%20y?a=1&b", "");
        assert_eq!(r.text(), "user 7 post x%20y q=a=1&b\n");
        let r = get(addr, "/nope", "");
        assert_eq!(r.status, 404);
        let r = get(addr, "/users/", "");
        assert_eq!(r.status, 404);
        // 405 with Allow.
        let r = request(
            addr,
            "POST /users/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow"), Some("GET, HEAD, DELETE"));
        let r = request(addr, "DELETE /users/1 HTTP/1.1\r\nHost: x\r\n\r\n", false);
        assert_eq!(r.status, 204);
        // HEAD on a GET route: the GET head, no body.
        let r = request(addr, "HEAD /users/42 HTTP/1.1\r\nHost: x\r\n\r\n", true);
        assert_eq!((r.status, r.header("content-length")), (200, Some("8")));
        // HEAD on a streamed route: the head, and the connection goes on.
        let mut s = connect(addr);
        let mut buf = Vec::new();
        s.write_all(
            b"HEAD /lines/5 HTTP/1.1\r\nHost: x\r\n\r\nGET /lines/2 HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .unwrap();
        let r = read_response(&mut s, &mut buf, true);
        assert_eq!(
            (r.status, r.header("transfer-encoding")),
            (200, Some("chunked"))
        );
        assert_eq!(
            read_response(&mut s, &mut buf, false).text(),
            "line 2\nline 1\n"
        );
        // A handler that does not answer: 500.
        assert_eq!(get(addr, "/forgot", "").status, 500);
        // Absolute-form target.
        assert_eq!(get(addr, "http://x/users/5", "").text(), "user 5\n");
        stop(engine);
    }
}

#[test]
fn bodies_keep_alive_and_pipelining() {
    let site = Site::new();
    for kind in KINDS {
        let (engine, addr) = start(kind, router(&site, Arc::new(AtomicBool::new(true))));
        let mut s = connect(addr);
        let mut buf = Vec::new();
        // Buffered body in one piece, then in two pieces, then chunked.
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap();
        let r = read_response(&mut s, &mut buf, false);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nab")
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(b"cdef").unwrap();
        let r = read_response(&mut s, &mut buf, false);
        assert_eq!(r.body, b"abcdef");
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .unwrap();
        let r = read_response(&mut s, &mut buf, false);
        assert_eq!(r.body, b"abcde");
        // Streamed request body.
        s.write_all(
            b"PUT /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n",
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(30));
        s.write_all(b"3\r\nefg\r\n0\r\n\r\n").unwrap();
        let r = read_response(&mut s, &mut buf, false);
        assert_eq!(r.text(), "7 bytes\n");
        // Pipelined: a streamed (chunked) response between two others, all
        // in one write; answers in order.
        s.write_all(
            b"GET /users/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /lines/20000 HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyzGET /users/2 HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .unwrap();
        assert_eq!(read_response(&mut s, &mut buf, false).text(), "user 1\n");
        let lines = read_response(&mut s, &mut buf, false);
        assert_eq!(lines.header("transfer-encoding"), Some("chunked"));
        let text = lines.text();
        assert_eq!(text.lines().count(), 20000);
        assert!(text.starts_with("line 20000\n") && text.ends_with("line 1\n"));
        assert_eq!(read_response(&mut s, &mut buf, false).body, b"xyz");
        assert_eq!(read_response(&mut s, &mut buf, false).text(), "user 2\n");
        stop(engine);
    }
}

#[test]
fn deferred_answers_keep_order() {
    let site = Site::new();
    for kind in KINDS {
        let (engine, addr) = start(kind, router(&site, Arc::new(AtomicBool::new(true))));
        let r = get(addr, "/later/10", "");
        assert_eq!((r.status, r.text().as_str()), (200, "after 10 ms\n"));
        assert_eq!(r.header("x-later"), Some("yes"));
        assert_eq!(get(addr, "/dropped", "").status, 500);
        // Pipelined behind slow deferred answers: answered in order, and
        // a HEAD gets no body.
        let mut s = connect(addr);
        let mut buf = Vec::new();
        s.write_all(
            b"GET /later/100 HTTP/1.1\r\nHost: x\r\n\r\nGET /users/1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /later-echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcHEAD /later/30 HTTP/1.1\r\nHost: x\r\n\r\nGET /later/0 HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            read_response(&mut s, &mut buf, false).text(),
            "after 100 ms\n"
        );
        assert_eq!(read_response(&mut s, &mut buf, false).text(), "user 1\n");
        assert_eq!(read_response(&mut s, &mut buf, false).body, b"abc");
        let h = read_response(&mut s, &mut buf, true);
        assert_eq!((h.status, h.header("content-length")), (200, Some("12")));
        assert_eq!(
            read_response(&mut s, &mut buf, false).text(),
            "after 0 ms\n"
        );
        // The client closes before the answer: nothing breaks.
        let mut s = connect(addr);
        s.write_all(b"GET /later/100 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        drop(s);
        // A client that half-closes after its request still gets it.
        let mut s = connect(addr);
        s.write_all(b"GET /later/50 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut all = String::new();
        s.read_to_string(&mut all).unwrap();
        assert!(
            all.starts_with("HTTP/1.1 200") && all.ends_with("after 50 ms\n"),
            "{all}"
        );
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(get(addr, "/users/3", "").text(), "user 3\n");
        stop(engine);
    }
}

#[test]
fn health_readiness_flips() {
    let site = Site::new();
    for kind in KINDS {
        let ready = Arc::new(AtomicBool::new(false));
        let (engine, addr) = start(kind, router(&site, ready.clone()));
        let r = get(addr, "/healthz", "");
        assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
        let r = get(addr, "/readyz", "");
        assert_eq!(r.status, 503);
        assert_eq!(r.header("cache-control"), Some("no-store"));
        ready.store(true, Ordering::Release);
        assert_eq!(get(addr, "/readyz", "").status, 200);
        ready.store(false, Ordering::Release);
        assert_eq!(get(addr, "/readyz", "").status, 503);
        stop(engine);
    }
}

#[test]
fn upgrade_hook() {
    let site = Site::new();
    for kind in KINDS {
        let (engine, addr) = start(kind, router(&site, Arc::new(AtomicBool::new(true))));
        // A plain request before the upgrade, then the upgrade with bytes
        // after its head in the same write: the new handler sees the head
        // from its first byte and what followed.
        let mut s = connect(addr);
        let mut buf = Vec::new();
        s.write_all(b"GET /users/9 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut s, &mut buf, false).text(), "user 9\n");
        let head =
            "GET /shout HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        s.write_all(format!("{head}early ").as_bytes()).unwrap();
        let deadline = Instant::now() + IO_TIMEOUT;
        while !buf.windows(6).any(|w| w == b"EARLY ") {
            assert!(fill(&mut s, &mut buf, deadline));
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        assert!(
            text.starts_with("OPEN\nHTTP/1.1 101 Switching Protocols\r\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!("X-Head-Len: {}\r\n", head.len())),
            "{text}"
        );
        buf.clear();
        s.write_all(b"later").unwrap();
        while !buf.windows(5).any(|w| w == b"LATER") {
            assert!(fill(&mut s, &mut buf, deadline));
        }
        // Without the Upgrade header: 426. Refused by the factory: 400.
        let r = get(addr, "/shout", "");
        assert_eq!((r.status, r.header("upgrade")), (426, Some("websocket")));
        let r = get(addr, "/shout", "Upgrade: websocket\r\nX-Allow: no\r\n");
        assert_eq!(r.status, 400);
        stop(engine);
    }
}

#[test]
fn static_files() {
    let site = Site::new();
    for kind in KINDS {
        let (engine, addr) = start(kind, router(&site, Arc::new(AtomicBool::new(true))));
        let r = get(addr, "/static/app.js", "");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type"),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(r.header("accept-ranges"), Some("bytes"));
        assert_eq!(r.body, b"console.log(1)\n");
        let etag = r.header("etag").unwrap().to_string();
        let lm = r.header("last-modified").unwrap().to_string();
        // Directory index, redirect to the slash, percent-encoded name,
        // a symlink inside the root.
        assert_eq!(get(addr, "/static/", "").body, b"<h1>home</h1>\n");
        assert_eq!(get(addr, "/static/sub/", "").body, b"<p>sub</p>\n");
        let r = get(addr, "/static/sub?x=1", "");
        assert_eq!(
            (r.status, r.header("location")),
            (301, Some("/static/sub/?x=1"))
        );
        let r = get(addr, "/static/sub/style.css", "");
        assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
        assert_eq!(get(addr, "/static/a%20b.txt", "").body, b"spaced\n");
        assert_eq!(get(addr, "/static/alias.txt", "").body, b"0123456789");
        assert_eq!(get(addr, "/static/noindex/", "").status, 404);
        assert_eq!(get(addr, "/static/missing.txt", "").status, 404);
        // Conditionals.
        let r = get(
            addr,
            "/static/app.js",
            &format!("If-None-Match: \"nope\", {etag}\r\n"),
        );
        assert_eq!((r.status, r.header("etag")), (304, Some(etag.as_str())));
        assert_eq!(
            get(
                addr,
                "/static/app.js",
                &format!("If-Modified-Since: {lm}\r\n")
            )
            .status,
            304
        );
        assert_eq!(
            get(
                addr,
                "/static/app.js",
                "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
            )
            .status,
            200
        );
        // If-None-Match wins over If-Modified-Since.
        let r = get(
            addr,
            "/static/app.js",
            &format!("If-None-Match: \"x\"\r\nIf-Modified-Since: {lm}\r\n"),
        );
        assert_eq!(r.status, 200);
        // Ranges.
        let r = get(addr, "/static/digits.txt", "Range: bytes=2-4\r\n");
        assert_eq!((r.status, r.body.as_slice()), (206, &b"234"[..]));
        assert_eq!(r.header("content-range"), Some("bytes 2-4/10"));
        let r = get(addr, "/static/digits.txt", "Range: bytes=-3\r\n");
        assert_eq!((r.status, r.body.as_slice()), (206, &b"789"[..]));
        let r = get(addr, "/static/digits.txt", "Range: bytes=7-\r\n");
        assert_eq!(r.header("content-range"), Some("bytes 7-9/10"));
        let r = get(addr, "/static/digits.txt", "Range: bytes=10-\r\n");
        assert_eq!(
            (r.status, r.header("content-range")),
            (416, Some("bytes */10"))
        );
        let r = get(addr, "/static/digits.txt", "Range: bytes=0-1,4-5\r\n");
        assert_eq!((r.status, r.body.len()), (200, 10));
        let r = get(
            addr,
            "/static/digits.txt",
            "Range: bytes=2-4\r\nIf-Range: \"stale\"\r\n",
        );
        assert_eq!(r.status, 200);
        // HEAD: the head with the file's length.
        let r = request(
            addr,
            "HEAD /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n",
            true,
        );
        assert_eq!(
            (r.status, r.header("content-length")),
            (200, Some("8388608"))
        );
        // A big range, streamed.
        let r = get(addr, "/static/big.bin", "Range: bytes=1000000-2999999\r\n");
        assert_eq!(r.status, 206);
        assert!(r.body == site.big[1_000_000..3_000_000]);
        stop(engine);
    }
}

#[test]
fn no_escape_from_root() {
    let site = Site::new();
    for kind in KINDS {
        let (engine, addr) = start(kind, router(&site, Arc::new(AtomicBool::new(true))));
        for target in [
            "/static/../secret.txt",
            "/static/sub/../../secret.txt",
            "/static/%2e%2e/secret.txt",
            "/static/%2E%2E/secret.txt",
            "/static/.%2e/secret.txt",
            "/static/sub%2f..%2f..%2fsecret.txt",
            "/static/..%2fsecret.txt",
            "/static/..%5csecret.txt",
            "/static/..\\secret.txt",
            "/static/secret.txt%00.js",
            "/static/%",
            "/static/leak.txt",
            "/static/leak2.txt",
            "/static/up/secret.txt",
            "/static/.env",
            "/static/%2eenv",
            "/static//etc/passwd",
        ] {
            let r = get(addr, target, "");
            assert!(
                r.status == 400 || r.status == 404,
                "{target}: {} {:?}",
                r.status,
                r.text()
            );
            assert!(!r.text().contains("SECRET"), "{target}");
        }
        stop(engine);
    }
}

/// An 8 MiB file to a client that reads slowly: served completely, while
/// the server never queues more than its window of it (the connection's
/// write queue is sampled all along through the engine's queue-depth
/// histogram: never above 1 MiB, where a server reading the whole file at
/// once would queue 8 MiB).
#[test]
fn big_file_slow_reader() {
    let site = Site::new();
    for kind in KINDS {
        let (engine, addr) = start(kind, router(&site, Arc::new(AtomicBool::new(true))));
        let mut s = connect(addr);
        // A small receive buffer keeps the kernel from absorbing the file.
        let sock = socket2::SockRef::from(&s);
        sock.set_recv_buffer_size(64 << 10).unwrap();
        s.write_all(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut over_1mib = 0u64;
        let mut samples = 0;
        let mut tmp = vec![0u8; 32 << 10];
        let mut reads = 0;
        let body_start = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(fill(&mut s, &mut buf, deadline));
        };
        assert!(buf.starts_with(b"HTTP/1.1 200 OK\r\n"));
        let mut body = buf.split_off(body_start);
        while body.len() < site.big.len() {
            assert!(
                Instant::now() < deadline,
                "slow read timed out at {}",
                body.len()
            );
            let n = s.read(&mut tmp).unwrap();
            assert!(n > 0, "EOF at {}", body.len());
            body.extend_from_slice(&tmp[..n]);
            reads += 1;
            if reads % 16 == 0 {
                // Slow: a pause every 512 KiB or so.
                std::thread::sleep(Duration::from_millis(5));
                if let Some(h) = engine.loop_handle(0).write_queue_histogram() {
                    over_1mib += h[QUEUE_BUCKETS.len()];
                    samples += 1;
                }
            }
        }
        assert_eq!(body.len(), site.big.len());
        assert!(body == site.big, "body differs");
        assert!(samples > 10, "{samples} samples");
        assert_eq!(
            over_1mib, 0,
            "queue over 1 MiB in {over_1mib} of {samples} samples"
        );
        stop(engine);
    }
}

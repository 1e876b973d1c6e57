//! `stack = "http"` / `"https"` end to end: routes declared in the config
//! (static files, redirects, health checks, WebSocket upgrades on several
//! paths of one port), readiness tied to the server's state (503 while
//! starting and during the SIGTERM grace), the metrics listener's health
//! routes, and config errors for bad routes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::*;

fn serve(cfg: &Path, notify: Option<&Path>) -> Server {
    let mut c = Command::new(BIN);
    c.args(["serve", "--config"]).arg(cfg).stderr(Stdio::null());
    if let Some(n) = notify {
        c.env("NOTIFY_SOCKET", n);
    }
    Server(c.spawn().unwrap())
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// One response: status, head (lower-cased names), body.
#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one `Content-Length` response (every answer here has one).
fn read_resp(r: &mut impl BufRead, head_req: bool) -> Resp {
    let mut head = String::new();
    loop {
        let mut l = String::new();
        assert!(r.read_line(&mut l).unwrap() > 0, "EOF in head: {head:?}");
        if l == "\r\n" {
            break;
        }
        head.push_str(&l);
    }
    let status = head[9..12].parse().unwrap();
    let mut resp = Resp {
        status,
        head,
        body: Vec::new(),
    };
    let len: usize = resp
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    if !head_req && status != 304 {
        resp.body = vec![0; len];
        r.read_exact(&mut resp.body).unwrap();
    }
    resp
}

/// One request on a fresh connection that ends with the answer.
fn get(addr: &str, target: &str, extra: &str) -> Resp {
    let mut s = connect(addr);
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n"
    )
    .unwrap();
    read_resp(&mut BufReader::new(s), false)
}

/// A WebSocket client: raw handshake on `path`, then masked frames.
struct Ws {
    s: TcpStream,
    r: BufReader<TcpStream>,
}

impl Ws {
    fn open(addr: &str, path: &str) -> Ws {
        Ws::open_with(addr, path, "").0
    }

    /// With `extra` header lines (each ending in CRLF); also returns the
    /// 101 answer.
    fn open_with(addr: &str, path: &str, extra: &str) -> (Ws, Resp) {
        let mut s = connect(addr);
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let resp = read_resp(&mut r, true);
        assert_eq!(resp.status, 101, "{path}: {resp:?}");
        assert_eq!(
            resp.header("sec-websocket-accept").as_deref(),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        (Ws { s, r }, resp)
    }

    fn send(&mut self, text: &str) {
        let p = text.as_bytes();
        assert!(p.len() < 126);
        let mask = [7u8, 1, 9, 3];
        let mut frame = vec![0x81, 0x80 | p.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(p.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&frame).unwrap();
    }

    fn recv(&mut self) -> String {
        let mut hdr = [0u8; 2];
        self.r.read_exact(&mut hdr).unwrap();
        assert_eq!(hdr[0], 0x81, "a text frame");
        let mut body = vec![0u8; usize::from(hdr[1] & 0x7f)];
        self.r.read_exact(&mut body).unwrap();
        String::from_utf8(body).unwrap()
    }

    /// Nothing arrives within `d`.
    fn quiet(&mut self, d: Duration) -> bool {
        self.s.set_read_timeout(Some(d)).unwrap();
        let mut b = [0u8; 1];
        let quiet = matches!(self.r.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut);
        self.s
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        quiet
    }
}

fn site(d: &Path) -> PathBuf {
    let www = d.join("www");
    std::fs::create_dir_all(www.join("sub")).unwrap();
    std::fs::write(www.join("index.html"), b"<h1>home</h1>\n").unwrap();
    std::fs::write(www.join("app.js"), b"console.log(1)\n").unwrap();
    std::fs::write(d.join("secret.txt"), b"TOP SECRET\n").unwrap();
    // Over 64 KiB: streamed (sendfile on plain TCP, reads over TLS).
    std::fs::write(www.join("big.bin"), big_file()).unwrap();
    www
}

/// 3 MiB of a pattern that shows misplaced bytes.
fn big_file() -> Vec<u8> {
    (0..3u32 << 20)
        .map(|i| (i % 253) as u8 ^ (i >> 12) as u8)
        .collect()
}

#[test]
fn http_stack_static_redirect_health_and_two_ws_routes_on_one_port() {
    let _g = serial();
    let d = tmpdir("routes");
    site(&d);
    let (p, pm) = (free_port(), free_port());
    let cfg = d.join("myriad.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"io_threads = 1
[metrics]
listen = "127.0.0.1:{pm}"

[[service]]
name = "web"
listen = "127.0.0.1:{p}"
stack = "http"

[[service.route]]
path = "/static/*"
static = "www"

[[service.route]]
path = "/chat"
ws = "ws-chat"

[[service.route]]
path = "/echo"
ws = "ws-echo"

[[service.route]]
path = "/healthz"
health = "alive"

[[service.route]]
path = "/readyz"
health = "ready"

[[service.route]]
path = "/old"
redirect = "/new"

[[service.route]]
path = "/docs/*"
redirect = "https://docs.example.com/"
status = 308
"#
        ),
    )
    .unwrap();
    let (code, msg) = check(&cfg);
    assert_eq!(code, 0, "{msg}");
    let mut srv = serve(&cfg, None);
    let addr = format!("127.0.0.1:{p}");
    let maddr = format!("127.0.0.1:{pm}");
    wait_port(&maddr);

    // Static files: 200 with validators, 304 on a match, 404, no escape.
    let r = get(&addr, "/static/app.js", "");
    assert_eq!((r.status, r.text().as_str()), (200, "console.log(1)\n"));
    assert!(r.header("content-type").unwrap().contains("javascript"));
    let etag = r.header("etag").expect("an ETag");
    let big = get(&addr, "/static/big.bin", "");
    assert_eq!(big.status, 200);
    assert!(big.body == big_file(), "a streamed file differs");
    let r = get(
        &addr,
        "/static/app.js",
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert_eq!(r.status, 304);
    assert_eq!(get(&addr, "/static/", "").text(), "<h1>home</h1>\n");
    assert_eq!(get(&addr, "/static/missing.txt", "").status, 404);
    assert_eq!(get(&addr, "/static/%2e%2e/secret.txt", "").status, 400);
    assert_eq!(get(&addr, "/elsewhere", "").status, 404);

    // Redirects: the status, the target, the query and a prefix's tail.
    let r = get(&addr, "/old", "");
    assert_eq!(
        (r.status, r.header("location").as_deref()),
        (301, Some("/new"))
    );
    let r = get(&addr, "/old?a=1", "");
    assert_eq!(r.header("location").as_deref(), Some("/new?a=1"));
    let r = get(&addr, "/docs/guide/intro.html", "");
    assert_eq!(
        (r.status, r.header("location").as_deref()),
        (308, Some("https://docs.example.com/guide/intro.html"))
    );

    // Health: alive, and ready once READY=1 was sent (serve is up).
    let r = get(&addr, "/healthz", "");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(get(&addr, "/readyz", "").status, 200);

    // Two WebSocket routes on one port, each with its own handler: the
    // chat room broadcasts to every member, the echo answers the sender.
    let mut a = Ws::open(&addr, "/chat");
    let mut b = Ws::open(&addr, "/chat");
    let mut e = Ws::open(&addr, "/echo");
    a.send("hello room");
    assert_eq!(a.recv(), "hello room");
    assert_eq!(b.recv(), "hello room");
    e.send("just me");
    assert_eq!(e.recv(), "just me");
    assert!(
        e.quiet(Duration::from_millis(200)),
        "the echo is no chat member"
    );
    b.send("from b");
    assert_eq!(a.recv(), "from b");
    assert_eq!(b.recv(), "from b");
    // The demo page's protocol: offering `myriad-chat` gets JSON events
    // (a welcome with the name and the member count, messages with their
    // sender, the count on joins and leaves); plain members are unchanged.
    let (mut j, resp) = Ws::open_with(
        &addr,
        "/chat?name=Ada%20L",
        "Sec-WebSocket-Protocol: other, myriad-chat\r\n",
    );
    assert_eq!(
        resp.header("sec-websocket-protocol").as_deref(),
        Some("myriad-chat")
    );
    let json = |t: String| -> serde_json::Value { serde_json::from_str(&t).expect("JSON") };
    let w = json(j.recv());
    assert_eq!(
        (w["type"].as_str(), w["name"].as_str(), w["count"].as_u64()),
        (Some("welcome"), Some("Ada L"), Some(3))
    );
    assert_eq!(json(j.recv())["count"], 3, "its own arrival");
    let (mut k, _) = Ws::open_with(
        &addr,
        "/chat?name=../x",
        "Sec-WebSocket-Protocol: myriad-chat\r\n",
    );
    let w = json(k.recv());
    assert!(
        w["name"].as_str().is_some_and(|n| n.starts_with("guest-")),
        "{w}"
    );
    assert_eq!(json(j.recv())["count"], 4);
    assert_eq!(json(k.recv())["count"], 4);
    a.send("to all");
    assert_eq!(a.recv(), "to all");
    assert_eq!(b.recv(), "to all");
    let m = json(j.recv());
    assert_eq!(
        (m["type"].as_str(), m["text"].as_str()),
        (Some("message"), Some("to all"))
    );
    assert!(m["from"].as_str().is_some_and(|n| n.starts_with("guest-")));
    assert_eq!(json(k.recv())["text"], "to all");
    j.send("hi from Ada");
    assert_eq!(a.recv(), "hi from Ada", "plain members get the text alone");
    assert_eq!(b.recv(), "hi from Ada");
    assert_eq!(json(j.recv())["from"], "Ada L");
    assert_eq!(json(k.recv())["from"], "Ada L");
    drop(k);
    assert_eq!(json(j.recv())["count"], 3, "a member left");
    // Without the upgrade: the chat page on /chat (its script connects
    // back to the same path), 426 on /echo.
    let page = get(&addr, "/chat", "");
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains("WebSocket") && page.text().contains("location.pathname"),
        "{}",
        page.text()
    );
    let r = get(&addr, "/echo", "");
    assert_eq!(
        (r.status, r.header("upgrade").as_deref()),
        (426, Some("websocket"))
    );

    // Keep-alive and pipelining on the service port.
    let mut s = connect(&addr);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nHEAD /static/app.js HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    assert_eq!(read_resp(&mut r, false).text(), "ok\n");
    let h = read_resp(&mut r, true);
    assert_eq!(
        (h.status, h.header("content-length").as_deref()),
        (200, Some("15"))
    );
    assert_eq!(read_resp(&mut r, false).text(), "ready\n");

    // The metrics listener: health routes, and /metrics (with the ws
    // routes' counters under the service).
    assert_eq!(get(&maddr, "/healthz", "").status, 200);
    assert_eq!(get(&maddr, "/readyz", "").text(), "ready\n");
    let m = get(&maddr, "/metrics", "");
    assert_eq!(m.status, 200);
    let text = m.text();
    assert!(
        text.contains("myriad_ws_events_total{service=\"web\",event=\"handshakes\"} 5\n"),
        "{text}"
    );
    assert!(
        text.contains("myriad_broadcast_dropped_total{service=\"web\"} 0\n"),
        "{text}"
    );
    // every metric the Grafana dashboard charts is one the server exports
    let grafana = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/grafana/myriad.json"),
    )
    .expect("contrib/grafana/myriad.json");
    let mut charted = 0;
    for (i, _) in grafana.match_indices("myriad_") {
        let name: String = grafana[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name == "myriad_err_" || name == "myriad_write_queue_bytes_bucket" {
            // a name pattern; a histogram's series
            continue;
        }
        charted += 1;
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "the dashboard charts {name}, which /metrics does not export"
        );
    }
    assert!(charted > 10);
    assert_eq!(get(&maddr, "/nope", "").status, 404);
    // the live dashboard: one page, no network needed, reading /metrics
    let d = get(&maddr, "/", "");
    assert_eq!(d.status, 200);
    assert_eq!(
        d.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    let page = d.text();
    assert!(
        page.contains("fetch(\"metrics\""),
        "the page reads /metrics"
    );
    assert!(
        !page.contains("http://") && !page.contains("https://") && !page.contains("src=\""),
        "nothing loaded from the network"
    );
    // Two scrapes on one kept-alive connection, the second pipelined.
    let mut s = connect(&maddr);
    s.write_all(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let mut r = BufReader::new(s);
    for _ in 0..2 {
        let m = read_resp(&mut r, false);
        assert_eq!(m.status, 200);
        assert!(m.text().contains("myriad_accepted_total{service=\"web\""));
    }
    // myriad stats reads the same endpoint.
    let out = Command::new(BIN)
        .args(["stats", "--once", "--url"])
        .arg(format!("http://{maddr}/metrics"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("web"), "{text}");

    // SIGTERM: the WebSocket peers get 1001, the server exits 0.
    signal(&srv.0, "-TERM");
    let mut close = [0u8; 4];
    e.r.read_exact(&mut close).unwrap();
    assert_eq!(
        (close[0], u16::from_be_bytes([close[2], close[3]])),
        (0x88, 1001)
    );
    assert!(srv.0.wait().unwrap().success());
}

/// A stream plugin whose `init` takes 1.5 s: a service that is slow to
/// start, so that the services before it serve while the server is not
/// ready yet.
fn slow_plugin(d: &Path) -> PathBuf {
    let src = d.join("slow.c");
    std::fs::write(
        &src,
        r#"#include "myriad_plugin.h"
#include <unistd.h>
static const myriad_host *host;
static int32_t slow_init(myriad_ctx *cx, const char *s, size_t sl, const char *c, size_t cl,
                         void **st, char *err, size_t cap)
{
    (void)cx; (void)s; (void)sl; (void)c; (void)cl; (void)err; (void)cap;
    usleep(1500000);
    *st = 0;
    return 0;
}
static size_t slow_data(myriad_ctx *cx, void *s, void *c, uint8_t *d, size_t len)
{
    (void)s; (void)c;
    host->write(cx, d, len);
    return len;
}
static const myriad_plugin table = {
    .abi_version = MYRIAD_ABI_VERSION,
    .struct_size = sizeof(myriad_plugin),
    .name = "slow-start",
    .shape = MYRIAD_SHAPE_STREAM,
    .init = slow_init,
    .on_data = slow_data,
};
MYRIAD_PLUGIN_EXPORT const myriad_plugin *myriad_plugin_entry(const myriad_host *h)
{
    host = h;
    return &table;
}
"#,
    )
    .unwrap();
    let out = d.join("libslow.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let st = Command::new(cc)
        .args(["-O2", "-fPIC", "-shared", "-I"])
        .arg(Path::new(ROOT).join("crates/myriad-plugin/include"))
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("a C compiler");
    assert!(st.success(), "the slow plugin builds");
    out
}

/// Waits for a notify message containing `needle`.
/// `myriad serve` with a `NOTIFY_SOCKET` of its own in `d`, read with
/// [`wait_notify`].
fn serve_notified(d: &Path, cfg: &Path) -> (UnixDatagram, Server) {
    let sock = d.join("notify.sock");
    let notify = UnixDatagram::bind(&sock).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let srv = serve(cfg, Some(&sock));
    (notify, srv)
}

fn wait_notify(s: &UnixDatagram, needle: &str) {
    let mut buf = [0u8; 4096];
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if let Ok(n) = s.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).contains(needle) {
                return;
            }
        }
    }
    panic!("no {needle}");
}

#[test]
fn readyz_is_503_while_starting_and_during_the_sigterm_grace() {
    let _g = serial();
    let d = tmpdir("ready");
    let lib = slow_plugin(&d);
    let (p, ps, pm) = (free_port(), free_port(), free_port());
    let cfg = d.join("myriad.toml");
    // The http service starts first; the slow plugin service after it
    // holds READY=1 back for 1.5 s.
    std::fs::write(
        &cfg,
        format!(
            r#"io_threads = 1
shutdown_grace = "60s"
[metrics]
listen = "127.0.0.1:{pm}"

[[service]]
name = "web"
listen = "127.0.0.1:{p}"
stack = "http"
handler = "router"
[[service.route]]
path = "/readyz"
health = "ready"
[[service.route]]
path = "/healthz"
health = "alive"

[[service]]
name = "slow"
listen = "127.0.0.1:{ps}"
stack = "tcp"
handler = "plugin"
plugin = "{}"
"#,
            lib.display()
        ),
    )
    .unwrap();
    let (notify, srv) = serve_notified(&d, &cfg);
    let addr = format!("127.0.0.1:{p}");
    wait_port(&addr);
    // Starting: alive, not ready.
    assert_eq!(get(&addr, "/healthz", "").status, 200);
    let r = get(&addr, "/readyz", "");
    assert_eq!((r.status, r.text().as_str()), (503, "not ready\n"));
    wait_notify(&notify, "READY=1");
    assert_eq!(get(&addr, "/readyz", "").status, 200);
    let maddr = format!("127.0.0.1:{pm}");
    assert_eq!(get(&maddr, "/readyz", "").status, 200);

    // A client in the middle of a request holds the grace period open.
    let mut held = connect(&addr);
    held.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    signal(&srv.0, "-TERM");
    wait_notify(&notify, "STOPPING=1");
    // Draining: the metrics listener still answers, not ready.
    let r = get(&maddr, "/readyz", "");
    assert_eq!((r.status, r.text().as_str()), (503, "not ready\n"));
    assert_eq!(get(&maddr, "/healthz", "").status, 200);
    // The held request ends: 503, and the connection closes after it.
    held.write_all(b"\r\n").unwrap();
    let mut all = Vec::new();
    let r = held.read_to_end(&mut all);
    let all = String::from_utf8_lossy(&all);
    assert!(r.is_ok(), "{r:?} after {all:?}");
    assert!(all.starts_with("HTTP/1.1 503"), "{all}");
    assert!(all.contains("onnection: close"), "{all}");
    // Nothing else holds the grace: the server exits well before 60 s.
    let t0 = Instant::now();
    let mut srv = srv;
    loop {
        if let Some(st) = srv.0.try_wait().unwrap() {
            assert!(st.success(), "{st:?}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "still running");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A SIGHUP that changes the http service itself (a new engine on the same
/// port while the old one drains): `/readyz` is polled all along, on the
/// service and on the metrics listener, and every poll gets an answer —
/// 200, or 503 inside the reload window (RELOADING=1 ... READY=1) — never
/// a refused or cut connection; afterwards the new route answers and both
/// say 200 again.
#[test]
fn readyz_answers_through_a_reload_of_its_own_service() {
    let _g = serial();
    let d = tmpdir("ready-reload");
    let (p, pm) = (free_port(), free_port());
    let cfg = d.join("myriad.toml");
    let config = |extra: &str| {
        format!(
            r#"io_threads = 1
[metrics]
listen = "127.0.0.1:{pm}"

[[service]]
name = "web"
listen = "127.0.0.1:{p}"
stack = "http"
handler = "router"
[[service.route]]
path = "/readyz"
health = "ready"
{extra}"#
        )
    };
    std::fs::write(&cfg, config("")).unwrap();
    let (notify, srv) = serve_notified(&d, &cfg);
    let addr = format!("127.0.0.1:{p}");
    let maddr = format!("127.0.0.1:{pm}");
    wait_port(&addr);
    wait_notify(&notify, "READY=1");
    assert_eq!(get(&addr, "/readyz", "").status, 200);
    assert_eq!(get(&addr, "/new", "").status, 404);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (stop, addr, maddr) = (stop.clone(), addr.clone(), maddr.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            // Bounded: at most 20 s of polling.
            let t0 = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Acquire)
                && t0.elapsed() < Duration::from_secs(20)
            {
                for a in [&addr, &maddr] {
                    // `get` panics on a refused or cut connection.
                    seen.push(get(a, "/readyz", "").status);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    std::fs::write(
        &cfg,
        config("[[service.route]]\npath = \"/new\"\nhealth = \"alive\"\n"),
    )
    .unwrap();
    signal(&srv.0, "-HUP");
    wait_notify(&notify, "RELOADING=1");
    wait_notify(&notify, "READY=1");
    // The new engine serves the new route.
    let t0 = Instant::now();
    while get(&addr, "/new", "").status != 200 {
        assert!(t0.elapsed() < Duration::from_secs(10), "no new route");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Release);
    let seen = poller.join().expect("a poll failed: refused or cut");
    assert!(seen.len() > 20, "{} polls", seen.len());
    assert!(seen.iter().all(|s| *s == 200 || *s == 503), "{seen:?}");
    assert_eq!(seen[seen.len() - 2..], [200, 200], "{seen:?}");
}

#[test]
fn https_stack_with_the_tls_filter() {
    let _g = serial();
    let d = tmpdir("https");
    site(&d);
    self_signed_cert(&d);
    let (p, pm) = (free_port(), free_port());
    let cfg = d.join("myriad.toml");
    std::fs::write(
        &cfg,
        format!(
            "io_threads = 1\n[metrics]\nlisten = \"127.0.0.1:{pm}\"\n[[service]]\nname = \"s\"\nlisten = \"127.0.0.1:{p}\"\nstack = \"https\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\
             [[service.route]]\npath = \"/\"\nstatic = \"www\"\n[[service.route]]\npath = \"/echo\"\nws = \"ws-echo\"\n"
        ),
    )
    .unwrap();
    let mut srv = serve(&cfg, None);
    wait_port(&format!("127.0.0.1:{pm}"));
    let script = r#"
import socket, ssl, sys
ca, port = sys.argv[1], int(sys.argv[2])
ctx = ssl.create_default_context(cafile=ca)
def conn():
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")
s = conn()
s.sendall(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
r = b""
while True:
    b = s.recv(4096)
    if not b: break
    r += b
print("GET", r.split(b"\r\n")[0].decode(), r.split(b"\r\n\r\n", 1)[1].decode().strip())
s = conn()
s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
r = b""
while True:
    b = s.recv(65536)
    if not b: break
    r += b
want = bytes(((i % 253) ^ (i >> 12)) & 0xff for i in range(3 << 20))
print("BIG", r.split(b"\r\n")[0].decode(), r.split(b"\r\n\r\n", 1)[1] == want)
w = conn()
w.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
r = b""
while b"\r\n\r\n" not in r: r += w.recv(1024)
head, _, rest = r.partition(b"\r\n\r\n")
mask = b"\x01\x02\x03\x04"; p = b"over wss"
w.sendall(bytes([0x81, 0x80 | len(p)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(p)))
while len(rest) < 2 + len(p): rest += w.recv(64)
print("WSS", head.split(b"\r\n")[0].decode(), rest[2:2 + len(p)].decode())
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(d.join("cert.pem"))
        .arg(p.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("GET HTTP/1.1 200 OK <h1>home</h1>"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("BIG HTTP/1.1 200 OK True"), "{text}");
    assert!(
        text.contains("WSS HTTP/1.1 101 Switching Protocols over wss"),
        "{text}"
    );
    // Plain HTTP to the TLS port is no request.
    let mut s = connect(&format!("127.0.0.1:{p}"));
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"HTTP/1.1 200"));
    let m = get(&format!("127.0.0.1:{pm}"), "/metrics", "");
    assert!(
        m.text()
            .contains("myriad_tls_handshakes_total{service=\"s\",kind=\"full\"} 3\n"),
        "{}",
        m.text()
    );
    signal(&srv.0, "-TERM");
    assert!(srv.0.wait().unwrap().success());
}

#[test]
fn bad_routes_are_config_errors_with_file_line_and_column() {
    let d = tmpdir("errors");
    std::fs::create_dir_all(d.join("www")).unwrap();
    let head = "[[service]]\nname = \"w\"\nlisten = \"127.0.0.1:1\"\nstack = \"http\"\n";
    let cases: &[(&str, String, &str, &str)] = &[
        ("nokind", format!("{head}[[service.route]]\npath = \"/x\"\n"), ":6:8:", "one of static, ws, health, redirect or publish"),
        ("twokinds", format!("{head}[[service.route]]\npath = \"/x\"\nstatic = \"www\"\nredirect = \"/y\"\n"), ":8:12:", "one kind per route"),
        ("nodir", format!("{head}[[service.route]]\npath = \"/s/*\"\nstatic = \"missing\"\n"), ":7:10:", "directory not found"),
        ("badws", format!("{head}[[service.route]]\npath = \"/c\"\nws = \"ws-party\"\n"), ":7:6:", "unknown ws handler"),
        ("dup", format!("{head}[[service.route]]\npath = \"/h\"\nhealth = \"alive\"\n[[service.route]]\npath = \"/h\"\nredirect = \"/x\"\n"), ":9:8:", "duplicate route path \"/h\" (first at"),
        ("dupstatic", format!("{head}[[service.route]]\npath = \"/s\"\nstatic = \"www\"\n[[service.route]]\npath = \"/s/*\"\nstatic = \"www\"\n"), ":9:8:", "duplicate route path"),
        ("status", format!("{head}[[service.route]]\npath = \"/h\"\nhealth = \"ready\"\nstatus = 302\n"), ":8:10:", "status is only valid on a redirect"),
        ("badstatus", format!("{head}[[service.route]]\npath = \"/o\"\nredirect = \"/n\"\nstatus = 200\n"), ":8:10:", "redirect status 200"),
        ("badpath", format!("{head}[[service.route]]\npath = \"nope\"\nhealth = \"alive\"\n"), ":6:8:", "must start with '/'"),
        ("health", format!("{head}[[service.route]]\npath = \"/h\"\nhealth = true\n"), ":7:10:", "invalid type"),
        ("unknownkey", format!("{head}[[service.route]]\npath = \"/h\"\nhealth = \"alive\"\ncolour = \"red\"\n"), ":8:1:", "colour"),
        ("noroutes", head.to_string(), ":4:9:", "needs at least one [[service.route]]"),
        ("tcproutes", "[[service]]\nname = \"t\"\nlisten = \"127.0.0.1:1\"\nstack = \"tcp\"\nhandler = \"echo\"\n[[service.route]]\npath = \"/h\"\nhealth = \"alive\"\n".to_string(), ":7:8:", "only valid with stack http or https"),
        ("handler", format!("{head}handler = \"echo\"\n[[service.route]]\npath = \"/h\"\nhealth = \"alive\"\n"), ":5:11:", "does not fit"),
        ("nocert", "[[service]]\nname = \"s\"\nlisten = \"127.0.0.1:1\"\nstack = \"https\"\n[[service.route]]\npath = \"/h\"\nhealth = \"alive\"\n".to_string(), ":4:9:", "needs cert and key"),
        ("plugin", format!("{head}[[service.route]]\npath = \"/p\"\nws = \"plugin\"\n"), ":7:6:", "plugin = \"PATH\""),
        ("plugincfg", format!("{head}[[service.route]]\npath = \"/p\"\nhealth = \"alive\"\n[service.route.plugin_config]\nx = 1\n"), ":6:8:", "plugin_config is only valid"),
    ];
    for (name, text, loc, reason) in cases {
        let p = d.join(format!("{name}.toml"));
        std::fs::write(&p, text).unwrap();
        let (code, msg) = check(&p);
        assert_eq!(code, 2, "{name}: {msg}");
        assert!(
            msg.contains(&format!("{}{loc}", p.display())),
            "{name}: {msg}"
        );
        assert!(msg.contains(reason), "{name}: {msg}");
    }
}

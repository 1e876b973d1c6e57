//! The echo handler on the engine, over real loopback sockets, on both
//! backends: every strictness case gets its status and a close; keep-alive,
//! pipelining, chunked uploads, 100-continue, HEAD, HTTP/1.0 and the 408
//! deadlines work. Every read has a timeout and every loop a bound.

mod common;

use common::{start_service, stop};
use myriad::{BackendKind, Engine};
use myriad_http::engine::Echo;
use myriad_http::{Config, MinRate};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn start(kind: BackendKind, cfg: Config) -> (Engine, SocketAddr) {
    start_service(kind, Echo::service("127.0.0.1:0".parse().unwrap(), cfg))
}

fn connect(addr: SocketAddr) -> TcpStream {
    common::connect(addr, IO_TIMEOUT)
}

/// Everything until the server closes (EOF); panics past the timeout.
fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut buf = [0u8; 16 << 10];
    loop {
        assert!(
            Instant::now() < deadline,
            "no EOF; got {:?}",
            String::from_utf8_lossy(&out)
        );
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // A reset after the whole answer arrived counts as a close.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("read: {e}; got {:?}", String::from_utf8_lossy(&out)),
        }
    }
}

#[derive(Debug)]
struct Resp {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn status(&self) -> u16 {
        self.status_line[9..12].parse().unwrap()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (head, then a `Content-Length` body unless `head`).
/// Bytes read past it stay in `buf` for the next call.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>, head: bool) -> Resp {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut tmp = [0u8; 16 << 10];
    let fill = |s: &mut TcpStream, buf: &mut Vec<u8>, tmp: &mut [u8]| {
        assert!(
            Instant::now() < deadline,
            "timeout; have {:?}",
            String::from_utf8_lossy(buf)
        );
        match s.read(tmp) {
            Ok(0) => panic!("EOF; have {:?}", String::from_utf8_lossy(buf)),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) => panic!("read: {e}; have {:?}", String::from_utf8_lossy(buf)),
        }
    };
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(s, buf, &mut tmp);
    };
    let text = String::from_utf8(buf[..end - 4].to_vec()).unwrap();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap().to_string();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    buf.drain(..end);
    let mut r = Resp {
        status_line,
        headers,
        body: Vec::new(),
    };
    let len: usize = if head || r.status() == 100 {
        0
    } else {
        r.header("content-length").map_or(0, |v| v.parse().unwrap())
    };
    while buf.len() < len {
        fill(s, buf, &mut tmp);
    }
    r.body = buf.drain(..len).collect();
    r
}

fn both(test: fn(BackendKind)) {
    for kind in [BackendKind::Auto, BackendKind::Epoll] {
        test(kind);
    }
}

/// Each strictness case on its own connection: its status, `Connection:
/// close`, then EOF.
#[test]
fn strictness_cases_answered_and_closed() {
    both(|kind| {
        let (engine, addr) = start(kind, Config::default());
        let big_head = [
            b"GET / HTTP/1.1\r\nHost: a\r\nX: ".as_slice(),
            &[b'y'; 20 << 10],
            b"\r\n\r\n",
        ]
        .concat();
        let many_headers = {
            let mut r = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
            for i in 0..150 {
                r.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
            }
            r.extend_from_slice(b"\r\n");
            r
        };
        let cases: Vec<(&[u8], u16)> = vec![
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -2\r\n\r\nab", 400),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n", 400),
            (b"GET / HTTP/1.1\nHost: a\n\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX\x7f: a\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            // Chunked not last: the length is unknown, 400 (RFC 9112 §6.3).
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            (b"GET / HTTP/1.1x\r\nHost: a\r\n\r\n", 400),
            (b"GET / JUNK/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"hello\r\n\r\n", 400),
            (&big_head, 431),
            (&many_headers, 431),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999\r\n\r\n", 413),
            // Smuggling: CL.TE, TE.CL, TE.TE with an obfuscated coding.
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n", 400),
        ];
        for (req, status) in cases {
            let shown = String::from_utf8_lossy(&req[..req.len().min(120)]).into_owned();
            let mut s = connect(addr);
            // The server may answer and close before all of a large request
            // is written; that is fine.
            let _ = s.write_all(req);
            let out = read_to_eof(&mut s);
            let text = String::from_utf8_lossy(&out);
            assert!(
                text.starts_with(&format!("HTTP/1.1 {status} ")),
                "{kind:?} {shown:?}: {text:?}"
            );
            assert!(
                text.contains("Connection: close\r\n"),
                "{shown:?}: {text:?}"
            );
            // One answer only.
            assert_eq!(text.matches("HTTP/1.").count(), 1, "{shown:?}: {text:?}");
        }
        stop(engine);
    });
}

#[test]
fn keep_alive_and_pipelining() {
    both(|kind| {
        let (engine, addr) = start(kind, Config::default());
        let mut s = connect(addr);
        let mut buf = Vec::new();
        // Three pipelined requests in one write, with bodies of each framing.
        s.write_all(
            b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nfirst\
GET /2 HTTP/1.1\r\nHost: a\r\n\r\n\
POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nthi\r\n2\r\nrd\r\n0\r\n\r\n",
        )
        .unwrap();
        let r1 = read_response(&mut s, &mut buf, false);
        let r2 = read_response(&mut s, &mut buf, false);
        let r3 = read_response(&mut s, &mut buf, false);
        assert_eq!((r1.status(), r2.status(), r3.status()), (200, 200, 200));
        assert_eq!(r1.body, b"first");
        assert_eq!(r2.body, b"");
        assert_eq!(r3.body, b"third");
        assert_eq!(r1.header("content-type"), Some("application/octet-stream"));
        assert!(r1
            .header("date")
            .is_some_and(|d| d.ends_with(" GMT") && d.len() == 29));
        assert!(r1.header("connection").is_none());
        // The same connection goes on serving.
        for i in 0..20 {
            let body = format!("request {i}");
            write!(
                s,
                "PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            let r = read_response(&mut s, &mut buf, false);
            assert_eq!(r.body, body.as_bytes());
        }
        // Many pipelined requests in one go, answered in order.
        let mut all = Vec::new();
        for i in 0..200 {
            let body = format!("#{i}");
            all.extend_from_slice(
                format!(
                    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
        s.write_all(&all).unwrap();
        for i in 0..200 {
            let r = read_response(&mut s, &mut buf, false);
            assert_eq!(r.body, format!("#{i}").as_bytes());
        }
        // `Connection: close` ends it after the answer.
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
        let r = read_response(&mut s, &mut buf, false);
        assert_eq!(r.header("connection"), Some("close"));
        assert!(buf.is_empty());
        assert!(read_to_eof(&mut s).is_empty());
        stop(engine);
    });
}

#[test]
fn chunked_upload_in_pieces_is_echoed() {
    both(|kind| {
        let (engine, addr) = start(kind, Config::default());
        let mut s = connect(addr);
        let mut buf = Vec::new();
        s.write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        let mut expect = Vec::new();
        for i in 0..10u8 {
            let chunk = vec![b'a' + i; 100 * (i as usize + 1)];
            expect.extend_from_slice(&chunk);
            // Cut inside the size line and the data.
            let framed = [format!("{:X}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            let (a, b) = framed.split_at(framed.len() / 2);
            s.write_all(&a[..1]).unwrap();
            std::thread::sleep(Duration::from_millis(2));
            s.write_all(&a[1..]).unwrap();
            std::thread::sleep(Duration::from_millis(2));
            s.write_all(b).unwrap();
        }
        s.write_all(b"0\r\nX-Sum: 1\r\n\r\n").unwrap();
        let r = read_response(&mut s, &mut buf, false);
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.header("content-length"),
            Some(expect.len().to_string().as_str())
        );
        assert_eq!(r.body, expect);

        // A 1 MiB Content-Length body arrives in many reads.
        let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            big.len()
        )
        .unwrap();
        s.write_all(&big).unwrap();
        let r = read_response(&mut s, &mut buf, false);
        assert_eq!(r.body.len(), big.len());
        assert!(r.body == big);
        stop(engine);
    });
}

#[test]
fn expect_100_continue() {
    both(|kind| {
        let (engine, addr) = start(kind, Config::default());
        let mut s = connect(addr);
        let mut buf = Vec::new();
        s.write_all(
            b"PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 7\r\n\r\n",
        )
        .unwrap();
        let r = read_response(&mut s, &mut buf, false);
        assert_eq!(r.status_line, "HTTP/1.1 100 Continue");
        s.write_all(b"payload").unwrap();
        let r = read_response(&mut s, &mut buf, false);
        assert_eq!(r.status(), 200);
        assert_eq!(r.body, b"payload");
        // Too large: a final 413 instead of 100, and a close.
        s.write_all(b"PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 999999999\r\n\r\n")
            .unwrap();
        let r = read_response(&mut s, &mut buf, false);
        assert_eq!(r.status(), 413);
        assert!(read_to_eof(&mut s).is_empty());
        stop(engine);
    });
}

#[test]
fn head_has_no_body() {
    both(|kind| {
        let (engine, addr) = start(kind, Config::default());
        let mut s = connect(addr);
        let mut buf = Vec::new();
        s.write_all(b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
        let r = read_response(&mut s, &mut buf, true);
        assert_eq!(r.status(), 200);
        assert_eq!(r.header("content-length"), Some("0"));
        // The next bytes are the next response: nothing came between.
        let r = read_response(&mut s, &mut buf, false);
        assert_eq!(r.status(), 200);
        assert!(buf.is_empty());
        assert!(read_to_eof(&mut s).is_empty());
        stop(engine);
    });
}

#[test]
fn http10_gets_a_10_answer_and_close() {
    both(|kind| {
        let (engine, addr) = start(kind, Config::default());
        let mut s = connect(addr);
        s.write_all(b"POST /old HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc")
            .unwrap();
        let out = read_to_eof(&mut s);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text:?}");
        assert!(text.contains("Content-Length: 3\r\n"), "{text:?}");
        assert!(!text.to_ascii_lowercase().contains("chunked"));
        assert!(text.ends_with("\r\n\r\nabc"), "{text:?}");

        // With keep-alive it stays open and says so.
        let mut s = connect(addr);
        let mut buf = Vec::new();
        s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let r = read_response(&mut s, &mut buf, false);
        assert_eq!(r.status_line, "HTTP/1.0 200 OK");
        assert_eq!(r.header("connection"), Some("keep-alive"));
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let r = read_response(&mut s, &mut buf, false);
        assert_eq!(r.status_line, "HTTP/1.0 200 OK");
        assert!(read_to_eof(&mut s).is_empty());
        stop(engine);
    });
}

#[test]
fn slow_head_and_body_get_408() {
    both(|kind| {
        let mut cfg = Config::default();
        cfg.header_timeout = Some(Duration::from_millis(300));
        cfg.min_body_rate = Some(MinRate::new(1000, Duration::from_millis(300)));
        let (engine, addr) = start(kind, cfg);

        // Slowloris: a head that never ends.
        let mut s = connect(addr);
        let t = Instant::now();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(50));
            let _ = s.write_all(b"X: y\r\n");
        }
        got.extend(read_to_eof(&mut s));
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{text:?}"
        );
        assert!(text.contains("Connection: close\r\n"));
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_secs(3),
            "{took:?}"
        );

        // A body that stalls.
        let mut s = connect(addr);
        s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nabc")
            .unwrap();
        let text = String::from_utf8_lossy(&read_to_eof(&mut s)).into_owned();
        assert!(text.starts_with("HTTP/1.1 408 "), "{text:?}");
        stop(engine);
    });
}

#[test]
fn idle_keep_alive_connection_is_closed() {
    let mut cfg = Config::default();
    cfg.keep_alive_timeout = Some(Duration::from_millis(200));
    let (engine, addr) = start(BackendKind::Auto, cfg);
    let mut s = connect(addr);
    let mut buf = Vec::new();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    read_response(&mut s, &mut buf, false);
    let t = Instant::now();
    assert!(read_to_eof(&mut s).is_empty());
    assert!(t.elapsed() < Duration::from_secs(3));
    stop(engine);
}

/// With curl, if installed: a GET, a POST, a chunked upload with
/// 100-continue, HTTP/1.0 and HEAD. Skipped (with a note) without curl.
#[test]
fn curl_if_installed() {
    let have = std::process::Command::new("which")
        .arg("curl")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("curl_if_installed: SKIPPED, curl is not installed");
        return;
    }
    let (engine, addr) = start(BackendKind::Auto, Config::default());
    let url = format!("http://{addr}/path?q=1");
    let curl = |args: &[&str]| -> String {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "5", "-i"])
            .args(args)
            .arg(&url)
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let r = curl(&[]);
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    let r = curl(&["--data-binary", "hello curl"]);
    assert!(r.ends_with("\r\n\r\nhello curl"), "{r}");
    let r = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        "chunky",
    ]);
    assert!(r.contains("100 Continue"), "{r}");
    assert!(r.ends_with("Content-Length: 6\r\n\r\nchunky"), "{r}");
    let r = curl(&["--http1.0", "--data-binary", "old"]);
    assert!(r.starts_with("HTTP/1.0 200 OK\r\n"), "{r}");
    assert!(r.ends_with("\r\n\r\nold"), "{r}");
    let r = curl(&["-I"]);
    assert!(r.contains("Content-Length: 0\r\n"), "{r}");
    stop(engine);
}

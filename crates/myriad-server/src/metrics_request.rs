//! The metrics listener's HTTP side, sans-I/O parts: its codec limits
//! ([`config`]), its routes ([`router`]), and [`parse_request`], the
//! pure request step (the codec fed the bytes received so far, then the
//! router) that the `metrics_request` fuzz target drives with arbitrary
//! bytes. The binary serves the same router with the same limits
//! (`metrics.rs`).

use myriad_http::{Config, Event, HttpDate, Now, Req, Responder, RouteError, Router, ServerConn};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// A request head still incomplete past this many bytes is refused (431).
pub const MAX_REQUEST: usize = 8192;

/// How long a request head may take to arrive, whatever it trickles
/// (slowloris): then 408.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// The codec limits of the metrics listener: small heads, no bodies (a
/// scrape is a `GET`), the head deadline above, keep-alive for scrapers
/// that reuse their connection.
pub fn config() -> Config {
    let mut c = Config::default();
    c.max_head = MAX_REQUEST;
    c.max_headers = 32;
    c.max_body = 0;
    c.header_timeout = Some(REQUEST_DEADLINE);
    c.keep_alive_timeout = Some(Duration::from_secs(10));
    c
}

/// Health answers are never cached.
const NO_STORE: (&str, &[u8]) = ("Cache-Control", b"no-store");
/// `Content-Type` of the health answers.
const TEXT: (&str, &[u8]) = ("Content-Type", b"text/plain; charset=utf-8");

/// The live dashboard: one self-contained page (no network needed to open
/// it) that reads `/metrics` every 2 s and charts the last 10 minutes.
pub const DASHBOARD: &str = include_str!("../assets/dashboard.html");

/// The routes of the metrics listener: `GET /` (the dashboard),
/// `GET /metrics` answered by `metrics`, `GET /healthz` (200 while the
/// process answers) and `GET /readyz` (200 when `ready()`, else 503).
/// Anything else is 404 (405 for another method on these paths).
///
/// # Errors
///
/// Never in practice (the patterns are fixed).
pub fn router<M, R>(metrics: M, ready: R) -> Result<Router, RouteError>
where
    M: Fn(&Req<'_>, &mut Responder<'_, '_>) + Send + Sync + 'static,
    R: Fn() -> bool + Send + Sync + 'static,
{
    Router::new()
        .get("/", |_, res| {
            let html = ("Content-Type", &b"text/html; charset=utf-8"[..]);
            let _ = res.send(200, &[html, NO_STORE], DASHBOARD.as_bytes());
        })?
        .get("/metrics", metrics)?
        .get("/healthz", |_, res| {
            let _ = res.send(200, &[TEXT, NO_STORE], b"ok\n");
        })?
        .get("/readyz", move |_, res| {
            let _ = if ready() {
                res.send(200, &[TEXT, NO_STORE], b"ready\n")
            } else {
                res.send(503, &[TEXT, NO_STORE], b"not ready\n")
            };
        })
}

/// What the bytes received so far call for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The head is incomplete: wait for more bytes.
    Partial,
    /// A route of [`router`], by its pattern (`/`, `/metrics`,
    /// `/healthz`, `/readyz`).
    Route(&'static str),
    /// A path with routes, but not for this method: 405.
    MethodNotAllowed,
    /// Any other path: 404.
    NotFound,
    /// Refused by the codec with this status (400, 408, 413, 431, 501,
    /// 505, ...), then closed.
    Refused(u16),
}

/// The request step of the metrics listener on `data` (a request from
/// its first byte): the codec with [`config`], then [`router`].
pub fn parse_request(data: &[u8]) -> Request {
    static ROUTER: OnceLock<Option<Router>> = OnceLock::new();
    let Some(router) = ROUTER.get_or_init(|| router(|_, _| {}, || true).ok()) else {
        return Request::Refused(500);
    };
    let t = Instant::now();
    let now = Now::new(t, HttpDate::new().refresh(t, SystemTime::now));
    let mut conn = ServerConn::new(config(), t);
    let mut out = Vec::new();
    let mut input = data.to_vec();
    match conn.feed(&mut input, now, &mut out) {
        Err(e) => Request::Refused(e.status()),
        Ok((_, Event::Head(req))) => {
            let (path, _) = myriad_http::split_target(req.target());
            match router.find(req.method(), path) {
                Some((route, _, _)) => match route.pattern() {
                    "/" => Request::Route("/"),
                    "/metrics" => Request::Route("/metrics"),
                    "/healthz" => Request::Route("/healthz"),
                    "/readyz" => Request::Route("/readyz"),
                    _ => Request::NotFound,
                },
                None if router.allow(path).is_some_and(|a| !a.is_empty()) => {
                    Request::MethodNotAllowed
                }
                None => Request::NotFound,
            }
        }
        Ok(_) => Request::Partial,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let get = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n");
        let route = |p: &str| parse_request(get(p).as_bytes());
        assert_eq!(route("/metrics"), Request::Route("/metrics"));
        assert_eq!(route("/metrics?x=1"), Request::Route("/metrics"));
        assert_eq!(route("/healthz"), Request::Route("/healthz"));
        assert_eq!(route("/readyz"), Request::Route("/readyz"));
        assert_eq!(route("/metricsx"), Request::NotFound);
        assert_eq!(route("/"), Request::Route("/"));
        assert_eq!(route("/dashboard"), Request::NotFound);
        assert_eq!(
            parse_request(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Route("/metrics")
        );
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::MethodNotAllowed
        );
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\n"),
            Request::Partial
        );
        assert_eq!(parse_request(b""), Request::Partial);
        assert_eq!(
            parse_request(b"\x16\x03\x01\x02\x00\r\n\r\n"),
            Request::Refused(400)
        );
        // No Host on HTTP/1.1, a body, bare LF: refused.
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\n\r\n"),
            Request::Refused(400)
        );
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"),
            Request::Refused(413)
        );
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\nHost: x\n\n"),
            Request::Refused(400)
        );
        let mut many = b"GET /metrics HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..33 {
            many.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_request(&many), Request::Refused(431));
    }

    #[test]
    fn an_incomplete_head_is_refused_past_the_limit() {
        let mut head = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        head.resize(MAX_REQUEST - 16, b'a');
        assert_eq!(parse_request(&head), Request::Partial);
        head.resize(MAX_REQUEST + 1, b'a');
        assert_eq!(parse_request(&head), Request::Refused(431));
    }

    /// Blank lines before a request are bounded too (the fuzz target's
    /// bound on `Partial`).
    #[test]
    fn leading_blank_lines_are_bounded() {
        let blank = b"\r\n".repeat(MAX_REQUEST);
        let r = parse_request(&blank);
        assert!(r != Request::Partial, "{r:?}");
    }

    /// What the fuzz target checks, on a few inputs: every prefix of a
    /// request waits or gets the same answer (or both are refused).
    #[test]
    fn cuts_do_not_change_the_answer() {
        for whole in [
            &b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET /readyz HTTP/1.0\r\n\r\n",
            b"PUT /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            b"\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            let r = parse_request(whole);
            for cut in 0..whole.len() {
                let p = parse_request(&whole[..cut]);
                let ok = p == Request::Partial
                    || p == r
                    || matches!((p, r), (Request::Refused(_), Request::Refused(_)));
                assert!(ok, "{cut}: {p:?} vs {r:?}");
            }
        }
    }
}

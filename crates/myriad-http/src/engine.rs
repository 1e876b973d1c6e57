//! The codec on the Myriad engine: the engine context as a [`Sink`], the
//! per-loop `Date` cache, deadline timers, and
//! [`Echo`], a handler that answers every request with its own body.

use crate::conn::{Config, Event, Response, ServerConn};
use crate::date::{HttpDate, Now};
use crate::sink::Sink;
use myriad::{Ctx, Handler, Service};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

impl Sink for Ctx<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        Ctx::write(self, bytes);
    }

    #[inline]
    fn write_vectored(&mut self, parts: &[&[u8]]) {
        Ctx::write_vectored(self, parts);
    }

    /// A response head and its body are written straight into the outbound
    /// chunk (one copy, one queue update, and one encode over TLS); a write
    /// larger than a chunk goes through the loop's reused buffer
    /// (`Ctx::write_with` decides).
    #[inline]
    fn write_exact(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) {
        self.write_with(len, |buf| {
            fill(&mut buf[..len]);
            len
        });
    }
}

thread_local! {
    /// One `Date` cache per thread, that is per engine loop: formatted at
    /// most once a second however many connections answer.
    static DATE: Cell<HttpDate> = const { Cell::new(HttpDate::new()) };
}

/// The current moment for the codec: one monotonic clock read, and the
/// loop's cached `Date` (the wall clock is read only when its second has
/// passed).
///
/// # Examples
///
/// ```
/// let now = myriad_http::engine::now();
/// assert_eq!(now.date().len(), 29);
/// ```
pub fn now() -> Now {
    now_at(Instant::now())
}

/// The current moment by the loop's clock ([`Ctx::now`], read once per
/// loop turn): what the handlers use, saving a clock read per request, and
/// the clock the engine's timers count on, so a deadline and its timer
/// agree.
pub(crate) fn loop_now(cx: &Ctx<'_>) -> Now {
    now_at(cx.now())
}

fn now_at(instant: Instant) -> Now {
    let date = DATE.with(|c| {
        let mut d = c.get();
        let text = d.refresh(instant, SystemTime::now);
        c.set(d);
        text
    });
    Now::new(instant, date)
}

/// Timer token of the codec deadline. Distinctive rather than small: after
/// a WebSocket upgrade the connection's timers belong to the new handler,
/// and a deadline timer armed before the upgrade must be told apart from
/// the new handler's own tokens (see `service::HttpConn`).
pub(crate) const TOKEN_DEADLINE: u64 = 0x6874_7470_dead_0001;

/// The engine side of one codec connection: deadline timers and the close.
/// Engine timers cannot be cancelled, so a timer is armed only when the
/// codec's deadline is earlier than the one already armed; one that fires
/// early (the deadline moved) is re-armed.
#[derive(Debug)]
pub(crate) struct Glue {
    pub(crate) armed: Option<Instant>,
    pub(crate) closing: bool,
}

impl Glue {
    pub(crate) fn new() -> Self {
        Glue {
            armed: None,
            closing: false,
        }
    }

    pub(crate) fn arm(&mut self, conn: &ServerConn, cx: &mut Ctx<'_>, now: Now) {
        let Some(d) = conn.deadline() else { return };
        if self.armed.is_some_and(|a| a <= d) {
            return;
        }
        // Rounded up: the engine's timers have millisecond resolution and a
        // timer that fires before the deadline costs a re-arm.
        let after = d.saturating_duration_since(now.instant()) + Duration::from_millis(1);
        cx.set_timer(after, TOKEN_DEADLINE);
        self.armed = Some(d);
    }

    /// After the last answer. The engine's graceful close sends what is
    /// queued, shuts down the sending side and keeps reading (dropping
    /// input) until the peer's FIN or the service's linger time: closing
    /// with unread input would make the kernel send a reset, which can
    /// destroy the answer before the client reads it (RFC 9112 §9.6).
    pub(crate) fn close(&mut self, cx: &mut Ctx<'_>) {
        self.closing = true;
        cx.close();
    }

    pub(crate) fn on_timer(&mut self, conn: &mut ServerConn, cx: &mut Ctx<'_>, token: u64) {
        if token != TOKEN_DEADLINE || self.closing {
            return;
        }
        self.armed = None;
        let now = loop_now(cx);
        match conn.handle_timeout(now, cx) {
            Some(_) => self.close(cx),
            None => self.arm(conn, cx, now),
        }
    }
}

/// A handler that answers every request (any method, any target) with
/// `200 OK` and the request body as its body, with `Content-Length` and
/// `Content-Type: application/octet-stream`. HEAD gets the head only;
/// HTTP/1.0 clients get HTTP/1.0 answers. Every strictness rule and limit
/// of [`ServerConn`] applies, and slow heads and bodies get 408 through
/// engine timers.
///
/// A body that arrives in one piece with its head (the common case) is
/// written back straight from the receive buffer; a body in several pieces
/// or chunked is collected first (up to [`Config::max_body`]).
///
/// # Examples
///
/// ```no_run
/// use myriad::Engine;
/// use myriad_http::{engine::Echo, Config};
/// let engine = Engine::builder()
///     .service(Echo::service("127.0.0.1:8080".parse().unwrap(), Config::default()))
///     .start()?;
/// engine.wait()?;
/// # Ok::<(), myriad::Error>(())
/// ```
#[derive(Debug)]
pub struct Echo {
    conn: ServerConn,
    glue: Glue,
    body: Vec<u8>,
    answered: bool,
}

impl Echo {
    /// A handler for one connection opened now.
    pub fn new(cfg: Config) -> Self {
        Echo {
            conn: ServerConn::new(cfg, Instant::now()),
            glue: Glue::new(),
            body: Vec::new(),
            answered: false,
        }
    }

    /// An engine service named `http-echo` on `addr`.
    pub fn service(addr: SocketAddr, cfg: Config) -> Service {
        Service::new("http-echo", addr, move || Echo::new(cfg))
    }

    fn answer(conn: &mut ServerConn, body: &[u8], now: Now, cx: &mut Ctx<'_>) {
        let res = Response::new(200).with_headers(&[("Content-Type", b"application/octet-stream")]);
        // Cannot fail: a request is waiting and the head is valid.
        let _ = conn.respond_full(&res, body, now, cx);
    }
}

impl Handler for Echo {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        self.glue.arm(&self.conn, cx, loop_now(cx));
    }

    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        if self.glue.closing {
            return data.len();
        }
        let now = loop_now(cx);
        let mut at = 0;
        loop {
            match self.conn.feed(&mut data[at..], now, cx) {
                Ok((n, ev)) => {
                    at += n;
                    match ev {
                        Event::Head(_) => {
                            self.answered = false;
                        }
                        Event::Body(chunk) => {
                            if self.body.is_empty() && self.conn.body_complete() {
                                // The whole body in one slice of the receive
                                // buffer: answer from there, no copy.
                                Self::answer(&mut self.conn, chunk, now, cx);
                                self.answered = true;
                            } else {
                                self.body.extend_from_slice(chunk);
                            }
                        }
                        Event::End => {
                            if !self.answered {
                                Self::answer(&mut self.conn, &self.body, now, cx);
                            }
                            self.answered = false;
                            // An idle connection keeps no body buffer.
                            self.body = Vec::new();
                        }
                        Event::Closed => {
                            self.glue.close(cx);
                            return data.len();
                        }
                        _ => break,
                    }
                }
                Err(_) => {
                    self.glue.close(cx);
                    return data.len();
                }
            }
        }
        self.glue.arm(&self.conn, cx, now);
        at
    }

    fn on_timer(&mut self, cx: &mut Ctx<'_>, token: u64) {
        self.glue.on_timer(&mut self.conn, cx, token);
    }

    fn on_shutdown(&mut self, cx: &mut Ctx<'_>) {
        self.conn.close_after_response();
        if self.conn.is_closed() {
            cx.close();
        }
    }
}

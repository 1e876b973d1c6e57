//! The request → response API on the engine: [`HttpConn`] (the engine
//! handler of one HTTP connection, routing through a [`Router`]), the
//! request view [`Req`], the response side [`Responder`], streamed bodies
//! in ([`BodyHandler`]) and out ([`BodySource`]).

use crate::conn::{BodySize, Config, Event, Response, ServerConn};
use crate::date::Now;
use crate::engine::{loop_now, Glue, TOKEN_DEADLINE};
use crate::error::ResponseError;
use crate::path::split_target;
use crate::request::{BodyKind, HeadSpan, Headers, Request, Version};
use crate::router::{Kind, Lookup, Params, Router};
use myriad::{CloseReason, ConnId, Ctx, Handler, LoopHandle};
use std::cell::RefCell;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// How many bytes a streamed response keeps queued ahead of the socket:
/// a [`BodySource`] is asked for more only below it, and again when the
/// queue has drained. Bounds the memory of a big download per connection
/// (below the engine's default high-water mark of 1 MiB, so that it does
/// not pause reading either).
pub const STREAM_WINDOW: usize = 256 << 10;

/// Most [`BodySource::fill`] calls per wake-up: a source that writes little
/// per call cannot hold the loop for long.
const MAX_FILLS: usize = 64;

/// A request as a handler sees it: the head (method, path, query,
/// headers), the route's parameters, and the body when the route buffers
/// it. Everything is borrowed: from the receive buffer when the request
/// arrived in one piece (no copy at all), else from the connection's own
/// buffer.
///
/// # Examples
///
/// ```
/// use myriad_http::Router;
/// let r = Router::new().get("/items/:id", |req, res| {
///     let id = req.param("id").unwrap_or("");
///     let verbose = req.query().is_some_and(|q| q.contains("verbose"));
///     let agent = req.header("user-agent").unwrap_or(b"?");
///     let _ = res.text(200, &format!("{id} {verbose} {}", String::from_utf8_lossy(agent)));
/// });
/// assert!(r.is_ok());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Req<'a> {
    head: Request<'a>,
    path: &'a str,
    query: Option<&'a str>,
    params: Params<'a>,
    tail: &'a str,
    body: &'a [u8],
}

impl<'a> Req<'a> {
    /// The method (`GET`, `POST`, ...).
    pub fn method(&self) -> &'a str {
        self.head.method()
    }

    /// The path as sent (percent-encoded), without the query.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The query (after `?`), as sent.
    pub fn query(&self) -> Option<&'a str> {
        self.query
    }

    /// The request target as sent.
    pub fn target(&self) -> &'a str {
        self.head.target()
    }

    /// The HTTP version.
    pub fn version(&self) -> Version {
        self.head.version()
    }

    /// The value of the first header field `name` (ASCII
    /// case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.head.header(name)
    }

    /// The header fields in order.
    pub fn headers(&self) -> Headers<'a> {
        self.head.headers()
    }

    /// The value of the route's `:name` parameter (as sent).
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params.get(name)
    }

    /// All the route's parameters.
    pub fn params(&self) -> &Params<'a> {
        &self.params
    }

    /// What a prefix route (`/static/*`) matched below its prefix (as
    /// sent, no leading `/`); empty for other routes.
    pub fn tail(&self) -> &'a str {
        self.tail
    }

    /// The body: whole on buffered routes, empty on streaming routes (the
    /// [`BodyHandler`] gets it) and when there is none.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The codec's view of the head.
    pub fn request(&self) -> &Request<'a> {
        &self.head
    }
}

/// What a streamed response body ([`Responder::stream`]) writes through:
/// the body framing of the codec over the engine's write queue.
pub struct BodyWriter<'a, 'c> {
    conn: &'a mut ServerConn,
    cx: &'a mut Ctx<'c>,
    written: usize,
}

impl std::fmt::Debug for BodyWriter<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyWriter")
            .field("queued", &self.cx.queued())
            .field("written", &self.written)
            .finish()
    }
}

impl BodyWriter<'_, '_> {
    /// Appends body bytes.
    ///
    /// # Errors
    ///
    /// [`ResponseError::BodyTooLong`] past the announced length (nothing
    /// is written).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ResponseError> {
        self.conn.send_body(bytes, self.cx)?;
        self.written += bytes.len();
        Ok(())
    }

    /// Appends `len` bytes of `file` from `offset` without reading them:
    /// the engine sends them with `sendfile(2)`, from the page cache to the
    /// socket. Returns `Ok(false)`, with nothing written, where that is not
    /// possible (over TLS): read and [`BodyWriter::write`] the bytes then.
    ///
    /// # Errors
    ///
    /// [`ResponseError::BodyTooLong`] past the announced length (nothing
    /// is written).
    pub fn send_file(
        &mut self,
        file: &Arc<std::fs::File>,
        offset: u64,
        len: u64,
    ) -> Result<bool, ResponseError> {
        if !self.cx.can_send_file() {
            return Ok(false);
        }
        self.conn.send_body_by(len, self.cx, |cx| {
            // `false` only once the connection is closing: nothing to add.
            let _ = cx.send_file(file, offset, len);
        })?;
        self.written += len as usize;
        Ok(true)
    }

    /// How many more bytes the window takes before [`BodyWriter::is_full`].
    pub fn room(&self) -> usize {
        if self.cx.is_backpressured() {
            0
        } else {
            STREAM_WINDOW.saturating_sub(self.cx.queued())
        }
    }

    /// Whether to stop writing and return [`Fill::More`]: the queue holds
    /// a window's worth ([`STREAM_WINDOW`]). The source is called again
    /// when it has drained.
    pub fn is_full(&self) -> bool {
        self.room() == 0
    }
}

/// What [`BodySource::fill`] has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fill {
    /// More to come: call again when the queue has room.
    More,
    /// The body is complete: the response is finished.
    Done,
}

/// A response body produced piece by piece as the connection drains, so
/// that a big body never sits in memory whole (a file, a generated
/// report). Set with [`Responder::stream`] after the head.
///
/// `fill` runs on the event loop: write up to [`BodyWriter::room`] and
/// return; it is called again when the queue has drained. A `fill` that
/// writes nothing and returns [`Fill::More`] while the queue is empty
/// would never be woken, so the connection is then closed.
///
/// # Examples
///
/// ```
/// use myriad_http::{BodySource, BodyWriter, Fill};
/// /// `n` lines of text.
/// struct Lines { left: u32 }
/// impl BodySource for Lines {
///     fn fill(&mut self, out: &mut BodyWriter<'_, '_>) -> std::io::Result<Fill> {
///         while self.left > 0 && !out.is_full() {
///             out.write(b"line\n").map_err(std::io::Error::other)?;
///             self.left -= 1;
///         }
///         Ok(if self.left == 0 { Fill::Done } else { Fill::More })
///     }
/// }
/// ```
pub trait BodySource: 'static {
    /// Writes the next part of the body.
    ///
    /// # Errors
    ///
    /// An I/O error cuts the response: the connection closes after what
    /// was queued (the client sees a body shorter than announced, or an
    /// unterminated chunked body).
    fn fill(&mut self, out: &mut BodyWriter<'_, '_>) -> io::Result<Fill>;
}

/// Receives the body of a request on a streaming route
/// ([`crate::Router::streaming`]) as it arrives, decoded (chunk framing
/// removed), without buffering it whole.
///
/// # Examples
///
/// ```
/// use myriad_http::{BodyHandler, Responder};
/// /// Counts the body's bytes and answers with the count.
/// struct Count(u64);
/// impl BodyHandler for Count {
///     fn on_chunk(&mut self, chunk: &[u8], _res: &mut Responder<'_, '_>) {
///         self.0 += chunk.len() as u64;
///     }
///     fn on_end(&mut self, res: &mut Responder<'_, '_>) {
///         let _ = res.text(200, &format!("{}\n", self.0));
///     }
/// }
/// ```
pub trait BodyHandler: 'static {
    /// A piece of the body.
    fn on_chunk(&mut self, chunk: &[u8], res: &mut Responder<'_, '_>);

    /// The body is complete. Answer here unless done before; a request
    /// left without an answer gets 500.
    fn on_end(&mut self, res: &mut Responder<'_, '_>);
}

/// The response side of one request: a whole response
/// ([`Responder::send`]), or a head ([`Responder::start`]) followed by
/// body writes and [`Responder::finish`], or a head followed by a
/// [`BodySource`] that the connection pulls from as the socket drains
/// ([`Responder::stream`]).
///
/// The codec adds `Date`, `Content-Length` or chunked framing, and
/// `Connection`; it drops the body of an answer to `HEAD`. A handler that
/// returns without answering gets a 500 sent for it.
pub struct Responder<'a, 'c> {
    conn: &'a mut ServerConn,
    cx: &'a mut Ctx<'c>,
    now: Now,
    is_head: bool,
    source: &'a mut Option<Box<dyn BodySource>>,
    deferred: &'a mut bool,
}

impl std::fmt::Debug for Responder<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("conn", &self.conn)
            .field("is_head", &self.is_head)
            .field("streaming", &self.source.is_some())
            .field("deferred", &*self.deferred)
            .finish()
    }
}

impl<'c> Responder<'_, 'c> {
    /// Answers with `status`, `headers` and `body` (`Content-Length`), in
    /// one vectored write with the head.
    ///
    /// # Errors
    ///
    /// [`ResponseError`] when a response was already begun or a header is
    /// invalid (nothing is written).
    pub fn send(
        &mut self,
        status: u16,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> Result<(), ResponseError> {
        let res = Response::new(status).with_headers(headers);
        self.conn.respond_full(&res, body, self.now, self.cx)
    }

    /// Answers with `status` and a `text/plain; charset=utf-8` body.
    ///
    /// # Errors
    ///
    /// As [`Responder::send`].
    pub fn text(&mut self, status: u16, body: &str) -> Result<(), ResponseError> {
        self.send(
            status,
            &[("Content-Type", b"text/plain; charset=utf-8")],
            body.as_bytes(),
        )
    }

    /// Answers with a full [`Response`] (status, headers, close) and body.
    ///
    /// # Errors
    ///
    /// As [`Responder::send`].
    pub fn respond(&mut self, res: &Response<'_>, body: &[u8]) -> Result<(), ResponseError> {
        self.conn.respond_full(res, body, self.now, self.cx)
    }

    /// Begins a response whose body follows: `size` is
    /// [`BodySize::Known`] (`Content-Length`) or [`BodySize::Streamed`]
    /// (chunked; close-delimited to HTTP/1.0 clients). Write the body with
    /// [`Responder::write`] and end it with [`Responder::finish`], or hand
    /// it to [`Responder::stream`].
    ///
    /// # Errors
    ///
    /// As [`Responder::send`].
    pub fn start(&mut self, res: &Response<'_>, size: BodySize) -> Result<(), ResponseError> {
        self.conn.respond(res, size, self.now, self.cx)
    }

    /// Body bytes of a response begun with [`Responder::start`]. Writes go
    /// to the engine's queue at once; mind [`Responder::is_backpressured`]
    /// for big bodies, or use [`Responder::stream`].
    ///
    /// # Errors
    ///
    /// [`ResponseError::NotStarted`], [`ResponseError::BodyTooLong`]
    /// (nothing is written).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ResponseError> {
        self.conn.send_body(bytes, self.cx)
    }

    /// Ends a response begun with [`Responder::start`].
    ///
    /// # Errors
    ///
    /// [`ResponseError::NotStarted`]; [`ResponseError::BodyTooShort`]
    /// when less than the announced length was written (the connection
    /// then closes).
    pub fn finish(&mut self) -> Result<(), ResponseError> {
        self.conn.finish(self.now, self.cx)
    }

    /// Hands the rest of the body of a response begun with
    /// [`Responder::start`] to `source`, which the connection calls as
    /// the socket drains ([`STREAM_WINDOW`] queued at most) until it says
    /// [`Fill::Done`]; the response is then finished. Pipelined requests
    /// wait meanwhile. To a `HEAD` request the response finishes at once
    /// and `source` is dropped.
    ///
    /// # Errors
    ///
    /// [`ResponseError::NotStarted`] without a response begun.
    pub fn stream(&mut self, source: impl BodySource) -> Result<(), ResponseError> {
        if !self.conn.is_responding() {
            return Err(ResponseError::NotStarted);
        }
        if self.is_head {
            return self.finish();
        }
        *self.source = Some(Box::new(source));
        Ok(())
    }

    /// Answers later, from any thread: the request stays open (pipelined
    /// requests behind it wait, reading is paused) until the returned
    /// [`Deferred`] is completed ([`Deferred::send`]) — typically from a
    /// `myriad::Pool` job, so that slow work stays off the event loop.
    /// A `Deferred` dropped without an answer answers 500. Answer only
    /// through the `Deferred` once this is called.
    ///
    /// # Errors
    ///
    /// [`ResponseError::AlreadyStarted`] when a response was begun (or
    /// already deferred).
    ///
    /// # Examples
    ///
    /// ```
    /// use myriad_http::Router;
    /// let r = Router::new().get("/slow", |_req, res| {
    ///     if let Ok(later) = res.defer() {
    ///         std::thread::spawn(move || {
    ///             let body = "computed elsewhere\n".to_string(); // a slow computation
    ///             later.send(200, &[("Content-Type", b"text/plain")], body.into_bytes());
    ///         });
    ///     }
    /// });
    /// assert!(r.is_ok());
    /// ```
    pub fn defer(&mut self) -> Result<Deferred, ResponseError> {
        if *self.deferred || !self.conn.awaits_response() {
            return Err(ResponseError::AlreadyStarted);
        }
        let id = self.cx.id();
        let home = self
            .cx
            .loop_cx()
            .loops()
            .get(id.loop_index())
            .cloned()
            .ok_or(ResponseError::AlreadyStarted)?;
        *self.deferred = true;
        Ok(Deferred {
            id,
            home: Some(home),
        })
    }

    /// Whether the request is `HEAD` (the body written is dropped: a
    /// handler may skip producing it).
    pub fn is_head(&self) -> bool {
        self.is_head
    }

    /// Whether the engine's queue for this connection is over its
    /// high-water mark.
    pub fn is_backpressured(&self) -> bool {
        self.cx.is_backpressured()
    }

    /// The engine context of the connection (peer address, timers,
    /// `spawn_blocking`, ...). Write to the connection only through the
    /// responder: bytes written around the codec would corrupt the
    /// response stream.
    pub fn ctx(&mut self) -> &mut Ctx<'c> {
        self.cx
    }
}

/// A response that comes later, from any thread ([`Responder::defer`]).
/// [`Deferred::send`] posts the answer to the connection's loop, where the
/// connection writes it as if the handler had answered then. Dropped
/// without an answer, it answers 500. If the connection closed meanwhile,
/// the answer is dropped.
pub struct Deferred {
    id: ConnId,
    /// `None` once answered.
    home: Option<LoopHandle>,
}

/// An answer on its way from another thread to its connection.
struct Answer {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

thread_local! {
    /// Answers of deferred responses that reached this loop, until their
    /// connection's zero-delay timer ([`TOKEN_DEFERRED`]) takes them. The
    /// engine hands another thread only a connection's `Ctx`, not its
    /// handler: the answer waits here and the timer brings the handler.
    static INBOX: RefCell<Vec<(ConnId, Answer)>> = const { RefCell::new(Vec::new()) };
}

/// Timer token that delivers a deferred answer (distinctive, like
/// `TOKEN_DEADLINE`).
const TOKEN_DEFERRED: u64 = 0x6874_7470_dead_0002;

fn take_answer(id: ConnId) -> Option<Answer> {
    INBOX.with(|b| {
        let mut b = b.borrow_mut();
        let i = b.iter().position(|(c, _)| *c == id)?;
        Some(b.swap_remove(i).1)
    })
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred")
            .field("id", &self.id)
            .field("answered", &self.home.is_none())
            .finish()
    }
}

impl Deferred {
    /// The connection this answer goes to.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Answers with `status`, `headers` and `body` (`Content-Length`; the
    /// codec adds `Date` and `Connection`, and drops the body for `HEAD`).
    /// Returns `false` when the connection's loop has exited. A header the
    /// codec refuses (invalid name or value) makes the answer a 500.
    pub fn send(
        mut self,
        status: u16,
        headers: &[(&str, &[u8])],
        body: impl Into<Vec<u8>>,
    ) -> bool {
        let answer = Answer {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_string(), v.to_vec()))
                .collect(),
            body: body.into(),
        };
        self.deliver(answer)
    }

    fn deliver(&mut self, answer: Answer) -> bool {
        let Some(home) = self.home.take() else {
            return false;
        };
        let id = self.id;
        home.post(move |lcx| {
            INBOX.with(|b| b.borrow_mut().push((id, answer)));
            // Closed meanwhile: nobody will take it.
            if !lcx.with_conn(id, |cx| cx.set_timer(Duration::ZERO, TOKEN_DEFERRED)) {
                let _ = take_answer(id);
            }
        })
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        if self.home.is_some() {
            let _ = self.deliver(Answer {
                status: 500,
                headers: vec![("Content-Type".into(), b"text/plain; charset=utf-8".to_vec())],
                body: b"Internal Server Error\n".to_vec(),
            });
        }
    }
}

/// Where the current request is, as far as the router is concerned.
enum Pending {
    /// No request, or its handler has been called (the rest of its body,
    /// if any, and its end are ignored).
    Idle,
    /// A buffered route waits for the body. `kept`: the head and the
    /// whole body are in the current receive buffer (`head_at` and
    /// `body_at` there); else they are copied into `head_buf` and `body`.
    Buffered {
        route: usize,
        span: HeadSpan,
        kept: Option<(usize, Option<(usize, usize)>)>,
    },
    /// A streaming route: the body goes to this handler.
    Streaming(Box<dyn BodyHandler>),
}

/// The HTTP side of a connection.
struct Http {
    router: Arc<Router>,
    conn: ServerConn,
    glue: Glue,
    pending: Pending,
    /// The head of a buffered request whose body comes in several reads.
    head_buf: Vec<u8>,
    /// Its body so far.
    body: Vec<u8>,
    /// The body of the response being streamed.
    source: Option<Box<dyn BodySource>>,
    /// The peer sent its FIN during a streamed or deferred response:
    /// close after it.
    eof: bool,
    /// The current request is answered later ([`Responder::defer`]).
    deferred: bool,
}

/// The engine handler of one HTTP/1.1 connection served by a [`Router`]:
/// the codec's strict parsing, keep-alive and pipelining, deadlines (408)
/// and limits (413, 431), routes, streamed bodies both ways with
/// back-pressure, and the hand-over to another handler on an upgrade
/// route. Build one per connection, or let [`Router::service`] do it.
///
/// # Examples
///
/// ```no_run
/// use myriad::{Engine, Service};
/// use myriad_http::{Config, HttpConn, Router};
/// use std::sync::Arc;
/// let router = Arc::new(Router::new().get("/", |_, res| { let _ = res.text(200, "hi\n"); })?);
/// let svc = Service::new("web", "127.0.0.1:8080".parse()?, move || {
///     HttpConn::new(router.clone(), Config::default())
/// });
/// let engine = Engine::builder().service(svc).start()?;
/// engine.wait()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct HttpConn {
    state: State,
}

enum State {
    Http(Box<Http>),
    /// After an upgrade: every event goes to this handler. `stale`: the
    /// codec's deadline timer may still fire once; it is swallowed.
    Upgraded {
        handler: Box<dyn Handler>,
        stale: bool,
    },
}

impl std::fmt::Debug for HttpConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Http(_) => "http",
            State::Upgraded { .. } => "upgraded",
        };
        f.debug_struct("HttpConn").field("state", &state).finish()
    }
}

/// What `Http::on_data` asks of the connection.
enum Flow {
    Consumed(usize),
    /// Hand the connection to this handler, with the input from `at` on.
    Upgrade(Box<dyn Handler>, usize),
}

/// What the head of a request led to (no borrow of the input left, so the
/// input can be touched again).
enum HeadAction {
    Next,
    /// Keep the head: the body follows in later reads.
    CopyHead,
    Upgrade(Box<dyn Handler>),
}

impl HttpConn {
    /// The handler of one connection opened now, routing with `router`
    /// under the limits of `cfg`.
    pub fn new(router: Arc<Router>, cfg: Config) -> Self {
        HttpConn {
            state: State::Http(Box::new(Http {
                router,
                conn: ServerConn::new(cfg, std::time::Instant::now()),
                glue: Glue::new(),
                pending: Pending::Idle,
                head_buf: Vec::new(),
                body: Vec::new(),
                source: None,
                eof: false,
                deferred: false,
            })),
        }
    }
}

impl Http {
    fn responder<'a, 'c>(
        conn: &'a mut ServerConn,
        cx: &'a mut Ctx<'c>,
        now: Now,
        is_head: bool,
        source: &'a mut Option<Box<dyn BodySource>>,
        deferred: &'a mut bool,
    ) -> Responder<'a, 'c> {
        Responder {
            conn,
            cx,
            now,
            is_head,
            source,
            deferred,
        }
    }

    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> Flow {
        if self.glue.closing {
            return Flow::Consumed(data.len());
        }
        if self.source.is_some() || self.deferred {
            // A response is streaming or deferred: pipelined input waits
            // (reading is paused until it is done).
            return Flow::Consumed(0);
        }
        let now = loop_now(cx);
        let base = data.as_ptr() as usize;
        let total = data.len();
        let mut at = 0;
        loop {
            // Between requests, stop while the output is over the
            // high-water mark: the engine keeps the rest and delivers it
            // again once drained, so pipelined requests cannot pile up
            // answers without bound.
            if self.conn.is_idle() && cx.is_backpressured() {
                break;
            }
            let start = at;
            let (n, ev) = match self.conn.feed(&mut data[at..], now, cx) {
                Ok(r) => r,
                Err(_) => {
                    // Answered (400, 413, ...) by the codec.
                    self.glue.close(cx);
                    return Flow::Consumed(data.len());
                }
            };
            at += n;
            match ev {
                Event::Head(req) => {
                    let rest = (total - at) as u64;
                    match self.on_head(req, base + start, start, rest, cx, now) {
                        HeadAction::Next => {}
                        HeadAction::CopyHead => {
                            self.head_buf.clear();
                            self.head_buf.extend_from_slice(&data[start..at]);
                        }
                        HeadAction::Upgrade(h) => {
                            return Flow::Upgrade(h, start);
                        }
                    }
                }
                Event::Body(chunk) => self.on_body(chunk, base, cx, now),
                Event::End => self.on_end(data, cx, now),
                Event::Closed => {
                    self.glue.close(cx);
                    return Flow::Consumed(data.len());
                }
                _ => break,
            }
            if self.glue.closing {
                return Flow::Consumed(data.len());
            }
            if self.deferred {
                // The rest (pipelined requests) stays with the engine and
                // comes again when reading resumes after the answer.
                return Flow::Consumed(at);
            }
            if self.source.is_some() {
                cx.pause_reading();
                self.pump(cx);
                if self.source.is_some() || self.glue.closing {
                    return Flow::Consumed(if self.glue.closing { data.len() } else { at });
                }
            }
        }
        self.glue.arm(&self.conn, cx, now);
        Flow::Consumed(at)
    }

    /// Routes a head. Requests without a body are answered right here,
    /// from the receive buffer.
    fn on_head(
        &mut self,
        req: Request<'_>,
        head_addr: usize,
        head_at: usize,
        rest: u64,
        cx: &mut Ctx<'_>,
        now: Now,
    ) -> HeadAction {
        let router = self.router.clone();
        let (path, query) = split_target(req.target());
        let is_head = req.method() == "HEAD";
        // `Upgrade` lists `websocket` (noted by the parser).
        let upgrade = req.upgrade_websocket;
        let mut res = Self::responder(
            &mut self.conn,
            cx,
            now,
            is_head,
            &mut self.source,
            &mut self.deferred,
        );
        let mut params = Params::default();
        let (route, tail) = match router.lookup(req.method(), path, upgrade, &mut params) {
            Lookup::Route(i, t) => (i, t),
            Lookup::NotFound => {
                let _ = res.text(404, "Not Found\n");
                return HeadAction::Next;
            }
            Lookup::UpgradeRequired => {
                let _ = res.send(
                    426,
                    &[
                        ("Content-Type", b"text/plain; charset=utf-8"),
                        ("Upgrade", b"websocket"),
                    ],
                    b"Upgrade Required\n",
                );
                return HeadAction::Next;
            }
            Lookup::MethodNotAllowed => {
                let allow = router.allow(path).unwrap_or_default();
                let _ = res.send(
                    405,
                    &[
                        ("Content-Type", b"text/plain; charset=utf-8"),
                        ("Allow", allow.as_bytes()),
                    ],
                    b"Method Not Allowed\n",
                );
                return HeadAction::Next;
            }
        };
        let view = Req {
            head: req,
            path,
            query,
            params,
            tail,
            body: &[],
        };
        match &router.routes()[route].kind {
            Kind::Upgrade(factory) => match factory(&view) {
                Some(h) => HeadAction::Upgrade(h),
                None => {
                    let _ = res.text(400, "Bad Request\n");
                    HeadAction::Next
                }
            },
            Kind::Streaming(start) => {
                let body = start(&view, &mut res);
                if req.body_kind() == BodyKind::None {
                    let mut body = body;
                    body.on_end(&mut res);
                    self.after_handler(cx, now);
                } else {
                    self.pending = Pending::Streaming(body);
                }
                HeadAction::Next
            }
            Kind::Buffered(handler) => match req.body_kind() {
                BodyKind::None => {
                    handler(&view, &mut res);
                    self.after_handler(cx, now);
                    HeadAction::Next
                }
                body => {
                    let span = req.span(head_addr);
                    // The whole body is already here: keep it where it is.
                    let whole = matches!(body, BodyKind::Length(n) if n <= rest);
                    self.pending = Pending::Buffered {
                        route,
                        span,
                        kept: whole.then_some((head_at, None)),
                    };
                    if whole {
                        HeadAction::Next
                    } else {
                        HeadAction::CopyHead
                    }
                }
            },
        }
    }

    fn on_body(&mut self, chunk: &[u8], base: usize, cx: &mut Ctx<'_>, now: Now) {
        match &mut self.pending {
            Pending::Buffered {
                kept: Some((_, body)),
                ..
            } => {
                *body = Some(((chunk.as_ptr() as usize).wrapping_sub(base), chunk.len()));
            }
            Pending::Buffered { kept: None, .. } => self.body.extend_from_slice(chunk),
            Pending::Streaming(h) => {
                let mut res = Self::responder(
                    &mut self.conn,
                    cx,
                    now,
                    false,
                    &mut self.source,
                    &mut self.deferred,
                );
                h.on_chunk(chunk, &mut res);
            }
            Pending::Idle => {}
        }
    }

    fn on_end(&mut self, data: &[u8], cx: &mut Ctx<'_>, now: Now) {
        match std::mem::replace(&mut self.pending, Pending::Idle) {
            Pending::Buffered { route, span, kept } => {
                let (head, body) = match kept {
                    Some((head_at, body)) => {
                        let body = body
                            .and_then(|(at, len)| data.get(at..at + len))
                            .unwrap_or(&[]);
                        (span.view(data.get(head_at..).unwrap_or(&[])), body)
                    }
                    None => (span.view(&self.head_buf), &self.body[..]),
                };
                let router = self.router.clone();
                let r = &router.routes()[route];
                let (path, query) = split_target(head.target());
                let mut params = Params::default();
                let tail = r.matches(path, &mut params).unwrap_or("");
                let view = Req {
                    head,
                    path,
                    query,
                    params,
                    tail,
                    body,
                };
                let is_head = head.method() == "HEAD";
                let mut res = Self::responder(
                    &mut self.conn,
                    cx,
                    now,
                    is_head,
                    &mut self.source,
                    &mut self.deferred,
                );
                if let Kind::Buffered(handler) = &r.kind {
                    handler(&view, &mut res);
                }
                // An idle connection keeps no buffers.
                self.head_buf = Vec::new();
                self.body = Vec::new();
                self.after_handler(cx, now);
            }
            Pending::Streaming(mut h) => {
                let mut res = Self::responder(
                    &mut self.conn,
                    cx,
                    now,
                    false,
                    &mut self.source,
                    &mut self.deferred,
                );
                h.on_end(&mut res);
                self.after_handler(cx, now);
            }
            Pending::Idle => {}
        }
    }

    /// After a handler's last call for a request: a request left without
    /// an answer gets 500; a body written without `finish` (and no
    /// source) is finished.
    fn after_handler(&mut self, cx: &mut Ctx<'_>, now: Now) {
        if self.deferred {
            cx.pause_reading();
            return;
        }
        if self.conn.awaits_response() {
            let res =
                Response::new(500).with_headers(&[("Content-Type", b"text/plain; charset=utf-8")]);
            let _ = self
                .conn
                .respond_full(&res, b"Internal Server Error\n", now, cx);
        } else if self.conn.is_responding() && self.source.is_none() {
            let _ = self.conn.finish(now, cx);
        }
        if self.conn.is_closed() && self.source.is_none() {
            self.glue.close(cx);
        }
    }

    /// A deferred answer arrived on this loop: write it and carry on as
    /// after any answer (close, or resume reading for the requests that
    /// waited behind it).
    fn answer_deferred(&mut self, cx: &mut Ctx<'_>) {
        let Some(a) = take_answer(cx.id()) else {
            return;
        };
        if !self.deferred || self.glue.closing {
            return;
        }
        self.deferred = false;
        let now = loop_now(cx);
        let headers: Vec<(&str, &[u8])> = a
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        let res = Response::new(a.status).with_headers(&headers);
        if self.conn.respond_full(&res, &a.body, now, cx).is_err() {
            // An invalid header: answered 500 by after_handler below.
        }
        self.after_handler(cx, now);
        if self.glue.closing {
            return;
        }
        if self.eof {
            self.glue.close(cx);
        } else {
            cx.resume_reading();
            self.glue.arm(&self.conn, cx, now);
        }
    }

    /// Asks the streamed body for more while the window has room. Ends the
    /// response when the source is done, resuming the reading paused for
    /// it (kept pipelined input is delivered again).
    fn pump(&mut self, cx: &mut Ctx<'_>) {
        for _ in 0..MAX_FILLS {
            let Some(src) = self.source.as_mut() else {
                return;
            };
            let mut w = BodyWriter {
                conn: &mut self.conn,
                cx,
                written: 0,
            };
            if w.is_full() {
                return;
            }
            let r = src.fill(&mut w);
            let progress = w.written > 0;
            match r {
                Ok(Fill::More) if progress => {}
                // Woken by on_drain when the queue is empty.
                Ok(Fill::More) if cx.queued() > 0 => return,
                Ok(Fill::Done) => {
                    self.source = None;
                    let now = loop_now(cx);
                    if self.conn.finish(now, cx).is_err() || self.conn.is_closed() || self.eof {
                        self.glue.close(cx);
                    } else {
                        cx.resume_reading();
                        self.glue.arm(&self.conn, cx, now);
                    }
                    return;
                }
                // No progress with an empty queue would never be woken;
                // an error cuts the body: either way the response cannot
                // be completed, and the client must see it cut.
                Ok(Fill::More) | Err(_) => {
                    self.source = None;
                    self.glue.close(cx);
                    return;
                }
            }
        }
    }
}

impl Handler for HttpConn {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        match &mut self.state {
            State::Http(h) => h.glue.arm(&h.conn, cx, loop_now(cx)),
            State::Upgraded { handler, .. } => handler.on_open(cx),
        }
    }

    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        let http = match &mut self.state {
            State::Http(h) => h,
            State::Upgraded { handler, .. } => return handler.on_data(cx, data),
        };
        match http.on_data(cx, data) {
            Flow::Consumed(n) => n,
            Flow::Upgrade(mut handler, at) => {
                let stale = http.glue.armed.is_some();
                handler.on_open(cx);
                let n = handler.on_data(cx, &mut data[at..]);
                self.state = State::Upgraded { handler, stale };
                at + n
            }
        }
    }

    fn on_drain(&mut self, cx: &mut Ctx<'_>) {
        match &mut self.state {
            State::Http(h) => {
                if h.source.is_some() && !h.glue.closing {
                    h.pump(cx);
                }
            }
            State::Upgraded { handler, .. } => handler.on_drain(cx),
        }
    }

    fn on_eof(&mut self, cx: &mut Ctx<'_>) {
        match &mut self.state {
            // A client may half-close after its request: finish a streamed
            // answer first (closing now would cut it).
            State::Http(h) if h.source.is_some() || h.deferred => h.eof = true,
            State::Http(h) => h.glue.close(cx),
            State::Upgraded { handler, .. } => handler.on_eof(cx),
        }
    }

    fn on_timer(&mut self, cx: &mut Ctx<'_>, token: u64) {
        match &mut self.state {
            State::Http(h) if token == TOKEN_DEFERRED => h.answer_deferred(cx),
            State::Http(h) => {
                let Http { conn, glue, .. } = &mut **h;
                glue.on_timer(conn, cx, token);
            }
            State::Upgraded { handler, stale } => {
                if *stale && token == TOKEN_DEADLINE {
                    *stale = false;
                    return;
                }
                handler.on_timer(cx, token);
            }
        }
    }

    fn on_shutdown(&mut self, cx: &mut Ctx<'_>) {
        match &mut self.state {
            State::Http(h) => {
                h.conn.close_after_response();
                if h.conn.is_closed() && h.source.is_none() {
                    h.glue.close(cx);
                }
            }
            State::Upgraded { handler, .. } => handler.on_shutdown(cx),
        }
    }

    fn on_close(&mut self, cx: &mut Ctx<'_>, reason: CloseReason) {
        match &mut self.state {
            // An answer may have arrived after its timer was set.
            State::Http(h) if h.deferred => drop(take_answer(cx.id())),
            State::Http(_) => {}
            State::Upgraded { handler, .. } => handler.on_close(cx, reason),
        }
    }
}

//! The router: route patterns, their handlers, and the matching done for
//! each request head (without allocating).

use crate::service::{BodyHandler, HttpConn, Req, Responder};
use crate::statics::{StaticDir, StaticError};
use crate::Config;
use myriad::{Handler, Service};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use thiserror::Error;

/// Most `:param` segments in one pattern: the values of a match live in a
/// fixed array on the stack, so that matching does not allocate.
pub const MAX_PARAMS: usize = 8;

/// A route that could not be added.
///
/// # Examples
///
/// ```
/// use myriad_http::{RouteError, Router};
/// let err = Router::new().get("no-slash", |_, res| { let _ = res.text(200, "x"); }).unwrap_err();
/// assert!(matches!(err, RouteError::BadPattern { .. }));
/// ```
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The pattern does not start with `/`, has a `*` elsewhere than as
    /// its whole last segment, or an empty `:` name.
    #[error("invalid route pattern {pattern:?}: {why}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// More than [`MAX_PARAMS`] parameters, or one name used twice.
    #[error("route pattern {0:?}: too many or repeated parameters")]
    Params(String),
    /// A method that is not a token (`GET`, `POST`, ...).
    #[error("invalid method {0:?}")]
    BadMethod(String),
    /// The static directory cannot be served.
    #[error(transparent)]
    Static(#[from] StaticError),
}

#[derive(Debug)]
enum Seg {
    Lit(Box<str>),
    Param(Box<str>),
}

/// A parsed route pattern: `/a/b` (exact), `/users/:id` (parameters),
/// `/static/*` (a prefix: the rest of the path is the route's tail).
#[derive(Debug)]
struct Pattern {
    segs: Vec<Seg>,
    tail: bool,
    params: usize,
}

impl Pattern {
    fn parse(p: &str) -> Result<Pattern, RouteError> {
        let bad = |why| RouteError::BadPattern {
            pattern: p.to_string(),
            why,
        };
        let Some(body) = p.strip_prefix('/') else {
            return Err(bad("must start with '/'"));
        };
        let (body, tail) = if body == "*" {
            ("", true)
        } else if let Some(b) = body.strip_suffix("/*") {
            (b, true)
        } else {
            (body, false)
        };
        if body.contains('*') {
            return Err(bad("'*' only as the whole last segment"));
        }
        let mut segs = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        // "/*" has no segment before its tail; "/" is one empty literal.
        if !(tail && body.is_empty()) {
            for s in body.split('/') {
                if let Some(name) = s.strip_prefix(':') {
                    if name.is_empty() {
                        return Err(bad("empty parameter name"));
                    }
                    if names.contains(&name) || names.len() == MAX_PARAMS {
                        return Err(RouteError::Params(p.to_string()));
                    }
                    names.push(name);
                    segs.push(Seg::Param(name.into()));
                } else {
                    segs.push(Seg::Lit(s.into()));
                }
            }
        }
        Ok(Pattern {
            segs,
            tail,
            params: names.len(),
        })
    }

    /// Matches `path` (as sent, percent-encoded), filling `params`.
    /// Returns the tail (empty for exact patterns). A parameter matches a
    /// whole non-empty segment.
    fn matches<'a>(&'a self, path: &'a str, params: &mut Params<'a>) -> Option<&'a str> {
        params.len = 0;
        let mut rest = path.strip_prefix('/')?;
        let mut ended = false;
        for seg in &self.segs {
            if ended {
                return None;
            }
            let (s, r) = match rest.find('/') {
                Some(j) => (&rest[..j], &rest[j + 1..]),
                None => {
                    ended = true;
                    (rest, "")
                }
            };
            match seg {
                Seg::Lit(l) if **l == *s => {}
                Seg::Param(name) if !s.is_empty() => {
                    params.names[params.len] = name;
                    params.values[params.len] = s;
                    params.len += 1;
                }
                _ => return None,
            }
            rest = r;
        }
        if self.tail {
            Some(rest)
        } else if ended || (self.segs.is_empty() && rest.is_empty()) {
            Some("")
        } else {
            None
        }
    }

    /// Order of precedence: exact patterns first, then those with
    /// parameters (fewer first), then prefixes (longer first).
    fn rank(&self) -> (bool, usize, usize) {
        if self.tail {
            (true, usize::MAX - self.segs.len(), self.params)
        } else {
            (false, self.params, 0)
        }
    }
}

/// The values of a route's `:param` segments, as sent (percent-encoded;
/// [`crate::percent_decode`] them when needed). Lives on the stack.
///
/// # Examples
///
/// ```
/// use myriad_http::Router;
/// let r = Router::new().get("/u/:id/p/:post", |_, _| {}).unwrap();
/// let (route, params, _) = r.find("GET", "/u/7/p/x%20y").unwrap();
/// assert_eq!(params.get("id"), Some("7"));
/// assert_eq!(params.get("post"), Some("x%20y"));
/// assert_eq!(params.iter().count(), 2);
/// # let _ = route;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    names: [&'a str; MAX_PARAMS],
    values: [&'a str; MAX_PARAMS],
    len: usize,
}

impl Default for Params<'_> {
    fn default() -> Self {
        Params {
            names: [""; MAX_PARAMS],
            values: [""; MAX_PARAMS],
            len: 0,
        }
    }
}

impl<'a> Params<'a> {
    /// The value of parameter `name` (without its `:`).
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// `(name, value)` in pattern order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        (0..self.len).map(|i| (self.names[i], self.values[i]))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A request handler: request in, response out. Called on the
/// connection's event loop: it must not block (hand blocking work to
/// `myriad::Ctx::spawn_blocking`, reachable through
/// [`Responder::ctx`], and answer from there).
pub(crate) type Endpoint = dyn Fn(&Req<'_>, &mut Responder<'_, '_>) + Send + Sync;
/// Called with the head of a request whose body is streamed; returns what
/// receives the body.
pub(crate) type StreamEndpoint =
    dyn Fn(&Req<'_>, &mut Responder<'_, '_>) -> Box<dyn BodyHandler> + Send + Sync;
/// Called with an upgrade request's head; returns the handler that takes
/// the connection over, or `None` to refuse (400).
pub(crate) type UpgradeFactory = dyn Fn(&Req<'_>) -> Option<Box<dyn Handler>> + Send + Sync;

pub(crate) enum Kind {
    /// The handler is called once, with the whole body.
    Buffered(Arc<Endpoint>),
    /// The body goes to a [`BodyHandler`] as it arrives.
    Streaming(Arc<StreamEndpoint>),
    /// `Upgrade: websocket` requests: the connection goes to another
    /// handler, which is shown the request from its first byte.
    Upgrade(Arc<UpgradeFactory>),
}

/// One route: a method (or any), a pattern, what answers.
pub struct Route {
    method: Option<Box<str>>,
    pattern: Pattern,
    text: Box<str>,
    pub(crate) kind: Kind,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Buffered(_) => "buffered",
            Kind::Streaming(_) => "streaming",
            Kind::Upgrade(_) => "upgrade",
        };
        f.debug_struct("Route")
            .field("method", &self.method)
            .field("pattern", &self.text)
            .field("kind", &kind)
            .finish()
    }
}

impl Route {
    /// The pattern as given.
    pub fn pattern(&self) -> &str {
        &self.text
    }

    /// The method, or `None` for any.
    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }

    /// Matches this route's pattern alone against `path`.
    pub(crate) fn matches<'a>(&'a self, path: &'a str, params: &mut Params<'a>) -> Option<&'a str> {
        self.pattern.matches(path, params)
    }
}

/// What a request head found in the router (the route's parameters are
/// in the [`Params`] the lookup was given).
#[derive(Debug)]
pub(crate) enum Lookup<'a> {
    /// This route, with its tail.
    Route(usize, &'a str),
    /// The path has routes, none for this method: 405.
    MethodNotAllowed,
    /// The path has only an upgrade route and this is no upgrade: 426.
    UpgradeRequired,
    /// 404.
    NotFound,
}

/// Routes requests to handlers by method and path.
///
/// * Patterns: exact (`/about`), with parameters (`/users/:id`, a whole
///   non-empty segment each, [`Req::param`]), and prefixes (`/static/*`,
///   matching `/static` and everything below; the rest is [`Req::tail`]).
///   Exact patterns win over parameters, parameters over prefixes, longer
///   prefixes over shorter; then the first added.
/// * A path with routes but none for the method is answered 405 with an
///   `Allow` list; a path with none, 404. `HEAD` uses the `GET` route when
///   the path has no `HEAD` route of its own (the codec drops the body).
/// * Upgrade routes ([`Router::upgrade`]) take requests carrying
///   `Upgrade: websocket` and hand the connection to another
///   [`myriad::Handler`].
/// * Matching walks the routes in order and keeps parameters on the stack:
///   no allocation per request.
///
/// # Examples
///
/// ```no_run
/// use myriad::Engine;
/// use myriad_http::{Config, Router};
/// use std::sync::{atomic::AtomicBool, Arc};
///
/// let ready = Arc::new(AtomicBool::new(true));
/// let router = Router::new()
///     .get("/hello/:name", |req, res| {
///         let _ = res.text(200, &format!("hello {}\n", req.param("name").unwrap_or("")));
///     })?
///     .post("/echo", |req, res| {
///         let _ = res.send(200, &[("Content-Type", b"application/octet-stream")], req.body());
///     })?
///     .static_dir("/static", "./public")?
///     .health(ready)?;
/// let engine = Engine::builder()
///     .service(router.service("web", "127.0.0.1:8080".parse().unwrap(), Config::default()))
///     .start()?;
/// engine.wait()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// An empty router (every request gets 404).
    pub fn new() -> Self {
        Router::default()
    }

    /// The routes, in matching order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    fn add(mut self, method: Option<&str>, pattern: &str, kind: Kind) -> Result<Self, RouteError> {
        if let Some(m) = method {
            if m.is_empty()
                || !m
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
            {
                return Err(RouteError::BadMethod(m.to_string()));
            }
        }
        let pat = Pattern::parse(pattern)?;
        let rank = pat.rank();
        // After every route of the same or a higher precedence: stable.
        let at = self
            .routes
            .iter()
            .position(|r| r.pattern.rank() > rank)
            .unwrap_or(self.routes.len());
        self.routes.insert(
            at,
            Route {
                method: method.map(Into::into),
                pattern: pat,
                text: pattern.into(),
                kind,
            },
        );
        Ok(self)
    }

    /// A route for `method` (`None`: any method) answered by `handler`,
    /// which gets the request with its whole body ([`Req::body`], up to
    /// [`Config::max_body`]; past it the codec answers 413).
    ///
    /// # Errors
    ///
    /// [`RouteError`] for an invalid pattern or method.
    pub fn route<F>(
        self,
        method: Option<&str>,
        pattern: &str,
        handler: F,
    ) -> Result<Self, RouteError>
    where
        F: Fn(&Req<'_>, &mut Responder<'_, '_>) + Send + Sync + 'static,
    {
        self.add(method, pattern, Kind::Buffered(Arc::new(handler)))
    }

    /// A `GET` route (also answering `HEAD`). See [`Router::route`].
    ///
    /// # Errors
    ///
    /// [`RouteError`] for an invalid pattern.
    pub fn get<F>(self, pattern: &str, handler: F) -> Result<Self, RouteError>
    where
        F: Fn(&Req<'_>, &mut Responder<'_, '_>) + Send + Sync + 'static,
    {
        self.route(Some("GET"), pattern, handler)
    }

    /// A `POST` route. See [`Router::route`].
    ///
    /// # Errors
    ///
    /// [`RouteError`] for an invalid pattern.
    pub fn post<F>(self, pattern: &str, handler: F) -> Result<Self, RouteError>
    where
        F: Fn(&Req<'_>, &mut Responder<'_, '_>) + Send + Sync + 'static,
    {
        self.route(Some("POST"), pattern, handler)
    }

    /// A route whose request body is streamed: `start` is called with the
    /// head (no body yet) and returns the [`BodyHandler`] that receives the
    /// body's pieces as they arrive and the end. It may answer at any
    /// point; an answer before the body's end makes the connection close
    /// after it (the rest of the body is not read).
    ///
    /// # Errors
    ///
    /// [`RouteError`] for an invalid pattern or method.
    pub fn streaming<F>(
        self,
        method: Option<&str>,
        pattern: &str,
        start: F,
    ) -> Result<Self, RouteError>
    where
        F: Fn(&Req<'_>, &mut Responder<'_, '_>) -> Box<dyn BodyHandler> + Send + Sync + 'static,
    {
        self.add(method, pattern, Kind::Streaming(Arc::new(start)))
    }

    /// An upgrade route: a `GET` on `pattern` carrying `Upgrade: websocket`
    /// is handed, with its connection, to the [`myriad::Handler`] that
    /// `factory` returns (`None` refuses it with 400). The new handler gets
    /// `on_open`, then `on_data` with the request from its first byte (head
    /// included: it does the handshake and writes the `101` itself) and
    /// whatever followed it, and every later event of the connection.
    /// A request without the upgrade on a path that has only upgrade routes
    /// gets 426 (`Upgrade: websocket`).
    ///
    /// # Errors
    ///
    /// [`RouteError`] for an invalid pattern.
    pub fn upgrade<F>(self, pattern: &str, factory: F) -> Result<Self, RouteError>
    where
        F: Fn(&Req<'_>) -> Option<Box<dyn Handler>> + Send + Sync + 'static,
    {
        self.add(Some("GET"), pattern, Kind::Upgrade(Arc::new(factory)))
    }

    /// Serves the files under `dir` at `prefix` (`/static` serves
    /// `dir/a.css` as `/static/a.css`; `/` serves the whole site), with
    /// the defaults of [`StaticDir::new`]. See [`StaticDir`].
    ///
    /// # Errors
    ///
    /// [`RouteError::Static`] when `dir` is not a readable directory;
    /// [`RouteError::BadPattern`] for a bad prefix.
    pub fn static_dir(self, prefix: &str, dir: impl AsRef<Path>) -> Result<Self, RouteError> {
        let files = StaticDir::new(dir)?;
        self.static_files(prefix, files)
    }

    /// Serves `files` at `prefix`. See [`Router::static_dir`].
    ///
    /// # Errors
    ///
    /// [`RouteError::BadPattern`] for a bad prefix.
    pub fn static_files(self, prefix: &str, files: StaticDir) -> Result<Self, RouteError> {
        let prefix = prefix.trim_end_matches('/');
        let pattern = format!("{prefix}/*");
        self.get(&pattern, move |req, res| files.serve(req, res, req.tail()))
    }

    /// Health checks for a load balancer: `GET /healthz` is always
    /// `200 ok` (the process answers), `GET /readyz` is `200 ready` while
    /// `ready` is true and `503 not ready` otherwise (starting, draining).
    /// Both say `Cache-Control: no-store`.
    ///
    /// # Errors
    ///
    /// Never in practice (the patterns are fixed).
    pub fn health(self, ready: Arc<AtomicBool>) -> Result<Self, RouteError> {
        self.health_with(move || ready.load(Ordering::Acquire))
    }

    /// [`Router::health`] with readiness from a closure (called per
    /// `/readyz` request, on the event loop: keep it cheap).
    ///
    /// # Errors
    ///
    /// Never in practice (the patterns are fixed).
    pub fn health_with<F>(self, ready: F) -> Result<Self, RouteError>
    where
        F: Fn() -> bool + Send + Sync + 'static,
    {
        const NO_STORE: (&str, &[u8]) = ("Cache-Control", b"no-store");
        const TEXT: (&str, &[u8]) = ("Content-Type", b"text/plain; charset=utf-8");
        self.get("/healthz", |_, res| {
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

    /// An engine service on `addr` answering with this router, one
    /// [`HttpConn`] per connection under the limits of `cfg`.
    pub fn service(self, name: &str, addr: SocketAddr, cfg: Config) -> Service {
        let router = Arc::new(self);
        Service::new(name, addr, move || HttpConn::new(router.clone(), cfg))
    }

    /// Finds the route for `method` and `path` (the path as sent, without
    /// query). `None` means 404 or 405 ([`Router::allow`] tells which).
    /// Upgrade routes are not considered (they need the request's
    /// headers).
    pub fn find<'a>(
        &'a self,
        method: &str,
        path: &'a str,
    ) -> Option<(&'a Route, Params<'a>, &'a str)> {
        let mut params = Params::default();
        match self.lookup(method, path, false, &mut params) {
            Lookup::Route(i, t) => Some((&self.routes[i], params, t)),
            _ => None,
        }
    }

    /// Looks a request up. `upgrade`: the request asks for a WebSocket.
    /// The route's parameters are written into `params`, in place: carried
    /// in the answer, they were copied twice per request, a few hundred
    /// bytes each time (callgrind, pipelined GET: 104 user-space
    /// instructions a request in `memcpy`).
    pub(crate) fn lookup<'a>(
        &'a self,
        method: &str,
        path: &'a str,
        upgrade: bool,
        params: &mut Params<'a>,
    ) -> Lookup<'a> {
        let mut path_seen = false;
        let mut only_upgrade = true;
        let mut get_route = None;
        for (i, r) in self.routes.iter().enumerate() {
            let is_upgrade = matches!(r.kind, Kind::Upgrade(_));
            if is_upgrade && !upgrade {
                // Still a route of this path, for the 426 below.
                if r.pattern.matches(path, params).is_some() {
                    path_seen = true;
                }
                continue;
            }
            let Some(tail) = r.pattern.matches(path, params) else {
                continue;
            };
            path_seen = true;
            only_upgrade &= is_upgrade;
            match r.method.as_deref() {
                None => return Lookup::Route(i, tail),
                Some(m) if m == method => return Lookup::Route(i, tail),
                Some("GET") if method == "HEAD" && get_route.is_none() => {
                    get_route = Some(i);
                }
                _ => {}
            }
        }
        if let Some(i) = get_route {
            // Later patterns overwrote `params`: this one fills it again
            // (it matched before, it matches now).
            if let Some(tail) = self.routes[i].pattern.matches(path, params) {
                return Lookup::Route(i, tail);
            }
        }
        match (path_seen, only_upgrade && !upgrade) {
            (false, _) => Lookup::NotFound,
            (true, true) => Lookup::UpgradeRequired,
            (true, false) => Lookup::MethodNotAllowed,
        }
    }

    /// The `Allow` value for `path`: the methods of its routes (`HEAD`
    /// with `GET`), or `None` when a route takes any method.
    pub fn allow(&self, path: &str) -> Option<String> {
        let mut methods: Vec<&str> = Vec::new();
        let mut params = Params::default();
        for r in &self.routes {
            if r.pattern.matches(path, &mut params).is_none() {
                continue;
            }
            let m = r.method.as_deref()?;
            for m in [Some(m), (m == "GET").then_some("HEAD")]
                .into_iter()
                .flatten()
            {
                if !methods.contains(&m) {
                    methods.push(m);
                }
            }
        }
        Some(methods.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nop() -> impl Fn(&Req<'_>, &mut Responder<'_, '_>) + Send + Sync + 'static {
        |_, _| {}
    }

    fn router() -> Router {
        Router::new()
            .get("/", nop())
            .unwrap()
            .get("/users/:id", nop())
            .unwrap()
            .get("/users/me", nop())
            .unwrap()
            .post("/users/:id", nop())
            .unwrap()
            .get("/users/:id/posts/:post", nop())
            .unwrap()
            .get("/static/*", nop())
            .unwrap()
            .get("/static/img/*", nop())
            .unwrap()
            .route(None, "/any", nop())
            .unwrap()
            .upgrade("/chat", |_| None)
            .unwrap()
    }

    fn pat(r: &Router, m: &str, p: &str) -> Option<String> {
        r.find(m, p).map(|(r, _, _)| r.pattern().to_string())
    }

    #[test]
    fn precedence_and_params() {
        let r = router();
        assert_eq!(pat(&r, "GET", "/").as_deref(), Some("/"));
        assert_eq!(pat(&r, "GET", "/users/me").as_deref(), Some("/users/me"));
        assert_eq!(pat(&r, "GET", "/users/42").as_deref(), Some("/users/:id"));
        assert_eq!(pat(&r, "POST", "/users/me").as_deref(), Some("/users/:id"));
        let (_, p, _) = r.find("GET", "/users/42/posts/x").unwrap();
        assert_eq!(
            (p.get("id"), p.get("post"), p.get("nope")),
            (Some("42"), Some("x"), None)
        );
        // A parameter is one whole non-empty segment.
        assert_eq!(pat(&r, "GET", "/users/"), None);
        assert_eq!(pat(&r, "GET", "/users/42/"), None);
        assert_eq!(pat(&r, "GET", "/users"), None);
        assert_eq!(pat(&r, "GET", "//"), None);
        assert_eq!(pat(&r, "GET", ""), None);
        assert_eq!(pat(&r, "GET", "*"), None);
    }

    #[test]
    fn prefixes() {
        let r = router();
        for (path, pattern, tail) in [
            ("/static", "/static/*", ""),
            ("/static/", "/static/*", ""),
            ("/static/a.css", "/static/*", "a.css"),
            ("/static/a/b/c", "/static/*", "a/b/c"),
            ("/static/img/x.png", "/static/img/*", "x.png"),
            ("/static/img", "/static/img/*", ""),
            ("/static/imgx", "/static/*", "imgx"),
        ] {
            let (route, _, t) = r.find("GET", path).unwrap();
            assert_eq!((route.pattern(), t), (pattern, tail), "{path}");
        }
        assert_eq!(pat(&r, "GET", "/staticx"), None);
        let all = Router::new().get("/*", nop()).unwrap();
        let (_, _, t) = all.find("GET", "/a/b").unwrap();
        assert_eq!(t, "a/b");
        assert_eq!(all.find("GET", "/").unwrap().2, "");
    }

    #[test]
    fn methods() {
        let r = router();
        // HEAD falls back to GET.
        assert_eq!(pat(&r, "HEAD", "/users/1").as_deref(), Some("/users/:id"));
        // With the GET route's parameters, though a later route of the
        // path (another method, other names) matched after it.
        let x = Router::new()
            .get("/x/:a", nop())
            .unwrap()
            .post("/x/:b", nop())
            .unwrap();
        let (route, params, _) = x.find("HEAD", "/x/1").unwrap();
        assert_eq!(route.pattern(), "/x/:a");
        assert_eq!(params.get("a"), Some("1"));
        assert_eq!(params.get("b"), None);
        let (route, params, _) = x.find("POST", "/x/2").unwrap();
        assert_eq!(route.pattern(), "/x/:b");
        assert_eq!(params.iter().collect::<Vec<_>>(), [("b", "2")]);
        assert!(matches!(
            r.lookup("DELETE", "/users/1", false, &mut Params::default()),
            Lookup::MethodNotAllowed
        ));
        assert_eq!(r.allow("/users/1").as_deref(), Some("GET, HEAD, POST"));
        assert!(matches!(
            r.lookup("GET", "/nope", false, &mut Params::default()),
            Lookup::NotFound
        ));
        assert_eq!(pat(&r, "PATCH", "/any").as_deref(), Some("/any"));
        assert_eq!(r.allow("/any"), None);
        // The upgrade route: only for upgrade requests; else 426.
        assert!(matches!(
            r.lookup("GET", "/chat", false, &mut Params::default()),
            Lookup::UpgradeRequired
        ));
        assert!(matches!(
            r.lookup("GET", "/chat", true, &mut Params::default()),
            Lookup::Route(..)
        ));
        assert!(matches!(
            r.lookup("POST", "/chat", true, &mut Params::default()),
            Lookup::MethodNotAllowed
        ));
    }

    #[test]
    fn bad_patterns() {
        for p in [
            "",
            "x",
            "/a*",
            "/*/a",
            "/a/:",
            "/:a/:a",
            "/:a/:b/:c/:d/:e/:f/:g/:h/:i",
        ] {
            assert!(Router::new().get(p, nop()).is_err(), "{p}");
        }
        assert!(Router::new().route(Some("G T"), "/", nop()).is_err());
        assert!(Router::new().route(Some(""), "/", nop()).is_err());
    }
}

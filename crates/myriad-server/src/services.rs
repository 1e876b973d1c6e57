//! Turning a service's configuration into a running engine, and the
//! built-in handlers.

use crate::config::{Config, HandlerKind, Health, RouteKind, ServiceConfig, Stack, WsRoute};
use crate::plugin::{PluginService, TcpPlugin, WsPlugin};
use anyhow::{Context, Result};
use myriad::{Ctx, Engine, Handler, Service};
use myriad_http::Router;
use myriad_tls::{ClientAuth, ServerTlsConfig, TlsAcceptor};
use myriad_ws::server::{HttpResponse, WsServer};
use myriad_ws::{
    CloseCode, DeflateConfig, Handshake, Message, MessageKind, PreparedMessage, Room, Upgrade,
    UpgradeInfo, WsCtx, WsHandler,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// TCP echo.
pub struct Echo;
impl Handler for Echo {
    fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
        cx.write(d);
        d.len()
    }
}

/// Reads and drops everything.
pub struct Discard;
impl Handler for Discard {
    fn on_data(&mut self, _cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
        d.len()
    }
}

/// WebSocket echo.
pub struct WsEcho;
impl WsHandler for WsEcho {
    fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, m: Message<'_>) {
        let _ = cx.send(m);
    }
}

/// A chat room: plain WebSocket clients get every text message as it was
/// sent; clients that offer the `myriad-chat` subprotocol (the demo page)
/// get JSON events instead: a welcome with their name and the number of
/// members, every message with its sender's name, and the member count
/// when someone joins or leaves. Each kind of member is a `Room` of its
/// own, so every message is still framed once per kind.
#[derive(Clone, Default)]
pub struct Chat(Arc<ChatRooms>);

#[derive(Default)]
pub struct ChatRooms {
    plain: Room,
    json: Room,
    guests: std::sync::atomic::AtomicU64,
}

/// The subprotocol of the JSON events.
pub const CHAT_PROTOCOL: &str = "myriad-chat";

impl Chat {
    /// Its rooms (for the broadcast drop counters).
    pub fn rooms(&self) -> [Room; 2] {
        [self.0.plain.clone(), self.0.json.clone()]
    }

    /// A new member's handler.
    pub fn member(&self) -> ChatMember {
        ChatMember {
            chat: self.clone(),
            json: false,
            name: None,
        }
    }

    fn members(&self) -> usize {
        self.0.plain.len() + self.0.json.len()
    }

    /// Tells the JSON members how many there are.
    fn presence(&self, lcx: &mut myriad::LoopCx<'_>) {
        let ev = serde_json::json!({"type": "members", "count": self.members()}).to_string();
        let m = PreparedMessage::new(MessageKind::Text, ev.as_bytes());
        self.0.json.broadcast(lcx, &m);
    }
}

/// A member of a chat room (see [`Chat`]).
pub struct ChatMember {
    chat: Chat,
    json: bool,
    name: Option<Box<str>>,
}

/// A name from `?name=` as the page sends it: letters, digits, spaces,
/// `-`, `_` and `.`, at most 24 characters; anything else is refused and
/// the member gets a guest name.
fn chat_name(query: &str) -> Option<Box<str>> {
    let raw = query.split('&').find_map(|kv| kv.strip_prefix("name="))?;
    let spaced = raw.replace('+', " ");
    let decoded = myriad_http::percent_decode(&spaced).ok()?;
    let decoded = std::str::from_utf8(&decoded).ok()?;
    let name = decoded.trim();
    let ok = !name.is_empty()
        && name.chars().count() <= 24
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'));
    ok.then(|| name.into())
}

impl WsHandler for ChatMember {
    fn on_upgrade(&mut self, req: &UpgradeInfo<'_>) -> Upgrade {
        match req.protocols().iter().position(|p| p == CHAT_PROTOCOL) {
            Some(i) => {
                self.json = true;
                self.name = chat_name(req.query());
                Upgrade::AcceptProtocol(Some(i))
            }
            None => Upgrade::Accept,
        }
    }
    fn on_open(&mut self, cx: &mut WsCtx<'_, '_>, _hs: &Handshake<'_>) {
        let room = if self.json {
            &self.chat.0.json
        } else {
            &self.chat.0.plain
        };
        if !room.join(cx) {
            let _ = cx.close(CloseCode::UNSUPPORTED_DATA, "legacy protocol");
            return;
        }
        if self.name.is_none() {
            let n = self.chat.0.guests.fetch_add(1, Ordering::Relaxed) + 1;
            self.name = Some(format!("guest-{n}").into());
        }
        if self.json {
            let hello = serde_json::json!({
                "type": "welcome",
                "name": self.name.as_deref().unwrap_or(""),
                "count": self.chat.members(),
            });
            let _ = cx.send_text(&hello.to_string());
        }
        self.chat.presence(cx.loop_cx());
    }
    fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
        match msg {
            Message::Text(t) => {
                let plain = PreparedMessage::new(MessageKind::Text, t.as_bytes());
                self.chat.0.plain.broadcast(cx.loop_cx(), &plain);
                if !self.chat.0.json.is_empty() {
                    let ev = serde_json::json!({
                        "type": "message",
                        "from": self.name.as_deref().unwrap_or(""),
                        "text": t,
                    })
                    .to_string();
                    let m = PreparedMessage::new(MessageKind::Text, ev.as_bytes());
                    self.chat.0.json.broadcast(cx.loop_cx(), &m);
                }
            }
            Message::Binary(_) => {
                let _ = cx.close(CloseCode::UNSUPPORTED_DATA, "text only");
            }
        }
    }
    fn on_close(&mut self, cx: &mut WsCtx<'_, '_>, _code: CloseCode, _reason: &str) {
        let room = if self.json {
            &self.chat.0.json
        } else {
            &self.chat.0.plain
        };
        if room.leave(cx) {
            self.chat.presence(cx.loop_cx());
        }
    }
}

const CHAT_PAGE: &str = include_str!("../assets/chat.html");

/// A running service: its engine and what reload needs.
pub struct Running {
    pub config: ServiceConfig,
    pub engine: Arc<Engine>,
    pub tls: Option<TlsAcceptor>,
    pub ws: Option<WsServer>,
    /// The service's business pool (for handlers that block; the built-in
    /// ones never do, plugins may).
    pub pool: Option<myriad::Pool>,
    /// The service's plugins (`handler = "plugin"`, or each `ws =
    /// "plugin"` route of an http service).
    pub plugins: Vec<Arc<PluginService>>,
    /// The chat rooms (`handler = "ws-chat"`, or one per `ws = "ws-chat"`
    /// route).
    pub rooms: Vec<Room>,
    /// `handler = "pubsub"`: the topics and, with a broker, the link to
    /// the other nodes (held for its lifetime: dropping it stops the link).
    pub pubsub: Option<(crate::pubsub::Node, Option<myriad_pubsub::Cluster>)>,
}

impl Running {
    /// Broadcast deliveries dropped (a loop's bound on broadcast bytes in
    /// flight reached: slow members miss messages rather than grow
    /// memory), for services that broadcast (chat, plugin topics,
    /// pubsub: also messages a full subscriber queue missed and, with a
    /// broker, messages for other nodes dropped while it was unreachable).
    pub fn broadcast_dropped(&self) -> Option<u64> {
        if self.rooms.is_empty() && self.plugins.is_empty() && self.pubsub.is_none() {
            return None;
        }
        let rooms: u64 = self.rooms.iter().map(Room::dropped).sum();
        let plugins: u64 = self.plugins.iter().map(|p| p.broadcast_dropped()).sum();
        let pubsub = self.pubsub.as_ref().map_or(0, |(node, cluster)| {
            let t = node.topics.stats();
            let c = cluster.as_ref().map(|c| c.stats()).unwrap_or_default();
            t.dropped_slow + t.dropped_behind + c.dropped_down + c.dropped_full
        });
        Some(rooms + plugins + pubsub)
    }
}

/// A plugin failed to load or to initialise: `serve` exits 2 with the
/// reason, a reload keeps the old configuration.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PluginFailed(pub String);

fn tls_config(s: &ServiceConfig) -> Result<Option<ServerTlsConfig>> {
    match (&s.cert, &s.key) {
        (Some(c), Some(k)) => {
            let mut cfg = ServerTlsConfig::from_pem_files(c, k)?;
            if let Some(ca) = &s.client_ca {
                cfg.client_auth = ClientAuth::Required(ca.clone());
            }
            Ok(Some(cfg))
        }
        _ => Ok(None),
    }
}

/// Reloads certificates of a TLS service from its files.
pub fn reload_tls(r: &Running) -> Result<()> {
    if let (Some(acceptor), Some(cfg)) = (&r.tls, tls_config(&r.config)?) {
        acceptor.reload(&cfg)?;
    }
    Ok(())
}

/// Starts one service on its own engine.
/// Listening sockets handed over from engines a reload replaces.
pub type Inherited = Vec<(std::net::SocketAddr, Vec<std::os::fd::OwnedFd>)>;

/// Starts one service on its own engine; `inherit` are listening sockets
/// of an engine it replaces (see [`myriad::Service::inherit`]).
///
/// `ready` is the server's readiness (true once every service is up, false
/// while starting, reloading or draining): the `/readyz`-style health
/// routes of http services answer from it.
pub fn start(
    global: &Config,
    s: &ServiceConfig,
    inherit: Inherited,
    ready: &Arc<AtomicBool>,
) -> Result<Running> {
    let tls = match tls_config(s)? {
        Some(cfg) => Some(TlsAcceptor::new(&cfg).with_context(|| format!("service {:?}", s.name))?),
        None => None,
    };
    let mut ws = None;
    let mut pubsub = None;
    let mut rooms = Vec::new();
    let mut plugins = Vec::new();
    let addrs = &s.listen;
    let pool = s.pool_threads.map(|n| myriad::Pool::new(n, s.pool_queue));
    let plugin = match s.handler {
        HandlerKind::Plugin => Some(
            crate::plugin::start(s, pool.clone())
                .map_err(|e| PluginFailed(format!("service {:?}: {e:#}", s.name)))?,
        ),
        _ => None,
    };
    let mut svc: Service = match s.stack {
        Stack::Tcp | Stack::Tls => match (s.handler, &plugin) {
            (HandlerKind::Plugin, Some(p)) => {
                let p = Arc::clone(p);
                Service::new(&s.name, addrs[0], move || TcpPlugin::new(&p))
            }
            (HandlerKind::Echo, _) => Service::new(&s.name, addrs[0], || Echo),
            _ => Service::new(&s.name, addrs[0], || Discard),
        },
        Stack::Ws | Stack::Wss => {
            let mut b = ws_builder(s);
            if s.handler == HandlerKind::WsChat {
                let page = HttpResponse::new(200, "text/html; charset=utf-8", CHAT_PAGE.as_bytes());
                b = b.http(move |req| {
                    (req.path() == "/" || req.path() == "/index.html").then(|| page.clone())
                });
            }
            let server = b.build();
            let svc = match (s.handler, &plugin) {
                (HandlerKind::Plugin, Some(p)) => {
                    let p = Arc::clone(p);
                    server.service(&s.name, addrs[0], move || WsPlugin::new(&p))
                }
                (HandlerKind::WsChat, _) => {
                    let chat = Chat::default();
                    rooms.extend(chat.rooms());
                    server.service(&s.name, addrs[0], move || chat.member())
                }
                (HandlerKind::PubSub, _) => {
                    let topics = myriad_ws::Topics::default();
                    let cluster = match &s.broker {
                        Some(b) => {
                            let kind = b.kind.parse().map_err(anyhow::Error::from)?;
                            let cfg = myriad_pubsub::ClusterConfig::new(kind, b.url.clone());
                            Some(
                                myriad_pubsub::Cluster::start(&topics, cfg)
                                    .with_context(|| format!("service {:?}: broker", s.name))?,
                            )
                        }
                        None => None,
                    };
                    let node = crate::pubsub::Node {
                        topics,
                        cluster: cluster.as_ref().map(|c| c.handle()),
                        publish: s.pubsub_publish,
                    };
                    let n = node.clone();
                    pubsub = Some((node, cluster));
                    server.service(&s.name, addrs[0], move || crate::pubsub::Member::new(&n))
                }
                _ => server.service(&s.name, addrs[0], || WsEcho),
            };
            ws = Some(server);
            svc
        }
        Stack::Http | Stack::Https => {
            let server = ws_builder(s).build();
            let router = router(s, &server, ready, pool.as_ref(), &mut rooms, &mut plugins)?;
            if s.routes.iter().any(|r| matches!(r.kind, RouteKind::Ws(_))) {
                ws = Some(server);
            }
            let mut cfg = myriad_http::Config::default();
            // the slow-client bound of the handshake applies to heads
            cfg.header_timeout = Some(s.handshake_timeout);
            router.service(&s.name, addrs[0], cfg)
        }
    };
    for a in &addrs[1..] {
        svc = svc.listen(*a);
    }
    svc = svc
        .inherit(inherit)
        .max_connections(s.max_connections)
        .idle_timeout(s.idle_timeout)
        .write_high_water(s.write_high_water)
        .send_timeout(s.send_timeout)
        .linger(s.linger)
        .max_connections_per_addr(s.max_connections_per_addr)
        .write_hard_limit((s.write_high_water.saturating_mul(64)).max(64 << 20))
        .max_input(s.max_message.saturating_add(64 << 10))
        .handshake_timeout(s.handshake_timeout)
        .backlog(s.backlog);
    if let Some(t) = &tls {
        svc = svc.filter(t.factory());
    }
    if s.proxy_protocol {
        // The header must arrive within the handshake timeout, like a
        // request head or a TLS handshake.
        svc = myriad::proxy::proxied(svc, s.handshake_timeout);
    }
    let engine = Engine::builder()
        .threads(global.io_threads)
        .max_queued_per_loop(global.max_queued_per_loop)
        .backend(global.backend)
        .service(svc)
        .start()
        .with_context(|| format!("service {:?}", s.name))?;
    plugins.extend(plugin);
    if let Some((node, _)) = &pubsub {
        node.topics
            .attach((0..engine.loop_count()).map(|i| engine.loop_handle(i).clone()));
        crate::pubsub::register(&s.name, node);
    }
    Ok(Running {
        config: s.clone(),
        engine: Arc::new(engine),
        tls,
        ws,
        pool,
        plugins,
        rooms,
        pubsub,
    })
}

/// The WebSocket settings of a service (ws/wss stacks, and the ws routes
/// of http stacks).
fn ws_builder(s: &ServiceConfig) -> myriad_ws::server::WsServerBuilder {
    let mut b = WsServer::builder()
        .max_message_size(s.max_message)
        .deflate_config(s.deflate.then(|| DeflateConfig {
            threshold: s.deflate_threshold,
            ..DeflateConfig::default()
        }))
        .legacy_drafts(s.legacy_drafts)
        .handshake_timeout(Some(s.handshake_timeout))
        .message_rate(s.max_message_rate, s.message_burst)
        .keepalive(s.ping_interval, s.pong_timeout);
    if !s.subprotocols.is_empty() {
        b = b.protocols(s.subprotocols.clone());
    }
    if !s.allowed_origins.is_empty() {
        let allowed = s.allowed_origins.clone();
        b = b.origin_check(move |o| o.is_some_and(|o| allowed.iter().any(|a| a == o)));
    }
    b
}

const NO_STORE: (&str, &[u8]) = ("Cache-Control", b"no-store");
const TEXT: (&str, &[u8]) = ("Content-Type", b"text/plain; charset=utf-8");
const JSON: (&str, &[u8]) = ("Content-Type", b"application/json");

/// The router of an http/https service, from its routes. Rooms and
/// plugins the routes make are added to `rooms` and `plugins` (metrics,
/// reload).
fn router(
    s: &ServiceConfig,
    ws: &WsServer,
    ready: &Arc<AtomicBool>,
    pool: Option<&myriad::Pool>,
    rooms: &mut Vec<Room>,
    plugins: &mut Vec<Arc<PluginService>>,
) -> Result<Router> {
    let mut r = Router::new();
    for route in &s.routes {
        let path = route.path.as_str();
        let at = || format!("{}: route {path:?}", route.location);
        r = match &route.kind {
            RouteKind::Static(dir) => {
                let prefix = path.strip_suffix("/*").unwrap_or(path);
                r.static_dir(prefix, dir).with_context(at)?
            }
            RouteKind::Health(Health::Alive) => r
                .get(path, |_, res| {
                    let _ = res.send(200, &[TEXT, NO_STORE], b"ok\n");
                })
                .with_context(at)?,
            RouteKind::Health(Health::Ready) => {
                let ready = Arc::clone(ready);
                r.get(path, move |_, res| {
                    let _ = if ready.load(Ordering::Acquire) {
                        res.send(200, &[TEXT, NO_STORE], b"ready\n")
                    } else {
                        res.send(503, &[TEXT, NO_STORE], b"not ready\n")
                    };
                })
                .with_context(at)?
            }
            RouteKind::Redirect { to, status } => {
                let (to, status) = (to.clone(), *status);
                let prefix = path.ends_with("/*");
                // Any method: 307/308 keep it, which is their point.
                r.route(None, path, move |req, res| {
                    let mut loc = to.clone();
                    // A prefix route carries what followed the prefix over.
                    if prefix && !req.tail().is_empty() {
                        if !loc.ends_with('/') {
                            loc.push('/');
                        }
                        loc.push_str(req.tail());
                    }
                    if let Some(q) = req.query().filter(|_| !to.contains('?')) {
                        loc.push('?');
                        loc.push_str(q);
                    }
                    let _ = res.send(
                        status,
                        &[TEXT, ("Location", loc.as_bytes())],
                        format!("{loc}\n").as_bytes(),
                    );
                })
                .with_context(at)?
            }
            RouteKind::Publish { service, token } => {
                let (service, token) = (service.clone(), token.clone());
                r.post(path, move |req, res| {
                    let topic = req.param("topic").unwrap_or("");
                    let auth = req.header("authorization");
                    match crate::pubsub::check_publish(&service, &token, auth, topic, req.body()) {
                        Err((status, body)) => {
                            let _ = res.send(status, &[JSON, NO_STORE], body.as_bytes());
                        }
                        Ok((node, msg)) => {
                            let Ok(answer) = res.defer() else { return };
                            let t = topic.to_owned();
                            // Answered once every loop has queued it.
                            let _ = node.topics.publish_counted(topic, &msg, move |n| {
                                let body = serde_json::json!({"topic": t, "deliveries": n});
                                answer.send(200, &[JSON, NO_STORE], body.to_string());
                            });
                        }
                    }
                })
                .with_context(at)?
            }
            RouteKind::Ws(kind) => {
                let ws = ws.clone();
                let r = match kind {
                    WsRoute::Echo => r.upgrade(path, move |_| Some(ws.connection_handler(WsEcho))),
                    WsRoute::Plugin(spec) => {
                        // The plugin host checks and runs a route's plugin
                        // as it would a ws service's.
                        let as_ws = ServiceConfig {
                            stack: Stack::Ws,
                            handler: HandlerKind::Plugin,
                            plugin: Some(spec.clone()),
                            routes: Vec::new(),
                            ..s.clone()
                        };
                        let p = crate::plugin::start(&as_ws, pool.cloned()).map_err(|e| {
                            PluginFailed(format!("{}: service {:?}: {e:#}", route.location, s.name))
                        })?;
                        plugins.push(Arc::clone(&p));
                        r.upgrade(path, move |_| {
                            Some(ws.connection_handler(WsPlugin::new(&p)))
                        })
                    }
                    WsRoute::Chat => {
                        let chat = Chat::default();
                        rooms.extend(chat.rooms());
                        r.upgrade(path, move |_| Some(ws.connection_handler(chat.member())))
                            .and_then(|r| {
                                // GET without the upgrade: the demo page, which
                                // connects back to the same path.
                                r.get(path, |_, res| {
                                    let _ = res.send(
                                        200,
                                        &[("Content-Type", b"text/html; charset=utf-8"), NO_STORE],
                                        CHAT_PAGE.as_bytes(),
                                    );
                                })
                            })
                    }
                };
                r.with_context(at)?
            }
        };
    }
    Ok(r)
}

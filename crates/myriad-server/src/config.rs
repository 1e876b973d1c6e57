//! The configuration file: TOML, strict (unknown keys are errors), and every
//! error names the file, line and column and the reason.

use serde::Deserialize;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The embedded default: TCP echo on 7000, WebSocket echo on 7001, the
/// chat demo on 7002, metrics on 9100 — all on loopback.
pub const DEFAULT_CONFIG: &str = r#"# myriad embedded default configuration
backend = "auto"

[log]
level = "info"
format = "text"
summary_secs = 10

[metrics]
listen = "127.0.0.1:9100"

[[service]]
name = "tcp-echo"
listen = "127.0.0.1:7000"
stack = "tcp"
handler = "echo"

[[service]]
name = "ws-echo"
listen = "127.0.0.1:7001"
stack = "ws"
handler = "ws-echo"

[[service]]
name = "ws-chat"
listen = "127.0.0.1:7002"
stack = "ws"
handler = "ws-chat"
"#;

/// A configuration error, located in its file.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{col}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub reason: String,
}

impl ConfigError {
    /// An error at a `file:line:col` location recorded earlier.
    fn at(location: &str, reason: impl Into<String>) -> Self {
        let mut it = location.rsplitn(3, ':');
        let col = it.next().and_then(|c| c.parse().ok()).unwrap_or(1);
        let line = it.next().and_then(|l| l.parse().ok()).unwrap_or(1);
        ConfigError {
            file: it.next().unwrap_or_default().to_owned(),
            line,
            col,
            reason: reason.into(),
        }
    }
}

fn locate(text: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(text.len());
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(pos, |i| pos - i - 1) + 1;
    (line, col)
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    io_threads: Option<Spanned<usize>>,
    workers: Option<Spanned<usize>>,
    backend: Option<Spanned<String>>,
    /// How long SIGTERM lets connections finish.
    shutdown_grace: Option<Spanned<String>>,
    /// Cap on the bytes one loop holds queued for all its connections.
    max_queued_per_loop: Option<Spanned<String>>,
    /// How long an engine replaced by a reload may keep serving its
    /// connections.
    drain_timeout: Option<Spanned<String>>,
    #[serde(default)]
    log: RawLog,
    metrics: Option<RawMetrics>,
    #[serde(default, rename = "service")]
    services: Vec<RawService>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    summary_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    /// One address or an array of addresses.
    listen: Spanned<toml::Value>,
    stack: Spanned<String>,
    /// Required on tcp/tls/ws/wss; on http/https absent or "router".
    handler: Option<Spanned<String>>,
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    client_ca: Option<Spanned<String>>,
    max_connections: Option<usize>,
    idle_timeout: Option<Spanned<String>>,
    handshake_timeout: Option<Spanned<String>>,
    max_message: Option<Spanned<String>>,
    write_high_water: Option<Spanned<String>>,
    send_timeout: Option<Spanned<String>>,
    linger: Option<Spanned<String>>,
    ping_interval: Option<Spanned<String>>,
    pong_timeout: Option<Spanned<String>>,
    max_connections_per_addr: Option<u32>,
    max_message_rate: Option<u32>,
    message_burst: Option<u32>,
    deflate: Option<bool>,
    deflate_threshold: Option<Spanned<String>>,
    legacy_drafts: Option<bool>,
    /// Every connection starts with a PROXY protocol (v1 or v2) header.
    proxy_protocol: Option<Spanned<bool>>,
    /// `handler = "pubsub"`: clients may publish.
    pubsub_publish: Option<bool>,
    /// `handler = "pubsub"`: "nats" or "redis", to span nodes.
    broker: Option<Spanned<String>>,
    /// The broker's URL (nats://HOST:PORT, redis://HOST:PORT).
    broker_url: Option<Spanned<String>>,
    #[serde(default)]
    subprotocols: Vec<String>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    pool_threads: Option<usize>,
    pool_queue: Option<usize>,
    backlog: Option<i32>,
    /// `handler = "plugin"`: the shared library.
    plugin: Option<Spanned<String>>,
    /// Message plugins on tcp/tls: "lp32" or "line".
    framing: Option<Spanned<String>>,
    /// Handed to the plugin's `init` as JSON.
    plugin_config: Option<toml::Table>,
    /// wasm plugins: the memory cap of each instance ("64MiB").
    wasm_memory: Option<Spanned<String>>,
    /// wasm plugins: the deadline of each call ("10ms").
    wasm_deadline: Option<Spanned<String>>,
    /// wasm plugins: a host directory the guest may read,
    /// `{ host = "PATH", guest = "/data" }` (grants deny by default).
    wasm_read_dir: Option<Spanned<RawReadDir>>,
    /// wasm plugins: the real clocks (without: stopped at 0).
    wasm_clock: Option<Spanned<bool>>,
    /// wasm plugins: names of environment variables the guest sees (with
    /// the server's values).
    wasm_env: Option<Spanned<Vec<String>>>,
    /// http/https: `[[service.route]]` tables.
    #[serde(default, rename = "route")]
    routes: Vec<RawRoute>,
}

impl RawService {
    /// The first wasm sandbox grant key the service sets, with its place
    /// in the file (for "only valid with ..." errors).
    fn first_wasm_grant(&self) -> Option<(&'static str, std::ops::Range<usize>)> {
        [
            self.wasm_read_dir
                .as_ref()
                .map(|d| ("wasm_read_dir", d.span())),
            self.wasm_clock.as_ref().map(|c| ("wasm_clock", c.span())),
            self.wasm_env.as_ref().map(|e| ("wasm_env", e.span())),
        ]
        .into_iter()
        .flatten()
        .next()
    }
}

/// `wasm_read_dir = { host = "PATH", guest = "/data" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReadDir {
    host: Spanned<String>,
    guest: Spanned<String>,
}

/// One `[[service.route]]`: a path and exactly one kind (`static`, `ws`,
/// `health`, `redirect`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    path: Spanned<String>,
    /// A directory served under `path` (a prefix).
    #[serde(rename = "static")]
    static_dir: Option<Spanned<String>>,
    /// A WebSocket handler: "ws-echo", "ws-chat" or "plugin".
    ws: Option<Spanned<String>>,
    /// "alive" (200 while the process answers) or "ready" (200 when every
    /// service is up, 503 while starting, reloading or draining).
    health: Option<Spanned<String>>,
    /// Where to send the client.
    redirect: Option<Spanned<String>>,
    /// The redirect's status (301 by default).
    status: Option<Spanned<u16>>,
    /// `ws = "plugin"`: the shared library.
    plugin: Option<Spanned<String>>,
    /// Handed to that plugin's `init` as JSON.
    plugin_config: Option<toml::Table>,
    /// `POST path` publishes its body to the topics of this pubsub service
    /// (the path has a `:topic` parameter).
    publish: Option<Spanned<String>>,
    /// The bearer token a publish route requires.
    token: Option<Spanned<String>>,
}

/// Transport/protocol stack of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    Tcp,
    Tls,
    Ws,
    Wss,
    /// HTTP/1.1 with routes (`[[service.route]]`).
    Http,
    /// The same over TLS.
    Https,
}

impl Stack {
    /// Whether the stack has a TLS filter (needs cert and key).
    pub fn is_tls(self) -> bool {
        matches!(self, Stack::Tls | Stack::Wss | Stack::Https)
    }

    /// Whether the stack is HTTP with routes.
    pub fn is_http(self) -> bool {
        matches!(self, Stack::Http | Stack::Https)
    }
}

/// Built-in handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerKind {
    Echo,
    Discard,
    WsEcho,
    WsChat,
    /// Publish/subscribe over topics (`myriad_server::pubsub`).
    PubSub,
    /// A native plugin ([`PluginSpec`]).
    Plugin,
    /// http/https stacks: the routes decide ([`RouteConfig`]).
    Router,
}

/// The broker of a pubsub service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// "nats" or "redis".
    pub kind: String,
    pub url: String,
}

/// One route of an http/https service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// The route pattern: exact (`/about`), with `:param` segments, or a
    /// prefix (`/static/*`); a static route's path is always a prefix.
    pub path: String,
    pub kind: RouteKind,
    /// Where the route's `path` key is, as `file:line:col`.
    pub location: String,
}

/// What answers on a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteKind {
    /// The files under this directory.
    Static(PathBuf),
    /// An upgrade to WebSocket, driven by this handler.
    Ws(WsRoute),
    /// A health check.
    Health(Health),
    /// A redirect to `to` with `status` (301, 302, 303, 307, 308).
    Redirect { to: String, status: u16 },
    /// `POST` publishes the body to the `:topic` of pubsub service
    /// `service`, with `Authorization: Bearer {token}`.
    Publish { service: String, token: String },
}

/// The WebSocket handler of a `ws` route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsRoute {
    Echo,
    /// The chat room (one room per route); `GET` without an upgrade
    /// serves the demo page.
    Chat,
    Plugin(PluginSpec),
}

/// What a health route reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// 200 as long as the process answers.
    Alive,
    /// 200 when every service is up, 503 while starting, reloading or
    /// draining (the state sd_notify reports).
    Ready,
}

/// How a message plugin's messages are cut on a tcp/tls stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A 4-byte big-endian length, then that many bytes.
    Lp32,
    /// Up to a `\n` (a `\r` before it is dropped).
    Line,
}

/// A service's plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSpec {
    /// The library (resolved against the config file's folder).
    pub path: PathBuf,
    /// A digest of the file's contents when the config was read: a rebuilt
    /// library makes the service differ, so SIGHUP restarts it with the new
    /// code.
    pub digest: u64,
    /// `framing`, for message plugins on tcp/tls.
    pub framing: Option<Framing>,
    /// `[service.plugin_config]` as JSON.
    pub config_json: String,
    /// Where the service's `plugin` key is, as `file:line:col`.
    pub location: String,
    /// wasm plugins (a `.wasm` path): `wasm_memory`, the memory cap of
    /// each instance (None: myriad-wasm's default).
    pub wasm_memory: Option<usize>,
    /// wasm plugins: `wasm_deadline`, the deadline of each call.
    pub wasm_deadline: Option<Duration>,
    /// wasm plugins: `wasm_read_dir`, a host directory (resolved against
    /// the config file's folder) the guest reads at a guest path.
    pub wasm_read_dir: Option<(PathBuf, String)>,
    /// wasm plugins: `wasm_clock`, the real clocks.
    pub wasm_clock: bool,
    /// wasm plugins: `wasm_env`, the environment variables the guest sees
    /// (their values are the server's when the plugin is loaded).
    pub wasm_env: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub name: String,
    pub listen: Vec<SocketAddr>,
    pub stack: Stack,
    pub handler: HandlerKind,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub max_connections: usize,
    pub idle_timeout: Option<Duration>,
    pub handshake_timeout: Duration,
    pub max_message: usize,
    pub write_high_water: usize,
    /// Close a connection whose queued bytes make no progress this long
    /// (default 30 s; "0s" turns it off).
    pub send_timeout: Option<Duration>,
    /// After a graceful close, wait this long for the peer to close too,
    /// discarding its input (default 2 s; "0s": close at once).
    pub linger: Option<Duration>,
    /// ws/wss keepalive: a ping this often (default: none), and how long
    /// the peer has to answer (default 10 s, at most the interval).
    pub ping_interval: Option<Duration>,
    pub pong_timeout: Duration,
    /// Connections one source address may hold (0: any).
    pub max_connections_per_addr: u32,
    /// ws/wss: data messages per second per connection, and the burst
    /// (0: no limit).
    pub max_message_rate: u32,
    pub message_burst: u32,
    pub deflate: bool,
    /// permessage-deflate: messages shorter than this are sent
    /// uncompressed (default 64 bytes).
    pub deflate_threshold: usize,
    pub legacy_drafts: bool,
    /// Every connection starts with a PROXY protocol header (behind a
    /// load balancer); one without a valid header is closed. tcp, ws and
    /// http stacks only (the header would reach the TLS filter first).
    pub proxy_protocol: bool,
    /// `handler = "pubsub"`: clients may publish (default false).
    pub pubsub_publish: bool,
    /// `handler = "pubsub"`: the broker spanning nodes.
    pub broker: Option<BrokerConfig>,
    pub subprotocols: Vec<String>,
    pub allowed_origins: Vec<String>,
    /// Business-pool threads for this service's handlers (0 = cores).
    pub pool_threads: Option<usize>,
    /// Most jobs waiting in that pool.
    pub pool_queue: usize,
    /// Listen backlog (capped by net.core.somaxconn).
    pub backlog: i32,
    /// `handler = "plugin"`.
    pub plugin: Option<PluginSpec>,
    /// http/https: the routes, in the file's order.
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub source: String,
    pub io_threads: usize,
    pub workers: usize,
    pub backend: myriad::BackendKind,
    pub log_level: String,
    pub log_json: bool,
    pub summary_secs: u64,
    pub metrics: Option<SocketAddr>,
    pub services: Vec<ServiceConfig>,
    /// How long SIGTERM waits for connections to finish (`shutdown_grace`,
    /// default 5 s).
    pub shutdown_grace: Duration,
    /// `max_queued_per_loop` (default 1 GiB).
    pub max_queued_per_loop: u64,
    /// How long an engine a reload replaced keeps serving its existing
    /// connections before they get `shutdown_grace` (default 10 min).
    pub drain_timeout: Duration,
    /// Settings that are valid but unsafe where they are (an unlimited
    /// service on a public address, no services at all), as
    /// `file:line:col: warning: ...`: `check` prints them, `serve` logs
    /// them.
    pub warnings: Vec<String>,
}

/// The default `max_connections` of a service: this process's open-files
/// limit less a reserve for listeners, rings, logs and plugins, so that a
/// flood is refused by the limit (accepted and closed at once) before
/// `accept` runs out of descriptors.
pub fn default_max_connections() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1 << 20);
    (soft as usize).saturating_sub(256).max(64)
}

/// Parses `30s`, `500ms`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (use e.g. 30s, 500ms, 5m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?} in {s:?} (ms, s, m, h)"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `64KiB`, `16MiB`, `1GiB`, `100kB` or a bare number of bytes.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    };
    let v: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (use e.g. 64KiB, 16MiB)"))?;
    let mul: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => {
            return Err(format!(
                "invalid size unit {unit:?} in {s:?} (B, KiB, MiB, GiB, kB, MB, GB)"
            ))
        }
    };
    v.checked_mul(mul)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("size {s:?} too large"))
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, reason: impl Into<String>) -> ConfigError {
        let (line, col) = locate(self.text, span.start);
        ConfigError {
            file: self.file.to_string(),
            line,
            col,
            reason: reason.into(),
        }
    }
}

/// A digest of a plugin file (FNV-1a; it only has to notice a rebuild).
fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A plugin library's spec: read (for the digest) and located.
fn plugin_spec(
    cx: &Ctx<'_>,
    path: PathBuf,
    key: &Spanned<String>,
    framing: Option<Framing>,
    config: Option<&toml::Table>,
) -> Result<PluginSpec, ConfigError> {
    let bytes = std::fs::read(&path)
        .map_err(|e| cx.err(key.span(), format!("cannot read {}: {e}", path.display())))?;
    let config_json = serde_json::to_string(config.unwrap_or(&toml::Table::new()))
        .map_err(|e| cx.err(key.span(), format!("plugin_config: {e}")))?;
    let (line, col) = locate(cx.text, key.span().start);
    Ok(PluginSpec {
        path,
        digest: digest(&bytes),
        framing,
        config_json,
        location: format!("{}:{line}:{col}", cx.file),
        wasm_memory: None,
        wasm_deadline: None,
        wasm_read_dir: None,
        wasm_clock: false,
        wasm_env: Vec::new(),
    })
}

/// The sandbox grants of a wasm plugin service (`wasm_read_dir`,
/// `wasm_clock`, `wasm_env`), checked: only on `.wasm` plugins, an
/// existing host directory, an absolute guest path without `..`, variable
/// names without `=`.
fn wasm_grants(
    cx: &Ctx<'_>,
    base: Option<&Path>,
    s: &RawService,
    spec: &mut PluginSpec,
) -> Result<(), ConfigError> {
    let wasm = spec.path.extension().is_some_and(|e| e == "wasm");
    let first = s.first_wasm_grant();
    if let (Some((key, span)), false) = (first, wasm) {
        return Err(cx.err(
            span,
            format!("{key} applies to WebAssembly plugins (a .wasm plugin); native plugins are not sandboxed"),
        ));
    }
    if let Some(d) = &s.wasm_read_dir {
        let d = d.get_ref();
        let host = relative(base, d.host.get_ref());
        if !host.is_dir() {
            return Err(cx.err(
                d.host.span(),
                format!("directory not found: {}", host.display()),
            ));
        }
        let guest = d.guest.get_ref();
        if !guest.starts_with('/') || guest.split('/').any(|c| c == "..") {
            return Err(cx.err(
                d.guest.span(),
                format!("wasm_read_dir: guest path {guest:?} must be absolute (like \"/data\") and without \"..\""),
            ));
        }
        spec.wasm_read_dir = Some((host, guest.clone()));
    }
    spec.wasm_clock = s.wasm_clock.as_ref().is_some_and(|c| *c.get_ref());
    if let Some(e) = &s.wasm_env {
        for name in e.get_ref() {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(cx.err(
                    e.span(),
                    format!("wasm_env: {name:?} is not a variable name"),
                ));
            }
        }
        spec.wasm_env = e.get_ref().clone();
    }
    Ok(())
}

/// A path from the config, relative to the config file's folder.
fn relative(base: Option<&Path>, p: &str) -> PathBuf {
    let path = PathBuf::from(p);
    match base {
        Some(b) if path.is_relative() => b.join(path),
        _ => path,
    }
}

/// The `[[service.route]]` tables of an http/https service: each with a
/// valid path and exactly one kind, no path twice.
fn parse_routes(
    cx: &Ctx<'_>,
    base: Option<&Path>,
    raw: &[RawRoute],
) -> Result<Vec<RouteConfig>, ConfigError> {
    let mut out: Vec<RouteConfig> = Vec::new();
    // Normalised pattern → where it was declared.
    let mut seen: Vec<(String, String)> = Vec::new();
    for r in raw {
        let path = r.path.get_ref();
        let at = |sp: Range<usize>| {
            let (line, col) = locate(cx.text, sp.start);
            format!("{}:{line}:{col}", cx.file)
        };
        let kinds: Vec<(&str, Range<usize>)> = [
            ("static", r.static_dir.as_ref().map(|v| v.span())),
            ("ws", r.ws.as_ref().map(|v| v.span())),
            ("health", r.health.as_ref().map(|v| v.span())),
            ("redirect", r.redirect.as_ref().map(|v| v.span())),
            ("publish", r.publish.as_ref().map(|v| v.span())),
        ]
        .into_iter()
        .filter_map(|(k, sp)| sp.map(|sp| (k, sp)))
        .collect();
        match kinds.as_slice() {
            [] => {
                return Err(cx.err(
                    r.path.span(),
                    format!(
                        "route {path:?}: give it one of static, ws, health, redirect or publish"
                    ),
                ))
            }
            [_] => {}
            [(first, _), (second, sp), ..] => {
                return Err(cx.err(
                    sp.clone(),
                    format!(
                        "route {path:?}: {second} and {first} in one route (one kind per route)"
                    ),
                ))
            }
        }
        // Checked by the same parser the server's router uses.
        if let Err(e) = myriad_http::Router::new().route(None, path, |_, _| {}) {
            return Err(cx.err(r.path.span(), format!("route path: {e}")));
        }
        if let Some(st) = &r.status {
            if r.redirect.is_none() {
                return Err(cx.err(st.span(), "status is only valid on a redirect route"));
            }
        }
        if r.plugin.is_some() != r.ws.as_ref().is_some_and(|w| w.get_ref() == "plugin") {
            let sp = r
                .plugin
                .as_ref()
                .or(r.ws.as_ref())
                .map_or(r.path.span(), |v| v.span());
            return Err(cx.err(
                sp,
                "a plugin route takes both ws = \"plugin\" and plugin = \"PATH\"",
            ));
        }
        if r.plugin_config.is_some() && r.plugin.is_none() {
            return Err(cx.err(
                r.path.span(),
                format!("route {path:?}: plugin_config is only valid with ws = \"plugin\""),
            ));
        }
        let (pattern, kind) = if let Some(d) = &r.static_dir {
            if path.contains(':') {
                return Err(cx.err(
                    r.path.span(),
                    format!("route {path:?}: a static route's path is a prefix (no :params)"),
                ));
            }
            let dir = relative(base, d.get_ref());
            if !dir.is_dir() {
                return Err(cx.err(d.span(), format!("directory not found: {}", dir.display())));
            }
            // "/static", "/static/" and "/static/*" all mean the prefix.
            let prefix = path
                .strip_suffix("/*")
                .unwrap_or(path)
                .trim_end_matches('/');
            (format!("{prefix}/*"), RouteKind::Static(dir))
        } else if let Some(w) = &r.ws {
            let kind = match w.get_ref().as_str() {
                "ws-echo" => WsRoute::Echo,
                "ws-chat" => WsRoute::Chat,
                "plugin" => {
                    let Some(p) = &r.plugin else {
                        return Err(cx.err(w.span(), "ws = \"plugin\" needs plugin = \"PATH\""));
                    };
                    let lib = relative(base, p.get_ref());
                    if !lib.is_file() {
                        return Err(cx.err(p.span(), format!("file not found: {}", lib.display())));
                    }
                    WsRoute::Plugin(plugin_spec(cx, lib, p, None, r.plugin_config.as_ref())?)
                }
                other => {
                    return Err(cx.err(
                        w.span(),
                        format!("unknown ws handler {other:?} (ws-echo, ws-chat, plugin)"),
                    ))
                }
            };
            (path.clone(), RouteKind::Ws(kind))
        } else if let Some(h) = &r.health {
            let kind = match h.get_ref().as_str() {
                "alive" => Health::Alive,
                "ready" => Health::Ready,
                other => {
                    return Err(cx.err(
                        h.span(),
                        format!("unknown health check {other:?} (alive: /healthz style, ready: /readyz style)"),
                    ))
                }
            };
            (path.clone(), RouteKind::Health(kind))
        } else if let Some(svc) = &r.publish {
            if !path.contains(":topic") {
                return Err(cx.err(
                    r.path.span(),
                    format!("route {path:?}: a publish route's path has a :topic parameter"),
                ));
            }
            let token = match &r.token {
                Some(t) if t.get_ref().len() >= 16 => t.get_ref().clone(),
                Some(t) => {
                    return Err(cx.err(t.span(), "a publish token has at least 16 characters"))
                }
                None => {
                    return Err(cx.err(
                        svc.span(),
                        format!("route {path:?}: a publish route needs token = \"...\""),
                    ))
                }
            };
            (
                path.clone(),
                RouteKind::Publish {
                    service: svc.get_ref().clone(),
                    token,
                },
            )
        } else if let Some(to) = &r.redirect {
            let t = to.get_ref();
            // A Location value: no spaces or control characters.
            if t.is_empty() || t.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(cx.err(
                    to.span(),
                    "redirect target must be a non-empty URL or path without spaces or control characters",
                ));
            }
            let status = match &r.status {
                None => 301,
                Some(st) if [301, 302, 303, 307, 308].contains(st.get_ref()) => *st.get_ref(),
                Some(st) => {
                    return Err(cx.err(
                        st.span(),
                        format!(
                            "redirect status {} (301, 302, 303, 307 or 308)",
                            st.get_ref()
                        ),
                    ))
                }
            };
            (
                path.clone(),
                RouteKind::Redirect {
                    to: t.clone(),
                    status,
                },
            )
        } else {
            // Not reached: exactly one kind was checked above.
            return Err(cx.err(r.path.span(), format!("route {path:?}: no kind")));
        };
        if let Some((_, first)) = seen.iter().find(|(p, _)| *p == pattern) {
            return Err(cx.err(
                r.path.span(),
                format!("duplicate route path {path:?} (first at {first})"),
            ));
        }
        seen.push((pattern.clone(), at(r.path.span())));
        out.push(RouteConfig {
            path: pattern,
            kind,
            location: at(r.path.span()),
        });
    }
    Ok(out)
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: 0,
        col: 0,
        reason: format!("cannot read: {e}"),
    })?;
    parse(&file, &text, path.parent())
}

/// Parses and validates configuration text. Relative file paths (certs)
/// are resolved against `base` when given.
pub fn parse(file: &str, text: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
    let cx = Ctx { file, text };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        cx.err(span, e.message().trim().to_string())
    })?;
    let backend = match &raw.backend {
        None => myriad::BackendKind::Auto,
        Some(b) => b
            .get_ref()
            .parse()
            .map_err(|e: myriad::UnknownBackend| cx.err(b.span(), e.to_string()))?,
    };
    let io_threads = match &raw.io_threads {
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Some(t) if (1..=255).contains(t.get_ref()) => *t.get_ref(),
        Some(t) => return Err(cx.err(t.span(), "io_threads must be between 1 and 255")),
    };
    let workers = match &raw.workers {
        None => 1,
        Some(w) if (1..=1024).contains(w.get_ref()) => *w.get_ref(),
        Some(w) => return Err(cx.err(w.span(), "workers must be between 1 and 1024")),
    };
    let log_level = match &raw.log.level {
        None => "info".to_string(),
        Some(l) => match l.get_ref().as_str() {
            "trace" | "debug" | "info" | "warn" | "error" => l.get_ref().clone(),
            other => {
                return Err(cx.err(
                    l.span(),
                    format!("unknown log level {other:?} (trace, debug, info, warn, error)"),
                ))
            }
        },
    };
    let log_json = match &raw.log.format {
        None => false,
        Some(f) => match f.get_ref().as_str() {
            "text" => false,
            "json" => true,
            other => {
                return Err(cx.err(
                    f.span(),
                    format!("unknown log format {other:?} (text or json)"),
                ))
            }
        },
    };
    let metrics = match &raw.metrics {
        None => None,
        Some(m) => Some(m.listen.get_ref().parse::<SocketAddr>().map_err(|e| {
            cx.err(
                m.listen.span(),
                format!("invalid address {:?}: {e}", m.listen.get_ref()),
            )
        })?),
    };
    let mut services = Vec::new();
    let mut warnings = Vec::new();
    let mut names = std::collections::HashSet::new();
    for s in &raw.services {
        let name = s.name.get_ref().clone();
        if name.is_empty() {
            return Err(cx.err(s.name.span(), "service name must not be empty"));
        }
        // Names are metric label values and log fields: keep them plain.
        if name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err(cx.err(
                s.name.span(),
                format!("service name {name:?}: use up to 64 letters, digits, '_', '.' or '-'"),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(cx.err(s.name.span(), format!("duplicate service name {name:?}")));
        }
        let span = s.listen.span();
        let listens: Vec<&toml::Value> = match s.listen.get_ref() {
            toml::Value::Array(v) => v.iter().collect(),
            v => vec![v],
        };
        if listens.is_empty() {
            return Err(cx.err(span, format!("service {name:?}: listen is empty")));
        }
        let mut listen = Vec::new();
        for a in listens {
            let Some(text) = a.as_str() else {
                return Err(cx.err(
                    span.clone(),
                    "listen must be an address string or an array of them",
                ));
            };
            listen.push(
                text.parse::<SocketAddr>()
                    .map_err(|e| cx.err(span.clone(), format!("invalid address {text:?}: {e}")))?,
            );
        }
        let stack = match s.stack.get_ref().as_str() {
            "tcp" => Stack::Tcp,
            "tls" => Stack::Tls,
            "ws" => Stack::Ws,
            "wss" => Stack::Wss,
            "http" => Stack::Http,
            "https" => Stack::Https,
            other => {
                return Err(cx.err(
                    s.stack.span(),
                    format!("unknown stack {other:?} (tcp, tls, ws, wss, http, https)"),
                ))
            }
        };
        let handler = match (&s.handler, stack.is_http()) {
            // On http stacks the routes decide; "router" says so explicitly.
            (None, true) => HandlerKind::Router,
            (None, false) => {
                return Err(cx.err(
                    s.name.span(),
                    format!(
                        "service {name:?}: missing handler (echo, discard, ws-echo, ws-chat, plugin)"
                    ),
                ))
            }
            (Some(h), _) => match h.get_ref().as_str() {
                "echo" => HandlerKind::Echo,
                "discard" => HandlerKind::Discard,
                "ws-echo" => HandlerKind::WsEcho,
                "ws-chat" => HandlerKind::WsChat,
                "pubsub" => HandlerKind::PubSub,
                "plugin" => HandlerKind::Plugin,
                "router" => HandlerKind::Router,
                other => {
                    return Err(cx.err(
                        h.span(),
                        format!(
                            "unknown handler {other:?} (echo, discard, ws-echo, ws-chat, pubsub, plugin, router)"
                        ),
                    ))
                }
            },
        };
        let ws_stack = matches!(stack, Stack::Ws | Stack::Wss);
        let ws_handler = matches!(
            handler,
            HandlerKind::WsEcho | HandlerKind::WsChat | HandlerKind::PubSub
        );
        let fits = match handler {
            HandlerKind::Router => stack.is_http(),
            _ if stack.is_http() => false,
            HandlerKind::Plugin => true,
            _ => ws_stack == ws_handler,
        };
        if !fits {
            let span = s.handler.as_ref().map_or(s.stack.span(), |h| h.span());
            return Err(cx.err(
                span,
                format!(
                    "handler {:?} does not fit stack {:?} (ws/wss stacks take ws-echo or ws-chat; tcp/tls take echo or discard; http/https take routes, handler \"router\" or none)",
                    s.handler.as_ref().map_or("", |h| h.get_ref().as_str()),
                    s.stack.get_ref()
                ),
            ));
        }
        let resolve = |p: &Spanned<String>| -> Result<PathBuf, ConfigError> {
            let path = PathBuf::from(p.get_ref());
            let path = match base {
                Some(b) if path.is_relative() => b.join(path),
                _ => path,
            };
            if !path.is_file() {
                return Err(cx.err(p.span(), format!("file not found: {}", path.display())));
            }
            Ok(path)
        };
        let tls = stack.is_tls();
        // On TLS stacks the header is read before the TLS filter sees a
        // byte (`myriad::proxy::ProxyFilter`).
        let proxy_protocol = s.proxy_protocol.as_ref().is_some_and(|p| *p.get_ref());
        let pubsub = handler == HandlerKind::PubSub;
        let pubsub_publish = s.pubsub_publish.unwrap_or(false);
        if s.pubsub_publish.is_some() && !pubsub {
            return Err(cx.err(
                s.name.span(),
                format!("service {name:?}: pubsub_publish is only valid with handler = \"pubsub\""),
            ));
        }
        let broker = match (&s.broker, &s.broker_url) {
            (None, None) => None,
            (Some(b), _) if !pubsub => {
                return Err(cx.err(b.span(), "broker is only valid with handler = \"pubsub\""))
            }
            (Some(b), Some(u)) => {
                let kind = b.get_ref().as_str();
                if kind != "nats" && kind != "redis" {
                    return Err(cx.err(b.span(), format!("unknown broker {kind:?} (nats, redis)")));
                }
                let url = u.get_ref();
                if !url.starts_with(&format!("{kind}://")) {
                    return Err(cx.err(
                        u.span(),
                        format!("a {kind} broker_url starts with {kind}://"),
                    ));
                }
                Some(BrokerConfig {
                    kind: kind.to_owned(),
                    url: url.clone(),
                })
            }
            (Some(b), None) => return Err(cx.err(b.span(), "broker needs broker_url")),
            (None, Some(u)) => return Err(cx.err(u.span(), "broker_url needs broker")),
        };
        let (cert, key) = match (tls, &s.cert, &s.key) {
            (true, Some(c), Some(k)) => (Some(resolve(c)?), Some(resolve(k)?)),
            (true, _, _) => {
                return Err(cx.err(
                    s.stack.span(),
                    format!(
                        "service {name:?}: stack {:?} needs cert and key",
                        s.stack.get_ref()
                    ),
                ))
            }
            (false, Some(c), _) => {
                return Err(cx.err(c.span(), "cert is only valid with stack tls, wss or https"))
            }
            (false, _, Some(k)) => {
                return Err(cx.err(k.span(), "key is only valid with stack tls, wss or https"))
            }
            (false, None, None) => (None, None),
        };
        let client_ca = match &s.client_ca {
            Some(c) if !tls => {
                return Err(cx.err(
                    c.span(),
                    "client_ca is only valid with stack tls, wss or https",
                ))
            }
            Some(c) => Some(resolve(c)?),
            None => None,
        };
        let dur = |d: &Option<Spanned<String>>| -> Result<Option<Duration>, ConfigError> {
            d.as_ref()
                .map(|d| parse_duration(d.get_ref()).map_err(|e| cx.err(d.span(), e)))
                .transpose()
        };
        let size = |d: &Option<Spanned<String>>| -> Result<Option<usize>, ConfigError> {
            d.as_ref()
                .map(|d| parse_size(d.get_ref()).map_err(|e| cx.err(d.span(), e)))
                .transpose()
        };
        let plugin = match (&s.plugin, handler) {
            (Some(p), HandlerKind::Plugin) => {
                let path = resolve(p)?;
                let framing = match &s.framing {
                    None => None,
                    Some(f) if ws_stack => return Err(cx.err(
                        f.span(),
                        "framing applies to tcp and tls stacks (WebSocket frames its own messages)",
                    )),
                    Some(f) => Some(match f.get_ref().as_str() {
                        "lp32" => Framing::Lp32,
                        "line" => Framing::Line,
                        other => {
                            return Err(
                                cx.err(f.span(), format!("unknown framing {other:?} (lp32, line)"))
                            )
                        }
                    }),
                };
                let mut spec = plugin_spec(&cx, path, p, framing, s.plugin_config.as_ref())?;
                spec.wasm_memory = size(&s.wasm_memory)?;
                spec.wasm_deadline = s
                    .wasm_deadline
                    .as_ref()
                    .map(|d| parse_duration(d.get_ref()).map_err(|e| cx.err(d.span(), e)))
                    .transpose()?;
                wasm_grants(&cx, base, s, &mut spec)?;
                Some(spec)
            }
            (None, HandlerKind::Plugin) => {
                return Err(cx.err(
                    s.handler.as_ref().map_or(s.name.span(), |h| h.span()),
                    format!("service {name:?}: handler \"plugin\" needs plugin = \"PATH\""),
                ))
            }
            (Some(p), HandlerKind::Router) => {
                return Err(cx.err(
                    p.span(),
                    "on http/https stacks a plugin goes in a route: [[service.route]] with ws = \"plugin\" and plugin = \"PATH\"",
                ))
            }
            (Some(p), _) => {
                return Err(cx.err(p.span(), "plugin is only valid with handler = \"plugin\""))
            }
            (None, _) => None,
        };
        if handler != HandlerKind::Plugin {
            if let Some(f) = &s.framing {
                return Err(cx.err(f.span(), "framing is only valid with handler = \"plugin\""));
            }
            if s.plugin_config.is_some() {
                return Err(cx.err(
                    s.name.span(),
                    format!(
                        "service {name:?}: plugin_config is only valid with handler = \"plugin\""
                    ),
                ));
            }
            let grant = s.first_wasm_grant();
            if let Some((key, span)) = grant {
                return Err(cx.err(
                    span,
                    format!("{key} is only valid with handler = \"plugin\" (a .wasm plugin)"),
                ));
            }
        }
        let routes = match (stack.is_http(), s.routes.first()) {
            (true, None) => {
                return Err(cx.err(
                    s.stack.span(),
                    format!(
                        "service {name:?}: stack {:?} needs at least one [[service.route]]",
                        s.stack.get_ref()
                    ),
                ))
            }
            (false, Some(r)) => {
                return Err(cx.err(
                    r.path.span(),
                    "routes are only valid with stack http or https",
                ))
            }
            _ => parse_routes(&cx, base, &s.routes)?,
        };
        let chat_route = routes
            .iter()
            .any(|r| r.kind == RouteKind::Ws(WsRoute::Chat));
        let public = listen.iter().any(|a| !a.ip().is_loopback());
        if public {
            let mut unsafe_ = Vec::new();
            if s.max_connections.is_none() {
                unsafe_.push("max_connections (default: the open-files limit)");
            }
            if s.idle_timeout.is_none() && !ws_stack {
                unsafe_.push("idle_timeout (default: none)");
            }
            if s.allowed_origins.is_empty()
                && ((ws_stack && handler == HandlerKind::WsChat) || chat_route)
            {
                unsafe_.push("allowed_origins (any web page may connect its visitors)");
            }
            if !unsafe_.is_empty() {
                let (line, col) = locate(text, s.name.span().start);
                warnings.push(format!(
                    "{file}:{line}:{col}: warning: service {name:?} listens on a public address without an explicit {}",
                    unsafe_.join(", ")
                ));
            }
        }
        services.push(ServiceConfig {
            name,
            listen,
            stack,
            handler,
            cert,
            key,
            client_ca,
            max_connections: s.max_connections.unwrap_or_else(default_max_connections),
            idle_timeout: dur(&s.idle_timeout)?,
            handshake_timeout: dur(&s.handshake_timeout)?.unwrap_or(Duration::from_secs(10)),
            max_message: size(&s.max_message)?.unwrap_or(1 << 20),
            write_high_water: size(&s.write_high_water)?.unwrap_or(1 << 20),
            max_connections_per_addr: s.max_connections_per_addr.unwrap_or(0),
            max_message_rate: s.max_message_rate.unwrap_or(0),
            message_burst: s
                .message_burst
                .unwrap_or_else(|| s.max_message_rate.unwrap_or(0).saturating_mul(2)),
            send_timeout: dur(&s.send_timeout)?
                .or(Some(Duration::from_secs(30)))
                .filter(|d| !d.is_zero()),
            linger: dur(&s.linger)?
                .or(Some(Duration::from_secs(2)))
                .filter(|d| !d.is_zero()),
            ping_interval: dur(&s.ping_interval)?.filter(|d| !d.is_zero()),
            pong_timeout: dur(&s.pong_timeout)?.unwrap_or(Duration::from_secs(10)),
            deflate: s.deflate.unwrap_or(true),
            deflate_threshold: size(&s.deflate_threshold)?.unwrap_or(64),
            legacy_drafts: s.legacy_drafts.unwrap_or(false),
            proxy_protocol,
            pubsub_publish,
            broker,
            subprotocols: s.subprotocols.clone(),
            allowed_origins: s.allowed_origins.clone(),
            pool_threads: s.pool_threads,
            pool_queue: s.pool_queue.unwrap_or(1024),
            backlog: s.backlog.unwrap_or(4096).max(1),
            plugin,
            routes,
        });
    }
    if services.is_empty() {
        warnings.push(format!(
            "{file}:1:1: warning: no [[service]]: nothing would be served"
        ));
    }
    // A publish route names a pubsub service of the same file.
    for svc in &services {
        for r in &svc.routes {
            if let RouteKind::Publish { service, .. } = &r.kind {
                let ok = services
                    .iter()
                    .any(|o| &o.name == service && o.handler == HandlerKind::PubSub);
                if !ok {
                    return Err(ConfigError::at(
                        &r.location,
                        format!("publish route: no service {service:?} with handler = \"pubsub\""),
                    ));
                }
            }
        }
    }
    let shutdown_grace = match &raw.shutdown_grace {
        None => Duration::from_secs(5),
        Some(d) => parse_duration(d.get_ref()).map_err(|e| cx.err(d.span(), e))?,
    };
    let max_queued_per_loop = match &raw.max_queued_per_loop {
        None => 1 << 30,
        Some(v) => parse_size(v.get_ref()).map_err(|e| cx.err(v.span(), e))? as u64,
    };
    let drain_timeout = match &raw.drain_timeout {
        None => Duration::from_secs(600),
        Some(d) => parse_duration(d.get_ref()).map_err(|e| cx.err(d.span(), e))?,
    };
    Ok(Config {
        shutdown_grace,
        max_queued_per_loop,
        drain_timeout,
        warnings,
        source: file.to_string(),
        io_threads,
        workers,
        backend,
        log_level,
        log_json,
        summary_secs: raw.log.summary_secs.unwrap_or(10),
        metrics,
        services,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse("test.toml", text, None).unwrap_err().to_string()
    }

    #[test]
    fn linger_and_deflate_threshold_keys() {
        let svc = "[[service]]\nname = \"x\"\nlisten = \"127.0.0.1:1\"\nstack = \"ws\"\nhandler = \"ws-echo\"\n";
        let c = parse(
            "f.toml",
            &format!("{svc}linger = \"0s\"\ndeflate_threshold = \"0B\"\n"),
            None,
        )
        .unwrap();
        assert_eq!(c.services[0].linger, None);
        assert_eq!(c.services[0].deflate_threshold, 0);
        let c = parse(
            "f.toml",
            &format!("{svc}linger = \"500ms\"\nping_interval = \"30s\"\npong_timeout = \"5s\"\n"),
            None,
        )
        .unwrap();
        assert_eq!(c.services[0].linger, Some(Duration::from_millis(500)));
        assert_eq!(c.services[0].ping_interval, Some(Duration::from_secs(30)));
        assert_eq!(c.services[0].pong_timeout, Duration::from_secs(5));
        assert!(err(&format!("{svc}deflate_threshold = \"lots\"\n")).starts_with("test.toml:6:21:"));
    }

    #[test]
    fn default_config_is_valid() {
        let c = parse("<default>", DEFAULT_CONFIG, None).unwrap();
        assert_eq!(c.services.len(), 3);
        assert_eq!(c.metrics, Some("127.0.0.1:9100".parse().unwrap()));
    }

    #[test]
    fn safe_defaults_and_warnings() {
        let c = parse("<default>", DEFAULT_CONFIG, None).unwrap();
        let s = &c.services[0];
        assert_eq!(s.max_message, 1 << 20);
        assert_eq!(s.max_connections, default_max_connections());
        assert!(s.max_connections < usize::MAX);
        assert_eq!(c.shutdown_grace, Duration::from_secs(5));
        assert_eq!(s.send_timeout, Some(Duration::from_secs(30)));
        assert_eq!(s.linger, Some(Duration::from_secs(2)));
        assert_eq!(s.ping_interval, None);
        assert_eq!(s.deflate_threshold, 64);
        assert_eq!(c.max_queued_per_loop, 1 << 30);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let public = "shutdown_grace = \"2s\"\n[[service]]\nname = \"x\"\nlisten = \"0.0.0.0:1\"\nstack = \"tcp\"\nhandler = \"echo\"\n";
        let c = parse("f.toml", public, None).unwrap();
        assert_eq!(c.shutdown_grace, Duration::from_secs(2));
        assert_eq!(c.warnings.len(), 1);
        assert!(
            c.warnings[0].starts_with("f.toml:3:8: warning:"),
            "{}",
            c.warnings[0]
        );
        assert!(
            c.warnings[0].contains("max_connections") && c.warnings[0].contains("idle_timeout")
        );
        let limited = public.replace(
            "handler = \"echo\"",
            "handler = \"echo\"\nmax_connections = 10\nidle_timeout = \"1m\"",
        );
        assert!(parse("f.toml", &limited, None).unwrap().warnings.is_empty());
        let empty = parse("e.toml", "", None).unwrap();
        assert!(empty.warnings[0].contains("no [[service]]"));
        assert!(err("[[service]]\nname = \"a b\"\nlisten = \"127.0.0.1:1\"\nstack = \"tcp\"\nhandler = \"echo\"\n").contains("service name"));
    }

    #[test]
    fn wasm_grant_keys() {
        let d = std::env::temp_dir().join(format!("myriad-cfg-grants-{}", std::process::id()));
        std::fs::create_dir_all(d.join("data")).unwrap();
        std::fs::write(d.join("p.wasm"), b"\0asm").unwrap();
        std::fs::write(d.join("p.so"), b"").unwrap();
        let svc = |plugin: &str, extra: &str| {
            format!("[[service]]\nname = \"w\"\nlisten = \"127.0.0.1:1\"\nstack = \"tcp\"\nhandler = \"plugin\"\nplugin = \"{plugin}\"\n{extra}")
        };
        let parse_d = |t: &str| parse("g.toml", t, Some(&d));
        // none: nothing granted
        let c = parse_d(&svc("p.wasm", "")).unwrap();
        let p = c.services[0].plugin.as_ref().unwrap();
        assert_eq!(
            (&p.wasm_read_dir, p.wasm_clock, p.wasm_env.len()),
            (&None, false, 0)
        );
        let c = parse_d(&svc(
            "p.wasm",
            "wasm_read_dir = { host = \"data\", guest = \"/data\" }\nwasm_clock = true\nwasm_env = [\"LANG\", \"GREETING\"]\n",
        ))
        .unwrap();
        let p = c.services[0].plugin.as_ref().unwrap();
        assert_eq!(p.wasm_read_dir, Some((d.join("data"), "/data".to_string())));
        assert!(p.wasm_clock);
        assert_eq!(p.wasm_env, ["LANG", "GREETING"]);
        let e = |extra: &str| parse_d(&svc("p.wasm", extra)).unwrap_err().to_string();
        let missing = e("wasm_read_dir = { host = \"nope\", guest = \"/d\" }\n");
        assert!(
            missing.starts_with("g.toml:7:26:") && missing.contains("directory not found"),
            "{missing}"
        );
        let rel = e("wasm_read_dir = { host = \"data\", guest = \"data\" }\n");
        assert!(
            rel.starts_with("g.toml:7:42:") && rel.contains("must be absolute"),
            "{rel}"
        );
        let up = e("wasm_read_dir = { host = \"data\", guest = \"/a/../b\" }\n");
        assert!(up.contains("without \"..\""), "{up}");
        let extra = e("wasm_read_dir = { host = \"data\", guest = \"/d\", mode = \"rw\" }\n");
        assert!(
            extra.starts_with("g.toml:7:") && extra.contains("mode"),
            "{extra}"
        );
        let env = e("wasm_env = [\"A=B\"]\n");
        assert!(
            env.starts_with("g.toml:7:12:") && env.contains("not a variable name"),
            "{env}"
        );
        // a native plugin is not sandboxed: the keys would mislead
        let native = parse_d(&svc("p.so", "wasm_clock = true\n"))
            .unwrap_err()
            .to_string();
        assert!(
            native.starts_with("g.toml:7:14:") && native.contains("WebAssembly plugins"),
            "{native}"
        );
        let echo = "[[service]]\nname = \"e\"\nlisten = \"127.0.0.1:1\"\nstack = \"tcp\"\nhandler = \"echo\"\nwasm_env = [\"A\"]\n";
        let other = parse_d(echo).unwrap_err().to_string();
        assert!(
            other.starts_with("g.toml:6:12:") && other.contains("only valid with handler"),
            "{other}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn unknown_key_is_an_error_with_location() {
        let e = err("backend = \"auto\"\nbogus = 1\n");
        assert!(e.starts_with("test.toml:2:1:"), "{e}");
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn unknown_service_key() {
        let e = err("[[service]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nstack = \"tcp\"\nhandler = \"echo\"\nmax_conns = 5\n");
        assert!(e.starts_with("test.toml:6:1:"), "{e}");
        assert!(e.contains("max_conns"), "{e}");
    }

    #[test]
    fn unknown_backend_names_the_choices() {
        let e = err("io_threads = 1\nbackend = \"kqueue\"\n");
        assert!(e.starts_with("test.toml:2:11:"), "{e}");
        assert!(
            e.contains("unknown backend `kqueue` (expected auto, io_uring or epoll)"),
            "{e}"
        );
        let c = parse("test.toml", "backend = \"io-uring\"\n", None).unwrap();
        assert_eq!(c.backend, myriad::BackendKind::IoUring);
    }

    #[test]
    fn bad_type() {
        let e = err("io_threads = \"two\"\n");
        assert!(e.starts_with("test.toml:1:14:"), "{e}");
    }

    #[test]
    fn bad_address() {
        let e = err("[[service]]\nname = \"a\"\nlisten = \"localhost:99999\"\nstack = \"tcp\"\nhandler = \"echo\"\n");
        assert!(e.starts_with("test.toml:3:10:"), "{e}");
        assert!(e.contains("invalid address"), "{e}");
    }

    #[test]
    fn missing_cert_file() {
        let e = err("[[service]]\nname = \"t\"\nlisten = \"127.0.0.1:1\"\nstack = \"tls\"\nhandler = \"echo\"\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n");
        assert!(e.starts_with("test.toml:6:8:"), "{e}");
        assert!(e.contains("file not found"), "{e}");
    }

    #[test]
    fn handler_stack_mismatch_and_bad_duration() {
        let e = err("[[service]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nstack = \"tcp\"\nhandler = \"ws-echo\"\n");
        assert!(e.contains("does not fit"), "{e}");
        let e = err("[[service]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nstack = \"tcp\"\nhandler = \"echo\"\nidle_timeout = \"5 fortnights\"\n");
        assert!(e.starts_with("test.toml:6:16:"), "{e}");
    }

    #[test]
    fn proxy_protocol_key() {
        let base = "[[service]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nstack = \"ws\"\nhandler = \"ws-echo\"\n";
        let c = parse("test.toml", &format!("{base}proxy_protocol = true\n"), None).unwrap();
        assert!(c.services[0].proxy_protocol);
        let c = parse("test.toml", base, None).unwrap();
        assert!(!c.services[0].proxy_protocol);
        let e = err(&format!("{base}proxy_protocol = \"yes\"\n"));
        assert!(e.starts_with("test.toml:6:18:"), "{e}");
    }

    #[test]
    fn pubsub_keys_and_publish_routes() {
        let ps = "[[service]]\nname = \"push\"\nlisten = \"127.0.0.1:1\"\nstack = \"ws\"\nhandler = \"pubsub\"\n";
        let c = parse("test.toml", &format!("{ps}pubsub_publish = true\nbroker = \"nats\"\nbroker_url = \"nats://127.0.0.1:4222\"\n"), None).unwrap();
        assert_eq!(c.services[0].handler, HandlerKind::PubSub);
        assert!(c.services[0].pubsub_publish);
        assert_eq!(
            c.services[0].broker.as_ref().map(|b| b.kind.as_str()),
            Some("nats")
        );
        let e = err(&format!(
            "{ps}broker = \"kafka\"\nbroker_url = \"kafka://x\"\n"
        ));
        assert!(
            e.starts_with("test.toml:6:10:") && e.contains("unknown broker"),
            "{e}"
        );
        let e = err(&format!(
            "{ps}broker = \"redis\"\nbroker_url = \"nats://x\"\n"
        ));
        assert!(e.starts_with("test.toml:7:14:"), "{e}");
        let e = err(&format!("{ps}broker = \"redis\"\n"));
        assert!(e.contains("needs broker_url"), "{e}");
        let api = "[[service]]\nname = \"api\"\nlisten = \"127.0.0.1:2\"\nstack = \"http\"\n[[service.route]]\npath = \"/publish/:topic\"\npublish = \"push\"\n";
        let tok = "token = \"0123456789abcdef\"\n";
        let c = parse("test.toml", &format!("{ps}{api}{tok}"), None).unwrap();
        assert!(
            matches!(&c.services[1].routes[0].kind, RouteKind::Publish { service, .. } if service == "push")
        );
        let e = err(&format!("{ps}{api}"));
        assert!(
            e.starts_with("test.toml:12:11:") && e.contains("needs token"),
            "{e}"
        );
        let e = err(&format!("{ps}{api}token = \"short\"\n"));
        assert!(e.contains("at least 16"), "{e}");
        let e = err(&format!("{}{tok}", api.replace("\"push\"", "\"nobody\"")));
        assert!(
            e.starts_with("test.toml:6:8:") && e.contains("no service \"nobody\""),
            "{e}"
        );
        let e = err(&format!(
            "{ps}{}{tok}",
            api.replace("/publish/:topic", "/publish")
        ));
        assert!(e.contains(":topic parameter"), "{e}");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert!(parse_size("12 parsecs").is_err());
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
    }
}

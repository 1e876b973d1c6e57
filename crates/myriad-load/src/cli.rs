//! Command-line flags and their parsers.
//!
//! Every value that can be wrong (URL, port, count, size or size range,
//! duration, rate, address range) has its own parser, so that clap reports a
//! bad value as one line naming the flag; `main` prints that line and exits
//! with status 2.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::payload::SizeRange;

/// Largest message payload accepted by `--size`.
pub const MAX_SIZE: u64 = 16 << 20;
/// Most source addresses `--source-ips` may name.
pub const MAX_SOURCE_IPS: usize = 65_536;

/// Target protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `tcp://`: raw echo stream.
    Tcp,
    /// `ws://`: RFC 6455 WebSocket.
    Ws,
    /// `tls://`: raw echo stream over TLS.
    Tls,
    /// `wss://`: WebSocket over TLS.
    Wss,
    /// `http://`: HTTP/1.1 requests on keep-alive connections.
    Http,
    /// `https://`: the same over TLS.
    Https,
}

impl Scheme {
    /// Whether the scheme runs over TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Tls | Scheme::Wss | Scheme::Https)
    }

    /// Whether the scheme speaks HTTP/1.1.
    pub fn is_http(self) -> bool {
        matches!(self, Scheme::Http | Scheme::Https)
    }

    /// The port of a URL without one (`None`: the URL must name it).
    pub fn default_port(self) -> Option<u16> {
        match self {
            Scheme::Ws | Scheme::Http => Some(80),
            Scheme::Wss | Scheme::Https => Some(443),
            Scheme::Tcp | Scheme::Tls => None,
        }
    }

    /// Whether the scheme speaks WebSocket.
    pub fn is_ws(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }
}

/// A parsed target URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// Protocol.
    pub scheme: Scheme,
    /// Host as written, without the brackets of an IPv6 address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path (WebSocket or HTTP request target, query included, fragment
    /// dropped), `/` if none.
    pub path: String,
    /// Resolved address.
    pub addr: SocketAddr,
}

/// `--framing`: how TCP messages are delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Framing {
    /// Raw bytes; the echo is matched by byte count.
    None,
    /// 4-byte big-endian length prefix per message.
    Lp32,
}

/// `--backend`: the engine backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// io_uring where allowed, else epoll.
    Auto,
    /// io_uring only.
    #[value(name = "io_uring", alias = "io-uring", alias = "uring")]
    IoUring,
    /// epoll only.
    Epoll,
}

/// Source addresses for outbound connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIps(pub Vec<IpAddr>);

/// myriad-load: load generator and echo verifier for Myriad (and any echo
/// or HTTP/1.1 server).
///
/// Opens many connections to an echo server over Myriad's own connector,
/// sends messages whose every byte is checked when it comes back, and reports
/// messages/s, MB/s, latency percentiles (HDR histograms) and errors by kind.
/// With an http:// target, a message is a request on a keep-alive
/// connection (--window of them pipelined), its response checked for status
/// and body. Exit status: 0 ok, 1 errors (more than --allow-errors), 2 bad
/// usage.
#[derive(Parser, Debug, Clone)]
#[command(name = "myriad-load", version, max_term_width = 100)]
pub struct Args {
    /// Target: tcp://HOST:PORT (raw echo), ws://HOST[:PORT][/PATH]
    /// (WebSocket echo), http://HOST[:PORT][/PATH] (HTTP/1.1 requests, see
    /// --method and --expect-echo), and the same over TLS: tls://HOST:PORT,
    /// wss://HOST[:PORT][/PATH], https://HOST[:PORT][/PATH] (see --ca,
    /// --insecure, --sni).
    #[arg(value_name = "URL", value_parser = parse_target)]
    pub target: Target,

    /// Concurrent connections (in all processes together).
    #[arg(short = 'c', long, value_name = "N", default_value = "10", value_parser = parse_count_nonzero)]
    pub connections: u64,

    /// Open connections at this rate (per second, all processes together);
    /// default: as fast as --connect-concurrency allows.
    #[arg(long, value_name = "R", value_parser = parse_rate, conflicts_with = "batch")]
    pub connect_rate: Option<f64>,

    /// Open connections in batches of B (with --batch-delay).
    #[arg(long, value_name = "B", value_parser = parse_count_nonzero)]
    pub batch: Option<u64>,

    /// Pause between batches.
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "1s", requires = "batch")]
    pub batch_delay: Duration,

    /// Connection attempts in flight at once, per process.
    #[arg(long, value_name = "N", default_value = "1000", value_parser = parse_count_nonzero)]
    pub connect_concurrency: u64,

    /// Give up on a connect after this long.
    #[arg(long, value_name = "D", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Measured time (after all connections are up and the warm-up); default
    /// 10s, or until --messages are done.
    #[arg(short = 'd', long, value_name = "D", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Time after all connections are up during which messages are not
    /// measured. With 0, everything from the first connection counts.
    #[arg(long, value_name = "D", default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Message payload size in bytes (suffixes k, m), or a range MIN..MAX
    /// drawn per message (HTTP: the request body of a method that sends
    /// one).
    #[arg(short = 's', long, value_name = "B|MIN..MAX", default_value = "64", value_parser = parse_size_range)]
    pub size: SizeRange,

    /// Messages per connection, then the connection closes.
    #[arg(short = 'm', long, value_name = "M", value_parser = parse_count_nonzero)]
    pub messages: Option<u64>,

    /// Messages in flight per connection (closed loop; also the cap in
    /// open-loop mode).
    #[arg(short = 'w', long, value_name = "W", default_value = "1", value_parser = parse_window)]
    pub window: u64,

    /// Open loop: send this many messages per second in total; latency is
    /// measured from each message's intended send time (coordinated
    /// omission corrected, as wrk2 does).
    #[arg(long, value_name = "R", value_parser = parse_rate, conflicts_with_all = ["rate_per_conn", "send_after_recv"])]
    pub rate: Option<f64>,

    /// Open loop: messages per second per connection.
    #[arg(long, value_name = "R", value_parser = parse_rate, conflicts_with = "send_after_recv")]
    pub rate_per_conn: Option<f64>,

    /// Send the next message only after the echo of the previous one came
    /// back (one in flight), waiting --think in between.
    #[arg(long)]
    pub send_after_recv: bool,

    /// Pause between an echo and the next message (implies
    /// --send-after-recv).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub think: Option<Duration>,

    /// Open the connections, echo once on each, then hold them idle for D,
    /// re-verifying a sample (--hold-sample) with one echo each during the
    /// hold.
    #[arg(long, value_name = "D", value_parser = parse_duration,
          conflicts_with_all = ["rate", "rate_per_conn", "send_after_recv", "think", "messages", "duration", "connect_only"])]
    pub hold: Option<Duration>,

    /// Percentage of held connections re-verified during --hold.
    #[arg(long, value_name = "PCT", default_value = "10", value_parser = parse_percent)]
    pub hold_sample: f64,

    /// Connection-rate mode: each connection connects, echoes once and
    /// closes; reports connections per second.
    #[arg(long, conflicts_with_all = ["rate", "rate_per_conn", "send_after_recv", "think", "messages", "duration"])]
    pub connect_only: bool,

    /// Do not check the echoed bytes (they are still counted).
    #[arg(long)]
    pub no_verify: bool,

    /// Exit 0 as long as at most N errors happened.
    #[arg(long, value_name = "N", default_value = "0", value_parser = parse_count)]
    pub allow_errors: u64,

    /// TCP message framing.
    #[arg(long, value_enum, default_value = "none")]
    pub framing: Framing,

    /// WebSocket: send text messages instead of binary.
    #[arg(long)]
    pub text: bool,

    /// WebSocket: offer permessage-deflate as browsers do
    /// (`permessage-deflate; client_max_window_bits`) and follow the
    /// server's answer (context takeover, window sizes).
    #[arg(long)]
    pub deflate: bool,

    /// An echo not back within this long is an error (timeout).
    #[arg(long, value_name = "D", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// HTTP: request method. GET and HEAD send no body; any other method
    /// sends a body of --size bytes with Content-Length.
    #[arg(long, value_name = "METHOD", default_value = "GET", value_parser = parse_method, help_heading = "HTTP")]
    pub method: String,

    /// HTTP: the status every response must have; another status counts
    /// as an `http_status` error (the connection goes on).
    #[arg(long, value_name = "CODE", default_value = "200", value_parser = parse_status, help_heading = "HTTP")]
    pub expect_status: u16,

    /// HTTP: the response body must be the request body (an echo server,
    /// e.g. myriad-http's http_echo), checked byte by byte. Default: any
    /// body (its length still checked against Content-Length or the
    /// chunked framing).
    #[arg(long, help_heading = "HTTP")]
    pub expect_echo: bool,

    /// HTTP: largest response head (status line and header fields)
    /// accepted.
    #[arg(long, value_name = "B", default_value = "16k", value_parser = parse_max_head, help_heading = "HTTP")]
    pub max_head: u64,

    /// HTTP: largest response body accepted (bodies are checked as they
    /// arrive, never stored).
    #[arg(long, value_name = "B", default_value = "64m", value_parser = parse_max_body, help_heading = "HTTP")]
    pub max_body: u64,

    /// Spread the connections over P child processes (each its own engine
    /// and open-files limit) and merge their results.
    #[arg(short = 'p', long, value_name = "P", default_value = "1", value_parser = parse_processes)]
    pub processes: u32,

    /// Local source addresses to spread connections over: a list of
    /// addresses, ranges (127.0.0.2-127.0.0.60) or CIDR blocks
    /// (127.0.1.0/24), separated by commas.
    #[arg(long, value_name = "IPS", value_parser = parse_source_ips)]
    pub source_ips: Option<SourceIps>,

    /// Event-loop threads per process (default: the CPUs this process may
    /// use, divided among the processes).
    #[arg(short = 't', long, value_name = "T", value_parser = parse_threads)]
    pub threads: Option<usize>,

    /// Engine backend.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendArg,

    /// TLS (tls://, wss://, https://): trust the CA certificates in this PEM file
    /// (default: the system's CA bundle).
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub ca: Option<PathBuf>,

    /// TLS: do not verify the server's certificate at all (any CA, any
    /// name, expired). FOR TESTING ONLY: the connection is encrypted but
    /// not authenticated. Handshake signatures are still checked.
    #[arg(long, conflicts_with = "ca", help_heading = "TLS")]
    pub insecure: bool,

    /// TLS: server name sent as SNI and checked against the certificate
    /// (default: the URL's host; an IP address is checked against the
    /// certificate's IP entries and not sent as SNI).
    #[arg(long, value_name = "NAME", help_heading = "TLS")]
    pub sni: Option<String>,

    /// TLS: offer these ALPN protocols (comma separated, in order of
    /// preference), e.g. http/1.1.
    #[arg(
        long,
        value_name = "PROTOS",
        value_delimiter = ',',
        help_heading = "TLS"
    )]
    pub alpn: Vec<String>,

    /// TLS: resume sessions (TLS 1.3 tickets, TLS 1.2 session ids) from a
    /// cache shared by all connections of a process. Default: every
    /// connection makes a full handshake.
    #[arg(long, help_heading = "TLS")]
    pub tls_resume: bool,

    /// TLS: protocol versions offered.
    #[arg(
        long,
        value_enum,
        value_name = "V",
        default_value = "any",
        help_heading = "TLS"
    )]
    pub tls_version: crate::tls::TlsVersion,

    /// TLS: present this client certificate chain (PEM; mutual TLS).
    #[arg(
        long,
        value_name = "FILE",
        requires = "client_key",
        help_heading = "TLS"
    )]
    pub client_cert: Option<PathBuf>,

    /// TLS: private key of --client-cert (PEM).
    #[arg(
        long,
        value_name = "FILE",
        requires = "client_cert",
        help_heading = "TLS"
    )]
    pub client_key: Option<PathBuf>,

    /// TLS: a handshake not done within this long is an error
    /// (tls_handshake_timeout). Counted from the TCP connection.
    #[arg(long, value_name = "D", default_value = "10s", value_parser = parse_duration, help_heading = "TLS")]
    pub handshake_timeout: Duration,

    /// io_uring: let each loop sleep until N completions are pending, or
    /// until D has passed with at least one (Linux 6.12+; ignored
    /// elsewhere): fewer, larger loop turns for a busy load generator, at
    /// the price of up to D of added latency while fewer than N echoes are
    /// due. Off by default. Example: 32/50us.
    #[arg(long, value_name = "N/D", value_parser = parse_batch_wait)]
    pub batch_wait: Option<(u32, Duration)>,

    /// Close connections with FIN instead of RST (RST leaves no TIME_WAIT
    /// behind on this side).
    #[arg(long)]
    pub fin_close: bool,

    /// No progress line.
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write a self-contained HTML report with charts to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Internal: run as child INDEX of COUNT (INDEX/COUNT) of --processes.
    #[arg(long, hide = true, value_name = "INDEX/COUNT", value_parser = parse_child)]
    pub child: Option<(u32, u32)>,
}

/// Parses a target URL.
pub fn parse_target(s: &str) -> Result<Target, String> {
    let (scheme, rest) = s.split_once("://").ok_or_else(|| {
        "expected SCHEME://HOST:PORT (tcp://, ws://, http://, tls://, wss:// or https://)"
            .to_string()
    })?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "tcp" => Scheme::Tcp,
        "ws" => Scheme::Ws,
        "tls" => Scheme::Tls,
        "wss" => Scheme::Wss,
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => {
            return Err(format!(
                "unknown scheme `{other}` (expected tcp, ws, http, tls, wss or https)"
            ))
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    // A fragment is not part of the request target.
    let path = path.split_once('#').map_or(path, |(p, _)| p);
    let path = if path.is_empty() { "/" } else { path };
    if scheme.default_port().is_none() && path != "/" {
        return Err("a tcp:// or tls:// URL has no path".into());
    }
    // The path goes into a request line as it is: visible ASCII only.
    if authority.contains('@') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("unexpected characters in URL".into());
    }
    let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
        let (h, after) = stripped
            .split_once(']')
            .ok_or_else(|| "unclosed `[` in IPv6 host".to_string())?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err("expected `:PORT` after `]`".into()),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("invalid port `{p}` (1..65535)"))?,
        None => scheme
            .default_port()
            .ok_or("missing port (tcp://HOST:PORT, tls://HOST:PORT)")?,
    };
    let addr = match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => {
            let mut addrs: Vec<SocketAddr> = (host, port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve host `{host}`: {e}"))?
                .collect();
            addrs.sort_by_key(|a| !a.is_ipv4());
            *addrs
                .first()
                .ok_or_else(|| format!("host `{host}` has no address"))?
        }
    };
    Ok(Target {
        url: s.to_string(),
        scheme,
        host: host.to_string(),
        port,
        path: path.to_string(),
        addr,
    })
}

fn split_suffix(s: &str) -> (&str, &str) {
    let i = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    (&s[..i], s[i..].trim())
}

fn parse_number(num: &str, what: &str) -> Result<f64, String> {
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{num}` is not a {what}"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("`{num}` is not a {what}"));
    }
    Ok(v)
}

/// Parses a count: `1000`, `10k`, `1M`.
pub fn parse_count(s: &str) -> Result<u64, String> {
    let (num, suf) = split_suffix(s.trim());
    let mult = match suf {
        "" => 1.0,
        "k" | "K" => 1e3,
        "m" | "M" => 1e6,
        _ => return Err(format!("`{s}` is not a count (examples: 100, 10k, 1M)")),
    };
    let v = parse_number(num, "count")? * mult;
    if v.fract() != 0.0 || v > 1e15 {
        return Err(format!("`{s}` is not a whole count"));
    }
    Ok(v as u64)
}

/// A count of at least 1.
pub fn parse_count_nonzero(s: &str) -> Result<u64, String> {
    match parse_count(s)? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

fn parse_window(s: &str) -> Result<u64, String> {
    match parse_count_nonzero(s)? {
        n if n > 65_536 => Err("at most 65536 messages in flight per connection".into()),
        n => Ok(n),
    }
}

/// Parses `--method`: an HTTP token (RFC 9110), at most 32 characters.
pub fn parse_method(s: &str) -> Result<String, String> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if s.is_empty() || s.len() > 32 || !s.bytes().all(tchar) {
        return Err(format!("`{s}` is not an HTTP method (GET, POST, PUT, ...)"));
    }
    Ok(s.to_string())
}

fn parse_status(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .ok_or_else(|| format!("`{s}` is not a final status code (200..599)"))
}

/// Parses a byte limit like [`parse_size`] (suffixes k, m, g) within
/// `min..=max`.
fn parse_limit(s: &str, min: u64, max: u64) -> Result<u64, String> {
    let (num, suf) = split_suffix(s.trim());
    let mult: u64 = match suf.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("`{s}` is not a size (examples: 16k, 64m)")),
    };
    let v = num
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{s}` is not a whole number of bytes"))?;
    if !(min..=max).contains(&v) {
        return Err(format!("`{s}` is outside {min}..{max} bytes"));
    }
    Ok(v)
}

fn parse_max_head(s: &str) -> Result<u64, String> {
    parse_limit(s, 64, 1 << 20)
}

fn parse_max_body(s: &str) -> Result<u64, String> {
    parse_limit(s, 1, 1 << 40)
}

fn parse_processes(s: &str) -> Result<u32, String> {
    match parse_count_nonzero(s)? {
        n if n > 256 => Err("at most 256 processes".into()),
        n => Ok(n as u32),
    }
}

fn parse_threads(s: &str) -> Result<usize, String> {
    match parse_count_nonzero(s)? {
        n if n > 255 => Err("at most 255 threads".into()),
        n => Ok(n as usize),
    }
}

/// Parses a rate (per second): `5000`, `2.5k`, `1M`; must be positive.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let (num, suf) = split_suffix(s.trim());
    let mult = match suf.trim_end_matches("/s") {
        "" => 1.0,
        "k" | "K" => 1e3,
        "m" | "M" => 1e6,
        _ => return Err(format!("`{s}` is not a rate (examples: 500, 20k)")),
    };
    let v = parse_number(num, "rate")? * mult;
    if v <= 0.0 || v > 1e12 {
        return Err(format!("`{s}`: the rate must be positive"));
    }
    Ok(v)
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let v = parse_number(s.trim().trim_end_matches('%'), "percentage")?;
    if v > 100.0 {
        return Err("a percentage is 0..100".into());
    }
    Ok(v)
}

/// Parses a duration: `10s`, `500ms`, `2m`, `1h`, `1.5s`; a bare number is
/// seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, suf) = split_suffix(s.trim());
    if num.is_empty() {
        return Err(format!(
            "`{s}` is not a duration (examples: 10s, 500ms, 2m)"
        ));
    }
    let mult = match suf {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "`{s}` is not a duration (examples: 10s, 500ms, 2m)"
            ))
        }
    };
    let v = parse_number(num, "duration")? * mult;
    if v > 30.0 * 86_400.0 {
        return Err(format!("`{s}` is longer than 30 days"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Parses a byte size: `64`, `4k` (4096), `1m`, `2KiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (num, suf) = split_suffix(s.trim());
    let mult: u64 = match suf.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return Err(format!("`{s}` is not a size (examples: 64, 4k, 1m)")),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number of bytes"))?;
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))?;
    if v == 0 {
        return Err("a message has at least 1 byte".into());
    }
    if v > MAX_SIZE {
        return Err(format!("`{s}` is over the limit of 16m"));
    }
    Ok(v)
}

/// Parses `--size`: one size or `MIN..MAX`.
pub fn parse_size_range(s: &str) -> Result<SizeRange, String> {
    match s.split_once("..") {
        None => {
            let v = parse_size(s)? as u32;
            Ok(SizeRange { min: v, max: v })
        }
        Some((a, b)) => {
            let (min, max) = (parse_size(a)? as u32, parse_size(b)? as u32);
            if min > max {
                return Err(format!("empty range `{s}` (MIN > MAX)"));
            }
            Ok(SizeRange { min, max })
        }
    }
}

fn parse_v4(s: &str) -> Result<Ipv4Addr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("`{}` is not an IPv4 address", s.trim()))
}

/// Parses `--source-ips`: addresses, `A-B` ranges and CIDR blocks, comma
/// separated.
pub fn parse_source_ips(s: &str) -> Result<SourceIps, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        if let Some((a, b)) = item.split_once('-') {
            let (a, b) = (u32::from(parse_v4(a)?), u32::from(parse_v4(b)?));
            if a > b {
                return Err(format!("empty range `{item}`"));
            }
            if (b - a) as usize >= MAX_SOURCE_IPS {
                return Err(format!(
                    "range `{item}` has more than {MAX_SOURCE_IPS} addresses"
                ));
            }
            out.extend((a..=b).map(|v| IpAddr::V4(Ipv4Addr::from(v))));
        } else if let Some((a, bits)) = item.split_once('/') {
            let base = u32::from(parse_v4(a)?);
            let bits: u32 = bits
                .parse()
                .ok()
                .filter(|b| *b <= 32)
                .ok_or_else(|| format!("`/{bits}` is not a prefix length (0..32)"))?;
            let host_bits = 32 - bits;
            if host_bits > 16 {
                return Err(format!(
                    "block `{item}` has more than {MAX_SOURCE_IPS} addresses"
                ));
            }
            let mask = if bits == 0 { 0 } else { u32::MAX << host_bits };
            let net = base & mask;
            let count = 1u32 << host_bits;
            // Skip the network and broadcast addresses of blocks that have them.
            let (first, last) = if count >= 4 {
                (net + 1, net + count - 2)
            } else {
                (net, net + count - 1)
            };
            out.extend((first..=last).map(|v| IpAddr::V4(Ipv4Addr::from(v))));
        } else {
            let ip: IpAddr = item
                .parse()
                .map_err(|_| format!("`{item}` is not an address, range or CIDR block"))?;
            out.push(ip);
        }
        if out.len() > MAX_SOURCE_IPS {
            return Err(format!("more than {MAX_SOURCE_IPS} addresses"));
        }
    }
    if out.is_empty() {
        return Err("no addresses".into());
    }
    Ok(SourceIps(out))
}

fn parse_batch_wait(s: &str) -> Result<(u32, Duration), String> {
    let (n, d) = s
        .split_once('/')
        .ok_or("expected COMPLETIONS/DELAY, e.g. 32/50us")?;
    let n = parse_count_nonzero(n)?;
    if !(2..=4096).contains(&n) {
        return Err("COMPLETIONS is 2..4096".into());
    }
    let d = parse_duration(d)?;
    if d < Duration::from_micros(1) || d > Duration::from_secs(1) {
        return Err("DELAY is 1us..1s".into());
    }
    Ok((n as u32, d))
}

fn parse_child(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s.split_once('/').ok_or("expected INDEX/COUNT")?;
    let (a, b): (u32, u32) = (
        a.parse().map_err(|_| "bad index")?,
        b.parse().map_err(|_| "bad count")?,
    );
    if a >= b {
        return Err("index out of range".into());
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("tcp://127.0.0.1:7000").unwrap();
        assert_eq!((t.scheme, t.port), (Scheme::Tcp, 7000));
        assert_eq!(t.addr, "127.0.0.1:7000".parse().unwrap());
        let t = parse_target("ws://127.0.0.1/chat?x=1").unwrap();
        assert_eq!(
            (t.scheme, t.port, t.path.as_str()),
            (Scheme::Ws, 80, "/chat?x=1")
        );
        let t = parse_target("ws://[::1]:9000").unwrap();
        assert_eq!(t.addr, "[::1]:9000".parse().unwrap());
        assert!(parse_target("tcp://127.0.0.1").is_err());
        assert!(parse_target("tcp://127.0.0.1:99999").is_err());
        assert!(parse_target("tcp://127.0.0.1:0").is_err());
        assert!(parse_target("127.0.0.1:80").is_err());
        assert!(parse_target("ftp://x:1").is_err());
        let t = parse_target("http://127.0.0.1/a/b?c=d#frag").unwrap();
        assert_eq!(
            (t.scheme, t.port, t.path.as_str()),
            (Scheme::Http, 80, "/a/b?c=d")
        );
        let t = parse_target("https://[::1]:8443").unwrap();
        assert_eq!(
            (t.scheme, t.port, t.path.as_str()),
            (Scheme::Https, 8443, "/")
        );
        assert_eq!(t.host, "::1");
        assert_eq!(parse_target("https://127.0.0.1").unwrap().port, 443);
        assert!(parse_target("http://127.0.0.1/a\u{7f}").is_err());
        assert!(parse_target("http://127.0.0.1/caf\u{e9}").is_err());
        let t = parse_target("wss://127.0.0.1/chat").unwrap();
        assert_eq!(
            (t.scheme, t.port, t.path.as_str()),
            (Scheme::Wss, 443, "/chat")
        );
        let t = parse_target("tls://127.0.0.1:8443").unwrap();
        assert_eq!((t.scheme, t.port), (Scheme::Tls, 8443));
        assert!(parse_target("tls://127.0.0.1").is_err());
        assert!(parse_target("tls://127.0.0.1:1/x").is_err());
    }

    #[test]
    fn http_values() {
        assert_eq!(parse_method("POST").unwrap(), "POST");
        for bad in ["", "GE T", "GET\r\n", "P/OST"] {
            assert!(parse_method(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_status("404"), Ok(404));
        for bad in ["100", "600", "2xx", "-1"] {
            assert!(parse_status(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_max_head("16k"), Ok(16 << 10));
        assert_eq!(parse_max_body("2g"), Ok(2 << 30));
        assert!(parse_max_head("2m").is_err());
        assert!(parse_max_body("0").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        for bad in ["", "x", "-1s", "10parsecs", "1e400"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(
            parse_size_range("64").unwrap(),
            SizeRange { min: 64, max: 64 }
        );
        assert_eq!(
            parse_size_range("64..4k").unwrap(),
            SizeRange { min: 64, max: 4096 }
        );
        for bad in ["0", "4096..64", "abc", "64..", "17m", "1.5k"] {
            assert!(parse_size_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn counts_and_rates() {
        assert_eq!(parse_count("10k").unwrap(), 10_000);
        assert_eq!(parse_count("1M").unwrap(), 1_000_000);
        assert!(parse_count("1.5").is_err());
        assert!(parse_count_nonzero("0").is_err());
        assert_eq!(parse_rate("2.5k").unwrap(), 2500.0);
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn source_ips() {
        let r = parse_source_ips("127.0.0.2-127.0.0.60").unwrap();
        assert_eq!(r.0.len(), 59);
        let r = parse_source_ips("127.0.1.0/24").unwrap();
        assert_eq!(r.0.len(), 254);
        assert_eq!(r.0[0], "127.0.1.1".parse::<IpAddr>().unwrap());
        let r = parse_source_ips("127.0.0.5, 127.0.0.7/32").unwrap();
        assert_eq!(r.0.len(), 2);
        for bad in ["127.0.0.9-127.0.0.2", "127.0.0.0/33", "x", "10.0.0.0/8", ""] {
            assert!(parse_source_ips(bad).is_err(), "{bad}");
        }
    }
}

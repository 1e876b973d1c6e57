//! The PROXY protocol (versions 1 and 2, as sent by HAProxy's `send-proxy`
//! and `send-proxy-v2`): a load balancer in front of the server prepends a
//! header with the client's address to each connection.
//!
//! * [`parse`]: a sans-I/O parser, strict and bounded (a v1 line is at most
//!   107 bytes, a v2 header at most [`MAX_V2_LEN`]); it fails at the first
//!   byte that cannot start a header, so a client that speaks directly to
//!   the listener is refused at once. It never panics on any input.
//! * [`ProxyProtocol`]: a [`Handler`] wrapper that consumes the header
//!   before the inner handler sees any byte (the inner `on_open` runs only
//!   then), closes a connection whose header is missing, malformed or not
//!   complete within its deadline, and records the client's address, which
//!   [`client_addr`] returns in place of the socket's peer.
//! * [`ProxyFilter`]: the same in front of a [`Filter`] (TLS behind a load
//!   balancer in TCP mode): the header is read from the raw stream before
//!   the filter sees a byte; [`proxied`] picks one or the other.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use std::sync::Arc;

use crate::engine::Service;
use crate::filter::{Filter, FilterError, FilterFactory, Outbound};
use crate::handler::{CloseReason, Handler};
use crate::reactor::{ConnId, Ctx};

/// The 12-byte signature that starts a version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Longest version 2 header accepted (16 fixed bytes, addresses and TLVs):
/// HAProxy's headers without TLVs are 28 (IPv4) and 52 (IPv6) bytes.
pub const MAX_V2_LEN: usize = 2048;

/// Longest version 1 line, CRLF included (the specification's bound).
pub const MAX_V1_LEN: usize = 107;

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyHeader {
    /// A proxied TCP connection: the client's address and the address it
    /// connected to on the proxy.
    Proxied {
        /// The client (the original source).
        source: SocketAddr,
        /// The proxy's address that the client connected to.
        destination: SocketAddr,
    },
    /// The proxy's own connection (a health check: v2 `LOCAL`), or a
    /// protocol it does not describe (v1 `UNKNOWN`, v2 `UNSPEC`): the
    /// socket's addresses stand.
    Local,
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The first bytes are neither `PROXY ` nor the v2 signature.
    #[error("no PROXY protocol header")]
    NotProxy,
    /// A v1 line without CRLF within 107 bytes.
    #[error("PROXY v1 line longer than 107 bytes")]
    V1TooLong,
    /// A v1 line that does not follow the grammar.
    #[error("malformed PROXY v1 line")]
    V1Malformed,
    /// A v2 version other than 2, or a command other than LOCAL/PROXY.
    #[error("PROXY v2 header with a bad version or command")]
    V2BadVersion,
    /// A v2 address family or transport other than TCP over IPv4/IPv6
    /// (or UNSPEC).
    #[error("PROXY v2 header with an unsupported family or transport")]
    V2Unsupported,
    /// A v2 length too short for its addresses, or over [`MAX_V2_LEN`].
    #[error("PROXY v2 header with a bad length")]
    V2BadLength,
}

/// Parses a PROXY header at the start of `input`: `Ok(Some((header,
/// len)))` when a whole header is there (`len` bytes of it), `Ok(None)`
/// when the input is a valid beginning and more bytes are needed.
///
/// # Errors
///
/// A [`ProxyError`] as soon as the input cannot be (the beginning of) a
/// valid header.
///
/// # Examples
///
/// ```
/// use myriad::proxy::{parse, ProxyHeader};
/// let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
/// let (h, n) = parse(line).unwrap().unwrap();
/// assert_eq!(n, 45);
/// assert!(matches!(h, ProxyHeader::Proxied { source, .. } if source.to_string() == "192.0.2.1:56324"));
/// assert_eq!(parse(b"PROXY TCP4 192"), Ok(None));
/// assert!(parse(b"GET / HTTP/1.1\r\n").is_err());
/// ```
pub fn parse(input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if input.is_empty() {
        return Ok(None);
    }
    if input[0] == V2_SIGNATURE[0] {
        parse_v2(input)
    } else {
        parse_v1(input)
    }
}

fn parse_v2(input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let sig = input.len().min(V2_SIGNATURE.len());
    if input[..sig] != V2_SIGNATURE[..sig] {
        return Err(ProxyError::NotProxy);
    }
    if let Some(&ver_cmd) = input.get(12) {
        if ver_cmd >> 4 != 2 || ver_cmd & 0x0f > 1 {
            return Err(ProxyError::V2BadVersion);
        }
    }
    let Some(fixed) = input.get(..16) else {
        return Ok(None);
    };
    let local = fixed[12] & 0x0f == 0;
    let fam = fixed[13];
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let total = 16 + len;
    if total > MAX_V2_LEN {
        return Err(ProxyError::V2BadLength);
    }
    // Family and length are checked before waiting for the body, so that
    // a bad header fails at once.
    let need = match fam {
        0x11 => 12, // TCP over IPv4
        0x21 => 36, // TCP over IPv6
        0x00 => 0,  // UNSPEC
        _ if local => 0,
        _ => return Err(ProxyError::V2Unsupported),
    };
    if len < need {
        return Err(ProxyError::V2BadLength);
    }
    let Some(body) = input.get(16..total) else {
        return Ok(None);
    };
    if local || fam == 0x00 {
        return Ok(Some((ProxyHeader::Local, total)));
    }
    let (source, destination) = if fam == 0x11 {
        let ip = |o: usize| Ipv4Addr::new(body[o], body[o + 1], body[o + 2], body[o + 3]);
        let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
        (
            SocketAddr::new(IpAddr::V4(ip(0)), port(8)),
            SocketAddr::new(IpAddr::V4(ip(4)), port(10)),
        )
    } else {
        let ip = |o: usize| {
            let mut b = [0u8; 16];
            b.copy_from_slice(&body[o..o + 16]);
            Ipv6Addr::from(b)
        };
        let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
        (
            SocketAddr::new(IpAddr::V6(ip(0)), port(32)),
            SocketAddr::new(IpAddr::V6(ip(16)), port(34)),
        )
    };
    Ok(Some((
        ProxyHeader::Proxied {
            source,
            destination,
        },
        total,
    )))
}

fn parse_v1(input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    const PREFIX: &[u8] = b"PROXY ";
    let p = input.len().min(PREFIX.len());
    if input[..p] != PREFIX[..p] {
        return Err(ProxyError::NotProxy);
    }
    let window = &input[..input.len().min(MAX_V1_LEN)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if input.len() >= MAX_V1_LEN {
            return Err(ProxyError::V1TooLong);
        }
        // A lone CR or LF elsewhere than the end is already wrong.
        if window[..window.len().saturating_sub(1)]
            .iter()
            .any(|&b| b == b'\r' || b == b'\n')
            || window.last() == Some(&b'\n')
        {
            return Err(ProxyError::V1Malformed);
        }
        return Ok(None);
    };
    let line =
        std::str::from_utf8(&input[PREFIX.len()..end]).map_err(|_| ProxyError::V1Malformed)?;
    let total = end + 2;
    let mut parts = line.split(' ');
    let proto = parts.next().ok_or(ProxyError::V1Malformed)?;
    if proto == "UNKNOWN" {
        // The rest of the line is to be ignored.
        return Ok(Some((ProxyHeader::Local, total)));
    }
    let v6 = match proto {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(ProxyError::V1Malformed),
    };
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ProxyError::V1Malformed);
    };
    let ip = |s: &str| -> Result<IpAddr, ProxyError> {
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::from_str(s).map_err(|_| ProxyError::V1Malformed)?)
        } else {
            IpAddr::V4(Ipv4Addr::from_str(s).map_err(|_| ProxyError::V1Malformed)?)
        };
        Ok(ip)
    };
    let port = |s: &str| -> Result<u16, ProxyError> {
        // Decimal without sign or leading zero.
        if s.is_empty()
            || !s.bytes().all(|b| b.is_ascii_digit())
            || (s.len() > 1 && s.starts_with('0'))
        {
            return Err(ProxyError::V1Malformed);
        }
        s.parse().map_err(|_| ProxyError::V1Malformed)
    };
    Ok(Some((
        ProxyHeader::Proxied {
            source: SocketAddr::new(ip(src)?, port(sport)?),
            destination: SocketAddr::new(ip(dst)?, port(dport)?),
        },
        total,
    )))
}

thread_local! {
    /// Client addresses of this loop's proxied connections (each loop is
    /// one thread, and a connection never leaves its loop). Bounded by the
    /// loop's connections: an entry is removed when its connection closes.
    static CLIENTS: RefCell<HashMap<ConnId, SocketAddr>> = RefCell::new(HashMap::new());
}

/// The client's address: the source of the connection's PROXY header when
/// it came through a [`ProxyProtocol`] listener or a [`ProxyFilter`], else
/// the socket's peer.
///
/// # Errors
///
/// The error of `getpeername` when there is no header address.
///
/// # Examples
///
/// ```
/// # use myriad::{Ctx, Handler};
/// struct Hello;
/// impl Handler for Hello {
///     fn on_open(&mut self, cx: &mut Ctx<'_>) {
///         if let Ok(client) = myriad::proxy::client_addr(cx) {
///             cx.write(format!("hello {client}\n").as_bytes());
///         }
///     }
///     fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() }
/// }
/// ```
pub fn client_addr(cx: &Ctx<'_>) -> io::Result<SocketAddr> {
    let id = cx.id();
    match CLIENTS.with(|c| c.borrow().get(&id).copied()) {
        Some(a) => Ok(a),
        None => match cx.filter_client_addr() {
            Some(a) => Ok(a),
            None => cx.peer_addr(),
        },
    }
}

/// The timer token [`ProxyProtocol`] uses for its header deadline; its
/// inner handler should not use it.
pub const HEADER_TIMER: u64 = u64::MAX - 0x5052_4f58;

/// Default time a connection has to send its whole header.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Wraps a handler for a listener behind a PROXY-protocol load balancer
/// (see the module documentation).
///
/// # Examples
///
/// ```
/// use myriad::proxy::ProxyProtocol;
/// # use myriad::{Ctx, Handler};
/// struct Echo;
/// impl Handler for Echo {
///     fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize { cx.write(d); d.len() }
/// }
/// let service = myriad::Service::new("echo", "127.0.0.1:0".parse().unwrap(), || ProxyProtocol::new(Echo));
/// ```
#[derive(Debug)]
pub struct ProxyProtocol<H> {
    inner: H,
    open: bool,
    timer_pending: bool,
    timeout: Duration,
}

impl<H: Handler> ProxyProtocol<H> {
    /// Wraps `inner`, with [`DEFAULT_HEADER_TIMEOUT`].
    ///
    /// ```
    /// # struct H; impl myriad::Handler for H { fn on_data(&mut self, _: &mut myriad::Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// let _ = myriad::proxy::ProxyProtocol::new(H);
    /// ```
    pub fn new(inner: H) -> Self {
        Self::with_timeout(inner, DEFAULT_HEADER_TIMEOUT)
    }

    /// Wraps `inner`; a connection whose header is not whole after
    /// `timeout` is closed.
    ///
    /// ```
    /// # struct H; impl myriad::Handler for H { fn on_data(&mut self, _: &mut myriad::Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// let _ = myriad::proxy::ProxyProtocol::with_timeout(H, std::time::Duration::from_secs(1));
    /// ```
    pub fn with_timeout(inner: H, timeout: Duration) -> Self {
        ProxyProtocol {
            inner,
            open: false,
            timer_pending: false,
            timeout,
        }
    }

    /// The wrapped handler.
    ///
    /// ```
    /// # struct H; impl myriad::Handler for H { fn on_data(&mut self, _: &mut myriad::Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// let p = myriad::proxy::ProxyProtocol::new(H);
    /// let _h: &H = p.inner();
    /// ```
    pub fn inner(&self) -> &H {
        &self.inner
    }
}

impl<H: Handler> Handler for ProxyProtocol<H> {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        cx.set_timer(self.timeout, HEADER_TIMER);
        self.timer_pending = true;
    }

    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        if self.open {
            return self.inner.on_data(cx, data);
        }
        match parse(data) {
            Ok(None) => 0,
            Err(e) => {
                tracing::debug!(error = %e, "PROXY protocol header refused");
                cx.abort();
                data.len()
            }
            Ok(Some((header, n))) => {
                if let ProxyHeader::Proxied { source, .. } = header {
                    let id = cx.id();
                    CLIENTS.with(|c| c.borrow_mut().insert(id, source));
                }
                self.open = true;
                self.inner.on_open(cx);
                match data.get_mut(n..) {
                    Some(rest) if !rest.is_empty() => n + self.inner.on_data(cx, rest),
                    _ => n,
                }
            }
        }
    }

    fn on_drain(&mut self, cx: &mut Ctx<'_>) {
        if self.open {
            self.inner.on_drain(cx);
        }
    }

    fn on_eof(&mut self, cx: &mut Ctx<'_>) {
        if self.open {
            self.inner.on_eof(cx);
        } else {
            cx.close();
        }
    }

    fn on_timer(&mut self, cx: &mut Ctx<'_>, token: u64) {
        if token == HEADER_TIMER && self.timer_pending {
            self.timer_pending = false;
            if !self.open {
                tracing::debug!("PROXY protocol header not received in time");
                cx.abort();
            }
            return;
        }
        if self.open {
            self.inner.on_timer(cx, token);
        }
    }

    fn on_shutdown(&mut self, cx: &mut Ctx<'_>) {
        if self.open {
            self.inner.on_shutdown(cx);
        } else {
            cx.close();
        }
    }

    fn on_close(&mut self, cx: &mut Ctx<'_>, reason: CloseReason) {
        let id = cx.id();
        CLIENTS.with(|c| c.borrow_mut().remove(&id));
        if self.open {
            self.inner.on_close(cx, reason);
        }
    }
}

/// Makes every connection of `service` read a PROXY header first: through
/// a [`ProxyProtocol`] with the given header deadline when the service has
/// no filter; through a [`ProxyFilter`] in front of its filter (TLS) when
/// it has one — set the filter before calling this. With a filter the
/// header is part of the handshake, so the service's
/// [`Service::handshake_timeout`] bounds it and `timeout` is not used.
///
/// # Examples
///
/// ```
/// # use myriad::{Ctx, Handler, Service};
/// # struct E; impl Handler for E { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
/// let s = Service::new("x", "127.0.0.1:0".parse().unwrap(), || E);
/// let s = myriad::proxy::proxied(s, myriad::proxy::DEFAULT_HEADER_TIMEOUT);
/// ```
pub fn proxied(mut service: Service, timeout: Duration) -> Service {
    match service.filter.take() {
        Some(inner) => {
            let wrapped: FilterFactory = Arc::new(move || Box::new(ProxyFilter::new(inner())));
            service.filter = Some(wrapped);
            service
        }
        None => {
            service.wrap_handlers(move |h| Box::new(ProxyProtocol::with_timeout(Dyn(h), timeout)))
        }
    }
}

/// A [`Filter`] that reads a PROXY-protocol header (v1 or v2) from the raw
/// stream, then hands everything after it to the inner filter: TLS behind
/// a load balancer that forwards TCP (HAProxy `mode tcp` with
/// `send-proxy-v2`), where the header comes before the ClientHello.
///
/// A connection whose first bytes are not a valid header fails with a
/// filter error of kind `"proxy"` (closed and counted); the header counts
/// as part of the handshake, so the service's handshake timeout bounds it.
/// [`client_addr`] returns the header's source address.
///
/// # Examples
///
/// ```
/// use myriad::proxy::ProxyFilter;
/// use myriad::{Filter, FilterError, Outbound};
/// struct Plain;
/// impl Filter for Plain {
///     fn decode(&mut self, i: &mut [u8], app: &mut Vec<u8>, _: &mut dyn Outbound) -> Result<(), FilterError> { app.extend_from_slice(i); Ok(()) }
///     fn encode(&mut self, p: &[u8], net: &mut dyn Outbound) -> Result<(), FilterError> { net.push(p); Ok(()) }
/// }
/// let mut f = ProxyFilter::new(Box::new(Plain));
/// let mut app = Vec::new();
/// let mut net = Vec::new();
/// let mut input = b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 443\r\nhello".to_vec();
/// f.decode(&mut input, &mut app, &mut net)?;
/// assert_eq!(app, b"hello");
/// assert_eq!(f.client_addr(), Some("192.0.2.1:5000".parse().unwrap()));
/// # Ok::<(), FilterError>(())
/// ```
pub struct ProxyFilter {
    inner: Box<dyn Filter>,
    /// The start of a header that arrived in pieces (never more than one
    /// header's worth: [`parse`] decides within [`MAX_V2_LEN`] bytes).
    partial: Vec<u8>,
    passed: bool,
    client: Option<SocketAddr>,
}

impl std::fmt::Debug for ProxyFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyFilter")
            .field("passed", &self.passed)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl ProxyFilter {
    /// `inner` gets the stream after the header.
    pub fn new(inner: Box<dyn Filter>) -> Self {
        ProxyFilter {
            inner,
            partial: Vec::new(),
            passed: false,
            client: None,
        }
    }

    fn pass(&mut self, header: ProxyHeader) {
        if let ProxyHeader::Proxied { source, .. } = header {
            self.client = Some(source);
        }
        self.passed = true;
    }
}

fn refused(e: ProxyError) -> FilterError {
    FilterError::new("proxy", e.to_string())
}

impl Filter for ProxyFilter {
    fn start(&mut self, net: &mut dyn Outbound) -> Result<(), FilterError> {
        self.inner.start(net)
    }

    fn decode(
        &mut self,
        input: &mut [u8],
        app: &mut Vec<u8>,
        net: &mut dyn Outbound,
    ) -> Result<(), FilterError> {
        if self.passed {
            return self.inner.decode(input, app, net);
        }
        if self.partial.is_empty() {
            // The usual case: the whole header in the first read, parsed
            // where it lies.
            return match parse(input).map_err(refused)? {
                Some((header, n)) => {
                    self.pass(header);
                    match input.get_mut(n..) {
                        Some(rest) if !rest.is_empty() => self.inner.decode(rest, app, net),
                        _ => Ok(()),
                    }
                }
                None => {
                    self.partial.extend_from_slice(input);
                    Ok(())
                }
            };
        }
        // Bounded without a check of its own: `partial` is only ever a
        // prefix that `parse` called incomplete, so shorter than
        // MAX_V2_LEN, and `input` is one receive. (A fixed cap on the sum
        // would refuse a valid header whose end came with a large read.)
        debug_assert!(self.partial.len() < MAX_V2_LEN);
        self.partial.extend_from_slice(input);
        match parse(&self.partial).map_err(refused)? {
            Some((header, n)) => {
                self.pass(header);
                let mut rest = std::mem::take(&mut self.partial).split_off(n);
                if rest.is_empty() {
                    Ok(())
                } else {
                    self.inner.decode(&mut rest, app, net)
                }
            }
            None => Ok(()),
        }
    }

    fn encode(&mut self, plain: &[u8], net: &mut dyn Outbound) -> Result<(), FilterError> {
        self.inner.encode(plain, net)
    }

    fn close(&mut self, net: &mut dyn Outbound) {
        if self.passed {
            self.inner.close(net);
        }
    }

    fn eof(&mut self) -> Result<(), FilterError> {
        if self.passed {
            self.inner.eof()
        } else {
            Ok(())
        }
    }

    fn is_handshaking(&self) -> bool {
        !self.passed || self.inner.is_handshaking()
    }

    fn client_addr(&self) -> Option<SocketAddr> {
        self.client
    }
}

/// A boxed handler as a handler.
struct Dyn(Box<dyn Handler>);

impl Handler for Dyn {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        self.0.on_open(cx)
    }
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        self.0.on_data(cx, data)
    }
    fn on_drain(&mut self, cx: &mut Ctx<'_>) {
        self.0.on_drain(cx)
    }
    fn on_eof(&mut self, cx: &mut Ctx<'_>) {
        self.0.on_eof(cx)
    }
    fn on_timer(&mut self, cx: &mut Ctx<'_>, token: u64) {
        self.0.on_timer(cx, token)
    }
    fn on_shutdown(&mut self, cx: &mut Ctx<'_>) {
        self.0.on_shutdown(cx)
    }
    fn on_close(&mut self, cx: &mut Ctx<'_>, reason: CloseReason) {
        self.0.on_close(cx, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    fn v2_tcp4() -> Vec<u8> {
        let mut body = vec![192, 0, 2, 1, 198, 51, 100, 2];
        body.extend_from_slice(&56324u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        v2(1, 0x11, &body)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v2_ipv4_ipv6_local_unspec_and_tlvs() {
        let h = v2_tcp4();
        assert_eq!(h.len(), 28);
        let mut input = h.clone();
        input.extend_from_slice(b"GET /");
        assert_eq!(
            parse(&input),
            Ok(Some((
                ProxyHeader::Proxied {
                    source: addr("192.0.2.1:56324"),
                    destination: addr("198.51.100.2:443")
                },
                28
            )))
        );
        let mut body = Vec::new();
        body.extend_from_slice(&Ipv6Addr::from_str("2001:db8::1").unwrap().octets());
        body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        body.extend_from_slice(&1000u16.to_be_bytes());
        body.extend_from_slice(&80u16.to_be_bytes());
        // A TLV (NOOP, type 4) after the addresses is skipped.
        body.extend_from_slice(&[4, 0, 2, 9, 9]);
        let h6 = v2(1, 0x21, &body);
        assert_eq!(
            parse(&h6),
            Ok(Some((
                ProxyHeader::Proxied {
                    source: addr("[2001:db8::1]:1000"),
                    destination: addr("[::1]:80")
                },
                h6.len()
            )))
        );
        let local = v2(0, 0x11, &[0; 12]);
        assert_eq!(parse(&local), Ok(Some((ProxyHeader::Local, 28))));
        let local_any = v2(0, 0x31, &[0; 216]);
        assert_eq!(parse(&local_any), Ok(Some((ProxyHeader::Local, 232))));
        let unspec = v2(1, 0x00, &[]);
        assert_eq!(parse(&unspec), Ok(Some((ProxyHeader::Local, 16))));
    }

    #[test]
    fn v2_malformed() {
        let mut h = v2_tcp4();
        h[12] = 0x11; // version 1 in a v2 header
        assert_eq!(parse(&h), Err(ProxyError::V2BadVersion));
        h[12] = 0x22; // command 2
        assert_eq!(parse(&h), Err(ProxyError::V2BadVersion));
        let udp = v2(1, 0x12, &[0; 12]);
        assert_eq!(parse(&udp), Err(ProxyError::V2Unsupported));
        let unix = v2(1, 0x31, &[0; 216]);
        assert_eq!(parse(&unix), Err(ProxyError::V2Unsupported));
        let short = v2(1, 0x11, &[0; 11]);
        assert_eq!(parse(&short), Err(ProxyError::V2BadLength));
        let short6 = v2(1, 0x21, &[0; 35]);
        assert_eq!(parse(&short6[..16]), Err(ProxyError::V2BadLength));
        let mut huge = v2_tcp4();
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(parse(&huge[..16]), Err(ProxyError::V2BadLength));
        let mut sig = v2_tcp4();
        sig[5] = b'X';
        assert_eq!(parse(&sig[..6]), Err(ProxyError::NotProxy));
    }

    #[test]
    fn v1_forms() {
        assert_eq!(
            parse(b"PROXY TCP6 2001:db8::1 ::1 1000 80\r\nx"),
            Ok(Some((
                ProxyHeader::Proxied {
                    source: addr("[2001:db8::1]:1000"),
                    destination: addr("[::1]:80")
                },
                36
            )))
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN whatever\r\n"),
            Ok(Some((ProxyHeader::Local, 24)))
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Some((ProxyHeader::Local, 15)))
        );
    }

    #[test]
    fn v1_malformed() {
        let bad: &[&[u8]] = &[
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 7\r\n",
            b"PROXY TCP4  192.0.2.1 198.51.100.2 56324 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 056324 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 443\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.01 198.51.100.2 1 2\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1\n198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n",
            b"PROXY \xff\r\n",
        ];
        for b in bad {
            assert_eq!(
                parse(b),
                Err(ProxyError::V1Malformed),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"PROXX"), Err(ProxyError::NotProxy));
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 100]].concat();
        assert_eq!(parse(&long), Err(ProxyError::V1TooLong));
    }

    /// Every proper prefix of a valid header asks for more; the whole one
    /// parses; nothing panics on arbitrary bytes.
    #[test]
    fn prefixes_and_noise() {
        let headers: Vec<Vec<u8>> = vec![
            v2_tcp4(),
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
        ];
        for h in &headers {
            for cut in 0..h.len() {
                assert_eq!(parse(&h[..cut]), Ok(None), "cut {cut} of {h:?}");
            }
            assert!(matches!(parse(h), Ok(Some((_, n))) if n == h.len()));
        }
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut buf = Vec::new();
        for round in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mutations of valid headers, and plain noise.
            buf.clear();
            buf.extend_from_slice(&headers[round % headers.len()]);
            let pos = (x as usize >> 8) % buf.len();
            buf[pos] = (x >> 32) as u8;
            if round % 3 == 0 {
                buf.truncate((x as usize >> 40) % (buf.len() + 1));
            }
            if let Ok(Some((_, n))) = parse(&buf) {
                assert!(n <= buf.len());
            }
            let noise: Vec<u8> = (0..(x % 64) as usize)
                .map(|i| (x >> (i % 56)) as u8)
                .collect();
            let _ = parse(&noise);
        }
    }
}

//! The PROXY protocol wrapper over loopback, on both backends: the inner
//! handler sees neither the header nor any byte before it, reads the
//! client's address from it, and connections without a valid header (or
//! too slow to send it) are closed.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use myriad::proxy::{client_addr, ProxyProtocol, V2_SIGNATURE};
use myriad::{BackendKind, Ctx, Engine, Handler, Service};

const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Greets with the client address, then echoes.
struct Greeter;

impl Handler for Greeter {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        let who = client_addr(cx).map_or_else(|e| e.to_string(), |a| a.to_string());
        cx.write(format!("{who}\n").as_bytes());
    }
    fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
        cx.write(d);
        d.len()
    }
}

fn start(kind: BackendKind, timeout: Duration) -> (Engine, SocketAddr) {
    let svc = Service::new("proxied", "127.0.0.1:0".parse().unwrap(), move || {
        ProxyProtocol::with_timeout(Greeter, timeout)
    });
    run(kind, svc)
}

fn run(kind: BackendKind, svc: Service) -> (Engine, SocketAddr) {
    let engine = Engine::builder()
        .threads(1)
        .backend(kind)
        .service(svc)
        .start()
        .expect("engine starts");
    let addr = engine.local_addrs(0)[0];
    (engine, addr)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Reads until `n` bytes or EOF.
fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < n {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    out
}

/// The server closes (EOF or reset) without having sent anything.
fn expect_closed_silently(s: &mut TcpStream) {
    assert_eq!(read_n(s, 1), b"", "closed without a byte");
}

fn v2_header() -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 1, 127, 0, 0, 1]);
    h.extend_from_slice(&56324u16.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h
}

fn both(f: fn(BackendKind)) {
    f(BackendKind::IoUring);
    f(BackendKind::Epoll);
}

#[test]
fn v2_header_in_pieces_then_data() {
    both(|kind| {
        let (_engine, addr) = start(kind, IO_TIMEOUT);
        let mut s = connect(addr);
        let h = v2_header();
        s.write_all(&h[..7]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut rest = h[7..].to_vec();
        rest.extend_from_slice(b"ping");
        s.write_all(&rest).unwrap();
        let want = b"192.0.2.1:56324\nping";
        assert_eq!(read_n(&mut s, want.len()), want);
    });
}

#[test]
fn v1_header_and_local_command() {
    both(|kind| {
        let (_engine, addr) = start(kind, IO_TIMEOUT);
        let mut s = connect(addr);
        s.write_all(b"PROXY TCP6 2001:db8::7 ::1 1000 80\r\nx")
            .unwrap();
        let want = b"[2001:db8::7]:1000\nx";
        assert_eq!(read_n(&mut s, want.len()), want);
        // LOCAL (a health check): the socket's own peer stands.
        let mut s = connect(addr);
        let mine = s.local_addr().unwrap();
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x20, 0x00, 0, 0]);
        s.write_all(&h).unwrap();
        let want = format!("{mine}\n");
        assert_eq!(read_n(&mut s, want.len()), want.as_bytes());
    });
}

#[test]
fn no_or_bad_header_is_refused() {
    both(|kind| {
        let (_engine, addr) = start(kind, IO_TIMEOUT);
        let mut s = connect(addr);
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        expect_closed_silently(&mut s);
        let mut s = connect(addr);
        let mut h = v2_header();
        h[12] = 0x31; // version 3
        s.write_all(&h).unwrap();
        expect_closed_silently(&mut s);
        let mut s = connect(addr);
        s.write_all(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n")
            .unwrap();
        expect_closed_silently(&mut s);
    });
}

#[test]
fn header_deadline() {
    both(|kind| {
        let (_engine, addr) = start(kind, Duration::from_millis(100));
        let mut s = connect(addr);
        s.write_all(&v2_header()[..10]).unwrap();
        expect_closed_silently(&mut s);
    });
}

/// A filter that XORs every byte both ways: it proves the filter sees only
/// the bytes after the header, and the header none of the filter's.
struct Xor;

impl myriad::Filter for Xor {
    fn decode(
        &mut self,
        input: &mut [u8],
        app: &mut Vec<u8>,
        _: &mut dyn myriad::Outbound,
    ) -> Result<(), myriad::FilterError> {
        app.extend(input.iter().map(|b| b ^ 0x5a));
        Ok(())
    }
    fn encode(
        &mut self,
        plain: &[u8],
        net: &mut dyn myriad::Outbound,
    ) -> Result<(), myriad::FilterError> {
        let x: Vec<u8> = plain.iter().map(|b| b ^ 0x5a).collect();
        net.push(&x);
        Ok(())
    }
}

fn xor(b: &[u8]) -> Vec<u8> {
    b.iter().map(|b| b ^ 0x5a).collect()
}

/// `proxied` on a service with a filter (TLS in the server): the header is
/// read before the filter, within the handshake timeout.
fn start_filtered(kind: BackendKind, handshake: Duration) -> (Engine, SocketAddr) {
    let svc = Service::new("proxied-filter", "127.0.0.1:0".parse().unwrap(), || Greeter)
        .filter(|| Box::new(Xor))
        .handshake_timeout(handshake);
    run(kind, myriad::proxy::proxied(svc, Duration::from_secs(3600)))
}

#[test]
fn header_before_a_filter() {
    both(|kind| {
        let (_engine, addr) = start_filtered(kind, IO_TIMEOUT);
        // v2 in pieces, the filter's first bytes in the same write as its end.
        let mut s = connect(addr);
        let h = v2_header();
        s.write_all(&h[..5]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        s.write_all(&h[5..20]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut rest = h[20..].to_vec();
        rest.extend_from_slice(&xor(b"pi"));
        s.write_all(&rest).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        s.write_all(&xor(b"ng")).unwrap();
        let want = b"192.0.2.1:56324\nping";
        assert_eq!(xor(&read_n(&mut s, want.len())), want);
        // v1, whole.
        let mut s = connect(addr);
        let mut first = b"PROXY TCP4 198.51.100.7 127.0.0.1 4000 443\r\n".to_vec();
        first.extend_from_slice(&xor(b"x"));
        s.write_all(&first).unwrap();
        let want = b"198.51.100.7:4000\nx";
        assert_eq!(xor(&read_n(&mut s, want.len())), want);
        // No header (a TLS ClientHello straight away): closed unanswered.
        let mut s = connect(addr);
        s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
            .unwrap();
        expect_closed_silently(&mut s);
    });
}

#[test]
fn header_before_a_filter_within_the_handshake_timeout() {
    both(|kind| {
        let (_engine, addr) = start_filtered(kind, Duration::from_millis(100));
        let mut s = connect(addr);
        s.write_all(&v2_header()[..10]).unwrap();
        expect_closed_silently(&mut s);
    });
}

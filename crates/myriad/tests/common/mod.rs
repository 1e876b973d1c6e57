//! Shared helpers for the integration tests: both backends run the same
//! suite; every socket has a timeout so that no test can hang.
#![allow(dead_code)]

use myriad::{BackendKind, Ctx, Engine, Handler, Service};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Tests that need thousands of descriptors take this lock, so that two of
/// them never run at once (the open-files limit here is 20,000).
pub static HEAVY: Mutex<()> = Mutex::new(());

pub fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Generates `mod name { io_uring(), epoll() }` running `name(kind)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn io_uring() {
                    super::$name(myriad::BackendKind::IoUring)
                }
                #[test]
                fn epoll() {
                    super::$name(myriad::BackendKind::Epoll)
                }
            }
        )*
    };
}

pub struct Echo;

impl Handler for Echo {
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        cx.write(data);
        data.len()
    }
}

pub fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Starts an engine with one service built by `svc`; returns it and the
/// service's address.
pub fn start(kind: BackendKind, threads: usize, svc: Service) -> (Engine, SocketAddr) {
    start_with(kind, threads, svc, |b| b)
}

pub fn start_with(
    kind: BackendKind,
    threads: usize,
    svc: Service,
    f: impl FnOnce(myriad::EngineBuilder) -> myriad::EngineBuilder,
) -> (Engine, SocketAddr) {
    let b = Engine::builder()
        .threads(threads)
        .backend(kind)
        .service(svc);
    let engine = f(b).start().expect("engine starts");
    assert_eq!(engine.backend(), kind);
    let addr = engine.local_addrs(0)[0];
    (engine, addr)
}

pub fn echo_engine(kind: BackendKind, threads: usize) -> (Engine, SocketAddr) {
    start(kind, threads, Service::new("echo", localhost(), || Echo))
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Writes `msg` and reads exactly as many bytes back.
pub fn roundtrip(s: &mut TcpStream, msg: &[u8], buf: &mut [u8]) {
    s.write_all(msg).expect("write");
    s.read_exact(&mut buf[..msg.len()]).expect("read echo");
    assert_eq!(&buf[..msg.len()], msg);
}

/// Reads until EOF (or error); returns what was read and whether it ended
/// with a clean EOF.
pub fn read_to_end(s: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return (out, false),
        }
    }
}

/// Waits (bounded) until `f` holds.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("timed out waiting for: {what}");
}

/// Deterministic payload byte at `offset` of stream `id`.
pub fn pattern(id: u64, offset: u64) -> u8 {
    let x = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ id.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    (x >> 29) as u8
}

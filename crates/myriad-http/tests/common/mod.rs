//! Engine set-up shared by the HTTP integration tests (each test file is
//! a binary of its own that includes this module).
#![allow(dead_code)]

use myriad::{BackendKind, Engine, Service};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// `svc` on one loop of backend `kind`; its address.
pub fn start_service(kind: BackendKind, svc: Service) -> (Engine, SocketAddr) {
    let engine = Engine::builder()
        .threads(1)
        .backend(kind)
        .service(svc)
        .start()
        .expect("engine starts");
    let addr = engine.local_addrs(0)[0];
    (engine, addr)
}

pub fn stop(engine: Engine) {
    engine.shutdown(Duration::from_millis(200));
    engine.wait().unwrap();
}

/// A client with read and write timeouts and Nagle off.
pub fn connect(addr: SocketAddr, timeout: Duration) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

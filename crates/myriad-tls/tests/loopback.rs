//! The loopback twin of `tests/sim.rs` (issue 17, part 2: "the same
//! scenarios also run against the real backends on loopback, so the
//! simulation cannot drift from reality"): the same seeds make the same
//! clients (`simkit::Scenario`, the same seeded rustls client), which talk
//! over real sockets on 127.0.0.1 to a real `Engine` — io_uring and epoll —
//! with the same `TlsAcceptor` filter and echo handler. Each client must
//! get what the simulation's unfaulted run gives it: all its data back,
//! then close_notify.

mod simkit;

use myriad::{BackendKind, Engine, Service};
use myriad_tls::TlsAcceptor;
use simkit::{Client, Echo, Scenario};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Drives one client over a socket: its first words, then whatever it
/// answers to what arrives, its write side shut once it is done; until
/// the server closes. Bounded by a deadline.
fn talk(addr: SocketAddr, c: &mut Client, hello: Vec<u8>) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    s.write_all(&hello).map_err(|e| format!("write: {e}"))?;
    let mut shut = false;
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        if c.done() && !shut {
            s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
            shut = true;
        }
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                let mut out = Vec::new();
                c.received(&buf[..n], &mut out);
                if !out.is_empty() && !shut {
                    s.write_all(&out).map_err(|e| format!("write: {e}"))?;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    Err("no end within 20 s".into())
}

fn seeds(kind: BackendKind) {
    let n = std::env::var("MYRIAD_LOOPBACK_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20u64);
    let mut failures = Vec::new();
    let mut echoed = 0;
    for seed in 0..n {
        let sc = Scenario::new(seed);
        let acceptor = TlsAcceptor::from_config(simkit::server_config(seed ^ 0x5e7e, sc.tls13));
        let engine = Engine::builder()
            .threads(1)
            .backend(kind)
            .service(
                Service::new("tls-echo", "127.0.0.1:0".parse().expect("addr"), || Echo)
                    .filter(acceptor.factory()),
            )
            .start()
            .expect("engine");
        let addr = engine.local_addrs(0)[0];
        for (i, spec) in sc.clients.into_iter().enumerate() {
            let (mut c, hello) = Client::new(spec, sc.tls13);
            let res = talk(addr, &mut c, hello);
            echoed += c.plain.len();
            let verdict = match res {
                Err(e) => Some(e),
                Ok(()) if c.error.is_some() => c.error.clone(),
                Ok(()) if c.plain != c.data() || !c.close_notify => Some(format!(
                    "echoed {} bytes of {} (close_notify {})",
                    c.plain.len(),
                    c.data().len(),
                    c.close_notify
                )),
                Ok(()) => None,
            };
            if let Some(v) = verdict {
                failures.push(format!("{kind:?} seed {seed} client {i}: {v}"));
            }
        }
        engine.shutdown(Duration::from_secs(1));
        let _ = engine.wait();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(echoed > 0, "{n} seeds echoed nothing");
}

#[test]
fn tls_scenarios_on_io_uring() {
    seeds(BackendKind::IoUring)
}

#[test]
fn tls_scenarios_on_epoll() {
    seeds(BackendKind::Epoll)
}

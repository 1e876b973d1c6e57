//! Engine behaviour over real loopback sockets, on both backends.

mod common;

use common::*;
use myriad::{BackendKind, CloseReason, ConnectOptions, Ctx, Engine, Handler, Service};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

both_backends!(
    echo_basic,
    ipv6_echo,
    many_connections,
    partial_consumption,
    transfer_64mib,
    reset_mid_write,
    half_close,
    idle_timeout,
    user_timer,
    connection_limit,
    graceful_shutdown,
    tiny_ring_many_busy,
    backpressure_slow_reader,
    hard_limit_closes_non_reader,
    connector_roundtrip,
    connect_failures,
    recursion_ping_pong,
    pause_and_resume,
    write_with_and_batch_wait,
    slow_handlers_keep_order,
    handler_panic_costs_one_connection,
    timers_of_closed_connections_do_not_pile_up,
    send_timeout_closes_a_peer_that_stops_reading,
    loop_queue_cap_sheds_the_largest_queues,
    a_dead_loop_closes_its_listener,
    connections_per_source_address,
    lingering_close_keeps_the_last_reply,
    send_file_between_writes,
    cleared_deadlines_leave_nothing_behind,
    queued_bytes_gauge_follows_the_write_queues,
    hand_over_while_busy_strands_no_client,
);

fn echo_basic(kind: BackendKind) {
    let (engine, addr) = echo_engine(kind, 2);
    let mut s = connect(addr);
    let mut buf = [0u8; 64];
    roundtrip(&mut s, b"hello", &mut buf);
    roundtrip(&mut s, b"world", &mut buf);
    drop(s);
    eventually("connection closed", || engine.stats().closed == 1);
    let st = engine.stats();
    assert_eq!(st.accepted, 1);
    assert_eq!(st.open, 0);
    assert_eq!(st.bytes_in, 10);
    assert_eq!(st.bytes_out, 10);
}

fn ipv6_echo(kind: BackendKind) {
    let (_engine, addr) = start(
        kind,
        1,
        Service::new("echo6", "[::1]:0".parse().unwrap(), || Echo),
    );
    assert!(addr.is_ipv6());
    let mut s = connect(addr);
    let mut buf = [0u8; 16];
    roundtrip(&mut s, b"over ipv6", &mut buf);
}

fn many_connections(kind: BackendKind) {
    let _g = heavy();
    let (engine, addr) = echo_engine(kind, 2);
    const N: usize = 5000;
    let mut socks = Vec::with_capacity(N);
    for _ in 0..N {
        socks.push(connect(addr));
    }
    // All open at once: send on every connection, then read every echo.
    for (i, s) in socks.iter_mut().enumerate() {
        s.write_all(format!("conn {i:06}\n").as_bytes()).unwrap();
    }
    let mut buf = [0u8; 12];
    for (i, s) in socks.iter_mut().enumerate() {
        if let Err(e) = s.read_exact(&mut buf) {
            panic!("connection {i}: {e}; {:?}", engine.stats());
        }
        assert_eq!(&buf, format!("conn {i:06}\n").as_bytes());
    }
    eventually("all accepted", || engine.stats().open == N as u64);
    // Both loops took a share (SO_REUSEPORT spreads accepts).
    let per_loop = engine.loop_stats();
    assert!(per_loop.iter().all(|s| s.accepted > 0), "{per_loop:?}");
    // And a second round on every connection.
    for (i, s) in socks.iter_mut().enumerate() {
        s.write_all(format!("again {i:06}").as_bytes()).unwrap();
    }
    for (i, s) in socks.iter_mut().enumerate() {
        if let Err(e) = s.read_exact(&mut buf) {
            panic!("connection {i}, second round: {e}; {:?}", engine.stats());
        }
        assert_eq!(&buf, format!("again {i:06}").as_bytes());
    }
    drop(socks);
    eventually("all closed", || engine.stats().open == 0);
    assert_eq!(engine.stats().closed, N as u64);
}

/// Consumes only whole 7-byte units; the rest must be shown again, in
/// order, with the next bytes.
struct Sevens;
impl Handler for Sevens {
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        let n = data.len() / 7 * 7;
        cx.write(&data[..n]);
        n
    }
}

fn partial_consumption(kind: BackendKind) {
    let (_engine, addr) = start(kind, 1, Service::new("sevens", localhost(), || Sevens));
    let mut s = connect(addr);
    let total: usize = 7 * 3000;
    let data: Vec<u8> = (0..total as u64).map(|i| pattern(7, i)).collect();
    let mut off = 0;
    let mut piece = 1;
    while off < total {
        let end = (off + piece).min(total);
        s.write_all(&data[off..end]).unwrap();
        off = end;
        piece = piece % 13 + 1;
        if off % 997 < 13 {
            // Let some pieces arrive alone, leaving a partial unit behind.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let mut back = vec![0u8; total];
    s.read_exact(&mut back).unwrap();
    assert!(back == data, "echo differs from input");
}

fn transfer_64mib(kind: BackendKind) {
    let (_engine, addr) = echo_engine(kind, 1);
    let s = connect(addr);
    const TOTAL: u64 = 64 << 20;
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let mut off = 0u64;
        while off < TOTAL {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = pattern(64, off + i as u64);
            }
            w.write_all(&buf).unwrap();
            off += buf.len() as u64;
        }
    });
    let mut r = s;
    let mut buf = vec![0u8; 65536];
    let mut off = 0u64;
    while off < TOTAL {
        let n = r.read(&mut buf).unwrap();
        assert!(n > 0, "early EOF at {off}");
        for (i, &b) in buf[..n].iter().enumerate() {
            if b != pattern(64, off + i as u64) {
                panic!("byte {} differs", off + i as u64);
            }
        }
        off += n as u64;
    }
    writer.join().unwrap();
    assert_eq!(off, TOTAL);
}

/// Sends as fast as the peer reads, topping up in `on_drain`.
struct Firehose {
    tx: mpsc::Sender<String>,
}
impl Firehose {
    fn fill(&mut self, cx: &mut Ctx<'_>) {
        let chunk = [0x5au8; 16384];
        while cx.queued() < 512 << 10 {
            cx.write(&chunk);
        }
    }
}
impl Handler for Firehose {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        self.fill(cx);
    }
    fn on_data(&mut self, _cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        data.len()
    }
    fn on_drain(&mut self, cx: &mut Ctx<'_>) {
        self.fill(cx);
    }
    fn on_close(&mut self, _cx: &mut Ctx<'_>, reason: CloseReason) {
        let _ = self.tx.send(format!("{reason:?}"));
    }
}

fn reset_mid_write(kind: BackendKind) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let (engine, addr) = start(
        kind,
        1,
        Service::new("firehose", localhost(), move || Firehose {
            tx: tx.lock().unwrap().clone(),
        }),
    );
    let mut s = connect(addr);
    let mut buf = vec![0u8; 65536];
    let mut got = 0;
    while got < 1 << 20 {
        got += s.read(&mut buf).unwrap();
    }
    // Reset in the middle of the server's writing.
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
    let reason = rx.recv_timeout(IO_TIMEOUT).expect("on_close after reset");
    assert!(
        reason.starts_with("Io("),
        "unexpected close reason {reason}"
    );
    assert!(engine.stats().err_reset >= 1);
    // The engine keeps serving.
    let mut s2 = connect(addr);
    s2.read_exact(&mut buf[..1000]).unwrap();
    assert!(buf[..1000].iter().all(|&b| b == 0x5a));
}

struct EchoThenBye;
impl Handler for EchoThenBye {
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        cx.write(data);
        data.len()
    }
    fn on_eof(&mut self, cx: &mut Ctx<'_>) {
        cx.write(b" bye");
        cx.close();
    }
}

fn half_close(kind: BackendKind) {
    // Default on_eof: everything echoed is delivered, then a clean FIN.
    let (_engine, addr) = echo_engine(kind, 1);
    let mut s = connect(addr);
    let data: Vec<u8> = (0..200_000u64).map(|i| pattern(1, i)).collect();
    s.write_all(&data).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let (back, clean) = read_to_end(&mut s);
    assert!(clean, "expected a clean EOF");
    assert!(back == data);

    // A handler that keeps writing after the peer's FIN.
    let (_engine2, addr2) = start(kind, 1, Service::new("bye", localhost(), || EchoThenBye));
    let mut s = connect(addr2);
    s.write_all(b"hello").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let (back, clean) = read_to_end(&mut s);
    assert!(clean);
    assert_eq!(back, b"hello bye");
}

fn idle_timeout(kind: BackendKind) {
    let (engine, addr) = start(
        kind,
        1,
        Service::new("idle", localhost(), || Echo).idle_timeout(Some(Duration::from_millis(1000))),
    );
    let mut idle = connect(addr);
    let mut busy = connect(addr);
    let t0 = Instant::now();
    let mut buf = [0u8; 8];
    // Activity every 100 ms keeps `busy` open well past the timeout.
    while t0.elapsed() < Duration::from_millis(2500) {
        roundtrip(&mut busy, b"ping", &mut buf);
        std::thread::sleep(Duration::from_millis(100));
    }
    // `idle` was closed by the server.
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "idle connection should see EOF");
    roundtrip(&mut busy, b"pong", &mut buf);
    assert!(engine.stats().err_idle_timeout >= 1);
}

struct Ticker;
impl Handler for Ticker {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        cx.set_timer(Duration::from_millis(30), 1);
    }
    fn on_data(&mut self, _cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        data.len()
    }
    fn on_timer(&mut self, cx: &mut Ctx<'_>, token: u64) {
        match token {
            1 => {
                cx.write(b"tick ");
                cx.set_timer(Duration::from_millis(30), 2);
            }
            _ => {
                cx.write(b"tock");
                cx.close();
            }
        }
    }
}

fn user_timer(kind: BackendKind) {
    let (_engine, addr) = start(kind, 1, Service::new("ticker", localhost(), || Ticker));
    let mut s = connect(addr);
    let (back, clean) = read_to_end(&mut s);
    assert!(
        clean,
        "not a clean EOF after {:?}",
        String::from_utf8_lossy(&back)
    );
    assert_eq!(back, b"tick tock");
}

fn connection_limit(kind: BackendKind) {
    let (engine, addr) = start(
        kind,
        2,
        Service::new("limited", localhost(), || Echo).max_connections(10),
    );
    let mut socks: Vec<_> = (0..15).map(|_| connect(addr)).collect();
    eventually("15 handled", || {
        let s = engine.stats();
        s.accepted + s.refused == 15
    });
    let mut ok = Vec::new();
    let mut buf = [0u8; 4];
    for s in socks.iter_mut() {
        let good =
            s.write_all(b"ping").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"ping";
        ok.push(good);
    }
    assert_eq!(ok.iter().filter(|&&g| g).count(), 10, "{ok:?}");
    assert_eq!(engine.stats().refused, 5);
    // Freeing three makes room for three more.
    let mut kept: Vec<_> = socks
        .into_iter()
        .zip(ok)
        .filter(|(_, g)| *g)
        .map(|(s, _)| s)
        .collect();
    kept.truncate(7);
    eventually("7 open", || engine.stats().open == 7);
    for _ in 0..3 {
        let mut s = connect(addr);
        roundtrip(&mut s, b"more", &mut buf);
        kept.push(s);
    }
    assert_eq!(engine.stats().refused, 5);
}

struct Stubborn;
impl Handler for Stubborn {
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        cx.write(data);
        data.len()
    }
    fn on_shutdown(&mut self, _cx: &mut Ctx<'_>) {}
}

struct Counting<H> {
    inner: H,
    closes: Arc<AtomicUsize>,
    shutdown_reasons: Arc<AtomicUsize>,
}
impl<H: Handler> Handler for Counting<H> {
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        self.inner.on_data(cx, data)
    }
    fn on_shutdown(&mut self, cx: &mut Ctx<'_>) {
        self.inner.on_shutdown(cx)
    }
    fn on_close(&mut self, _cx: &mut Ctx<'_>, reason: CloseReason) {
        self.closes.fetch_add(1, Ordering::SeqCst);
        if matches!(reason, CloseReason::Shutdown) {
            self.shutdown_reasons.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn graceful_shutdown(kind: BackendKind) {
    let closes = Arc::new(AtomicUsize::new(0));
    let forced = Arc::new(AtomicUsize::new(0));
    let (c1, f1, c2, f2) = (
        closes.clone(),
        forced.clone(),
        closes.clone(),
        forced.clone(),
    );
    let engine = Engine::builder()
        .threads(2)
        .backend(kind)
        .service(Service::new("polite", localhost(), move || Counting {
            inner: Echo,
            closes: c1.clone(),
            shutdown_reasons: f1.clone(),
        }))
        .service(Service::new("stubborn", localhost(), move || Counting {
            inner: Stubborn,
            closes: c2.clone(),
            shutdown_reasons: f2.clone(),
        }))
        .start()
        .unwrap();
    let (a1, a2) = (engine.local_addrs(0)[0], engine.local_addrs(1)[0]);
    let mut buf = [0u8; 8];
    let mut polite: Vec<_> = (0..50).map(|_| connect(a1)).collect();
    let mut stubborn: Vec<_> = (0..10).map(|_| connect(a2)).collect();
    for s in polite.iter_mut().chain(stubborn.iter_mut()) {
        roundtrip(s, b"hi", &mut buf);
    }
    let t0 = Instant::now();
    engine.shutdown(Duration::from_millis(500));
    for s in polite.iter_mut() {
        let (rest, clean) = read_to_end(s);
        assert!(
            clean && rest.is_empty(),
            "polite connections get a clean FIN"
        );
    }
    for s in stubborn.iter_mut() {
        // Closed at the deadline with a RST (or FIN): either way, closed.
        let _ = read_to_end(s);
    }
    engine.wait().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(closes.load(Ordering::SeqCst), 60);
    assert_eq!(forced.load(Ordering::SeqCst), 10);
    // Listeners are gone.
    assert!(std::net::TcpStream::connect(a1).is_err());
}

fn tiny_ring_many_busy(kind: BackendKind) {
    let (engine, addr) = start_with(kind, 1, Service::new("echo", localhost(), || Echo), |b| {
        b.recv_buffers(4, 256)
    });
    const CONNS: usize = 200;
    const PER: usize = 64 << 10;
    let mut socks: Vec<_> = (0..CONNS).map(|_| connect(addr)).collect();
    let data: Vec<Vec<u8>> = (0..CONNS)
        .map(|c| (0..PER as u64).map(|i| pattern(c as u64, i)).collect())
        .collect();
    // Interleave 1 KiB writes over every connection, so that many are busy
    // at once and the 4-buffer ring runs dry again and again.
    let mut off = 0;
    while off < PER {
        for (c, s) in socks.iter_mut().enumerate() {
            s.write_all(&data[c][off..off + 1024]).unwrap();
        }
        off += 1024;
    }
    let mut back = vec![0u8; PER];
    for (c, s) in socks.iter_mut().enumerate() {
        s.read_exact(&mut back).unwrap();
        assert!(back == data[c], "connection {c}: data lost or reordered");
    }
    if kind == BackendKind::IoUring {
        assert!(
            engine.stats().ring_exhausted > 0,
            "the ENOBUFS path was not exercised"
        );
    }
}

fn backpressure_slow_reader(kind: BackendKind) {
    // A peer that sends but does not read: the server pauses reading at the
    // high-water mark, so writes block instead of memory growing. (On
    // io_uring a pause takes effect after the multishot batch in flight —
    // up to 32 buffers per connection — hence a hard limit with room.)
    let (engine, addr) = start(
        kind,
        1,
        Service::new("echo", localhost(), || Echo)
            .write_high_water(64 << 10)
            .write_hard_limit(8 << 20),
    );
    let mut s = connect(addr);
    s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let chunk = vec![1u8; 65536];
    let mut sent = 0usize;
    let t0 = Instant::now();
    // Bounded: stop when writes block (the server paused reading) or 64 MiB.
    while sent < 64 << 20 && t0.elapsed() < Duration::from_secs(15) {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(
        sent < 64 << 20,
        "server kept reading from a peer that never reads"
    );
    eventually("paused by back-pressure", || {
        engine.stats().backpressure_pauses >= 1
    });
    // Now read everything the server queued; afterwards it resumes reading.
    let mut total_back = 0usize;
    let mut buf = vec![0u8; 65536];
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let t1 = Instant::now();
    while t1.elapsed() < Duration::from_secs(20) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total_back += n,
            Err(_) => {
                if total_back >= sent {
                    break;
                }
            }
        }
    }
    // The queue never passed the hard limit, so nothing was dropped.
    let st = engine.stats();
    assert_eq!(total_back, sent, "{st:?}");
    assert_eq!(st.err_slow_reader, 0);
}

/// Writes 64 KiB every millisecond whatever the peer does.
struct Spammer {
    tx: mpsc::Sender<String>,
}
impl Handler for Spammer {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        cx.set_timer(Duration::from_millis(1), 0);
    }
    fn on_data(&mut self, _cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
        d.len()
    }
    fn on_timer(&mut self, cx: &mut Ctx<'_>, _t: u64) {
        cx.write(&[7u8; 65536]);
        cx.set_timer(Duration::from_millis(1), 0);
    }
    fn on_close(&mut self, _cx: &mut Ctx<'_>, reason: CloseReason) {
        let _ = self.tx.send(format!("{reason:?}"));
    }
}

fn hard_limit_closes_non_reader(kind: BackendKind) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let (engine, addr) = start(
        kind,
        1,
        Service::new("spam", localhost(), move || Spammer {
            tx: tx.lock().unwrap().clone(),
        })
        .write_high_water(64 << 10)
        .write_hard_limit(1 << 20),
    );
    let s = connect(addr);
    // Never read: the kernel buffers fill, then the queue, then the limit.
    let reason = rx
        .recv_timeout(IO_TIMEOUT)
        .expect("closed as a slow reader");
    assert_eq!(reason, "SlowReader");
    assert_eq!(engine.stats().err_slow_reader, 1);
    drop(s);
}

/// Client side: sends `msgs` unique messages one at a time and verifies
/// each echo.
struct Client {
    id: u64,
    left: usize,
    expect: Vec<u8>,
    done: mpsc::Sender<Result<u64, String>>,
}
impl Client {
    fn send_next(&mut self, cx: &mut Ctx<'_>) {
        self.expect.clear();
        for i in 0..32u64 {
            self.expect
                .push(pattern(self.id, self.left as u64 * 32 + i));
        }
        cx.write(&self.expect);
    }
}
impl Handler for Client {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        self.send_next(cx);
    }
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        if data.len() < 32 {
            return 0;
        }
        if data[..32] != self.expect[..] {
            let _ = self.done.send(Err("mismatch".into()));
            cx.close();
            return data.len();
        }
        self.left -= 1;
        if self.left == 0 {
            let _ = self.done.send(Ok(self.id));
            cx.close();
        } else {
            self.send_next(cx);
        }
        32
    }
    fn on_close(&mut self, _cx: &mut Ctx<'_>, reason: CloseReason) {
        if self.left > 0 {
            let _ = self.done.send(Err(format!("closed early: {reason}")));
        }
    }
}

fn connector_roundtrip(kind: BackendKind) {
    let (server, addr) = echo_engine(kind, 1);
    let client = Engine::builder().threads(2).backend(kind).start().unwrap();
    let (tx, rx) = mpsc::channel();
    const N: u64 = 100;
    for id in 0..N {
        let h = client.loop_handle(id as usize % 2);
        assert!(h.connect(
            addr,
            ConnectOptions::default(),
            Client {
                id,
                left: 50,
                expect: Vec::new(),
                done: tx.clone(),
            }
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..N {
        match rx.recv_timeout(IO_TIMEOUT).expect("client finished") {
            Ok(id) => assert!(seen.insert(id)),
            Err(e) => panic!("client failed: {e}"),
        }
    }
    assert_eq!(client.stats().connected, N);
    eventually("server saw all", || server.stats().closed == N);
}

struct ExpectFailure {
    tx: mpsc::Sender<String>,
}
impl Handler for ExpectFailure {
    fn on_open(&mut self, _cx: &mut Ctx<'_>) {
        let _ = self.tx.send("opened".into());
    }
    fn on_data(&mut self, _cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
        d.len()
    }
    fn on_close(&mut self, _cx: &mut Ctx<'_>, reason: CloseReason) {
        let _ = self.tx.send(format!("{reason:?}"));
    }
}

fn connect_failures(kind: BackendKind) {
    let client = Engine::builder().threads(1).backend(kind).start().unwrap();
    // A port nobody listens on: refused.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = l.local_addr().unwrap();
    drop(l);
    let (tx, rx) = mpsc::channel();
    client.loop_handle(0).connect(
        dead,
        ConnectOptions::default(),
        ExpectFailure { tx: tx.clone() },
    );
    let r = rx.recv_timeout(IO_TIMEOUT).unwrap();
    assert!(r.starts_with("ConnectFailed"), "{r}");
    assert_eq!(client.stats().err_connect, 1);
    // A listener whose backlog is full and never accepts: the handshake
    // never completes, so the connect times out.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.listen(0).unwrap();
    let full = sock.local_addr().unwrap().as_socket().unwrap();
    // Fill the backlog with blocking connects that are never accepted.
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&full.into());
        fillers.push(s);
    }
    std::thread::sleep(Duration::from_millis(100));
    let opts = ConnectOptions {
        timeout: Duration::from_millis(300),
        ..Default::default()
    };
    client
        .loop_handle(0)
        .connect(full, opts, ExpectFailure { tx });
    let r = rx.recv_timeout(IO_TIMEOUT).unwrap();
    assert!(
        r == "ConnectTimeout" || r.starts_with("ConnectFailed"),
        "{r}"
    );
    client.shutdown(Duration::ZERO);
    client.wait().unwrap();
}

/// Two Myriad connections on one loop bounce 10 million 8-byte messages
/// (sequence numbers, verified) with a window of 128 in flight. Handlers
/// write from `on_data` and the answer comes at once; the stack depth seen
/// in `on_data` must not grow.
struct PingPong {
    target: u64,
    sent: u64,
    received: u64,
    stack_lo: usize,
    stack_hi: usize,
    done: mpsc::Sender<(u64, usize, bool)>,
    ok: bool,
}
impl PingPong {
    fn send(&mut self, cx: &mut Ctx<'_>, n: u64) {
        let mut buf = [0u8; 1024];
        let mut left = n.min(self.target - self.sent);
        while left > 0 {
            let k = left.min(128);
            for i in 0..k as usize {
                buf[i * 8..i * 8 + 8].copy_from_slice(&(self.sent + i as u64).to_le_bytes());
            }
            cx.write(&buf[..k as usize * 8]);
            self.sent += k;
            left -= k;
        }
    }
}
impl Handler for PingPong {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        self.send(cx, 128);
    }
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        let marker = 0u8;
        let sp = std::hint::black_box(&marker) as *const u8 as usize;
        self.stack_lo = self.stack_lo.min(sp);
        self.stack_hi = self.stack_hi.max(sp);
        let n = data.len() / 8;
        for i in 0..n {
            let v = u64::from_le_bytes(data[i * 8..i * 8 + 8].try_into().unwrap());
            if v != self.received + i as u64 {
                self.ok = false;
            }
        }
        self.received += n as u64;
        if self.received >= self.target {
            let _ = self
                .done
                .send((self.received, self.stack_hi - self.stack_lo, self.ok));
            cx.close();
        } else {
            self.send(cx, n as u64);
        }
        n * 8
    }
}

fn recursion_ping_pong(kind: BackendKind) {
    let (engine, addr) = echo_engine(kind, 1);
    let (tx, rx) = mpsc::channel();
    let h = PingPong {
        target: 10_000_000,
        sent: 0,
        received: 0,
        stack_lo: usize::MAX,
        stack_hi: 0,
        done: tx,
        ok: true,
    };
    // The client connection lives on the server's own (single) loop.
    engine
        .loop_handle(0)
        .connect(addr, ConnectOptions::default(), h);
    let (received, spread, ok) = rx
        .recv_timeout(Duration::from_secs(300))
        .expect("ping-pong finished");
    assert_eq!(received, 10_000_000);
    assert!(ok, "messages arrived out of order or corrupted");
    assert!(
        spread < 4096,
        "on_data's stack position moved by {spread} bytes"
    );
}

/// Pauses after every message and resumes from a timer: data that arrives
/// meanwhile is kept and delivered, in order, after the resume.
struct Pauser;
impl Handler for Pauser {
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        match data.iter().position(|&b| b == b'\n') {
            Some(i) => {
                cx.write(&data[..=i]);
                cx.pause_reading();
                cx.set_timer(Duration::from_millis(5), 0);
                i + 1
            }
            None => 0,
        }
    }
    fn on_timer(&mut self, cx: &mut Ctx<'_>, _t: u64) {
        cx.resume_reading();
    }
}

fn pause_and_resume(kind: BackendKind) {
    let (_engine, addr) = start(kind, 1, Service::new("pauser", localhost(), || Pauser));
    let mut s = connect(addr);
    let mut all = Vec::new();
    for i in 0..50 {
        all.extend_from_slice(format!("line {i}\n").as_bytes());
    }
    s.write_all(&all).unwrap();
    let mut back = vec![0u8; all.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, all);
}

/// Echoes through `Ctx::write_with`: in place for small fills, through the
/// loop's buffer when `max` is over the chunk size; asks for nothing every
/// other call first (a fill of 0 queues nothing).
struct FillEcho;
impl Handler for FillEcho {
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        assert_eq!(cx.write_with(16, |_| 0), 0);
        let n = data.len();
        let max = if n % 2 == 0 { n } else { n + (128 << 10) };
        let wrote = cx.write_with(max, |buf| {
            buf[..n].copy_from_slice(data);
            n
        });
        assert_eq!(wrote, n);
        n
    }
}

fn write_with_and_batch_wait(kind: BackendKind) {
    // A batched wait must not stall a loop that has fewer completions than
    // it waits for: one connection in ping-pong, then a bulk transfer.
    let (engine, addr) = start_with(
        kind,
        1,
        Service::new("fill", localhost(), || FillEcho),
        |b| b.batch_wait(64, Duration::from_micros(200)),
    );
    let mut s = connect(addr);
    let mut buf = [0u8; 64];
    for i in 0..200u64 {
        let msg: Vec<u8> = (0..1 + i % 60).map(|j| pattern(i, j)).collect();
        roundtrip(&mut s, &msg, &mut buf);
    }
    let data: Vec<u8> = (0..(1u64 << 20)).map(|j| pattern(9, j)).collect();
    let mut r = s.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let mut back = vec![0u8; 1 << 20];
        r.read_exact(&mut back).map(|_| back)
    });
    s.write_all(&data).unwrap();
    let back = reader.join().unwrap().expect("echo of 1 MiB");
    assert!(back == data, "echoed bytes differ");
    drop(s);
    eventually("connection closed", || engine.stats().closed == 1);
}

/// Echo that takes ~0.3 ms per call, like a TLS handshake step.
struct SlowEcho;
impl Handler for SlowEcho {
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_micros(300) {
            std::hint::spin_loop();
        }
        cx.write(data);
        data.len()
    }
}

fn slow_handlers_keep_order(kind: BackendKind) {
    // Many connections with data at once and a costly handler: a turn
    // runs out of its time budget with completions left, submits what it
    // wrote and goes on with the rest. Nothing may be lost, duplicated or
    // reordered on any connection.
    let (engine, addr) = start(kind, 1, Service::new("slow", localhost(), || SlowEcho));
    const N: usize = 24;
    const ROUNDS: u64 = 12;
    let mut socks: Vec<_> = (0..N).map(|_| connect(addr)).collect();
    for round in 0..ROUNDS {
        for (i, s) in socks.iter_mut().enumerate() {
            let msg: Vec<u8> = (0..32)
                .map(|j| pattern(round * 1000 + i as u64, j))
                .collect();
            s.write_all(&msg).unwrap();
        }
        let mut buf = [0u8; 32];
        for (i, s) in socks.iter_mut().enumerate() {
            s.read_exact(&mut buf).unwrap();
            let want: Vec<u8> = (0..32)
                .map(|j| pattern(round * 1000 + i as u64, j))
                .collect();
            assert_eq!(&buf[..], &want[..], "connection {i}, round {round}");
        }
    }
    drop(socks);
    eventually("all closed", || engine.stats().closed == N as u64);
    assert_eq!(engine.stats().bytes_out, N as u64 * ROUNDS * 32);
}

/// Echoes, but panics on a message starting with "boom" (in `on_data`) or
/// "tick" (from a timer); records its close reason.
struct Fragile(mpsc::Sender<String>);

impl Handler for Fragile {
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        if data.starts_with(b"boom") {
            panic!("deliberate panic in on_data");
        }
        if data.starts_with(b"tick") {
            cx.set_timer(Duration::from_millis(1), 1);
            return data.len();
        }
        cx.write(data);
        data.len()
    }
    fn on_timer(&mut self, _cx: &mut Ctx<'_>, _token: u64) {
        panic!("deliberate panic in on_timer");
    }
    fn on_close(&mut self, _cx: &mut Ctx<'_>, reason: CloseReason) {
        let _ = self.0.send(reason.to_string());
    }
}

/// A panicking handler call closes its own connection (with a reset, after
/// `on_close` saw `HandlerPanic`) and is counted; the loop keeps serving
/// every other connection, new ones included.
fn handler_panic_costs_one_connection(kind: BackendKind) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let (engine, addr) = start(
        kind,
        1,
        Service::new("fragile", localhost(), move || {
            Fragile(tx.lock().unwrap_or_else(|p| p.into_inner()).clone())
        }),
    );
    let mut buf = [0u8; 64];
    let mut others: Vec<_> = (0..10).map(|_| connect(addr)).collect();
    for s in &mut others {
        roundtrip(s, b"before", &mut buf);
    }
    for trigger in [&b"boom"[..], b"tick"] {
        let mut bad = connect(addr);
        roundtrip(&mut bad, b"hello", &mut buf);
        bad.write_all(trigger).unwrap();
        let (_, clean) = read_to_end(&mut bad);
        assert!(!clean, "a panicked connection is reset, not closed cleanly");
        let reason = rx.recv_timeout(IO_TIMEOUT).expect("on_close ran");
        assert_eq!(reason, "handler panicked");
        for s in &mut others {
            roundtrip(s, b"still served", &mut buf);
        }
        let mut fresh = connect(addr);
        roundtrip(&mut fresh, b"new connection", &mut buf);
        others.push(fresh);
    }
    eventually("two panics counted", || {
        engine.stats().err_handler_panic == 2
    });
}

/// Sets an hour-long timer and echoes.
struct LongTimer;

impl Handler for LongTimer {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        cx.set_timer(Duration::from_secs(3600), 1);
    }
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        cx.write(data);
        data.len()
    }
}

/// Churn with long timers and a long idle timeout: the timer entries of
/// closed connections are compacted away instead of staying until their
/// deadline (the heap was unbounded under churn).
fn timers_of_closed_connections_do_not_pile_up(kind: BackendKind) {
    let (engine, addr) = start(
        kind,
        1,
        Service::new("churn", localhost(), || LongTimer)
            .idle_timeout(Some(Duration::from_secs(3600))),
    );
    let mut buf = [0u8; 8];
    let mut keep: Vec<_> = (0..50).map(|_| connect(addr)).collect();
    for round in 0..40 {
        let batch: Vec<_> = (0..500).map(|_| connect(addr)).collect();
        for mut s in batch {
            roundtrip(&mut s, b"hi", &mut buf);
        }
        if round % 10 == 0 {
            for s in keep.iter_mut() {
                roundtrip(s, b"alive", &mut buf);
            }
        }
    }
    // 20,000 closed connections left 40,000 entries behind; compaction
    // keeps the heap near its floor (4,096) plus what the live ones hold
    eventually("closed connections counted", || {
        engine.stats().closed == 20_000
    });
    let mut s = connect(addr);
    roundtrip(&mut s, b"tick", &mut buf);
    let timers = engine.stats().timers;
    assert!(timers < 3 * 4096, "{timers} timer entries after churn");
    assert!(timers >= 100, "live connections keep theirs: {timers}");
}

/// Writes `n` bytes at open, then echoes.
struct Flood(usize);

impl Handler for Flood {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..self.0 >> 20 {
            cx.write(&chunk);
        }
    }
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        cx.write(data);
        data.len()
    }
}

/// A peer that stops reading is closed once the queued bytes make no
/// progress for the send timeout; one that reads slowly but steadily is
/// not (the timeout measures progress, not the whole transfer).
fn send_timeout_closes_a_peer_that_stops_reading(kind: BackendKind) {
    let (engine, addr) = start(
        kind,
        1,
        Service::new("flood", localhost(), || Flood(16 << 20))
            .send_timeout(Some(Duration::from_millis(300))),
    );
    // steady: 256 KiB every 40 ms drains 16 MiB in a few seconds
    let mut steady = connect(addr);
    let mut got = 0;
    let mut buf = vec![0u8; 256 << 10];
    while got < 16 << 20 {
        let n = steady.read(&mut buf).expect("steady reader is served");
        assert!(n > 0, "closed after {got} bytes");
        got += n;
        std::thread::sleep(Duration::from_millis(if got % (1 << 20) < n {
            40
        } else {
            0
        }));
    }
    assert_eq!(engine.stats().err_send_timeout, 0);
    // stalled: reads nothing
    let stalled = connect(addr);
    eventually("the stalled peer is closed", || {
        engine.stats().err_send_timeout == 1
    });
    drop(stalled);
    let mut s = steady;
    roundtrip(&mut s, b"still here", &mut buf);
}

/// Past the loop's cap on queued bytes, the connections with the largest
/// queues are closed first; the others stay.
fn loop_queue_cap_sheds_the_largest_queues(kind: BackendKind) {
    let (engine, addr) = start_with(
        kind,
        1,
        Service::new("flood", localhost(), || Flood(32 << 20)).write_hard_limit(1 << 30),
        |b| b.max_queued_per_loop(48 << 20),
    );
    let held: Vec<_> = (0..3).map(|_| connect(addr)).collect();
    eventually("the cap is enforced", || engine.stats().err_queue_cap >= 1);
    let st = engine.stats();
    assert!(st.open >= 1, "only the largest queues go: {st:?}");
    drop(held);
}

/// The `queued_bytes` gauge (what `myriad_queued_bytes` exports, and the
/// soak script watches for growth) holds the bytes of a peer that does not
/// read, and falls back to zero once they are read.
fn queued_bytes_gauge_follows_the_write_queues(kind: BackendKind) {
    let (engine, addr) = start(
        kind,
        1,
        Service::new("flood", localhost(), || Flood(32 << 20)).write_hard_limit(1 << 30),
    );
    assert_eq!(engine.stats().queued_bytes, 0);
    let mut s = connect(addr);
    // Socket buffers take a few MiB at most; the rest stays queued.
    eventually("the unread bytes are counted", || {
        engine.stats().queued_bytes >= 16 << 20
    });
    let q = engine.stats().queued_bytes;
    assert!(q <= 32 << 20, "{q} bytes queued for a 32 MiB flood");
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0;
    while got < 32 << 20 {
        let n = s.read(&mut buf).expect("read the flood");
        assert!(n > 0, "closed after {got} bytes");
        assert!(buf[..n].iter().all(|&b| b == b'x'));
        got += n;
    }
    assert_eq!(got, 32 << 20);
    eventually("the drained queue is not counted", || {
        engine.stats().queued_bytes == 0
    });
}

/// A filter that passes bytes through, but panics on "die" (a panic
/// outside handler calls, which kills the loop).
struct Deadly;

impl myriad::Filter for Deadly {
    fn decode(
        &mut self,
        input: &mut [u8],
        app: &mut Vec<u8>,
        _net: &mut dyn myriad::Outbound,
    ) -> Result<(), myriad::FilterError> {
        if input.starts_with(b"die") {
            panic!("deliberate panic in a filter");
        }
        app.extend_from_slice(input);
        Ok(())
    }
    fn encode(
        &mut self,
        plain: &[u8],
        net: &mut dyn myriad::Outbound,
    ) -> Result<(), myriad::FilterError> {
        net.push(plain);
        Ok(())
    }
}

/// When a loop dies anyway, the engine says so (`stopped_loops`) and the
/// dead loop's listener is closed: new connections all reach the living
/// loop instead of hanging in a queue no one accepts from.
fn a_dead_loop_closes_its_listener(kind: BackendKind) {
    let (engine, addr) = start(
        kind,
        2,
        Service::new("deadly", localhost(), || Echo).filter(|| Box::new(Deadly)),
    );
    let mut buf = [0u8; 64];
    // kill one loop: the connection's loop, whichever it is
    let mut s = connect(addr);
    let _ = s.write_all(b"die");
    let _ = s.read(&mut buf);
    eventually("a loop died", || engine.stopped_loops() == 1);
    for i in 0..50 {
        let mut s = connect(addr);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"hello").unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b)
            .unwrap_or_else(|e| panic!("connection {i} hangs or fails: {e}"));
        assert_eq!(&b, b"hello");
    }
}

/// A source address gets at most its limit of connections at once; more
/// are closed at once and counted; a closed one frees its place.
fn connections_per_source_address(kind: BackendKind) {
    let (engine, addr) = start(
        kind,
        2,
        Service::new("per-addr", localhost(), || Echo).max_connections_per_addr(3),
    );
    let mut buf = [0u8; 16];
    let mut ok: Vec<_> = (0..3).map(|_| connect(addr)).collect();
    for s in &mut ok {
        roundtrip(s, b"in", &mut buf);
    }
    let mut extra = connect(addr);
    let _ = extra.write_all(b"x");
    let (_, _) = read_to_end(&mut extra);
    eventually("refused per address", || {
        engine.stats().refused_per_addr == 1
    });
    drop(ok.pop());
    eventually("the place is free again", || engine.stats().open == 2);
    let mut again = connect(addr);
    roundtrip(&mut again, b"again", &mut buf);
    assert_eq!(engine.stats().refused_per_addr, 1);
}

/// Answers the first bytes with 16 MiB and closes.
struct BigReplyThenClose;

impl Handler for BigReplyThenClose {
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        let chunk: Vec<u8> = (0..1u64 << 20).map(|i| pattern(7, i)).collect();
        for _ in 0..16 {
            cx.write(&chunk);
        }
        cx.close();
        data.len()
    }
}

/// A peer that goes on sending after the server closed: the server keeps
/// reading (and discarding) until everything it queued is sent, shuts
/// down its sending side and waits for the peer's FIN, so that nothing
/// unread is left to turn its close into a reset that destroys the end of
/// the reply (before: the peer got a reset, missing megabytes). A peer
/// that never closes is closed after the linger time.
fn lingering_close_keeps_the_last_reply(kind: BackendKind) {
    let svc = Service::new("big", localhost(), || BigReplyThenClose)
        .linger(Some(Duration::from_millis(300)));
    let (engine, addr) = start(kind, 1, svc);
    for round in 0..2 {
        let mut s = connect(addr);
        s.write_all(b"go").unwrap();
        // the reply fills the socket buffers; the server has closed
        // (gracefully: its queue is still being sent)
        std::thread::sleep(Duration::from_millis(200));
        // more input the server will never use
        s.write_all(&[b'x'; 32 << 10]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let (back, clean) = read_to_end(&mut s);
        assert!(clean, "round {round}: reset after {} bytes", back.len());
        assert_eq!(back.len(), 16 << 20, "round {round}");
        assert!(back
            .iter()
            .take(1 << 20)
            .enumerate()
            .all(|(i, &b)| b == pattern(7, i as u64)));
        if round == 0 {
            // the peer closes after the server's FIN: the close completes
            drop(s);
            eventually("closed after the peer's FIN", || engine.stats().closed == 1);
        } else {
            // the peer keeps its socket open: the linger time ends it
            eventually("closed after the linger time", || {
                engine.stats().closed == 2
            });
            drop(s);
        }
    }
    assert_eq!(engine.stats().open, 0);
}

/// Sends `<`, the first half of a file, `|`, the second half, `>` on "go",
/// then closes; on anything else, the whole file and stays open.
struct FileReply {
    file: Arc<std::fs::File>,
    len: u64,
}

impl Handler for FileReply {
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        assert!(cx.can_send_file());
        if data.starts_with(b"go") {
            let half = self.len / 2;
            cx.write(b"<");
            assert!(cx.send_file(&self.file, 0, half));
            cx.write(b"|");
            assert!(cx.send_file(&self.file, half, self.len - half));
            cx.write(b">");
            cx.close();
        } else {
            assert!(cx.send_file(&self.file, 0, self.len));
        }
        data.len()
    }
}

/// `Ctx::send_file` (sendfile(2), no user-space copy) in order with
/// ordinary writes, through a socket buffer that fills (the peer reads
/// late: the send would block and waits for writability), and a peer that
/// resets while the server waits: one connection lost, the loop serves on.
fn send_file_between_writes(kind: BackendKind) {
    let path =
        std::env::temp_dir().join(format!("myriad-sendfile-{}-{kind:?}", std::process::id()));
    let len: u64 = 6 << 20;
    let bytes: Vec<u8> = (0..len).map(|i| pattern(3, i)).collect();
    std::fs::write(&path, &bytes).unwrap();
    let file = Arc::new(std::fs::File::open(&path).unwrap());
    let _ = std::fs::remove_file(&path);
    let svc = Service::new("file", localhost(), move || FileReply {
        file: Arc::clone(&file),
        len,
    });
    let (engine, addr) = start(kind, 1, svc);

    // A peer that asks, then resets without reading while the send waits.
    let mut r = connect(addr);
    r.write_all(b"xx").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    socket2::SockRef::from(&r)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(r);

    for _ in 0..2 {
        let mut s = connect(addr);
        s.write_all(b"go").unwrap();
        // Late reader: the server's sends fill the buffers and wait.
        std::thread::sleep(Duration::from_millis(300));
        let (back, clean) = read_to_end(&mut s);
        assert!(clean, "reset after {} bytes", back.len());
        assert_eq!(back.len() as u64, len + 3);
        let half = (len / 2) as usize;
        assert_eq!(back[0], b'<');
        assert!(back[1..1 + half] == bytes[..half], "first half");
        assert_eq!(back[1 + half], b'|');
        assert!(
            back[2 + half..back.len() - 1] == bytes[half..],
            "second half"
        );
        assert_eq!(back[back.len() - 1], b'>');
    }
    eventually("all closed", || engine.stats().open == 0);
}

/// Sets a deadline at open (token 9); a connection whose first bytes are
/// `ok` clears it, one whose first bytes are `set` sets a 30 ms one again,
/// and the deadline's timer closes the connection after writing `late`.
struct Deadline(Duration);

impl Handler for Deadline {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        cx.set_deadline(self.0, 9);
    }
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        if data.starts_with(b"ok") {
            cx.clear_deadline();
        } else if data.starts_with(b"set") {
            cx.set_deadline(Duration::from_millis(30), 9);
        }
        cx.write(data);
        data.len()
    }
    fn on_timer(&mut self, cx: &mut Ctx<'_>, token: u64) {
        assert_eq!(token, 9);
        cx.write(b"late");
        cx.close();
    }
}

/// A cleared deadline never fires and its timer entry does not stay in the
/// heap until it is due (5,000 connections that clear an hour-long
/// deadline at once leave fewer entries than the compaction floor); one
/// that is not cleared fires, and setting one again replaces it.
fn cleared_deadlines_leave_nothing_behind(kind: BackendKind) {
    let _g = heavy();
    let (engine, addr) = start(
        kind,
        1,
        Service::new("deadline", localhost(), || {
            Deadline(Duration::from_secs(3600))
        }),
    );
    let mut buf = [0u8; 8];
    let mut keep = Vec::new();
    for _ in 0..5000 {
        let mut s = connect(addr);
        roundtrip(&mut s, b"ok", &mut buf);
        keep.push(s);
    }
    let timers = engine.stats().timers;
    assert!(
        timers <= 4096,
        "{timers} timer entries for 5,000 cleared deadlines"
    );
    // Replaced by a 30 ms one: fires, writes `late` and closes.
    let mut s = connect(addr);
    roundtrip(&mut s, b"set", &mut buf);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut late = Vec::new();
    s.read_to_end(&mut late).unwrap();
    assert_eq!(late, b"late");
    drop(s);
    eventually("the late one closed", || engine.stats().open == 5000);
    // Cleared ones stay quiet.
    roundtrip(&mut keep[0], b"still", &mut buf);
    assert_eq!(engine.stats().open, 5000);
}

/// A listening socket handed to a new engine (a reload) while the old
/// engine's loop is busy between taking `stop_accepting` and acting on it:
/// a client that connects in that moment is served by one engine or the
/// other, not left in the accept queue. On io_uring the old ring's accept
/// is the first exclusive waiter, so it alone is woken; its cancellation
/// then spends the wake-up, and before the removed listener's last look at
/// its queue the client waited for some later connection to wake the new
/// engine.
fn hand_over_while_busy_strands_no_client(kind: BackendKind) {
    let (old, addr) = echo_engine(kind, 1);
    let new = Engine::builder()
        .threads(1)
        .backend(kind)
        .service(Service::new("echo", addr, || Echo).inherit(old.listeners(0).unwrap()))
        .start()
        .expect("the new engine starts on the old sockets");
    old.stop_accepting();
    // Posted after the stop: the loop takes both in one turn and is busy
    // here before it cancels its accept.
    old.loop_handle(0)
        .post(|_| std::thread::sleep(Duration::from_millis(600)));
    std::thread::sleep(Duration::from_millis(200));
    let mut late = connect(addr);
    late.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    late.write_all(b"late").unwrap();
    let mut buf = [0u8; 4];
    let got = late.read_exact(&mut buf);
    assert!(
        got.is_ok(),
        "{kind:?}: the client connecting during the hand-over was not served: {got:?}"
    );
    assert_eq!(&buf, b"late");
    eventually("the old engine stops accepting", || !old.is_accepting());
    let mut buf = [0u8; 8];
    let mut fresh = connect(addr);
    roundtrip(&mut fresh, b"fresh", &mut buf);
    drop((late, fresh));
    old.shutdown(Duration::ZERO);
    new.shutdown(Duration::ZERO);
    old.wait().unwrap();
    new.wait().unwrap();
}

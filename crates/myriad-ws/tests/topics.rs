//! Topics on the engine over loopback: fan-out across loops, publishing
//! from another thread, unsubscribing, and both slow-subscriber policies.
#![cfg(feature = "engine")]

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use myriad::{BackendKind, Engine};
use myriad_ws::server::WsServer;
use myriad_ws::{
    ClientConfig, ClientConnection, CloseCode, Event, Handshake, Message, MessageKind,
    PreparedMessage, SlowPolicy, Topics, TopicsConfig, Uplink, WsCtx, WsHandler,
};

const IO_TIMEOUT: Duration = Duration::from_secs(20);

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

both_backends!(
    uplink_sees_interest_and_local_publishes,
    fanout_across_loops_and_threads,
    slow_subscriber_misses_messages,
    slow_subscriber_is_closed
);

/// `sub T` / `unsub T` (confirmed with `ok ...`), `pub T text`.
struct Client {
    topics: Topics,
}

impl WsHandler for Client {
    fn on_open(&mut self, cx: &mut WsCtx<'_, '_>, _hs: &Handshake<'_>) {
        let i = cx.loop_cx().loop_index();
        let _ = cx.send_text(&format!("loop {i}"));
    }
    fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
        let Message::Text(t) = msg else { return };
        let reply = if let Some(topic) = t.strip_prefix("sub ") {
            match self.topics.subscribe(cx, topic) {
                Ok(added) => format!("ok sub {added}"),
                Err(e) => format!("error {e}"),
            }
        } else if let Some(topic) = t.strip_prefix("unsub ") {
            format!("ok unsub {}", self.topics.unsubscribe(cx, topic))
        } else if let Some(rest) = t.strip_prefix("pub ") {
            let (topic, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let m = PreparedMessage::new(MessageKind::Text, text.as_bytes());
            self.topics.publish_from(cx.loop_cx(), topic, &m);
            return;
        } else {
            return;
        };
        let _ = cx.send_text(&reply);
    }
    fn on_close(&mut self, cx: &mut WsCtx<'_, '_>, _code: CloseCode, _reason: &str) {
        self.topics.unsubscribe_all(cx);
    }
}

fn start(kind: BackendKind, topics: &Topics) -> (Engine, SocketAddr) {
    let ws = WsServer::builder().build();
    let t = topics.clone();
    let svc = ws.service("topics", "127.0.0.1:0".parse().unwrap(), move || Client {
        topics: t.clone(),
    });
    let engine = Engine::builder()
        .threads(2)
        .backend(kind)
        .service(svc)
        .start()
        .expect("engine starts");
    topics.attach((0..engine.loop_count()).map(|i| engine.loop_handle(i).clone()));
    let addr = engine.local_addrs(0)[0];
    (engine, addr)
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + IO_TIMEOUT;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("timed out waiting for {what}");
}

/// A blocking client speaking the sans-I/O codec.
struct Blocking {
    s: TcpStream,
    conn: ClientConnection,
    buf: Vec<u8>,
    events: VecDeque<String>,
    eof: bool,
    loop_index: String,
}

impl Blocking {
    fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let cfg = ClientConfig {
            limits: myriad_ws::DecoderConfig {
                max_message_size: 1 << 20,
                ..Default::default()
            },
            ..ClientConfig::default()
        };
        let mut c = Blocking {
            s,
            conn: ClientConnection::new(cfg, "localhost", "/"),
            buf: Vec::new(),
            events: VecDeque::new(),
            eof: false,
            loop_index: String::new(),
        };
        let mut out = Vec::new();
        c.conn.start(&mut out);
        c.s.write_all(&out).unwrap();
        c.loop_index = c.next();
        c
    }

    fn read_some(&mut self) -> bool {
        let mut tmp = [0u8; 65536];
        let n = match self.s.read(&mut tmp) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("read: {e}"),
        };
        if n == 0 {
            self.eof = true;
            return false;
        }
        self.buf.extend_from_slice(&tmp[..n]);
        let mut out = Vec::new();
        let mut evs = Vec::new();
        let used = self
            .conn
            .feed(&mut self.buf, &mut out, &mut |e, _| match e {
                Event::Text(t) => evs.push(t.to_owned()),
                Event::Binary(b) => evs.push(format!("binary {}", b.len())),
                _ => {}
            })
            .expect("server frames are valid");
        self.buf.drain(..used);
        self.events.extend(evs);
        if !out.is_empty() {
            let _ = self.s.write_all(&out);
        }
        true
    }

    fn next(&mut self) -> String {
        loop {
            if let Some(e) = self.events.pop_front() {
                return e;
            }
            assert!(self.read_some(), "eof while waiting for a message");
        }
    }

    fn text(&mut self, t: &str) {
        let mut out = Vec::new();
        self.conn.send_text(&mut out, t).unwrap();
        self.s.write_all(&out).unwrap();
    }

    /// Sends a command and waits for its confirmation.
    fn command(&mut self, t: &str) -> String {
        self.text(t);
        self.next()
    }

    /// Nothing but `want` may be pending: sends a ping-like round trip
    /// (subscribe to a private topic) and checks nothing came before it.
    fn quiet(&mut self, marker: &str) {
        assert_eq!(self.command(&format!("sub {marker}")), "ok sub true");
    }
}

/// Publishes from another thread and waits until every loop ran it;
/// returns the number of deliveries.
fn publish_wait(topics: &Topics, topic: &str, msg: &PreparedMessage) -> u64 {
    let (tx, rx) = mpsc::channel();
    topics
        .publish_counted(topic, msg, move |n| {
            let _ = tx.send(n);
        })
        .expect("attached");
    rx.recv_timeout(IO_TIMEOUT).expect("every loop reports")
}

fn fanout_across_loops_and_threads(kind: BackendKind) {
    let topics = Topics::default();
    let (_engine, addr) = start(kind, &topics);
    // Subscribers on both loops (connections are spread over the loops).
    let mut clients: Vec<Blocking> = Vec::new();
    for _ in 0..40 {
        clients.push(Blocking::connect(addr));
        let loops: std::collections::HashSet<_> =
            clients.iter().map(|c| c.loop_index.clone()).collect();
        if clients.len() >= 6 && loops.len() == 2 {
            break;
        }
    }
    let loops: std::collections::HashSet<_> =
        clients.iter().map(|c| c.loop_index.clone()).collect();
    assert_eq!(loops.len(), 2, "clients on both loops");
    let n = clients.len();
    for (i, c) in clients.iter_mut().enumerate() {
        let topic = if i % 2 == 0 { "even" } else { "odd" };
        assert_eq!(c.command(&format!("sub {topic}")), "ok sub true");
        assert_eq!(c.command(&format!("sub {topic}")), "ok sub false");
    }
    assert_eq!(topics.stats().subscriptions, n as u64);
    let evens: Vec<usize> = (0..n).filter(|i| i % 2 == 0).collect();
    let odds: Vec<usize> = (0..n).filter(|i| i % 2 == 1).collect();

    // From a connection (its loop, then posted to the other).
    clients[odds[0]].text("pub even hello evens");
    for &i in &evens {
        assert_eq!(clients[i].next(), "hello evens", "client {i}");
    }
    // From a thread outside the engine, with the delivery count.
    let m = PreparedMessage::new(MessageKind::Text, b"from a thread");
    assert_eq!(publish_wait(&topics, "odd", &m), odds.len() as u64);
    for &i in &odds {
        assert_eq!(clients[i].next(), "from a thread", "client {i}");
    }
    // Nobody got what was not theirs.
    for (i, c) in clients.iter_mut().enumerate() {
        c.quiet(&format!("marker{i}"));
    }
    // Unsubscribed: no more deliveries.
    let e0 = evens[0];
    assert_eq!(clients[e0].command("unsub even"), "ok unsub true");
    let m = PreparedMessage::new(MessageKind::Text, b"second");
    assert_eq!(publish_wait(&topics, "even", &m), evens.len() as u64 - 1);
    for &i in &evens[1..] {
        assert_eq!(clients[i].next(), "second");
    }
    clients[e0].quiet("marker-e0");
    // Closed connections lose their subscriptions.
    let before = topics.stats().subscriptions;
    let gone = clients.pop().expect("a client");
    drop(gone);
    eventually("the closed client's subscriptions removed", || {
        topics.stats().subscriptions == before - 2
    });
    let s = topics.stats();
    assert_eq!(s.dropped_slow + s.closed_slow + s.dropped_behind, 0);
}

/// Publishes 64 KiB messages to one subscriber that does not read, until
/// its queue passes the limit and the policy acts (at most 2,000).
fn flood(topics: &Topics, stop: impl Fn(&Topics) -> bool) -> u64 {
    let m = PreparedMessage::new(MessageKind::Binary, &vec![1u8; 64 << 10]);
    let mut published = 0;
    while !stop(topics) {
        assert!(
            published < 2000,
            "the policy never acted: {:?}",
            topics.stats()
        );
        publish_wait(topics, "slow", &m);
        published += 1;
    }
    published
}

fn slow_subscriber_misses_messages(kind: BackendKind) {
    let topics = Topics::new(TopicsConfig {
        max_queued: 256 << 10,
        slow: SlowPolicy::Drop,
        ..TopicsConfig::default()
    });
    let (_engine, addr) = start(kind, &topics);
    let mut c = Blocking::connect(addr);
    assert_eq!(c.command("sub slow"), "ok sub true");
    let published = flood(&topics, |t| t.stats().dropped_slow > 0);
    let s = topics.stats();
    assert_eq!(s.delivered + s.dropped_slow, published);
    assert_eq!(s.closed_slow, 0);
    // Every message queued arrives, and the subscriber is still served.
    for _ in 0..s.delivered {
        assert_eq!(c.next(), format!("binary {}", 64 << 10));
    }
    c.quiet("after");
    let m = PreparedMessage::new(MessageKind::Text, b"caught up");
    assert_eq!(publish_wait(&topics, "slow", &m), 1);
    assert_eq!(c.next(), "caught up");
}

fn slow_subscriber_is_closed(kind: BackendKind) {
    let topics = Topics::new(TopicsConfig {
        max_queued: 256 << 10,
        slow: SlowPolicy::Close,
        ..TopicsConfig::default()
    });
    let (_engine, addr) = start(kind, &topics);
    let mut c = Blocking::connect(addr);
    assert_eq!(c.command("sub slow"), "ok sub true");
    flood(&topics, |t| t.stats().closed_slow > 0);
    assert_eq!(topics.stats().dropped_slow, 0);
    let end = Instant::now() + IO_TIMEOUT;
    while !c.eof && Instant::now() < end {
        c.events.clear();
        c.read_some();
    }
    assert!(c.eof, "the slow subscriber was disconnected");
    eventually("its subscription removed", || {
        topics.stats().subscriptions == 0
    });
}

/// Records what the topics hand to their uplink.
#[derive(Default)]
struct Recorder {
    /// Interest per topic summed over loops.
    interest: Mutex<std::collections::HashMap<String, i64>>,
    published: Mutex<Vec<(String, Vec<u8>)>>,
}

impl Uplink for Recorder {
    fn interest(&self, topic: &str, on: bool) {
        let mut m = self.interest.lock().unwrap();
        *m.entry(topic.to_owned()).or_default() += if on { 1 } else { -1 };
    }
    fn publish(&self, topic: &str, frame: &Arc<[u8]>) {
        self.published
            .lock()
            .unwrap()
            .push((topic.to_owned(), frame.to_vec()));
    }
}

fn uplink_sees_interest_and_local_publishes(kind: BackendKind) {
    let topics = Topics::default();
    let rec = Arc::new(Recorder::default());
    assert!(topics.set_uplink(rec.clone()));
    let (_engine, addr) = start(kind, &topics);
    let interest = |t: &str| rec.interest.lock().unwrap().get(t).copied().unwrap_or(0);
    let mut a = Blocking::connect(addr);
    let mut b = Blocking::connect(addr);
    assert_eq!(a.command("sub news"), "ok sub true");
    assert_eq!(b.command("sub news"), "ok sub true");
    // one per loop that has subscribers: 1 or 2
    let same_loop = a.loop_index == b.loop_index;
    assert_eq!(interest("news"), if same_loop { 1 } else { 2 });
    // A local publish reaches the uplink once, framed.
    a.text("pub news local");
    assert_eq!(a.next(), "local");
    assert_eq!(b.next(), "local");
    {
        let p = rec.published.lock().unwrap();
        let want = PreparedMessage::new(MessageKind::Text, b"local");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0], ("news".to_owned(), want.bytes().to_vec()));
    }
    // A message from another node is delivered here, and not sent back.
    let remote = PreparedMessage::new(MessageKind::Text, b"remote");
    assert_eq!(topics.deliver_local("news", remote.shared_bytes()), Ok(2));
    assert_eq!(a.next(), "remote");
    assert_eq!(b.next(), "remote");
    assert_eq!(rec.published.lock().unwrap().len(), 1);
    // Interest ends with the last subscriber: by unsubscribe, and by close.
    assert_eq!(a.command("unsub news"), "ok unsub true");
    drop(b);
    eventually("no interest left", || interest("news") == 0);
    assert_eq!(topics.stats().subscriptions, 0);
}

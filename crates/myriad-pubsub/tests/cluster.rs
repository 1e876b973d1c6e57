//! Two nodes (two engines, each with its own topics and cluster link) on
//! one real broker started from its Debian package (`nats-server`,
//! `redis-server`): cross-node delivery with one copy per node, interest
//! following the subscribers, and a broker restart (local delivery goes
//! on, cross-node messages are dropped and counted, the nodes reconnect
//! and subscribe again).

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use myriad::{BackendKind, Engine};
use myriad_pubsub::{Broker, Cluster, ClusterConfig, ClusterHandle};
use myriad_ws::server::WsServer;
use myriad_ws::{
    send_prepared_to, ClientConfig, ClientConnection, CloseCode, Event, Message, MessageKind,
    PreparedMessage, Topics, WsCtx, WsHandler,
};

const IO_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn nats() {
    two_nodes(Broker::Nats);
}

#[test]
fn redis() {
    two_nodes(Broker::Redis);
}

/// A broker process, killed when dropped.
struct BrokerProcess(Child);

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_broker(kind: Broker, port: u16) -> BrokerProcess {
    let p = port.to_string();
    let mut cmd = match kind {
        Broker::Nats => {
            let mut c = Command::new("nats-server");
            c.args(["-a", "127.0.0.1", "-p", &p]);
            c
        }
        _ => {
            let mut c = Command::new("redis-server");
            c.args([
                "--port",
                &p,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]);
            c
        }
    };
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {kind:?} broker ({e}): apt-get install nats-server redis-server")
        });
    let b = BrokerProcess(child);
    eventually("the broker listens", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    b
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + IO_TIMEOUT;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

/// `sub T` (confirmed with `ok sub` once the broker has the
/// subscription), `unsub T`, `pub T text`.
struct Client {
    topics: Topics,
    cluster: ClusterHandle,
}

impl WsHandler for Client {
    fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
        let Message::Text(t) = msg else { return };
        if let Some(topic) = t.strip_prefix("sub ") {
            let added = self.topics.subscribe(cx, topic).is_ok();
            let id = cx.id();
            let home = cx.loop_cx().loops()[id.loop_index()].clone();
            self.cluster.sync(move || {
                home.post(move |lcx| {
                    let m = PreparedMessage::new(
                        MessageKind::Text,
                        format!("ok sub {added}").as_bytes(),
                    );
                    send_prepared_to(lcx, id, &m);
                });
            });
        } else if let Some(topic) = t.strip_prefix("unsub ") {
            let r = self.topics.unsubscribe(cx, topic);
            let _ = cx.send_text(&format!("ok unsub {r}"));
        } else if let Some(rest) = t.strip_prefix("pub ") {
            let (topic, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let m = PreparedMessage::new(MessageKind::Text, text.as_bytes());
            self.topics.publish_from(cx.loop_cx(), topic, &m);
        }
    }
    fn on_close(&mut self, cx: &mut WsCtx<'_, '_>, _code: CloseCode, _reason: &str) {
        self.topics.unsubscribe_all(cx);
    }
}

struct Node {
    topics: Topics,
    cluster: Cluster,
    _engine: Engine,
    addr: SocketAddr,
}

fn node(kind: Broker, url: &str) -> Node {
    let topics = Topics::default();
    let cluster = Cluster::start(&topics, ClusterConfig::new(kind, url)).expect("cluster starts");
    let (t, h) = (topics.clone(), cluster.handle());
    let svc =
        WsServer::builder()
            .build()
            .service("node", "127.0.0.1:0".parse().unwrap(), move || Client {
                topics: t.clone(),
                cluster: h.clone(),
            });
    let engine = Engine::builder()
        .threads(2)
        .backend(BackendKind::Epoll)
        .service(svc)
        .start()
        .expect("engine starts");
    topics.attach((0..engine.loop_count()).map(|i| engine.loop_handle(i).clone()));
    let addr = engine.local_addrs(0)[0];
    Node {
        topics,
        cluster,
        _engine: engine,
        addr,
    }
}

/// A blocking WebSocket client.
struct Ws {
    s: TcpStream,
    conn: ClientConnection,
    buf: Vec<u8>,
    events: VecDeque<String>,
}

impl Ws {
    fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut c = Ws {
            s,
            conn: ClientConnection::new(ClientConfig::default(), "localhost", "/"),
            buf: Vec::new(),
            events: VecDeque::new(),
        };
        let mut out = Vec::new();
        c.conn.start(&mut out);
        c.s.write_all(&out).unwrap();
        while !c.conn.is_open() {
            c.read_some();
        }
        c
    }

    fn read_some(&mut self) {
        let mut tmp = [0u8; 65536];
        let n = match self.s.read(&mut tmp) {
            Ok(0) => panic!("eof"),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!("timed out waiting for a message")
            }
            Err(e) => panic!("read: {e}"),
        };
        self.buf.extend_from_slice(&tmp[..n]);
        let mut out = Vec::new();
        let mut evs = Vec::new();
        let used = self
            .conn
            .feed(&mut self.buf, &mut out, &mut |e, _| {
                if let Event::Text(t) = e {
                    evs.push(t.to_owned())
                }
            })
            .expect("valid frames");
        self.buf.drain(..used);
        self.events.extend(evs);
        if !out.is_empty() {
            let _ = self.s.write_all(&out);
        }
    }

    fn next(&mut self) -> String {
        loop {
            if let Some(e) = self.events.pop_front() {
                return e;
            }
            self.read_some();
        }
    }

    fn text(&mut self, t: &str) {
        let mut out = Vec::new();
        self.conn.send_text(&mut out, t).unwrap();
        self.s.write_all(&out).unwrap();
    }

    fn command(&mut self, t: &str) -> String {
        self.text(t);
        self.next()
    }
}

fn two_nodes(kind: Broker) {
    let port = free_port();
    let scheme = if kind == Broker::Nats {
        "nats"
    } else {
        "redis"
    };
    let url = format!("{scheme}://127.0.0.1:{port}");
    let mut broker = start_broker(kind, port);
    let a = node(kind, &url);
    let b = node(kind, &url);
    eventually("both nodes connected", || {
        a.cluster.stats().connected && b.cluster.stats().connected
    });

    let mut on_a = Ws::connect(a.addr);
    let mut on_b = Ws::connect(b.addr);
    assert_eq!(on_a.command("sub news"), "ok sub true");
    assert_eq!(on_b.command("sub news"), "ok sub true");
    assert_eq!(on_a.command("sub only-a"), "ok sub true");
    assert_eq!(a.cluster.stats().broker_subscriptions, 2);
    assert_eq!(b.cluster.stats().broker_subscriptions, 1);

    // Published on B (by a client): B's subscriber once, A's once.
    on_b.text("pub news from-b");
    assert_eq!(on_b.next(), "from-b");
    assert_eq!(on_a.next(), "from-b");
    // Published on A from a thread, to a topic B has no subscriber of.
    let m = PreparedMessage::new(MessageKind::Text, b"a-only");
    a.topics.publish("only-a", &m).unwrap();
    assert_eq!(on_a.next(), "a-only");
    // Nothing else arrived before these confirmations (no echo copies).
    assert_eq!(on_a.command("sub marker"), "ok sub true");
    assert_eq!(on_b.command("sub marker"), "ok sub true");
    eventually("counters", || {
        let (sa, sb) = (a.cluster.stats(), b.cluster.stats());
        sb.sent == 1 && sa.received == 1 && sa.sent == 1 && sb.received == 0
    });

    // Interest follows the subscribers.
    assert_eq!(on_a.command("unsub only-a"), "ok unsub true");
    eventually("A unsubscribed on the broker", || {
        a.cluster.stats().broker_subscriptions == 2
    });

    // Broker down: local delivery goes on, cross-node messages are dropped.
    let _ = broker.0.kill();
    let _ = broker.0.wait();
    eventually("both nodes see the broker down", || {
        !a.cluster.stats().connected && !b.cluster.stats().connected
    });
    let dropped = b.cluster.stats().dropped_down;
    on_b.text("pub news while-down");
    assert_eq!(on_b.next(), "while-down");
    eventually("the message for A counted as dropped", || {
        b.cluster.stats().dropped_down > dropped
    });

    // Broker back: both reconnect and subscribe again.
    let _broker = start_broker(kind, port);
    eventually("both nodes reconnected and resubscribed", || {
        let (sa, sb) = (a.cluster.stats(), b.cluster.stats());
        sa.connected && sb.connected && sa.reconnects >= 1 && sb.reconnects >= 1
    });
    // NATS resubscribes inside the client: a sync (a server round trip) makes sure the
    // server has the subscriptions again; Redis counts them.
    assert_eq!(on_a.command("sub after"), "ok sub true");
    on_b.text("pub news after-restart");
    assert_eq!(on_b.next(), "after-restart");
    assert_eq!(on_a.next(), "after-restart");
    let s = a.cluster.stats();
    assert_eq!(s.dropped_invalid, 0);
    assert_eq!(a.topics.stats().dropped_behind, 0);
}

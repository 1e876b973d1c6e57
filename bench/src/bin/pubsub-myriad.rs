//! `pubsub-myriad`: the Myriad side of `bench-pubsub`, a WebSocket
//! publish/subscribe server on `myriad_ws::Topics` (optionally clustered
//! through NATS or Redis with `myriad_pubsub::Cluster`).
//!
//! It speaks the benchmark's minimal protocol, which the baseline
//! (`bench/ws-baselines`, `pubsub-tokio-broadcast`) speaks too, so that the
//! two servers do the same work and the measurement is the topic fan-out
//! itself rather than a JSON codec:
//!
//! * text `sub TOPIC` subscribes the connection to `TOPIC` and is answered
//!   by text `ok TOPIC` once the subscription is in place (with a broker:
//!   once the broker has it, [`Cluster::sync`]);
//! * a binary message `[n][n bytes of topic][rest]` is published to the
//!   topic: every subscriber gets the very same binary message, framed once
//!   and shared by every recipient's queue.
//!
//! ```text
//! pubsub-myriad --addr 127.0.0.1:19500 [--threads 1] [--backend io_uring] \
//!     [--broker nats|redis --broker-url URL]
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use myriad::{BackendKind, Engine};
use myriad_pubsub::{Broker, Cluster, ClusterConfig, ClusterHandle};
use myriad_ws::server::WsServer;
use myriad_ws::{
    send_prepared_to, CloseCode, Message, MessageKind, PreparedMessage, Topics, TopicsConfig,
    WsCtx, WsHandler,
};

#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    addr: SocketAddr,
    /// Event loops.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Backend: auto, io_uring or epoll.
    #[arg(long, default_value = "io_uring")]
    backend: BackendKind,
    /// Cluster through this broker (nats or redis).
    #[arg(long, requires = "broker_url")]
    broker: Option<String>,
    /// The broker's URL (nats://127.0.0.1:4222, redis://127.0.0.1:6379).
    #[arg(long, requires = "broker")]
    broker_url: Option<String>,
}

struct Member {
    topics: Topics,
    cluster: Option<ClusterHandle>,
}

impl WsHandler for Member {
    fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
        match msg {
            Message::Text(t) => {
                let Some(topic) = t.strip_prefix("sub ") else {
                    let _ = cx.send_text("error unknown command");
                    return;
                };
                if let Err(e) = self.topics.subscribe(cx, topic) {
                    let _ = cx.send_text(&format!("error {topic}: {e}"));
                    return;
                }
                let ok = PreparedMessage::new(MessageKind::Text, format!("ok {topic}").as_bytes());
                match &self.cluster {
                    None => {
                        let _ = cx.send_prepared(&ok);
                    }
                    Some(c) => {
                        // Confirmed once the broker has the subscription, so
                        // the load program never races the broker.
                        let id = cx.id();
                        let home = cx.loop_cx().loops()[id.loop_index()].clone();
                        c.sync(move || {
                            home.post(move |lcx| {
                                send_prepared_to(lcx, id, &ok);
                            });
                        });
                    }
                }
            }
            Message::Binary(b) => {
                let Some((&n, rest)) = b.split_first() else {
                    return;
                };
                let Some(topic) = rest.get(..n as usize) else {
                    return;
                };
                let Ok(topic) = std::str::from_utf8(topic) else {
                    return;
                };
                let m = PreparedMessage::new(MessageKind::Binary, b);
                self.topics.publish_from(cx.loop_cx(), topic, &m);
            }
        }
    }

    fn on_close(&mut self, cx: &mut WsCtx<'_, '_>, _code: CloseCode, _reason: &str) {
        self.topics.unsubscribe_all(cx);
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.threads == 0 {
        bail!("--threads must be positive");
    }
    // Subscribers are read as fast as they arrive; the default 1 MiB queue
    // limit and per-loop in-flight bound stay as a user would have them.
    let topics = Topics::new(TopicsConfig::default());
    let cluster = match (&args.broker, &args.broker_url) {
        (Some(b), Some(url)) => {
            let kind: Broker = b.parse().context("--broker")?;
            let c = Cluster::start(&topics, ClusterConfig::new(kind, url.clone()))?;
            // Listen only once the broker is reached, so that the load
            // program's first publishes are not dropped as "broker down".
            let until = std::time::Instant::now() + Duration::from_secs(15);
            while !c.stats().connected {
                if std::time::Instant::now() >= until {
                    bail!("broker {url} not reached within 15 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Some(c)
        }
        _ => None,
    };
    let (t, h) = (topics.clone(), cluster.as_ref().map(Cluster::handle));
    let svc = WsServer::builder()
        .build()
        .service("pubsub", args.addr, move || Member {
            topics: t.clone(),
            cluster: h.clone(),
        })
        .write_hard_limit(64 << 20);
    let engine = Engine::builder()
        .threads(args.threads)
        .backend(args.backend)
        .service(svc)
        .start()?;
    topics.attach((0..engine.loop_count()).map(|i| engine.loop_handle(i).clone()));
    eprintln!(
        "pubsub-myriad: listening on {} ({} backend, {} threads, broker {})",
        engine.local_addrs(0)[0],
        engine.backend(),
        engine.loop_count(),
        args.broker.as_deref().unwrap_or("none")
    );
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    let _ = signals.forever().next();
    engine.shutdown(Duration::from_secs(1));
    engine.wait()?;
    let s = topics.stats();
    eprintln!(
        "pubsub-myriad: stopped; delivered {} dropped_slow {} dropped_behind {}",
        s.delivered, s.dropped_slow, s.dropped_behind
    );
    if let Some(c) = &cluster {
        eprintln!("pubsub-myriad: cluster {:?}", c.stats());
    }
    Ok(())
}

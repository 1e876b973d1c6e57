//! Publish/subscribe baseline of `bench-pubsub`: tokio-tungstenite with one
//! `tokio::sync::broadcast` channel per topic, one task per connection (a
//! current-thread runtime unless `--threads`), the way such servers are
//! usually written.
//!
//! The benchmark's protocol, as `pubsub-myriad` speaks it: text `sub TOPIC`
//! subscribes (answered by text `ok TOPIC`); a binary message
//! `[n][n bytes of topic][rest]` is published to the topic as it is, and
//! every subscriber gets that binary message. A connection's task waits on
//! its socket and on all its subscriptions at once (a `SelectAll` of
//! `BroadcastStream`s); deliveries that are ready together are fed to the
//! sink and flushed once, so a burst costs one write, not one per message
//! (a fairer baseline than `send` per message). The payload is shared
//! (`Bytes`); each connection frames it itself, as tungstenite does.
//! A receiver that lags behind its channel (capacity 4096) loses messages,
//! which `pubsub-load` reports as errors; the count is printed at exit.
//!
//! `pubsub-tokio-broadcast --addr 127.0.0.1:19500 [--threads N]`

#[path = "../common.rs"]
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::stream::SelectAll;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_tungstenite::tungstenite::Message;

/// Messages a topic's channel holds for its slowest receiver.
const CAPACITY: usize = 4096;
/// Topics one connection may subscribe to (a bound on its streams).
const MAX_TOPICS_PER_CONN: usize = 256;
/// Ready deliveries fed before one flush.
const BATCH: usize = 64;

#[derive(Default)]
struct Hub {
    topics: Mutex<HashMap<String, broadcast::Sender<Bytes>>>,
    lagged: AtomicU64,
}

impl Hub {
    fn subscribe(&self, topic: &str) -> broadcast::Receiver<Bytes> {
        let mut t = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        t.entry(topic.to_owned())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    fn publish(&self, topic: &str, msg: Bytes) {
        let t = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = t.get(topic) {
            let _ = tx.send(msg);
        }
    }
}

fn topic_of(b: &[u8]) -> Option<&str> {
    let (&n, rest) = b.split_first()?;
    std::str::from_utf8(rest.get(..n as usize)?).ok()
}

async fn serve(hub: Arc<Hub>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let mut subs: SelectAll<BroadcastStream<Bytes>> = SelectAll::new();
    loop {
        tokio::select! {
            m = ws.next() => {
                let Some(Ok(m)) = m else { return };
                match m {
                    Message::Text(t) => {
                        let Some(topic) = t.as_str().strip_prefix("sub ") else { return };
                        if subs.len() >= MAX_TOPICS_PER_CONN {
                            return;
                        }
                        subs.push(BroadcastStream::new(hub.subscribe(topic)));
                        if ws.send(Message::text(format!("ok {topic}"))).await.is_err() {
                            return;
                        }
                    }
                    Message::Binary(b) => {
                        if let Some(topic) = topic_of(&b) {
                            let topic = topic.to_owned();
                            hub.publish(&topic, b);
                        }
                    }
                    Message::Close(_) => return,
                    _ => {}
                }
            }
            Some(item) = subs.next(), if !subs.is_empty() => {
                let mut next = Some(item);
                let mut fed = 0;
                while let Some(item) = next.take() {
                    match item {
                        Ok(b) => {
                            if ws.feed(Message::Binary(b)).await.is_err() {
                                return;
                            }
                        }
                        Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                            hub.lagged.fetch_add(n, Ordering::Relaxed);
                        }
                    }
                    fed += 1;
                    if fed < BATCH {
                        next = subs.next().now_or_never().flatten();
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

fn main() {
    let args = common::args("pubsub-tokio-broadcast");
    let hub = Arc::new(Hub::default());
    let h = Arc::clone(&hub);
    common::runtime(args.threads).block_on(async move {
        let listener = TcpListener::bind(args.addr).await.expect("bind");
        eprintln!("pubsub-tokio-broadcast: listening on {}", args.addr);
        let accept = async {
            loop {
                if let Ok((s, _)) = listener.accept().await {
                    tokio::spawn(serve(Arc::clone(&h), s));
                }
            }
        };
        tokio::select! {
            _ = accept => {}
            _ = common::shutdown_signal() => {}
        }
    });
    eprintln!(
        "pubsub-tokio-broadcast: stopped; lagged (lost) deliveries {}",
        hub.lagged.load(Ordering::Relaxed)
    );
}

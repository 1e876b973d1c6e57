//! The broker thread: one current-thread tokio runtime running the NATS or
//! Redis client, fed by the topics through [`Shared`].

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use myriad_ws::Topics;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{Broker, ClusterConfig, ClusterError, Shared};

/// Messages sent per wake-up at most, so that interest changes and stop
/// are seen between batches.
const BATCH: usize = 256;

/// How often the NATS connection state is read into the counters.
const STATE_POLL: Duration = Duration::from_millis(50);

/// First wait before reconnecting to Redis (doubling up to the maximum).
const FIRST_DELAY: Duration = Duration::from_millis(50);

/// Longest wait for the broker to confirm subscriptions before a sync's
/// callbacks run anyway.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn check_url(c: &ClusterConfig) -> Result<(), ClusterError> {
    let bad = |reason: String| ClusterError::BadUrl {
        url: c.url.clone(),
        reason,
    };
    match c.broker {
        Broker::Nats => async_nats::ServerAddr::from_str(&c.url)
            .map(|_| ())
            .map_err(|e| bad(e.to_string())),
        Broker::Redis => redis::Client::open(c.url.as_str())
            .map(|_| ())
            .map_err(|e| bad(e.to_string())),
    }
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    topics: Topics,
    rx: mpsc::Receiver<(Arc<str>, Arc<[u8]>)>,
) {
    match shared.config.broker {
        Broker::Nats => nats(shared, topics, rx).await,
        Broker::Redis => redis_loop(shared, topics, rx).await,
    }
}

fn run_syncs(shared: &Shared) {
    run_all(shared.take_syncs());
}

/// Runs sync callbacks taken earlier (see `nats` for why they are taken
/// before the interest is read).
fn run_all(syncs: Vec<crate::SyncDone>) {
    for done in syncs {
        done();
    }
}

/// Records the connection state; counts reconnects.
fn set_connected(shared: &Shared, now: bool, ever: &mut bool) {
    let was = shared.connected.swap(now, Ordering::SeqCst);
    if now && !was {
        if *ever {
            shared.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        *ever = true;
        tracing::info!(broker = ?shared.config.broker, "connected to the broker");
    } else if !now && was {
        tracing::warn!(broker = ?shared.config.broker, "broker connection lost");
    }
}

async fn nats(shared: Arc<Shared>, topics: Topics, mut rx: mpsc::Receiver<(Arc<str>, Arc<[u8]>)>) {
    let max = shared.config.max_reconnect_delay;
    let opts = async_nats::ConnectOptions::new()
        // Our own messages are delivered locally already.
        .no_echo()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempts| {
            let ms = 50u64.saturating_mul(1 << attempts.min(10));
            Duration::from_millis(ms).min(max)
        });
    let client = match opts.connect(shared.config.url.as_str()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "NATS client failed to start");
            return;
        }
    };
    // Topic -> the task reading its subscription (dropping the subscriber
    // unsubscribes; the client subscribes again by itself after a
    // reconnect).
    let mut subs: HashMap<Arc<str>, JoinHandle<()>> = HashMap::new();
    let mut ever = false;
    let mut poll = tokio::time::interval(STATE_POLL);
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        tokio::select! {
            _ = shared.changed.notified() => {}
            m = rx.recv() => {
                let Some(first) = m else { break };
                let mut next = Some(first);
                let mut n = 0;
                while let Some((topic, frame)) = next.take() {
                    if !shared.connected.load(Ordering::Relaxed) {
                        shared.dropped_down.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let subject = shared.subject(&topic);
                        let payload = bytes::Bytes::from(shared.envelope(&frame));
                        match client.publish(subject, payload).await {
                            Ok(()) => shared.sent.fetch_add(1, Ordering::Relaxed),
                            Err(_) => shared.dropped_down.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    n += 1;
                    if n < BATCH {
                        next = rx.try_recv().ok();
                    }
                }
            }
            _ = poll.tick() => {
                let up = client.connection_state() == async_nats::connection::State::Connected;
                set_connected(&shared, up, &mut ever);
            }
        }
        // Syncs taken before the interest is read: a sync asked after its
        // subscription (the handler subscribes, then syncs) finds the dirty
        // flag set, so the reconciliation below covers it. Taken after,
        // a sync asked between the two would run before its SUB was sent.
        let syncs = shared.take_syncs();
        if shared.dirty.swap(false, Ordering::SeqCst) {
            let wanted: HashSet<Arc<str>> = shared.wanted().into_iter().collect();
            subs.retain(|t, task| {
                let keep = wanted.contains(t);
                if !keep {
                    task.abort();
                }
                keep
            });
            for t in wanted {
                if subs.contains_key(&t) {
                    continue;
                }
                match client.subscribe(shared.subject(&t)).await {
                    Ok(mut sub) => {
                        let (s, tp) = (Arc::clone(&shared), topics.clone());
                        let task = tokio::spawn(async move {
                            while let Some(m) = sub.next().await {
                                s.incoming(&tp, m.subject.as_str(), &m.payload);
                            }
                        });
                        subs.insert(t, task);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "NATS subscribe failed");
                        shared.dirty.store(true, Ordering::SeqCst);
                    }
                }
            }
            shared
                .broker_subscriptions
                .store(subs.len() as u64, Ordering::Relaxed);
        }
        if !syncs.is_empty() {
            if shared.connected.load(Ordering::Relaxed) {
                round_trip(&client, &shared).await;
            }
            run_all(syncs);
        }
    }
    for (_, task) in subs.drain() {
        task.abort();
    }
    shared.connected.store(false, Ordering::SeqCst);
    run_syncs(&shared);
}

/// Returns once the NATS server has processed everything this client sent
/// before (or after [`FLUSH_TIMEOUT`]).
///
/// `Client::flush` is not enough: it only writes the buffer to the socket,
/// and the server reads each client's socket on its own, so another node's
/// PUB can overtake our SUB (the cluster test lost a message that way
/// under CPU contention, 3 runs in 15). The server handles one client's
/// operations in order and answers a request nobody listens to with "no
/// responders" (a status message, NATS 2.2+): that answer proves our
/// earlier SUBs are in place. The subject `{prefix}.~sync` is outside the
/// topic space ([`crate::subject`] writes `~` only before two hex digits),
/// so no node subscribes to it.
async fn round_trip(client: &async_nats::Client, shared: &Shared) {
    let subject = format!("{}.~sync", shared.config.prefix);
    let r = tokio::time::timeout(FLUSH_TIMEOUT, client.request(subject, bytes::Bytes::new())).await;
    match r {
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
        other => tracing::debug!(result = ?other.map(|r| r.map(|_| ())), "NATS sync round trip"),
    }
}

/// Waits `d`, or less if stopped.
async fn pause(shared: &Shared, d: Duration) {
    let end = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < end && !shared.stop.load(Ordering::SeqCst) {
        let _ = tokio::time::timeout_at(end, shared.changed.notified()).await;
        // Syncs asked while down run at once (there is nothing to wait for).
        run_syncs(shared);
    }
}

async fn redis_loop(
    shared: Arc<Shared>,
    topics: Topics,
    mut rx: mpsc::Receiver<(Arc<str>, Arc<[u8]>)>,
) {
    let client = match redis::Client::open(shared.config.url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "Redis client failed to start");
            return;
        }
    };
    let mut ever = false;
    let mut delay = FIRST_DELAY;
    'outer: while !shared.stop.load(Ordering::SeqCst) {
        let conns = async {
            let ps = client.get_async_pubsub().await?;
            let con = client.get_multiplexed_async_connection().await?;
            Ok::<_, redis::RedisError>((ps, con))
        };
        let (ps, mut con) = match tokio::time::timeout(FLUSH_TIMEOUT, conns).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "Redis connection failed");
                drain_down(&shared, &mut rx);
                pause(&shared, delay).await;
                delay = (delay * 2).min(shared.config.max_reconnect_delay);
                continue;
            }
            Err(_) => {
                drain_down(&shared, &mut rx);
                pause(&shared, delay).await;
                delay = (delay * 2).min(shared.config.max_reconnect_delay);
                continue;
            }
        };
        let (mut sink, mut stream) = ps.split();
        // Every topic with subscribers, again after a reconnect.
        shared.dirty.store(true, Ordering::SeqCst);
        let mut current: HashSet<Arc<str>> = HashSet::new();
        let mut connected_once = false;
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                break 'outer;
            }
            // Taken before the interest is read, as in `nats`.
            let syncs = shared.take_syncs();
            if shared.dirty.swap(false, Ordering::SeqCst) {
                let wanted: HashSet<Arc<str>> = shared.wanted().into_iter().collect();
                let gone: Vec<Arc<str>> = current.difference(&wanted).cloned().collect();
                let new: Vec<Arc<str>> = wanted.difference(&current).cloned().collect();
                let mut ok = true;
                for t in gone {
                    if sink.unsubscribe(shared.subject(&t)).await.is_err() {
                        ok = false;
                        break;
                    }
                    current.remove(&t);
                }
                for t in new {
                    if !ok || sink.subscribe(shared.subject(&t)).await.is_err() {
                        ok = false;
                        break;
                    }
                    current.insert(t);
                }
                shared
                    .broker_subscriptions
                    .store(current.len() as u64, Ordering::Relaxed);
                if !ok {
                    shared.dirty.store(true, Ordering::SeqCst);
                    // Broker down: nothing to wait for (as `sync` does).
                    run_all(syncs);
                    break;
                }
            }
            if !connected_once {
                // Up only once the subscriptions are back.
                connected_once = true;
                delay = FIRST_DELAY;
                set_connected(&shared, true, &mut ever);
            }
            // SUBSCRIBE is answered before it returns: nothing to flush.
            run_all(syncs);
            tokio::select! {
                _ = shared.changed.notified() => {}
                m = rx.recv() => {
                    let Some((topic, frame)) = m else { break 'outer };
                    let r = redis::cmd("PUBLISH")
                        .arg(shared.subject(&topic))
                        .arg(shared.envelope(&frame))
                        .query_async::<i64>(&mut con)
                        .await;
                    if r.is_ok() {
                        shared.sent.fetch_add(1, Ordering::Relaxed);
                    } else {
                        shared.dropped_down.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    shared.incoming(&topics, msg.get_channel_name(), msg.get_payload_bytes());
                }
            }
        }
        set_connected(&shared, false, &mut ever);
        shared.broker_subscriptions.store(0, Ordering::Relaxed);
        drain_down(&shared, &mut rx);
        pause(&shared, delay).await;
    }
    shared.connected.store(false, Ordering::SeqCst);
    run_syncs(&shared);
}

/// While down: what was queued for the broker is dropped and counted.
fn drain_down(shared: &Shared, rx: &mut mpsc::Receiver<(Arc<str>, Arc<[u8]>)>) {
    while rx.try_recv().is_ok() {
        shared.dropped_down.fetch_add(1, Ordering::Relaxed);
    }
    run_syncs(shared);
}

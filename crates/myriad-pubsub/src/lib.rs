//! Myriad topics across nodes: a [`Cluster`] links a node's
//! [`myriad_ws::Topics`] to a broker, so that a message published on any
//! node reaches the subscribers of every node.
//!
//! Brokers are existing, proven engines, never a protocol of our own:
//! [`Broker::Nats`] (core NATS through `async-nats`, the default) or
//! [`Broker::Redis`] (Redis pub/sub through `redis`). Each runs on one
//! thread of its own (a current-thread tokio runtime) and reaches the
//! engine's loops only through the topics' cross-loop posting.
//!
//! # Guarantees
//!
//! * **One copy per node.** A message published on a node is delivered to
//!   that node's subscribers directly, and sent to the broker once; the
//!   other nodes each get one copy from the broker and fan it out locally
//!   (the WebSocket frame travels as it is: it is framed once, on the
//!   publishing node). A node ignores its own messages coming back.
//! * **Interest.** A node subscribes to a topic on the broker only while it
//!   has local subscribers of it (the first subscriber on any loop
//!   subscribes, the last one leaving unsubscribes).
//! * **At most once.** While the broker is unreachable, local delivery goes
//!   on, and messages for other nodes are dropped and counted
//!   ([`ClusterStats::dropped_down`]); a full queue to the broker thread
//!   drops too ([`ClusterStats::dropped_full`]). After a reconnect the
//!   node subscribes again to every topic it has subscribers of; what was
//!   published meanwhile is lost.
//! * **Validation.** A message from the broker is delivered only if it is
//!   one whole, unmasked text (valid UTF-8) or binary WebSocket frame of at
//!   most [`ClusterConfig::max_message`] bytes in Myriad's envelope;
//!   anything else is counted ([`ClusterStats::dropped_invalid`]) and
//!   ignored, so a stray publisher on the broker cannot corrupt a client's
//!   stream.
//!
//! # Wire format
//!
//! Subject (NATS) or channel (Redis): `{prefix}.{topic}`, the topic's bytes
//! outside `[A-Za-z0-9_-]` written `~XX` (hex), so that a topic is one NATS
//! token and never a wildcard. Payload: `MYR1`, the publishing node's id (8
//! bytes, big-endian), then the WebSocket frame.

mod backend;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use myriad_ws::{FrameHeader, OpCode, Topics, Uplink};
use tokio::sync::{mpsc, Notify};

/// The broker engine of a [`Cluster`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Broker {
    /// Core NATS (`nats://host:4222`).
    Nats,
    /// Redis pub/sub (`redis://host:6379`).
    Redis,
}

impl std::str::FromStr for Broker {
    type Err = ClusterError;

    fn from_str(s: &str) -> Result<Self, ClusterError> {
        match s {
            "nats" => Ok(Broker::Nats),
            "redis" => Ok(Broker::Redis),
            other => Err(ClusterError::UnknownBroker(other.to_owned())),
        }
    }
}

/// How a [`Cluster`] reaches its broker.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS or Redis.
    pub broker: Broker,
    /// The broker's URL (`nats://127.0.0.1:4222`, `redis://127.0.0.1:6379`).
    pub url: String,
    /// Subject or channel prefix: nodes with the same prefix (and broker)
    /// form one cluster.
    pub prefix: String,
    /// Messages waiting for the broker thread, past which a publish is
    /// dropped for the other nodes (and counted).
    pub queue: usize,
    /// Longest frame accepted from the broker, in bytes.
    pub max_message: usize,
    /// Longest wait between two reconnection attempts.
    pub max_reconnect_delay: Duration,
}

impl ClusterConfig {
    /// A configuration with the defaults: prefix `myriad`, a queue of
    /// 65,536 messages, frames up to 1 MiB, reconnection at most every 2 s.
    ///
    /// ```
    /// use myriad_pubsub::{Broker, ClusterConfig};
    /// let c = ClusterConfig::new(Broker::Nats, "nats://127.0.0.1:4222");
    /// assert_eq!(c.prefix, "myriad");
    /// ```
    pub fn new(broker: Broker, url: impl Into<String>) -> Self {
        ClusterConfig {
            broker,
            url: url.into(),
            prefix: "myriad".into(),
            queue: 65_536,
            max_message: 1 << 20,
            max_reconnect_delay: Duration::from_secs(2),
        }
    }
}

/// Why a [`Cluster`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The topics are linked to another uplink already.
    #[error("these topics already have an uplink")]
    UplinkSet,
    /// Not `nats` or `redis`.
    #[error("unknown broker {0:?} (nats, redis)")]
    UnknownBroker(String),
    /// The URL does not parse for the broker.
    #[error("bad broker URL {url:?}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// The client library's reason.
        reason: String,
    },
    /// The broker thread or its runtime could not start.
    #[error("cannot start the broker thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Counters of a [`Cluster`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Connected to the broker right now.
    pub connected: bool,
    /// Topics subscribed on the broker right now.
    pub broker_subscriptions: u64,
    /// Messages sent to the broker.
    pub sent: u64,
    /// Messages from other nodes delivered here.
    pub received: u64,
    /// Messages not sent because the broker was unreachable.
    pub dropped_down: u64,
    /// Messages not sent because the queue to the broker thread was full.
    pub dropped_full: u64,
    /// Messages from the broker refused (not Myriad's envelope, or not one
    /// valid frame).
    pub dropped_invalid: u64,
    /// Connections to the broker made after the first.
    pub reconnects: u64,
}

/// The state shared by the topics (through [`Uplink`]) and the broker
/// thread.
pub(crate) struct Shared {
    pub node: u64,
    pub config: ClusterConfig,
    /// Loops with subscribers, per topic (only topics with some). Locked
    /// on a loop's first/last subscriber of a topic and by the broker
    /// thread, never per message.
    pub interest: Mutex<HashMap<Arc<str>, u32>>,
    /// The interest changed since the broker thread last looked.
    pub dirty: AtomicBool,
    /// Wakes the broker thread: interest changed, a sync was asked, or stop.
    pub changed: Notify,
    pub stop: AtomicBool,
    /// Callbacks of [`Cluster::sync`], run after the next reconciliation.
    pub syncs: Mutex<Vec<SyncDone>>,
    pub out: mpsc::Sender<(Arc<str>, Arc<[u8]>)>,
    pub connected: AtomicBool,
    pub broker_subscriptions: AtomicU64,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub dropped_down: AtomicU64,
    pub dropped_full: AtomicU64,
    pub dropped_invalid: AtomicU64,
    pub reconnects: AtomicU64,
}

/// A callback of [`Cluster::sync`].
pub(crate) type SyncDone = Box<dyn FnOnce() + Send>;

/// Most [`Cluster::sync`] callbacks waiting: past it, they run at once.
const MAX_SYNCS: usize = 65_536;

/// The envelope's magic.
const MAGIC: &[u8; 4] = b"MYR1";

impl Uplink for Shared {
    fn interest(&self, topic: &str, on: bool) {
        {
            let mut m = self.interest.lock().unwrap_or_else(|p| p.into_inner());
            if on {
                *m.entry(Arc::from(topic)).or_insert(0) += 1;
            } else if let Some(n) = m.get_mut(topic) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(topic);
                }
            }
        }
        self.dirty.store(true, Ordering::SeqCst);
        self.changed.notify_one();
    }

    fn publish(&self, topic: &str, frame: &Arc<[u8]>) {
        if !self.connected.load(Ordering::Relaxed) {
            self.dropped_down.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self
            .out
            .try_send((Arc::from(topic), Arc::clone(frame)))
            .is_err()
        {
            self.dropped_full.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Shared {
    /// The topics with local subscribers now.
    pub(crate) fn wanted(&self) -> Vec<Arc<str>> {
        let m = self.interest.lock().unwrap_or_else(|p| p.into_inner());
        m.keys().cloned().collect()
    }

    pub(crate) fn take_syncs(&self) -> Vec<SyncDone> {
        std::mem::take(&mut *self.syncs.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Subject or channel of `topic`.
    pub(crate) fn subject(&self, topic: &str) -> String {
        subject(&self.config.prefix, topic)
    }

    /// The payload sent to the broker for `frame`.
    pub(crate) fn envelope(&self, frame: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(12 + frame.len());
        v.extend_from_slice(MAGIC);
        v.extend_from_slice(&self.node.to_be_bytes());
        v.extend_from_slice(frame);
        v
    }

    /// A message from the broker: delivers it on every loop unless it is
    /// ours or invalid.
    pub(crate) fn incoming(&self, topics: &Topics, subject: &str, payload: &[u8]) {
        let Some(topic) = topic_of(&self.config.prefix, subject) else {
            self.dropped_invalid.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match open_envelope(payload, self.config.max_message) {
            Some((node, _)) if node == self.node => {}
            Some((_, frame)) => {
                let frame: Arc<[u8]> = Arc::from(frame);
                if topics.deliver_local(&topic, &frame).is_ok() {
                    self.received.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                self.dropped_invalid.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// `{prefix}.{escaped topic}`.
///
/// ```
/// assert_eq!(myriad_pubsub::subject("myriad", "prices/EUR-USD"), "myriad.prices~2FEUR-USD");
/// ```
pub fn subject(prefix: &str, topic: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + 1 + topic.len());
    s.push_str(prefix);
    s.push('.');
    for b in topic.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("~{b:02X}"));
        }
    }
    s
}

/// The topic of a subject made by [`subject`], if it is one.
///
/// ```
/// assert_eq!(myriad_pubsub::topic_of("myriad", "myriad.prices~2FEUR-USD").as_deref(), Some("prices/EUR-USD"));
/// assert_eq!(myriad_pubsub::topic_of("myriad", "other.x"), None);
/// ```
pub fn topic_of(prefix: &str, subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let b = rest.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'~' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The node id and frame of an envelope, if it holds exactly one valid
/// unmasked text or binary frame of at most `max` bytes.
///
/// ```
/// use myriad_ws::{MessageKind, PreparedMessage};
/// let m = PreparedMessage::new(MessageKind::Text, b"hi");
/// let mut env = b"MYR1".to_vec();
/// env.extend_from_slice(&7u64.to_be_bytes());
/// env.extend_from_slice(m.bytes());
/// assert_eq!(myriad_pubsub::open_envelope(&env, 1024), Some((7, m.bytes())));
/// assert_eq!(myriad_pubsub::open_envelope(b"MYR1junk", 1024), None);
/// ```
pub fn open_envelope(payload: &[u8], max: usize) -> Option<(u64, &[u8])> {
    let rest = payload.strip_prefix(MAGIC)?;
    let node = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let frame = &rest[8..];
    if frame.len() > max {
        return None;
    }
    let (h, n) = FrameHeader::parse(frame).ok()??;
    let body = frame.get(n..)?;
    let whole = h.fin && !h.rsv1 && !h.rsv2 && !h.rsv3 && h.mask.is_none();
    if !whole || body.len() as u64 != h.payload_len {
        return None;
    }
    match h.opcode {
        OpCode::Text if std::str::from_utf8(body).is_ok() => Some((node, frame)),
        OpCode::Binary => Some((node, frame)),
        _ => None,
    }
}

/// A node's link to the cluster: started with the node's [`Topics`], it
/// runs the broker client on a thread of its own until dropped.
///
/// # Examples
///
/// ```no_run
/// use myriad_pubsub::{Broker, Cluster, ClusterConfig};
/// let topics = myriad_ws::Topics::default();
/// let cluster = Cluster::start(&topics, ClusterConfig::new(Broker::Nats, "nats://127.0.0.1:4222"))?;
/// // ... start the engine with services that subscribe and publish on `topics` ...
/// println!("{:?}", cluster.stats());
/// # Ok::<(), myriad_pubsub::ClusterError>(())
/// ```
pub struct Cluster {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.shared.node)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Cluster {
    /// Links `topics` to the broker and starts the broker thread. Call it
    /// before the first subscription. The broker need not be up yet: the
    /// thread connects (and reconnects) by itself.
    ///
    /// # Errors
    ///
    /// [`ClusterError::UplinkSet`] if `topics` already has an uplink,
    /// [`ClusterError::BadUrl`], or [`ClusterError::Thread`].
    pub fn start(topics: &Topics, config: ClusterConfig) -> Result<Cluster, ClusterError> {
        backend::check_url(&config)?;
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let shared = Arc::new(Shared {
            node: node_id(),
            config,
            interest: Mutex::new(HashMap::new()),
            dirty: AtomicBool::new(false),
            changed: Notify::new(),
            stop: AtomicBool::new(false),
            syncs: Mutex::new(Vec::new()),
            out: tx,
            connected: AtomicBool::new(false),
            broker_subscriptions: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            dropped_down: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            dropped_invalid: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        });
        if !topics.set_uplink(shared.clone()) {
            return Err(ClusterError::UplinkSet);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (s, t) = (Arc::clone(&shared), topics.clone());
        let thread = std::thread::Builder::new()
            .name("myriad-pubsub".into())
            .spawn(move || rt.block_on(backend::run(s, t, rx)))?;
        Ok(Cluster {
            shared,
            thread: Some(thread),
        })
    }

    /// This node's id in the envelopes.
    ///
    /// ```no_run
    /// # fn f(c: &myriad_pubsub::Cluster) { println!("{:016x}", c.node_id()); }
    /// ```
    pub fn node_id(&self) -> u64 {
        self.shared.node
    }

    /// Runs `done` (on the broker thread) once the broker subscriptions
    /// match the topics' interest as of this call, or at once while the
    /// broker is unreachable: a subscriber confirmed after it will get
    /// what other nodes publish from then on.
    ///
    /// ```no_run
    /// # fn f(c: &myriad_pubsub::Cluster) {
    /// c.sync(|| println!("subscribed cluster-wide"));
    /// # }
    /// ```
    pub fn sync(&self, done: impl FnOnce() + Send + 'static) {
        sync(&self.shared, Box::new(done));
    }

    /// A handle that can [`Cluster::sync`] from anywhere (cheap to clone).
    ///
    /// ```no_run
    /// # fn f(c: &myriad_pubsub::Cluster) {
    /// let h = c.handle();
    /// h.sync(|| {});
    /// # }
    /// ```
    pub fn handle(&self) -> ClusterHandle {
        ClusterHandle(Arc::clone(&self.shared))
    }

    /// The counters now.
    ///
    /// ```no_run
    /// # fn f(c: &myriad_pubsub::Cluster) { assert!(c.stats().connected); }
    /// ```
    pub fn stats(&self) -> ClusterStats {
        stats(&self.shared)
    }
}

fn sync(s: &Shared, done: SyncDone) {
    if s.connected.load(Ordering::Relaxed) {
        let mut v = s.syncs.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < MAX_SYNCS {
            v.push(done);
            drop(v);
            s.changed.notify_one();
            return;
        }
    }
    done();
}

fn stats(s: &Shared) -> ClusterStats {
    ClusterStats {
        connected: s.connected.load(Ordering::Relaxed),
        broker_subscriptions: s.broker_subscriptions.load(Ordering::Relaxed),
        sent: s.sent.load(Ordering::Relaxed),
        received: s.received.load(Ordering::Relaxed),
        dropped_down: s.dropped_down.load(Ordering::Relaxed),
        dropped_full: s.dropped_full.load(Ordering::Relaxed),
        dropped_invalid: s.dropped_invalid.load(Ordering::Relaxed),
        reconnects: s.reconnects.load(Ordering::Relaxed),
    }
}

/// A cloneable view of a [`Cluster`] for handlers: [`ClusterHandle::sync`]
/// and the counters.
#[derive(Clone)]
pub struct ClusterHandle(Arc<Shared>);

impl std::fmt::Debug for ClusterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ClusterHandle").field(&self.0.node).finish()
    }
}

impl ClusterHandle {
    /// See [`Cluster::sync`].
    ///
    /// ```no_run
    /// # fn f(h: &myriad_pubsub::ClusterHandle) { h.sync(|| {}); }
    /// ```
    pub fn sync(&self, done: impl FnOnce() + Send + 'static) {
        sync(&self.0, Box::new(done));
    }

    /// See [`Cluster::stats`].
    ///
    /// ```no_run
    /// # fn f(h: &myriad_pubsub::ClusterHandle) { let _ = h.stats(); }
    /// ```
    pub fn stats(&self) -> ClusterStats {
        stats(&self.0)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.shared.stop.store(true, Ordering::SeqCst);
            self.shared.changed.notify_one();
            let _ = t.join();
        }
    }
}

/// A node id unlikely to collide: std's per-process random hash keys,
/// mixed with the process id and the time.
fn node_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use myriad_ws::{MessageKind, PreparedMessage};

    #[test]
    fn subjects_round_trip() {
        for t in ["a", "prices/EURUSD", "a.b", "*", ">", "é ü", "~7E", "x-y_z"] {
            let s = subject("p", t);
            assert!(!s[2..].contains(['.', '*', '>', ' ']), "{s}");
            assert_eq!(topic_of("p", &s).as_deref(), Some(t), "{s}");
        }
        assert_eq!(topic_of("p", "p.~4"), None);
        assert_eq!(topic_of("p", "p.~ZZ"), None);
        assert_eq!(topic_of("p", "p.~FF"), None); // not UTF-8
        assert_eq!(topic_of("p", "px"), None);
    }

    #[test]
    fn envelopes_are_checked() {
        let env = |frame: &[u8]| {
            let mut v = MAGIC.to_vec();
            v.extend_from_slice(&9u64.to_be_bytes());
            v.extend_from_slice(frame);
            v
        };
        let text = PreparedMessage::new(MessageKind::Text, b"hello");
        let bin = PreparedMessage::new(MessageKind::Binary, &[0xff; 300]);
        assert_eq!(
            open_envelope(&env(text.bytes()), 100),
            Some((9, text.bytes()))
        );
        assert_eq!(
            open_envelope(&env(bin.bytes()), 1000),
            Some((9, bin.bytes()))
        );
        // too big, truncated, trailing bytes, bad UTF-8, masked, control,
        // fragment, compressed
        assert_eq!(open_envelope(&env(bin.bytes()), 100), None);
        assert_eq!(open_envelope(&env(&text.bytes()[..4]), 100), None);
        assert_eq!(
            open_envelope(&env(&[text.bytes(), b"x"].concat()), 100),
            None
        );
        assert_eq!(open_envelope(&env(&[0x81, 2, 0xc3, 0x28]), 100), None);
        assert_eq!(
            open_envelope(&env(&[0x81, 0x81, 0, 0, 0, 0, b'a']), 100),
            None
        );
        assert_eq!(open_envelope(&env(&[0x88, 0]), 100), None);
        assert_eq!(open_envelope(&env(&[0x01, 1, b'a']), 100), None);
        assert_eq!(open_envelope(&env(&[0xc1, 1, b'a']), 100), None);
        assert_eq!(open_envelope(b"MYR2\0\0\0\0\0\0\0\0\x81\0", 100), None);
        assert_eq!(open_envelope(b"MYR1\0\0", 100), None);
    }
}

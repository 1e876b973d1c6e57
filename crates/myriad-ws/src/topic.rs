//! Topics: publish/subscribe on one node, across every loop of the engine.
//!
//! Two layers:
//!
//! * [`TopicTable`]: the sans-I/O registry of one loop (topic → subscribers
//!   and subscriber → topics), generic over the subscriber key so that it
//!   can be measured and tested without an engine.
//! * [`Topics`]: one `TopicTable<ConnId>` per loop, each touched only by its
//!   own loop (subscriptions happen on the subscriber's loop, a publish is
//!   posted to every other loop, which writes to its own subscribers), so
//!   the per-loop locks are never contended. The message is a
//!   [`PreparedMessage`]: framed once, its bytes shared by every
//!   recipient's send queue by reference.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use myriad::{ConnId, LoopCx, LoopHandle};

use crate::app::WsCtx;
use crate::encoder::PreparedMessage;

/// Up to this many subscribers a topic keeps them in a vector (scanned on
/// unsubscribe); past it, in a hash set. One subscriber takes no
/// allocation at all.
const FEW: usize = 16;

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The topic name is empty or longer than
    /// [`TopicsConfig::max_topic_len`].
    #[error("topic name must be 1 to {max} bytes long, not {len}")]
    BadName {
        /// Length of the refused name.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The subscriber already has [`TopicsConfig::max_topics_per_subscriber`]
    /// topics.
    #[error("a subscriber may have at most {0} topics")]
    TooManyTopics(usize),
    /// Hixie-76 connections cannot receive RFC 6455 frames.
    #[error("a Hixie-76 connection cannot subscribe")]
    Hixie76,
    /// [`Topics::publish`] from outside the engine before the loops were
    /// known (no subscription yet and no [`Topics::attach`]).
    #[error("the topics are not attached to an engine yet")]
    NotAttached,
}

/// What a subscribe or unsubscribe changed in one [`TopicTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// Nothing: already subscribed, or not subscribed.
    Unchanged,
    /// The subscriber was added to a topic that had subscribers already.
    Added,
    /// The subscriber was added, and is the topic's first in this table
    /// (a cluster bridge subscribes on the broker now).
    AddedFirst,
    /// The subscriber was removed; the topic keeps others.
    Removed,
    /// The subscriber was removed and was the topic's last in this table.
    RemovedLast,
}

/// The subscribers of one topic.
// Boxed collections on purpose: the enum stays 16 bytes, which is what
// a million single-subscriber topics pay per entry (measured by the
// topic_memory example: 270 B per subscription unboxed, 170 B boxed).
#[allow(clippy::box_collection)]
enum Subs<K> {
    One(K),
    // Boxed: the table's entries stay 16 bytes for the common one.
    Few(Box<Vec<K>>),
    Many(Box<HashSet<K>>),
}

impl<K: Copy + Eq + Hash> Subs<K> {
    fn len(&self) -> usize {
        match self {
            Subs::One(_) => 1,
            Subs::Few(v) => v.len(),
            Subs::Many(s) => s.len(),
        }
    }

    fn insert(&mut self, k: K) -> bool {
        match self {
            Subs::One(o) if *o == k => false,
            Subs::One(o) => {
                *self = Subs::Few(Box::new(vec![*o, k]));
                true
            }
            Subs::Few(v) if v.contains(&k) => false,
            Subs::Few(v) if v.len() < FEW => {
                v.push(k);
                true
            }
            Subs::Few(v) => {
                let mut s: HashSet<K> = v.drain(..).collect();
                s.insert(k);
                *self = Subs::Many(Box::new(s));
                true
            }
            Subs::Many(s) => s.insert(k),
        }
    }

    /// Removes `k`; `None` when the topic has no subscriber left.
    fn remove(self, k: &K) -> (bool, Option<Self>) {
        match self {
            Subs::One(o) if o == *k => (true, None),
            Subs::One(o) => (false, Some(Subs::One(o))),
            Subs::Few(mut v) => {
                let Some(i) = v.iter().position(|x| x == k) else {
                    return (false, Some(Subs::Few(v)));
                };
                v.swap_remove(i);
                (true, Some(Self::from_vec(*v)))
            }
            Subs::Many(mut s) => {
                let removed = s.remove(k);
                if s.len() <= FEW / 2 {
                    // Shrinks back, with hysteresis against flapping.
                    (removed, Some(Self::from_vec(s.into_iter().collect())))
                } else {
                    (removed, Some(Subs::Many(s)))
                }
            }
        }
    }

    fn from_vec(mut v: Vec<K>) -> Self {
        match v.len() {
            1 => Subs::One(v[0]),
            _ => {
                v.shrink_to_fit();
                Subs::Few(Box::new(v))
            }
        }
    }

    fn for_each(&self, mut f: impl FnMut(K)) {
        match self {
            Subs::One(k) => f(*k),
            Subs::Few(v) => v.iter().copied().for_each(f),
            Subs::Many(s) => s.iter().copied().for_each(f),
        }
    }
}

/// The topics of one subscriber (boxed like [`Subs`], for the same reason).
#[allow(clippy::box_collection)]
enum Member {
    One(Arc<str>),
    Many(Box<Vec<Arc<str>>>),
}

impl Member {
    fn len(&self) -> usize {
        match self {
            Member::One(_) => 1,
            Member::Many(v) => v.len(),
        }
    }
}

/// The subscriptions of one loop: topic → subscribers and subscriber →
/// topics, for subscribers identified by `K` (a [`ConnId`] in [`Topics`]).
///
/// Sized for both extremes: a topic with one subscriber holds it inline
/// (no allocation), up to 16 in a vector, more in a hash set (O(1)
/// unsubscribe among 100,000); a topic's name is stored once, shared by
/// the topic's entry and its subscribers' lists.
///
/// ```
/// use myriad_ws::{Change, TopicTable};
/// let mut t = TopicTable::new(16, 64);
/// assert_eq!(t.subscribe(1u64, "news"), Ok(Change::AddedFirst));
/// assert_eq!(t.subscribe(2, "news"), Ok(Change::Added));
/// let mut got = Vec::new();
/// t.fanout("news", |k| { got.push(k); true });
/// got.sort();
/// assert_eq!(got, [1, 2]);
/// assert_eq!(t.unsubscribe(1, "news"), Change::Removed);
/// assert_eq!(t.remove_subscriber(2, |_| {}), 1);
/// assert!(t.is_empty());
/// ```
pub struct TopicTable<K> {
    topics: HashMap<Arc<str>, Subs<K>>,
    members: HashMap<K, Member>,
    subscriptions: usize,
    max_per_subscriber: usize,
    max_topic_len: usize,
}

impl<K> fmt::Debug for TopicTable<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicTable")
            .field("topics", &self.topics.len())
            .field("subscribers", &self.members.len())
            .field("subscriptions", &self.subscriptions)
            .finish()
    }
}

impl<K: Copy + Eq + Hash> TopicTable<K> {
    /// An empty table: each subscriber may have up to `max_per_subscriber`
    /// topics, of names up to `max_topic_len` bytes.
    ///
    /// ```
    /// let t = myriad_ws::TopicTable::<u64>::new(16, 64);
    /// assert_eq!(t.topic_count(), 0);
    /// ```
    pub fn new(max_per_subscriber: usize, max_topic_len: usize) -> Self {
        TopicTable {
            topics: HashMap::new(),
            members: HashMap::new(),
            subscriptions: 0,
            max_per_subscriber,
            max_topic_len,
        }
    }

    /// Subscribes `k` to `topic`.
    ///
    /// # Errors
    ///
    /// [`TopicError::BadName`] for an empty or too long name,
    /// [`TopicError::TooManyTopics`] past the per-subscriber limit.
    ///
    /// ```
    /// use myriad_ws::{Change, TopicError, TopicTable};
    /// let mut t = TopicTable::new(1, 8);
    /// assert_eq!(t.subscribe(1u64, "a"), Ok(Change::AddedFirst));
    /// assert_eq!(t.subscribe(1, "a"), Ok(Change::Unchanged));
    /// assert_eq!(t.subscribe(1, "b"), Err(TopicError::TooManyTopics(1)));
    /// assert!(matches!(t.subscribe(2, "way too long"), Err(TopicError::BadName { .. })));
    /// ```
    pub fn subscribe(&mut self, k: K, topic: &str) -> Result<Change, TopicError> {
        if topic.is_empty() || topic.len() > self.max_topic_len {
            return Err(TopicError::BadName {
                len: topic.len(),
                max: self.max_topic_len,
            });
        }
        let member = self.members.get(&k);
        if let Some(m) = member {
            let has = match m {
                Member::One(t) => &**t == topic,
                Member::Many(v) => v.iter().any(|t| &**t == topic),
            };
            if has {
                return Ok(Change::Unchanged);
            }
            if m.len() >= self.max_per_subscriber {
                return Err(TopicError::TooManyTopics(self.max_per_subscriber));
            }
        } else if self.max_per_subscriber == 0 {
            return Err(TopicError::TooManyTopics(0));
        }
        let (name, change) = match self.topics.get_key_value(topic) {
            Some((name, _)) => (Arc::clone(name), Change::Added),
            None => (Arc::<str>::from(topic), Change::AddedFirst),
        };
        match self.topics.entry(Arc::clone(&name)) {
            Entry::Occupied(mut e) => {
                e.get_mut().insert(k);
            }
            Entry::Vacant(e) => {
                e.insert(Subs::One(k));
            }
        }
        match self.members.entry(k) {
            Entry::Vacant(e) => {
                e.insert(Member::One(name));
            }
            Entry::Occupied(mut e) => {
                let m = e.get_mut();
                match m {
                    Member::One(t) => *m = Member::Many(Box::new(vec![Arc::clone(t), name])),
                    Member::Many(v) => v.push(name),
                }
            }
        }
        self.subscriptions += 1;
        Ok(change)
    }

    /// Removes `k` from the topic's subscribers (not from its own list).
    fn remove_from_topic(&mut self, k: &K, topic: &str) -> Change {
        let Some(subs) = self.topics.remove(topic) else {
            return Change::Unchanged;
        };
        let (removed, rest) = subs.remove(k);
        let change = match (&rest, removed) {
            (_, false) => Change::Unchanged,
            (None, true) => Change::RemovedLast,
            (Some(_), true) => Change::Removed,
        };
        if let Some(rest) = rest {
            // Re-keyed with the name some remaining subscriber's list holds.
            let name = self.name_of(topic, &rest);
            if let Some(name) = name {
                self.topics.insert(name, rest);
            } else {
                self.topics.insert(Arc::from(topic), rest);
            }
        }
        if removed {
            self.subscriptions -= 1;
        }
        change
    }

    fn name_of(&self, topic: &str, subs: &Subs<K>) -> Option<Arc<str>> {
        let mut found = None;
        subs.for_each(|k| {
            if found.is_none() {
                found = match self.members.get(&k) {
                    Some(Member::One(t)) if &**t == topic => Some(Arc::clone(t)),
                    Some(Member::Many(v)) => v.iter().find(|t| &***t == topic).cloned(),
                    _ => None,
                };
            }
        });
        found
    }

    /// Unsubscribes `k` from `topic`.
    ///
    /// ```
    /// use myriad_ws::{Change, TopicTable};
    /// let mut t = TopicTable::new(4, 8);
    /// t.subscribe(1u64, "a").unwrap();
    /// assert_eq!(t.unsubscribe(1, "a"), Change::RemovedLast);
    /// assert_eq!(t.unsubscribe(1, "a"), Change::Unchanged);
    /// ```
    pub fn unsubscribe(&mut self, k: K, topic: &str) -> Change {
        let Some(m) = self.members.get_mut(&k) else {
            return Change::Unchanged;
        };
        let gone = match m {
            Member::One(t) if &**t == topic => true,
            Member::One(_) => return Change::Unchanged,
            Member::Many(v) => {
                let Some(i) = v.iter().position(|t| &**t == topic) else {
                    return Change::Unchanged;
                };
                v.swap_remove(i);
                if v.len() == 1 {
                    *m = Member::One(v.remove(0));
                }
                false
            }
        };
        if gone {
            self.members.remove(&k);
        }
        self.remove_from_topic(&k, topic)
    }

    /// Removes every subscription of `k` (a closed connection), calling
    /// `on_last` with each topic left without subscribers. Returns how many
    /// subscriptions it removed.
    ///
    /// ```
    /// let mut t = myriad_ws::TopicTable::new(4, 8);
    /// t.subscribe(1u64, "a").unwrap();
    /// t.subscribe(1u64, "b").unwrap();
    /// let mut last = Vec::new();
    /// assert_eq!(t.remove_subscriber(1, |topic| last.push(topic.to_owned())), 2);
    /// last.sort();
    /// assert_eq!(last, ["a", "b"]);
    /// ```
    pub fn remove_subscriber(&mut self, k: K, mut on_last: impl FnMut(&str)) -> usize {
        let topics = match self.members.remove(&k) {
            None => return 0,
            Some(Member::One(t)) => vec![t],
            Some(Member::Many(v)) => *v,
        };
        for t in &topics {
            if self.remove_from_topic(&k, t) == Change::RemovedLast {
                on_last(t);
            }
        }
        topics.len()
    }

    /// Calls `deliver` with each subscriber of `topic`; those for which it
    /// returns `false` (gone) lose all their subscriptions, and `on_last`
    /// gets each topic left without subscribers by that. Returns how many
    /// subscribers `deliver` was called with.
    ///
    /// ```
    /// let mut t = myriad_ws::TopicTable::new(4, 8);
    /// t.subscribe(1u64, "a").unwrap();
    /// t.subscribe(2u64, "a").unwrap();
    /// assert_eq!(t.fanout("a", |k| k != 2), 2);
    /// assert_eq!(t.subscriber_count("a"), 1);
    /// ```
    pub fn fanout(&mut self, topic: &str, deliver: impl FnMut(K) -> bool) -> usize {
        self.fanout_then(topic, deliver, |_| {})
    }

    /// [`TopicTable::fanout`], with `on_last` called for each topic a gone
    /// subscriber's removal left empty.
    pub fn fanout_then(
        &mut self,
        topic: &str,
        mut deliver: impl FnMut(K) -> bool,
        mut on_last: impl FnMut(&str),
    ) -> usize {
        let Some(subs) = self.topics.get(topic) else {
            return 0;
        };
        let mut n = 0;
        let mut gone = Vec::new();
        subs.for_each(|k| {
            n += 1;
            if !deliver(k) {
                gone.push(k);
            }
        });
        for k in gone {
            self.remove_subscriber(k, &mut on_last);
        }
        n
    }

    /// Subscribers of `topic` in this table.
    ///
    /// ```
    /// assert_eq!(myriad_ws::TopicTable::<u64>::new(4, 8).subscriber_count("a"), 0);
    /// ```
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.topics.get(topic).map_or(0, Subs::len)
    }

    /// Whether `k` is subscribed to `topic`.
    ///
    /// ```
    /// let mut t = myriad_ws::TopicTable::new(4, 8);
    /// t.subscribe(7u64, "a").unwrap();
    /// assert!(t.is_subscribed(7, "a"));
    /// ```
    pub fn is_subscribed(&self, k: K, topic: &str) -> bool {
        match self.members.get(&k) {
            Some(Member::One(t)) => &**t == topic,
            Some(Member::Many(v)) => v.iter().any(|t| &**t == topic),
            None => false,
        }
    }

    /// Topics with at least one subscriber.
    ///
    /// ```
    /// assert_eq!(myriad_ws::TopicTable::<u64>::new(4, 8).topic_count(), 0);
    /// ```
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Subscriptions (subscriber, topic pairs).
    ///
    /// ```
    /// assert_eq!(myriad_ws::TopicTable::<u64>::new(4, 8).subscriptions(), 0);
    /// ```
    pub fn subscriptions(&self) -> usize {
        self.subscriptions
    }

    /// Whether there is no subscription.
    ///
    /// ```
    /// assert!(myriad_ws::TopicTable::<u64>::new(4, 8).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.subscriptions == 0
    }

    /// The topics with subscribers (to resubscribe on a broker).
    ///
    /// ```
    /// let mut t = myriad_ws::TopicTable::new(4, 8);
    /// t.subscribe(1u64, "a").unwrap();
    /// assert_eq!(t.topics().collect::<Vec<_>>(), ["a"]);
    /// ```
    pub fn topics(&self) -> impl Iterator<Item = &str> + '_ {
        self.topics.keys().map(|k| &**k)
    }
}

/// What [`Topics`] does with a subscriber whose send queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowPolicy {
    /// The subscriber misses the message (counted in
    /// [`TopicStats::dropped_slow`]) and stays connected.
    #[default]
    Drop,
    /// The subscriber is disconnected at once (a reset; counted in
    /// [`TopicStats::closed_slow`]).
    Close,
}

/// Limits and policies of [`Topics`].
#[derive(Debug, Clone)]
pub struct TopicsConfig {
    /// A subscriber with this many bytes queued (and not yet sent) gets no
    /// more messages: [`TopicsConfig::slow`] decides what happens instead.
    /// The engine's own `write_hard_limit` still applies above it.
    pub max_queued: usize,
    /// Drop the message or close the subscriber past `max_queued`.
    pub slow: SlowPolicy,
    /// Topics one connection may subscribe to.
    pub max_topics_per_subscriber: usize,
    /// Longest topic name, in bytes.
    pub max_topic_len: usize,
    /// Bytes of publishes posted to one loop and not yet run there: past
    /// it, that loop's subscribers miss the message (counted in
    /// [`TopicStats::dropped_behind`]) rather than the publisher queueing
    /// without bound for a loop that cannot keep up.
    pub max_in_flight: u64,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            max_queued: 1 << 20,
            slow: SlowPolicy::Drop,
            max_topics_per_subscriber: 256,
            max_topic_len: 256,
            max_in_flight: 16 << 20,
        }
    }
}

/// Counters of a [`Topics`] (all loops).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicStats {
    /// Subscriptions (connection, topic pairs) right now.
    pub subscriptions: u64,
    /// Messages queued on a subscriber.
    pub delivered: u64,
    /// Messages a subscriber missed because its queue was over
    /// [`TopicsConfig::max_queued`] (policy [`SlowPolicy::Drop`]).
    pub dropped_slow: u64,
    /// Subscribers disconnected for a full queue ([`SlowPolicy::Close`]).
    pub closed_slow: u64,
    /// Publishes a loop missed because it was behind
    /// ([`TopicsConfig::max_in_flight`]).
    pub dropped_behind: u64,
}

/// Publish/subscribe over the engine's loops: connections subscribe to
/// named topics, and a message published to a topic from any loop or any
/// thread reaches every subscriber, framed once and queued by reference.
///
/// Each loop keeps its own [`TopicTable`], touched only by that loop, so
/// its lock is never contended: (un)subscribing happens on the
/// connection's loop, and a publish runs on the publisher's loop for its
/// subscribers and is posted (one task per other loop) to the others. A
/// subscriber whose queue is over [`TopicsConfig::max_queued`] misses the
/// message or is disconnected ([`SlowPolicy`]); nothing queues without
/// bound. Delivery is at most once, in publish order per publisher and
/// loop. Hixie-76 connections cannot subscribe.
///
/// # Examples
///
/// ```
/// use myriad_ws::{Handshake, Message, MessageKind, PreparedMessage, Topics, WsCtx, WsHandler};
/// struct Sub { topics: Topics }
/// impl WsHandler for Sub {
///     fn on_open(&mut self, cx: &mut WsCtx<'_, '_>, hs: &Handshake<'_>) {
///         let _ = self.topics.subscribe(cx, hs.path());
///     }
///     fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
///         let m = PreparedMessage::new(MessageKind::Text, msg.as_bytes());
///         self.topics.publish_from(cx.loop_cx(), "/news", &m);
///     }
///     fn on_close(&mut self, cx: &mut WsCtx<'_, '_>, _: myriad_ws::CloseCode, _: &str) {
///         self.topics.unsubscribe_all(cx);
///     }
/// }
/// ```
#[derive(Clone, Default)]
pub struct Topics {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    config: TopicsConfig,
    tables: OnceLock<Box<[Mutex<TopicTable<ConnId>>]>>,
    in_flight: OnceLock<Box<[AtomicU64]>>,
    loops: OnceLock<Vec<LoopHandle>>,
    subscriptions: AtomicUsize,
    delivered: AtomicU64,
    dropped_slow: AtomicU64,
    closed_slow: AtomicU64,
    dropped_behind: AtomicU64,
    uplink: OnceLock<Arc<dyn Uplink>>,
}

/// The link of a node's [`Topics`] to the other nodes of a cluster (a
/// broker, see the `myriad-pubsub` crate), set with [`Topics::set_uplink`].
///
/// Both methods are called on the engine's loops (or a publishing
/// thread) and must not block: hand the work to the broker's own thread.
pub trait Uplink: Send + Sync + 'static {
    /// A loop got its first subscriber of `topic` (`on`), or lost its
    /// last (`!on`). Per loop, calls alternate; summed over loops they say
    /// whether the node has subscribers of the topic.
    fn interest(&self, topic: &str, on: bool);

    /// A message was published on this node: `frame` is the framed
    /// WebSocket message (as queued on the local subscribers), to be sent
    /// once to the other nodes, which deliver it with
    /// [`Topics::deliver_local`].
    fn publish(&self, topic: &str, frame: &Arc<[u8]>);
}

impl fmt::Debug for Topics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topics")
            .field("stats", &self.stats())
            .finish()
    }
}

/// Counts of one delivery on one loop.
#[derive(Default)]
struct Tally {
    delivered: u64,
    dropped: u64,
    closed: u64,
}

impl Topics {
    /// Topics with the given limits.
    ///
    /// ```
    /// use myriad_ws::{SlowPolicy, Topics, TopicsConfig};
    /// let topics = Topics::new(TopicsConfig { slow: SlowPolicy::Close, ..Default::default() });
    /// assert_eq!(topics.stats().subscriptions, 0);
    /// ```
    pub fn new(config: TopicsConfig) -> Self {
        Topics {
            inner: Arc::new(Inner {
                config,
                ..Inner::default()
            }),
        }
    }

    /// The limits in force.
    ///
    /// ```
    /// assert_eq!(myriad_ws::Topics::default().config().max_topic_len, 256);
    /// ```
    pub fn config(&self) -> &TopicsConfig {
        &self.inner.config
    }

    /// Gives the engine's loops, so that [`Topics::publish`] works from
    /// any thread before the first subscription (which learns them
    /// itself). Later calls are ignored.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine, topics: &myriad_ws::Topics) {
    /// topics.attach((0..engine.loop_count()).map(|i| engine.loop_handle(i).clone()));
    /// # }
    /// ```
    pub fn attach(&self, loops: impl IntoIterator<Item = LoopHandle>) {
        let _ = self.inner.loops.set(loops.into_iter().collect());
    }

    /// Links these topics to a cluster: subscription changes and local
    /// publishes go to `uplink` from now on. Set it before the first
    /// subscription (interest already there is not replayed). Returns
    /// `false` if one was set already.
    ///
    /// ```
    /// use std::sync::Arc;
    /// struct Nowhere;
    /// impl myriad_ws::Uplink for Nowhere {
    ///     fn interest(&self, _topic: &str, _on: bool) {}
    ///     fn publish(&self, _topic: &str, _frame: &Arc<[u8]>) {}
    /// }
    /// let topics = myriad_ws::Topics::default();
    /// assert!(topics.set_uplink(Arc::new(Nowhere)));
    /// ```
    pub fn set_uplink(&self, uplink: Arc<dyn Uplink>) -> bool {
        self.inner.uplink.set(uplink).is_ok()
    }

    fn interest(&self, topic: &str, on: bool) {
        if let Some(u) = self.inner.uplink.get() {
            u.interest(topic, on);
        }
    }

    fn learn(&self, lcx: &LoopCx<'_>) {
        if self.inner.loops.get().is_none() {
            let _ = self.inner.loops.set(lcx.loops().to_vec());
        }
    }

    fn tables(&self, loops: usize) -> &[Mutex<TopicTable<ConnId>>] {
        self.inner.tables.get_or_init(|| {
            let c = &self.inner.config;
            (0..loops.max(1))
                .map(|_| {
                    Mutex::new(TopicTable::new(
                        c.max_topics_per_subscriber,
                        c.max_topic_len,
                    ))
                })
                .collect()
        })
    }

    fn in_flight(&self, loops: usize) -> &[AtomicU64] {
        self.inner
            .in_flight
            .get_or_init(|| (0..loops.max(1)).map(|_| AtomicU64::new(0)).collect())
    }

    fn with_table<R>(
        &self,
        lcx: &LoopCx<'_>,
        f: impl FnOnce(&mut TopicTable<ConnId>) -> R,
    ) -> Option<R> {
        let tables = self.tables(lcx.loop_count());
        let table = tables.get(lcx.loop_index())?;
        let mut guard = table.lock().unwrap_or_else(|p| p.into_inner());
        Some(f(&mut guard))
    }

    /// Subscribes the connection to `topic`. Returns `false` if it already
    /// was.
    ///
    /// # Errors
    ///
    /// [`TopicError::Hixie76`], [`TopicError::BadName`],
    /// [`TopicError::TooManyTopics`].
    ///
    /// ```
    /// # fn f(topics: &myriad_ws::Topics, cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// match topics.subscribe(cx, "prices/EURUSD") {
    ///     Ok(_) => {}
    ///     Err(e) => eprintln!("refused: {e}"),
    /// }
    /// # }
    /// ```
    pub fn subscribe(&self, cx: &mut WsCtx<'_, '_>, topic: &str) -> Result<bool, TopicError> {
        if cx.is_hixie76() {
            return Err(TopicError::Hixie76);
        }
        let id = cx.id();
        self.subscribe_id(cx.loop_cx(), id, topic)
    }

    /// [`Topics::subscribe`] for connection `id` of this loop, by id (a
    /// task posted to the connection's loop, say). The caller vouches that
    /// it is an RFC 6455 server connection.
    ///
    /// # Errors
    ///
    /// [`TopicError::BadName`], [`TopicError::TooManyTopics`].
    pub fn subscribe_id(
        &self,
        lcx: &mut LoopCx<'_>,
        id: ConnId,
        topic: &str,
    ) -> Result<bool, TopicError> {
        self.learn(lcx);
        let change = self
            .with_table(lcx, |t| t.subscribe(id, topic))
            .unwrap_or(Ok(Change::Unchanged))?;
        let added = matches!(change, Change::Added | Change::AddedFirst);
        if added {
            self.inner.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
        if change == Change::AddedFirst {
            self.interest(topic, true);
        }
        Ok(added)
    }

    /// Unsubscribes the connection from `topic`. Returns whether it was
    /// subscribed.
    ///
    /// ```
    /// # fn f(topics: &myriad_ws::Topics, cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// topics.unsubscribe(cx, "prices/EURUSD");
    /// # }
    /// ```
    pub fn unsubscribe(&self, cx: &mut WsCtx<'_, '_>, topic: &str) -> bool {
        let id = cx.id();
        let change = self
            .with_table(cx.loop_cx(), |t| t.unsubscribe(id, topic))
            .unwrap_or(Change::Unchanged);
        let removed = matches!(change, Change::Removed | Change::RemovedLast);
        if removed {
            self.inner.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
        if change == Change::RemovedLast {
            self.interest(topic, false);
        }
        removed
    }

    /// Removes all the connection's subscriptions (call it from
    /// `on_close`). Returns how many there were.
    ///
    /// ```
    /// # fn f(topics: &myriad_ws::Topics, cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// topics.unsubscribe_all(cx);
    /// # }
    /// ```
    pub fn unsubscribe_all(&self, cx: &mut WsCtx<'_, '_>) -> usize {
        let id = cx.id();
        let n = self
            .with_table(cx.loop_cx(), |t| {
                t.remove_subscriber(id, |topic| self.interest(topic, false))
            })
            .unwrap_or(0);
        self.inner.subscriptions.fetch_sub(n, Ordering::Relaxed);
        n
    }

    /// Whether the connection is subscribed to `topic`.
    ///
    /// ```
    /// # fn f(topics: &myriad_ws::Topics, cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// assert!(!topics.is_subscribed(cx, "nothing"));
    /// # }
    /// ```
    pub fn is_subscribed(&self, cx: &mut WsCtx<'_, '_>, topic: &str) -> bool {
        let id = cx.id();
        self.with_table(cx.loop_cx(), |t| t.is_subscribed(id, topic))
            .unwrap_or(false)
    }

    /// Publishes from a loop: queues `msg` at once on this loop's
    /// subscribers of `topic` and posts one task to each other loop for
    /// theirs. Returns how many subscribers of this loop got it.
    ///
    /// ```
    /// # fn f(topics: &myriad_ws::Topics, cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// use myriad_ws::{MessageKind, PreparedMessage};
    /// let msg = PreparedMessage::new(MessageKind::Text, b"EURUSD 1.0842");
    /// topics.publish_from(cx.loop_cx(), "prices/EURUSD", &msg);
    /// # }
    /// ```
    pub fn publish_from(&self, lcx: &mut LoopCx<'_>, topic: &str, msg: &PreparedMessage) -> usize {
        self.learn(lcx);
        let here = lcx.loop_index();
        let n = lcx.loop_count();
        if n > 1 {
            let shared: Arc<str> = Arc::from(topic);
            for i in (0..n).filter(|&i| i != here) {
                let (t, bytes, me) = (
                    Arc::clone(&shared),
                    Arc::clone(msg.shared_bytes()),
                    self.clone(),
                );
                self.post_to(i, bytes.len() as u64, move |other| {
                    me.deliver(other, &t, &bytes);
                });
            }
        }
        if let Some(u) = self.inner.uplink.get() {
            u.publish(topic, msg.shared_bytes());
        }
        self.deliver(lcx, topic, msg.shared_bytes())
    }

    /// Publishes from any thread: posts one task per loop, each queueing
    /// `msg` on its subscribers of `topic`. Returns how many loops it was
    /// posted to.
    ///
    /// # Errors
    ///
    /// [`TopicError::NotAttached`] if no loop is known yet (see
    /// [`Topics::attach`]).
    ///
    /// ```no_run
    /// # fn f(topics: myriad_ws::Topics) {
    /// use myriad_ws::{MessageKind, PreparedMessage};
    /// std::thread::spawn(move || {
    ///     let msg = PreparedMessage::new(MessageKind::Text, b"tick");
    ///     let _ = topics.publish("clock", &msg);
    /// });
    /// # }
    /// ```
    pub fn publish(&self, topic: &str, msg: &PreparedMessage) -> Result<usize, TopicError> {
        self.publish_counted(topic, msg, |_| {})
    }

    /// [`Topics::publish`], then `done` with the number of subscribers the
    /// message was queued on, once every loop has run its part or missed it
    /// (behind, or exited: those count zero). `done` runs on the last loop
    /// to finish, or on the calling thread if no task could be posted.
    ///
    /// # Errors
    ///
    /// [`TopicError::NotAttached`] if no loop is known yet.
    ///
    /// ```no_run
    /// # fn f(topics: &myriad_ws::Topics) {
    /// use myriad_ws::{MessageKind, PreparedMessage};
    /// let msg = PreparedMessage::new(MessageKind::Text, b"tick");
    /// let _ = topics.publish_counted("clock", &msg, |n| println!("{n} deliveries"));
    /// # }
    /// ```
    pub fn publish_counted(
        &self,
        topic: &str,
        msg: &PreparedMessage,
        done: impl FnOnce(u64) + Send + 'static,
    ) -> Result<usize, TopicError> {
        let posted = self.fan_out(topic, msg.shared_bytes(), done)?;
        if let Some(u) = self.inner.uplink.get() {
            u.publish(topic, msg.shared_bytes());
        }
        Ok(posted)
    }

    /// Queues an already framed message (from another node, through the
    /// [`Uplink`]) on this node's subscribers of `topic`, on every loop,
    /// without sending it to the uplink again. Returns how many loops it
    /// was posted to.
    ///
    /// # Errors
    ///
    /// [`TopicError::NotAttached`] if no loop is known yet.
    ///
    /// ```no_run
    /// # fn f(topics: &myriad_ws::Topics) {
    /// use myriad_ws::{MessageKind, PreparedMessage};
    /// let frame = PreparedMessage::new(MessageKind::Text, b"from node B").shared_bytes().clone();
    /// let _ = topics.deliver_local("news", &frame);
    /// # }
    /// ```
    pub fn deliver_local(&self, topic: &str, frame: &Arc<[u8]>) -> Result<usize, TopicError> {
        self.fan_out(topic, frame, |_| {})
    }

    /// Posts the delivery of `bytes` to every loop; `done` gets the count.
    fn fan_out(
        &self,
        topic: &str,
        bytes: &Arc<[u8]>,
        done: impl FnOnce(u64) + Send + 'static,
    ) -> Result<usize, TopicError> {
        let loops = self.inner.loops.get().ok_or(TopicError::NotAttached)?;
        let n = loops.len();
        let join = Arc::new(Join {
            remaining: AtomicUsize::new(n.max(1)),
            count: AtomicU64::new(0),
            done: Mutex::new(Some(Box::new(done))),
        });
        if n == 0 {
            join.add(0);
            return Ok(0);
        }
        let topic: Arc<str> = Arc::from(topic);
        let mut posted = 0;
        for i in 0..n {
            let (t, bytes, me) = (Arc::clone(&topic), Arc::clone(bytes), self.clone());
            // Reports when run, or (zero) when dropped unrun.
            let mut part = JoinPart {
                join: Arc::clone(&join),
                n: 0,
            };
            let ok = self.post_to(i, bytes.len() as u64, move |lcx| {
                part.n = me.deliver(lcx, &t, &bytes) as u64;
                drop(part);
            });
            posted += usize::from(ok);
        }
        Ok(posted)
    }

    /// Posts `task` to loop `i` within the in-flight bound; `false` (and
    /// counted) if the loop is behind or gone. `task` is dropped unrun then.
    fn post_to(
        &self,
        i: usize,
        len: u64,
        task: impl FnOnce(&mut LoopCx<'_>) + Send + 'static,
    ) -> bool {
        let Some(loops) = self.inner.loops.get() else {
            return false;
        };
        let Some(h) = loops.get(i) else {
            return false;
        };
        let pending = &self.in_flight(loops.len())[i];
        if pending.load(Ordering::Relaxed) + len > self.inner.config.max_in_flight {
            self.inner.dropped_behind.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        pending.fetch_add(len, Ordering::Relaxed);
        let me = self.clone();
        let posted = h.post(move |lcx| {
            me.in_flight(lcx.loop_count())[lcx.loop_index()].fetch_sub(len, Ordering::Relaxed);
            task(lcx);
        });
        if !posted {
            pending.fetch_sub(len, Ordering::Relaxed);
        }
        posted
    }

    /// Queues `bytes` on this loop's subscribers of `topic`; drops
    /// subscribers that are gone. Returns how many got it.
    fn deliver(&self, lcx: &mut LoopCx<'_>, topic: &str, bytes: &Arc<[u8]>) -> usize {
        let cfg = &self.inner.config;
        let len = bytes.len();
        let mut tally = Tally::default();
        let tables = self.tables(lcx.loop_count());
        let Some(table) = tables.get(lcx.loop_index()) else {
            return 0;
        };
        let mut guard = table.lock().unwrap_or_else(|p| p.into_inner());
        let before = guard.subscriptions();
        guard.fanout_then(
            topic,
            |id| {
                let mut alive = false;
                lcx.with_conn(id, |cx| {
                    alive = true;
                    if cx.queued().saturating_add(len) <= cfg.max_queued {
                        cx.write_shared(bytes);
                        tally.delivered += 1;
                        return;
                    }
                    match cfg.slow {
                        SlowPolicy::Drop => tally.dropped += 1,
                        SlowPolicy::Close => {
                            // Deferred by the engine: on_close runs later,
                            // outside this lock.
                            cx.abort();
                            tally.closed += 1;
                        }
                    }
                });
                alive
            },
            |topic| self.interest(topic, false),
        );
        let removed = before - guard.subscriptions();
        drop(guard);
        let i = &self.inner;
        i.subscriptions.fetch_sub(removed, Ordering::Relaxed);
        i.delivered.fetch_add(tally.delivered, Ordering::Relaxed);
        i.dropped_slow.fetch_add(tally.dropped, Ordering::Relaxed);
        i.closed_slow.fetch_add(tally.closed, Ordering::Relaxed);
        tally.delivered as usize
    }

    /// Counters over all loops.
    ///
    /// ```
    /// assert_eq!(myriad_ws::Topics::default().stats().delivered, 0);
    /// ```
    pub fn stats(&self) -> TopicStats {
        let i = &self.inner;
        TopicStats {
            subscriptions: i.subscriptions.load(Ordering::Relaxed) as u64,
            delivered: i.delivered.load(Ordering::Relaxed),
            dropped_slow: i.dropped_slow.load(Ordering::Relaxed),
            closed_slow: i.closed_slow.load(Ordering::Relaxed),
            dropped_behind: i.dropped_behind.load(Ordering::Relaxed),
        }
    }
}

/// The callback of [`Topics::publish_counted`].
type Done = Box<dyn FnOnce(u64) + Send>;

/// Collects the per-loop counts of [`Topics::publish_counted`].
struct Join {
    remaining: AtomicUsize,
    count: AtomicU64,
    done: Mutex<Option<Done>>,
}

/// One loop's share of a [`Join`]: reported when dropped, run or not.
struct JoinPart {
    join: Arc<Join>,
    n: u64,
}

impl Drop for JoinPart {
    fn drop(&mut self) {
        self.join.add(self.n);
    }
}

impl Join {
    fn add(&self, n: u64) {
        self.count.fetch_add(n, Ordering::Relaxed);
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let done = self.done.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(done) = done {
                done(self.count.load(Ordering::Relaxed));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_shrinks_through_all_representations() {
        let mut t = TopicTable::new(4, 16);
        for k in 0..100u64 {
            let c = t.subscribe(k, "big").unwrap();
            assert_eq!(
                c,
                if k == 0 {
                    Change::AddedFirst
                } else {
                    Change::Added
                }
            );
        }
        assert_eq!(t.subscriber_count("big"), 100);
        assert_eq!(t.subscriptions(), 100);
        let mut seen = HashSet::new();
        assert_eq!(t.fanout("big", |k| seen.insert(k)), 100);
        assert_eq!(seen.len(), 100);
        for k in 0..99u64 {
            assert_eq!(t.unsubscribe(k, "big"), Change::Removed, "{k}");
        }
        assert_eq!(t.subscriber_count("big"), 1);
        assert!(t.is_subscribed(99, "big"));
        assert_eq!(t.unsubscribe(99, "big"), Change::RemovedLast);
        assert!(t.is_empty());
        assert_eq!(t.topic_count(), 0);
    }

    #[test]
    fn per_subscriber_limit_and_names() {
        let mut t = TopicTable::new(3, 4);
        for topic in ["a", "b", "c"] {
            assert_eq!(t.subscribe(1u64, topic), Ok(Change::AddedFirst));
        }
        assert_eq!(t.subscribe(1, "d"), Err(TopicError::TooManyTopics(3)));
        assert_eq!(t.subscribe(1, "a"), Ok(Change::Unchanged));
        assert!(matches!(
            t.subscribe(1, ""),
            Err(TopicError::BadName { .. })
        ));
        assert!(matches!(
            t.subscribe(2, "abcde"),
            Err(TopicError::BadName { .. })
        ));
        assert_eq!(t.unsubscribe(1, "b"), Change::RemovedLast);
        assert_eq!(t.subscribe(1, "d"), Ok(Change::AddedFirst));
        assert_eq!(t.subscriptions(), 3);
    }

    #[test]
    fn gone_subscribers_are_removed_with_their_topics() {
        let mut t = TopicTable::new(8, 8);
        t.subscribe(1u64, "a").unwrap();
        t.subscribe(1u64, "b").unwrap();
        t.subscribe(2u64, "a").unwrap();
        let mut last = Vec::new();
        assert_eq!(
            t.fanout_then("a", |k| k == 2, |x| last.push(x.to_owned())),
            2
        );
        assert_eq!(last, ["b"]);
        assert!(!t.is_subscribed(1, "b"));
        assert_eq!(t.subscriptions(), 1);
        assert_eq!(t.topics().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn model_check_against_a_naive_registry() {
        // A deterministic pseudo-random walk, compared with a set of pairs.
        let mut t = TopicTable::new(64, 8);
        let mut model: HashSet<(u64, u8)> = HashSet::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = x % 40;
            let topic = ((x >> 8) % 5) as u8;
            let name = format!("t{topic}");
            match (x >> 16) % 4 {
                0 | 1 => {
                    let new = model.insert((k, topic));
                    let c = t.subscribe(k, &name).unwrap();
                    assert_eq!(new, c != Change::Unchanged);
                }
                2 => {
                    let had = model.remove(&(k, topic));
                    assert_eq!(had, t.unsubscribe(k, &name) != Change::Unchanged);
                }
                _ => {
                    let n = t.remove_subscriber(k, |_| {});
                    let before = model.len();
                    model.retain(|p| p.0 != k);
                    assert_eq!(n, before - model.len());
                }
            }
            assert_eq!(t.subscriptions(), model.len());
        }
        for topic in 0..5u8 {
            let want = model.iter().filter(|p| p.1 == topic).count();
            assert_eq!(t.subscriber_count(&format!("t{topic}")), want);
        }
    }
}

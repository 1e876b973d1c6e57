//! Fan-out: one message to many connections on every loop, encoded once and
//! never copied per recipient.

use std::fmt;

use myriad::LoopCx;

use crate::app::WsCtx;
use crate::encoder::PreparedMessage;
use crate::topic::{SlowPolicy, Topics, TopicsConfig};

/// A set of server connections spread over the engine's loops, to broadcast
/// to (a chat room, a topic).
///
/// Each loop keeps its own member list, touched only by that loop (joins and
/// leaves happen on the member's loop; a broadcast is posted to each loop,
/// which writes to its own members), so the locks are never contended. The
/// message is a [`PreparedMessage`]: framed once, its bytes shared by every
/// recipient's send queue by reference. Hixie-76 connections cannot join.
///
/// A room is a [`Topics`] with one topic, and no per-member queue limit of
/// its own (the engine's `write_hard_limit` and per-loop cap bound a slow
/// member): use [`Topics`] for many topics or a slow-subscriber policy.
///
/// ```
/// use myriad_ws::{Handshake, Message, MessageKind, PreparedMessage, Room, WsCtx, WsHandler};
/// struct Member { room: Room }
/// impl WsHandler for Member {
///     fn on_open(&mut self, cx: &mut WsCtx<'_, '_>, _hs: &Handshake<'_>) {
///         self.room.join(cx);
///     }
///     fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
///         if let Message::Text(t) = msg {
///             let m = PreparedMessage::new(MessageKind::Text, t.as_bytes());
///             self.room.broadcast(cx.loop_cx(), &m);
///         }
///     }
///     fn on_close(&mut self, cx: &mut WsCtx<'_, '_>, _code: myriad_ws::CloseCode, _reason: &str) {
///         self.room.leave(cx);
///     }
/// }
/// ```
#[derive(Clone)]
pub struct Room {
    topics: Topics,
}

/// The one topic of a room.
const TOPIC: &str = "room";

impl Default for Room {
    fn default() -> Self {
        Room {
            topics: Topics::new(TopicsConfig {
                max_queued: usize::MAX,
                slow: SlowPolicy::Drop,
                max_topics_per_subscriber: 1,
                max_topic_len: TOPIC.len(),
                max_in_flight: MAX_IN_FLIGHT,
            }),
        }
    }
}

/// How many bytes of broadcasts may wait for one loop: past it, that loop's
/// members miss the message (counted in [`Room::dropped`]) rather than the
/// sender's loop queueing without bound for a loop that cannot keep up.
pub const MAX_IN_FLIGHT: u64 = 16 << 20;

impl fmt::Debug for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Room")
            .field("members", &self.len())
            .finish()
    }
}

impl Room {
    /// An empty room.
    ///
    /// ```
    /// let room = myriad_ws::Room::new();
    /// assert!(room.is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Broadcasts a loop missed because more than [`MAX_IN_FLIGHT`] bytes
    /// of earlier ones were still waiting for it.
    ///
    /// ```
    /// assert_eq!(myriad_ws::Room::new().dropped(), 0);
    /// ```
    pub fn dropped(&self) -> u64 {
        self.topics.stats().dropped_behind
    }

    /// Adds the connection (call it from `on_open`). Returns `false` for a
    /// Hixie-76 connection, which cannot receive RFC 6455 frames.
    ///
    /// ```
    /// # fn f(room: &myriad_ws::Room, cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// room.join(cx);
    /// # }
    /// ```
    pub fn join(&self, cx: &mut WsCtx<'_, '_>) -> bool {
        self.topics.subscribe(cx, TOPIC).unwrap_or(false)
    }

    /// Removes the connection (call it from `on_close`).
    ///
    /// ```
    /// # fn f(room: &myriad_ws::Room, cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// room.leave(cx);
    /// # }
    /// ```
    pub fn leave(&self, cx: &mut WsCtx<'_, '_>) -> bool {
        self.topics.unsubscribe(cx, TOPIC)
    }

    /// Members on all loops right now.
    ///
    /// ```
    /// assert_eq!(myriad_ws::Room::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.topics.stats().subscriptions as usize
    }

    /// Whether the room has no member.
    ///
    /// ```
    /// assert!(myriad_ws::Room::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends `msg` to every member: at once to the members on this loop,
    /// through one posted task per other loop to theirs. Members get the
    /// uncompressed frame, queued by reference. Returns how many members of
    /// this loop it was queued on.
    ///
    /// ```
    /// # fn f(room: &myriad_ws::Room, cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// use myriad_ws::{MessageKind, PreparedMessage};
    /// let msg = PreparedMessage::new(MessageKind::Text, b"hello everyone");
    /// room.broadcast(cx.loop_cx(), &msg);
    /// # }
    /// ```
    pub fn broadcast(&self, lcx: &mut LoopCx<'_>, msg: &PreparedMessage) -> usize {
        self.topics.publish_from(lcx, TOPIC, msg)
    }
}

//! Fan-out: one message to many connections on every loop, encoded once and
//! never copied per recipient.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use myriad::{ConnId, LoopCx};

use crate::app::WsCtx;
use crate::encoder::PreparedMessage;

/// A set of server connections spread over the engine's loops, to broadcast
/// to (a chat room, a topic).
///
/// Each loop keeps its own member list, touched only by that loop (joins and
/// leaves happen on the member's loop; a broadcast is posted to each loop,
/// which writes to its own members), so the locks are never contended. The
/// message is a [`PreparedMessage`]: framed once, its bytes shared by every
/// recipient's send queue by reference. Hixie-76 connections cannot join.
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
#[derive(Clone, Default)]
pub struct Room {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    lists: OnceLock<Lists>,
    /// Bytes of broadcasts posted to each loop and not yet written there.
    in_flight: OnceLock<Box<[AtomicU64]>>,
    /// Broadcasts not delivered to a loop because it was behind.
    dropped: AtomicU64,
}

/// One member list per loop.
type Lists = Box<[Mutex<HashSet<ConnId>>]>;

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

    fn lists(&self, loops: usize) -> &[Mutex<HashSet<ConnId>>] {
        self.inner
            .lists
            .get_or_init(|| (0..loops.max(1)).map(|_| Mutex::default()).collect())
    }

    fn in_flight(&self, loops: usize) -> &[AtomicU64] {
        self.inner
            .in_flight
            .get_or_init(|| (0..loops.max(1)).map(|_| AtomicU64::new(0)).collect())
    }

    /// Broadcasts a loop missed because more than [`MAX_IN_FLIGHT`] bytes
    /// of earlier ones were still waiting for it.
    ///
    /// ```
    /// assert_eq!(myriad_ws::Room::new().dropped(), 0);
    /// ```
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    fn with_list<R>(
        &self,
        lcx: &LoopCx<'_>,
        f: impl FnOnce(&mut HashSet<ConnId>) -> R,
    ) -> Option<R> {
        let lists = self.lists(lcx.loop_count());
        let list = lists.get(lcx.loop_index())?;
        let mut guard = list.lock().unwrap_or_else(|p| p.into_inner());
        Some(f(&mut guard))
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
        if cx.is_hixie76() {
            return false;
        }
        let id = cx.id();
        self.with_list(cx.loop_cx(), |l| l.insert(id))
            .unwrap_or(false)
    }

    /// Removes the connection (call it from `on_close`).
    ///
    /// ```
    /// # fn f(room: &myriad_ws::Room, cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// room.leave(cx);
    /// # }
    /// ```
    pub fn leave(&self, cx: &mut WsCtx<'_, '_>) -> bool {
        let id = cx.id();
        self.with_list(cx.loop_cx(), |l| l.remove(&id))
            .unwrap_or(false)
    }

    /// Members on all loops right now.
    ///
    /// ```
    /// assert_eq!(myriad_ws::Room::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.inner.lists.get().map_or(0, |lists| {
            lists
                .iter()
                .map(|l| l.lock().map_or_else(|p| p.into_inner().len(), |g| g.len()))
                .sum()
        })
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
        let here = lcx.loop_index();
        let n = self.lists(lcx.loop_count()).len();
        let len = msg.shared_bytes().len() as u64;
        for i in (0..n).filter(|&i| i != here) {
            // Bounded: a loop that is behind (its task queue holds this
            // many bytes of our broadcasts already) misses this one.
            let pending = &self.in_flight(n)[i];
            if pending.load(Ordering::Relaxed) + len > MAX_IN_FLIGHT {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            pending.fetch_add(len, Ordering::Relaxed);
            let room = self.clone();
            let bytes = Arc::clone(msg.shared_bytes());
            let posted = lcx.post(i, move |other| {
                room.write_local(other, &bytes);
                room.in_flight(other.loop_count())[other.loop_index()]
                    .fetch_sub(bytes.len() as u64, Ordering::Relaxed);
            });
            if !posted {
                pending.fetch_sub(len, Ordering::Relaxed);
            }
        }
        self.write_local(lcx, msg.shared_bytes())
    }

    /// Queues `bytes` on this loop's members; drops members that are gone.
    fn write_local(&self, lcx: &mut LoopCx<'_>, bytes: &Arc<[u8]>) -> usize {
        let lists = self.lists(lcx.loop_count());
        let Some(list) = lists.get(lcx.loop_index()) else {
            return 0;
        };
        let mut guard = list.lock().unwrap_or_else(|p| p.into_inner());
        guard.retain(|&id| lcx.write_shared_to(id, bytes));
        guard.len()
    }
}

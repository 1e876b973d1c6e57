//! The handler-facing contexts: `LoopCx` (one loop) and `Ctx` (one
//! connection).

use super::*;

/// Loop-level context: what a task posted to a loop, or a handler through
/// [`Ctx::loop_cx`], can do on that loop.
pub struct LoopCx<'a> {
    pub(super) core: &'a mut Reactor,
}

impl LoopCx<'_> {
    /// Index of this loop.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine) {
    /// engine.loop_handle(0).post(|lcx| assert_eq!(lcx.loop_index(), 0));
    /// # }
    /// ```
    pub fn loop_index(&self) -> usize {
        self.core.loop_idx as usize
    }

    /// Number of loops in the engine.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine) {
    /// engine.loop_handle(0).post(|lcx| println!("{} loops", lcx.loop_count()));
    /// # }
    /// ```
    pub fn loop_count(&self) -> usize {
        self.core.loops.get().map_or(1, |l| l.len())
    }

    /// Queues `data` on connection `id` of this loop. Returns `false` if the
    /// connection is gone, closing, or lives on another loop (post there).
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine, id: myriad::ConnId) {
    /// engine.loop_handle(id.loop_index()).post(move |lcx| { lcx.write_to(id, b"hi"); });
    /// # }
    /// ```
    pub fn write_to(&mut self, id: ConnId, data: &[u8]) -> bool {
        match self.core.slot_of_id(id) {
            Some(slot) if !self.core.conns[slot as usize].is_closing() => {
                self.core.write(slot, &[data]);
                true
            }
            _ => false,
        }
    }

    /// Queues a shared buffer on connection `id` of this loop by reference
    /// (see [`Ctx::write_shared`]). Returns `false` if the connection is
    /// gone, closing, or lives on another loop.
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # fn f(engine: &myriad::Engine, ids: Vec<myriad::ConnId>) {
    /// let msg: Arc<[u8]> = Arc::from(&b"to everyone\n"[..]);
    /// engine.loop_handle(0).post(move |lcx| {
    ///     for id in ids { lcx.write_shared_to(id, &msg); }
    /// });
    /// # }
    /// ```
    pub fn write_shared_to(&mut self, id: ConnId, bytes: &Arc<[u8]>) -> bool {
        match self.core.slot_of_id(id) {
            Some(slot) if !self.core.conns[slot as usize].is_closing() => {
                self.core.write_shared(slot, bytes);
                true
            }
            _ => false,
        }
    }

    /// Closes connection `id` of this loop once its queued bytes are sent.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine, id: myriad::ConnId) {
    /// engine.loop_handle(id.loop_index()).post(move |lcx| { lcx.close(id); });
    /// # }
    /// ```
    pub fn close(&mut self, id: ConnId) -> bool {
        match self.core.slot_of_id(id) {
            Some(slot) => {
                self.core.close_graceful(slot);
                true
            }
            None => false,
        }
    }

    /// Opens an outbound connection on this loop.
    ///
    /// ```no_run
    /// # use myriad::{Ctx, Handler, ConnectOptions};
    /// # struct Client;
    /// # impl Handler for Client { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// # fn f(engine: &myriad::Engine) {
    /// engine.loop_handle(0).post(|lcx| {
    ///     let addr = "127.0.0.1:7000".parse().unwrap();
    ///     let _ = lcx.connect(addr, &ConnectOptions::default(), Box::new(Client));
    /// });
    /// # }
    /// ```
    pub fn connect(
        &mut self,
        addr: SocketAddr,
        opts: &ConnectOptions,
        handler: Box<dyn Handler>,
    ) -> io::Result<ConnId> {
        self.core.connect(addr, opts, handler)
    }

    /// Posts `f` to loop `loop_index` (possibly this one). Returns `false`
    /// if there is no such loop or it has exited.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine) {
    /// engine.loop_handle(0).post(|lcx| { lcx.post(1, |other| println!("on {}", other.loop_index())); });
    /// # }
    /// ```
    pub fn post(
        &self,
        loop_index: usize,
        f: impl FnOnce(&mut LoopCx<'_>) + Send + 'static,
    ) -> bool {
        match self.core.loops.get().and_then(|l| l.get(loop_index)) {
            Some(h) => h.post(f),
            None => false,
        }
    }

    /// Handles to every loop of the engine (for fan-out).
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine) {
    /// engine.loop_handle(0).post(|lcx| println!("{}", lcx.loops().len()));
    /// # }
    /// ```
    pub fn loops(&self) -> &[LoopHandle] {
        self.core.loops.get().map_or(&[], |l| l.as_slice())
    }

    /// Is the engine shutting down?
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine) {
    /// engine.loop_handle(0).post(|lcx| assert!(!lcx.is_shutting_down()));
    /// # }
    /// ```
    pub fn is_shutting_down(&self) -> bool {
        self.core.is_shutting_down()
    }

    pub(crate) fn begin_shutdown(&mut self, grace: Duration) {
        self.core.begin_shutdown(grace);
    }

    /// Runs `f` with the context of connection `id` of this loop, if it is
    /// still open. Returns whether it ran.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine, id: myriad::ConnId) {
    /// engine.loop_handle(id.loop_index()).post(move |lcx| {
    ///     lcx.with_conn(id, |cx| cx.write(b"result is ready\n"));
    /// });
    /// # }
    /// ```
    pub fn with_conn(&mut self, id: ConnId, f: impl FnOnce(&mut Ctx<'_>)) -> bool {
        let Some(slot) = self.core.slot_of_id(id) else {
            return false;
        };
        let gen = self.core.conns[slot as usize].gen;
        let mut cx = Ctx {
            lcx: LoopCx {
                core: &mut *self.core,
            },
            slot,
            gen,
        };
        f(&mut cx);
        true
    }

    pub(crate) fn stop_accepting(&mut self) {
        self.core.stop_listeners = true;
    }
}

/// A connection's context, handed to every [`Handler`] callback.
pub struct Ctx<'a> {
    pub(super) lcx: LoopCx<'a>,
    pub(super) slot: u32,
    pub(super) gen: u32,
}

impl<'a> Ctx<'a> {
    fn conn(&self) -> &Conn {
        &self.lcx.core.conns[self.slot as usize]
    }

    /// This connection's id, valid on any thread.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// let id = cx.id();
    /// # let _ = id; d.len() } }
    /// ```
    pub fn id(&self) -> ConnId {
        ConnId::new(self.lcx.core.loop_idx, self.slot, self.gen)
    }

    /// Queues a copy of `data` for sending. Everything written during one
    /// loop turn leaves in one send. Ignored once the connection is closing.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// cx.write(b"ok\n");
    /// # d.len() } }
    /// ```
    #[inline]
    pub fn write(&mut self, data: &[u8]) {
        self.lcx.core.write(self.slot, &[data]);
    }

    /// Queues up to `max` bytes that `fill` writes straight into the
    /// connection's outbound buffer, and returns how many: `fill` gets a
    /// slice of `max` bytes (whatever they held before: overwrite, do not
    /// read) and returns how many it filled from the front (clamped to
    /// `max`). Saves the copy of [`Ctx::write`] for a handler that would
    /// otherwise encode into a buffer of its own first. Over a filter (TLS)
    /// or for `max` above the chunk size it goes through a reused buffer of
    /// the loop and costs what `write` costs. Nothing is queued (0) once the
    /// connection is closing.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// let n = d.len();
    /// cx.write_with(4 + n, |buf| {
    ///     buf[..4].copy_from_slice(&(n as u32).to_be_bytes());
    ///     buf[4..4 + n].copy_from_slice(d);
    ///     4 + n
    /// });
    /// # d.len() } }
    /// ```
    #[inline]
    pub fn write_with(&mut self, max: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> usize {
        self.lcx.core.write_with(self.slot, max, fill)
    }

    /// Queues several slices in order (a header and a payload, say) without
    /// joining them first.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// let len = (d.len() as u32).to_be_bytes();
    /// cx.write_vectored(&[&len, d]);
    /// # d.len() } }
    /// ```
    #[inline]
    pub fn write_vectored(&mut self, parts: &[&[u8]]) {
        self.lcx.core.write(self.slot, parts);
    }

    /// Queues `head` then `body`, like `write_vectored(&[head, body])`,
    /// where `body` is a slice of the bytes this `on_data` call received (a
    /// payload echoed back): where the backend can (io_uring) and `body` is
    /// large (2 KiB or more), it is sent from the receive buffer itself
    /// instead of a copy, and `head` (at most 16 bytes) is put in place of
    /// the input bytes just before `body`, which must be bytes this call
    /// consumes (a protocol's own header). The receive buffer then stays
    /// out of the backend's ring until the send is done; a loop lends at
    /// most a quarter of its buffers at once. Otherwise (epoll, a filter,
    /// `body` not in this call's input or too short, the header's bytes not
    /// consumed, the cap reached) the bytes are copied as by `write`.
    ///
    /// What is sent is `body` as the input holds it when `on_data`
    /// returns: do not change those bytes after this call.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// // input: 4-byte length, then the payload; echo it with a 2-byte length
    /// if d.len() >= 4 {
    ///     let n = (d.len() - 4) as u16;
    ///     cx.write_from_input(&n.to_be_bytes(), &d[4..]);
    /// }
    /// # d.len() } }
    /// ```
    #[inline]
    pub fn write_from_input(&mut self, head: &[u8], body: &[u8]) {
        self.lcx.core.write_from_input(self.slot, head, body);
    }

    /// Queues a shared, immutable buffer by reference: no copy of its bytes
    /// is made, however many connections it is written to (fan-out of one
    /// encoded message). The buffer is released when the last connection
    /// has sent it.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # use std::sync::Arc;
    /// # struct H { news: Arc<[u8]> }
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// cx.write_shared(&self.news);
    /// # d.len() } }
    /// ```
    #[inline]
    pub fn write_shared(&mut self, bytes: &Arc<[u8]>) {
        self.lcx.core.write_shared(self.slot, bytes);
    }

    /// Queues `len` bytes of `file` from `offset`, to be sent by the kernel
    /// (`sendfile(2)`: from the page cache to the socket, no copy through
    /// user space) after what is queued before them. Returns `false`, with
    /// nothing queued, over a filter (TLS encrypts in user space: read the
    /// bytes and [`Ctx::write`] them instead) or once the connection is
    /// closing.
    ///
    /// The bytes count as queued like any others (high-water mark, limits),
    /// so queue a big file a window at a time from
    /// [`Handler::on_drain`](crate::Handler::on_drain). The file must not
    /// shrink meanwhile: bytes past its end are not sent, the connection
    /// then ends with an error. A cold file is read from disk in the loop
    /// thread, as with any `sendfile` server.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # use std::sync::Arc;
    /// # struct H { file: Arc<std::fs::File>, len: u64 }
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// cx.write(b"here it comes\n");
    /// if !cx.send_file(&self.file, 0, self.len) {
    ///     // over TLS: read and write the bytes
    /// }
    /// # d.len() } }
    /// ```
    pub fn send_file(&mut self, file: &Arc<std::fs::File>, offset: u64, len: u64) -> bool {
        self.lcx.core.send_file(self.slot, file, offset, len)
    }

    /// Whether [`Ctx::send_file`] can be used on this connection (no
    /// filter: plain TCP).
    pub fn can_send_file(&self) -> bool {
        self.lcx.core.conns[self.slot as usize].filter.is_none()
    }

    /// Bytes queued and not yet sent.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// if cx.queued() > 1 << 20 { cx.pause_reading(); }
    /// # d.len() } }
    /// ```
    pub fn queued(&self) -> usize {
        self.conn().out.len as usize
    }

    /// Whether the queued output passed the service's high-water mark
    /// ([`crate::Service::write_high_water`]): reading is paused until it
    /// drains. A handler that decodes several requests from one receive
    /// stops at the next request boundary while this holds and returns
    /// what it consumed; the engine keeps the rest and delivers it again
    /// when the output has drained, so that one receive cannot make it
    /// queue an unbounded amount of replies.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// let mut used = 0;
    /// for line in d.split_inclusive(|&b| b == b'\n') {
    ///     if cx.is_backpressured() || !line.ends_with(b"\n") {
    ///         break;
    ///     }
    ///     cx.write(line);
    ///     used += line.len();
    /// }
    /// used
    /// # } }
    /// ```
    pub fn is_backpressured(&self) -> bool {
        self.conn().flags & PAUSE_BP != 0
    }

    /// Closes the connection after the queued bytes are sent.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// cx.write(b"bye\n");
    /// cx.close();
    /// # d.len() } }
    /// ```
    pub fn close(&mut self) {
        self.lcx.core.close_graceful(self.slot);
    }

    /// Closes at once with a RST, dropping queued bytes.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// if d.first() == Some(&0xff) { cx.abort(); return 0; }
    /// # d.len() } }
    /// ```
    pub fn abort(&mut self) {
        self.lcx.core.close_for(self.slot, Closing::Abort);
    }

    /// Shuts down the sending side (FIN) after the queued bytes are sent;
    /// receiving goes on. Later writes are ignored.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// cx.write(b"last words");
    /// cx.shutdown_write();
    /// # d.len() } }
    /// ```
    pub fn shutdown_write(&mut self) {
        self.lcx.core.set_flag(self.slot, SHUT_WR_REQ);
    }

    /// Stops delivering data (and, soon after, reading from the socket)
    /// until [`Ctx::resume_reading`].
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// cx.pause_reading();
    /// # d.len() } }
    /// ```
    pub fn pause_reading(&mut self) {
        self.lcx.core.set_flag(self.slot, PAUSE_USER);
    }

    /// Resumes reading; kept input is delivered again at once.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H {
    /// # fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() }
    /// fn on_timer(&mut self, cx: &mut Ctx<'_>, _token: u64) {
    ///     cx.resume_reading();
    /// }
    /// # }
    /// ```
    pub fn resume_reading(&mut self) {
        let core = &mut *self.lcx.core;
        let c = &mut core.conns[self.slot as usize];
        if c.phase.is_open() && c.flags & PAUSE_USER != 0 {
            c.flags &= !PAUSE_USER;
            c.flags |= REDELIVER;
            core.mark_dirty(self.slot);
        }
    }

    /// The peer's address (one `getpeername` call).
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H {
    /// # fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() }
    /// fn on_open(&mut self, cx: &mut Ctx<'_>) {
    ///     if let Ok(peer) = cx.peer_addr() { println!("hello {peer}"); }
    /// }
    /// # }
    /// ```
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.lcx.core.socks.peer_addr(self.conn().sock)
    }

    /// The client address the connection's filter read from the stream
    /// (a PROXY header in front of TLS), if any.
    pub(crate) fn filter_client_addr(&self) -> Option<SocketAddr> {
        self.conn().filter.as_ref().and_then(|f| f.client_addr())
    }

    /// The local address (one `getsockname` call).
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H {
    /// # fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() }
    /// fn on_open(&mut self, cx: &mut Ctx<'_>) {
    ///     let _ = cx.local_addr();
    /// }
    /// # }
    /// ```
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.lcx.core.socks.local_addr(self.conn().sock)
    }

    /// Sets (or with `None` clears) the idle timeout: close with
    /// [`CloseReason::IdleTimeout`] when no bytes arrive for that long.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # use std::time::Duration;
    /// # struct H;
    /// # impl Handler for H {
    /// # fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() }
    /// fn on_open(&mut self, cx: &mut Ctx<'_>) {
    ///     cx.set_idle_timeout(Some(Duration::from_secs(30)));
    /// }
    /// # }
    /// ```
    pub fn set_idle_timeout(&mut self, timeout: Option<Duration>) {
        let core = &mut *self.lcx.core;
        let c = &mut core.conns[self.slot as usize];
        if !c.phase.is_open() {
            return;
        }
        c.idle_ms = dur_ms(timeout);
        c.last_active = core.now_ms as u32;
        core.arm_idle(self.slot);
    }

    /// Calls [`Handler::on_timer`] with `token` after `after`. Timers cannot
    /// be cancelled; ignore stale tokens instead (or use
    /// [`Ctx::set_deadline`], which a later one replaces). A delay past the
    /// loop's clock (`Duration::MAX`) saturates: that timer never fires. A
    /// timer set from [`Handler::on_timer`] that is already due (a zero
    /// delay: yield, continue later) fires at the loop's next turn, after
    /// its I/O, not in the same pass.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # use std::time::Duration;
    /// # struct H;
    /// # impl Handler for H {
    /// # fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() }
    /// fn on_open(&mut self, cx: &mut Ctx<'_>) {
    ///     cx.set_timer(Duration::from_secs(1), 7);
    /// }
    /// fn on_timer(&mut self, cx: &mut Ctx<'_>, token: u64) {
    ///     if token == 7 { cx.write(b"tick\n"); cx.set_timer(Duration::from_secs(1), 7); }
    /// }
    /// # }
    /// ```
    pub fn set_timer(&mut self, after: Duration, token: u64) {
        let core = &mut *self.lcx.core;
        let at = at_after(core.now_ms, after);
        core.timers.push(TimerEntry {
            at_ms: at,
            slot: self.slot,
            gen: self.gen,
            kind: TimerKind::User(token),
        });
    }

    /// Calls [`Handler::on_timer`] with `token` after `after`, unless
    /// [`Ctx::clear_deadline`] comes first: the connection's one deadline
    /// (a new one replaces it), such as a protocol's handshake timeout.
    /// Unlike a [`Ctx::set_timer`] timer, which stays in the loop's timer
    /// heap until it is due, a cleared deadline leaves nothing behind: its
    /// entry is dropped when the heap is next compacted. So a deadline
    /// that is almost always cleared long before it is due (a 10 s
    /// handshake timeout of a connection that upgrades at once) costs an
    /// idle connection nothing.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # use std::time::Duration;
    /// # struct H { greeted: bool }
    /// # impl Handler for H {
    /// fn on_open(&mut self, cx: &mut Ctx<'_>) {
    ///     cx.set_deadline(Duration::from_secs(5), 1);
    /// }
    /// fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    ///     if !self.greeted && d.starts_with(b"HELLO") {
    ///         self.greeted = true;
    ///         cx.clear_deadline();
    ///     }
    ///     d.len()
    /// }
    /// fn on_timer(&mut self, cx: &mut Ctx<'_>, token: u64) {
    ///     if token == 1 { cx.close(); } // no greeting in time
    /// }
    /// # }
    /// ```
    pub fn set_deadline(&mut self, after: Duration, token: u64) {
        let core = &mut *self.lcx.core;
        let c = &mut core.conns[self.slot as usize];
        if !c.phase.is_open() {
            return;
        }
        // 15-bit sequence numbers: a stale entry could only match again
        // after 32,768 deadlines set within one timeout.
        let seq = (c.deadline.wrapping_add(1)) & !DEADLINE_SET;
        c.deadline = DEADLINE_SET | seq;
        let at = at_after(core.now_ms, after);
        core.timers.push(TimerEntry {
            at_ms: at,
            slot: self.slot,
            gen: self.gen,
            kind: TimerKind::Deadline { token, seq },
        });
    }

    /// Cancels the deadline set with [`Ctx::set_deadline`], if pending.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H {
    /// # fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// cx.clear_deadline();
    /// # d.len() }
    /// # }
    /// ```
    pub fn clear_deadline(&mut self) {
        let c = &mut self.lcx.core.conns[self.slot as usize];
        c.deadline &= !DEADLINE_SET;
    }

    /// The loop-level context: write to other connections of this loop,
    /// connect, post to other loops.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler, ConnId};
    /// # struct H { peer: ConnId }
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// // Relay to another connection on the same loop.
    /// cx.loop_cx().write_to(self.peer, d);
    /// # d.len() } }
    /// ```
    pub fn loop_cx(&mut self) -> &mut LoopCx<'a> {
        &mut self.lcx
    }

    /// The loop's clock: read once per loop turn, when the turn's events
    /// start being handled (after the wait), so at most a turn old. The
    /// timers of [`Ctx::set_timer`] count from it. A protocol that notes
    /// times per message (deadlines) saves a clock read per message
    /// (`clock_gettime` was 1.4% of an HTTP server's CPU samples in a
    /// keep-alive GET profile).
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// let since = cx.now();
    /// # let _ = since; d.len() } }
    /// ```
    #[inline]
    pub fn now(&self) -> Instant {
        self.lcx.core.now
    }
}

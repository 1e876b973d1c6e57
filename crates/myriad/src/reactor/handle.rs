//! What identifies and reaches a loop from anywhere: `ConnId`,
//! `LoopHandle` and the state they share with the loop.

use super::*;

/// Identifies a connection anywhere in one engine: its loop, slot and
/// generation. Stale ids (the connection closed, the slot was reused) are
/// detected and ignored.
///
/// ```
/// # use myriad::{Ctx, Handler, ConnId};
/// struct Remember(Option<ConnId>);
/// impl Handler for Remember {
///     fn on_open(&mut self, cx: &mut Ctx<'_>) { self.0 = Some(cx.id()); }
///     fn on_data(&mut self, _cx: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    pub(super) fn new(loop_idx: u32, slot: u32, gen: u32) -> Self {
        ConnId(((loop_idx as u64) << 56) | token(slot, gen))
    }

    /// Index of the loop that owns the connection.
    ///
    /// ```
    /// # fn f(id: myriad::ConnId) -> usize {
    /// id.loop_index()
    /// # }
    /// ```
    pub fn loop_index(self) -> usize {
        (self.0 >> 56) as usize
    }

    /// The id as one number (unique among the engine's open connections;
    /// a closed connection's number may come back later).
    ///
    /// ```
    /// # fn f(id: myriad::ConnId) -> u64 {
    /// id.as_u64()
    /// # }
    /// ```
    pub fn as_u64(self) -> u64 {
        self.0
    }

    pub(super) fn parts(self) -> (u32, u32) {
        untoken(self.0 & ((1 << 56) - 1))
    }
}

/// State shared between a loop and the handles that post to it.
pub(crate) struct LoopShared {
    pub waker: Arc<Waker>,
    pub notified: AtomicBool,
    pub counters: LoopCounters,
    /// Filter (TLS) failures by kind. A lock, but only taken when a
    /// connection fails, never on the data path.
    pub filter_errors: std::sync::Mutex<Vec<(&'static str, u64)>>,
    /// The loop may still accept connections (a listener is registered, or
    /// a removed one's accept has not ended yet).
    pub accepting: AtomicBool,
}

impl LoopShared {
    /// A loop's shared state, its counters at zero, accepting.
    pub(crate) fn new(waker: Arc<Waker>) -> Arc<Self> {
        Arc::new(LoopShared {
            waker,
            notified: AtomicBool::new(false),
            counters: Default::default(),
            filter_errors: std::sync::Mutex::new(Vec::new()),
            accepting: AtomicBool::new(true),
        })
    }

    pub(crate) fn count_filter_error(&self, kind: &'static str) {
        LoopCounters::add(&self.counters.err_filter, 1);
        let mut v = match self.filter_errors.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match v.iter_mut().find(|e| e.0 == kind) {
            Some(e) => e.1 += 1,
            None => v.push((kind, 1)),
        }
    }
}

/// A handle to one event loop, usable from any thread: post work to it,
/// open outbound connections on it, read its counters.
///
/// ```no_run
/// # fn f(engine: &myriad::Engine) {
/// let h = engine.loop_handle(0);
/// h.post(|lcx| println!("running on loop {}", lcx.loop_index()));
/// # }
/// ```
#[derive(Clone)]
pub struct LoopHandle {
    idx: usize,
    tx: mpsc::Sender<Task>,
    shared: Arc<LoopShared>,
}

impl LoopHandle {
    pub(crate) fn accepting(&self) -> bool {
        self.shared.accepting.load(Ordering::Acquire)
    }

    pub(crate) fn new(idx: usize, tx: mpsc::Sender<Task>, shared: Arc<LoopShared>) -> Self {
        LoopHandle { idx, tx, shared }
    }

    /// The loop's index.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine) {
    /// assert_eq!(engine.loop_handle(1).index(), 1);
    /// # }
    /// ```
    pub fn index(&self) -> usize {
        self.idx
    }

    /// Runs `f` on the loop's thread at its next turn. Returns `false` if
    /// the loop has exited. Costs one allocation and, when the loop sleeps,
    /// one eventfd write.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine, id: myriad::ConnId) {
    /// engine.loop_handle(id.loop_index()).post(move |lcx| {
    ///     lcx.write_to(id, b"pushed from another thread\n");
    /// });
    /// # }
    /// ```
    pub fn post(&self, f: impl FnOnce(&mut LoopCx<'_>) + Send + 'static) -> bool {
        if self.tx.send(Box::new(f)).is_err() {
            return false;
        }
        if !self.shared.notified.swap(true, Ordering::SeqCst) {
            self.shared.waker.notify();
        }
        true
    }

    /// Opens an outbound connection on this loop, driven by `handler`.
    /// Failures arrive as [`Handler::on_close`] with
    /// [`CloseReason::ConnectFailed`] or [`CloseReason::ConnectTimeout`].
    ///
    /// ```no_run
    /// # use myriad::{Ctx, Handler, ConnectOptions};
    /// # struct Client;
    /// # impl Handler for Client { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// # fn f(engine: &myriad::Engine) {
    /// let addr = "127.0.0.1:7000".parse().unwrap();
    /// engine.loop_handle(0).connect(addr, ConnectOptions::default(), Client);
    /// # }
    /// ```
    pub fn connect<H: Handler + Send>(
        &self,
        addr: SocketAddr,
        opts: ConnectOptions,
        handler: H,
    ) -> bool {
        self.post(move |lcx| {
            let _ = lcx.connect(addr, &opts, Box::new(handler));
        })
    }

    /// A histogram of the write-queue depth of this loop's open
    /// connections (buckets: [`QUEUE_BUCKETS`] upper bounds in bytes, then
    /// everything above). Computed on the loop, when asked: nothing is
    /// tracked per write. `None` if the loop does not answer within 1 s.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine) {
    /// if let Some(h) = engine.loop_handle(0).write_queue_histogram() { println!("{h:?}"); }
    /// # }
    /// ```
    pub fn write_queue_histogram(&self) -> Option<[u64; QUEUE_BUCKETS.len() + 1]> {
        let (tx, rx) = mpsc::channel();
        if !self.post(move |lcx| {
            let _ = tx.send(lcx.core.queue_histogram());
        }) {
            return None;
        }
        rx.recv_timeout(Duration::from_secs(1)).ok()
    }

    /// Filter (TLS) failures of this loop by kind.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine) {
    /// println!("{:?}", engine.loop_handle(0).filter_errors());
    /// # }
    /// ```
    pub fn filter_errors(&self) -> Vec<(&'static str, u64)> {
        match self.shared.filter_errors.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The loop's counters right now.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine) {
    /// println!("{} open", engine.loop_handle(0).stats().open);
    /// # }
    /// ```
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }
}

/// Upper bounds (bytes) of the write-queue depth histogram buckets.
pub const QUEUE_BUCKETS: [u64; 6] = [0, 1 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20];

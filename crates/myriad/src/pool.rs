//! The business-logic pool: a bounded set of threads for blocking work (a
//! database call, a file read, heavy CPU) whose results come back to the
//! connection's own loop. The loops themselves never block.
//!
//! Bounded twice: at most `threads` run at once (by default no more than
//! there are cores), and at most `queue` jobs wait; past that
//! [`Pool::submit`] fails at once with [`PoolFull`] instead of queueing
//! without end.

use crate::reactor::{ConnId, Ctx, LoopHandle};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

struct Shared {
    queue: Mutex<(VecDeque<Job>, bool)>,
    ready: Condvar,
    capacity: usize,
    busy: AtomicUsize,
}

/// The queue was full; the job was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("business pool queue is full")]
pub struct PoolFull;

/// A bounded pool of threads for blocking work.
///
/// ```no_run
/// use myriad::{Ctx, Handler, Pool};
/// use std::time::Duration;
///
/// struct Lookup { pool: Pool }
/// impl Handler for Lookup {
///     fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
///         let key = String::from_utf8_lossy(d).into_owned();
///         let queued = cx.spawn_blocking(&self.pool, move || {
///             std::thread::sleep(Duration::from_millis(50)); // a slow database call
///             format!("value of {key}")
///         }, |cx, value| cx.write(value.as_bytes()));
///         if queued.is_err() { cx.write(b"busy, try again\n"); }
///         d.len()
///     }
/// }
/// ```
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
    _threads: Arc<Threads>,
}

struct Threads(Vec<JoinHandle<()>>, Arc<Shared>);

impl Drop for Threads {
    fn drop(&mut self) {
        if let Ok(mut q) = self.1.queue.lock() {
            q.1 = true;
        }
        self.1.ready.notify_all();
        for t in self.0.drain(..) {
            let _ = t.join();
        }
    }
}

impl Pool {
    /// A pool of `threads` threads (0 = the number of cores) and a queue of
    /// at most `queue` waiting jobs.
    ///
    /// ```
    /// let pool = myriad::Pool::new(2, 1024);
    /// assert_eq!(pool.queued(), 0);
    /// ```
    pub fn new(threads: usize, queue: usize) -> Self {
        let n = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new((VecDeque::new(), false)),
            ready: Condvar::new(),
            capacity: queue.max(1),
            busy: AtomicUsize::new(0),
        });
        let mut handles = Vec::new();
        for i in 0..n {
            let sh = shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("myriad-pool-{i}"))
                .spawn(move || worker(sh));
            if let Ok(h) = h {
                handles.push(h);
            }
        }
        Pool {
            shared: shared.clone(),
            _threads: Arc::new(Threads(handles, shared)),
        }
    }

    /// Queues `job`; fails at once when the queue is full.
    ///
    /// ```
    /// let pool = myriad::Pool::new(1, 1);
    /// assert!(pool.submit(|| {}).is_ok());
    /// ```
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) -> Result<(), PoolFull> {
        let mut q = match self.shared.queue.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if q.0.len() >= self.shared.capacity || q.1 {
            return Err(PoolFull);
        }
        q.0.push_back(Box::new(job));
        drop(q);
        self.shared.ready.notify_one();
        Ok(())
    }

    /// Jobs waiting (a gauge for metrics).
    ///
    /// ```
    /// assert_eq!(myriad::Pool::new(1, 8).queued(), 0);
    /// ```
    pub fn queued(&self) -> usize {
        self.shared.queue.lock().map_or(0, |q| q.0.len())
    }

    /// Threads running a job right now (a gauge for metrics).
    ///
    /// ```
    /// assert_eq!(myriad::Pool::new(1, 8).busy(), 0);
    /// ```
    pub fn busy(&self) -> usize {
        self.shared.busy.load(Ordering::Relaxed)
    }
}

fn worker(sh: Arc<Shared>) {
    loop {
        let job = {
            let mut q = match sh.queue.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            loop {
                if let Some(j) = q.0.pop_front() {
                    break j;
                }
                if q.1 {
                    return;
                }
                q = match sh.ready.wait(q) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
            }
        };
        sh.busy.fetch_add(1, Ordering::Relaxed);
        // A panicking job must not take the worker down with it.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        sh.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Ctx<'_> {
    /// Runs `work` on `pool` and then `done` with its result back on this
    /// connection's loop, with this connection's context — unless the
    /// connection closed meanwhile (then the result is dropped). Fails at
    /// once if the pool's queue is full.
    ///
    /// ```no_run
    /// # use myriad::{Ctx, Handler, Pool};
    /// # struct H { pool: Pool }
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// let _ = cx.spawn_blocking(&self.pool, || 6 * 7, |cx, n| cx.write(format!("{n}\n").as_bytes()));
    /// # d.len() } }
    /// ```
    pub fn spawn_blocking<T: Send + 'static>(
        &mut self,
        pool: &Pool,
        work: impl FnOnce() -> T + Send + 'static,
        done: impl FnOnce(&mut Ctx<'_>, T) + Send + 'static,
    ) -> Result<(), PoolFull> {
        let id: ConnId = self.id();
        let Some(home): Option<LoopHandle> = self.loop_cx().loops().get(id.loop_index()).cloned()
        else {
            return Err(PoolFull);
        };
        pool.submit(move || {
            let value = work();
            home.post(move |lcx| {
                lcx.with_conn(id, move |cx| done(cx, value));
            });
        })
    }
}

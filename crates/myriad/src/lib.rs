//! # Myriad
//!
//! An io_uring-first connection engine for Linux servers that hold very many
//! concurrent connections and move their bytes with as little work as
//! possible.
//!
//! * One event loop per I/O thread, each with its own `SO_REUSEPORT`
//!   listener; a connection lives its whole life on one loop.
//! * io_uring with multishot accept and multishot receive into a per-loop
//!   provided-buffer ring (an idle connection holds no receive buffer), or
//!   epoll as a fallback chosen automatically.
//! * You write a [`Handler`]; the engine does sockets, buffers, timers,
//!   back-pressure, limits and counters.
//!
//! ```no_run
//! use myriad::{Ctx, Engine, Handler, Service};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
//!         cx.write(data);
//!         data.len()
//!     }
//! }
//!
//! let engine = Engine::builder()
//!     .service(Service::new("echo", "127.0.0.1:7000".parse().unwrap(), || Echo))
//!     .start()?;
//! engine.wait()?;
//! # Ok::<(), myriad::Error>(())
//! ```

#![warn(missing_docs)]

mod backend;
mod buf;
mod engine;
mod filter;
mod handler;
mod pool;
pub mod proxy;
mod reactor;
mod stats;
mod timer;
pub mod workers;

/// The deterministic simulation of the reactor (feature `sim`; see
/// `examples/simulate.rs`). Not a stable API.
#[cfg(feature = "sim")]
#[doc(hidden)]
pub mod sim {
    /// Runs seed `seed` of the simulated echo scenario once: the hash of
    /// its trace, or the first invariant it broke.
    pub fn run(seed: u64) -> Result<u64, String> {
        crate::reactor::sim::run(seed)
    }

    pub use crate::reactor::sim::{check_seeds, seed_range, PeerOutcome, PeerSpec, Rng, Talker};
    pub use crate::reactor::sim_engine::{SimEngine, SimOutcome};

    /// Runs seed `seed` of the engine-level echo scenario once (an echo
    /// service and clients made by the engine's connector, both ends on
    /// the simulated network): the hash of its trace, or the first
    /// invariant it broke.
    pub fn run_engine_echo(seed: u64) -> Result<u64, String> {
        crate::reactor::sim_engine::run_echo(seed)
    }

    /// Runs seed `seed` of a scenario of another layer (the WebSocket
    /// crate's, say): one scripted peer per script, each sending it and
    /// then the end of its stream, served by handlers from `factory`, with
    /// the simulation's faults or (`faults` false) without them — the
    /// reference run. The engine's invariants are checked on the way; the
    /// trace hash and what each peer got back, or the first invariant
    /// broken.
    pub fn run_peers(
        seed: u64,
        scripts: &[Vec<u8>],
        factory: std::sync::Arc<dyn Fn() -> Box<dyn crate::Handler> + Send + Sync>,
        faults: bool,
    ) -> Result<(u64, Vec<PeerOutcome>), String> {
        crate::reactor::sim::run_peers(seed, scripts, factory, faults)
    }

    /// [`run_peers`] with peers that answer what they get (a
    /// [`Talker`] and its first words: a TLS client) or follow a script
    /// (`None`), in front of a service whose connections get a filter
    /// from `filter` (TLS) between the peers and the handlers.
    pub fn run_talkers(
        seed: u64,
        peers: Vec<PeerSpec>,
        factory: std::sync::Arc<dyn Fn() -> Box<dyn crate::Handler> + Send + Sync>,
        filter: Option<crate::FilterFactory>,
        faults: bool,
    ) -> Result<(u64, Vec<PeerOutcome>), String> {
        crate::reactor::sim::run_talkers(seed, peers, factory, filter, faults)
    }
}

pub use crate::backend::{trim_heap, BackendKind, UnknownBackend};
pub use crate::engine::{Engine, EngineBuilder, Error, Service};
pub use crate::filter::{Filter, FilterError, FilterFactory, Outbound};
pub use crate::handler::{CloseReason, Handler};
pub use crate::pool::{Pool, PoolFull};
pub use crate::reactor::{ConnId, ConnectOptions, Ctx, LoopCx, LoopHandle, QUEUE_BUCKETS};
pub use crate::stats::{LoopCounters, Stats};

//! No allocation per message: with a counting global allocator, echo
//! 100,000 messages over established connections and require zero heap
//! allocations in that steady state — on both backends.
//!
//! This file holds a single test on purpose: the allocator counts every
//! thread of the test binary, so nothing else may run beside it.

mod common;

use common::*;
use myriad::BackendKind;
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY (test-only allocator): forwards to the system allocator unchanged
// and only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CONNS: usize = 20;
const MESSAGES: usize = 100_000;

fn steady_state_allocations(kind: BackendKind) -> u64 {
    let (engine, addr) = echo_engine(kind, 1);
    let mut socks: Vec<_> = (0..CONNS).map(|_| connect(addr)).collect();
    let mut msg = [0u8; 64];
    let mut back = [0u8; 64];
    let mut exchange = |socks: &mut Vec<std::net::TcpStream>, rounds: usize| {
        for r in 0..rounds {
            for (i, s) in socks.iter_mut().enumerate() {
                msg[..8].copy_from_slice(&(r as u64).to_le_bytes());
                msg[8] = i as u8;
                s.write_all(&msg).unwrap();
            }
            for s in socks.iter_mut() {
                s.read_exact(&mut back).unwrap();
                assert_eq!(back[..8], (r as u64).to_le_bytes());
            }
        }
    };
    // Warm-up: pools, rings and vectors reach their working size. The
    // outbound chunk pool grows to the most chunks ever in use at once, so
    // the warm-up includes the worst case of the measured phase on purpose:
    // with the loop held busy, every connection's message arrives in one
    // batch, and every connection needs a small and a large chunk at once.
    exchange(&mut socks, 500);
    let hold_loop = |engine: &myriad::Engine| {
        let (tx, rx) = std::sync::mpsc::channel();
        engine.loop_handle(0).post(move |_| {
            let _ = tx.send(());
            std::thread::sleep(std::time::Duration::from_millis(100));
        });
        rx.recv().unwrap();
    };
    for size in [64usize, 2000, 2560] {
        hold_loop(&engine);
        let burst = vec![size as u8; size];
        for s in socks.iter_mut() {
            s.write_all(&burst).unwrap();
        }
        let mut b = vec![0u8; size];
        for s in socks.iter_mut() {
            s.read_exact(&mut b).unwrap();
            assert_eq!(b, burst);
        }
    }
    exchange(&mut socks, 500);
    let before = ALLOCS.load(Ordering::SeqCst);
    exchange(&mut socks, MESSAGES / CONNS);
    let after = ALLOCS.load(Ordering::SeqCst);
    let st = engine.stats();
    assert!(st.reads as usize >= MESSAGES, "{st:?}");
    drop(socks);
    engine.shutdown(std::time::Duration::ZERO);
    engine.wait().unwrap();
    after - before
}

#[test]
fn no_allocation_per_message_on_both_backends() {
    // The counter works: starting an engine allocates.
    let start = ALLOCS.load(Ordering::SeqCst);
    drop(echo_engine(BackendKind::Epoll, 1));
    assert!(ALLOCS.load(Ordering::SeqCst) > start);
    let uring = steady_state_allocations(BackendKind::IoUring);
    let epoll = steady_state_allocations(BackendKind::Epoll);
    assert_eq!(
        (uring, epoll),
        (0, 0),
        "heap allocations while echoing {MESSAGES} messages (io_uring, epoll)"
    );
}

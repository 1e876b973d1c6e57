//! An engine that fails to start leaves nothing behind: no listener
//! descriptor, no loop thread. One test in its own binary: it counts this
//! process's descriptors and threads.

mod common;

use common::*;
use myriad::{BackendKind, Engine, Service};

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn loop_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|t| t.ok())
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.starts_with("myriad-loop"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_loop_that_cannot_create_its_ring_closes_every_listener() {
    // warm up whatever the first engine start opens for good (the probe)
    drop(echo_engine(BackendKind::Epoll, 1));
    let (before_fds, before_threads) = (fds(), loop_threads());
    for _ in 0..5 {
        // more submission entries than the kernel allows: ring creation
        // fails on every loop, after the listeners were bound
        let r = Engine::builder()
            .threads(3)
            .backend(BackendKind::IoUring)
            .sq_entries(1 << 20)
            .service(Service::new("x", localhost(), || Echo).listen(localhost()))
            .start();
        assert!(r.is_err(), "the ring cannot be made");
    }
    eventually("loop threads gone", || loop_threads() == before_threads);
    assert_eq!(fds(), before_fds, "descriptors leaked by failed starts");
}

//! The business pool: blocking work leaves the loop free, results come
//! back to the right connection, a full queue is refused at once.

mod common;

use common::*;
use myriad::{BackendKind, Ctx, Handler, Pool, Service};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

both_backends!(loop_keeps_serving_during_blocking_work);

struct Mixed {
    pool: Pool,
    log: Arc<Mutex<Vec<String>>>,
}

impl Handler for Mixed {
    fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
        if d.starts_with(b"slow") {
            let log = self.log.clone();
            let r = cx.spawn_blocking(
                &self.pool,
                || {
                    std::thread::sleep(Duration::from_millis(400));
                    "slow done"
                },
                move |cx, v| {
                    log.lock().unwrap().push("slow answered".into());
                    cx.write(v.as_bytes());
                },
            );
            if r.is_err() {
                cx.write(b"busy");
            }
        } else {
            self.log.lock().unwrap().push("fast echoed".into());
            cx.write(d);
        }
        d.len()
    }
}

fn loop_keeps_serving_during_blocking_work(kind: BackendKind) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let pool = Pool::new(1, 1);
    let l2 = log.clone();
    // One loop: if the slow call ran on it, nothing else could be served.
    let (_engine, addr) = start(
        kind,
        1,
        Service::new("mixed", localhost(), move || Mixed {
            pool: pool.clone(),
            log: l2.clone(),
        }),
    );
    let mut slow = connect(addr);
    slow.write_all(b"slow").unwrap();
    let mut fast = connect(addr);
    let mut buf = [0u8; 16];
    for _ in 0..20 {
        roundtrip(&mut fast, b"ping", &mut buf);
    }
    let mut answer = [0u8; 9];
    slow.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"slow done");
    let log = log.lock().unwrap().clone();
    let first_slow = log.iter().position(|e| e == "slow answered").unwrap();
    assert_eq!(
        first_slow, 20,
        "the fast connection was served while the slow call ran: {log:?}"
    );
}

#[test]
fn full_queue_is_refused_at_once() {
    let pool = Pool::new(1, 1);
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().unwrap();
    let g1 = gate.clone();
    pool.submit(move || drop(g1.lock())).unwrap(); // running, blocked on the gate
    std::thread::sleep(Duration::from_millis(50));
    let g2 = gate.clone();
    pool.submit(move || drop(g2.lock())).unwrap(); // queued
    assert_eq!(pool.submit(|| {}), Err(myriad::PoolFull));
    assert_eq!(pool.busy(), 1);
    assert_eq!(pool.queued(), 1);
    drop(held);
}

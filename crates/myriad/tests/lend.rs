//! `Ctx::write_from_input`: replies sent from the receive buffer (lent on
//! io_uring, copied on epoll) are byte-exact, lent buffers go back to the
//! ring (a small ring would run dry otherwise), the loop's cap on lent
//! buffers holds, and connections closed with lent bytes still queued give
//! their buffers back.

mod common;

use common::*;
use myriad::{BackendKind, Ctx, Handler, Service};
use std::io::{Read, Write};
use std::time::Duration;

both_backends!(
    reframed_echo_is_byte_exact,
    a_small_ring_never_runs_dry,
    closed_connections_give_lent_buffers_back,
);

/// Frames in: 4-byte big-endian length, 4 bytes of padding, payload.
/// Frames out: 4-byte length, payload — the header written in place of the
/// last four input header bytes, the payload sent from the input.
struct Reframe;

const IN_HEAD: usize = 8;

impl Handler for Reframe {
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        let mut at = 0;
        // bounded: every pass consumes a whole frame
        while data.len() - at >= IN_HEAD {
            let len = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
            let end = at + IN_HEAD + len as usize;
            if end > data.len() {
                break;
            }
            cx.write_from_input(&len.to_be_bytes(), &data[at + IN_HEAD..end]);
            at = end;
        }
        at
    }
}

fn frame_in(id: u64, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(IN_HEAD + len);
    f.extend_from_slice(&(len as u32).to_be_bytes());
    f.extend_from_slice(&[0xee; 4]);
    f.extend((0..len as u64).map(|i| pattern(id, i)));
    f
}

fn frame_out(id: u64, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + len);
    f.extend_from_slice(&(len as u32).to_be_bytes());
    f.extend((0..len as u64).map(|i| pattern(id, i)));
    f
}

/// Sizes below, at and above the lending threshold (2 KiB), and above a
/// receive buffer (32 KiB: such a frame arrives in pieces and is copied).
const SIZES: [usize; 9] = [0, 100, 2047, 2048, 5000, 16384, 16385, 30000, 40000];

fn reframed_echo_is_byte_exact(kind: BackendKind) {
    let (engine, addr) = start(kind, 1, Service::new("reframe", localhost(), || Reframe));
    let mut threads = Vec::new();
    for c in 0..4u64 {
        threads.push(std::thread::spawn(move || {
            let mut s = connect(addr);
            let mut n = 0u64;
            for round in 0..20u64 {
                // one frame per write, then several frames in one write
                // (several lent slices of one receive buffer)
                let mut batch_in = Vec::new();
                let mut batch_out = Vec::new();
                for (k, &len) in SIZES.iter().enumerate() {
                    let id = c * 1_000_000 + round * 100 + k as u64;
                    let (fi, fo) = (frame_in(id, len), frame_out(id, len));
                    if round % 2 == 0 {
                        s.write_all(&fi).expect("write");
                        let mut back = vec![0u8; fo.len()];
                        s.read_exact(&mut back).expect("read");
                        assert!(back == fo, "conn {c} frame {id} ({len} bytes) differs");
                    } else {
                        batch_in.extend_from_slice(&fi);
                        batch_out.extend_from_slice(&fo);
                    }
                    n += 1;
                }
                if !batch_in.is_empty() {
                    s.write_all(&batch_in).expect("write");
                    let mut back = vec![0u8; batch_out.len()];
                    s.read_exact(&mut back).expect("read");
                    assert!(back == batch_out, "conn {c} round {round}: batch differs");
                }
            }
            n
        }));
    }
    let total: u64 = threads.into_iter().map(|t| t.join().expect("client")).sum();
    assert_eq!(total, 4 * 20 * SIZES.len() as u64);
    assert_lent(kind, engine.stats().bytes_lent);
}

/// io_uring lends, epoll copies.
fn assert_lent(kind: BackendKind, lent: u64) {
    match kind {
        BackendKind::IoUring => assert!(lent > 0, "nothing was lent"),
        _ => assert_eq!(lent, 0, "epoll cannot lend"),
    }
}

/// 16 buffers of 32 KiB, at most 4 lent at once (io_uring): a buffer that
/// was not given back after its send would starve the ring within a few
/// hundred messages; 16 clients at once push the cap.
fn a_small_ring_never_runs_dry(kind: BackendKind) {
    let (engine, addr) = start_with(
        kind,
        1,
        Service::new("reframe", localhost(), || Reframe),
        |b| b.recv_buffers(16, 32 << 10),
    );
    let threads: Vec<_> = (0..16u64)
        .map(|c| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                for i in 0..200u64 {
                    let id = c * 1000 + i;
                    let len = 4096 + (i as usize * 797) % 14000;
                    s.write_all(&frame_in(id, len)).expect("write");
                    let fo = frame_out(id, len);
                    let mut back = vec![0u8; fo.len()];
                    s.read_exact(&mut back).expect("read");
                    assert!(back == fo, "conn {c} message {i} differs");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client");
    }
    assert_lent(kind, engine.stats().bytes_lent);
}

/// Clients that send many large frames without reading, so that the
/// server's queue holds lent slices it cannot send, then reset. With 16
/// buffers, lent slices dropped without giving their buffers back would
/// starve the ring after a few rounds; the last client is then served.
fn closed_connections_give_lent_buffers_back(kind: BackendKind) {
    let (engine, addr) = start_with(
        kind,
        1,
        Service::new("reframe", localhost(), || Reframe),
        |b| b.recv_buffers(16, 32 << 10),
    );
    for round in 0..12u64 {
        let mut s = connect(addr);
        s.set_write_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        // bounded: stops when the server stops reading (back-pressure) or
        // after 8 MiB
        for i in 0..512u64 {
            if s.write_all(&frame_in(round * 1000 + i, 16384)).is_err() {
                break;
            }
        }
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
        drop(s);
        eventually("the reset connection closed", || {
            engine.stats().closed == round + 1
        });
    }
    let mut s = connect(addr);
    for i in 0..100u64 {
        s.write_all(&frame_in(i, 16384)).expect("write");
        let fo = frame_out(i, 16384);
        let mut back = vec![0u8; fo.len()];
        s.read_exact(&mut back).expect("read: the ring ran dry?");
        assert!(back == fo, "message {i} differs");
    }
    assert_lent(kind, engine.stats().bytes_lent);
}

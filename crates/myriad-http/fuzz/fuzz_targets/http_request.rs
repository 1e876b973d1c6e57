//! Arbitrary bytes as HTTP/1.1 request input to the server codec, fed in
//! pieces of a size the first byte chooses, answering every complete
//! request: the codec never panics, consumes no more than it is given,
//! answers at most once per request and writes nothing after `Closed`.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use myriad_http::{Config, Event, Now, Response, ServerConn};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let now = Now::new(t0, *b"Thu, 01 Jan 1970 00:00:00 GMT");
    let mut cfg = Config::default();
    cfg.max_head = 1024;
    cfg.max_body = 4096;
    let mut conn = ServerConn::new(cfg, t0);
    let mut pending: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    let step = data.first().map_or(1, |b| usize::from(*b % 64).max(1));
    let mut closed = false;
    for chunk in data.chunks(step) {
        pending.extend_from_slice(chunk);
        // bounded: each round consumes input or ends
        for _ in 0..10_000 {
            let len = pending.len();
            let (n, ev) = match conn.feed(&mut pending, now, &mut out) {
                Ok(r) => r,
                Err(_) => {
                    closed = true;
                    break;
                }
            };
            assert!(n <= len);
            let stop = match ev {
                Event::End => {
                    let res = Response::new(200);
                    let _ = conn.respond_full(&res, b"ok", now, &mut out);
                    false
                }
                Event::Closed => {
                    closed = true;
                    true
                }
                Event::NeedData | Event::Blocked => true,
                _ => false,
            };
            pending.drain(..n);
            if stop || closed {
                break;
            }
        }
        if closed {
            let before = out.len();
            let mut rest = pending.clone();
            let _ = conn.feed(&mut rest, now, &mut out);
            assert_eq!(out.len(), before, "output after Closed");
            break;
        }
    }
    // the deadlines work on whatever state is left
    let _ = conn.handle_timeout(now_after(t0, 3600), &mut out);
});

fn now_after(t0: Instant, secs: u64) -> Now {
    Now::new(
        t0 + Duration::from_secs(secs),
        *b"Thu, 01 Jan 1970 01:00:00 GMT",
    )
}

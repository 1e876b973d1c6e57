//! Arbitrary bytes as what a `/metrics` client sent so far
//! (`metrics_request::parse_request`, the pure step of
//! `MetricsHttp::on_data`): no panic; an incomplete head waits only up to
//! the limit; and the answer does not depend on how the bytes were cut —
//! every prefix either waits for more, or gives the same answer, or (past
//! the limit) refuses it as too large; bytes after a complete head change
//! nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myriad_server::metrics_request::{parse_request, Request, MAX_REQUEST};

fuzz_target!(|data: &[u8]| {
    let r = parse_request(data);
    match r {
        Request::Partial => assert!(data.len() <= MAX_REQUEST),
        Request::TooLarge => assert!(data.len() > MAX_REQUEST),
        Request::Metrics | Request::NotFound => {
            let mut more = data.to_vec();
            more.extend_from_slice(b"\r\n\r\nGET /other HTTP/1.1\r\n\xff");
            assert_eq!(parse_request(&more), r);
        }
        Request::Bad => {}
    }
    // Up to 32 cut points spread over the input, plus every one of the
    // first and last few bytes.
    let n = data.len();
    let spread = (0..32).map(|i| n * i / 32);
    let ends = (0..n.min(8)).chain(n.saturating_sub(8)..n);
    for cut in spread.chain(ends) {
        let p = parse_request(&data[..cut]);
        let ok = p == Request::Partial || p == r || (p == Request::TooLarge && cut > MAX_REQUEST);
        assert!(ok, "{cut} of {n} bytes: {p:?}, all of them: {r:?}");
    }
});

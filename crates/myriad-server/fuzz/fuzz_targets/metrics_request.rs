//! Arbitrary bytes as what a metrics-listener client sent so far
//! (`metrics_request::parse_request`: the myriad-http codec with the
//! listener's limits, then its router): no panic; an incomplete head waits
//! only up to the limit; and the answer does not depend on how the bytes
//! were cut — every prefix either waits for more, or gives the same
//! answer, or both are refused (the status may differ: a prefix can meet
//! another limit first); bytes after a complete head change nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myriad_server::metrics_request::{parse_request, Request, MAX_REQUEST};

fuzz_target!(|data: &[u8]| {
    let r = parse_request(data);
    match r {
        // The head limit, plus the blank lines allowed before a request.
        Request::Partial => assert!(data.len() <= 2 * MAX_REQUEST, "{} bytes", data.len()),
        Request::Route(_) | Request::NotFound | Request::MethodNotAllowed => {
            let mut more = data.to_vec();
            more.extend_from_slice(b"\r\n\r\nGET /other HTTP/1.1\r\n\xff");
            assert_eq!(parse_request(&more), r);
        }
        Request::Refused(status) => assert!((400..=599).contains(&status), "{status}"),
    }
    // Up to 32 cut points spread over the input, plus every one of the
    // first and last few bytes.
    let n = data.len();
    let spread = (0..32).map(|i| n * i / 32);
    let ends = (0..n.min(8)).chain(n.saturating_sub(8)..n);
    for cut in spread.chain(ends) {
        let p = parse_request(&data[..cut]);
        let ok = p == Request::Partial
            || p == r
            || matches!((p, r), (Request::Refused(_), Request::Refused(_)));
        assert!(ok, "{cut} of {n} bytes: {p:?}, all of them: {r:?}");
    }
});

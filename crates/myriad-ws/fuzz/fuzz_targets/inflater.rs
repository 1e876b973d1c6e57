//! Arbitrary bytes as permessage-deflate payloads: the inflater must fail
//! cleanly and never grow past its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myriad_ws::{DeflateConfig, DeflateParams, Inflater, Role};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let bits = 9 + (ctl & 7).min(6);
    let offer = format!(
        "permessage-deflate; client_max_window_bits={bits}{}",
        if ctl & 8 != 0 {
            "; client_no_context_takeover"
        } else {
            ""
        }
    );
    let Some(params) = DeflateParams::negotiate(&offer, &DeflateConfig::default()) else {
        return;
    };
    let mut inflater = Inflater::new(Role::Server, &params);
    let max = 1 << 16;
    let mut out = Vec::new();
    // several messages separated by 0xFF bytes
    for msg in rest.split(|&b| b == 0xFF) {
        out.clear();
        let r = inflater
            .inflate(msg, &mut out, max)
            .and_then(|()| inflater.finish_message(&mut out, max));
        assert!(out.len() <= max + 1);
        assert!(out.capacity() <= max + 1);
        if r.is_err() {
            return;
        }
    }
});

//! Feeds arbitrary bytes to the frame decoders (RFC 6455 with and without
//! permessage-deflate, both roles, and Hixie-76), cut into pieces the way
//! the engine delivers them: unconsumed bytes are kept and shown again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myriad_ws::legacy::Hixie76Decoder;
use myriad_ws::{Decoder, DecoderConfig, DeflateConfig, DeflateParams, Event, Role};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(ctl >> 3).max(1);
    let mut sink = 0usize;
    let mut on_event = |e: Event<'_>| {
        sink += match e {
            Event::Text(t) => t.len(),
            Event::Binary(b) | Event::Ping(b) | Event::Pong(b) => b.len(),
            Event::Close { reason, .. } => reason.len(),
        }
    };
    let mut pending = Vec::new();
    if ctl & 4 != 0 {
        let mut dec = Hixie76Decoder::new(1 << 16);
        for chunk in rest.chunks(step) {
            pending.extend_from_slice(chunk);
            match dec.feed(&mut pending, &mut on_event) {
                Ok(n) => {
                    assert!(n <= pending.len());
                    pending.drain(..n);
                }
                Err(_) => return,
            }
        }
        return;
    }
    let role = if ctl & 1 != 0 {
        Role::Server
    } else {
        Role::Client
    };
    let cfg = DecoderConfig {
        max_frame_size: 1 << 16,
        max_message_size: 1 << 17,
        max_buffered_frame: usize::from(ctl),
        max_inflate_ratio: u32::from(ctl >> 4) * 16,
    };
    let mut dec = Decoder::with_config(role, cfg);
    if ctl & 2 != 0 {
        let offer = "permessage-deflate; client_max_window_bits; server_max_window_bits=10";
        if let Some(p) = DeflateParams::negotiate(offer, &DeflateConfig::default()) {
            dec.set_deflate(Some(&p));
        }
    }
    for chunk in rest.chunks(step) {
        pending.extend_from_slice(chunk);
        match dec.feed(&mut pending, &mut on_event) {
            Ok(n) => {
                assert!(n <= pending.len());
                pending.drain(..n);
            }
            Err(e) => {
                let _ = e.close_code();
                return;
            }
        }
    }
});

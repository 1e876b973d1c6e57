//! Arbitrary bytes as an upgrade request (server side, all drafts on) and
//! as an upgrade response (client side), and through a ServerConnection fed
//! in pieces.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use myriad_ws::handshake::{parse_request, parse_response, LegacyDrafts};
use myriad_ws::{DeflateConfig, ServerConfig, ServerConnection};

fuzz_target!(|data: &[u8]| {
    let legacy = LegacyDrafts {
        hixie76: true,
        hybi07_08: true,
    };
    if let Ok(Some(req)) = parse_request(data, 8192, legacy) {
        assert!(req.len <= data.len());
    }
    let offered = vec!["chat".to_owned()];
    if let Ok(Some(resp)) = parse_response(data, "dGhlIHNhbXBsZSBub25jZQ==", &offered, 8192) {
        assert!(resp.len <= data.len());
        let _ = myriad_ws::DeflateParams::from_response(
            resp.extensions.as_deref(),
            &DeflateConfig::default(),
        );
    }
    let cfg = ServerConfig {
        legacy,
        deflate: Some(DeflateConfig::default()),
        protocols: offered,
        ..ServerConfig::default()
    };
    let mut conn = ServerConnection::new(Arc::new(cfg));
    let mut pending = Vec::new();
    let mut out = Vec::new();
    let step = data.first().map_or(1, |b| usize::from(*b).max(1));
    for chunk in data.chunks(step) {
        pending.extend_from_slice(chunk);
        match conn.feed(&mut pending, &mut out, &mut |_, _| {}) {
            Ok(n) => {
                pending.drain(..n);
            }
            Err(_) => return,
        }
    }
});

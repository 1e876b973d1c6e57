//! Property tests: encode -> decode round trips with random messages,
//! fragmentations, masks, compression parameters and input split points
//! (fed like the engine does: unconsumed bytes are kept and shown again).

use myriad_ws::{
    apply_mask, Decoder, DecoderConfig, DeflateConfig, DeflateParams, Deflater, Encoder, Event,
    FrameHeader, MaskGen, MessageKind, OpCode, Role,
};
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Msg {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

fn own(e: Event<'_>) -> Msg {
    match e {
        Event::Text(t) => Msg::Text(t.to_owned()),
        Event::Binary(b) => Msg::Binary(b.to_vec()),
        Event::Ping(b) => Msg::Ping(b.to_vec()),
        Event::Pong(b) => Msg::Pong(b.to_vec()),
        other => panic!("unexpected {other:?}"),
    }
}

fn msg_strategy() -> impl Strategy<Value = Msg> {
    prop_oneof![
        "\\PC{0,300}".prop_map(Msg::Text),
        // compressible text too
        ("[ab ]{0,50}", 0usize..40).prop_map(|(s, n)| Msg::Text(s.repeat(n))),
        proptest::collection::vec(any::<u8>(), 0..600).prop_map(Msg::Binary),
        proptest::collection::vec(any::<u8>(), 0..126).prop_map(Msg::Ping),
    ]
}

fn encode_all(enc: &mut Encoder, msgs: &[Msg]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        match m {
            Msg::Text(t) => enc.text(&mut out, t),
            Msg::Binary(b) => enc.binary(&mut out, b),
            Msg::Ping(p) => enc.ping(&mut out, p).unwrap(),
            Msg::Pong(p) => enc.pong(&mut out, p).unwrap(),
        }
    }
    out
}

/// Feeds `bytes` cut at `cuts`, as the engine would.
fn decode_split(dec: &mut Decoder, bytes: &[u8], cuts: &[usize]) -> Vec<Msg> {
    let mut got = Vec::new();
    let mut pending = Vec::new();
    let mut start = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    points.push(bytes.len());
    for p in points {
        pending.extend_from_slice(&bytes[start..p]);
        start = p;
        let n = dec.feed(&mut pending, &mut |e| got.push(own(e))).unwrap();
        assert!(n <= pending.len());
        pending.drain(..n);
        if !pending.is_empty() {
            // the hint says more is needed than what is left
            assert!(dec.wanted() > pending.len());
        }
    }
    assert!(pending.is_empty(), "{} bytes left", pending.len());
    got
}

/// Encodes `msgs` on one side (masks from `seed`, fragments of at most
/// `frag` bytes) and decodes them on the other, fed cut at `cuts`.
fn plain_roundtrip(
    msgs: &[Msg],
    client_to_server: bool,
    seed: u64,
    frag: usize,
    buffered: usize,
    cuts: &[usize],
) -> Vec<Msg> {
    let (tx, rx) = if client_to_server {
        (Role::Client, Role::Server)
    } else {
        (Role::Server, Role::Client)
    };
    let mut enc = Encoder::with_mask_gen(tx, MaskGen::from_seed(seed));
    enc.set_max_fragment_size(frag);
    let bytes = encode_all(&mut enc, msgs);
    let cfg = DecoderConfig {
        max_buffered_frame: buffered,
        ..DecoderConfig::default()
    };
    let mut dec = Decoder::with_config(rx, cfg);
    decode_split(&mut dec, &bytes, cuts)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn roundtrip_plain(
        msgs in proptest::collection::vec(msg_strategy(), 0..12),
        client_to_server in any::<bool>(),
        seed in any::<u64>(),
        frag in 0usize..64,
        buffered in 0usize..200,
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        prop_assert_eq!(plain_roundtrip(&msgs, client_to_server, seed, frag, buffered, &cuts), msgs);
    }

    #[test]
    fn roundtrip_deflate(
        msgs in proptest::collection::vec(msg_strategy(), 0..12),
        client_to_server in any::<bool>(),
        server_nct in any::<bool>(),
        client_nct in any::<bool>(),
        server_bits in 9u8..=15,
        client_bits in 9u8..=15,
        level in 0u32..=9,
        frag in 0usize..64,
        buffered in 0usize..200,
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let offer = DeflateConfig {
            server_no_context_takeover: server_nct,
            client_no_context_takeover: client_nct,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
            ..DeflateConfig::default()
        };
        let server_cfg = DeflateConfig { threshold: 0, level, ..DeflateConfig::default() };
        let params = DeflateParams::negotiate(&offer.client_offer(), &server_cfg).unwrap();
        // the client accepts the server's answer
        let client_view = DeflateParams::from_response(Some(&params.response_header()), &offer)
            .unwrap()
            .unwrap();
        prop_assert_eq!(client_view.server_max_window_bits, params.server_max_window_bits);
        prop_assert_eq!(client_view.client_max_window_bits, params.client_max_window_bits);
        prop_assert_eq!(client_view.server_no_context_takeover, params.server_no_context_takeover);
        prop_assert_eq!(client_view.client_no_context_takeover, params.client_no_context_takeover);

        let (tx, rx) = if client_to_server { (Role::Client, Role::Server) } else { (Role::Server, Role::Client) };
        let mut enc = Encoder::with_mask_gen(tx, MaskGen::from_seed(1));
        enc.set_deflater(Some(Deflater::new(tx, &params, level, 0)));
        enc.set_max_fragment_size(frag);
        let bytes = encode_all(&mut enc, &msgs);
        let cfg = DecoderConfig { max_buffered_frame: buffered, ..DecoderConfig::default() };
        let mut dec = Decoder::with_config(rx, cfg);
        dec.set_deflate(Some(&params));
        prop_assert_eq!(decode_split(&mut dec, &bytes, &cuts), msgs);
    }

    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300),
                            deflate in any::<bool>(),
                            server in any::<bool>(),
                            cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let role = if server { Role::Server } else { Role::Client };
        let cfg = DecoderConfig { max_frame_size: 200, max_message_size: 300, max_buffered_frame: 16, ..DecoderConfig::default() };
        let mut dec = Decoder::with_config(role, cfg);
        if deflate {
            let p = DeflateParams::negotiate("permessage-deflate", &DeflateConfig::default()).unwrap();
            dec.set_deflate(Some(&p));
        }
        let mut pending = Vec::new();
        let mut start = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.sort_unstable();
        points.push(bytes.len());
        for p in points {
            pending.extend_from_slice(&bytes[start..p]);
            start = p;
            match dec.feed(&mut pending, &mut |_| {}) {
                Ok(n) => { pending.drain(..n); }
                Err(_) => break,
            }
        }
    }
}

/// Hand-built frames: every data message cut into fragments at the given
/// sizes (empty fragments included), each frame with its own masking key
/// (drawn from `keys`, the all-zero key among them), and control frames
/// between the fragments. Returns the bytes and the events expected, in
/// order (a control frame is reported where it arrives, a message when its
/// last fragment does).
fn build_fragmented(
    msgs: &[(Msg, Vec<usize>, Vec<Msg>)],
    to_server: bool,
    keys: &[[u8; 4]],
) -> (Vec<u8>, Vec<Msg>) {
    let mut out = Vec::new();
    let mut expected = Vec::new();
    let mut k = 0usize;
    let mut frame = |out: &mut Vec<u8>, fin: bool, op: OpCode, payload: &[u8]| {
        let mask = to_server.then(|| {
            k += 1;
            keys[k % keys.len()]
        });
        let h = FrameHeader::new(fin, op, mask, payload.len() as u64);
        let mut hb = [0u8; FrameHeader::MAX_LEN];
        let n = h.encode(&mut hb);
        out.extend_from_slice(&hb[..n]);
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(m) = mask {
            apply_mask(&mut out[start..], m, 0);
        }
    };
    for (msg, cuts, controls) in msgs {
        let (op, payload) = match msg {
            Msg::Text(t) => (OpCode::Text, t.as_bytes()),
            Msg::Binary(b) => (OpCode::Binary, &b[..]),
            Msg::Ping(p) | Msg::Pong(p) => {
                let op = if matches!(msg, Msg::Ping(_)) {
                    OpCode::Ping
                } else {
                    OpCode::Pong
                };
                frame(&mut out, true, op, p);
                expected.push(msg.clone());
                continue;
            }
        };
        // fragment boundaries (may split UTF-8 code points)
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (payload.len() + 1)).collect();
        points.sort_unstable();
        points.push(payload.len());
        let mut start = 0;
        for (i, &p) in points.iter().enumerate() {
            let last = i + 1 == points.len();
            let opcode = if i == 0 { op } else { OpCode::Continuation };
            frame(&mut out, last, opcode, &payload[start..p]);
            start = p;
            if !last {
                if let Some(c) = controls.get(i) {
                    let (cop, cp) = match c {
                        Msg::Ping(p) => (OpCode::Ping, p),
                        Msg::Pong(p) => (OpCode::Pong, p),
                        _ => continue,
                    };
                    frame(&mut out, true, cop, cp);
                    expected.push(c.clone());
                }
            }
        }
        expected.push(msg.clone());
    }
    (out, expected)
}

fn control_strategy() -> impl Strategy<Value = Msg> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..126).prop_map(Msg::Ping),
        proptest::collection::vec(any::<u8>(), 0..126).prop_map(Msg::Pong),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Random fragmentation (independent of any encoder setting), a fresh
    /// random mask per frame, control frames interleaved with fragments,
    /// and random read boundaries.
    #[test]
    fn roundtrip_fragmented_with_interleaved_control(
        msgs in proptest::collection::vec(
            (msg_strategy(),
             proptest::collection::vec(any::<usize>(), 0..6),
             proptest::collection::vec(control_strategy(), 0..3)),
            0..8),
        to_server in any::<bool>(),
        keys in proptest::collection::vec(any::<[u8; 4]>(), 1..4),
        zero_key in any::<bool>(),
        buffered in 0usize..300,
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut keys = keys;
        if zero_key {
            keys.push([0; 4]);
        }
        let (bytes, expected) = build_fragmented(&msgs, to_server, &keys);
        let rx = if to_server { Role::Server } else { Role::Client };
        let cfg = DecoderConfig { max_buffered_frame: buffered, ..DecoderConfig::default() };
        let mut dec = Decoder::with_config(rx, cfg);
        prop_assert_eq!(decode_split(&mut dec, &bytes, &cuts), expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Large messages: 16-bit and 64-bit lengths, frames that are streamed
    /// (larger than `max_buffered_frame`) and frames that are waited for,
    /// fragmented or not.
    #[test]
    fn roundtrip_large(
        sizes in proptest::collection::vec(prop_oneof![126usize..70_000, 65_536usize..200_000], 1..4),
        fill in any::<u8>(),
        client_to_server in any::<bool>(),
        seed in any::<u64>(),
        frag in prop_oneof![Just(0usize), 1000usize..100_000],
        buffered in prop_oneof![Just(0usize), Just(64usize << 10), Just(1usize << 20)],
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let msgs: Vec<Msg> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                Msg::Binary((0..n).map(|j| (j as u8).wrapping_mul(31) ^ fill ^ i as u8).collect())
            })
            .collect();
        prop_assert_eq!(plain_roundtrip(&msgs, client_to_server, seed, frag, buffered, &cuts), msgs);
    }
}

/// A compressor limited to a small window really produces streams that a
/// decompressor with that window inflates, also after context resets.
#[test]
fn small_windows_stay_small() {
    for bits in 9u8..=15 {
        for nct in [false, true] {
            let offer = DeflateConfig {
                server_max_window_bits: bits,
                server_no_context_takeover: nct,
                ..DeflateConfig::default()
            };
            let params = DeflateParams::negotiate(
                &offer.client_offer(),
                &DeflateConfig {
                    threshold: 0,
                    ..DeflateConfig::default()
                },
            )
            .unwrap();
            let mut enc = Encoder::new(Role::Server);
            enc.set_deflater(Some(Deflater::new(Role::Server, &params, 9, 0)));
            // repetitions at long distances tempt a larger window
            let block: Vec<u8> = (0..40_000u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect();
            let mut payload = block.clone();
            payload.extend_from_slice(&block);
            let mut out = Vec::new();
            for _ in 0..3 {
                enc.binary(&mut out, &payload);
            }
            // decode with an inflater whose window is exactly `bits`
            let mut dec = Decoder::new(Role::Client);
            dec.set_deflate(Some(&params));
            let mut n = 0;
            let consumed = dec
                .feed(&mut out, &mut |e| {
                    assert_eq!(e, Event::Binary(&payload));
                    n += 1;
                })
                .unwrap();
            assert_eq!((n, consumed), (3, out.len()));
            let _ = MessageKind::Binary;
        }
    }
}

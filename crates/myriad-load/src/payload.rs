//! Deterministic message payloads and their verification.
//!
//! Every message is identified by its connection's global index and its
//! sequence number on that connection. Its payload (and its size, when
//! `--size` is a range) is a pure function of that pair, so the receiver can
//! regenerate the expected bytes at any offset and compare the echo without
//! keeping a copy of what it sent. Nothing is allocated: bytes are generated
//! eight at a time from a 64-bit key with a multiply–xorshift mix.
//!
//! A flipped byte always changes the word it is in; a dropped or inserted
//! byte shifts the stream, which a pseudo-random payload exposes within a
//! byte or two.

/// How messages are put on the wire over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// The payload bytes as they are (raw echo stream).
    Raw,
    /// A 4-byte big-endian length prefix, then the payload.
    Lp32,
}

/// Inclusive range of message sizes (`--size 64` or `--size 64..4096`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeRange {
    /// Smallest payload size in bytes (at least 1).
    pub min: u32,
    /// Largest payload size in bytes.
    pub max: u32,
}

impl SizeRange {
    /// Payload size of message `seq` of connection `conn`.
    #[inline]
    pub fn size_of(&self, conn: u64, seq: u64) -> usize {
        if self.min == self.max {
            return self.min as usize;
        }
        let span = (self.max - self.min) as u64 + 1;
        (self.min as u64 + mix64(key(conn, seq) ^ 0x5851_F42D_4C95_7F2D) % span) as usize
    }
}

/// The splitmix64 finaliser: a good 64-bit mix.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The key of message `seq` on connection `conn`.
#[inline]
pub fn key(conn: u64, seq: u64) -> u64 {
    mix64(conn.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq.rotate_left(29) ^ 0x6D79_7269_6164_4C44)
}

/// Payload word `i` (bytes `8i..8i+8`, little-endian) of the message with
/// key `k`. Text payloads map every byte into printable ASCII (`0`..`o`).
#[inline]
fn word(k: u64, i: u64, text: bool) -> u64 {
    // A Weyl sequence from the key, folded: one multiply-add per eight
    // bytes, different for every key and position.
    let x = k.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let x = x ^ (x >> 29);
    if text {
        (x & 0x3F3F_3F3F_3F3F_3F3F) + 0x3030_3030_3030_3030
    } else {
        x
    }
}

/// Expected payload byte at `pos` of the message with key `k`.
#[inline]
pub fn payload_byte(k: u64, pos: usize, text: bool) -> u8 {
    word(k, (pos / 8) as u64, text).to_le_bytes()[pos % 8]
}

/// Fills `out` with the payload bytes starting at payload offset `start`.
#[cfg(test)]
pub fn fill_payload(k: u64, start: usize, out: &mut [u8], text: bool) {
    let mut pos = start;
    let mut i = 0;
    while i < out.len() && pos % 8 != 0 {
        out[i] = payload_byte(k, pos, text);
        i += 1;
        pos += 1;
    }
    let mut w = (pos / 8) as u64;
    let mut chunks = out[i..].chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&word(k, w, text).to_le_bytes());
        w += 1;
    }
    for (pos, b) in (w as usize * 8..).zip(chunks.into_remainder()) {
        *b = payload_byte(k, pos, text);
    }
}

/// Writes the payload bytes of the message with key `k` over the whole of
/// `out` (its length is the size).
#[inline]
pub fn write_payload(k: u64, out: &mut [u8], text: bool) {
    let mut chunks = out.chunks_exact_mut(8);
    let mut w = 0u64;
    for c in &mut chunks {
        c.copy_from_slice(&word(k, w, text).to_le_bytes());
        w += 1;
    }
    let rest = chunks.into_remainder();
    let n = rest.len();
    rest.copy_from_slice(&word(k, w, text).to_le_bytes()[..n]);
}

/// Appends the `size` payload bytes of the message with key `k` to `out`.
pub fn append_payload(k: u64, size: usize, out: &mut Vec<u8>, text: bool) {
    let at = out.len();
    out.resize(at + size, 0);
    write_payload(k, &mut out[at..], text);
}

/// Compares `got` with the payload bytes starting at offset `start`;
/// returns the index (into `got`) of the first differing byte.
///
/// The common case (everything matches) ORs the XOR of whole words and
/// branches once at the end; only a mismatch is looked for byte by byte.
pub fn verify_payload(k: u64, start: usize, got: &[u8], text: bool) -> Option<usize> {
    if start == 0 {
        // The common case: a whole message, or its first part.
        let mut diff = 0u64;
        let mut chunks = got.chunks_exact(8);
        let mut w = 0u64;
        for c in &mut chunks {
            let g = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
            diff |= g ^ word(k, w, text);
            w += 1;
        }
        let rest = chunks.remainder();
        let want = word(k, w, text).to_le_bytes();
        for (a, b) in rest.iter().zip(want.iter()) {
            diff |= u64::from(a ^ b);
        }
        if diff == 0 {
            return None;
        }
        return got
            .iter()
            .enumerate()
            .position(|(j, &b)| b != payload_byte(k, j, text));
    }
    let mut diff = 0u64;
    let mut pos = start;
    let mut i = 0;
    while i < got.len() && pos % 8 != 0 {
        diff |= u64::from(got[i] ^ payload_byte(k, pos, text));
        i += 1;
        pos += 1;
    }
    let mut w = (pos / 8) as u64;
    let mut chunks = got[i..].chunks_exact(8);
    for c in &mut chunks {
        let g = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
        diff |= g ^ word(k, w, text);
        w += 1;
    }
    for (pos, &b) in (w as usize * 8..).zip(chunks.remainder()) {
        diff |= u64::from(b ^ payload_byte(k, pos, text));
    }
    if diff == 0 {
        return None;
    }
    got.iter()
        .enumerate()
        .position(|(j, &b)| b != payload_byte(k, start + j, text))
}

impl Wire {
    /// Bytes of framing before the payload.
    #[inline]
    pub fn header_len(self) -> usize {
        match self {
            Wire::Raw => 0,
            Wire::Lp32 => 4,
        }
    }

    /// Writes message (`k`, `size`) as it goes on the wire into `out`
    /// (cleared first).
    #[cfg(test)]
    pub fn encode(self, k: u64, size: usize, out: &mut Vec<u8>) {
        out.clear();
        out.resize(self.header_len() + size, 0);
        self.write_to(k, size, out);
    }

    /// Writes message (`k`, `size`) as it goes on the wire at the start of
    /// `out` (at least `header_len() + size` bytes); returns its length.
    #[inline]
    pub fn write_to(self, k: u64, size: usize, out: &mut [u8]) -> usize {
        let h = self.header_len();
        if self == Wire::Lp32 {
            out[..4].copy_from_slice(&(size as u32).to_be_bytes());
        }
        write_payload(k, &mut out[h..h + size], false);
        h + size
    }

    /// Compares `got` with the wire bytes of message (`k`, `size`) starting
    /// at wire offset `off`; the index of the first differing byte.
    pub fn verify(self, k: u64, size: usize, off: usize, got: &[u8]) -> Option<usize> {
        let h = self.header_len();
        let mut i = 0;
        if off < h {
            let hdr = (size as u32).to_be_bytes();
            while i < got.len() && off + i < h {
                if got[i] != hdr[off + i] {
                    return Some(i);
                }
                i += 1;
            }
        }
        let pstart = (off + i) - h;
        verify_payload(k, pstart, &got[i..], false).map(|j| i + j)
    }

    /// The expected wire byte at offset `off` of message (`k`, `size`).
    pub fn expected_byte(self, k: u64, size: usize, off: usize) -> u8 {
        let h = self.header_len();
        if off < h {
            (size as u32).to_be_bytes()[off]
        } else {
            payload_byte(k, off - h, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_and_verify_agree_at_every_offset() {
        let k = key(7, 3);
        for text in [false, true] {
            let mut full = vec![0u8; 100];
            fill_payload(k, 0, &mut full, text);
            for start in 0..40 {
                for len in [0, 1, 5, 8, 13, 60] {
                    let mut part = vec![0u8; len];
                    fill_payload(k, start, &mut part, text);
                    assert_eq!(part, full[start..start + len]);
                    assert_eq!(verify_payload(k, start, &part, text), None);
                    if len > 0 {
                        let mut bad = part.clone();
                        bad[len / 2] ^= 0x10;
                        assert_eq!(verify_payload(k, start, &bad, text), Some(len / 2));
                    }
                }
            }
        }
    }

    #[test]
    fn append_matches_fill() {
        for size in [1, 7, 8, 9, 64, 100] {
            let mut a = vec![0u8; size];
            fill_payload(key(1, 5), 0, &mut a, true);
            let mut b = vec![9u8];
            append_payload(key(1, 5), size, &mut b, true);
            assert_eq!(a, b[1..]);
            // The wire format built by hand: length prefix, then payload.
            let mut c = (size as u32).to_be_bytes().to_vec();
            append_payload(key(1, 5), size, &mut c, false);
            let mut d = Vec::new();
            Wire::Lp32.encode(key(1, 5), size, &mut d);
            assert_eq!(c, d);
            let mut e = vec![0xAAu8; size + 10];
            assert_eq!(Wire::Lp32.write_to(key(1, 5), size, &mut e), size + 4);
            assert_eq!(c, e[..size + 4]);
            assert!(e[size + 4..].iter().all(|&b| b == 0xAA));
        }
    }

    #[test]
    fn text_payload_is_printable_ascii() {
        let mut b = vec![0u8; 1000];
        fill_payload(key(1, 2), 0, &mut b, true);
        assert!(b.iter().all(|c| (0x30..0x70).contains(c)));
    }

    #[test]
    fn payloads_differ_by_connection_and_sequence() {
        let mut a = vec![0u8; 32];
        let mut b = vec![0u8; 32];
        fill_payload(key(1, 1), 0, &mut a, false);
        fill_payload(key(1, 2), 0, &mut b, false);
        assert_ne!(a, b);
        fill_payload(key(2, 1), 0, &mut b, false);
        assert_ne!(a, b);
    }

    #[test]
    fn dropped_byte_is_detected() {
        let mut v = Vec::new();
        Wire::Raw.encode(key(3, 9), 256, &mut v);
        v.remove(100);
        assert!(Wire::Raw.verify(key(3, 9), 256, 0, &v).is_some());
    }

    #[test]
    fn lp32_header_and_payload_are_verified() {
        let mut v = Vec::new();
        let k = key(4, 4);
        Wire::Lp32.encode(k, 10, &mut v);
        assert_eq!(&v[..4], &[0, 0, 0, 10]);
        for off in 0..v.len() {
            assert_eq!(Wire::Lp32.verify(k, 10, off, &v[off..]), None);
            assert_eq!(Wire::Lp32.expected_byte(k, 10, off), v[off]);
        }
        let mut bad = v.clone();
        bad[2] = 1;
        assert_eq!(Wire::Lp32.verify(k, 10, 0, &bad), Some(2));
        bad = v.clone();
        bad[9] ^= 1;
        assert_eq!(Wire::Lp32.verify(k, 10, 3, &bad[3..]), Some(6));
    }

    #[test]
    fn size_range_stays_in_bounds() {
        let r = SizeRange { min: 64, max: 70 };
        let mut seen = std::collections::HashSet::new();
        for s in 0..1000 {
            let n = r.size_of(5, s);
            assert!((64..=70).contains(&n));
            seen.insert(n);
        }
        assert_eq!(seen.len(), 7);
        assert_eq!(SizeRange { min: 9, max: 9 }.size_of(1, 1), 9);
    }
}

//! Masking (RFC 6455 section 5.3), a machine word at a time.

/// XORs `buf` in place with the 4-byte masking `key`, starting at position
/// `offset` of the key stream (the number of payload bytes of the same frame
/// already processed). Applying it twice restores the input.
///
/// The bulk of the work is done eight bytes at a time on `u64` words, without
/// `unsafe`; the compiler vectorizes the loop.
///
/// ```
/// use myriad_ws::apply_mask;
/// let key = [1, 2, 3, 4];
/// let mut data = *b"hello world";
/// apply_mask(&mut data, key, 0);
/// assert_ne!(&data, b"hello world");
/// // unmask in two pieces, tracking the offset
/// let (a, b) = data.split_at_mut(5);
/// apply_mask(a, key, 0);
/// apply_mask(b, key, 5);
/// assert_eq!(&data, b"hello world");
/// ```
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    // rotate the key so that key[0] applies to buf[0]
    let rot = offset & 3;
    let k = [
        key[rot],
        key[(rot + 1) & 3],
        key[(rot + 2) & 3],
        key[(rot + 3) & 3],
    ];
    let word = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let v = u64::from_ne_bytes(w) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    // the remainder starts at a multiple of 8, so the key phase is unchanged
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= k[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(i + offset) % 4];
        }
    }

    #[test]
    fn matches_naive() {
        for len in 0..40 {
            for off in 0..9 {
                let key = [0x12, 0x34, 0x56, 0x78];
                let mut a: Vec<u8> = (0..len as u8).collect();
                let mut b = a.clone();
                apply_mask(&mut a, key, off);
                naive(&mut b, key, off);
                assert_eq!(a, b, "len {len} off {off}");
            }
        }
    }
}

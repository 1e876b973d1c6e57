//! Arbitrary bytes as a request target (path sanitiser) and as a Range
//! header: a sanitised path never climbs out of the root or holds a NUL,
//! and a partial range lies inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myriad_http::{parse_range, sanitize_path, split_target, ByteRange};

fuzz_target!(|data: &[u8]| {
    if let Ok(target) = std::str::from_utf8(data) {
        let (path, _query) = split_target(target);
        if let Ok(p) = sanitize_path(path) {
            let s = p.to_string_lossy();
            assert!(!s.contains('\0'));
            assert!(!p.is_absolute());
            assert!(!p
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir)));
        }
    }
    let len = (data.len() as u64).wrapping_mul(997);
    if let ByteRange::Partial { start, end } = parse_range(data, len) {
        assert!(start <= end && end < len);
    }
});

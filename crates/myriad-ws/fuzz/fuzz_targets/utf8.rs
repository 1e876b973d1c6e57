//! The incremental UTF-8 validator agrees with `std::str::from_utf8`
//! whatever the split points.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myriad_ws::Utf8Validator;

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(ctl).max(1);
    let mut v = Utf8Validator::new();
    let ok = rest.chunks(step).all(|c| v.feed(c).is_ok()) && v.finish().is_ok();
    assert_eq!(ok, std::str::from_utf8(rest).is_ok());
});

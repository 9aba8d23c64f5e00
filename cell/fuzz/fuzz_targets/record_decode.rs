//! Feeds arbitrary bytes to the commit log's record decoder, as a damaged segment file could:
//! it must return a record or an error, never panic; whatever it accepts must encode back to
//! the same frame.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_cell::storage::record;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    // A segment is a run of frames: decode one after another until one is invalid.
    while let Ok((decoded, used)) = record::decode_frame(rest) {
        let encoded = decoded.encode().expect("a decoded record encodes again");
        assert_eq!(&encoded[..], &rest[..used], "decode and encode disagree");
        rest = &rest[used..];
    }
});

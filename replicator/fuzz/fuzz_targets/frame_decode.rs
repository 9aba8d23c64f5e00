//! Feeds arbitrary bytes to the link frame decoder, as a peer could: it must return a frame,
//! "need more bytes" or an error, never panic or allocate beyond the frame limit; and whatever
//! it accepts must encode back to the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_replicator::link::frame::{self, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_frame_bytes: 1 << 20,
        max_batch_entries: 1024,
    };
    let mut rest = data;
    // A stream of frames: decode one after another until the bytes run out or one is invalid.
    while let Ok(Some((decoded, used))) = frame::decode(rest, &limits) {
        let encoded = decoded
            .encode(&limits)
            .expect("a decoded frame encodes again");
        assert_eq!(&encoded[..], &rest[..used], "decode and encode disagree");
        rest = &rest[used..];
    }
});

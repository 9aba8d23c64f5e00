use proptest::prelude::*;

use super::*;

fn limits() -> Limits {
    Limits {
        max_frame_bytes: 1 << 20,
        max_batch_entries: 64,
    }
}

fn region() -> impl Strategy<Value = String> {
    "[a-z0-9-]{0,64}"
}

fn entries() -> impl Strategy<Value = (u64, Vec<Entry>, u64)> {
    (
        0u64..1 << 40,
        prop::collection::vec(
            (
                1u64..1000,
                any::<u64>(),
                "[A-F0-9]{0,40}",
                prop::collection::vec(any::<u8>(), 0..300),
            ),
            0..20,
        ),
        0u64..1000,
    )
        .prop_map(|(start, raw, tail)| {
            let mut at = start;
            let mut out = Vec::new();
            for (gap, hlc, message_id, payload) in raw {
                at += gap;
                out.push(Entry {
                    position: at,
                    hlc,
                    message_id,
                    payload,
                });
            }
            (start, out, at + 1 + tail)
        })
}

fn frames() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any::<u64>(), region(), region(), any::<u8>()).prop_map(
            |(link_id, source_region, destination_region, protocol_version)| Frame::Hello {
                link_id,
                source_region,
                destination_region,
                protocol_version,
            }
        ),
        prop::collection::vec((region(), any::<u64>()), 0..10)
            .prop_map(|positions| Frame::Resume { positions }),
        entries().prop_map(|(start, entries, end)| Frame::Batch {
            start,
            end,
            entries
        }),
        (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(
            |(applied_through, window_bytes, window_entries)| Frame::Ack {
                applied_through,
                window_bytes,
                window_entries,
            }
        ),
        any::<u64>().prop_map(|nonce| Frame::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Frame::Pong { nonce }),
        (region(), any::<u64>(), any::<u64>()).prop_map(|(origin_region, start, end)| {
            Frame::DigestRequest {
                origin_region,
                start,
                end,
            }
        }),
        (
            region(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(origin_region, start, end, count, digest)| {
                Frame::DigestAnswer {
                    origin_region,
                    start,
                    end,
                    count,
                    digest,
                }
            }),
        (any::<u16>(), "[ -~]{0,200}").prop_map(|(code, message)| Frame::Refuse {
            code: RefuseCode::from_u16(code),
            message,
        }),
    ]
}

proptest! {
    #[test]
    fn every_frame_round_trips(frame in frames()) {
        let bytes = frame.encode(&limits()).expect("encodable");
        let (decoded, used) = decode(&bytes, &limits()).expect("valid").expect("complete");
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(decoded, frame);
    }

    #[test]
    fn every_prefix_of_a_frame_is_incomplete(frame in frames()) {
        let bytes = frame.encode(&limits()).expect("encodable");
        for cut in 0..bytes.len() {
            prop_assert_eq!(decode(&bytes[..cut], &limits()), Ok(None));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode(&bytes, &limits());
    }

    #[test]
    fn arbitrary_bodies_with_a_valid_header_never_panic(
        kind in 0u8..12,
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        // A correct length and CRC lets the bytes reach the field parser.
        let mut inner = vec![PROTOCOL_VERSION, kind];
        inner.extend_from_slice(&body);
        let mut bytes = (inner.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&inner).to_le_bytes());
        bytes.extend_from_slice(&inner);
        if let Ok(Some((frame, used))) = decode(&bytes, &limits()) {
            // Whatever decodes must encode back to the same bytes.
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(frame.encode(&limits()).expect("re-encodable"), bytes);
        }
    }

    #[test]
    fn a_flipped_bit_is_caught(frame in frames(), bit in any::<prop::sample::Index>()) {
        let mut bytes = frame.encode(&limits()).expect("encodable");
        let at = bit.index(bytes.len() * 8);
        bytes[at / 8] ^= 1 << (at % 8);
        // Either the header no longer parses, the CRC fails, or more bytes are awaited: a flip
        // never yields a different frame.
        if let Ok(Some((decoded, _))) = decode(&bytes, &limits()) {
            prop_assert_eq!(decoded, frame);
        }
    }
}

#[test]
fn a_length_above_the_limit_is_refused_from_the_header_alone() {
    let mut header = ((1u32 << 20) + 1).to_le_bytes().to_vec();
    header.extend_from_slice(&[0; 4]);
    assert_eq!(
        frame_len(&header, &limits()),
        Err(FrameError::TooLarge {
            len: (1 << 20) + 1 + FRAME_HEADER_BYTES,
            max: 1 << 20,
        })
    );
}

#[test]
fn a_batch_count_larger_than_the_bytes_is_refused_before_allocating() {
    let mut inner = vec![PROTOCOL_VERSION, KIND_BATCH];
    inner.extend_from_slice(&0u64.to_le_bytes());
    inner.extend_from_slice(&10u64.to_le_bytes());
    inner.extend_from_slice(&64u32.to_le_bytes());
    let mut bytes = (inner.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(&inner).to_le_bytes());
    bytes.extend_from_slice(&inner);
    assert_eq!(
        decode(&bytes, &limits()),
        Err(FrameError::Truncated {
            field: "batch entries"
        })
    );
}

#[test]
fn unknown_version_and_kind_are_named() {
    let ping = Frame::Ping { nonce: 7 }
        .encode(&limits())
        .expect("encodable");
    let reframe = |mutate: &dyn Fn(&mut Vec<u8>)| {
        let mut inner = ping[FRAME_HEADER_BYTES..].to_vec();
        mutate(&mut inner);
        let mut bytes = (inner.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&inner).to_le_bytes());
        bytes.extend_from_slice(&inner);
        decode(&bytes, &limits())
    };
    assert_eq!(
        reframe(&|inner| inner[0] = 2),
        Err(FrameError::UnknownVersion(2))
    );
    assert_eq!(
        reframe(&|inner| inner[1] = 200),
        Err(FrameError::UnknownKind(200))
    );
    assert_eq!(
        reframe(&|inner| inner.push(0)),
        Err(FrameError::TrailingBytes(1))
    );
}

#[test]
fn encoding_refuses_what_decoding_would_refuse() {
    let too_long_region = "r".repeat(MAX_REGION_BYTES + 1);
    assert!(matches!(
        Frame::DigestRequest {
            origin_region: too_long_region,
            start: 0,
            end: 1,
        }
        .encode(&limits()),
        Err(FrameError::FieldTooLong { .. })
    ));
    let unordered = Frame::Batch {
        start: 0,
        end: 100,
        entries: vec![
            Entry {
                position: 50,
                hlc: 1,
                message_id: "a".into(),
                payload: vec![],
            },
            Entry {
                position: 10,
                hlc: 2,
                message_id: "b".into(),
                payload: vec![],
            },
        ],
    };
    assert!(matches!(
        unordered.encode(&limits()),
        Err(FrameError::BadBatch { .. })
    ));
    let too_big = Frame::Batch {
        start: 0,
        end: 1,
        entries: vec![Entry {
            position: 0,
            hlc: 1,
            message_id: "a".into(),
            payload: vec![0; 1 << 20],
        }],
    };
    assert!(matches!(
        too_big.encode(&limits()),
        Err(FrameError::TooLarge { .. })
    ));
}

#[test]
fn limits_are_validated() {
    assert!(Limits::default().validate().is_ok());
    assert!(
        Limits {
            max_frame_bytes: MAX_FRAME_BYTES_CEILING + 1,
            ..Limits::default()
        }
        .validate()
        .is_err()
    );
    assert!(
        Limits {
            max_batch_entries: 0,
            ..Limits::default()
        }
        .validate()
        .is_err()
    );
}

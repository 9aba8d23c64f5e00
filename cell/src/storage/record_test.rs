//! Codec tests: every field round-trips, and every kind of damage is detected.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn sample() -> Record {
    Record {
        kind: RecordKind::Message,
        message_id: "01A2B3C4D5E6F7".into(),
        topic: "orders".into(),
        queue_id: 7,
        queue_offset: 123_456,
        message_type: MessageType::Fifo,
        tags: "TagA".into(),
        keys: vec!["order-1".into(), "customer-9".into()],
        message_group: "customer-9".into(),
        properties: BTreeMap::from([
            ("region".to_string(), "eu".to_string()),
            ("k".to_string(), "v".repeat(300)),
        ]),
        body: b"hello \x00 world".to_vec(),
        born_timestamp_ms: 1_700_000_000_000,
        store_timestamp_ms: 1_700_000_000_005,
        hlc: 0x1234_5678_9abc_def0,
        delivery_timestamp_ms: 1_700_000_060_000,
        origin: Origin {
            region: "us-east".into(),
            offset: 987_654_321,
        },
    }
}

#[test]
fn every_field_round_trips() {
    let record = sample();
    let bytes = record.encode().unwrap();
    assert_eq!(bytes.len(), record.frame_len());
    let (decoded, len) = decode_frame(&bytes).unwrap();
    assert_eq!(len, bytes.len());
    assert_eq!(decoded, record);
}

#[test]
fn empty_fields_round_trip_and_size_is_the_minimum() {
    let record = Record {
        kind: RecordKind::Message,
        message_id: String::new(),
        topic: String::new(),
        queue_id: 0,
        queue_offset: 0,
        message_type: MessageType::Normal,
        tags: String::new(),
        keys: vec![],
        message_group: String::new(),
        properties: BTreeMap::new(),
        body: vec![],
        born_timestamp_ms: 0,
        store_timestamp_ms: 0,
        hlc: 0,
        delivery_timestamp_ms: 0,
        origin: Origin::default(),
    };
    let bytes = record.encode().unwrap();
    assert_eq!(bytes.len(), FRAME_HEADER_BYTES + MIN_PAYLOAD_BYTES);
    assert_eq!(decode_frame(&bytes).unwrap().0, record);
}

#[test]
fn every_flipped_bit_is_detected() {
    let bytes = sample().encode().unwrap();
    for byte in 0..bytes.len() {
        for bit in 0..8 {
            let mut damaged = bytes.clone();
            damaged[byte] ^= 1 << bit;
            assert!(
                decode_frame(&damaged).is_err(),
                "flip of bit {bit} in byte {byte} went unnoticed"
            );
        }
    }
}

#[test]
fn truncation_is_incomplete_not_invalid() {
    let bytes = sample().encode().unwrap();
    for len in 0..bytes.len() {
        assert!(matches!(
            check_frame(&bytes[..len]),
            FrameCheck::Incomplete | FrameCheck::Invalid(_)
        ));
    }
    assert!(matches!(
        check_frame(&bytes[..bytes.len() - 1]),
        FrameCheck::Incomplete
    ));
    assert!(matches!(check_frame(&bytes[..3]), FrameCheck::Incomplete));
}

#[test]
fn zeroed_bytes_are_invalid() {
    assert!(matches!(
        check_frame(&[0u8; 64]),
        FrameCheck::Invalid(CodecError::BadLength(0))
    ));
}

#[test]
fn unknown_version_is_refused() {
    let mut bytes = sample().encode().unwrap();
    bytes[FRAME_HEADER_BYTES] = 9;
    let crc = crc32c::crc32c(&bytes[FRAME_HEADER_BYTES..]);
    bytes[4..8].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(
        decode_frame(&bytes).unwrap_err(),
        CodecError::UnknownVersion(9)
    );
}

#[test]
fn oversized_fields_are_refused_before_encoding() {
    let mut record = sample();
    record.topic = "t".repeat(MAX_SHORT_STRING_BYTES + 1);
    assert!(matches!(
        record.encode(),
        Err(CodecError::FieldTooLong { field: "topic", .. })
    ));
    let mut record = sample();
    record.body = vec![0; MAX_PAYLOAD_BYTES];
    assert!(matches!(
        record.encode(),
        Err(CodecError::RecordTooLarge { .. })
    ));
}

fn arbitrary_record() -> impl Strategy<Value = Record> {
    (
        (
            "[a-zA-Z0-9]{0,40}",
            "[a-z%|_-]{0,20}",
            any::<u32>(),
            any::<u64>(),
        ),
        (
            0u8..4,
            ".{0,10}",
            prop::collection::vec(".{0,12}", 0..4),
            ".{0,8}",
        ),
        (
            prop::collection::btree_map(".{0,8}", ".{0,40}", 0..5),
            prop::collection::vec(any::<u8>(), 0..2048),
        ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            "[a-z-]{0,12}",
            any::<u64>(),
        ),
    )
        .prop_map(|(ids, kinds, payload, times)| Record {
            kind: RecordKind::Message,
            message_id: ids.0,
            topic: ids.1,
            queue_id: ids.2,
            queue_offset: ids.3,
            message_type: MessageType::from_byte(kinds.0).unwrap(),
            tags: kinds.1,
            keys: kinds.2,
            message_group: kinds.3,
            properties: payload.0,
            body: payload.1,
            born_timestamp_ms: times.0,
            store_timestamp_ms: times.1,
            hlc: times.2,
            delivery_timestamp_ms: times.3,
            origin: Origin {
                region: times.4,
                offset: times.5,
            },
        })
}

proptest! {
    #[test]
    fn any_record_round_trips(record in arbitrary_record()) {
        let bytes = record.encode().unwrap();
        let (decoded, len) = decode_frame(&bytes).unwrap();
        prop_assert_eq!(len, bytes.len());
        prop_assert_eq!(decoded, record);
    }

    #[test]
    fn concatenated_frames_decode_in_order(records in prop::collection::vec(arbitrary_record(), 1..8)) {
        let mut log = Vec::new();
        for record in &records {
            record.check_encodable().unwrap();
            record.encode_into(&mut log);
        }
        let mut at = 0;
        for record in &records {
            let (decoded, len) = decode_frame(&log[at..]).unwrap();
            prop_assert_eq!(&decoded, record);
            at += len;
        }
        prop_assert_eq!(at, log.len());
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_frame(&bytes);
    }
}

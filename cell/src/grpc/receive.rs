//! ReceiveMessage: the long-poll budget against the client's deadline (R4) and the shape of the
//! response stream (R1, R2): headers at once, one status, the messages, one delivery timestamp.

use meridian_proto::rocketmq::v2::{self as pb, Code, receive_message_response::Content};
use tonic::metadata::MetadataMap;

use super::status::Refusal;

/// The request deadline the client set with `grpc-timeout`, in ms; `None` when absent or
/// malformed (a malformed header is not worth refusing the call for).
pub(crate) fn deadline_ms(metadata: &MetadataMap) -> Option<u64> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    // At most 8 digits then one unit letter (gRPC over HTTP/2 spec).
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    let ms = match unit {
        "H" => amount.checked_mul(3_600_000)?,
        "M" => amount.checked_mul(60_000)?,
        "S" => amount.checked_mul(1_000)?,
        "m" => amount,
        "u" => amount / 1_000,
        "n" => amount / 1_000_000,
        _ => return None,
    };
    Some(ms)
}

/// Limits the long poll obeys.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PollBounds {
    pub(crate) min_ms: u64,
    pub(crate) max_ms: u64,
    pub(crate) reserve_ms: u64,
}

/// How long a receive may wait: the requested time clamped to the bounds, and short enough to
/// answer `reserve_ms` before the client's deadline. A deadline leaving less than the minimum
/// poll is refused with ILLEGAL_POLLING_TIME, as the reference proxy does.
pub(crate) fn long_poll_ms(
    requested_ms: Option<u64>,
    deadline_ms: Option<u64>,
    bounds: PollBounds,
) -> Result<u64, Refusal> {
    let wanted = requested_ms
        .unwrap_or(bounds.max_ms)
        .clamp(bounds.min_ms, bounds.max_ms);
    let Some(deadline) = deadline_ms else {
        return Ok(wanted);
    };
    let available = deadline.saturating_sub(bounds.reserve_ms);
    if available < bounds.min_ms {
        return Err(Refusal::new(
            Code::IllegalPollingTime,
            format!(
                "the request deadline of {deadline} ms leaves less than the minimum long poll of {} ms",
                bounds.min_ms
            ),
        ));
    }
    Ok(wanted.min(available))
}

/// The whole response stream of one receive: a status, then the messages (only when OK), then
/// the delivery timestamp. Nothing found is `MESSAGE_NOT_FOUND` (R2).
pub(crate) fn response_items(
    status: pb::Status,
    messages: Vec<pb::Message>,
    now_ms: u64,
) -> Vec<pb::ReceiveMessageResponse> {
    let mut items = Vec::with_capacity(messages.len() + 2);
    items.push(pb::ReceiveMessageResponse {
        content: Some(Content::Status(status)),
    });
    items.extend(
        messages
            .into_iter()
            .map(|message| pb::ReceiveMessageResponse {
                content: Some(Content::Message(message)),
            }),
    );
    items.push(pb::ReceiveMessageResponse {
        content: Some(Content::DeliveryTimestamp(super::convert::timestamp(
            now_ms,
        ))),
    });
    items
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const BOUNDS: PollBounds = PollBounds {
        min_ms: 5_000,
        max_ms: 20_000,
        reserve_ms: 1_000,
    };

    fn metadata(timeout: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", timeout.parse().unwrap());
        metadata
    }

    #[test]
    fn grpc_timeout_units_are_understood() {
        assert_eq!(deadline_ms(&metadata("40S")), Some(40_000));
        assert_eq!(deadline_ms(&metadata("39999m")), Some(39_999));
        assert_eq!(deadline_ms(&metadata("2M")), Some(120_000));
        assert_eq!(deadline_ms(&metadata("1500000u")), Some(1_500));
        assert_eq!(deadline_ms(&metadata("x")), None);
        assert_eq!(deadline_ms(&metadata("123456789S")), None);
        assert_eq!(deadline_ms(&MetadataMap::new()), None);
    }

    #[test]
    fn rust_client_long_poll_ends_before_its_deadline() {
        // RS asks for 40 s with a 40 s deadline: it gets 20 s, well inside.
        assert_eq!(
            long_poll_ms(Some(40_000), Some(40_000), BOUNDS).unwrap(),
            20_000
        );
        // A tight deadline shortens the poll to leave the reserve.
        assert_eq!(
            long_poll_ms(Some(15_000), Some(10_000), BOUNDS).unwrap(),
            9_000
        );
        // Too short requests are raised to the minimum.
        assert_eq!(long_poll_ms(Some(1), None, BOUNDS).unwrap(), 5_000);
        assert_eq!(long_poll_ms(None, None, BOUNDS).unwrap(), 20_000);
    }

    #[test]
    fn deadline_below_the_minimum_poll_is_refused() {
        let refused = long_poll_ms(Some(20_000), Some(5_500), BOUNDS).unwrap_err();
        assert_eq!(refused.code, Code::IllegalPollingTime);
    }

    #[test]
    fn every_item_has_its_content_set() {
        let items = response_items(super::super::status::ok(), vec![pb::Message::default()], 5);
        assert_eq!(items.len(), 3);
        assert!(matches!(items[0].content, Some(Content::Status(_))));
        assert!(matches!(items[1].content, Some(Content::Message(_))));
        assert!(matches!(
            items[2].content,
            Some(Content::DeliveryTimestamp(_))
        ));
        assert!(items.iter().all(|item| item.content.is_some()));
    }
}

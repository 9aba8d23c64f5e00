//! Property tests of the checker: random clean histories are reported clean, and one injected
//! fault of each kind (a lost receipt, a true duplicate, an allowed redelivery, a swapped pair in
//! a FIFO group) is reported exactly once, whatever the history around it.
#![allow(clippy::unwrap_used)]

use meridian_chaos::checker::{DuplicateReason, FifoKind, RepeatClass};
use meridian_chaos::{CheckSpec, Event, History, check};
use proptest::prelude::*;

/// One message: id index, FIFO group (if any), sequence within its group.
#[derive(Debug, Clone)]
struct Msg {
    id: String,
    group: Option<String>,
    seq: Option<u64>,
    region: &'static str,
}

fn messages(groups: &[Option<u8>], regions: &[bool]) -> Vec<Msg> {
    let mut next_seq = [0u64; 4];
    groups
        .iter()
        .zip(regions)
        .enumerate()
        .map(|(i, (group, us))| {
            let seq = group.map(|g| {
                let s = next_seq[usize::from(g)];
                next_seq[usize::from(g)] += 1;
                s
            });
            Msg {
                id: format!("m{i:03}"),
                group: group.map(|g| format!("G{g}")),
                seq,
                region: if *us { "us" } else { "eu" },
            }
        })
        .collect()
}

fn send_events(msgs: &[Msg]) -> Vec<Event> {
    let mut events = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let at = i as u64 * 10;
        events.push(Event::Send {
            id: m.id.clone(),
            region: m.region.into(),
            topic: "t".into(),
            group: m.group.clone(),
            seq: m.seq,
            producer: Some("p".into()),
            attempt: 1,
            at_ms: at,
        });
        events.push(Event::SendAck {
            id: m.id.clone(),
            region: m.region.into(),
            at_ms: at + 1,
        });
    }
    events
}

fn receive(id: &str, attempt: u32, at_ms: u64) -> Event {
    Event::Receive {
        id: id.into(),
        region: "eu".into(),
        consumer_group: "cg".into(),
        consumer: "c".into(),
        attempt,
        at_ms,
    }
}

/// Receipts in send order, all in region eu, 10 ms apart after the last send.
fn receive_order(msgs: &[Msg]) -> Vec<usize> {
    (0..msgs.len()).collect()
}

fn history(msgs: &[Msg], order: &[usize], extra: Vec<Event>) -> History {
    let mut events = send_events(msgs);
    let base = msgs.len() as u64 * 10 + 100;
    for (k, i) in order.iter().enumerate() {
        events.push(receive(&msgs[*i].id, 1, base + k as u64 * 10));
    }
    events.extend(extra);
    History { events }
}

fn arb_msgs() -> impl Strategy<Value = Vec<Msg>> {
    (1usize..40).prop_flat_map(|n| {
        (
            prop::collection::vec(prop::option::of(0u8..4), n),
            prop::collection::vec(any::<bool>(), n),
        )
            .prop_map(|(groups, regions)| messages(&groups, &regions))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn clean_histories_are_clean(msgs in arb_msgs()) {
        let report = check(&history(&msgs, &receive_order(&msgs), vec![]), &CheckSpec::default());
        prop_assert!(report.is_clean(), "{}", report);
        prop_assert_eq!(report.redelivery_count, 0);
        prop_assert_eq!(report.acked_count, msgs.len());
    }

    #[test]
    fn one_missing_receipt_is_one_loss(msgs in arb_msgs(), pick in any::<prop::sample::Index>()) {
        let missing = pick.index(msgs.len());
        let order: Vec<usize> = receive_order(&msgs).into_iter().filter(|i| *i != missing).collect();
        // Skip the degenerate case where the group would have no receipts at all.
        prop_assume!(!order.is_empty());
        let report = check(&history(&msgs, &order, vec![]), &CheckSpec::default());
        prop_assert_eq!(report.lost_count, 1);
        prop_assert_eq!(&report.lost[0].id, &msgs[missing].id);
        prop_assert_eq!(report.duplicate_count, 0);
        prop_assert_eq!(report.fifo_violation_count, 0);
    }

    #[test]
    fn one_repeated_receipt_is_one_duplicate(msgs in arb_msgs(), pick in any::<prop::sample::Index>()) {
        let again = pick.index(msgs.len());
        let late = receive(&msgs[again].id, 1, 1_000_000);
        let report = check(&history(&msgs, &receive_order(&msgs), vec![late]), &CheckSpec::default());
        prop_assert_eq!(report.duplicate_count, 1);
        prop_assert_eq!(report.redelivery_count, 0);
        prop_assert_eq!(report.repeats[0].class, RepeatClass::Duplicate(DuplicateReason::SameAttempt));
        // Going back in a FIFO group is a regression unless it was the group's last message.
        let m = &msgs[again];
        let later_in_group = m.group.is_some()
            && msgs.iter().any(|o| o.group == m.group && o.seq > m.seq);
        prop_assert_eq!(report.fifo_violation_count, usize::from(later_in_group));
        if later_in_group {
            prop_assert_eq!(report.fifo_violations[0].kind, FifoKind::Regression);
        }
        prop_assert_eq!(report.lost_count, 0);
    }

    #[test]
    fn one_higher_attempt_is_an_allowed_redelivery(msgs in arb_msgs(), pick in any::<prop::sample::Index>()) {
        let again = pick.index(msgs.len());
        let late = receive(&msgs[again].id, 2, 1_000_000);
        let report = check(&history(&msgs, &receive_order(&msgs), vec![late]), &CheckSpec::default());
        prop_assert!(report.is_clean(), "{}", report);
        prop_assert_eq!(report.redelivery_count, 1);
    }

    #[test]
    fn one_swapped_pair_in_a_group_is_one_fifo_violation(msgs in arb_msgs(), pick in any::<prop::sample::Index>()) {
        // Find two consecutive members of one group and deliver them the other way round.
        let grouped: Vec<usize> = (0..msgs.len()).filter(|i| msgs[*i].group.is_some()).collect();
        prop_assume!(!grouped.is_empty());
        let first = grouped[pick.index(grouped.len())];
        let second = (first + 1..msgs.len()).find(|j| msgs[*j].group == msgs[first].group);
        prop_assume!(second.is_some());
        let second = second.unwrap();
        let mut order = receive_order(&msgs);
        order.swap(first, second);
        let report = check(&history(&msgs, &order, vec![]), &CheckSpec::default());
        prop_assert_eq!(report.fifo_violation_count, 1);
        let v = &report.fifo_violations[0];
        prop_assert_eq!(v.kind, FifoKind::SkipAhead);
        prop_assert_eq!(Some(v.seq), msgs[second].seq);
        prop_assert_eq!(Some(v.other_seq), msgs[first].seq);
        prop_assert_eq!(report.duplicate_count + report.lost_count, 0);
    }
}

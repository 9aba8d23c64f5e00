//! `LatencyMap::nearest_healthy` and `by_proximity` over random fabrics.

use std::collections::BTreeSet;

use meridian_topology::RegionName;
use proptest::prelude::*;

use crate::support::{fabric, latencies, region_name, region_names, subset};

proptest! {
    #![proptest_config(crate::support::proptest_config(512))]

    /// The answer is healthy, no healthy region is closer, and among equally close ones it has the
    /// smallest name; the region itself wins whenever it is healthy.
    #[test]
    fn nearest_healthy_is_the_closest_healthy_region(
        names in region_names(),
        draws in latencies(),
        mask in any::<u32>(),
        from_index in any::<prop::sample::Index>(),
    ) {
        let fabric = fabric(&names, &draws);
        let map = fabric.latency();
        let list: Vec<&RegionName> = names.iter().collect();
        let from = (*from_index.get(&list)).clone();
        let healthy = subset(&names, mask);
        match map.nearest_healthy(&from, &healthy) {
            None => prop_assert!(healthy.is_empty()),
            Some(chosen) => {
                prop_assert!(healthy.contains(chosen));
                if healthy.contains(&from) {
                    prop_assert_eq!(chosen, &from);
                }
                let chosen_rtt = map.rtt_ms(&from, chosen).unwrap();
                for other in &healthy {
                    let rtt = map.rtt_ms(&from, other).unwrap();
                    prop_assert!(rtt > chosen_rtt || (rtt == chosen_rtt && other >= chosen),
                        "{} at {} ms beats {} at {} ms", other, rtt, chosen, chosen_rtt);
                }
            }
        }
    }

    /// Regions the map does not know are ignored, and an unknown origin gives no answer.
    #[test]
    fn unknown_names_are_ignored(
        names in region_names(),
        draws in latencies(),
        strangers in proptest::collection::btree_set(region_name(), 0..4),
    ) {
        let fabric = fabric(&names, &draws);
        let map = fabric.latency();
        let strangers: BTreeSet<RegionName> = strangers.difference(&names).cloned().collect();
        let from = names.iter().next().unwrap();
        prop_assert_eq!(map.nearest_healthy(from, &strangers), None);
        let mut mixed = strangers.clone();
        mixed.extend(names.iter().cloned());
        prop_assert_eq!(map.nearest_healthy(from, &mixed), Some(from));
        for stranger in &strangers {
            prop_assert_eq!(map.nearest_healthy(stranger, &mixed), None);
            prop_assert!(map.by_proximity(stranger).is_empty());
        }
    }

    /// `by_proximity` lists every region once, starting with the origin, in non-decreasing round trip.
    #[test]
    fn by_proximity_is_a_sorted_permutation(names in region_names(), draws in latencies()) {
        let fabric = fabric(&names, &draws);
        let map = fabric.latency();
        for from in &names {
            let order = map.by_proximity(from);
            prop_assert_eq!(order.len(), names.len());
            prop_assert_eq!(order[0], from);
            let unique: BTreeSet<&RegionName> = order.iter().copied().collect();
            prop_assert_eq!(unique.len(), names.len());
            for pair in order.windows(2) {
                let (a, b) = (map.rtt_ms(from, pair[0]).unwrap(), map.rtt_ms(from, pair[1]).unwrap());
                prop_assert!(a < b || (a == b && pair[0] < pair[1]));
            }
        }
    }

    /// Round trips are symmetric and the sum of both one-way latencies; the maximum is attained.
    #[test]
    fn round_trips_are_consistent(names in region_names(), draws in latencies()) {
        let fabric = fabric(&names, &draws);
        let map = fabric.latency();
        let mut max = 0;
        for a in &names {
            prop_assert_eq!(map.rtt_ms(a, a), Some(0));
            for b in &names {
                let rtt = map.rtt_ms(a, b).unwrap();
                prop_assert_eq!(Some(rtt), map.rtt_ms(b, a));
                prop_assert_eq!(rtt, map.one_way_ms(a, b).unwrap() + map.one_way_ms(b, a).unwrap());
                max = max.max(rtt);
            }
        }
        prop_assert_eq!(map.max_rtt_ms(), max);
        prop_assert!(fabric.meta_timeouts().election_timeout_min_ms > max);
    }
}

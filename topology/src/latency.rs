//! `LatencyMap`: one-way and round-trip latency between every pair of regions, and nearest-region
//! choice among the healthy ones.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::LinkConfig;
use crate::config::limits::LINK_LATENCY_MS_MAX;
use crate::error::ConfigError;
use crate::region::RegionName;

/// The configured latency between every pair of regions of a validated fabric.
///
/// Latencies are the operator's figures from `[[links]]`, not measurements: they rank regions for
/// routing and size timeouts. Latency from a region to itself is 0. All queries are deterministic:
/// equal round trips are ordered by region name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyMap {
    /// Region names, sorted; the index of a name is its row and column in `one_way_ms`.
    regions: Vec<RegionName>,
    /// Row-major `regions.len()` x `regions.len()` matrix: `one_way_ms[from * n + to]`.
    one_way_ms: Vec<u64>,
}

impl LatencyMap {
    /// Builds the map from the region names (file order) and the links, checking each link: both ends
    /// known, distinct, latencies in range, no pair given twice, and no pair missing.
    pub(crate) fn build(names: &[RegionName], links: &[LinkConfig]) -> Result<Self, ConfigError> {
        let mut regions = names.to_vec();
        regions.sort();
        regions.dedup();
        let n = regions.len();
        let mut one_way_ms = vec![0; n * n];
        // Unordered pair (by sorted index) -> path of the link that set it, to report duplicates.
        let mut seen: BTreeMap<(usize, usize), String> = BTreeMap::new();
        for (index, link) in links.iter().enumerate() {
            let path = format!("links[{index}]");
            let known = |name: &RegionName, field: &str| {
                regions
                    .binary_search(name)
                    .map_err(|_| ConfigError::UnknownRegion {
                        path: format!("{path}.{field}"),
                        name: name.clone(),
                        known: names.to_vec(),
                    })
            };
            let from = known(&link.from, "from")?;
            let to = known(&link.to, "to")?;
            if from == to {
                return Err(ConfigError::SelfLink {
                    path: format!("{path}.to"),
                    region: link.to.clone(),
                });
            }
            check_latency(&format!("{path}.latency_ms"), link.latency_ms)?;
            let reverse_ms = match link.reverse_latency_ms {
                Some(ms) => {
                    check_latency(&format!("{path}.reverse_latency_ms"), ms)?;
                    ms
                }
                None => link.latency_ms,
            };
            if let Some(first_path) = seen.insert((from.min(to), from.max(to)), path.clone()) {
                return Err(ConfigError::DuplicateLink {
                    path,
                    a: link.from.clone(),
                    b: link.to.clone(),
                    first_path,
                });
            }
            one_way_ms[from * n + to] = link.latency_ms;
            one_way_ms[to * n + from] = reverse_ms;
        }
        // Report a missing pair in file order of the regions, which is the order the operator reads.
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                let (ia, ib) = (index_of(&regions, a), index_of(&regions, b));
                if let (Some(ia), Some(ib)) = (ia, ib)
                    && ia != ib
                    && !seen.contains_key(&(ia.min(ib), ia.max(ib)))
                {
                    return Err(ConfigError::MissingLink {
                        path: "links".to_owned(),
                        a: a.clone(),
                        b: b.clone(),
                    });
                }
            }
        }
        Ok(Self {
            regions,
            one_way_ms,
        })
    }

    /// The regions of the map, sorted by name.
    pub fn regions(&self) -> &[RegionName] {
        &self.regions
    }

    /// Whether `region` is part of the map.
    pub fn contains(&self, region: impl AsRef<str>) -> bool {
        self.index(region.as_ref()).is_some()
    }

    /// One-way latency `from -> to` in milliseconds; 0 when `from == to`, `None` for an unknown region.
    pub fn one_way_ms(&self, from: impl AsRef<str>, to: impl AsRef<str>) -> Option<u64> {
        let from = self.index(from.as_ref())?;
        let to = self.index(to.as_ref())?;
        Some(self.one_way_ms[from * self.regions.len() + to])
    }

    /// Round-trip time between `a` and `b` in milliseconds (`a -> b` plus `b -> a`); `None` for an
    /// unknown region.
    pub fn rtt_ms(&self, a: impl AsRef<str>, b: impl AsRef<str>) -> Option<u64> {
        let (a, b) = (a.as_ref(), b.as_ref());
        Some(self.one_way_ms(a, b)? + self.one_way_ms(b, a)?)
    }

    /// The largest round trip between any two regions, with the pair (names in sorted order, first
    /// pair by name on a tie); `None` for a single-region fabric.
    pub fn max_rtt(&self) -> Option<(u64, &RegionName, &RegionName)> {
        let mut best: Option<(u64, &RegionName, &RegionName)> = None;
        for (i, a) in self.regions.iter().enumerate() {
            for b in &self.regions[i + 1..] {
                let rtt = self.rtt_ms(a, b).unwrap_or(0);
                if best.is_none_or(|(max, _, _)| rtt > max) {
                    best = Some((rtt, a, b));
                }
            }
        }
        best
    }

    /// The largest round trip between any two regions in milliseconds; 0 for a single region.
    pub fn max_rtt_ms(&self) -> u64 {
        self.max_rtt().map_or(0, |(rtt, _, _)| rtt)
    }

    /// All regions ordered by round trip from `from`: `from` itself first, then increasing round trip,
    /// equal round trips by name. Empty when `from` is unknown. This is the failover order of a client
    /// homed in `from`.
    pub fn by_proximity(&self, from: impl AsRef<str>) -> Vec<&RegionName> {
        let from = from.as_ref();
        if !self.contains(from) {
            return Vec::new();
        }
        let mut ranked: Vec<(u64, &RegionName)> = self
            .regions
            .iter()
            .map(|r| (self.rtt_ms(from, r).unwrap_or(u64::MAX), r))
            .collect();
        // Sorting by (rtt, name) is total, so the order never depends on the input order.
        ranked.sort();
        ranked.into_iter().map(|(_, r)| r).collect()
    }

    /// The healthy region closest to `from`: `from` itself if healthy, else the healthy region with the
    /// smallest round trip, equal round trips broken by name. Names in `healthy` that the map does not
    /// know are ignored. `None` when `from` is unknown or no known region is healthy.
    pub fn nearest_healthy(
        &self,
        from: impl AsRef<str>,
        healthy: &BTreeSet<RegionName>,
    ) -> Option<&RegionName> {
        self.by_proximity(from)
            .into_iter()
            .find(|r| healthy.contains(*r))
    }

    fn index(&self, region: &str) -> Option<usize> {
        self.regions
            .binary_search_by(|r| r.as_str().cmp(region))
            .ok()
    }
}

fn index_of(sorted: &[RegionName], name: &RegionName) -> Option<usize> {
    sorted.binary_search(name).ok()
}

fn check_latency(path: &str, latency_ms: u64) -> Result<(), ConfigError> {
    if (1..=LINK_LATENCY_MS_MAX).contains(&latency_ms) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            path: path.to_owned(),
            value: latency_ms,
            min: 1,
            max: LINK_LATENCY_MS_MAX,
            unit: "ms",
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn name(s: &str) -> RegionName {
        RegionName::new(s).unwrap()
    }

    fn link(from: &str, to: &str, ms: u64, reverse: Option<u64>) -> LinkConfig {
        LinkConfig {
            from: name(from),
            to: name(to),
            latency_ms: ms,
            reverse_latency_ms: reverse,
        }
    }

    #[test]
    fn asymmetric_links_keep_each_direction() {
        let names = [name("a"), name("b")];
        let map = LatencyMap::build(&names, &[link("a", "b", 10, Some(30))]).unwrap();
        assert_eq!(map.one_way_ms("a", "b"), Some(10));
        assert_eq!(map.one_way_ms("b", "a"), Some(30));
        assert_eq!(map.one_way_ms("a", "a"), Some(0));
        assert_eq!(map.rtt_ms("b", "a"), Some(40));
        assert_eq!(map.one_way_ms("a", "zz"), None);
        assert_eq!(map.max_rtt_ms(), 40);
    }

    #[test]
    fn single_region_needs_no_links() {
        let map = LatencyMap::build(&[name("solo")], &[]).unwrap();
        assert_eq!(map.max_rtt(), None);
        assert_eq!(map.max_rtt_ms(), 0);
        let healthy: BTreeSet<_> = [name("solo")].into();
        assert_eq!(map.nearest_healthy("solo", &healthy), Some(&name("solo")));
    }
}

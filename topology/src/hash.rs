//! A stable 64-bit hash: the same bytes give the same value on every machine, build and release.
//!
//! Placement decisions (which region owns a FIFO message group) are computed independently by routers
//! and clients in every region and must agree, and must not change across restarts or upgrades, since a
//! changed owner means moving the group. `std`'s `RandomState` is seeded per process and `DefaultHasher`
//! is unspecified across Rust releases, so neither fits. This is FNV-1a (64-bit) with the MurmurHash3
//! `fmix64` finalizer on top: FNV-1a alone mixes its last bytes poorly, which would let keys that differ
//! only at the end (`order-1`, `order-2`) favour the same region.
//!
//! **Frozen**: changing anything here re-homes message groups on upgrade.

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Hashes a sequence of byte strings. Each part is prefixed with its length, so `["ab", "c"]` and
/// `["a", "bc"]` hash differently.
pub fn stable_hash64(parts: &[&[u8]]) -> u64 {
    let mut state = FNV_OFFSET_BASIS;
    for part in parts {
        state = fnv1a_update(state, &(part.len() as u64).to_le_bytes());
        state = fnv1a_update(state, part);
    }
    fmix64(state)
}

/// Feeds `bytes` into an FNV-1a state.
fn fnv1a_update(mut state: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        state ^= u64::from(*byte);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// MurmurHash3's 64-bit finalizer: every input bit affects every output bit with probability ~1/2.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // From the FNV reference test suite (Noll), 64-bit FNV-1a.
        assert_eq!(fnv1a_update(FNV_OFFSET_BASIS, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_update(FNV_OFFSET_BASIS, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            fnv1a_update(FNV_OFFSET_BASIS, b"foobar"),
            0x8594_4171_f739_67e8
        );
    }

    #[test]
    fn fmix64_is_a_bijection_on_samples_and_fixes_zero() {
        assert_eq!(fmix64(0), 0);
        let mut outputs: Vec<u64> = (0..10_000u64).map(fmix64).collect();
        outputs.sort_unstable();
        outputs.dedup();
        assert_eq!(outputs.len(), 10_000);
    }

    #[test]
    fn parts_are_length_prefixed() {
        assert_ne!(stable_hash64(&[b"ab", b"c"]), stable_hash64(&[b"a", b"bc"]));
        assert_ne!(stable_hash64(&[b"abc"]), stable_hash64(&[b"abc", b""]));
    }

    #[test]
    fn one_flipped_input_bit_flips_about_half_the_output_bits() {
        // Avalanche check over a fixed sample: mean flipped bits must be close to 32 of 64.
        let mut flipped_bits_total = 0u64;
        let mut samples = 0u64;
        for i in 0..256u32 {
            let key = format!("group-{i}");
            let base = stable_hash64(&[key.as_bytes()]);
            for bit in 0..8 {
                let mut bytes = key.clone().into_bytes();
                let last = bytes.len() - 1;
                bytes[last] ^= 1 << bit;
                flipped_bits_total += u64::from((base ^ stable_hash64(&[&bytes])).count_ones());
                samples += 1;
            }
        }
        let mean = flipped_bits_total as f64 / samples as f64;
        assert!((30.0..34.0).contains(&mean), "mean flipped bits {mean}");
    }
}

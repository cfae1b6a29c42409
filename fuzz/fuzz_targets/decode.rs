//! Decodes arbitrary bytes. Must never panic; a packet that decodes must be fully
//! walkable (every list item, every relay payload, recursively) and must come back
//! unchanged from encode then decode. The checks are the property tests' own.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::check_bytes(data);
});

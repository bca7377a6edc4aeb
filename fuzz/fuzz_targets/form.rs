//! `hub_core::body::parse_form` on arbitrary bytes: PHP/Rails bracket nesting must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hub_core::body::parse_form(data);
});

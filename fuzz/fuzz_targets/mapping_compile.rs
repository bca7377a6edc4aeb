//! `hub_core::mapping::compile_file` on arbitrary UTF-8: the YAML, template and JSONPath
//! parsers behind it must never panic.
#![no_main]

use hub_core::secret::PlaceholderSecrets;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = hub_core::mapping::compile_file("f.yaml", text, &PlaceholderSecrets);
});

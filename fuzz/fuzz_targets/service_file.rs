//! Service file text, as `zdctl run` and every restart read it: the nesting scan, the YAML
//! reader and every value's own parser. Nothing may panic, hang or take time out of
//! proportion to the input, and every error names a position inside the text.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use zd_core::config::parse_str;

fuzz_target!(|data: &[u8]| {
    // Service files are UTF-8 text; anything else is refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(err) = parse_str(text, Path::new("/fuzz/api.yaml")) {
        let message = err.to_string();
        assert!(!message.is_empty());
        if let Some(at) = err.location() {
            assert!(at.line >= 1 && at.column >= 1, "{message}");
        }
    }
});

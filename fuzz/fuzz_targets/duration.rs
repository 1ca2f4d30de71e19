//! Durations as service files, flags and the control protocol write them. Nothing may
//! panic; a parsed duration formats to text that parses again, and a positive one is
//! never zero.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zd_core::duration::{format_duration, parse_duration, parse_positive_duration};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_duration(text) {
        Ok(d) => {
            let shown = format_duration(d);
            assert!(parse_duration(&shown).is_ok(), "{d:?} shown as {shown}");
            assert_eq!(parse_positive_duration(text).is_ok(), !d.is_zero());
        }
        Err(err) => {
            assert!(!err.to_string().is_empty());
            assert!(parse_positive_duration(text).is_err());
        }
    }
});

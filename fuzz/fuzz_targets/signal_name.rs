//! Signal names and numbers as service files, flags and control requests give them.
//! Nothing may panic, and a signal that parses is named back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zd_core::signal::Signal;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match text.parse::<Signal>() {
        Ok(signal) => {
            assert_eq!(signal.to_string().parse::<Signal>(), Ok(signal));
            assert_eq!(Signal::from_raw(signal.as_raw()), signal);
        }
        Err(err) => assert!(!err.to_string().is_empty()),
    }
});

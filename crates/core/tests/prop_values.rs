//! Properties of the small parsers that service files, flags and control requests share:
//! durations and signal names. Whatever the text, they answer a value or an error that
//! reads as a message for a person, and what they print they read back.

mod common;
use common::assert_clear;

use std::time::Duration;

use proptest::prelude::*;
use zd_core::duration::{format_duration, parse_duration, parse_positive_duration};
use zd_core::signal::Signal;

const UNITS: &[&str] = &[
    "ns", "us", "ms", "s", "sec", "secs", "m", "min", "mins", "h", "hr", "d", "days", "w", "M",
    "y", "x", "", " ", ".", "e3", "+", "-",
];

/// Numbers and units glued together: `1h30m`, `1.5s`, `0.0ms`, `99999999999h`, `1..2s`.
fn durationish() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        (0u32..10_000).prop_map(|n| n.to_string()),
        (0u32..1000, 0u32..1000).prop_map(|(a, b)| format!("{a}.{b}")),
        any::<f64>().prop_map(|f| f.to_string()),
        Just(String::new()),
    ];
    prop::collection::vec((number, prop::sample::select(UNITS)), 1..4).prop_map(|parts| {
        parts
            .into_iter()
            .map(|(n, u)| format!("{n}{u}"))
            .collect::<String>()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_text_is_a_duration_or_a_clear_error(text in prop_oneof![".{0,40}", durationish()]) {
        match parse_duration(&text) {
            Ok(d) => {
                // What parses as a duration parses as a positive one unless it is zero.
                prop_assert_eq!(parse_positive_duration(&text).is_ok(), !d.is_zero());
            }
            Err(err) => {
                assert_clear(&err.to_string());
                prop_assert!(parse_positive_duration(&text).is_err());
            }
        }
    }

    #[test]
    fn a_positive_duration_is_never_zero(text in durationish()) {
        match parse_positive_duration(&text) {
            Ok(d) => prop_assert!(!d.is_zero()),
            Err(err) => assert_clear(&err.to_string()),
        }
    }

    #[test]
    fn whole_units_parse_to_exactly_that_much(n in 0u64..1_000_000_000, unit in 0usize..4) {
        let (suffix, want) = [
            ("ms", Duration::from_millis(n)),
            ("s", Duration::from_secs(n)),
            ("m", Duration::from_secs(n * 60)),
            ("h", Duration::from_secs(n * 3600)),
        ][unit];
        prop_assert_eq!(parse_duration(&format!("{n}{suffix}")), Ok(want));
        prop_assert_eq!(parse_duration(&format!(" {n}{suffix} ")), Ok(want));
    }

    #[test]
    fn a_formatted_duration_reads_back_within_its_rounding(micros in 0u64..400_000_000_000) {
        let d = Duration::from_micros(micros);
        let shown = format_duration(d);
        let back = parse_duration(&shown).unwrap_or_else(|e| panic!("{shown}: {e}"));
        // Below a millisecond it shows microseconds, below a second whole milliseconds
        // (cut), below a minute tenths of a second (rounded), then whole seconds (rounded).
        let slack = if d < Duration::from_millis(1) {
            Duration::ZERO
        } else if d < Duration::from_secs(1) {
            Duration::from_millis(1)
        } else if d < Duration::from_secs(60) {
            Duration::from_millis(50)
        } else {
            Duration::from_millis(500)
        };
        let gap = back.abs_diff(d);
        prop_assert!(gap <= slack, "{:?} shown as {} reads back as {:?}", d, shown, back);
        // What it reads back is shown exactly.
        prop_assert_eq!(parse_duration(&format_duration(back)), Ok(back));
    }
}

/// Signal names in every spelling the parser takes, and near misses.
fn signalish() -> impl Strategy<Value = String> {
    let names = prop::sample::select(vec![
        "HUP", "INT", "QUIT", "TERM", "KILL", "USR1", "USR2", "ALRM", "WINCH", "CONT", "STOP",
        "TSTP", "CHLD", "PIPE", "RTMIN", "RTMIN+", "RTMAX", "IO", "POLL", "PWR", "SYS", "TERMX",
    ]);
    let prefix = prop::sample::select(vec!["", "SIG", "sig", "Sig", " ", "SIGSIG"]);
    let suffix = prop_oneof![
        Just(String::new()),
        (-300i64..300).prop_map(|n| n.to_string()),
        Just(" ".to_owned()),
        Just("+99999999999".to_owned()),
    ];
    (prefix, names, suffix, any::<bool>()).prop_map(|(p, n, s, lower)| {
        let text = format!("{p}{n}{s}");
        if lower { text.to_lowercase() } else { text }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_text_is_a_signal_or_a_clear_error(text in prop_oneof![".{0,20}", signalish(), any::<i64>().prop_map(|n| n.to_string())]) {
        match text.parse::<Signal>() {
            Ok(signal) => {
                // A signal the system knows: in range, named back the same.
                prop_assert!((1..=libc::SIGRTMAX()).contains(&signal.as_raw()));
                prop_assert_eq!(signal.to_string().parse::<Signal>(), Ok(signal));
                prop_assert_eq!(Signal::from_raw(signal.as_raw()), signal);
            }
            Err(err) => assert_clear(&err.to_string()),
        }
    }

    #[test]
    fn every_signal_number_reads_back_from_its_name_in_any_case(number in 1..=libc::SIGRTMAX(), lower: bool, bare: bool) {
        let signal = Signal::from_raw(number);
        let mut name = signal.to_string();
        if bare {
            name = name.trim_start_matches("SIG").to_owned();
        }
        if lower {
            name = name.to_lowercase();
        }
        prop_assert_eq!(name.parse::<Signal>(), Ok(signal), "{}", name);
        prop_assert_eq!(number.to_string().parse::<Signal>(), Ok(signal));
    }
}

//! Durations as people write them in service files and on the command line.
//!
//! `500ms`, `30s`, `2m`, `1h30m` and `1.5s` are accepted. A bare number is refused: `30`
//! could mean seconds or milliseconds, and guessing wrong turns a drain timeout of half a
//! minute into thirty milliseconds.

use std::fmt;
use std::time::Duration;

/// A duration that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// The text was empty.
    #[error("empty duration; write a number with a unit, like '30s' or '500ms'")]
    Empty,
    /// A number without a unit, like `30`.
    #[error("duration '{input}' has no unit; add one, like '{input}s' or '{input}ms'")]
    MissingUnit {
        /// The text as given.
        input: String,
    },
    /// Zero, where only a positive duration makes sense (a timeout of zero always expires).
    #[error(
        "a duration of zero ('{input}') is not allowed here; use a positive duration like '1s'"
    )]
    Zero {
        /// The text as given.
        input: String,
    },
    /// Anything else that is not a duration.
    #[error(
        "invalid duration '{input}' ({reason}); write it like '500ms', '30s', '2m', '1h30m' or '1.5s'"
    )]
    Invalid {
        /// The text as given.
        input: String,
        /// What the parser disliked.
        reason: String,
    },
}

/// Parses a human duration: `500ms`, `30s`, `2m`, `1h30m`, `1.5s`.
///
/// Units are those of humantime (`ms`, `s`, `m`, `h`, `d` and their long forms). A decimal
/// fraction is accepted for a single number and unit, like `1.5s` or `0.25h`.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let text = s.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text.parse::<f64>().is_ok() {
        return Err(DurationError::MissingUnit {
            input: text.to_owned(),
        });
    }
    if text.contains('.') {
        return parse_fraction(text);
    }
    humantime::parse_duration(text).map_err(|err| DurationError::Invalid {
        input: text.to_owned(),
        reason: err.to_string(),
    })
}

/// Like [`parse_duration`], but zero is an error: for timeouts and intervals, where zero
/// would expire at once or spin (`zdctl restart --timeout 0s` rolled back every time).
pub fn parse_positive_duration(s: &str) -> Result<Duration, DurationError> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(DurationError::Zero {
            input: s.trim().to_owned(),
        });
    }
    Ok(d)
}

/// `1.5s`: humantime takes integers only, so a fraction with one unit is handled here.
fn parse_fraction(text: &str) -> Result<Duration, DurationError> {
    let invalid = |reason: &str| DurationError::Invalid {
        input: text.to_owned(),
        reason: reason.to_owned(),
    };
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| invalid("no unit"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| invalid("a fraction takes one number and one unit, like '1.5s'"))?;
    // Ask humantime for the size of one unit, so both parsers agree on unit names.
    let one = humantime::parse_duration(&format!("1{}", unit.trim()))
        .map_err(|_| invalid("unknown unit"))?;
    let secs = value * one.as_secs_f64();
    if !secs.is_finite() || secs < 0.0 {
        return Err(invalid("out of range"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| invalid("out of range"))
}

/// Formats a duration in a short human form that [`parse_duration`] reads back:
/// `850ms`, `1.2s`, `30s`, `2m`, `2m30s`, `1h30m`.
///
/// Seconds below a minute keep one decimal; longer spans are rounded to whole seconds.
pub fn format_duration(d: Duration) -> String {
    Short(d).to_string()
}

struct Short(Duration);

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_zero() {
            return f.write_str("0s");
        }
        if d < Duration::from_millis(1) {
            return write!(f, "{}us", d.as_micros().max(1));
        }
        if d < Duration::from_secs(1) {
            return write!(f, "{}ms", d.as_millis());
        }
        if d < Duration::from_secs(60) {
            let tenths = (d.as_millis() + 50) / 100;
            return if tenths % 10 == 0 {
                write!(f, "{}s", tenths / 10)
            } else {
                write!(f, "{}.{}s", tenths / 10, tenths % 10)
            };
        }
        let total = d.as_secs() + u64::from(d.subsec_millis() >= 500);
        let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        if seconds > 0 {
            write!(f, "{seconds}s")?;
        }
        Ok(())
    }
}

/// Serde support: `#[serde(with = "zd_core::duration::serde_duration")]`.
///
/// Serializes as the short human form and reads any form [`parse_duration`] accepts; a
/// bare number is an error that says to add a unit.
pub mod serde_duration {
    use super::{DurationError, format_duration, parse_duration, parse_positive_duration};
    use serde::de::{self, Deserializer, Visitor};
    use serde::ser::Serializer;
    use std::fmt;
    use std::time::Duration;

    /// Writes `d` as `1.5s`, `850ms`, ….
    pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(*d))
    }

    /// Reads a duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor { positive: false })
    }

    /// Reads a duration string that must be longer than zero.
    pub fn deserialize_positive<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor { positive: true })
    }

    /// Every check happens inside the visitor, so a format that tracks positions (YAML)
    /// attaches the value's line and column to the error.
    struct DurationVisitor {
        positive: bool,
    }

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration like '500ms', '30s' or '2m'")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            if self.positive {
                parse_positive_duration(v)
            } else {
                parse_duration(v)
            }
            .map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Err(E::custom(DurationError::MissingUnit {
                input: v.to_string(),
            }))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            Err(E::custom(DurationError::MissingUnit {
                input: v.to_string(),
            }))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Err(E::custom(DurationError::MissingUnit {
                input: v.to_string(),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_the_documented_forms() {
        let table = [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.25h", Duration::from_secs(900)),
            (" 10s ", Duration::from_secs(10)),
            ("1m 30s", Duration::from_secs(90)),
        ];
        for (text, want) in table {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn a_bare_number_is_refused_with_a_hint_to_add_a_unit() {
        let err = parse_duration("30").expect_err("bare number");
        assert_eq!(err, DurationError::MissingUnit { input: "30".into() });
        assert!(err.to_string().contains("add one, like '30s'"), "{err}");
        assert!(matches!(
            parse_duration("1.5"),
            Err(DurationError::MissingUnit { .. })
        ));
    }

    #[test]
    fn garbage_and_empty_text_are_refused() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        for text in ["abc", "10 parsecs", "1.5.2s", "-1s", "1.5x"] {
            let err = parse_duration(text).expect_err(text);
            assert!(
                matches!(err, DurationError::Invalid { .. }),
                "{text}: {err:?}"
            );
        }
    }

    #[test]
    fn a_positive_duration_refuses_zero_in_every_spelling() {
        assert_eq!(
            parse_positive_duration("250ms"),
            Ok(Duration::from_millis(250))
        );
        for zero in ["0s", "0ms", "0.0s", " 0h ", "0.0000000001s"] {
            let err = parse_positive_duration(zero).expect_err(zero);
            assert_eq!(
                err,
                DurationError::Zero {
                    input: zero.trim().to_owned()
                }
            );
            assert_eq!(
                err.to_string(),
                format!(
                    "a duration of zero ('{}') is not allowed here; use a positive duration \
                     like '1s'",
                    zero.trim()
                )
            );
        }
        assert_eq!(parse_positive_duration(""), Err(DurationError::Empty));
    }

    #[test]
    fn format_uses_a_short_form_that_parses_back() {
        let table = [
            (Duration::ZERO, "0s"),
            (Duration::from_micros(20), "20us"),
            (Duration::from_millis(850), "850ms"),
            (Duration::from_millis(1200), "1.2s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(150), "2m30s"),
            (Duration::from_secs(5400), "1h30m"),
        ];
        for (d, want) in table {
            assert_eq!(format_duration(d), want);
            assert_eq!(parse_duration(want), Ok(d), "{want}");
        }
    }
}

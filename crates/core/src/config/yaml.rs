//! The only place that touches serde_yaml: the crate is archived, so swapping it for
//! another YAML reader must mean changing this file alone.
//!
//! Every text is measured for nesting first (see `nesting`), whoever asks: the parse of a
//! deeply nested text takes time quadratic in its depth, and even the check for a `driver:`
//! key parses the whole file.

use serde::de::DeserializeOwned;

use super::nesting::{MAX_DEPTH, check_depth};

/// A parse failure with its 1-based position and serde's message, location removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct YamlError {
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) message: String,
}

/// Deserializes one YAML document that nests at most [`MAX_DEPTH`] levels.
pub(crate) fn from_yaml<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    check_depth(text, MAX_DEPTH).map_err(|at| YamlError {
        line: at.line,
        column: at.column,
        message: format!(
            "the service file nests deeper than {MAX_DEPTH} levels; a service file needs a \
             handful, so check that this is the file you meant"
        ),
    })?;
    serde_yaml::from_str(text).map_err(|err| {
        let (line, column) = err
            .location()
            .map_or((1, 1), |at| (at.line().max(1), at.column().max(1)));
        YamlError {
            line,
            column,
            message: strip_positions(&err.to_string()),
        }
    })
}

/// Removes every ` at line N column M`: we print the position once, up front.
fn strip_positions(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(" at line ") {
        out.push_str(&rest[..start]);
        let after = &rest[start + " at line ".len()..];
        let skipped = after
            .split_once(" column ")
            .filter(|(line, _)| line.bytes().all(|b| b.is_ascii_digit()))
            .map(|(_, tail)| tail.trim_start_matches(|c: char| c.is_ascii_digit()));
        match skipped {
            Some(tail) => rest = tail,
            None => {
                out.push_str(" at line ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_stripped_from_messages() {
        assert_eq!(
            strip_positions(
                "did not find expected key at line 3 column 1, while parsing a block mapping at line 1 column 1"
            ),
            "did not find expected key, while parsing a block mapping"
        );
        assert_eq!(strip_positions("look at line two"), "look at line two");
    }

    #[test]
    fn syntax_errors_carry_the_parser_position() {
        let err = from_yaml::<serde::de::IgnoredAny>("a: [1, 2\nb: c\n").expect_err("bad yaml");
        assert!(err.line >= 1 && err.column >= 1, "{err:?}");
        assert!(!err.message.contains(" at line "), "{err:?}");
    }
}

//! "Did you mean …?": the known word closest to a misspelled one.

/// The word of `choices` closest to `wrong` (Jaro-Winkler similarity of at least 0.8, so a
/// typo or two in a short word), never `wrong` itself; case is ignored.
///
/// Jaro-Winkler looks for matching letters only within a window that is empty for words of
/// three letters, so `tpc` would not find `tcp`: a word of three letters or more also
/// finds one a single edit away (a letter added, removed, changed, or two swapped).
pub(crate) fn closest<'a>(
    wrong: &str,
    choices: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let wrong = wrong.to_ascii_lowercase();
    choices
        .into_iter()
        .filter(|c| c.to_ascii_lowercase() != wrong)
        .map(|c| {
            let c_lower = c.to_ascii_lowercase();
            let one_edit = wrong.len() >= 3 && strsim::osa_distance(&wrong, &c_lower) == 1;
            (strsim::jaro_winkler(&wrong, &c_lower), one_edit, c)
        })
        .filter(|(score, one_edit, _)| *score >= 0.8 || *one_edit)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, _, c)| c)
}

/// ` (did you mean 'x'?)`, or nothing.
pub(crate) fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|s| format!(" (did you mean '{s}'?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_finds_the_word_and_a_stranger_finds_none() {
        let words = ["accepting", "notify", "http", "tcp", "exec", "alive"];
        assert_eq!(closest("acepting", words), Some("accepting"));
        assert_eq!(closest("notfy", words), Some("notify"));
        assert_eq!(closest("banana", words), None);
        assert_eq!(closest("HTTP", words), None, "never the word itself");
        assert_eq!(closest("tpc", words), Some("tcp"), "two letters swapped");
    }
}

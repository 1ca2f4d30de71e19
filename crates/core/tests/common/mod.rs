//! Pieces the property tests share.

/// A message for a person: not empty, and it starts in lower case (a name in capitals,
/// like SIGSTOP, may come first).
pub fn assert_clear(message: &str) {
    let first = message.split_whitespace().next().unwrap_or_default();
    assert!(!first.is_empty(), "empty message: {message:?}");
    let capitalised = first.chars().next().is_some_and(char::is_uppercase)
        && first.chars().skip(1).any(char::is_lowercase);
    assert!(!capitalised, "message starts with a capital: {message:?}");
}

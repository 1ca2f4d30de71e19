//! Colour on a terminal, the way other tools decide it: `CLICOLOR_FORCE` (set and not `0`)
//! forces it, `NO_COLOR` (set and not empty, <https://no-color.org>) turns it off, and
//! otherwise a stream gets colour only when it is a terminal.

use std::io::IsTerminal;

/// Which stream the text goes to.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Whether text written to `stream` gets colour.
pub fn enabled(stream: Stream) -> bool {
    decide(
        std::env::var_os("CLICOLOR_FORCE").map(|v| v.to_string_lossy().into_owned()),
        std::env::var_os("NO_COLOR").map(|v| v.to_string_lossy().into_owned()),
        match stream {
            Stream::Stdout => std::io::stdout().is_terminal(),
            Stream::Stderr => std::io::stderr().is_terminal(),
        },
    )
}

fn decide(force: Option<String>, no_color: Option<String>, terminal: bool) -> bool {
    if force.is_some_and(|v| !v.is_empty() && v != "0") {
        return true;
    }
    if no_color.is_some_and(|v| !v.is_empty()) {
        return false;
    }
    terminal
}

/// `text` in bold red (an error, a failure) when `stream` gets colour.
pub fn bad(text: &str, stream: Stream) -> String {
    paint(text, "1;31", stream)
}

/// `text` in bold green (a pass) when `stream` gets colour.
pub fn good(text: &str, stream: Stream) -> String {
    paint(text, "1;32", stream)
}

fn paint(text: &str, code: &str, stream: Stream) -> String {
    if enabled(stream) {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn force_wins_then_no_color_then_the_terminal_decides() {
        let s = |v: &str| Some(v.to_owned());
        assert!(decide(s("1"), s("1"), false));
        assert!(!decide(s("0"), None, false));
        assert!(!decide(None, s("1"), true));
        assert!(
            decide(None, s(""), true),
            "an empty NO_COLOR does not count"
        );
        assert!(decide(None, None, true));
        assert!(!decide(None, None, false));
    }
}

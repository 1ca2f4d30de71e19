//! How deeply YAML text nests, measured by a cheap scan before any parser sees it.
//!
//! libyaml, under serde_yaml, takes time quadratic in the depth of flow collections: a
//! 100 KB service file of 50,000 nested `[` took 17 s to refuse (issue 17), and serde's own
//! recursion limit only applies after that. Service files need a handful of levels, so text
//! that nests deeper than [`MAX_DEPTH`] is refused here, in time linear in its length.
//!
//! The scan knows just enough YAML to count collections and nothing else:
//!
//! - flow collections: `[` and `{` that open a node, until their `]` or `}`;
//! - block collections: a `- ` or `? ` entry, or a `key:`, each opens a collection at its
//!   column, which lasts while later lines are indented deeper. `- - - x` opens three on one
//!   line; a `- ` at the same column as the key it belongs to (`key:\n- a`) opens a
//!   sequence inside that key's mapping;
//! - what cannot nest is skipped: comments, quoted scalars (which may span lines), literal
//!   and folded block scalars (`|`, `>`) and their indented content.
//!
//! It errs towards counting too much rather than too little only where YAML is ambiguous
//! without a full parse; for text that the parser would accept its count is the real depth
//! or close to it. Anything it gets wrong still meets the parser's own limits and the
//! supervisor's read deadline.

/// The deepest nesting a service file may have: the top-level mapping is level 1.
pub const MAX_DEPTH: usize = 64;

/// Where the text first nests deeper than allowed; both 1-based, the column in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooDeep {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

/// Checks that `text` nests at most `max` collections deep.
pub(crate) fn check_depth(text: &str, max: usize) -> Result<(), TooDeep> {
    let mut scan = Scan {
        max,
        stack: Vec::new(),
        flow: 0,
        quote: None,
        block_scalar: None,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (number, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        scan.line(line.as_bytes()).map_err(|at| TooDeep {
            line: number + 1,
            column: line[..at].chars().count() + 1,
        })?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sequence,
    Mapping,
}

/// Scanner state carried from one line to the next.
struct Scan {
    max: usize,
    /// Open block collections: the column of each and its kind, outermost first.
    stack: Vec<(usize, Kind)>,
    /// Open flow collections.
    flow: usize,
    /// Inside a quoted scalar that started on an earlier line: its quote character.
    quote: Option<u8>,
    /// Inside the content of a `|` or `>` scalar: lines indented deeper than this column
    /// (or blank) belong to it; `None` as the value means any line does (a top-level one).
    block_scalar: Option<Option<usize>>,
}

/// A failure: the byte offset in the line where the nesting went too deep.
type Step = Result<(), usize>;

fn blank(line: &[u8], at: usize) -> bool {
    matches!(line.get(at), None | Some(b' ' | b'\t'))
}

fn skip_spaces(line: &[u8], mut at: usize) -> usize {
    while matches!(line.get(at), Some(b' ' | b'\t')) {
        at += 1;
    }
    at
}

/// A `#` starts a comment at the start of a line or after a space.
fn comment(line: &[u8], at: usize) -> bool {
    line.get(at) == Some(&b'#') && (at == 0 || blank(line, at - 1))
}

/// Nothing but spaces and maybe a comment from `at` on.
fn ends(line: &[u8], at: usize) -> bool {
    let at = skip_spaces(line, at);
    at >= line.len() || comment(line, at)
}

/// `---` or `...` at the start of a line: a document starts or ends.
fn document_marker(line: &[u8]) -> bool {
    (line.starts_with(b"---") || line.starts_with(b"...")) && blank(line, 3)
}

/// Skips node properties (`&anchor`, `!tag`) and the spaces after them.
fn skip_properties(line: &[u8], mut at: usize) -> usize {
    while matches!(line.get(at), Some(b'&' | b'!')) {
        while at < line.len() && !blank(line, at) {
            at += 1;
        }
        at = skip_spaces(line, at);
    }
    at
}

/// The position after the quote that closes a quoted scalar whose text starts at `at`, if
/// it closes on this line. In single quotes `''` is a quote; in double quotes `\` escapes.
fn close_quote(line: &[u8], mut at: usize, quote: u8) -> Option<usize> {
    while at < line.len() {
        match line[at] {
            b'\\' if quote == b'"' => at += 2,
            b'\'' if quote == b'\'' && line.get(at + 1) == Some(&b'\'') => at += 2,
            c if c == quote => return Some(at + 1),
            _ => at += 1,
        }
    }
    None
}

impl Scan {
    fn line(&mut self, line: &[u8]) -> Step {
        if let Some(parent) = self.block_scalar {
            let indent = skip_spaces(line, 0);
            let inside = parent.is_none_or(|p| indent > p) && !document_marker(line);
            if indent >= line.len() || inside {
                return Ok(());
            }
            self.block_scalar = None;
        }
        if let Some(quote) = self.quote {
            let Some(after) = close_quote(line, 0, quote) else {
                return Ok(());
            };
            self.quote = None;
            return self.after_node(line, after);
        }
        if self.flow > 0 {
            return self.flow(line, 0, false);
        }
        let mut indent = 0;
        while line.get(indent) == Some(&b' ') {
            indent += 1;
        }
        if ends(line, indent) {
            return Ok(());
        }
        if indent == 0 {
            if line.starts_with(b"%") {
                return Ok(()); // a directive
            }
            if document_marker(line) {
                self.stack.clear();
                return self.node(line, skip_spaces(line, 3), None);
            }
        }
        while self
            .stack
            .last()
            .is_some_and(|&(column, _)| column > indent)
        {
            self.stack.pop();
        }
        self.entries(line, indent)
    }

    /// Opens a block collection at `column`. The first entry of a line may instead continue
    /// the collection the previous lines opened there.
    fn open(&mut self, column: usize, kind: Kind, first: bool) -> Step {
        if first {
            while let Some(&(top, top_kind)) = self.stack.last() {
                if top < column {
                    break;
                }
                if top_kind == kind {
                    return Ok(()); // the next entry of the same collection
                }
                if top_kind == Kind::Mapping && kind == Kind::Sequence {
                    break; // `key:\n- a`: a sequence at the key's own column
                }
                self.stack.pop();
            }
        }
        self.stack.push((column, kind));
        self.check(column)
    }

    fn check(&self, at: usize) -> Step {
        if self.stack.len() + self.flow > self.max {
            Err(at)
        } else {
            Ok(())
        }
    }

    /// Block entries from `at`, where a line's content starts: `- `, `? `, then a node.
    fn entries(&mut self, line: &[u8], mut at: usize) -> Step {
        let mut first = true;
        loop {
            let kind = match line.get(at) {
                Some(b'-') if blank(line, at + 1) => Kind::Sequence,
                Some(b'?') if blank(line, at + 1) => Kind::Mapping,
                _ => return self.node(line, at, Some((at, first))),
            };
            self.open(at, kind, first)?;
            first = false;
            at = skip_spaces(line, at + 1);
            if ends(line, at) {
                return Ok(());
            }
        }
    }

    /// A node at `at` in block context. `entry` is the column it starts a block entry at (and
    /// whether that is the line's first): a node followed by `:` is a key, which opens a
    /// mapping there.
    fn node(&mut self, line: &[u8], at: usize, entry: Option<(usize, bool)>) -> Step {
        let at = skip_properties(line, at);
        if ends(line, at) {
            return Ok(());
        }
        match line[at] {
            b'[' | b'{' => self.flow(line, at, true),
            quote @ (b'"' | b'\'') => match close_quote(line, at + 1, quote) {
                None => {
                    self.quote = Some(quote);
                    Ok(())
                }
                Some(after) => self.maybe_key(line, after, entry),
            },
            b'|' | b'>' => {
                self.block_scalar = Some(self.stack.last().map(|&(column, _)| column));
                Ok(())
            }
            _ => {
                // A plain scalar: a key if a `:` and a space follow before any comment.
                let mut end = at;
                while end < line.len() && !comment(line, end) {
                    if line[end] == b':' && blank(line, end + 1) {
                        return self.maybe_key(line, end, entry);
                    }
                    end += 1;
                }
                Ok(())
            }
        }
    }

    /// After a scalar that ended at `at`: if `:` follows, it was a key.
    fn maybe_key(&mut self, line: &[u8], at: usize, entry: Option<(usize, bool)>) -> Step {
        let colon = skip_spaces(line, at);
        if line.get(colon) != Some(&b':') || !blank(line, colon + 1) {
            return Ok(());
        }
        if let Some((column, first)) = entry {
            self.open(column, Kind::Mapping, first)?;
        }
        self.value(line, colon + 1)
    }

    /// The value after a key's `:`, on the key's line.
    fn value(&mut self, line: &[u8], at: usize) -> Step {
        let at = skip_properties(line, skip_spaces(line, at));
        if ends(line, at) {
            return Ok(());
        }
        match line[at] {
            b'[' | b'{' => self.flow(line, at, true),
            quote @ (b'"' | b'\'') => {
                if close_quote(line, at + 1, quote).is_none() {
                    self.quote = Some(quote);
                }
                Ok(())
            }
            b'|' | b'>' => {
                self.block_scalar = Some(self.stack.last().map(|&(column, _)| column));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// After a node that ended at `at`: in flow context the scan goes on; in block context
    /// a `:` may follow (the node was a key).
    fn after_node(&mut self, line: &[u8], at: usize) -> Step {
        if self.flow > 0 {
            return self.flow(line, at, false);
        }
        self.maybe_key(line, at, None)
    }

    /// Flow context from `at`. `node_start` says whether a node may start there (after `[`,
    /// `{`, `,` or `:`), where a quote starts a quoted scalar rather than sitting inside a
    /// plain one. Plain scalars in flow context cannot hold `[]{},`, so every bracket
    /// outside quotes counts.
    fn flow(&mut self, line: &[u8], mut at: usize, mut node_start: bool) -> Step {
        while at < line.len() {
            let c = line[at];
            match c {
                b' ' | b'\t' => {}
                b'#' if comment(line, at) => return Ok(()),
                b'[' | b'{' => {
                    self.flow += 1;
                    self.check(at)?;
                    node_start = true;
                }
                b']' | b'}' => {
                    self.flow = self.flow.saturating_sub(1);
                    node_start = false;
                    if self.flow == 0 {
                        return self.after_node(line, at + 1);
                    }
                }
                // After `:` a value may start, even without a space (`{"a":"b"}`).
                b',' | b':' => node_start = true,
                b'?' if blank(line, at + 1) => node_start = true,
                b'"' | b'\'' if node_start => match close_quote(line, at + 1, c) {
                    None => {
                        self.quote = Some(c);
                        return Ok(());
                    }
                    Some(after) => {
                        at = after;
                        node_start = false;
                        continue;
                    }
                },
                b'&' | b'!' if node_start => {
                    while at < line.len() && !blank(line, at) && !b"[]{},".contains(&line[at]) {
                        at += 1;
                    }
                    continue;
                }
                _ => node_start = false,
            }
            at += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The deepest nesting the scan sees in `text`.
    fn depth(text: &str) -> usize {
        (1..=200)
            .find(|&max| check_depth(text, max).is_ok())
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn a_real_service_file_nests_a_few_levels() {
        let text = "\
name: api # the api
command: [\"./server\", --port, '8080']
env:
  RUST_LOG: info
listen:
  - 127.0.0.1:8080
  - name: admin
    address: unix:/run/api.sock
    mode: \"0660\"
ready:
  checks: [accepting, 'http:http://127.0.0.1:8080/health']
  timeout: 45s
restart: { policy: on-failure, backoff: 250ms }
";
        assert_eq!(depth(text), 3);
    }

    #[test]
    fn each_kind_of_collection_counts_one_level() {
        let table = [
            ("a: 1\n", 1),
            ("[a]\n", 1),
            ("a: [b]\n", 2),
            ("a: [[b], {c: [d]}]\n", 4),
            ("a:\n  b:\n    c: 1\n", 3),
            ("a:\n- b\n- c\n", 2),
            ("a:\n- b:\n  - c: 1\n", 5),
            ("- - - x\n", 3),
            ("- a: 1\n  b: 2\n- c\n", 2),
            ("? - a\n: b\n", 2),
            ("--- [[x]]\n", 2),
            ("--- |\n  [[[\n--- [[x]]\n", 2),
            ("a: &x [b]\nc: !!seq [d]\n", 2),
            ("a:\n  [[b]]\n", 3),
            ("a: [b,\n  [c,\n    [d]]]\n", 4),
            ("\"a b\": {c: d}\n", 2),
            ("a: [\"]]]\", 'x]]]', \"[[\", it's]\n", 2),
            ("a: 1\nb:\n  c:\n    d: 1\ne: 2\n", 3),
        ];
        for (text, want) in table {
            assert_eq!(depth(text), want, "{text:?}");
        }
    }

    #[test]
    fn what_cannot_nest_does_not_count() {
        let table = [
            "# [[[[\na: 1\n",
            "a: 'it''s [[['\n",
            "a: \"\\\" [[[\"\n",
            "a: x[[[\n",
            "a: it's [[[\n",
            "a: |\n  [[[\n  {{{\nb: 1\n",
            "a: >-\n\n  [[[\n",
            "a: '[[[\n  [[['\n",
            "- |\n  - - - -\n",
        ];
        for text in table {
            assert_eq!(depth(text), 1, "{text:?}");
        }
    }

    #[test]
    fn the_position_is_that_of_the_first_level_too_many() {
        assert_eq!(
            check_depth("a: [[x]]\n", 2),
            Err(TooDeep { line: 1, column: 5 })
        );
        assert_eq!(
            check_depth("é: [[x]]\n", 2),
            Err(TooDeep { line: 1, column: 5 })
        );
        assert_eq!(
            check_depth("b:\n  - - x\n", 2),
            Err(TooDeep { line: 2, column: 5 })
        );
        assert_eq!(
            check_depth("a:\n b:\n  c: 1\n", 2),
            Err(TooDeep { line: 3, column: 3 })
        );
    }

    #[test]
    fn fifty_thousand_levels_are_refused_at_the_first_level_too_many() {
        let text = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
        assert_eq!(
            check_depth(&text, MAX_DEPTH),
            Err(TooDeep {
                line: 1,
                column: MAX_DEPTH + 1
            })
        );
        let text = "- ".repeat(50_000);
        assert!(check_depth(&text, MAX_DEPTH).is_err());
    }
}

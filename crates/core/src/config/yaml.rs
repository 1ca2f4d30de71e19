//! The only place that touches serde_yaml: the crate is archived, so swapping it for
//! another YAML reader must mean changing this file alone.
//!
//! Every text is measured for nesting first (see `nesting`), whoever asks: the parse of a
//! deeply nested text takes time quadratic in its depth, and even the check for a `driver:`
//! key parses the whole file.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashSet};
use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor,
};

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
    shallow(text)?;
    serde_yaml::from_str(text).map_err(|err| yaml_error(&err))
}

fn shallow(text: &str) -> Result<(), YamlError> {
    check_depth(text, MAX_DEPTH).map_err(|at| YamlError {
        line: at.line,
        column: at.column,
        message: format!(
            "the service file nests deeper than {MAX_DEPTH} levels; a service file needs a \
             handful, so check that this is the file you meant"
        ),
    })
}

fn yaml_error(err: &serde_yaml::Error) -> YamlError {
    let (line, column) = err
        .location()
        .map_or((1, 1), |at| (at.line().max(1), at.column().max(1)));
    YamlError {
        line,
        column,
        message: strip_positions(&err.to_string()),
    }
}

/// Why a struct could not be read from a map: what each failing entry said.
#[derive(Debug)]
pub(crate) struct EntryErrors<T> {
    /// One error per failing entry (or one about the whole text), in file order.
    pub(crate) errors: Vec<YamlError>,
    /// Further failing entries, counted but not read again for their position.
    pub(crate) more: usize,
    /// The keys of the failing entries.
    pub(crate) failed_keys: Vec<String>,
    /// The struct read from the entries that did not fail, when that is possible (no
    /// required key among the failed ones).
    pub(crate) partial: Option<T>,
}

/// Deserializes a struct from a YAML map like [`from_yaml`], but on failure reports every
/// entry of the map that fails, not only the first.
///
/// serde stops at the first error, and the reader cannot go on after one: it may have
/// stopped in the middle of a value. So the text is read again once per entry, with every
/// other entry skipped unread (see [`Filtered`]): each failing entry gets its own error,
/// with its own position and serde's own message. A text that is not a map, or fails in a
/// way no single entry does (two documents, too deep), gets the one error of [`from_yaml`].
///
/// An entry under a key the struct does not have, or a key met before, fails whatever its
/// value: past `cap` failures such entries are counted without being read again, so that
/// a huge file of junk costs a bounded number of reads.
pub(crate) fn from_yaml_each<T: DeserializeOwned>(
    text: &str,
    cap: usize,
) -> Result<T, EntryErrors<T>> {
    let alone = |err: YamlError| EntryErrors {
        errors: vec![err],
        more: 0,
        failed_keys: Vec::new(),
        partial: None,
    };
    // Too deep a text is refused before any read, and read no more.
    shallow(text).map_err(alone)?;
    let whole = match serde_yaml::from_str::<T>(text) {
        Ok(value) => return Ok(value),
        Err(err) => yaml_error(&err),
    };
    let survey = Pass::new(Pick::Survey);
    if survey.read::<T>(text).is_err() && !survey.ended.get() {
        return Err(alone(whole));
    }
    let keys = survey.keys.take();
    let fields = survey.fields.get();

    let mut errors = Vec::new();
    let mut more = 0;
    let mut failed = BTreeSet::new();
    let mut seen = HashSet::new();
    for (index, key) in keys.iter().enumerate() {
        let known = key.as_deref().is_some_and(|k| fields.contains(&k));
        let repeated = known && !seen.insert(key.as_deref());
        if (!known || repeated) && errors.len() >= cap {
            failed.insert(index);
            more += 1;
            continue;
        }
        let pass = Pass::new(if repeated {
            Pick::Repeated(index)
        } else {
            Pick::One(index)
        });
        if let Err(err) = pass.read::<T>(text) {
            // An error after the last entry is about the struct as a whole (a missing
            // key), which this one entry alone cannot tell.
            if !pass.ended.get() {
                failed.insert(index);
                if errors.len() < cap {
                    errors.push(err);
                } else {
                    more += 1;
                }
            }
        }
    }
    if errors.is_empty() && more == 0 {
        return Err(alone(whole));
    }
    let failed_keys: Vec<String> = failed
        .iter()
        .filter_map(|&i| keys.get(i).cloned().flatten())
        .collect();
    // Every entry that did not fail, together: what they give, and what only the whole
    // can tell (a required key that is missing, not merely wrong).
    let rest = Pass::new(Pick::AllBut(&failed));
    let partial = match rest.read::<T>(text) {
        Ok(value) => Some(value),
        Err(err) => {
            // A required key is missing, or only its entry failed (`comand:` for
            // `command:` says so already).
            let missing = err
                .message
                .split('`')
                .nth(1)
                .filter(|_| err.message.contains("missing field"));
            let about_failed = missing.is_some_and(|missing| {
                failed_keys.iter().any(|k| {
                    k == missing
                        || crate::suggest::closest(k, fields.iter().copied()) == Some(missing)
                })
            });
            if rest.ended.get() && !about_failed {
                errors.push(err);
            }
            None
        }
    };
    errors.sort_by_key(|e| (e.line, e.column));
    Err(EntryErrors {
        errors,
        more,
        failed_keys,
        partial,
    })
}

/// Which entries of the top-level map a pass reads; the others are skipped unread.
#[derive(Clone, Copy)]
enum Pick<'a> {
    /// None: only their keys are recorded.
    Survey,
    /// This one.
    One(usize),
    /// This one, refused as a key met before.
    Repeated(usize),
    /// All but these.
    AllBut(&'a BTreeSet<usize>),
}

/// One read of the text through [`Filtered`], and what it saw.
struct Pass<'a> {
    pick: Pick<'a>,
    /// Every key in order (`None`: not a scalar), in a survey.
    keys: RefCell<Vec<Option<String>>>,
    /// The struct's field names, as serde passes them to the reader.
    fields: Cell<&'static [&'static str]>,
    /// The map's last entry was reached: an error from here on is about the whole.
    ended: Cell<bool>,
}

impl<'a> Pass<'a> {
    fn new(pick: Pick<'a>) -> Pass<'a> {
        Pass {
            pick,
            keys: RefCell::new(Vec::new()),
            fields: Cell::new(&[]),
            ended: Cell::new(false),
        }
    }

    fn read<T: DeserializeOwned>(&self, text: &str) -> Result<T, YamlError> {
        T::deserialize(Filtered {
            inner: serde_yaml::Deserializer::from_str(text),
            pass: self,
        })
        .map_err(|err| yaml_error(&err))
    }

    fn reads(&self, index: usize) -> bool {
        match self.pick {
            Pick::Survey => false,
            Pick::One(i) | Pick::Repeated(i) => i == index,
            Pick::AllBut(skipped) => !skipped.contains(&index),
        }
    }
}

/// A reader that shows the struct only the entries its pass picks.
struct Filtered<'p, D> {
    inner: D,
    pass: &'p Pass<'p>,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Filtered<'_, D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_any(FilteredVisitor {
            inner: visitor,
            pass: self.pass,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.pass.fields.set(fields);
        self.inner.deserialize_struct(
            name,
            fields,
            FilteredVisitor {
                inner: visitor,
                pass: self.pass,
            },
        )
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

struct FilteredVisitor<'p, V> {
    inner: V,
    pass: &'p Pass<'p>,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for FilteredVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(FilteredMap {
            inner: map,
            pass: self.pass,
            index: 0,
        })
    }
}

struct FilteredMap<'p, A> {
    inner: A,
    pass: &'p Pass<'p>,
    index: usize,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for FilteredMap<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            let index = self.index;
            self.index += 1;
            if self.pass.reads(index) {
                if let Pick::Repeated(_) = self.pass.pick {
                    // Always an error: the key is refused where it is written.
                    let fields = self.pass.fields.get();
                    if self.inner.next_key_seed(RefuseKey(fields))?.is_none() {
                        self.pass.ended.set(true);
                        return Ok(None);
                    }
                }
                let key = self.inner.next_key_seed(seed)?;
                self.pass.ended.set(key.is_none());
                return Ok(key);
            }
            let Some(KeyText(key)) = self.inner.next_key()? else {
                self.pass.ended.set(true);
                return Ok(None);
            };
            if let Pick::Survey = self.pass.pick {
                self.pass.keys.borrow_mut().push(key);
            }
            self.inner.next_value::<IgnoredAny>()?;
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.inner.next_value_seed(seed)
    }
}

/// A key as text, or `None` for a key that is a list or a map.
struct KeyText(Option<String>);

impl<'de> de::Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<KeyText, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_owned())))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
                Ok(KeyText(None))
            }
            fn visit_seq<S: de::SeqAccess<'de>>(self, mut seq: S) -> Result<KeyText, S::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(KeyText(None))
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<KeyText, M::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(KeyText(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// Refuses a key as one met before, in serde's words. The error is raised inside the
/// reader's own visit of the key, so that it carries the key's position.
struct RefuseKey(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for RefuseKey {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for RefuseKey {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<(), E> {
        Err(match self.0.iter().find(|f| **f == key) {
            Some(field) => E::duplicate_field(field),
            None => E::custom(format!("duplicate field `{key}`")),
        })
    }
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

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Pair {
        a: u32,
        b: Option<bool>,
    }

    #[test]
    fn each_failing_entry_is_reported_and_the_others_still_read() {
        let failed = from_yaml_each::<Pair>(
            "a: 1
b: x
c: 2
b: true
",
            20,
        )
        .expect_err("three entries fail");
        let at: Vec<(usize, usize)> = failed.errors.iter().map(|e| (e.line, e.column)).collect();
        assert_eq!(at, [(2, 4), (3, 1), (4, 1)], "{failed:?}");
        assert!(failed.errors[2].message.contains("duplicate field `b`"));
        assert_eq!(failed.failed_keys, ["b", "c", "b"]);
        assert!(failed.partial.is_some_and(|p| p.a == 1 && p.b.is_none()));
    }

    #[test]
    fn a_missing_field_is_reported_unless_its_entry_failed() {
        let failed = from_yaml_each::<Pair>(
            "b: x
", 20,
        )
        .expect_err("two problems");
        assert_eq!(failed.errors.len(), 2, "{failed:?}");
        let missing = failed
            .errors
            .iter()
            .filter(|e| e.message.contains("missing field `a`"));
        assert_eq!(missing.count(), 1, "{failed:?}");
        let failed = from_yaml_each::<Pair>(
            "a: x
b: x
",
            20,
        )
        .expect_err("two values");
        assert_eq!(failed.errors.len(), 2, "{failed:?}");
        assert!(failed.partial.is_none(), "`a` is required");
    }

    #[test]
    fn text_that_is_no_map_is_one_error() {
        for text in ["- a\n- b\n", "a: [1\n", "a: 1\n---\na: 2\n"] {
            let failed = from_yaml_each::<Pair>(text, 20).expect_err(text);
            assert_eq!(
                (failed.errors.len(), failed.more),
                (1, 0),
                "{text}: {failed:?}"
            );
        }
    }

    #[test]
    fn past_the_cap_unknown_keys_are_counted() {
        let failed = from_yaml_each::<Pair>("a: 1\nx: 1\ny: 1\nz: 1\n", 2).expect_err("three");
        assert_eq!((failed.errors.len(), failed.more), (2, 1), "{failed:?}");
    }

    #[test]
    fn syntax_errors_carry_the_parser_position() {
        let err = from_yaml::<serde::de::IgnoredAny>("a: [1, 2\nb: c\n").expect_err("bad yaml");
        assert!(err.line >= 1 && err.column >= 1, "{err:?}");
        assert!(!err.message.contains(" at line "), "{err:?}");
    }
}

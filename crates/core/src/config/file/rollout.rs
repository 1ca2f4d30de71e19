//! The keys of a generation of several instances and of how a restart replaces it:
//! `instances`, `rollout` and `bake_checks` (`bake` and `bake_check_interval` are plain
//! durations). Each value is checked where it is written; what depends on another key
//! (`surge` against `instances`, `bake` against `bake_check_interval`) is checked with the
//! whole, in `validate`.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::check;
use crate::config::validate::{check_bake, check_instances, check_max_unavailable, check_surge};
use crate::ready::check::ReadyCheck;

/// `instances`: 1 to [`crate::config::MAX_INSTANCES`].
#[derive(Debug, Clone, Copy)]
pub(in crate::config) struct Instances(pub(in crate::config) u32);

impl<'de> Deserialize<'de> for Instances {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Instances, D::Error> {
        count_with(d, |n| check_instances(n).map(Instances))
    }
}

/// `rollout`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RolloutSection {
    pub(in crate::config) surge: Option<Surge>,
    pub(in crate::config) max_unavailable: Option<MaxUnavailable>,
}

/// `rollout.surge`: at least 1; at most `instances` is checked with the whole.
#[derive(Debug, Clone, Copy)]
pub(in crate::config) struct Surge(pub(in crate::config) u32);

impl<'de> Deserialize<'de> for Surge {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Surge, D::Error> {
        count_with(d, |n| check_surge(n).map(Surge))
    }
}

/// `rollout.max_unavailable`: 0, the only value supported.
#[derive(Debug, Clone, Copy)]
pub(in crate::config) struct MaxUnavailable(pub(in crate::config) u32);

impl<'de> Deserialize<'de> for MaxUnavailable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MaxUnavailable, D::Error> {
        count_with(d, |n| check_max_unavailable(n).map(MaxUnavailable))
    }
}

/// Reads a whole number and checks it with `check` inside the visitor, so the YAML reader
/// attaches the value's own line and column to the error (as `text_with` does for text).
fn count_with<'de, D, T>(d: D, check: fn(i64) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<T> {
        check: fn(i64) -> Result<T, String>,
    }
    impl<T> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number, like 4")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            (self.check)(v).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            // Any number this large is refused as too large.
            self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
        }
    }
    d.deserialize_any(V { check })
}

/// `bake_checks`: one check or a list of them, in the forms of readiness checks, minus
/// those a bake cannot use (see [`check_bake`]). An empty list is the default: only the
/// exit of a new instance reverts.
#[derive(Debug, Default)]
pub(in crate::config) struct BakeChecks(pub(in crate::config) Vec<ReadyCheck>);

impl<'de> Deserialize<'de> for BakeChecks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BakeChecks, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BakeChecks;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a check like \"http:http://127.0.0.1:8080/health\", or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BakeChecks, E> {
                Ok(BakeChecks(vec![bake_check(v).map_err(E::custom)?]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BakeChecks, A::Error> {
                let mut checks = Vec::new();
                while let Some(BakeCheck(check)) = seq.next_element()? {
                    checks.push(check);
                }
                Ok(BakeChecks(checks))
            }
        }
        d.deserialize_any(V)
    }
}

/// One bake check, checked where it is written.
struct BakeCheck(ReadyCheck);

impl<'de> Deserialize<'de> for BakeCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BakeCheck, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = BakeCheck;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a check like \"http:http://127.0.0.1:8080/health\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BakeCheck, E> {
                bake_check(v).map(BakeCheck).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

fn bake_check(text: &str) -> Result<ReadyCheck, String> {
    let parsed = check(text)?;
    check_bake(&parsed, text)?;
    Ok(parsed)
}

//! The service file's shape, as serde sees it.
//!
//! Every value is checked inside its own `Deserialize` impl, so the YAML reader attaches
//! the value's line and column to the error. Keys that accept several shapes (a string or
//! a list or a map) have hand-written visitors: serde's `untagged` would buffer the value
//! and lose both the position and the inner message.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

mod listen;
mod rollout;

pub(super) use listen::ListenList;
pub(super) use rollout::{BakeChecks, Instances, RolloutSection};

use super::{Handoff, RestartMode, StartLimit, StartPriority};
use crate::duration::serde_duration;
use crate::ready::check::ReadyCheck;
use crate::signal::Signal;

/// The whole file. Field names are the YAML keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) name: Option<ServiceName>,
    pub(super) command: CommandLine,
    pub(super) workdir: Option<PathBuf>,
    #[serde(default)]
    pub(super) env: EnvMap,
    #[serde(default)]
    pub(super) listen: ListenList,
    pub(super) ready: Option<ReadySection>,
    pub(super) stop_signal: Option<Signal>,
    pub(super) drain_timeout: Option<Positive>,
    pub(super) restart: Option<RestartSection>,
    pub(super) pidfile: Option<PathBuf>,
    pub(super) log: Option<LogSection>,
    pub(super) yield_cpu: Option<bool>,
    pub(super) start_priority: Option<StartPriority>,
    pub(super) handoff: Option<Handoff>,
    pub(super) handoff_wait: Option<Positive>,
    pub(super) migrate_requests: Option<bool>,
    pub(super) intercept_binds: Option<bool>,
    pub(super) instances: Option<Instances>,
    pub(super) rollout: Option<RolloutSection>,
    pub(super) bake: Option<Positive>,
    pub(super) bake_checks: Option<BakeChecks>,
    pub(super) bake_check_interval: Option<Positive>,
}

/// A duration that must be above zero.
#[derive(Debug, Clone, Copy)]
pub(super) struct Positive(pub(super) Duration);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Positive, D::Error> {
        serde_duration::deserialize_positive(d).map(Positive)
    }
}

/// A service name, checked by [`super::validate_name`].
#[derive(Debug)]
pub(super) struct ServiceName(pub(super) String);

impl<'de> Deserialize<'de> for ServiceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ServiceName, D::Error> {
        text_with(d, "a service name", |name| {
            super::validate_name(name)?;
            Ok(ServiceName(name.to_owned()))
        })
    }
}

/// A scalar read as text: `PORT: 8080` in `env` means the string "8080".
#[derive(Debug)]
pub(super) struct Scalar(pub(super) String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        text_with(d, "a string", |s| Ok(Scalar(s.to_owned())))
    }
}

/// Reads a scalar as text and checks it with `check` inside the visitor, so the YAML
/// reader attaches the value's own line and column to the error.
fn text_with<'de, D, T>(
    d: D,
    expecting: &'static str,
    check: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<T> {
        expecting: &'static str,
        check: fn(&str) -> Result<T, String>,
    }
    impl<T> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.check)(v).map_err(E::custom)
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
    }
    d.deserialize_any(V { expecting, check })
}

/// `command`: a list of words, or one string split like a shell would.
#[derive(Debug)]
pub(super) struct CommandLine(pub(super) Vec<String>);

impl<'de> Deserialize<'de> for CommandLine {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CommandLine, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CommandLine;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a command: a list like [\"./server\", \"--port\", \"8080\"] or a string",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CommandLine, E> {
                let words = shlex::split(v).ok_or_else(|| {
                    E::custom(
                        "the command has an unclosed quote or a trailing backslash; \
                         fix the quoting or write it as a list",
                    )
                })?;
                non_empty(words)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CommandLine, A::Error> {
                let mut words = Vec::new();
                while let Some(Scalar(word)) = seq.next_element()? {
                    words.push(word);
                }
                non_empty(words)
            }
        }
        d.deserialize_any(V)
    }
}

fn non_empty<E: de::Error>(words: Vec<String>) -> Result<CommandLine, E> {
    match words.first() {
        None => Err(E::custom(
            "the command is empty; name the program to run, like [\"./server\", \"--port\", \"8080\"]",
        )),
        Some(first) if first.is_empty() => Err(E::custom(
            "the program name is empty; name the program to run, like \"./server\"",
        )),
        Some(_) => Ok(CommandLine(words)),
    }
}

/// `env`: a map of names to scalars.
#[derive(Debug, Default)]
pub(super) struct EnvMap(pub(super) BTreeMap<String, String>);

impl<'de> Deserialize<'de> for EnvMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EnvMap, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EnvMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of variable names to values, like { RUST_LOG: info }")
            }
            fn visit_unit<E: de::Error>(self) -> Result<EnvMap, E> {
                Ok(EnvMap::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EnvMap, A::Error> {
                let mut env = BTreeMap::new();
                while let Some(Scalar(key)) = map.next_key()? {
                    if key.is_empty() || key.contains(['=', '\0']) {
                        return Err(de::Error::custom(format!(
                            "'{key}' is not a valid environment variable name; \
                             use a name without '=', like RUST_LOG"
                        )));
                    }
                    let Scalar(value) = map.next_value()?;
                    if value.contains('\0') {
                        return Err(de::Error::custom(format!(
                            "the value of {key} contains a NUL byte, which the environment cannot hold"
                        )));
                    }
                    env.insert(key, value);
                }
                Ok(EnvMap(env))
            }
        }
        d.deserialize_any(V)
    }
}

/// `ready`: one check, a list of checks, or a map with `checks` and `timeout`.
#[derive(Debug, Default)]
pub(super) struct ReadySection {
    pub(super) checks: Option<Vec<ReadyCheck>>,
    pub(super) timeout: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadyMap {
    checks: Option<CheckList>,
    timeout: Option<Positive>,
}

/// One check or a non-empty list of them.
struct CheckList(Vec<ReadyCheck>);

impl<'de> Deserialize<'de> for CheckList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CheckList, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CheckList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a readiness check like \"accepting\", or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CheckList, E> {
                Ok(CheckList(vec![check(v).map_err(E::custom)?]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CheckList, A::Error> {
                let mut checks = Vec::new();
                while let Some(Check(check)) = seq.next_element()? {
                    checks.push(check);
                }
                if checks.is_empty() {
                    return Err(de::Error::custom(
                        "the list of readiness checks is empty; remove it to get the default, \
                         or name a check like 'accepting'",
                    ));
                }
                Ok(CheckList(checks))
            }
        }
        d.deserialize_any(V)
    }
}

/// One readiness check, checked where it is written.
struct Check(ReadyCheck);

impl<'de> Deserialize<'de> for Check {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Check, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Check;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a readiness check like \"accepting\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Check, E> {
                check(v).map(Check).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// Parses a readiness check and refuses one that cannot prove anything.
fn check(text: &str) -> Result<ReadyCheck, String> {
    let check = text.parse::<ReadyCheck>().map_err(|e| e.to_string())?;
    super::validate::check_alive(&check, text)?;
    Ok(check)
}

impl<'de> Deserialize<'de> for ReadySection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ReadySection, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ReadySection;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a readiness check, a list of them, or a map with `checks` and `timeout`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ReadySection, E> {
                let check = check(v).map_err(E::custom)?;
                Ok(ReadySection {
                    checks: Some(vec![check]),
                    timeout: None,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ReadySection, A::Error> {
                let list = CheckList::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(ReadySection {
                    checks: Some(list.0),
                    timeout: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ReadySection, A::Error> {
                let m = ReadyMap::deserialize(MapAccessDeserializer::new(map))?;
                Ok(ReadySection {
                    checks: m.checks.map(|c| c.0),
                    timeout: m.timeout.map(|t| t.0),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `restart`: a policy name, or a map with `policy`, `backoff`, `backoff_max`, `limit`
/// and `refuse_after`.
#[derive(Debug, Default)]
pub(super) struct RestartSection {
    pub(super) policy: Option<RestartMode>,
    pub(super) backoff: Option<Duration>,
    pub(super) backoff_max: Option<Duration>,
    /// `Some(None)`: `limit: off`.
    pub(super) limit: Option<Option<StartLimit>>,
    /// `Some(None)`: `refuse_after: off`.
    pub(super) refuse_after: Option<Option<Duration>>,
}

/// `restart.limit`: `N in DURATION`, or `off`.
#[derive(Debug)]
struct Limit(Option<StartLimit>);

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
        text_with(d, "a start limit like '5 in 60s', or 'off'", |text| {
            StartLimit::parse(text).map(Limit)
        })
    }
}

/// `restart.refuse_after`: a duration above zero, or `off`.
#[derive(Debug)]
struct RefuseAfter(Option<Duration>);

impl<'de> Deserialize<'de> for RefuseAfter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RefuseAfter, D::Error> {
        text_with(d, "a duration like '30s', or 'off'", |text| {
            let text = text.trim();
            if text == "off" {
                return Ok(RefuseAfter(None));
            }
            crate::duration::parse_positive_duration(text)
                .map(|d| RefuseAfter(Some(d)))
                .map_err(|e| match crate::suggest::closest(text, ["off"]) {
                    Some(off) => format!(
                        "restart.refuse_after '{text}' is not a duration (did you mean \
                         '{off}'?); write it like '30s', or 'off' to keep accepting"
                    ),
                    None => {
                        format!("restart.refuse_after '{text}': {e}, or 'off' to keep accepting")
                    }
                })
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartMap {
    policy: Option<RestartMode>,
    backoff: Option<Positive>,
    backoff_max: Option<Positive>,
    limit: Option<Limit>,
    refuse_after: Option<RefuseAfter>,
}

impl<'de> Deserialize<'de> for RestartSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RestartSection, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RestartSection;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a restart policy (always, on-failure, never) or a map with `policy`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RestartSection, E> {
                let policy = RestartMode::deserialize(de::value::StrDeserializer::<E>::new(v))?;
                Ok(RestartSection {
                    policy: Some(policy),
                    ..RestartSection::default()
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RestartSection, A::Error> {
                let m = RestartMap::deserialize(MapAccessDeserializer::new(map))?;
                let section = RestartSection {
                    policy: m.policy,
                    backoff: m.backoff.map(|b| b.0),
                    backoff_max: m.backoff_max.map(|b| b.0),
                    limit: m.limit.map(|l| l.0),
                    refuse_after: m.refuse_after.map(|r| r.0),
                };
                if let (Some(first), Some(max)) = (section.backoff, section.backoff_max) {
                    if max < first {
                        return Err(de::Error::custom(
                            "backoff_max is shorter than backoff; make backoff_max at least backoff",
                        ));
                    }
                }
                Ok(section)
            }
        }
        d.deserialize_any(V)
    }
}

/// `log`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogSection {
    pub(super) prefix: Option<bool>,
    pub(super) lines: Option<u32>,
}

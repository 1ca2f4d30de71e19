//! The `listen` key: strings or maps, each checked where it is written.

use std::collections::BTreeSet;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{Scalar, text_with};
use crate::listen::{ListenAddr, ListenerSpec, validate_fd_name};

/// `listen`: a list of `[FDNAME=]ADDR` strings or maps (or one string).
#[derive(Debug, Default)]
pub(in crate::config) struct ListenList(pub(in crate::config) Vec<ListenerSpec>);

impl<'de> Deserialize<'de> for ListenList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ListenList, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ListenList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of listen addresses, like [\"127.0.0.1:8080\"]")
            }
            fn visit_unit<E: de::Error>(self) -> Result<ListenList, E> {
                Ok(ListenList::default())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ListenList, E> {
                Ok(ListenList(vec![v.parse().map_err(E::custom)?]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ListenList, A::Error> {
                let mut specs = Vec::new();
                let mut names = BTreeSet::new();
                while let Some(ListenEntry(spec)) = seq.next_element()? {
                    if let Some(name) = &spec.name {
                        if !names.insert(name.clone()) {
                            return Err(de::Error::custom(format!(
                                "two listeners are named '{name}'; give each a different name"
                            )));
                        }
                    }
                    specs.push(spec);
                }
                Ok(ListenList(specs))
            }
        }
        d.deserialize_any(V)
    }
}

/// One `listen` entry.
struct ListenEntry(ListenerSpec);

/// The map form of a `listen` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenMap {
    name: Option<FdName>,
    address: FromText<ListenAddr>,
    mode: Option<Mode>,
    owner: Option<Scalar>,
    group: Option<Scalar>,
    backlog: Option<u32>,
}

impl<'de> Deserialize<'de> for ListenEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ListenEntry, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ListenEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a listen address like \"127.0.0.1:8080\", or a map with `address:`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ListenEntry, E> {
                v.parse().map(ListenEntry).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ListenEntry, A::Error> {
                let m = ListenMap::deserialize(MapAccessDeserializer::new(map))?;
                let addr = m.address.0;
                let unix_only = m.mode.is_some() || m.owner.is_some() || m.group.is_some();
                if unix_only && !addr.is_unix() {
                    return Err(de::Error::custom(format!(
                        "mode, owner and group apply to unix sockets only, and '{addr}' is {}; \
                         remove them or use an address like 'unix:/run/app.sock'",
                        addr.kind()
                    )));
                }
                if m.backlog.is_some() && addr.is_udp() {
                    return Err(de::Error::custom(format!(
                        "backlog applies to TCP and unix listeners, and '{addr}' is UDP: a \
                         datagram socket has no listen() queue (its size is the socket's \
                         receive buffer, net.core.rmem_default); remove `backlog`"
                    )));
                }
                if m.backlog == Some(0) {
                    return Err(de::Error::custom(
                        "backlog 0 would refuse connections; remove it to use the system default",
                    ));
                }
                Ok(ListenEntry(ListenerSpec {
                    name: m.name.map(|n| n.0),
                    addr,
                    backlog: m.backlog,
                    mode: m.mode.map(|m| m.0),
                    owner: m.owner.map(|s| s.0),
                    group: m.group.map(|s| s.0),
                }))
            }
        }
        d.deserialize_any(V)
    }
}

/// A listener name, checked like the `NAME=` prefix.
struct FdName(String);

impl<'de> Deserialize<'de> for FdName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FdName, D::Error> {
        text_with(d, "a listener name", |name| {
            validate_fd_name(name).map_err(|e| e.to_string())?;
            Ok(FdName(name.to_owned()))
        })
    }
}

/// Any `FromStr` value read from a string, its parse error becoming the message.
struct FromText<T>(T);

impl<'de, T> Deserialize<'de> for FromText<T>
where
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FromText<T>, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T> Visitor<'_> for V<T>
        where
            T: std::str::FromStr,
            T::Err: fmt::Display,
        {
            type Value = FromText<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FromText<T>, E> {
                v.parse().map(FromText).map_err(E::custom)
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// A unix permission mode: `"0660"`, `0660`, `660` and `0o660` are all octal.
struct Mode(u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Mode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an octal mode like \"0660\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Mode, E> {
                crate::config::validate::parse_mode(v)
                    .map(Mode)
                    .map_err(E::custom)
            }
            // A format that hands over numbers, not text: its digits are the octal ones.
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Mode, E> {
                self.visit_str(&v.to_string())
            }
        }
        // Asked for as text, YAML gives a plain scalar as written: `0o600` stays "0o600"
        // where asked for any type it would be the integer 384, read back as octal 0o604.
        d.deserialize_str(V)
    }
}

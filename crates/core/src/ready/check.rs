//! Readiness check specifications: what `ready.checks` in a service file and `--ready` on
//! the command line name. Running the checks is the supervisor's business; this module
//! only says what each one is.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::duration::{format_duration, parse_duration};

/// The forms listed in every parse error, so the user sees all choices at once.
const FORMS: &str = "'accepting', 'notify', 'http:http://127.0.0.1:8080/health', \
                     'tcp:127.0.0.1:8080', 'exec:CMD ARGS' or 'alive:2s'";

/// One readiness check. All checks of a service must pass, each within `ready.timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadyCheck {
    /// Some process of the new generation waits for connections on an inherited listener.
    Accepting,
    /// The app sends `READY=1` to `NOTIFY_SOCKET`.
    Notify,
    /// An HTTP GET that must answer 2xx. Through a shared port the old generation may answer,
    /// so this is a sanity check unless the URL is specific to the new generation.
    Http {
        /// The URL as written, `http://host[:port]/path`.
        url: String,
        /// The host to connect to (an IPv6 address without brackets).
        host: String,
        /// The port, 80 when the URL names none.
        port: u16,
        /// The path and query, `/` when the URL names none.
        path: String,
    },
    /// A TCP connect that must succeed; same caveat as `Http`.
    Tcp {
        /// `host:port`, as written.
        addr: String,
    },
    /// A command run with `sh -c` that must exit 0; it gets `ZD_PID` and `ZD_GENERATION`.
    Exec {
        /// The shell command line.
        command: String,
    },
    /// The generation survived this long (the psflip and start_server model).
    Alive(Duration),
}

/// A readiness check that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid readiness check '{input}': {problem}; the forms are {FORMS}")]
#[non_exhaustive]
pub struct ReadyCheckError {
    /// The text as given.
    pub input: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ReadyCheck {
    /// The short kind name: `accepting`, `notify`, `http`, `tcp`, `exec` or `alive`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReadyCheck::Accepting => "accepting",
            ReadyCheck::Notify => "notify",
            ReadyCheck::Http { .. } => "http",
            ReadyCheck::Tcp { .. } => "tcp",
            ReadyCheck::Exec { .. } => "exec",
            ReadyCheck::Alive(_) => "alive",
        }
    }
}

impl FromStr for ReadyCheck {
    type Err = ReadyCheckError;

    fn from_str(s: &str) -> Result<ReadyCheck, ReadyCheckError> {
        let text = s.trim();
        let fail = |problem: &str| ReadyCheckError {
            input: text.to_owned(),
            problem: problem.to_owned(),
        };
        match text {
            "accepting" => return Ok(ReadyCheck::Accepting),
            "notify" => return Ok(ReadyCheck::Notify),
            _ => {}
        }
        if text.starts_with("http://") || text.starts_with("https://") {
            return parse_http(text).map_err(|p| fail(&p));
        }
        let unknown = |word: &str| {
            let known = ["accepting", "notify", "http", "tcp", "exec", "alive"];
            fail(&format!(
                "unknown check{}",
                crate::suggest::did_you_mean(crate::suggest::closest(word, known))
            ))
        };
        let Some((kind, rest)) = text.split_once(':') else {
            return Err(unknown(text));
        };
        let rest = rest.trim();
        match kind.trim() {
            "http" => parse_http(rest).map_err(|p| fail(&p)),
            "tcp" => {
                check_host_port(rest).map_err(|p| fail(&p))?;
                Ok(ReadyCheck::Tcp {
                    addr: rest.to_owned(),
                })
            }
            "exec" if rest.is_empty() => Err(fail("'exec:' needs a command")),
            "exec" => Ok(ReadyCheck::Exec {
                command: rest.to_owned(),
            }),
            "alive" => parse_duration(rest)
                .map(ReadyCheck::Alive)
                .map_err(|e| fail(&e.to_string())),
            other => Err(unknown(other)),
        }
    }
}

/// Splits `http://host[:port][/path]`. Only plain HTTP: a readiness probe talks to the
/// app on this machine, where TLS would only add a certificate to get wrong.
fn parse_http(url: &str) -> Result<ReadyCheck, String> {
    if url.starts_with("https://") {
        return Err("https is not supported; probe the app over plain http".to_owned());
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| "the URL must start with 'http://'".to_owned())?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    let (host, port) = split_host_port(authority, Some(80))?;
    Ok(ReadyCheck::Http {
        url: url.to_owned(),
        host,
        port,
        path,
    })
}

fn check_host_port(addr: &str) -> Result<(), String> {
    split_host_port(addr, None).map(|_| ())
}

/// `host:port`, `[v6]:port`, or just `host` when a default port is given.
fn split_host_port(authority: &str, default_port: Option<u16>) -> Result<(String, u16), String> {
    let bad_port = || format!("'{authority}' needs a port from 1 to 65535, like 'localhost:8080'");
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("'{authority}' misses the closing ']'"))?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("unexpected '{after}' after ']'")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the host is missing".to_owned());
    }
    let port = match (port, default_port) {
        (Some(p), _) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(bad_port)?,
        (None, Some(p)) => p,
        (None, None) => return Err(bad_port()),
    };
    Ok((host.to_owned(), port))
}

impl fmt::Display for ReadyCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadyCheck::Accepting => f.write_str("accepting"),
            ReadyCheck::Notify => f.write_str("notify"),
            ReadyCheck::Http { url, .. } => write!(f, "http:{url}"),
            ReadyCheck::Tcp { addr } => write!(f, "tcp:{addr}"),
            ReadyCheck::Exec { command } => write!(f, "exec:{command}"),
            ReadyCheck::Alive(d) => write!(f, "alive:{}", format_duration(*d)),
        }
    }
}

impl serde::Serialize for ReadyCheck {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ReadyCheck {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ReadyCheck, D::Error> {
        struct CheckVisitor;
        impl serde::de::Visitor<'_> for CheckVisitor {
            type Value = ReadyCheck;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a readiness check: {FORMS}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ReadyCheck, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(CheckVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ReadyCheck {
        match text.parse() {
            Ok(check) => check,
            Err(err) => panic!("{text}: {err}"),
        }
    }

    #[test]
    fn every_documented_form_parses() {
        assert_eq!(parse("accepting"), ReadyCheck::Accepting);
        assert_eq!(parse("notify"), ReadyCheck::Notify);
        assert_eq!(
            parse("http:http://127.0.0.1:8080/health?deep=1"),
            ReadyCheck::Http {
                url: "http://127.0.0.1:8080/health?deep=1".into(),
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/health?deep=1".into(),
            }
        );
        assert_eq!(
            parse("http://[::1]/"),
            ReadyCheck::Http {
                url: "http://[::1]/".into(),
                host: "::1".into(),
                port: 80,
                path: "/".into(),
            }
        );
        assert_eq!(
            parse("tcp:127.0.0.1:8080"),
            ReadyCheck::Tcp {
                addr: "127.0.0.1:8080".into()
            }
        );
        assert_eq!(
            parse("exec:curl -fs http://localhost/"),
            ReadyCheck::Exec {
                command: "curl -fs http://localhost/".into()
            }
        );
        assert_eq!(parse("alive:2s"), ReadyCheck::Alive(Duration::from_secs(2)));
    }

    #[test]
    fn http_urls_without_path_get_slash() {
        let ReadyCheck::Http { path, port, .. } = parse("http://localhost:81") else {
            panic!("not http");
        };
        assert_eq!((path.as_str(), port), ("/", 81));
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "accepting",
            "notify",
            "http:http://127.0.0.1:8080/health",
            "tcp:[::1]:9000",
            "exec:test -e /tmp/ready",
            "alive:1.5s",
        ] {
            assert_eq!(parse(text).to_string(), text);
            assert_eq!(parse(&parse(text).to_string()), parse(text));
        }
        assert_eq!(parse("http://a/").to_string(), "http:http://a/");
    }

    #[test]
    fn bad_checks_are_refused_with_the_list_of_forms() {
        for text in [
            "",
            "ready",
            "http:ftp://x/",
            "https://x/",
            "tcp:localhost",
            "tcp::80",
            "tcp:host:99999",
            "exec:",
            "alive:2",
            "alive:soon",
        ] {
            let err = text.parse::<ReadyCheck>().expect_err(text);
            let msg = err.to_string();
            assert!(msg.contains("'alive:2s'"), "{text}: {msg}");
        }
    }

    #[test]
    fn serde_uses_the_string_form() -> Result<(), serde_json::Error> {
        let check: ReadyCheck = serde_json::from_str("\"alive:500ms\"")?;
        assert_eq!(check, ReadyCheck::Alive(Duration::from_millis(500)));
        assert_eq!(serde_json::to_string(&check)?, "\"alive:500ms\"");
        Ok(())
    }
}

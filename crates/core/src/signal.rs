//! Our own signal type: what a service file, a control request or a CLI flag names.
//!
//! It is converted to nix's type only at the syscall edge ([`Signal::to_nix`]), so the
//! public API does not change when nix does, and realtime signals (which nix cannot name)
//! still fit in [`Signal::Other`].

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use nix::sys::signal::Signal as NixSignal;

/// A Unix signal.
///
/// Build one from a number with [`Signal::from_raw`]: it picks the named variant when there
/// is one, so `Other` never holds the number of a named signal. Equality and hashing compare
/// the signal number, so even a hand-built `Other(15)` equals `Terminate`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Signal {
    /// SIGHUP: the supervisor restarts the service.
    Hangup,
    /// SIGINT: the supervisor stops everything gracefully.
    Interrupt,
    /// SIGQUIT.
    Quit,
    /// SIGTERM: the supervisor stops everything gracefully; the default stop signal.
    Terminate,
    /// SIGKILL: cannot be caught; ends a drain that ran out of time.
    Kill,
    /// SIGUSR1.
    User1,
    /// SIGUSR2.
    User2,
    /// SIGALRM.
    Alarm,
    /// SIGWINCH.
    Winch,
    /// SIGCONT.
    Continue,
    /// SIGSTOP: cannot be caught.
    Stop,
    /// Any other signal number, including realtime signals.
    Other(i32),
}

/// A signal name or number that is not a signal on this system.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// The text names no signal.
    #[error(
        "unknown signal '{input}'{}; use a name like 'TERM', 'SIGHUP' or 'usr2', or a number like '15'",
        crate::suggest::did_you_mean(suggestion.as_deref())
    )]
    Unknown {
        /// The text as given.
        input: String,
        /// The signal name closest to it, when one is close.
        suggestion: Option<String>,
    },
    /// The number is out of the range of signals on this system.
    #[error("'{number}' is not a signal number on this system (1 to {max})")]
    OutOfRange {
        /// The number as given.
        number: i32,
        /// The largest valid number (SIGRTMAX).
        max: i32,
    },
    /// A realtime signal, which nix's signal type cannot hold.
    #[error("signal {number} has no nix equivalent (realtime signals are sent by number)")]
    NotNamed {
        /// The signal number.
        number: i32,
    },
}

/// Signals the supervisor acts on itself instead of forwarding: HUP restarts, TERM and INT
/// stop everything gracefully, USR2 re-executes the supervisor's installed binary in place
/// (`zdctl reexec`).
const SUPERVISOR_HANDLED: &[Signal] = &[
    Signal::Hangup,
    Signal::Terminate,
    Signal::Interrupt,
    Signal::User2,
];

/// Every catchable signal forwarded to the active generation. Left out, and why:
/// - CHLD: the supervisor's own child bookkeeping; KILL and STOP: cannot be caught.
/// - HUP, TERM, INT, USR2: handled by the supervisor itself (see
///   [`Signal::handled_by_supervisor`]); `zdctl signal NAME USR2` still sends USR2 to the
///   active generation.
/// - SEGV, BUS, FPE, ILL, TRAP, SYS, ABRT: they report a fault in the supervisor itself;
///   catching them would hide the fault instead of dumping core.
/// - PIPE: a write to a closed pipe or socket in the supervisor, not a message for the app.
/// - TTIN, TTOU: the kernel's answer to the supervisor's own terminal access.
/// - Realtime signals are not listed; they are forwarded only when named explicitly.
const FORWARDABLE: &[Signal] = &[
    Signal::Quit,
    Signal::User1,
    Signal::Alarm,
    Signal::Winch,
    Signal::Continue,
    Signal::Other(libc::SIGTSTP),
    Signal::Other(libc::SIGURG),
    Signal::Other(libc::SIGVTALRM),
    Signal::Other(libc::SIGPROF),
    Signal::Other(libc::SIGIO),
    Signal::Other(libc::SIGPWR),
    Signal::Other(libc::SIGXCPU),
    Signal::Other(libc::SIGXFSZ),
    Signal::Other(libc::SIGSTKFLT),
];

impl Signal {
    /// The signal for a raw number, preferring a named variant.
    pub fn from_raw(number: i32) -> Signal {
        match number {
            libc::SIGHUP => Signal::Hangup,
            libc::SIGINT => Signal::Interrupt,
            libc::SIGQUIT => Signal::Quit,
            libc::SIGTERM => Signal::Terminate,
            libc::SIGKILL => Signal::Kill,
            libc::SIGUSR1 => Signal::User1,
            libc::SIGUSR2 => Signal::User2,
            libc::SIGALRM => Signal::Alarm,
            libc::SIGWINCH => Signal::Winch,
            libc::SIGCONT => Signal::Continue,
            libc::SIGSTOP => Signal::Stop,
            other => Signal::Other(other),
        }
    }

    /// The raw signal number.
    pub fn as_raw(self) -> i32 {
        match self {
            Signal::Hangup => libc::SIGHUP,
            Signal::Interrupt => libc::SIGINT,
            Signal::Quit => libc::SIGQUIT,
            Signal::Terminate => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
            Signal::User1 => libc::SIGUSR1,
            Signal::User2 => libc::SIGUSR2,
            Signal::Alarm => libc::SIGALRM,
            Signal::Winch => libc::SIGWINCH,
            Signal::Continue => libc::SIGCONT,
            Signal::Stop => libc::SIGSTOP,
            Signal::Other(n) => n,
        }
    }

    /// nix's signal, for `kill(2)` and friends. Fails for realtime signals and numbers
    /// that are not signals; send those with `libc::kill` and [`Signal::as_raw`].
    pub fn to_nix(self) -> Result<NixSignal, SignalError> {
        let number = self.as_raw();
        NixSignal::try_from(number).map_err(|_| SignalError::NotNamed { number })
    }

    /// The signals `zdctl run` forwards to the active generation: every catchable signal
    /// except SIGCHLD, those it handles itself ([`Signal::handled_by_supervisor`]) and the
    /// fault signals that describe the supervisor's own state (SIGSEGV and the like).
    pub fn forwardable() -> &'static [Signal] {
        FORWARDABLE
    }

    /// The signals `zdctl run` acts on itself: SIGHUP restarts the service, SIGTERM and
    /// SIGINT stop it gracefully.
    pub fn handled_by_supervisor() -> &'static [Signal] {
        SUPERVISOR_HANDLED
    }

    /// Whether a process can catch or ignore this signal (all but SIGKILL and SIGSTOP).
    pub fn is_catchable(self) -> bool {
        !matches!(self, Signal::Kill | Signal::Stop)
    }

    /// The name with its `SIG` prefix (`SIGHUP`), or `SIGRTMIN+n`, or the bare number when
    /// the system names no such signal.
    fn name(self) -> Option<String> {
        let number = self.as_raw();
        if let Ok(named) = NixSignal::try_from(number) {
            return Some(named.as_str().to_owned());
        }
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        if (min..=max).contains(&number) {
            return Some(match number - min {
                0 => "SIGRTMIN".to_owned(),
                offset => format!("SIGRTMIN+{offset}"),
            });
        }
        None
    }
}

impl PartialEq for Signal {
    fn eq(&self, other: &Signal) -> bool {
        self.as_raw() == other.as_raw()
    }
}

impl Eq for Signal {}

impl Hash for Signal {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_raw().hash(state);
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(&name),
            None => write!(f, "{}", self.as_raw()),
        }
    }
}

/// The signal name (without `SIG`) closest to a misspelled one.
fn closest_name(text: &str) -> Option<String> {
    let upper = text.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper).to_owned();
    let names: Vec<&str> = NixSignal::iterator()
        .map(|s| s.as_str().trim_start_matches("SIG"))
        .collect();
    crate::suggest::closest(&bare, names).map(str::to_owned)
}

impl FromStr for Signal {
    type Err = SignalError;

    /// Accepts `HUP`, `SIGHUP`, `hup`, `sighup`, `1`, `RTMIN+2` and `SIGRTMIN+2`.
    fn from_str(s: &str) -> Result<Signal, SignalError> {
        let text = s.trim();
        let unknown = || SignalError::Unknown {
            input: text.to_owned(),
            suggestion: closest_name(text),
        };
        let max = libc::SIGRTMAX();
        if let Ok(number) = text.parse::<i32>() {
            return if (1..=max).contains(&number) {
                Ok(Signal::from_raw(number))
            } else {
                Err(SignalError::OutOfRange { number, max })
            };
        }
        let upper = text.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        if let Some(rest) = bare.strip_prefix("RTMIN") {
            let offset = match rest.strip_prefix('+') {
                Some(n) => n.parse::<i32>().map_err(|_| unknown())?,
                None if rest.is_empty() => 0,
                None => return Err(unknown()),
            };
            // An offset from 0 up to SIGRTMAX: below, `RTMIN+-34` would be signal 0
            // (which kill(2) takes as "does it exist?") or a negative number.
            let min = libc::SIGRTMIN();
            return match min.checked_add(offset) {
                Some(number) if offset >= 0 && number <= max => Ok(Signal::Other(number)),
                _ => Err(unknown()),
            };
        }
        NixSignal::from_str(&format!("SIG{bare}"))
            .map(|named| Signal::from_raw(named as i32))
            .map_err(|_| unknown())
    }
}

impl serde::Serialize for Signal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Signal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Signal, D::Error> {
        deserializer.deserialize_any(SignalVisitor)
    }
}

struct SignalVisitor;

impl serde::de::Visitor<'_> for SignalVisitor {
    type Value = Signal;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a signal name like 'TERM' or a number like 15")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Signal, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Signal, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Signal, E> {
        self.visit_str(&v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_or_without_prefix_in_any_case_and_numbers_parse() {
        for text in ["HUP", "SIGHUP", "hup", "sighup", "1", " HUP "] {
            assert_eq!(text.parse::<Signal>(), Ok(Signal::Hangup), "{text}");
        }
        assert_eq!("term".parse::<Signal>(), Ok(Signal::Terminate));
        assert_eq!("USR2".parse::<Signal>(), Ok(Signal::User2));
        assert_eq!("WINCH".parse::<Signal>(), Ok(Signal::Winch));
        assert_eq!("tstp".parse::<Signal>(), Ok(Signal::Other(libc::SIGTSTP)));
        assert_eq!(
            "RTMIN+2".parse::<Signal>(),
            Ok(Signal::Other(libc::SIGRTMIN() + 2))
        );
    }

    #[test]
    fn unknown_names_and_out_of_range_numbers_are_refused() {
        assert!(matches!(
            "BOGUS".parse::<Signal>(),
            Err(SignalError::Unknown { .. })
        ));
        assert!(matches!(
            "0".parse::<Signal>(),
            Err(SignalError::OutOfRange { number: 0, .. })
        ));
        assert!(matches!(
            "999".parse::<Signal>(),
            Err(SignalError::OutOfRange { .. })
        ));
        let err = "nope".parse::<Signal>().expect_err("unknown");
        assert!(err.to_string().contains("'TERM'"), "{err}");
    }

    #[test]
    fn a_realtime_offset_below_zero_or_past_rtmax_is_refused() {
        // Found by the signal_name fuzz target: `RTMIN+-231621` was the signal -231587, and
        // `RTMIN+-34` the signal 0, which kill(2) takes as "does the process exist?".
        let past = (libc::SIGRTMAX() - libc::SIGRTMIN() + 1).to_string();
        let overflow = format!("RTMIN+{}", i32::MAX);
        for text in [
            "RTMIN+-1",
            "SIGRTMIN+-34",
            "rtmin+-231621",
            &format!("RTMIN+{past}"),
            &overflow,
        ] {
            assert!(
                matches!(text.parse::<Signal>(), Err(SignalError::Unknown { input, .. }) if input == text),
                "{text}"
            );
        }
        assert_eq!(
            "TREM".parse::<Signal>().map_err(|e| e.to_string()),
            Err(
                "unknown signal 'TREM' (did you mean 'TERM'?); use a name like 'TERM', \
                 'SIGHUP' or 'usr2', or a number like '15'"
                    .to_owned()
            )
        );
        assert_eq!(
            "RTMIN+0".parse::<Signal>(),
            Ok(Signal::Other(libc::SIGRTMIN()))
        );
    }

    #[test]
    fn display_uses_the_sig_name_and_round_trips() {
        assert_eq!(Signal::Hangup.to_string(), "SIGHUP");
        assert_eq!(Signal::Other(libc::SIGTSTP).to_string(), "SIGTSTP");
        let rt = Signal::Other(libc::SIGRTMIN() + 3);
        assert_eq!(rt.to_string(), "SIGRTMIN+3");
        for number in 1..=libc::SIGRTMAX() {
            let signal = Signal::from_raw(number);
            assert_eq!(signal.to_string().parse::<Signal>(), Ok(signal), "{number}");
            assert_eq!(signal.as_raw(), number);
        }
    }

    #[test]
    fn other_with_a_named_number_equals_the_named_variant() {
        assert_eq!(Signal::Other(libc::SIGTERM), Signal::Terminate);
        assert!(matches!(Signal::from_raw(libc::SIGTERM), Signal::Terminate));
    }

    #[test]
    fn to_nix_converts_named_signals_and_refuses_realtime_ones() {
        assert_eq!(Signal::User1.to_nix(), Ok(NixSignal::SIGUSR1));
        assert_eq!(Signal::Kill.to_nix(), Ok(NixSignal::SIGKILL));
        let rt = libc::SIGRTMIN();
        assert_eq!(
            Signal::Other(rt).to_nix(),
            Err(SignalError::NotNamed { number: rt })
        );
    }

    #[test]
    fn forwardable_excludes_chld_kill_stop_and_supervisor_signals() {
        let list = Signal::forwardable();
        for never in [
            Signal::Other(libc::SIGCHLD),
            Signal::Kill,
            Signal::Stop,
            Signal::Hangup,
            Signal::Terminate,
            Signal::Interrupt,
            Signal::User2,
            Signal::Other(libc::SIGSEGV),
        ] {
            assert!(!list.contains(&never), "{never}");
        }
        assert!(list.contains(&Signal::User1));
        assert!(list.iter().all(|s| s.is_catchable() && s.to_nix().is_ok()));
        assert_eq!(
            Signal::handled_by_supervisor(),
            &[
                Signal::Hangup,
                Signal::Terminate,
                Signal::Interrupt,
                Signal::User2
            ]
        );
    }

    #[test]
    fn serde_writes_the_name_and_reads_names_or_numbers() -> Result<(), serde_json::Error> {
        assert_eq!(serde_json::to_string(&Signal::Quit)?, "\"SIGQUIT\"");
        assert_eq!(serde_json::from_str::<Signal>("\"usr1\"")?, Signal::User1);
        assert_eq!(serde_json::from_str::<Signal>("15")?, Signal::Terminate);
        assert!(serde_json::from_str::<Signal>("\"nah\"").is_err());
        Ok(())
    }
}

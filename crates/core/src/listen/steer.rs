//! The steered handoff: one socket per generation in each TCP or UDP listener's
//! `SO_REUSEPORT` group, and a classic BPF program that sends every new connection (or
//! datagram) to one of them.
//!
//! With one shared socket, a generation that was asked to stop keeps receiving the
//! connections the kernel queued on that socket until it closes its copy, and many
//! servers drop what they accept or read after their stop signal (Go's `net/http` returns
//! without an answer for a request it reads after `Shutdown` began). Here every
//! generation accepts from a socket of its own. The supervisor opens each one, binds it to
//! the listener's address with `SO_REUSEPORT` and keeps it open until the generation that
//! used it is gone, so the group never has fewer than one socket and the port never stops
//! accepting. The program attached to the group (`SO_ATTACH_REUSEPORT_CBPF`) returns the
//! index of the socket that gets each new connection. Attaching a new one replaces the old
//! atomically, which is how the supervisor steers.
//!
//! The supervisor steers to one seat, or to several at once with weights
//! ([`Sockets::steer_weighted`]): during a rolling restart of a pool, the old generation's
//! seat with three instances left and the new one's with one ready get connections 3:1,
//! and during a bake window both generations serve. For one seat the program is a single
//! `ret #index`. For several it loads a random number (the classic BPF ancillary load
//! `SKF_AD_RANDOM`), takes it modulo the sum of the weights, and a cascade of range tests
//! returns the index of the seat whose share the number falls in ([`program`]). The first
//! seat listed is the primary: the active generation's, the one a respawn gets.
//!
//! [`Sockets`] mirrors the kernel's array of each group, so it always knows the index of
//! every socket it steers to, and closes a seat only when that cannot send a connection
//! astray.
//!
//! UDP works the same way: the kernel runs the group's program for every datagram that
//! arrives (`SO_ATTACH_REUSEPORT_CBPF` applies to UDP groups too), and keeps a UDP
//! group's array in the order the sockets were bound, which is when a seat opens its
//! socket. A datagram queued on the old generation's socket is lost if that socket
//! closes unread, so the old generation is asked to stop only once its socket's receive
//! queue is empty ([`queued`]). A UDP group steered to several seats sends every datagram
//! to the primary: the program sees each datagram alone, so a random split would scatter
//! one client's flow over processes that keep no state for each other.
//!
//! The same seats exist for shared listeners (unix sockets, adopted ones, or every
//! listener under `handoff: shared`): there a seat holds duplicates of the one socket.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::AsRawFd;

use socket2::{Domain, Socket, Type};

use super::open::{Listener, backlog_for, bind_inet, bind_tcp, listen};
use super::refuse;
use super::{ListenAddr, ListenError};

/// A set of sockets, one per listener in config order, that generations receive; the
/// active generation's seat is the one new connections are steered to, and a respawn
/// gets the same seat.
pub(crate) type Seat = u64;

/// Checks that this kernel (and sandbox) lets us build a steered TCP group: two sockets on
/// one loopback port with `SO_REUSEPORT`, and the steering programs for one seat and for
/// several attached to them. The error says what failed, for the one log line of the
/// fallback.
pub(crate) fn kernel_support() -> Result<(), String> {
    probe_group(Type::STREAM)
        .map_err(|e| format!("the kernel refused a steered SO_REUSEPORT group: {e}"))
}

/// [`kernel_support`] for a UDP group.
pub(crate) fn kernel_support_udp() -> Result<(), String> {
    probe_group(Type::DGRAM)
        .map_err(|e| format!("the kernel refused a steered SO_REUSEPORT group for UDP: {e}"))
}

fn probe_group(kind: Type) -> io::Result<()> {
    let stream = kind == Type::STREAM;
    let first = reuse_port_socket(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), kind)?;
    if stream {
        first.listen(1)?;
    }
    let addr = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("no inet address"))?;
    let second = reuse_port_socket(addr, kind)?;
    if stream {
        second.listen(1)?;
    }
    steer_group(&second, &program(&[(1, 1)])?)?;
    if stream {
        // The weighted program uses an ancillary load, which a kernel or a seccomp'd
        // sandbox could refuse where `ret #index` passes; steering is all or nothing.
        // (UDP groups only ever get `ret #index`, see `Sockets::attach`.)
        steer_group(&second, &program(&[(0, 1), (1, 1)])?).map_err(|e| {
            io::Error::new(e.kind(), format!("a program that splits by weight: {e}"))
        })?;
    }
    Ok(())
}

fn reuse_port_socket(addr: std::net::SocketAddr, kind: Type) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), kind, None)?;
    if kind == Type::STREAM {
        socket.set_reuse_address(true)?;
    }
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// The steering program for `targets`, each the index of a socket in its group's array
/// and a positive weight, the primary first.
///
/// One target: `ret #index`. Several: a random number modulo the total weight picks a
/// share, and each target's share is a range as wide as its weight:
///
/// ```text
///     ld  rand            ; A = a random u32 (SKF_AD_OFF + SKF_AD_RANDOM)
///     mod #total          ; A = 0 ..= total - 1
///     jge #w0, +1         ; A >= w0: not the first target's share
///     ret #index0
///     jge #w0+w1, +1
///     ret #index1
///     ...
///     ret #index_last
/// ```
///
/// Every jump skips one instruction, so the cascade never needs a jump longer than the
/// 8 bits classic BPF has. The modulo's bias is at most `total / 2^32`.
fn program(targets: &[(usize, u32)]) -> io::Result<Vec<libc::sock_filter>> {
    let index = |i: usize| u32::try_from(i).map_err(|_| io::Error::other("too many sockets"));
    let op = |code: u32, k: u32, jt: u8| libc::sock_filter {
        code: code as u16,
        jt,
        jf: 0,
        k,
    };
    let ret = |i: usize| Ok::<_, io::Error>(op(libc::BPF_RET | libc::BPF_K, index(i)?, 0));
    let Some(((last, _), shares)) = targets.split_last() else {
        return Err(io::Error::other("no seat to steer to"));
    };
    if shares.is_empty() {
        return Ok(vec![ret(*last)?]);
    }
    let total = targets.iter().map(|(_, w)| u64::from(*w)).sum::<u64>();
    let total = u32::try_from(total).map_err(|_| io::Error::other("weights too large"))?;
    let random = (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32;
    let mut code = Vec::with_capacity(2 * targets.len() + 1);
    code.push(op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, random, 0));
    code.push(op(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, total, 0));
    let mut bound = 0;
    for (i, weight) in shares {
        bound += weight;
        code.push(op(libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K, bound, 1));
        code.push(ret(*i)?);
    }
    code.push(ret(*last)?);
    Ok(code)
}

/// Attaches `code` to the group `socket` belongs to, replacing the program there in one
/// step.
fn steer_group(socket: &Socket, code: &[libc::sock_filter]) -> io::Result<()> {
    let program = libc::sock_fprog {
        len: u16::try_from(code.len()).map_err(|_| io::Error::other("program too long"))?,
        // The kernel only reads through this pointer.
        filter: code.as_ptr().cast_mut(),
    };
    // SAFETY: `program` points at `code`, both alive until setsockopt returns; the kernel
    // copies the instructions and keeps no pointer to them.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&raw const program).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What waits on a steered socket for its generation: for a TCP listener, connections in
/// its accept queue ([`accept_queue`]); for a UDP socket, the bytes its queued datagrams
/// hold ([`datagram_queue`]). Zero means nothing waits.
pub(crate) fn queued(listener: &Listener) -> io::Result<u32> {
    if listener.is_udp() {
        datagram_queue(listener)
    } else {
        accept_queue(listener)
    }
}

/// The receive memory a UDP socket holds: every datagram that waits to be read counts
/// (its buffer's size, not its payload's), so it is zero exactly when none waits.
///
/// `SIOCINQ` (FIONREAD) would not do: on a UDP socket it gives the size of the first
/// datagram only, which is 0 for an empty datagram in a queue that is not empty.
/// `SO_MEMINFO` gives the socket's `sk_rmem_alloc`, which also counts what sits in the
/// socket backlog (`SK_MEMINFO_BACKLOG`) while a reader holds the socket lock.
pub(crate) fn datagram_queue(listener: &Listener) -> io::Result<u32> {
    let mut info = [0u32; 9];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`, an array of u32 as
    // SO_MEMINFO expects.
    let rc = unsafe {
        libc::getsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let at = |index: libc::c_int| info[index as usize];
    Ok(at(libc::SK_MEMINFO_RMEM_ALLOC).saturating_add(at(libc::SK_MEMINFO_BACKLOG)))
}

/// Connections waiting in a TCP listener's accept queue, read from the socket itself
/// (`TCP_INFO`: for a listener, `tcpi_unacked` is the queue's length).
pub(crate) fn accept_queue(listener: &Listener) -> io::Result<u32> {
    Ok(tcp_info(listener)?.tcpi_unacked)
}

/// A TCP socket's `TCP_INFO`.
pub(crate) fn tcp_info(listener: &Listener) -> io::Result<libc::tcp_info> {
    // SAFETY: tcp_info is plain integers; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(info)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Every listener's sockets, by seat. Owned by the supervisor's owner task.
///
/// The kernel keeps a group's sockets in an array in the order they started listening,
/// and closing one moves the last into its slot; `order` mirrors that array
/// (`Vec::swap_remove` makes the same move), so the index of every steered-to socket (a
/// target) is always known. When a close moves a target, the program is replaced at
/// once, but until then the target's old index points past the end of the array, where
/// the kernel picks a socket by hash. That is harmless only when every socket left in the
/// group is a target, so a seat whose close would move a target while a socket that is no
/// target stays is kept open (it gets no connection: the program never names it) until a
/// later open, close or steer makes its close safe. In a flip there are two seats, and
/// both orders are safe; so is retiring the old seat of a bake window that steered to two.
#[derive(Debug)]
pub(crate) struct Sockets {
    /// Per listener, in config order: whether it is steered.
    steered: Vec<bool>,
    seats: BTreeMap<Seat, Vec<Listener>>,
    /// The seats in the order of the kernel's arrays (the same in every steered group,
    /// since seats join and leave all groups at once).
    order: Vec<Seat>,
    /// The seats new connections go to, each with a positive weight, the primary first;
    /// never empty.
    targets: Vec<(Seat, u32)>,
    next: Seat,
    /// Seats no generation uses any more, closed as soon as that is safe.
    retired: BTreeSet<Seat>,
    /// While the TCP listeners refuse new connections (`restart.refuse_after`): the
    /// sockets that stopped listening, by inode, with the backlog to listen with again.
    refused: BTreeMap<u64, i32>,
    /// Tests only: after a close that moves a target, leave the program as it is until
    /// [`Sockets::reattach`], to see where the kernel sends connections in the window
    /// before the program is replaced.
    #[cfg(test)]
    hold_reattach: bool,
}

impl Sockets {
    /// The listeners as opened at start become the first seat. A TCP or UDP listener
    /// opened with `SO_REUSEPORT` is steered (the program is attached now); every other one
    /// is shared. So is one adopted from systemd, even with `SO_REUSEPORT` (a socket unit's
    /// `ReusePort=yes`): systemd keeps its own copy, so our close of it at the end of a
    /// flip would not take it out of its group, and it would stay there listening with
    /// nobody accepting, where steering sends new connections.
    pub fn new(listeners: Vec<Listener>) -> Result<Sockets, ListenError> {
        let adopted = super::activation::adopted_from_systemd();
        let steered: Vec<bool> = listeners
            .iter()
            .map(|l| {
                !adopted
                    && !matches!(l.local_addr(), ListenAddr::Unix(_))
                    && l.socket().reuse_port().unwrap_or(false)
            })
            .collect();
        let sockets = Sockets {
            steered,
            seats: BTreeMap::from([(1, listeners)]),
            order: vec![1],
            targets: vec![(1, 1)],
            next: 2,
            retired: BTreeSet::new(),
            refused: BTreeMap::new(),
            #[cfg(test)]
            hold_reattach: false,
        };
        if sockets.any_steered() {
            sockets.attach(sockets.targets())?;
        }
        Ok(sockets)
    }

    /// The sockets of a supervisor that re-executed itself or adopted a dead one's
    /// generation: one seat, numbered `seat` as before, with `steered` as recorded. With
    /// `alone`, they are alone in their groups, so the program is attached again as
    /// `ret #0`; otherwise sockets of other generations (of a dead supervisor) are still
    /// in the groups, and the program that is there stays until [`Sockets::reattach`].
    pub fn resume(
        listeners: Vec<Listener>,
        steered: Vec<bool>,
        seat: Seat,
        alone: bool,
    ) -> Result<Sockets, ListenError> {
        // The previous binary may have left TCP sockets refusing (`restart.refuse_after`):
        // they listen again at the next restart, with the backlog of their spec (a socket
        // that does not listen no longer tells its own).
        let refused = listeners
            .iter()
            .filter(|l| l.local_addr().is_tcp() && !l.socket().is_listener().unwrap_or(true))
            .map(|l| (l.inode(), backlog_for(l.spec())))
            .collect();
        let sockets = Sockets {
            steered,
            seats: BTreeMap::from([(seat, listeners)]),
            order: vec![seat],
            targets: vec![(seat, 1)],
            next: seat + 1,
            retired: BTreeSet::new(),
            refused,
            #[cfg(test)]
            hold_reattach: false,
        };
        if alone && sockets.any_steered() {
            sockets.attach(sockets.targets())?;
        }
        Ok(sockets)
    }

    /// Attaches the program again for the seats new connections go to, once the sockets
    /// no seat of ours holds have left the groups (see [`Sockets::resume`]).
    pub fn reattach(&self) -> Result<(), ListenError> {
        if self.any_steered() {
            self.attach(self.targets())?;
        }
        Ok(())
    }

    /// Whether `seat` is one of ours.
    pub fn has_seat(&self, seat: Seat) -> bool {
        self.seats.contains_key(&seat)
    }

    /// The steered flag of every listener, in config order.
    pub fn steered_flags(&self) -> &[bool] {
        &self.steered
    }

    /// How many seats are open (more than one only during a restart, or while a retired
    /// seat waits until its close is safe).
    pub fn open_count(&self) -> usize {
        self.seats.len()
    }

    /// Whether listener `index` (config order) is steered.
    pub fn is_steered(&self, index: usize) -> bool {
        self.steered.get(index).copied().unwrap_or(false)
    }

    /// Whether any listener is steered.
    pub fn any_steered(&self) -> bool {
        self.steered.contains(&true)
    }

    /// The seat new connections go to: the primary, when they go to several (the active
    /// generation's).
    pub fn steered_to(&self) -> Seat {
        self.targets[0].0
    }

    /// The seats new connections go to, each with its weight (positive), the primary
    /// first.
    pub fn targets(&self) -> &[(Seat, u32)] {
        &self.targets
    }

    /// Whether new connections go to `seat` (with the others, if there are several).
    pub fn is_target(&self, seat: Seat) -> bool {
        self.targets.iter().any(|(s, _)| *s == seat)
    }

    /// A seat's sockets, in config order.
    pub fn seat(&self, seat: Seat) -> &[Listener] {
        self.seats.get(&seat).map_or(&[], Vec::as_slice)
    }

    /// The seats that are open, oldest first.
    pub fn open_seats(&self) -> impl Iterator<Item = (Seat, &[Listener])> {
        self.seats.iter().map(|(s, l)| (*s, l.as_slice()))
    }

    /// Opens a seat for a new generation: a new socket in every steered group (it gets no
    /// connection until it is steered to) and duplicates of the shared sockets.
    pub fn open_seat(&mut self) -> Result<Seat, ListenError> {
        let current = self.seat(self.steered_to());
        let mut sockets = Vec::with_capacity(current.len());
        for (i, l) in current.iter().enumerate() {
            let socket = if self.steered[i] {
                open_member(l)?
            } else {
                l.try_clone().map_err(|source| ListenError::Io {
                    about: "duplicate",
                    addr: l.local_display(),
                    source,
                })?
            };
            sockets.push(socket);
        }
        let seat = self.next;
        self.next += 1;
        self.seats.insert(seat, sockets);
        self.order.push(seat);
        // A target is no longer last: retired seats may be safe to close.
        self.close_retired();
        Ok(seat)
    }

    /// Sends new connections to `seat` from now on, and to no other seat.
    pub fn steer(&mut self, seat: Seat) -> Result<(), ListenError> {
        self.steer_weighted(&[(seat, 1)])
    }

    /// Sends new connections to several seats from now on, each getting a share in
    /// proportion to its weight; the first seat listed is the primary
    /// ([`Sockets::steered_to`]). A seat with weight 0 is left out. At least one weight
    /// must be positive and every seat with one open, or nothing changes. Each group gets
    /// its new program in one atomic replacement; a UDP group steers to the primary only.
    pub fn steer_weighted(&mut self, targets: &[(Seat, u32)]) -> Result<(), ListenError> {
        let targets = self.checked(targets)?;
        if self.any_steered()
            && let Err(e) = self.attach(&targets)
        {
            // Groups before the one that failed have the new program: put the old one back.
            if let Err(undo) = self.attach(self.targets()) {
                tracing::error!(error = %undo, "cannot steer back after a failed steer");
            }
            return Err(e);
        }
        self.targets = targets;
        self.close_retired();
        Ok(())
    }

    /// The positive-weight `targets`, once they are known to be steerable.
    fn checked(&self, targets: &[(Seat, u32)]) -> Result<Vec<(Seat, u32)>, ListenError> {
        let refuse = |seat: Option<Seat>, problem: &str| ListenError::Io {
            about: "steer new connections to",
            addr: seat.map_or_else(|| "no seat".to_owned(), |seat| format!("seat {seat}")),
            source: io::Error::new(io::ErrorKind::InvalidInput, problem),
        };
        let mut kept: Vec<(Seat, u32)> = Vec::with_capacity(targets.len());
        for &(seat, weight) in targets.iter().filter(|(_, weight)| *weight > 0) {
            if !self.has_seat(seat) {
                return Err(refuse(Some(seat), "the seat is closed"));
            }
            if kept.iter().any(|(s, _)| *s == seat) {
                return Err(refuse(Some(seat), "the seat is listed twice"));
            }
            kept.push((seat, weight));
        }
        if kept.is_empty() {
            return Err(refuse(None, "give at least one seat a positive weight"));
        }
        if kept.iter().map(|(_, w)| u64::from(*w)).sum::<u64>() > u64::from(u32::MAX) {
            return Err(refuse(None, "the weights add up to more than 2^32 - 1"));
        }
        Ok(kept)
    }

    /// Attaches the program for `targets` (positive weights, primary first, all open) to
    /// every steered group.
    fn attach(&self, targets: &[(Seat, u32)]) -> Result<(), ListenError> {
        let Some(&(primary, _)) = targets.first() else {
            return Ok(());
        };
        let mut indexed = Vec::with_capacity(targets.len());
        for &(seat, weight) in targets {
            let index = self.index(seat).ok_or_else(|| ListenError::Io {
                about: "steer new connections to",
                addr: format!("seat {seat}"),
                source: io::Error::new(io::ErrorKind::NotFound, "the seat is closed"),
            })?;
            indexed.push((index, weight));
        }
        for (i, l) in self.seat(primary).iter().enumerate() {
            // A socket that does not listen is in no group: it gets the program when it
            // listens again (`accept_again`).
            if !self.steered[i] || self.refused.contains_key(&l.inode()) {
                continue;
            }
            // A UDP group gets the primary only: its program runs for each datagram alone,
            // and a random split would scatter one client's flow (a QUIC connection, a DNS
            // client's retries) over processes that know nothing of each other's state.
            let targets = if l.is_udp() { &indexed[..1] } else { &indexed };
            program(targets)
                .and_then(|code| steer_group(l.socket(), &code))
                .map_err(|source| ListenError::Io {
                    about: "steer",
                    addr: l.local_display(),
                    source,
                })?;
        }
        Ok(())
    }

    fn index(&self, seat: Seat) -> Option<usize> {
        self.order.iter().position(|s| *s == seat)
    }

    /// No generation uses `seat` any more: close it as soon as that is safe. A seat new
    /// connections go to is never closed (a respawn gets it); it closes once it is no
    /// longer steered to.
    pub fn retire(&mut self, seat: Seat) {
        if self.seats.contains_key(&seat) {
            self.retired.insert(seat);
        }
        self.close_retired();
    }

    /// Closes the retired seats whose close cannot send a connection astray (see
    /// [`Sockets`]).
    fn close_retired(&mut self) {
        loop {
            // The lowest index first: while a new seat is last, that moves it forward,
            // and a seat that is promoted early in the array leaves fewer behind it.
            let closable = self
                .retired
                .iter()
                .copied()
                .filter(|seat| !self.is_target(*seat) && self.safe_to_close(*seat))
                .min_by_key(|seat| self.index(*seat));
            let Some(seat) = closable else { return };
            self.retired.remove(&seat);
            self.seats.remove(&seat);
            let seats = &self.seats;
            self.refused
                .retain(|inode, _| seats.values().flatten().any(|l| l.inode() == *inode));
            let target_moves = self.order.last().is_some_and(|last| self.is_target(*last));
            if let Some(i) = self.index(seat) {
                self.order.swap_remove(i);
            }
            #[cfg(test)]
            let target_moves = target_moves && !self.hold_reattach;
            if target_moves && self.any_steered() {
                if let Err(e) = self.attach(self.targets()) {
                    tracing::error!(error = %e, "cannot steer after closing a seat");
                }
            }
            tracing::debug!(seat, open = ?self.order, "closed a seat's sockets");
        }
    }

    /// Whether closing `seat` (no target) keeps every new connection on a target: it
    /// moves no socket (it is last), or moves one the program does not name, or moves a
    /// target while only targets stay, so that a pick by hash lands on one of them.
    fn safe_to_close(&self, seat: Seat) -> bool {
        let last = self.order.last().copied();
        !self.any_steered()
            || last == Some(seat)
            || last.is_none_or(|last| !self.is_target(last))
            || self.order.iter().all(|s| *s == seat || self.is_target(*s))
    }

    /// Stops every TCP listener accepting (see [`super::refuse`]): in every open seat,
    /// since a socket of a steered group that still listened would take the connections
    /// the others refuse. Unix and UDP listeners are left as they are. Returns the names
    /// of the unix listeners that keep accepting, and the sockets that could not stop.
    pub fn refuse(&mut self) -> (Vec<String>, Vec<ListenError>) {
        let (mut unix, mut errors) = (Vec::new(), Vec::new());
        for seat in self.order.clone() {
            for l in self.seats.get(&seat).into_iter().flatten() {
                if self.refused.contains_key(&l.inode()) {
                    continue;
                }
                match refuse::stop_accepting(l) {
                    Ok(refuse::Stopped::Refusing { backlog }) => {
                        self.refused.insert(l.inode(), backlog);
                    }
                    Ok(refuse::Stopped::AlreadyRefusing) => {}
                    Ok(refuse::Stopped::NotRefusable) => {
                        if l.unix_path().is_some() && !unix.contains(&l.local_display()) {
                            unix.push(l.local_display());
                        }
                    }
                    Err(source) => errors.push(ListenError::Io {
                        about: "stop accepting on",
                        addr: l.local_display(),
                        source,
                    }),
                }
            }
        }
        (unix, errors)
    }

    /// Whether the TCP listeners refuse new connections ([`Sockets::refuse`]).
    pub fn is_refusing(&self) -> bool {
        !self.refused.is_empty()
    }

    /// Whether the socket with this inode refuses new connections.
    pub fn is_refused(&self, inode: u64) -> bool {
        self.refused.contains_key(&inode)
    }

    /// Puts every refusing listener back in LISTEN, on the same sockets, and steers again.
    ///
    /// The kernel puts a socket in its group's array when it starts listening, so the
    /// seats listen again in the order of `order`, which then still mirrors the array; the
    /// program is attached after, since the group may have been freed with its program
    /// once no socket of it listened. Until then the kernel picks by hash: with one seat
    /// open, as when no generation runs, that is the steered-to one.
    pub fn accept_again(&mut self) -> Result<(), ListenError> {
        if self.refused.is_empty() {
            return Ok(());
        }
        let mut first_error = None;
        for seat in self.order.clone() {
            for l in self.seats.get(&seat).into_iter().flatten() {
                let Some(backlog) = self.refused.get(&l.inode()).copied() else {
                    continue;
                };
                match refuse::accept_again(l, backlog) {
                    Ok(()) => {
                        self.refused.remove(&l.inode());
                    }
                    Err(source) => {
                        first_error.get_or_insert(ListenError::Io {
                            about: "listen again on",
                            addr: l.local_display(),
                            source,
                        });
                    }
                }
            }
        }
        if self.any_steered() {
            self.attach(self.targets())?;
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Duplicates of a seat's steered sockets, for a task that watches their queues.
    pub fn steered_sockets(&self, seat: Seat) -> Vec<Listener> {
        self.seat(seat)
            .iter()
            .enumerate()
            .filter(|(i, _)| self.steered[*i])
            .filter_map(|(_, l)| l.try_clone().ok())
            .collect()
    }
}

/// A new socket in `first`'s group: the same address, options and backlog.
fn open_member(first: &Listener) -> Result<Listener, ListenError> {
    let (addr, kind) = match first.local_addr() {
        ListenAddr::Tcp(addr) => (addr, Type::STREAM),
        ListenAddr::Udp(addr) => (addr, Type::DGRAM),
        _ => {
            return Err(ListenError::Io {
                about: "steer",
                addr: first.local_display(),
                source: io::Error::from(io::ErrorKind::Unsupported),
            });
        }
    };
    let dual_stack = match addr {
        std::net::SocketAddr::V6(_) => first.socket().only_v6().ok().map(|v6only| !v6only),
        std::net::SocketAddr::V4(_) => None,
    };
    if kind == Type::DGRAM {
        let socket = bind_inet(*addr, kind, dual_stack, true)?;
        return Listener::from_socket(socket, first.spec().clone(), None);
    }
    let socket = bind_tcp(*addr, dual_stack, true)?;
    listen(&socket, backlog_for(first.spec()), &addr.to_string())?;
    Listener::from_socket(socket, first.spec().clone(), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::{ListenerSpec, TcpSharing, open_listeners_with};
    use std::net::TcpStream;

    fn group() -> Sockets {
        let spec: ListenerSpec = "127.0.0.1:0".parse().expect("spec");
        let listeners = open_listeners_with(&[spec], TcpSharing::ReusePort).expect("open");
        Sockets::new(listeners).expect("steered group")
    }

    fn port(s: &Sockets) -> u16 {
        match s.seat(s.steered_to())[0].local_addr() {
            ListenAddr::Tcp(a) => a.port(),
            other => panic!("not tcp: {other}"),
        }
    }

    /// Connects once and says which open seat's queue got the connection.
    fn lands_on(s: &Sockets) -> Seat {
        let before: Vec<(Seat, u32)> = s
            .open_seats()
            .map(|(seat, l)| (seat, accept_queue(&l[0]).expect("queue")))
            .collect();
        let _c = TcpStream::connect(("127.0.0.1", port(s))).expect("connect");
        // connect() returns at the SYN-ACK; the server queues the connection when the last
        // ACK is processed, which a loaded machine may do a moment later: look again for
        // a while (bounded).
        let mut grew: Vec<Seat> = Vec::new();
        for _ in 0..200 {
            grew = before
                .iter()
                .filter(|(seat, n)| accept_queue(&s.seat(*seat)[0]).expect("queue") > *n)
                .map(|(seat, _)| *seat)
                .collect();
            if !grew.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(grew.len(), 1, "one queue grows: {grew:?}");
        grew[0]
    }

    #[test]
    fn new_connections_go_to_the_steered_seat_only() {
        if kernel_support().is_err() {
            eprintln!("skipped: no steered groups here");
            return;
        }
        let mut s = group();
        assert!(s.any_steered());
        let new = s.open_seat().expect("seat");
        for _ in 0..5 {
            assert_eq!(lands_on(&s), 1, "the new seat is not steered to yet");
        }
        s.steer(new).expect("steer");
        for _ in 0..5 {
            assert_eq!(lands_on(&s), new);
        }
    }

    #[test]
    fn closing_seats_keeps_the_steered_index_right() {
        if kernel_support().is_err() {
            eprintln!("skipped: no steered groups here");
            return;
        }
        let mut s = group();
        let a = s.open_seat().expect("seat");
        let b = s.open_seat().expect("seat");
        s.steer(b).expect("steer");
        // [1, a, b]: closing 1 or a would move b while another socket stays.
        s.retire(1);
        s.retire(a);
        assert_eq!(s.open_seats().count(), 3, "kept open while unsafe");
        assert_eq!(lands_on(&s), b);
        // [1, a, b, c]: b is no longer last; 1 closes ([c, a, b]), a waits again.
        let c = s.open_seat().expect("seat");
        assert_eq!(lands_on(&s), b);
        s.steer(c).expect("steer");
        assert_eq!(lands_on(&s), c);
        s.retire(b);
        assert_eq!(
            s.open_seats().map(|(seat, _)| seat).collect::<Vec<_>>(),
            [c]
        );
        assert_eq!(lands_on(&s), c);
        // The flip: [c, d], then c goes; and a rollback: [d, e], e goes.
        let d = s.open_seat().expect("seat");
        s.steer(d).expect("steer");
        s.retire(c);
        assert_eq!(lands_on(&s), d);
        let e = s.open_seat().expect("seat");
        assert_eq!(lands_on(&s), d);
        s.retire(e);
        assert_eq!(
            s.open_seats().map(|(seat, _)| seat).collect::<Vec<_>>(),
            [d]
        );
        assert_eq!(lands_on(&s), d);
    }

    #[test]
    fn a_refusing_group_accepts_again_on_the_same_sockets_and_stays_steered() {
        if kernel_support().is_err() {
            eprintln!("skipped: no steered groups here");
            return;
        }
        let mut s = group();
        let a = s.open_seat().expect("seat");
        let b = s.open_seat().expect("seat");
        s.steer(a).expect("steer");
        let inodes: Vec<u64> = s.open_seats().map(|(_, l)| l[0].inode()).collect();
        let (unix, errors) = s.refuse();
        assert!(unix.is_empty() && errors.is_empty(), "{errors:?}");
        assert!(s.is_refusing());
        let refused = TcpStream::connect(("127.0.0.1", port(&s)))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
        assert!(refused, "no socket of the group takes it");
        // A seat closed meanwhile: [1, a, b] becomes [b, a]; the index of `a` is kept.
        s.retire(1);
        s.accept_again().expect("accept again");
        assert!(!s.is_refusing());
        let now: Vec<u64> = s.open_seats().map(|(_, l)| l[0].inode()).collect();
        assert!(now.iter().all(|i| inodes.contains(i)), "the same sockets");
        for _ in 0..5 {
            assert_eq!(lands_on(&s), a);
        }
        s.steer(b).expect("steer");
        assert_eq!(lands_on(&s), b);
    }

    #[test]
    fn resumed_sockets_that_refuse_are_known_as_refusing_and_accept_again() {
        if kernel_support().is_err() {
            eprintln!("skipped: no steered groups here");
            return;
        }
        let mut s = group();
        s.refuse();
        // What a re-executed supervisor gets: the same sockets, and nothing else.
        let kept: Vec<Listener> = s
            .seat(1)
            .iter()
            .map(|l| l.try_clone().expect("dup"))
            .collect();
        let mut resumed = Sockets::resume(kept, vec![true], 1, true).expect("resume");
        assert!(resumed.is_refusing());
        drop(s);
        resumed.accept_again().expect("accept again");
        assert_eq!(lands_on(&resumed), 1);
    }

    #[test]
    fn the_steered_seat_is_never_closed() {
        if kernel_support().is_err() {
            eprintln!("skipped: no steered groups here");
            return;
        }
        let mut s = group();
        s.retire(1);
        assert_eq!(s.open_seats().count(), 1);
        assert_eq!(lands_on(&s), 1);
    }

    fn udp_group() -> Sockets {
        let spec: ListenerSpec = "udp://127.0.0.1:0".parse().expect("spec");
        let listeners = open_listeners_with(&[spec], TcpSharing::ReusePort).expect("open");
        Sockets::new(listeners).expect("steered group")
    }

    /// Sends one datagram and says which open seat's queue got it. Loopback delivers a
    /// datagram after `send_to` may have returned, so this waits (with a deadline) until
    /// one queue grows.
    fn datagram_lands_on(s: &Sockets, client: &std::net::UdpSocket) -> Seat {
        let ListenAddr::Udp(addr) = s.seat(s.steered_to())[0].local_addr() else {
            panic!("not udp");
        };
        let before: Vec<(Seat, u32)> = s
            .open_seats()
            .map(|(seat, l)| (seat, datagram_queue(&l[0]).expect("queue")))
            .collect();
        client.send_to(b"x", addr).expect("send");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let grew: Vec<Seat> = before
                .iter()
                .filter(|(seat, n)| datagram_queue(&s.seat(*seat)[0]).expect("queue") > *n)
                .map(|(seat, _)| *seat)
                .collect();
            if !grew.is_empty() {
                assert_eq!(grew.len(), 1, "one queue grows: {grew:?}");
                return grew[0];
            }
            assert!(std::time::Instant::now() < deadline, "no queue grew");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn datagrams_go_to_the_steered_seat_only() {
        if kernel_support_udp().is_err() {
            eprintln!("skipped: no steered UDP groups here");
            return;
        }
        let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("client");
        let mut s = udp_group();
        assert!(s.any_steered() && s.is_steered(0));
        let new = s.open_seat().expect("seat");
        assert_ne!(s.seat(new)[0].inode(), s.seat(1)[0].inode());
        for _ in 0..5 {
            assert_eq!(datagram_lands_on(&s, &client), 1, "not steered to yet");
        }
        s.steer(new).expect("steer");
        for _ in 0..5 {
            assert_eq!(datagram_lands_on(&s, &client), new);
        }
        s.retire(1);
        assert_eq!(s.open_seats().count(), 1);
        assert_eq!(datagram_lands_on(&s, &client), new);
    }

    #[test]
    fn a_datagram_queue_is_empty_only_when_nothing_waits() {
        let s = udp_group();
        let socket = &s.seat(1)[0];
        assert_eq!(queued(socket).expect("queue"), 0);
        let ListenAddr::Udp(addr) = socket.local_addr() else {
            panic!("not udp");
        };
        let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("client");
        // An empty datagram, which SIOCINQ would report as 0 bytes.
        client.send_to(b"", addr).expect("send");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while queued(socket).expect("queue") == 0 {
            assert!(std::time::Instant::now() < deadline, "never queued");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut buf = [0u8; 16];
        let reader: std::net::UdpSocket = socket.socket().try_clone().expect("dup").into();
        let (n, _) = reader.recv_from(&mut buf).expect("recv");
        assert_eq!(n, 0);
        assert_eq!(queued(socket).expect("queue"), 0, "read: nothing waits");
    }

    #[test]
    fn shared_listeners_give_every_seat_the_same_socket() {
        let spec: ListenerSpec = "127.0.0.1:0".parse().expect("spec");
        let listeners = open_listeners_with(&[spec], TcpSharing::Alone).expect("open");
        let mut s = Sockets::new(listeners).expect("sockets");
        assert!(!s.any_steered() && !s.is_steered(0));
        let new = s.open_seat().expect("seat");
        assert_eq!(s.seat(new)[0].inode(), s.seat(1)[0].inode());
        s.steer(new).expect("nothing to attach");
        s.retire(1);
        assert_eq!(s.open_seats().count(), 1);
    }

    /// Runs a steering program the way the kernel would for one random number: only the
    /// instructions [`program`] emits.
    fn run(code: &[libc::sock_filter], random: u32) -> u32 {
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let op = code[pc];
            let (class, k) = (u32::from(op.code), op.k);
            match class {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => a = random,
                c if c == libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K => a %= k,
                c if c == libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K => {
                    pc += usize::from(if a >= k { op.jt } else { op.jf });
                }
                c if c == libc::BPF_RET | libc::BPF_K => return k,
                other => panic!("unexpected instruction {other:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn each_target_gets_a_share_of_the_random_numbers_as_wide_as_its_weight() {
        assert_eq!(run(&program(&[(4, 7)]).expect("program"), 123), 4);
        let code = program(&[(2, 3), (0, 1), (5, 2)]).expect("program");
        let mut shares = BTreeMap::new();
        for random in 0..6 * 100 {
            *shares.entry(run(&code, random)).or_insert(0) += 1;
        }
        assert_eq!(shares, BTreeMap::from([(2, 300), (0, 100), (5, 200)]));
        assert!(program(&[]).is_err());
        assert!(
            program(&[(0, u32::MAX), (1, 1)]).is_err(),
            "the total overflows"
        );
    }

    /// Accepts every connection waiting in an open seat's queue, so that none fills.
    fn drain(s: &Sockets) {
        for (_, l) in s.open_seats() {
            for _ in 0..accept_queue(&l[0]).expect("queue") {
                l[0].socket().accept().expect("accept");
            }
        }
    }

    /// Connects `n` times and counts the connections each seat got.
    fn spread(s: &Sockets, n: usize) -> BTreeMap<Seat, usize> {
        let mut counts = BTreeMap::new();
        for i in 0..n {
            *counts.entry(lands_on(s)).or_insert(0) += 1;
            if i % 64 == 63 {
                drain(s);
            }
        }
        drain(s);
        counts
    }

    #[test]
    fn weighted_targets_share_new_connections_by_weight() {
        if kernel_support().is_err() {
            eprintln!("skipped: no steered groups here");
            return;
        }
        let mut s = group();
        let new = s.open_seat().expect("seat");
        s.steer_weighted(&[(1, 1), (new, 3)]).expect("steer");
        assert_eq!(s.steered_to(), 1, "the first listed is the primary");
        assert_eq!(s.targets(), [(1, 1), (new, 3)]);
        let counts = spread(&s, 400);
        let (old, heavy) = (counts.get(&1).copied(), counts.get(&new).copied());
        assert!(old.is_some_and(|n| n > 0), "{counts:?}");
        let heavy = heavy.unwrap_or(0);
        assert!(
            (220..=380).contains(&heavy),
            "3:1 gives the new seat ~300: {counts:?}"
        );
        s.steer(new).expect("steer");
        assert_eq!(s.targets(), [(new, 1)]);
        assert_eq!(spread(&s, 50), BTreeMap::from([(new, 50)]));
    }

    #[test]
    fn a_seat_left_out_of_the_targets_gets_no_connection() {
        if kernel_support().is_err() {
            eprintln!("skipped: no steered groups here");
            return;
        }
        let mut s = group();
        let a = s.open_seat().expect("seat");
        let b = s.open_seat().expect("seat");
        s.steer_weighted(&[(a, 1), (1, 0), (b, 1)]).expect("steer");
        assert_eq!(s.targets(), [(a, 1), (b, 1)]);
        assert!(!s.is_target(1) && s.is_target(a) && s.is_target(b));
        let counts = spread(&s, 200);
        assert_eq!(counts.get(&1), None, "{counts:?}");
        assert!(counts.get(&a).is_some_and(|n| *n > 0), "{counts:?}");
        assert!(counts.get(&b).is_some_and(|n| *n > 0), "{counts:?}");
    }

    /// A small fixed-seed generator (xorshift64), so a failing sequence can be replayed.
    struct Dice(u64);

    impl Dice {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    #[test]
    fn no_order_of_opening_retiring_and_steering_sends_a_connection_off_the_targets() {
        if kernel_support().is_err() {
            eprintln!("skipped: no steered groups here");
            return;
        }
        let mut dice = Dice(0x5eed_f00d_5ea7);
        for round in 0..40 {
            // Three seats, two targeted and the third retired.
            let mut s = group();
            let a = s.open_seat().expect("seat");
            let b = s.open_seat().expect("seat");
            let third = [1, a, b][dice.below(3)];
            let targets: Vec<(Seat, u32)> = [1, a, b]
                .into_iter()
                .filter(|seat| *seat != third)
                .zip([2, 1])
                .collect();
            s.steer_weighted(&targets).expect("steer");
            s.retire(third);
            s.hold_reattach = true;
            let mut log = vec![format!("targets {:?}, retired {third}", s.targets())];
            for _ in 0..30 {
                let open: Vec<Seat> = s.open_seats().map(|(seat, _)| seat).collect();
                let live: Vec<Seat> = open
                    .iter()
                    .copied()
                    .filter(|seat| !s.retired.contains(seat))
                    .collect();
                match dice.below(4) {
                    0 if open.len() < 6 => {
                        let seat = s.open_seat().expect("seat");
                        log.push(format!("open {seat}"));
                    }
                    0 | 1 => {
                        let idle: Vec<Seat> =
                            live.iter().copied().filter(|x| !s.is_target(*x)).collect();
                        if let Some(seat) = idle.get(dice.below(idle.len().max(1))) {
                            s.retire(*seat);
                            log.push(format!("retire {seat}"));
                        }
                    }
                    _ => {
                        // Weights 0 to 3 for each live seat, at least one positive.
                        let mut targets: Vec<(Seat, u32)> = live
                            .iter()
                            .map(|seat| (*seat, dice.below(4) as u32))
                            .collect();
                        let first = dice.below(targets.len());
                        targets[first].1 = targets[first].1.max(1);
                        targets.rotate_left(first);
                        s.steer_weighted(&targets).expect("steer");
                        log.push(format!("steer {targets:?}"));
                    }
                }
                log.push(format!("order {:?}", s.order));
                let mut sorted = s.order.clone();
                sorted.sort_unstable();
                let open: Vec<Seat> = s.open_seats().map(|(seat, _)| seat).collect();
                assert_eq!(sorted, open, "round {round}: {log:#?}");
                // Until the program is replaced after a close, and after.
                for window in [true, false] {
                    for _ in 0..8 {
                        let seat = lands_on(&s);
                        assert!(
                            s.is_target(seat),
                            "round {round}, window {window}: to {seat}: {log:#?}"
                        );
                    }
                    s.reattach().expect("reattach");
                }
                drain(&s);
            }
        }
    }

    #[test]
    fn datagrams_go_to_the_primary_of_several_targets_only() {
        if kernel_support_udp().is_err() {
            eprintln!("skipped: no steered UDP groups here");
            return;
        }
        let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("client");
        let mut s = udp_group();
        let new = s.open_seat().expect("seat");
        s.steer_weighted(&[(1, 1), (new, 3)]).expect("steer");
        for _ in 0..20 {
            assert_eq!(datagram_lands_on(&s, &client), 1);
        }
        s.steer_weighted(&[(new, 1), (1, 3)]).expect("steer");
        for _ in 0..20 {
            assert_eq!(datagram_lands_on(&s, &client), new);
        }
    }

    #[test]
    fn a_refused_steer_leaves_the_previous_steering_in_place() {
        if kernel_support().is_err() {
            eprintln!("skipped: no steered groups here");
            return;
        }
        let mut s = group();
        let a = s.open_seat().expect("seat");
        let gone = s.open_seat().expect("seat");
        s.retire(gone);
        assert!(!s.has_seat(gone), "last in the array: closed at once");
        s.steer_weighted(&[(1, 1), (a, 1)]).expect("steer");
        let refused: [&[(Seat, u32)]; 4] = [
            &[],
            &[(a, 0), (1, 0)],
            &[(a, 1), (gone, 1)],
            &[(a, 1), (a, 2)],
        ];
        for targets in refused {
            assert!(s.steer_weighted(targets).is_err(), "{targets:?}");
            assert_eq!(s.targets(), [(1, 1), (a, 1)], "after {targets:?}");
            assert_eq!(s.steered_to(), 1);
        }
        let counts = spread(&s, 100);
        assert!(counts.get(&1).is_some_and(|n| *n > 0), "{counts:?}");
        assert!(counts.get(&a).is_some_and(|n| *n > 0), "{counts:?}");
    }
}

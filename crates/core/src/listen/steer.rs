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
//! accepting. The program attached to the group (`SO_ATTACH_REUSEPORT_CBPF`) is a single
//! `ret #index`: the index of the socket that gets new connections. Attaching a new one
//! replaces the old atomically, which is how the supervisor steers.
//!
//! [`Sockets`] mirrors the kernel's array of each group, so it always knows the index of
//! the socket it steers to, and closes a seat only when that cannot send a connection
//! astray.
//!
//! UDP works the same way: the kernel runs the group's program for every datagram that
//! arrives (`SO_ATTACH_REUSEPORT_CBPF` applies to UDP groups too), and keeps a UDP
//! group's array in the order the sockets were bound, which is when a seat opens its
//! socket. A datagram queued on the old generation's socket is lost if that socket
//! closes unread, so the old generation is asked to stop only once its socket's receive
//! queue is empty ([`queued`]).
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
/// one loopback port with `SO_REUSEPORT`, and a steering program attached to them. The
/// error says what failed, for the one log line of the fallback.
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
    steer_group(&second, 1)
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

/// Attaches `ret #index` to the group `socket` belongs to, replacing the program there.
fn steer_group(socket: &Socket, index: usize) -> io::Result<()> {
    let k = u32::try_from(index).map_err(|_| io::Error::other("too many sockets"))?;
    let mut code = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k,
    }];
    let program = libc::sock_fprog {
        len: 1,
        filter: code.as_mut_ptr(),
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
/// (`Vec::swap_remove` makes the same move), so the index of the steered-to socket is
/// always known. When a close moves the steered-to socket, the program is replaced at
/// once, but until then its old index points past the end of the array, where the kernel
/// picks a socket by hash. That is harmless only when the steered-to socket is then alone
/// in the group, so a seat whose close would move it while other sockets stay is kept
/// open (it gets no connection: the program never names it) until a later open or close
/// makes its close safe. In a flip there are two seats, and both orders are safe.
#[derive(Debug)]
pub(crate) struct Sockets {
    /// Per listener, in config order: whether it is steered.
    steered: Vec<bool>,
    seats: BTreeMap<Seat, Vec<Listener>>,
    /// The seats in the order of the kernel's arrays (the same in every steered group,
    /// since seats join and leave all groups at once).
    order: Vec<Seat>,
    target: Seat,
    next: Seat,
    /// Seats no generation uses any more, closed as soon as that is safe.
    retired: BTreeSet<Seat>,
    /// While the TCP listeners refuse new connections (`restart.refuse_after`): the
    /// sockets that stopped listening, by inode, with the backlog to listen with again.
    refused: BTreeMap<u64, i32>,
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
            target: 1,
            next: 2,
            retired: BTreeSet::new(),
            refused: BTreeMap::new(),
        };
        if sockets.any_steered() {
            sockets.attach(1)?;
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
            target: seat,
            next: seat + 1,
            retired: BTreeSet::new(),
            refused,
        };
        if alone && sockets.any_steered() {
            sockets.attach(seat)?;
        }
        Ok(sockets)
    }

    /// Attaches the program again for the seat new connections go to, once the sockets no
    /// seat of ours holds have left the groups (see [`Sockets::resume`]).
    pub fn reattach(&self) -> Result<(), ListenError> {
        if self.any_steered() {
            self.attach(self.target)?;
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

    /// The seat new connections go to.
    pub fn steered_to(&self) -> Seat {
        self.target
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
        let current = self.seat(self.target);
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
        // The steered-to socket is no longer last: retired seats may be safe to close.
        self.close_retired();
        Ok(seat)
    }

    /// Sends new connections to `seat` from now on.
    pub fn steer(&mut self, seat: Seat) -> Result<(), ListenError> {
        if self.any_steered() {
            self.attach(seat)?;
        }
        self.target = seat;
        self.close_retired();
        Ok(())
    }

    fn attach(&self, seat: Seat) -> Result<(), ListenError> {
        let index = self.index(seat).ok_or_else(|| ListenError::Io {
            about: "steer to a closed seat of",
            addr: String::new(),
            source: io::Error::from(io::ErrorKind::NotFound),
        })?;
        for (i, l) in self.seat(seat).iter().enumerate() {
            // A socket that does not listen is in no group: it gets the program when it
            // listens again (`accept_again`).
            if self.steered[i] && !self.refused.contains_key(&l.inode()) {
                steer_group(l.socket(), index).map_err(|source| ListenError::Io {
                    about: "steer",
                    addr: l.local_display(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    fn index(&self, seat: Seat) -> Option<usize> {
        self.order.iter().position(|s| *s == seat)
    }

    /// No generation uses `seat` any more: close it as soon as that is safe. The seat new
    /// connections go to is never closed (a respawn gets it).
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
                .filter(|seat| *seat != self.target && self.safe_to_close(*seat))
                .min_by_key(|seat| self.index(*seat));
            let Some(seat) = closable else { return };
            self.retired.remove(&seat);
            self.seats.remove(&seat);
            let seats = &self.seats;
            self.refused
                .retain(|inode, _| seats.values().flatten().any(|l| l.inode() == *inode));
            let target_moves = self.order.last() == Some(&self.target);
            if let Some(i) = self.index(seat) {
                self.order.swap_remove(i);
            }
            if target_moves && self.any_steered() {
                if let Err(e) = self.attach(self.target) {
                    tracing::error!(error = %e, "cannot steer after closing a seat");
                }
            }
            tracing::debug!(seat, open = ?self.order, "closed a seat's sockets");
        }
    }

    fn safe_to_close(&self, seat: Seat) -> bool {
        let last = self.order.last().copied();
        !self.any_steered()
            || last == Some(seat)
            || last != Some(self.target)
            || self.order.len() == 2
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
            self.attach(self.target)?;
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stand-in until weighted steering lands: steers to the primary target only.
    pub fn steer_weighted(&mut self, targets: &[(Seat, u32)]) -> Result<(), ListenError> {
        let primary = targets
            .iter()
            .find(|(_, w)| *w > 0)
            .map(|(s, _)| *s)
            .unwrap_or(self.target);
        self.steer(primary)
    }

    /// Stand-in: whether `seat` gets new connections.
    pub fn is_target(&self, seat: Seat) -> bool {
        seat == self.target
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
        let grew: Vec<Seat> = before
            .iter()
            .filter(|(seat, n)| accept_queue(&s.seat(*seat)[0]).expect("queue") > *n)
            .map(|(seat, _)| *seat)
            .collect();
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
}

//! A fake child for the owner's tests (watchexec's `TestChild` is the model): no fork.
//! Each generation follows a [`Script`]; everything done to it is recorded, and so are
//! the sockets it received (real ones when the test gives the owner listeners).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::super::child::{BoxFuture, ChildProcess, Children, SpawnRequest};
use super::super::output::OutputLog;
use crate::handoff::intercept::InterceptCounts;
use crate::proto::ExitInfo;
use crate::ready::ReadyCheck;
use crate::signal::Signal;

/// How a fake generation answers its readiness checks.
#[derive(Debug, Clone)]
pub enum Readiness {
    Ready,
    After(Duration),
    Fails(&'static str),
    Never,
}

/// What a fake generation does.
#[derive(Debug, Clone)]
pub struct Script {
    /// `Err`: the spawn itself fails with this reason.
    pub spawn: Result<(), &'static str>,
    pub readiness: Readiness,
    /// It exits on its own this long after its start.
    pub exits_after: Option<(Duration, ExitInfo)>,
    /// It never reached its program, for this reason.
    pub exec_failure: Option<&'static str>,
    /// How it ends when sent SIGTERM (its stop signal): `None` ignores it.
    pub on_term: Option<ExitInfo>,
    /// A connection of it holds bytes it has not read, until [`FakeChild::read_all`].
    pub unread: bool,
    /// The lines it prints (kept only when the spawn request asks for its output).
    pub prints: &'static [&'static str],
}

impl Default for Script {
    fn default() -> Script {
        Script {
            spawn: Ok(()),
            readiness: Readiness::Ready,
            exits_after: None,
            exec_failure: None,
            on_term: Some(ExitInfo::Code { code: 0 }),
            unread: false,
            prints: &[],
        }
    }
}

/// What was done to a fake generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    Signalled(Signal),
    Killed,
    /// Its leftovers were ended and it was reaped.
    Ended,
}

/// The fake's pid for a generation.
pub fn pid_of(generation: u64) -> i32 {
    1000 + generation as i32
}

/// Starts fake generations, by the script given for each (the default otherwise).
#[derive(Debug, Clone, Default)]
pub struct FakeChildren {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    scripts: HashMap<u64, Script>,
    children: HashMap<u64, Arc<FakeChild>>,
    record: Vec<(u64, Done)>,
    /// The inodes of the sockets each generation received, in fd order.
    received: HashMap<u64, Vec<u64>>,
    /// The sockets each generation holds, as a real one holds its fds until it has ended.
    held: HashMap<u64, Vec<crate::listen::Listener>>,
    /// Whether each generation's output was asked to be kept.
    kept_output: HashMap<u64, bool>,
}

impl FakeChildren {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    /// Fake children whose generation `generation` follows `script`.
    pub fn scripted(generation: u64, script: Script) -> FakeChildren {
        let fake = FakeChildren::default();
        fake.script(generation, script);
        fake
    }

    /// Generation `generation` will follow `script`.
    pub fn script(&self, generation: u64, script: Script) {
        self.lock().scripts.insert(generation, script);
    }

    /// The fake generation `generation`, once spawned.
    pub fn child(&self, generation: u64) -> Arc<FakeChild> {
        self.lock().children[&generation].clone()
    }

    /// Everything done to the generations, in order.
    pub fn record(&self) -> Vec<(u64, Done)> {
        self.lock().record.clone()
    }

    /// The inodes of the sockets generation `generation` received.
    pub fn received(&self, generation: u64) -> Vec<u64> {
        self.lock().received[&generation].clone()
    }

    /// What waits on generation `generation`'s sockets: connections in the accept
    /// queues of TCP ones, bytes of queued datagrams on UDP ones.
    pub fn queued(&self, generation: u64) -> u32 {
        self.lock().held[&generation]
            .iter()
            .map(|l| crate::listen::steer::queued(l).expect("queue"))
            .sum()
    }

    /// Generation `generation` reads every datagram waiting on its UDP sockets.
    pub fn read_datagrams(&self, generation: u64) {
        use std::os::fd::AsRawFd;
        let inner = self.lock();
        for l in inner.held[&generation].iter().filter(|l| l.is_udp()) {
            let mut buf = [0u8; 2048];
            while crate::listen::steer::queued(l).expect("queue") > 0 {
                // SAFETY: recv into a buffer we own, of its length; MSG_DONTWAIT, so a
                // queue that just emptied returns EAGAIN instead of blocking.
                unsafe {
                    libc::recv(
                        l.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    );
                }
            }
        }
    }

    /// Generation `generation` accepts (and closes) every connection waiting for it.
    pub fn accept_all(&self, generation: u64) {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        while self.queued(generation) > 0 {
            let inner = self.lock();
            for l in &inner.held[&generation] {
                if crate::listen::steer::accept_queue(l).expect("accept queue") > 0 {
                    // SAFETY: accept on a listening socket we hold; a queued connection
                    // is there, so it does not block. The fd is owned at once.
                    let fd = unsafe {
                        libc::accept(l.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut())
                    };
                    assert!(fd >= 0, "accept: {}", std::io::Error::last_os_error());
                    // SAFETY: a new fd that nothing else owns.
                    drop(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
    }

    /// Whether generation `generation`'s output was asked to be kept.
    pub fn kept_output(&self, generation: u64) -> bool {
        self.lock().kept_output[&generation]
    }

    pub fn spawned(&self) -> Vec<u64> {
        let mut g: Vec<u64> = self.lock().children.keys().copied().collect();
        g.sort();
        g
    }
}

impl Children for FakeChildren {
    fn spawn(&self, request: SpawnRequest<'_>) -> Result<Arc<dyn ChildProcess>, String> {
        let generation = request.generation;
        let script = self
            .lock()
            .scripts
            .get(&generation)
            .cloned()
            .unwrap_or_default();
        script.spawn.map_err(str::to_owned)?;
        let inodes = request.listeners.iter().map(|l| l.inode()).collect();
        let held = request
            .listeners
            .iter()
            .map(|l| l.try_clone().expect("duplicate a socket"))
            .collect();
        let mut inner = self.lock();
        inner.received.insert(generation, inodes);
        inner.held.insert(generation, held);
        drop(inner);
        let (exit, _) = watch::channel(None);
        // As the real interception: counts for the sockets the generation received.
        let intercept = request
            .config
            .intercept_binds
            .then(|| Arc::new(InterceptCounts::new(request.listeners)));
        let output = request.keep_output.then(|| {
            let tail = Arc::new(OutputLog::new(generation, 0));
            for line in script.prints {
                tail.push(crate::proto::LogStream::Stdout, line.as_bytes());
            }
            tail
        });
        self.lock()
            .kept_output
            .insert(generation, request.keep_output);
        let child = Arc::new(FakeChild {
            output,
            generation,
            intercept,
            unread: std::sync::atomic::AtomicBool::new(script.unread),
            exit,
            script: script.clone(),
            owner: self.clone(),
        });
        if let Some((after, status)) = script.exits_after {
            let child = child.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                child.exit(status);
            });
        }
        self.lock().children.insert(generation, child.clone());
        Ok(child)
    }

    fn containment(&self) -> String {
        "fake".to_owned()
    }
}

#[derive(Debug)]
pub struct FakeChild {
    output: Option<Arc<OutputLog>>,
    generation: u64,
    /// With `intercept_binds`: where the test counts the answers to its binds.
    intercept: Option<Arc<InterceptCounts>>,
    unread: std::sync::atomic::AtomicBool,
    exit: watch::Sender<Option<ExitInfo>>,
    script: Script,
    owner: FakeChildren,
}

impl FakeChild {
    /// The main process exits with `status` (the first exit counts).
    pub fn exit(&self, status: ExitInfo) {
        self.exit.send_if_modified(|s| {
            let first = s.is_none();
            if first {
                *s = Some(status);
            }
            first
        });
    }

    /// The counts of its interception (its config has `intercept_binds`).
    pub fn intercept(&self) -> Arc<InterceptCounts> {
        self.intercept
            .clone()
            .expect("started with intercept_binds")
    }

    /// It reads what its connections held.
    pub fn read_all(&self) {
        self.unread
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    fn note(&self, done: Done) {
        self.owner.lock().record.push((self.generation, done));
    }
}

impl ChildProcess for FakeChild {
    fn pid(&self) -> i32 {
        pid_of(self.generation)
    }

    fn spawned_at(&self) -> Instant {
        Instant::now()
    }

    fn signal(&self, signal: Signal) -> std::io::Result<()> {
        if self.exit.borrow().is_some() {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        self.note(Done::Signalled(signal));
        if let (Signal::Terminate, Some(status)) = (signal, self.script.on_term) {
            self.exit(status);
        }
        Ok(())
    }

    fn kill(&self) {
        self.note(Done::Killed);
        self.exit(ExitInfo::Signal { signal: 9 });
    }

    fn wait_exit(&self) -> BoxFuture<'_, ExitInfo> {
        let mut exit = self.exit.subscribe();
        Box::pin(async move {
            match exit.wait_for(|s| s.is_some()).await {
                Ok(s) => s.unwrap_or(ExitInfo::Code { code: -1 }),
                Err(_) => ExitInfo::Code { code: -1 },
            }
        })
    }

    fn end_leftovers(&self, _live: Vec<i32>) -> BoxFuture<'_, ()> {
        self.owner.lock().held.remove(&self.generation);
        Box::pin(async {})
    }

    fn reap(&self) -> BoxFuture<'_, ()> {
        self.note(Done::Ended);
        Box::pin(async {})
    }

    fn wait_ready<'a>(
        &'a self,
        _checks: &'a [ReadyCheck],
    ) -> BoxFuture<'a, Result<String, String>> {
        let readiness = self.script.readiness.clone();
        Box::pin(async move {
            match readiness {
                Readiness::Ready => Ok("fake evidence".to_owned()),
                Readiness::After(d) => {
                    tokio::time::sleep(d).await;
                    Ok("fake evidence".to_owned())
                }
                Readiness::Fails(why) => Err(why.to_owned()),
                Readiness::Never => std::future::pending().await,
            }
        })
    }

    fn not_ready_detail(&self, _checks: &[ReadyCheck]) -> String {
        "; fake saw nothing".to_owned()
    }

    fn exec_failure(&self) -> Option<String> {
        self.script.exec_failure.map(str::to_owned)
    }

    fn end_idle_start(&self) {}

    fn release(&self) {}

    fn output(&self) -> Option<Arc<OutputLog>> {
        self.output.clone()
    }

    fn intercept_counts(&self) -> Option<Arc<InterceptCounts>> {
        self.intercept.clone()
    }

    fn unread_input(&self, _ports: Vec<u16>) -> BoxFuture<'_, bool> {
        let unread = self.unread.load(std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move { unread })
    }
}

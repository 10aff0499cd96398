//! The fd table behind `add_reader`/`add_writer`, on top of mio's registry.
//!
//! asyncio's reader and writer callbacks are level-triggered: a reader that leaves data unread is
//! called again on the next iteration. mio only registers edge-triggered, so these fds are
//! registered level-triggered with `epoll_ctl` directly, on mio's epoll instance with mio's token
//! layout: no re-arm after each event. An fd closed behind our back disappears from epoll by
//! itself; the table tolerates that (ENOENT on modify, EEXIST on add) the way a re-used fd number
//! needs.
//!
//! Transports register differently (`add_stream`): edge-triggered and never re-armed. Their
//! callbacks read and write until the kernel has nothing more (a short read, or `EAGAIN`), which
//! is what edge-triggering asks. The interest follows what the transport waits for (reading
//! unless paused; writing only while it has buffered data, or every acknowledgement would wake
//! the loop), and a `Wants` shared with the transport filters what was already reported.
//!
//! The native `sock_recv` registers a third way (`add_sock_reader`): edge-triggered, through
//! mio, under a tagged token. When the wait is over its reader goes, but the registration stays
//! in the poller, parked with a weak reference to the socket object that made it; that socket's
//! next wait finds it there and costs no system call, where unregistering and registering again
//! cost two per wait. A socket object that is still open names the file it named when it parked,
//! so its registration is still the kernel's. Anything else done with the fd (another socket
//! object with the same number, `add_reader`, a transport, `remove_reader`) treats the parked
//! registration as stale. An edge that arrives while parked finds no reader and takes the
//! registration out of the poller; the socket's next `sock_recv` tries `recv` before it waits,
//! so that data is not missed. The tag keeps the events of a parked registration whose file was
//! closed behind the loop's back (and lives on in a duplicate elsewhere, where it cannot be
//! removed) from reaching whatever later uses the same fd number.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use pyo3::prelude::*;
use pyo3::types::{PyWeakrefMethods, PyWeakrefReference};

use super::handle::Handle;
use crate::sys;

/// Which events a transport's fd wants delivered (see the module docs).
#[derive(Default)]
pub(crate) struct Wants {
    pub read: AtomicBool,
    pub write: AtomicBool,
    /// The peer closed its side (or the socket failed): reading must go on to EOF even after a
    /// short read, since no further edge will come.
    pub hangup: AtomicBool,
    /// TCP urgent data arrived: a read stops at its mark, short of what is waiting, so reading
    /// goes on until the kernel has nothing more (cleared then).
    pub urgent: AtomicBool,
}

#[derive(Default)]
pub(crate) struct Entry {
    pub reader: Option<Py<Handle>>,
    pub writer: Option<Py<Handle>>,
    /// Set for a transport's fd (see the module docs), with the interest it is registered for.
    edge: Option<(Arc<Wants>, Interest)>,
    /// Set while a `sock_recv` waits on the fd (see the module docs): a weak reference to the
    /// socket object that registered it.
    sock: Option<Py<PyWeakrefReference>>,
}

impl Entry {
    fn interest(&self) -> Option<Interest> {
        if let Some((_, interest)) = &self.edge {
            if self.reader.is_some() || self.writer.is_some() {
                return Some(*interest);
            }
        }
        match (self.reader.is_some(), self.writer.is_some()) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        }
    }

    fn mode(&self) -> Mode {
        if self.edge.is_some() {
            Mode::Edge
        } else if self.sock.is_some() {
            Mode::Sock
        } else {
            Mode::Level
        }
    }
}

/// The token bit of `sock_recv` registrations (see the module docs).
const SOCK_TAG: usize = 1 << (usize::BITS - 2);

pub(crate) fn token(fd: RawFd) -> Token {
    // Tokens are fd + 1 so that token 0 stays free for the waker.
    Token(fd as usize + 1)
}

fn sock_token(fd: RawFd) -> Token {
    Token(token(fd).0 | SOCK_TAG)
}

/// The fd an event's token names, and whether the token is a `sock_recv` registration's.
pub(crate) fn fd_of(token: Token) -> (RawFd, bool) {
    (((token.0 & !SOCK_TAG) - 1) as RawFd, token.0 & SOCK_TAG != 0)
}

/// The handles `IoTable::add` displaces: the same slot's, and a stale one of a closed fd.
pub(crate) type Displaced = (Option<Py<Handle>>, Option<Py<Handle>>);

#[derive(Default)]
pub(crate) struct IoTable {
    fds: HashMap<RawFd, Entry>,
    /// Fds whose `sock_recv` registration stays in the poller with nothing waiting, with a weak
    /// reference to the socket object that made it (see the module docs). Never also in `fds`.
    parked: HashMap<RawFd, Py<PyWeakrefReference>>,
}

/// How an fd is registered (see the module docs).
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Level,
    /// A transport's.
    Edge,
    /// A `sock_recv` wait's.
    Sock,
}

/// `EPOLL_CTL_MOD` (`modify`) or `EPOLL_CTL_ADD` of `fd` for `interest`: edge-triggered for
/// transports and `sock_recv` (through mio), level-triggered for plain readers and writers.
fn ctl(registry: &Registry, fd: RawFd, interest: Interest, modify: bool, mode: Mode) -> io::Result<()> {
    if mode != Mode::Level {
        let mut src = SourceFd(&fd);
        let token = if mode == Mode::Sock { sock_token(fd) } else { token(fd) };
        if modify {
            registry.reregister(&mut src, token, interest)
        } else {
            registry.register(&mut src, token, interest)
        }
    } else {
        let (read, write) = (interest.is_readable(), interest.is_writable());
        sys::epoll_ctl_level(registry.as_raw_fd(), modify, fd, read, write, token(fd).0 as u64)
    }
}

fn register(registry: &Registry, fd: RawFd, interest: Interest, known: bool, mode: Mode) -> io::Result<()> {
    match ctl(registry, fd, interest, known, mode) {
        Err(e) if known && e.raw_os_error() == Some(libc::ENOENT) => ctl(registry, fd, interest, false, mode),
        Err(e) if !known && e.raw_os_error() == Some(libc::EEXIST) => ctl(registry, fd, interest, true, mode),
        other => other,
    }
}

fn deregister(registry: &Registry, fd: RawFd) {
    // The fd may already be closed, which removed it from epoll; nothing else can fail here.
    let _ = registry.deregister(&mut SourceFd(&fd));
}

impl IoTable {
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// Installs `handle` as the reader (or writer) of `fd`, returning the handles it displaces:
    /// the one in the same slot, and the other slot's too when the kernel no longer knows the fd
    /// (it was closed without `remove_reader`/`remove_writer` and the number now names a new
    /// file, which must not inherit the old file's callback).
    pub fn add(&mut self, registry: &Registry, fd: RawFd, handle: Py<Handle>, write: bool) -> io::Result<Displaced> {
        let known = self.fds.contains_key(&fd) | self.parked.remove(&fd).is_some();
        let mut entry = self.fds.remove(&fd).unwrap_or_default();
        // A plain reader or writer on a transport's fd (the transport is closing, or was given
        // up): the fd becomes level-triggered; the transport's callbacks tolerate extra calls.
        // So does a `sock_recv` wait's reader.
        entry.edge = None;
        entry.sock = None;
        let old = if write {
            entry.writer.replace(handle)
        } else {
            entry.reader.replace(handle)
        };
        let interest = entry.interest().expect("an entry with a handle has an interest");
        let result = if known {
            match ctl(registry, fd, interest, true, Mode::Level) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let stale = if write {
                        entry.reader.take()
                    } else {
                        entry.writer.take()
                    };
                    let interest = entry.interest().expect("the new handle is still there");
                    ctl(registry, fd, interest, false, Mode::Level).map(|()| stale)
                }
                other => other.map(|()| None),
            }
        } else {
            register(registry, fd, interest, false, Mode::Level).map(|()| None)
        };
        match result {
            Ok(stale) => {
                self.fds.insert(fd, entry);
                Ok((old, stale))
            }
            Err(e) => {
                // Undo: keep whatever was registered before.
                if write {
                    entry.writer = old;
                } else {
                    entry.reader = old;
                }
                if entry.interest().is_some() {
                    self.fds.insert(fd, entry);
                } else {
                    deregister(registry, fd);
                }
                Err(e)
            }
        }
    }

    /// Installs a `sock_recv` wait's `handle` as the reader of `fd` (see the module docs).
    /// `registered` says that `unpark` found the socket's own registration still in the poller.
    /// When the fd already has a reader or writer, or is a transport's, the wait is a plain
    /// reader instead.
    pub fn add_sock_reader(
        &mut self,
        registry: &Registry,
        fd: RawFd,
        handle: Py<Handle>,
        owner: Py<PyWeakrefReference>,
        registered: bool,
    ) -> io::Result<Displaced> {
        if self.fds.contains_key(&fd) {
            return self.add(registry, fd, handle, false);
        }
        if !registered {
            register(registry, fd, Interest::READABLE, false, Mode::Sock)?;
        }
        let entry = Entry {
            reader: Some(handle),
            sock: Some(owner),
            ..Entry::default()
        };
        self.fds.insert(fd, entry);
        Ok((None, None))
    }

    /// Takes `fd`'s parked registration: the weak reference to its socket when `owner` is that
    /// socket (the registration is still in the poller), `None` when there is none or it is
    /// stale (it is forgotten).
    pub fn unpark(&mut self, py: Python<'_>, fd: RawFd, owner: &Bound<'_, PyAny>) -> Option<Py<PyWeakrefReference>> {
        let weak = self.parked.remove(&fd)?;
        let same = weak.bind(py).upgrade().is_some_and(|o| o.is(owner));
        same.then_some(weak)
    }

    /// After a `sock_recv` wait on `fd` got its data: removes its reader but leaves the
    /// registration in the poller for the socket's next wait (see the module docs). `None`, and
    /// nothing changed, when the fd is not (or no longer only) that wait's.
    pub fn park_sock_reader(&mut self, fd: RawFd) -> Option<Py<Handle>> {
        let entry = self.fds.get(&fd)?;
        if entry.sock.is_none() || entry.writer.is_some() {
            return None;
        }
        let entry = self.fds.remove(&fd)?;
        self.parked.insert(fd, entry.sock?);
        entry.reader
    }

    /// Removes `fd`'s parked registration from the poller (the socket reached EOF or failed,
    /// and is likely to be closed).
    pub fn forget_parked(&mut self, registry: &Registry, fd: RawFd) {
        if self.parked.remove(&fd).is_some() {
            deregister(registry, fd);
        }
    }

    /// Removes the reader (or writer) of `fd`, returning it.
    pub fn remove(&mut self, registry: &Registry, fd: RawFd, write: bool) -> Option<Py<Handle>> {
        self.forget_parked(registry, fd);
        let entry = self.fds.get_mut(&fd)?;
        let old = if write {
            entry.writer.take()
        } else {
            entry.reader.take()
        }?;
        if entry.edge.is_none() || entry.interest().is_none() {
            self.rearm(registry, fd);
        }
        Some(old)
    }

    /// Registers a transport's fd (see the module docs), returning the handles it displaces.
    pub fn add_stream(
        &mut self,
        registry: &Registry,
        fd: RawFd,
        reader: Py<Handle>,
        writer: Py<Handle>,
        wants: Arc<Wants>,
        interest: Interest,
    ) -> io::Result<Vec<Py<Handle>>> {
        let known = self.fds.contains_key(&fd) | self.parked.remove(&fd).is_some();
        let old = self.fds.remove(&fd).unwrap_or_default();
        register(registry, fd, interest, known, Mode::Edge)?;
        self.fds.insert(
            fd,
            Entry {
                reader: Some(reader),
                writer: Some(writer),
                edge: Some((wants, interest)),
                sock: None,
            },
        );
        Ok(old.reader.into_iter().chain(old.writer).collect())
    }

    /// Changes what a transport's fd is registered for.
    pub fn set_stream_interest(&mut self, registry: &Registry, fd: RawFd, interest: Interest) -> io::Result<()> {
        match self.fds.get_mut(&fd) {
            Some(Entry {
                edge: Some((_, current)),
                ..
            }) if *current != interest => {
                register(registry, fd, interest, true, Mode::Edge)?;
                *current = interest;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Unregisters `fd` entirely, returning its handles.
    pub fn remove_all(&mut self, registry: &Registry, fd: RawFd) -> Vec<Py<Handle>> {
        self.forget_parked(registry, fd);
        match self.fds.remove(&fd) {
            Some(entry) => {
                deregister(registry, fd);
                entry.reader.into_iter().chain(entry.writer).collect()
            }
            None => Vec::new(),
        }
    }

    /// Registers `fd` again with what its entry still wants, or forgets it when nothing is left.
    fn rearm(&mut self, registry: &Registry, fd: RawFd) {
        let entry = self.fds.get(&fd);
        let mode = entry.map_or(Mode::Level, Entry::mode);
        match entry.and_then(Entry::interest) {
            Some(interest) => {
                let _ = register(registry, fd, interest, true, mode);
            }
            None => {
                self.fds.remove(&fd);
                deregister(registry, fd);
            }
        }
    }

    /// `fd`'s reader, or with `write` its writer.
    pub fn slot(&self, fd: RawFd, write: bool) -> Option<&Py<Handle>> {
        self.get(fd)
            .and_then(|e| if write { e.writer.as_ref() } else { e.reader.as_ref() })
    }

    /// Whether `fd`'s reader (or with `write` its writer) is a live handle calling `callback`.
    pub fn calls(&self, py: Python<'_>, fd: RawFd, callback: &Bound<'_, PyAny>, write: bool) -> bool {
        self.slot(fd, write).is_some_and(|h| h.get().calls(py, callback))
    }

    pub fn get(&self, fd: RawFd) -> Option<&Entry> {
        self.fds.get(&fd)
    }

    /// Turns one readiness event into ready handles.
    /// Cancelled handles are unregistered, as the stdlib does, and handed to `dropped`.
    pub fn dispatch(
        &mut self,
        py: Python<'_>,
        registry: &Registry,
        token: Token,
        (readable, writable, hangup, urgent): (bool, bool, bool, bool),
        ready: &mut std::collections::VecDeque<Py<Handle>>,
        dropped: &mut Vec<Py<Handle>>,
    ) {
        let (fd, sock) = fd_of(token);
        let Some(entry) = self.fds.get_mut(&fd) else {
            if sock {
                // Data (or EOF) for a parked registration: the socket's next `sock_recv` gets it
                // without waiting. Until it waits again, the fd is better out of the poller: it
                // may have gone to another loop, or been closed while a duplicate lives on.
                self.forget_parked(registry, fd);
            }
            return;
        };
        if sock != entry.sock.is_some() {
            // An event of a registration the fd no longer has (see the module docs).
            return;
        }
        if let Some((wants, _)) = &entry.edge {
            if hangup {
                wants.hangup.store(true, Ordering::Relaxed);
            }
            if urgent {
                wants.urgent.store(true, Ordering::Relaxed);
            }
            let want_read = readable && wants.read.load(Ordering::Relaxed);
            let want_write = writable && wants.write.load(Ordering::Relaxed);
            for (fired, slot) in [(want_read, &entry.reader), (want_write, &entry.writer)] {
                if let (true, Some(h)) = (fired, slot) {
                    ready.push_back(h.clone_ref(py));
                }
            }
            return;
        }
        let mut changed = false;
        for (fired, slot) in [(readable, &mut entry.reader), (writable, &mut entry.writer)] {
            if !fired {
                continue;
            }
            if let Some(h) = slot {
                if h.get().is_cancelled() {
                    dropped.extend(slot.take());
                    changed = true;
                } else {
                    ready.push_back(h.clone_ref(py));
                }
            }
        }
        if changed {
            self.rearm(registry, fd);
        }
    }

    /// Empties the table (on close), handing the handles back; with a registry, the fds are
    /// also removed from the poller.
    pub fn drain(&mut self, registry: Option<&Registry>) -> Vec<Py<Handle>> {
        for (fd, _) in self.parked.drain() {
            if let Some(registry) = registry {
                deregister(registry, fd);
            }
        }
        let mut out = Vec::new();
        for (fd, entry) in self.fds.drain() {
            if let Some(registry) = registry {
                deregister(registry, fd);
            }
            out.extend(entry.reader);
            out.extend(entry.writer);
        }
        out
    }

    /// Registers every fd again in a fresh poller (after `fork()`), which has nothing parked.
    pub fn register_all(&mut self, registry: &Registry) {
        self.parked.clear();
        for (fd, entry) in &self.fds {
            if let Some(interest) = entry.interest() {
                let _ = register(registry, *fd, interest, false, entry.mode());
            }
        }
    }

    pub fn handles(&self) -> impl Iterator<Item = &Py<Handle>> {
        self.fds.values().flat_map(|e| e.reader.iter().chain(e.writer.iter()))
    }
}

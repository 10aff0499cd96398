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

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use pyo3::prelude::*;

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
}

#[derive(Default)]
pub(crate) struct Entry {
    pub reader: Option<Py<Handle>>,
    pub writer: Option<Py<Handle>>,
    /// Set for a transport's fd (see the module docs), with the interest it is registered for.
    edge: Option<(Arc<Wants>, Interest)>,
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
}

pub(crate) fn token(fd: RawFd) -> Token {
    // Tokens are fd + 1 so that token 0 stays free for the waker.
    Token(fd as usize + 1)
}

pub(crate) fn fd_of(token: Token) -> RawFd {
    (token.0 - 1) as RawFd
}

/// The handles `IoTable::add` displaces: the same slot's, and a stale one of a closed fd.
pub(crate) type Displaced = (Option<Py<Handle>>, Option<Py<Handle>>);

#[derive(Default)]
pub(crate) struct IoTable {
    fds: HashMap<RawFd, Entry>,
}

/// `EPOLL_CTL_MOD` (`modify`) or `EPOLL_CTL_ADD` of `fd` for `interest`: edge-triggered for
/// transports (through mio), level-triggered for plain readers and writers.
fn ctl(registry: &Registry, fd: RawFd, interest: Interest, modify: bool, edge: bool) -> io::Result<()> {
    if edge {
        let mut src = SourceFd(&fd);
        if modify {
            registry.reregister(&mut src, token(fd), interest)
        } else {
            registry.register(&mut src, token(fd), interest)
        }
    } else {
        let (read, write) = (interest.is_readable(), interest.is_writable());
        sys::epoll_ctl_level(registry.as_raw_fd(), modify, fd, read, write, token(fd).0 as u64)
    }
}

fn register(registry: &Registry, fd: RawFd, interest: Interest, known: bool, edge: bool) -> io::Result<()> {
    match ctl(registry, fd, interest, known, edge) {
        Err(e) if known && e.raw_os_error() == Some(libc::ENOENT) => ctl(registry, fd, interest, false, edge),
        Err(e) if !known && e.raw_os_error() == Some(libc::EEXIST) => ctl(registry, fd, interest, true, edge),
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
        let known = self.fds.contains_key(&fd);
        let mut entry = self.fds.remove(&fd).unwrap_or_default();
        // A plain reader or writer on a transport's fd (the transport is closing, or was given
        // up): the fd becomes level-triggered; the transport's callbacks tolerate extra calls.
        entry.edge = None;
        let old = if write {
            entry.writer.replace(handle)
        } else {
            entry.reader.replace(handle)
        };
        let interest = entry.interest().expect("an entry with a handle has an interest");
        let result = if known {
            match ctl(registry, fd, interest, true, false) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let stale = if write {
                        entry.reader.take()
                    } else {
                        entry.writer.take()
                    };
                    let interest = entry.interest().expect("the new handle is still there");
                    ctl(registry, fd, interest, false, false).map(|()| stale)
                }
                other => other.map(|()| None),
            }
        } else {
            register(registry, fd, interest, false, false).map(|()| None)
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

    /// Removes the reader (or writer) of `fd`, returning it.
    pub fn remove(&mut self, registry: &Registry, fd: RawFd, write: bool) -> Option<Py<Handle>> {
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
        let known = self.fds.contains_key(&fd);
        let old = self.fds.remove(&fd).unwrap_or_default();
        register(registry, fd, interest, known, true)?;
        self.fds.insert(
            fd,
            Entry {
                reader: Some(reader),
                writer: Some(writer),
                edge: Some((wants, interest)),
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
                register(registry, fd, interest, true, true)?;
                *current = interest;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Unregisters `fd` entirely, returning its handles.
    pub fn remove_all(&mut self, registry: &Registry, fd: RawFd) -> Vec<Py<Handle>> {
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
        let edge = entry.is_some_and(|e| e.edge.is_some());
        match entry.and_then(Entry::interest) {
            Some(interest) => {
                let _ = register(registry, fd, interest, true, edge);
            }
            None => {
                self.fds.remove(&fd);
                deregister(registry, fd);
            }
        }
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
        fd: RawFd,
        (readable, writable, hangup): (bool, bool, bool),
        ready: &mut std::collections::VecDeque<Py<Handle>>,
        dropped: &mut Vec<Py<Handle>>,
    ) {
        let Some(entry) = self.fds.get_mut(&fd) else {
            return;
        };
        if let Some((wants, _)) = &entry.edge {
            if hangup {
                wants.hangup.store(true, Ordering::Relaxed);
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

    /// Registers every fd again in a fresh poller (after `fork()`).
    pub fn register_all(&self, registry: &Registry) {
        for (fd, entry) in &self.fds {
            if let Some(interest) = entry.interest() {
                let _ = register(registry, *fd, interest, false, entry.edge.is_some());
            }
        }
    }

    pub fn handles(&self) -> impl Iterator<Item = &Py<Handle>> {
        self.fds.values().flat_map(|e| e.reader.iter().chain(e.writer.iter()))
    }
}

//! The write buffer of the stream and write-pipe transports: what `write()` accepted and the fd
//! did not take at once, as a queue of chunks sent front first (gathered into one `sendmsg` or
//! `writev`).
//!
//! A chunk is either the unsent bytes copied out of what `write()` was given, or, when that was
//! a `bytes` object (which cannot change), the object itself from an offset on: a large write to
//! a slow peer is then neither copied nor held twice in memory. Mutable buffers (`bytearray`,
//! `memoryview`, ...) are copied, so later changes to them do not change what is sent.

use std::collections::VecDeque;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The most chunks one gathering write takes (Linux's `IOV_MAX`).
const MAX_GATHER: usize = 1024;

enum Chunk {
    Owned(Vec<u8>),
    Shared {
        bytes: Py<PyBytes>,
        start: usize,
        len: usize,
    },
}

impl Chunk {
    fn len(&self) -> usize {
        match self {
            Chunk::Owned(v) => v.len(),
            Chunk::Shared { len, .. } => *len,
        }
    }

    fn bytes<'a>(&'a self, py: Python<'_>) -> &'a [u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared { bytes, start, .. } => &bytes.as_bytes(py)[*start..],
        }
    }
}

/// Calls `f` with the contiguous bytes of `data`, and with `data` itself when it is a `bytes`
/// object (which `WriteBuffer::push` then keeps instead of copying); fails as
/// `ffi::with_bytes` does for what is not a contiguous buffer.
pub(crate) fn with_data<R>(
    data: &Bound<'_, PyAny>,
    f: impl FnOnce(&[u8], Option<&Bound<'_, PyBytes>>) -> R,
) -> PyResult<R> {
    match data.cast::<PyBytes>() {
        Ok(bytes) => Ok(f(bytes.as_bytes(), Some(bytes))),
        Err(_) => crate::ffi::with_bytes(data, |bytes| f(bytes, None)),
    }
}

/// No memory to buffer the data.
pub(crate) struct NoMemory;

#[derive(Default)]
pub(crate) struct WriteBuffer {
    chunks: VecDeque<Chunk>,
    /// How much of the first chunk is already sent.
    sent_front: usize,
    size: usize,
}

impl WriteBuffer {
    /// Bytes waiting to be sent.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Queues `data[start..]`, where `data` is the content of `shared` when it is given (kept by
    /// reference), or of a mutable buffer (copied).
    pub fn push(&mut self, data: &[u8], start: usize, shared: Option<&Bound<'_, PyBytes>>) -> Result<(), NoMemory> {
        let len = data.len() - start;
        if len == 0 {
            return Ok(());
        }
        let chunk = match shared {
            Some(obj) => Chunk::Shared {
                bytes: obj.clone().unbind(),
                start,
                len,
            },
            None => {
                let mut rest = Vec::new();
                rest.try_reserve_exact(len).map_err(|_| NoMemory)?;
                rest.extend_from_slice(&data[start..]);
                Chunk::Owned(rest)
            }
        };
        self.chunks.push_back(chunk);
        self.size += len;
        Ok(())
    }

    /// The unsent bytes, front first, as slices for one gathering write.
    pub fn slices<'a>(&'a self, py: Python<'_>) -> Vec<&'a [u8]> {
        let mut slices = Vec::with_capacity(self.chunks.len().min(MAX_GATHER));
        for (i, chunk) in self.chunks.iter().take(MAX_GATHER).enumerate() {
            let bytes = chunk.bytes(py);
            slices.push(if i == 0 { &bytes[self.sent_front..] } else { bytes });
        }
        slices
    }

    /// Drops `n` sent bytes from the front.
    pub fn consume(&mut self, mut n: usize) {
        self.size -= n;
        while n > 0 {
            let front_left = self.chunks[0].len() - self.sent_front;
            if n >= front_left {
                n -= front_left;
                self.chunks.pop_front();
                self.sent_front = 0;
            } else {
                self.sent_front += n;
                n = 0;
            }
        }
    }

    /// Drops everything unsent (freeing a `bytes` object runs no Python code).
    pub fn clear(&mut self) {
        *self = WriteBuffer::default();
    }
}

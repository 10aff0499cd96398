//! The timer heap: `TimerHandle`s ordered by `(when, sequence)`, so timers with equal deadlines
//! fire in the order they were scheduled. Cancelled timers stay in the heap (cancel is O(1)) and
//! are counted; when they are more than half of a large heap it is rebuilt without them, and they
//! are popped whenever they reach the top, as the stdlib loop does.
//!
//! It is a 4-ary heap of 16-byte entries: half the depth of a binary heap, and the four children
//! of a node share one or two cache lines, which is what popping from a heap of 100k+ timers costs
//! (cache misses on the way down). The key is the deadline's f64 bit pattern mapped to an
//! order-preserving u64, so comparisons are exact and integer-only; ties go to the sequence number
//! stored in the handle.

use pyo3::prelude::*;

use super::handle::TimerHandle;

/// Below this many timers compaction is not worth it.
const MIN_SCHEDULED_FOR_COMPACTION: usize = 100;
const ARITY: usize = 4;

/// Maps an f64 to a u64 with the same order. NaN maps below everything: the stdlib loop runs a
/// timer whose deadline is NaN at once (no comparison with NaN says "not yet").
#[inline]
fn order_key(when: f64) -> u64 {
    if when.is_nan() {
        return 0;
    }
    let bits = when.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

pub(crate) struct Entry {
    key: u64,
    pub handle: Py<TimerHandle>,
}

impl Entry {
    #[inline]
    fn before(&self, other: &Entry) -> bool {
        self.key < other.key || (self.key == other.key && self.handle.get().seq() < other.handle.get().seq())
    }

    pub fn when(&self) -> f64 {
        self.handle.get().when
    }
}

#[derive(Default)]
pub(crate) struct TimerHeap {
    heap: Vec<Entry>,
    seq: u64,
}

fn is_cancelled(py: Python<'_>, handle: &Py<TimerHandle>) -> bool {
    handle.bind(py).as_super().get().is_cancelled()
}

impl TimerHeap {
    pub fn push(&mut self, handle: Py<TimerHandle>) {
        let timer = handle.get();
        timer.set_scheduled(true);
        self.seq += 1;
        timer.seq_set(self.seq);
        let key = order_key(timer.when);
        self.heap.push(Entry { key, handle });
        self.sift_up(self.heap.len() - 1);
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn next_when(&self) -> Option<f64> {
        self.heap.first().map(Entry::when)
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / ARITY;
            if !self.heap[i].before(&self.heap[parent]) {
                break;
            }
            self.heap.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let len = self.heap.len();
        loop {
            let Some(best) = self.min_child(i, len) else {
                return;
            };
            if !self.heap[best].before(&self.heap[i]) {
                return;
            }
            self.heap.swap(i, best);
            i = best;
        }
    }

    #[inline]
    fn min_child(&self, i: usize, len: usize) -> Option<usize> {
        let first = i * ARITY + 1;
        if first >= len {
            return None;
        }
        let mut best = first;
        for child in first + 1..(first + ARITY).min(len) {
            if self.heap[child].before(&self.heap[best]) {
                best = child;
            }
        }
        Some(best)
    }

    /// Moves the root's hole down along the smallest children to a leaf, then puts the last
    /// entry there and sifts it up: the last entry usually belongs near the bottom, so this
    /// compares children only, once per level, instead of also against the moving entry.
    fn pop(&mut self) -> Option<Entry> {
        let last = self.heap.pop()?;
        if self.heap.is_empty() {
            return Some(last);
        }
        let len = self.heap.len();
        let mut hole = 0;
        while let Some(best) = self.min_child(hole, len) {
            self.heap.swap(hole, best);
            hole = best;
        }
        let top = std::mem::replace(&mut self.heap[hole], last);
        self.sift_up(hole);
        Some(top)
    }

    /// Drops cancelled timers from the heap; `cancelled` is the loop's count of cancelled
    /// timers still in the heap. Removed handles go to `out` so the caller can release them once
    /// no borrow is held (their finalizers may run Python code).
    pub fn purge_cancelled(&mut self, py: Python<'_>, cancelled: &mut usize, out: &mut Vec<Py<TimerHandle>>) {
        let len = self.heap.len();
        if len > MIN_SCHEDULED_FOR_COMPACTION && *cancelled * 2 > len {
            let (gone, kept): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut self.heap)
                .into_iter()
                .partition(|e| is_cancelled(py, &e.handle));
            for entry in gone {
                entry.handle.get().set_scheduled(false);
                out.push(entry.handle);
            }
            self.heap = kept;
            for i in (0..self.heap.len()).rev() {
                self.sift_down(i);
            }
            *cancelled = 0;
        } else {
            while let Some(top) = self.heap.first() {
                if !is_cancelled(py, &top.handle) {
                    break;
                }
                let entry = self.pop().expect("non-empty");
                entry.handle.get().set_scheduled(false);
                *cancelled = cancelled.saturating_sub(1);
                out.push(entry.handle);
            }
        }
    }

    /// Hands every timer due before `end` to `out`, in `(when, sequence)` order, cancelled or
    /// not. A few are popped one by one; once a batch is large next to the heap, the rest is
    /// found by one partition of the heap and a sort, which costs O(n + k log k) and walks memory
    /// in order, instead of k pops that each miss the cache on every level of a large heap.
    pub fn drain_due(&mut self, end: f64, mut out: impl FnMut(Py<TimerHandle>)) {
        // The stdlib keeps a timer while `handle._when >= end_time`: against a NaN "now" (from
        // a `loop.time()` that returns it) nothing compares as later, so every timer is due.
        let end_key = if end.is_nan() { u64::MAX } else { order_key(end) };
        let bulk_after = (self.heap.len() / 16).max(64);
        let mut popped = 0;
        while self.heap.first().is_some_and(|e| e.key < end_key) {
            if popped == bulk_after {
                self.drain_due_bulk(end_key, &mut out);
                return;
            }
            let entry = self.pop().expect("non-empty");
            entry.handle.get().set_scheduled(false);
            out(entry.handle);
            popped += 1;
        }
    }

    #[cold]
    fn drain_due_bulk(&mut self, end_key: u64, out: &mut impl FnMut(Py<TimerHandle>)) {
        let (mut due, rest): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut self.heap)
            .into_iter()
            .partition(|e| e.key < end_key);
        self.heap = rest;
        for i in (0..self.heap.len()).rev() {
            self.sift_down(i);
        }
        due.sort_unstable_by(|a, b| {
            a.key
                .cmp(&b.key)
                .then_with(|| a.handle.get().seq().cmp(&b.handle.get().seq()))
        });
        for entry in due {
            entry.handle.get().set_scheduled(false);
            out(entry.handle);
        }
    }

    pub fn drain(&mut self) -> Vec<Py<TimerHandle>> {
        std::mem::take(&mut self.heap).into_iter().map(|e| e.handle).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Py<TimerHandle>> {
        self.heap.iter().map(|e| &e.handle)
    }

    /// The timers in the order they will run (cancelled ones not yet purged included).
    pub fn sorted(&self, py: Python<'_>) -> Vec<Py<TimerHandle>> {
        let mut entries: Vec<&Entry> = self.heap.iter().collect();
        entries.sort_by_key(|e| (e.key, e.handle.get().seq()));
        entries.into_iter().map(|e| e.handle.clone_ref(py)).collect()
    }
}

//! The timer heap: `TimerHandle`s ordered by `(when, sequence)`, so timers with equal deadlines
//! fire in the order they were scheduled. Cancelled timers stay in the heap (cancel is O(1)) and
//! are counted; when they are more than half of a large heap it is rebuilt without them, and they
//! are popped whenever they reach the top, as the stdlib loop does.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use pyo3::prelude::*;

use super::handle::TimerHandle;

/// Below this many timers compaction is not worth it.
const MIN_SCHEDULED_FOR_COMPACTION: usize = 100;

pub(crate) struct Entry {
    pub when: f64,
    seq: u64,
    pub handle: Py<TimerHandle>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed, so the std max-heap yields the earliest deadline first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.when.total_cmp(&self.when).then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Default)]
pub(crate) struct TimerHeap {
    heap: BinaryHeap<Entry>,
    seq: u64,
}

fn is_cancelled(py: Python<'_>, handle: &Py<TimerHandle>) -> bool {
    handle.bind(py).as_super().get().is_cancelled()
}

impl TimerHeap {
    pub fn push(&mut self, when: f64, handle: Py<TimerHandle>) {
        handle.get().set_scheduled(true);
        self.seq += 1;
        self.heap.push(Entry {
            when,
            seq: self.seq,
            handle,
        });
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn next_when(&self) -> Option<f64> {
        self.heap.peek().map(|e| e.when)
    }

    fn unschedule(entry: &Entry) {
        entry.handle.get().set_scheduled(false);
    }

    /// Drops cancelled timers from the heap; `cancelled` is the loop's count of cancelled
    /// timers still in the heap. Removed handles go to `out` so the caller can release them once
    /// no lock is held (their finalizers may run Python code).
    pub fn purge_cancelled(&mut self, py: Python<'_>, cancelled: &mut usize, out: &mut Vec<Py<TimerHandle>>) {
        let len = self.heap.len();
        if len > MIN_SCHEDULED_FOR_COMPACTION && *cancelled * 2 > len {
            let mut kept = Vec::with_capacity(len - *cancelled);
            for entry in std::mem::take(&mut self.heap).into_vec() {
                if is_cancelled(py, &entry.handle) {
                    Self::unschedule(&entry);
                    out.push(entry.handle);
                } else {
                    kept.push(entry);
                }
            }
            self.heap = BinaryHeap::from(kept);
            *cancelled = 0;
        } else {
            while let Some(top) = self.heap.peek() {
                if !is_cancelled(py, &top.handle) {
                    break;
                }
                let entry = self.heap.pop().expect("peeked");
                Self::unschedule(&entry);
                *cancelled = cancelled.saturating_sub(1);
                out.push(entry.handle);
            }
        }
    }

    /// Pops the next timer due before `end`, cancelled or not.
    pub fn pop_due(&mut self, end: f64) -> Option<Py<TimerHandle>> {
        if self.heap.peek()?.when >= end {
            return None;
        }
        let entry = self.heap.pop()?;
        Self::unschedule(&entry);
        Some(entry.handle)
    }

    pub fn drain(&mut self) -> Vec<Py<TimerHandle>> {
        std::mem::take(&mut self.heap)
            .into_vec()
            .into_iter()
            .map(|e| e.handle)
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Py<TimerHandle>> {
        self.heap.iter().map(|e| &e.handle)
    }
}

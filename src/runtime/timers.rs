//! The timer heap: handles ordered by due time, then by scheduling order, so callbacks due at
//! the same moment run in the order they were scheduled.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use pyo3::prelude::*;

use super::handle::TimerHandle;

struct Entry {
    when: f64,
    seq: u64,
    handle: Py<TimerHandle>,
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
    // BinaryHeap is a max-heap: reverse, so the earliest (then the first scheduled) is on top.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .when
            .total_cmp(&self.when)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Default)]
pub struct TimerHeap {
    heap: BinaryHeap<Entry>,
    next_seq: u64,
}

impl TimerHeap {
    pub fn push(&mut self, when: f64, handle: Py<TimerHandle>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry { when, seq, handle });
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Due time and handle of the earliest timer, without removing it.
    pub fn peek(&self) -> Option<(f64, &Py<TimerHandle>)> {
        self.heap.peek().map(|e| (e.when, &e.handle))
    }

    /// The earliest timer if it is due by `deadline`.
    pub fn pop_due(&mut self, deadline: f64) -> Option<Py<TimerHandle>> {
        if self.heap.peek()?.when <= deadline {
            self.heap.pop().map(|e| e.handle)
        } else {
            None
        }
    }

    pub fn pop(&mut self) -> Option<Py<TimerHandle>> {
        self.heap.pop().map(|e| e.handle)
    }

    /// Split off the entries `keep` rejects; the caller drops them outside any borrow.
    pub fn remove_where(
        &mut self,
        mut cancelled: impl FnMut(&Py<TimerHandle>) -> bool,
    ) -> Vec<Py<TimerHandle>> {
        let mut removed = Vec::new();
        let mut kept = Vec::with_capacity(self.heap.len());
        for entry in std::mem::take(&mut self.heap).into_vec() {
            if cancelled(&entry.handle) {
                removed.push(entry.handle);
            } else {
                kept.push(entry);
            }
        }
        self.heap = BinaryHeap::from(kept);
        removed
    }

    pub fn drain(&mut self) -> Vec<Py<TimerHandle>> {
        std::mem::take(&mut self.heap)
            .into_vec()
            .into_iter()
            .map(|e| e.handle)
            .collect()
    }
}

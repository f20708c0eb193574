//! Attempts in flight, counted per process so that a dead process's count
//! can be taken back.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::{Payload, COLUMNS};

/// Attempts in flight on one deployment: each process counts in its own
/// column, so that when it dies its count can be taken back, and `total`
/// is their sum, read in one load.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    total: AtomicU64,
    columns: [AtomicU32; COLUMNS],
}

// Safety: atomics of plain integers; all zero is nothing in flight.
unsafe impl Payload for InFlight {}

impl InFlight {
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub(crate) fn start(&self, column: usize) {
        self.columns[column].fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// Saturating, so a stray extra end cannot wrap the count around.
    pub(crate) fn end(&self, column: usize) {
        let ended = self.columns[column]
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if ended.is_ok() {
            let _ = self
                .total
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                });
        }
    }

    pub(super) fn clear(&self, column: usize) {
        let counted = self.columns[column].swap(0, Ordering::Relaxed);
        let _ = self
            .total
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(u64::from(counted)))
            });
    }
}

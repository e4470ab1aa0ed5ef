//! How much an executor has done and how long its requests took, counted as
//! it runs: a few relaxed atomic adds per request, no lock, fixed memory.
//! Operators read it as metrics (the networking crate exports it to
//! Prometheus); tests and benchmarks read it directly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (in seconds) of the request-latency histogram's buckets,
/// from 10 µs to 10 s; a last bucket holds everything slower.
pub const LATENCY_BOUNDS: [f64; 13] = [
    1e-5, 2.5e-5, 1e-4, 2.5e-4, 1e-3, 2.5e-3, 1e-2, 2.5e-2, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct WorkCounters {
    submitted: AtomicU64,
    finished: AtomicU64,
    failed: AtomicU64,
    busy_nanos: AtomicU64,
    /// Requests per latency bucket (not cumulative), the last for slower
    /// than every bound.
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
}

impl WorkCounters {
    pub(crate) fn submitted(&self) {
        self.submitted.fetch_add(1, Ordering::Relaxed);
    }

    /// A request finished after running for `took` on a worker.
    pub(crate) fn finished(&self, took: Duration, ok: bool) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
        let seconds = took.as_secs_f64();
        let bucket = LATENCY_BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// A handle on an executor's counters that outlives borrowing the executor
/// (cheap to clone; reads what the executor counts from then on).
#[derive(Clone, Debug)]
pub struct WorkHandle {
    pub(crate) counters: Arc<WorkCounters>,
    pub(crate) workers: usize,
}

impl WorkHandle {
    /// What the executor has done so far.
    pub fn stats(&self) -> WorkStats {
        let c = &self.counters;
        // Finished first: a request counted finished was counted submitted.
        let finished = c.finished.load(Ordering::Relaxed);
        let submitted = c.submitted.load(Ordering::Relaxed).max(finished);
        let mut cumulative = 0;
        let mut latency = Vec::with_capacity(LATENCY_BOUNDS.len() + 1);
        for (at, bucket) in c.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let bound = LATENCY_BOUNDS.get(at).copied().unwrap_or(f64::INFINITY);
            latency.push((bound, cumulative));
        }
        WorkStats {
            workers: self.workers,
            requests: finished,
            failed: c.failed.load(Ordering::Relaxed),
            queued: submitted - finished,
            busy: Duration::from_nanos(c.busy_nanos.load(Ordering::Relaxed)),
            latency,
        }
    }
}

/// What an executor has done, as [`WorkHandle::stats`] reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkStats {
    /// Worker threads.
    pub workers: usize,
    /// Requests finished (replied to), failed ones included.
    pub requests: u64,
    /// Requests that failed (refused an undeclared access, or panicked).
    pub failed: u64,
    /// Requests submitted and not finished: waiting for a conflicting
    /// request, for a worker, or running.
    pub queued: u64,
    /// Time workers spent running requests, summed over workers; divided
    /// by `workers` and the time elapsed, it is their utilisation.
    pub busy: Duration,
    /// Requests by running time: cumulative counts at each of
    /// [`LATENCY_BOUNDS`], then at infinity (so the last is `requests`).
    pub latency: Vec<(f64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_land_in_the_bucket_of_their_running_time_and_add_up() {
        let handle = WorkHandle {
            counters: Arc::default(),
            workers: 2,
        };
        let c = &handle.counters;
        for took in [5, 10, 11, 1_000, 20_000_000] {
            c.submitted();
            c.finished(Duration::from_micros(took), took != 11);
        }
        c.submitted();
        let stats = handle.stats();
        assert_eq!(stats.requests, 5);
        assert_eq!(stats.failed, 1);
        assert_eq!(stats.queued, 1);
        assert_eq!(
            stats.busy,
            Duration::from_micros(5 + 10 + 11 + 1_000 + 20_000_000)
        );
        let at = |bound: f64| stats.latency.iter().find(|(b, _)| *b == bound).unwrap().1;
        assert_eq!(at(1e-5), 2, "5 and 10 µs");
        assert_eq!(at(2.5e-5), 3, "11 µs");
        assert_eq!(at(1e-3), 4, "1 ms");
        assert_eq!(at(10.0), 4);
        assert_eq!(stats.latency.last(), Some(&(f64::INFINITY, 5)), "20 s");
    }
}

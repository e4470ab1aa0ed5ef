//! Bytes of answers waiting for client connections' writers.
//!
//! A client that sends requests (or retransmissions answered from the reply
//! cache) and never reads its answers would make a replica hold each answer
//! until its writer gets it out. Each connection may have
//! [`QUEUED_BYTES_PER_CONNECTION`] waiting, but anyone can be a client and
//! open many connections, so what connections have waiting beyond
//! [`FREE_ANSWER_BYTES`] each also comes from an [`AnswerBudget`] shared by
//! all of them (`TransportConfig::client_answer_budget`). An answer that
//! does not fit is dropped, as one over the connection's own bound is: an
//! ordered request's client retransmits and is answered from the reply
//! cache, a read is answered with no result and ordered. A client reading
//! its answers keeps fewer than [`FREE_ANSWER_BYTES`] waiting almost
//! always, so clients that hold the budget take nothing from it.

use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use super::byte_bound::ByteBound;

/// The most bytes of answers one connection's writer may have waiting. The
/// first answer always fits the connection's bound (so a connection whose
/// writer keeps up gets even the largest), if the budget has room for it.
pub const QUEUED_BYTES_PER_CONNECTION: usize = 16 << 20;

/// Bytes a connection may have waiting without taking from the budget.
pub const FREE_ANSWER_BYTES: usize = 64 << 10;

/// Bytes of answers beyond [`FREE_ANSWER_BYTES`] that all client
/// connections may have waiting together.
#[derive(Debug)]
pub struct AnswerBudget {
    /// Signed: a connection's give-back can land before the take it undoes.
    taken: AtomicIsize,
    limit: usize,
}

impl AnswerBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<AnswerBudget> {
        Arc::new(AnswerBudget {
            taken: AtomicIsize::new(0),
            limit: limit.min(isize::MAX as usize),
        })
    }

    /// Bytes taken right now.
    #[cfg(test)]
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::Acquire).max(0) as usize
    }
}

/// One connection's count of bytes of answers waiting for its writer.
#[derive(Debug)]
pub struct QueuedAnswers {
    queued: ByteBound,
    budget: Arc<AnswerBudget>,
}

/// What of `queued` bytes waiting counts against the budget.
fn beyond_free(queued: usize) -> isize {
    queued.saturating_sub(FREE_ANSWER_BYTES) as isize
}

impl QueuedAnswers {
    /// Nothing waiting yet, on a connection whose answers share `budget`.
    pub fn new(budget: Arc<AnswerBudget>) -> QueuedAnswers {
        QueuedAnswers {
            queued: ByteBound::new(QUEUED_BYTES_PER_CONNECTION),
            budget,
        }
    }

    /// Counts an answer of `bytes` as waiting, if it fits the connection's
    /// bound and the budget; false (and nothing counted) if not.
    pub fn reserve(&self, bytes: usize) -> bool {
        let Some(before) = self.queued.reserve(bytes) else {
            return false;
        };
        let more = beyond_free(before.saturating_add(bytes)) - beyond_free(before);
        if more > 0 {
            let taken = self.budget.taken.fetch_add(more, Ordering::AcqRel) + more;
            if taken > self.budget.limit as isize {
                self.release(bytes);
                return false;
            }
        }
        true
    }

    /// Uncounts answers of `bytes` the writer wrote (or that were not
    /// queued after all).
    pub fn release(&self, bytes: usize) {
        let before = self.queued.release(bytes);
        let freed = beyond_free(before) - beyond_free(before.saturating_sub(bytes));
        if freed > 0 {
            self.budget.taken.fetch_sub(freed, Ordering::AcqRel);
        }
    }

    /// Bytes waiting.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queued.queued()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_bounded_alone_and_the_first_answer_fits_if_the_budget_has_room() {
        let budget = AnswerBudget::new(usize::MAX);
        let one = QueuedAnswers::new(Arc::clone(&budget));
        assert!(
            one.reserve(2 * QUEUED_BYTES_PER_CONNECTION),
            "the first fits"
        );
        assert!(!one.reserve(1));
        one.release(2 * QUEUED_BYTES_PER_CONNECTION);
        assert_eq!(budget.taken(), 0);
        let small = AnswerBudget::new(1 << 20);
        let two = QueuedAnswers::new(Arc::clone(&small));
        assert!(
            !two.reserve(FREE_ANSWER_BYTES + (2 << 20)),
            "past the budget, even a first answer is dropped"
        );
        assert_eq!(two.queued(), 0);
        assert_eq!(small.taken(), 0);
    }

    /// Connections that never read fill the budget between them; a
    /// connection that reads its answers still gets small ones through.
    #[test]
    fn connections_that_never_read_take_the_budget_but_not_the_free_share() {
        let budget = AnswerBudget::new(4 << 20);
        let hoarders: Vec<QueuedAnswers> = (0..16)
            .map(|_| QueuedAnswers::new(Arc::clone(&budget)))
            .collect();
        let mut held = 0;
        for hoarder in &hoarders {
            while hoarder.reserve(100 << 10) {
                held += 100 << 10;
            }
        }
        assert!(
            held <= 16 * FREE_ANSWER_BYTES + (4 << 20) + 16 * (100 << 10),
            "{held} bytes held"
        );
        assert!(budget.taken() <= 4 << 20);
        let reader = QueuedAnswers::new(Arc::clone(&budget));
        for _ in 0..1000 {
            assert!(reader.reserve(10 << 10), "a small answer gets through");
            reader.release(10 << 10);
        }
        // The hoarders' writers get some out: the budget has room again.
        let taken = budget.taken();
        hoarders[0].release(hoarders[0].queued());
        assert!(budget.taken() < taken);
        assert!(reader.reserve(FREE_ANSWER_BYTES + (100 << 10)));
    }
}

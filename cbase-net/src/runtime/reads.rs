//! Reads on the fast path, from a client's connection to execution and back.
//!
//! Read-only requests arrive unordered, several to a frame
//! ([`ClientMessage::Reads`]). The
//! connection notes the protocol's read barrier (the highest sequence
//! number this replica saw prepared) and hands the read to the execution
//! thread, which runs it once everything up to the barrier has executed
//! ([`WaitingReads`]); the answer goes back on the client's connection.
//! Memory a client can make a replica hold this way is bounded per
//! connection ([`READS_PER_CONNECTION`] unanswered reads, and
//! [`READ_BYTES_PER_CONNECTION`] bytes of their operations until they run)
//! and in all ([`MAX_WAITING_READS`] reads, and [`MAX_WAITING_READ_BYTES`]
//! bytes of their operations, parked at execution; and
//! [`MAX_WAITING_READ_BYTES`] bytes, with [`READ_OVERHEAD`] per read, of
//! every connection's reads not yet run, since a client that connects again
//! gets a new connection's bounds). A read over any bound is answered
//! at once with no result, and the client orders it.
//!
//! Answers waiting for a connection's writer are bounded in bytes too
//! ([`super::answers`]): a client that sends requests (or
//! retransmissions answered from the reply cache) and never reads its
//! answers would otherwise make the replica hold a copy of each answer, up
//! to the channel's count bound, however large the answers are.
//!
//! [`ClientMessage::Reads`]: crate::message::ClientMessage::Reads

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use super::answers::{AnswerBudget, QueuedAnswers};
use crate::crypto::PublicKey;
use crate::message::{ReadReply, Reply, Seq};

/// The most reads one client connection may have unanswered.
pub const READS_PER_CONNECTION: usize = 1024;

/// The most bytes of operations a client connection may have in reads not
/// yet run (waiting for execution or parked there). A read larger than this
/// is admitted only when the connection has no other waiting: a count of
/// reads alone would let each be as large as a frame.
pub const READ_BYTES_PER_CONNECTION: usize = 4 << 20;

/// The most reads parked at execution, waiting for batches to execute.
pub const MAX_WAITING_READS: usize = 65_536;

/// What an answer is counted as against the connection's bound and the
/// clients' budget ([`super::answers`]): its result and a little for the
/// rest.
const ANSWER_OVERHEAD: usize = 64;

/// What a client connection's writer sends.
#[derive(Debug)]
pub enum Outgoing {
    /// A reply to an ordered request.
    Reply(Reply),
    /// The answer to a read on the fast path.
    Read(ReadReply),
}

/// The most bytes of operations parked at execution in all (one larger read
/// is parked if none other is).
pub const MAX_WAITING_READ_BYTES: usize = 64 << 20;

/// A connected client's queue of answers, with its count of unanswered
/// reads.
#[derive(Clone)]
pub struct ClientQueue {
    /// Answers to the connection's writer.
    pub outgoing: mpsc::Sender<Outgoing>,
    /// Reads received on this connection and not yet answered.
    pub reads: Arc<AtomicUsize>,
    /// Bytes of answers queued for the writer and not yet written.
    pub bytes: Arc<QueuedAnswers>,
    /// Bytes of operations of this connection's reads not yet run.
    pub read_bytes: Arc<AtomicUsize>,
    /// The connection's place among the clients served
    /// ([`super::client_slots`]): when it was last active, and how it is
    /// told to close.
    pub place: Arc<super::client_slots::Place>,
}

impl Outgoing {
    /// What it counts against the connection's bound and the budget.
    pub fn bytes(&self) -> usize {
        ANSWER_OVERHEAD
            + match self {
                Outgoing::Reply(reply) => reply.result.len(),
                Outgoing::Read(answer) => answer.result.as_ref().map_or(0, Vec::len),
            }
    }
}

impl ClientQueue {
    /// A queue sending into `outgoing`, with nothing counted yet, whose
    /// answers share `budget` with other connections'.
    pub fn new(outgoing: mpsc::Sender<Outgoing>, budget: Arc<AnswerBudget>) -> ClientQueue {
        ClientQueue {
            outgoing,
            reads: Arc::default(),
            bytes: Arc::new(QueuedAnswers::new(budget)),
            read_bytes: Arc::default(),
            place: Arc::default(),
        }
    }

    /// Queues `answer` if it fits the connection's bound in bytes and the
    /// clients' budget (and the channel's bound in count); false if it was
    /// dropped.
    fn push(&self, answer: Outgoing) -> bool {
        let bytes = answer.bytes();
        if !self.bytes.reserve(bytes) {
            return false;
        }
        if self.outgoing.try_send(answer).is_err() {
            self.written(bytes);
            return false;
        }
        true
    }

    /// Queues the reply to an ordered request; it is dropped if the client
    /// does not read its answers (it retransmits and is answered from the
    /// reply cache). False if it was dropped.
    pub fn send_reply(&self, reply: Reply) -> bool {
        self.push(Outgoing::Reply(reply))
    }

    /// The writer took answers of `bytes` (as [`Outgoing::bytes`] counts
    /// them) off the queue and wrote them.
    pub fn written(&self, bytes: usize) {
        self.bytes.release(bytes);
    }

    /// Counts a new read until the returned slot drops (when its answer is
    /// made, or the read is given up on); `None` (and not counted) if the
    /// connection has as many unanswered as it may. The slot travels with
    /// the read: its answer may go out on a later connection of the same
    /// client, and must not make room on that one.
    pub fn admit_read(&self) -> Option<ReadSlot> {
        self.reads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < READS_PER_CONNECTION).then_some(n + 1)
            })
            .ok()?;
        Some(ReadSlot(Some(Arc::clone(&self.reads))))
    }

    /// Holds `bytes` of the connection's [`READ_BYTES_PER_CONNECTION`]
    /// for a read's operation until the hold drops (when the read runs or
    /// is given up on); `None` if they do not fit.
    pub fn hold_bytes(&self, bytes: usize) -> Option<HeldBytes> {
        self.read_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                let total = held.saturating_add(bytes);
                (held == 0 || total <= READ_BYTES_PER_CONNECTION).then_some(total)
            })
            .ok()?;
        Some(HeldBytes {
            bytes,
            from: Arc::clone(&self.read_bytes),
            total: None,
        })
    }

    /// Queues the answer to a read (or a refusal); it is dropped if the
    /// client does not read its answers (it then orders the read after a
    /// timeout).
    pub fn send_read(&self, reply: ReadReply) {
        self.push(Outgoing::Read(reply));
    }
}

/// One of a connection's [`READS_PER_CONNECTION`] unanswered reads, given
/// back when dropped.
#[derive(Debug, Default)]
pub struct ReadSlot(Option<Arc<AtomicUsize>>);

impl Drop for ReadSlot {
    fn drop(&mut self) {
        if let Some(reads) = &self.0 {
            reads.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Bytes of a connection's budget for reads' operations, and of the
/// replica's for all reads not yet run, given back when dropped.
#[derive(Debug, Default)]
pub struct HeldBytes {
    bytes: usize,
    from: Arc<AtomicUsize>,
    /// What it holds of the replica's budget, once counted there.
    total: Option<(usize, Arc<AtomicUsize>)>,
}

/// What a read counts against the replica's budget beyond its operation:
/// so that reads of nothing are bounded in number too.
pub const READ_OVERHEAD: usize = 128;

impl HeldBytes {
    /// Also counts the read against `total`, the replica's budget for all
    /// reads handed to execution and not yet run (at most
    /// [`MAX_WAITING_READ_BYTES`]); `None`, and the connection's bytes given
    /// back, if it does not fit. A connection's own bounds start afresh
    /// when its client connects again, while the reads it left behind still
    /// wait: only a bound across connections holds what one client can
    /// make the replica keep.
    pub fn within(mut self, total: &Arc<AtomicUsize>) -> Option<HeldBytes> {
        let bytes = self.bytes + READ_OVERHEAD;
        total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                let after = held.saturating_add(bytes);
                (after <= MAX_WAITING_READ_BYTES).then_some(after)
            })
            .ok()?;
        self.total = Some((bytes, Arc::clone(total)));
        Some(self)
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.from.fetch_sub(self.bytes, Ordering::AcqRel);
        if let Some((bytes, total)) = &self.total {
            total.fetch_sub(*bytes, Ordering::AcqRel);
        }
    }
}

/// A read handed to execution.
#[derive(Debug)]
pub struct PendingRead {
    /// The client that sent it (authenticated by its connection).
    pub client: PublicKey,
    /// Its id, for the answer.
    pub id: u64,
    /// The encoded service request.
    pub operation: Vec<u8>,
    /// It runs once everything up to this sequence number has executed.
    pub after: Seq,
    /// Its operation's bytes of its connection's budget, until it runs.
    pub held: HeldBytes,
    /// Its place among its connection's unanswered reads, until answered.
    pub slot: ReadSlot,
}

impl PendingRead {
    /// A read not counted against any connection: run directly by the
    /// replica's owner (see `Execution::read`).
    pub fn uncounted(client: PublicKey, id: u64, operation: Vec<u8>) -> PendingRead {
        PendingRead {
            client,
            id,
            operation,
            after: 0,
            held: HeldBytes::default(),
            slot: ReadSlot::default(),
        }
    }
}

/// Reads parked at execution until it reaches their barrier, in the order
/// they arrived within each barrier. Bounded by [`MAX_WAITING_READS`] and
/// [`MAX_WAITING_READ_BYTES`].
#[derive(Default)]
pub struct WaitingReads {
    parked: BTreeMap<(Seq, u64), PendingRead>,
    arrivals: u64,
    /// The bytes of the parked reads' operations.
    bytes: usize,
}

impl WaitingReads {
    /// Parks `read` until execution reaches its barrier; gives it back if
    /// too many are parked already.
    pub fn park(&mut self, read: PendingRead) -> Result<(), PendingRead> {
        let bytes = self.bytes.saturating_add(read.operation.len());
        if self.parked.len() >= MAX_WAITING_READS
            || (self.bytes > 0 && bytes > MAX_WAITING_READ_BYTES)
        {
            return Err(read);
        }
        self.bytes = bytes;
        self.arrivals += 1;
        self.parked.insert((read.after, self.arrivals), read);
        Ok(())
    }

    /// Lowers the barrier of every read parked behind a higher one to
    /// `barrier`, keeping their order of arrival among each other.
    pub fn lower_to(&mut self, barrier: Seq) {
        // Asked on every frame of reads: most often none is above.
        if self
            .parked
            .last_key_value()
            .is_none_or(|((after, _), _)| *after <= barrier)
        {
            return;
        }
        let above = self.parked.split_off(&(barrier.saturating_add(1), 0));
        for ((_, arrival), read) in above {
            let read = PendingRead {
                after: barrier,
                ..read
            };
            self.parked.insert((barrier, arrival), read);
        }
    }

    /// The parked reads whose barrier is at or below `executed`, in order.
    pub fn ready(&mut self, executed: Seq) -> Vec<PendingRead> {
        // Asked after every batch: most often none is ready.
        if self
            .parked
            .first_key_value()
            .is_none_or(|((after, _), _)| *after > executed)
        {
            return Vec::new();
        }
        let later = self.parked.split_off(&(executed.saturating_add(1), 0));
        let ready: Vec<PendingRead> = std::mem::replace(&mut self.parked, later)
            .into_values()
            .collect();
        for read in &ready {
            self.bytes -= read.operation.len();
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    fn read(id: u64, after: Seq) -> PendingRead {
        PendingRead {
            client: SecretKey::from_seed([1; 32]).public(),
            id,
            operation: Vec::new(),
            after,
            held: HeldBytes::default(),
            slot: ReadSlot::default(),
        }
    }

    #[test]
    fn parked_reads_come_out_once_execution_reaches_them_in_arrival_order() {
        let mut waiting = WaitingReads::default();
        for (id, after) in [(1, 5), (2, 3), (3, 5), (4, 9)] {
            waiting.park(read(id, after)).unwrap();
        }
        assert!(waiting.ready(2).is_empty());
        let ids = |reads: Vec<PendingRead>| reads.iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(waiting.ready(5)), vec![2, 1, 3]);
        assert_eq!(ids(waiting.ready(8)), Vec::<u64>::new());
        assert_eq!(ids(waiting.ready(u64::MAX)), vec![4]);
    }

    #[test]
    fn reads_parked_at_execution_are_bounded_in_bytes() {
        // A client that connects again for every read gets a new
        // connection's bounds each time: the parked reads are bounded in
        // all, in bytes as in count.
        let mut waiting = WaitingReads::default();
        let large = |id| PendingRead {
            operation: vec![0; 1 << 20],
            ..read(id, 5)
        };
        let fit = (MAX_WAITING_READ_BYTES >> 20) as u64;
        for id in 0..fit {
            assert!(waiting.park(large(id)).is_ok());
        }
        assert!(
            waiting.park(large(fit)).is_err(),
            "more than {MAX_WAITING_READ_BYTES} bytes of reads parked"
        );
        // One that adds no bytes still fits.
        assert!(waiting.park(read(fit + 1, 5)).is_ok());
        // Once they run, there is room again.
        assert_eq!(waiting.ready(5).len() as u64, fit + 1);
        assert!(waiting.park(large(fit + 2)).is_ok());
    }

    /// A new view that does not carry a number a replica voted for lowers
    /// its barrier: reads parked behind the old one wait for the new one
    /// only, in the order they arrived.
    #[test]
    fn reads_parked_behind_a_barrier_a_new_view_lowered_wait_for_the_new_one() {
        let mut waiting = WaitingReads::default();
        for (id, after) in [(1, 16), (2, 15), (3, 17), (4, 12)] {
            waiting.park(read(id, after)).unwrap();
        }
        waiting.lower_to(15);
        let ids = |reads: Vec<PendingRead>| reads.iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(waiting.ready(14)), vec![4]);
        assert_eq!(ids(waiting.ready(15)), vec![1, 2, 3]);
        assert!(waiting.ready(u64::MAX).is_empty());
    }

    #[test]
    fn a_connection_may_have_only_so_many_reads_unanswered() {
        let (outgoing, _receiver) = mpsc::channel(1);
        let queue = ClientQueue::new(outgoing, AnswerBudget::new(usize::MAX));
        let mut slots: Vec<ReadSlot> = (0..READS_PER_CONNECTION)
            .map(|_| queue.admit_read().expect("room"))
            .collect();
        assert!(queue.admit_read().is_none());
        // One answered (its slot dropped): room for one more.
        slots.pop();
        assert!(queue.admit_read().is_some());
    }

    #[test]
    fn refusing_reads_over_the_bound_admits_no_more() {
        let (outgoing, mut receiver) = mpsc::channel(16);
        let queue = ClientQueue::new(outgoing, AnswerBudget::new(usize::MAX));
        let _slots: Vec<ReadSlot> = (0..READS_PER_CONNECTION)
            .map(|_| queue.admit_read().expect("room"))
            .collect();
        // Reads past the bound are refused, and the writer writes each
        // refusal: that makes no room, whoever's answers it writes.
        for id in 0..8 {
            assert!(queue.admit_read().is_none());
            queue.send_read(ReadReply {
                id,
                replica: 0,
                result: None,
            });
            let answer = receiver.try_recv().expect("the refusal is queued");
            assert!(matches!(answer, Outgoing::Read(_)));
            queue.written(answer.bytes());
        }
        assert!(queue.admit_read().is_none(), "refusals freed room");
    }

    fn reply(bytes: usize) -> Reply {
        Reply {
            view: 0,
            lane: 0,
            number: 1,
            replica: 0,
            result: vec![7; bytes],
        }
    }

    /// A client that retransmits a request with a large cached reply and
    /// never reads: every retransmission costs it a few bytes and would
    /// cost the replica a copy of the reply, up to the channel's count
    /// bound (16,384 copies of a reply of up to a frame, 16 MiB).
    #[test]
    fn answers_a_client_does_not_read_are_bounded_in_bytes() {
        let (outgoing, mut receiver) = mpsc::channel(16_384);
        let queue = ClientQueue::new(outgoing, AnswerBudget::new(usize::MAX));
        let big = 1 << 20;
        let queued = (0..1_000).filter(|_| queue.send_reply(reply(big))).count();
        assert!(
            queued * big <= super::super::answers::QUEUED_BYTES_PER_CONNECTION,
            "{queued} replies of {big} bytes held for a client that reads none"
        );
        assert!(queued >= 8, "a reading client is not starved: {queued}");
        assert!(!queue.send_reply(reply(big)));
        // The writer writes one: room for one more.
        let written = receiver.try_recv().expect("queued");
        queue.written(written.bytes());
        assert!(queue.send_reply(reply(big)));
        // Answers to reads count too: one that does not fit is dropped,
        // and its read is no longer counted once its slot goes.
        let slot = queue.admit_read().expect("room");
        assert!(!queue.push(Outgoing::Read(ReadReply {
            id: 1,
            replica: 0,
            result: Some(vec![0; big]),
        })));
        drop(slot);
        assert_eq!(queue.reads.load(Ordering::Acquire), 0);
        // An answer larger than the bound still goes out alone.
        let (outgoing, _receiver) = mpsc::channel(16);
        let empty = ClientQueue::new(outgoing, AnswerBudget::new(usize::MAX));
        assert!(empty.send_reply(reply(
            2 * super::super::answers::QUEUED_BYTES_PER_CONNECTION
        )));
        assert!(!empty.send_reply(reply(1)));
    }
}

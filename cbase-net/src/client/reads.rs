//! The client's half of the read-only fast path: reads go unordered to
//! every replica, many to a frame ([`send_reads`]), and a read is accepted
//! once 2f+1 replicas answer alike ([`ReadTally`]); if they cannot, or do
//! not in time, the call is ordered instead ([`read_unordered`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cbase_core::codec;
use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{BatchTicket, Shared};
use crate::config::ReplicaId;
use crate::message::{ClientMessage, READS_PER_FRAME, ReadReply, ReadRequest};

/// The id of a client's first read on the fast path: random, so that an
/// instance of a client does not reuse the ids of an earlier one with the
/// same key (one restarted, say). Replicas answer a read to the key's
/// connection as it is when the read runs, which may be a later instance's:
/// reads of the earlier instance still waiting there would otherwise be
/// taken for the later one's reads with the same ids, 2f+1 matching answers
/// to another operation accepted as this one's.
pub(super) fn first_read_id() -> u64 {
    getrandom::u64().unwrap_or_else(|_| super::first_numbers_after())
}

/// The answers to one read on the fast path.
pub(super) struct ReadTally {
    /// A key of each replica's answer (`None`: it will not answer on the
    /// fast path; see `result_key`). Keys, not answers: a faulty replica
    /// answering every read in flight with a frame's worth would otherwise
    /// make the client hold a frame per read. The result handed to the
    /// caller is the answer that completes 2f+1 matching.
    votes: BTreeMap<ReplicaId, Option<super::ResultKey>>,
    /// Gets the accepted result, or `None` once 2f+1 matching answers can
    /// no longer come.
    done: Option<oneshot::Sender<Option<Vec<u8>>>>,
    /// The claim of the read's frame on `batches_in_flight`, given up when
    /// the read settles or lingers (`None` until the frame is sent).
    ticket: Option<BatchTicket>,
}

impl ReadTally {
    /// A read no replica has answered yet, settled through `done`.
    pub(super) fn new(done: oneshot::Sender<Option<Vec<u8>>>) -> ReadTally {
        ReadTally {
            votes: BTreeMap::new(),
            done: Some(done),
            ticket: None,
        }
    }

    /// Counts `replica`'s answer; settles the read if it can.
    pub(super) fn vote(
        &mut self,
        replica: ReplicaId,
        answer: Option<Vec<u8>>,
        quorum: usize,
        replicas: usize,
    ) {
        if self.votes.contains_key(&replica) {
            return;
        }
        let digest = answer.as_deref().map(super::result_key);
        self.votes.insert(replica, digest);
        // At most n answers: counting by scanning allocates nothing, and a
        // read is tallied n times.
        let results = || self.votes.values().flatten();
        let best = results()
            .map(|result| (result, results().filter(|other| *other == result).count()))
            .max_by_key(|(_, count)| *count);
        let outcome = match best {
            // Only this answer can have brought its result to 2f+1: an
            // earlier one would have settled the read already.
            Some((result, count)) if count >= quorum && Some(result) == digest.as_ref() => {
                answer.map(Some)
            }
            // Even if every replica yet to answer agreed with the most
            // common answer, 2f+1 would not match: order it instead.
            _ if best.map_or(0, |(_, count)| count) + replicas - self.votes.len() < quorum => {
                Some(None)
            }
            _ => None,
        };
        if let Some(outcome) = outcome
            && let Some(done) = self.done.take()
        {
            let _ = done.send(outcome);
            self.release();
        }
    }

    /// Gives up the frame's claim on the in-flight limit.
    pub(super) fn release(&self) {
        if let Some(ticket) = &self.ticket {
            ticket.release();
        }
    }
}

/// Sends a read-only request to every replica unordered (through the task
/// that frames reads, `frames`) and waits for 2f+1 matching answers;
/// `None` if they do not come within `timeout` or cannot (answers differ,
/// or replicas decline), and the call is then ordered. Past `linger`, the
/// read's frame no longer holds back the next (as a batch's calls do, see
/// `ClientConfig::batch_linger`).
pub(super) async fn read_unordered(
    shared: &Shared,
    frames: &mpsc::UnboundedSender<ReadRequest>,
    linger: Duration,
    timeout: Duration,
    operation: &[u8],
) -> Option<Vec<u8>> {
    let id = shared.next_read.fetch_add(1, Ordering::Relaxed);
    let (done, mut result) = oneshot::channel();
    shared.reads.lock().insert(id, ReadTally::new(done));
    // However this call ends, dropped by its caller included, the tally
    // goes and its frame's claim with it.
    let _filed = Filed { shared, id };
    let request = ReadRequest {
        id,
        operation: operation.to_vec(),
    };
    if frames.send(request).is_err() {
        return None;
    }
    let start = tokio::time::Instant::now();
    // A read never waits past `timeout`, however long frames linger.
    let outcome = match tokio::time::timeout(linger.min(timeout), &mut result).await {
        Ok(outcome) => Ok(outcome),
        Err(_) => {
            if let Some(tally) = shared.reads.lock().get(&id) {
                tally.release();
            }
            let left = timeout.saturating_sub(start.elapsed());
            tokio::time::timeout(left, result).await
        }
    };
    let accepted = outcome.ok()?.ok()??;
    shared.fast_reads.fetch_add(1, Ordering::Relaxed);
    Some(accepted)
}

/// A read's tally, filed while its call runs: removed (and its frame's
/// claim on the in-flight limit given up) when the call ends or is dropped.
struct Filed<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Filed<'_> {
    fn drop(&mut self) {
        if let Some(tally) = self.shared.reads.lock().remove(&self.id) {
            tally.release();
        }
    }
}

/// Sends reads on the fast path to every replica, those issued together
/// in one frame (as many as fit `max_bytes`), keeping at most
/// `frames_in_flight` frames unanswered as `batch_and_sign` does batches:
/// a lone read leaves at once, and under load reads wait for a frame to
/// settle and go out many to a frame, which is what makes them cheap for
/// every replica.
pub(super) async fn send_reads(
    mut reads: mpsc::UnboundedReceiver<ReadRequest>,
    connections: Vec<mpsc::Sender<Arc<Vec<u8>>>>,
    max_bytes: usize,
    frames_in_flight: usize,
    shared: Arc<Shared>,
) {
    let in_flight = Arc::new(Semaphore::new(frames_in_flight));
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(read) => read,
            None => match reads.recv().await {
                Some(read) => read,
                None => return,
            },
        };
        // While earlier frames are unanswered, reads pile up in the channel.
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let mut bytes = first.operation.len();
        let mut together = vec![first];
        while together.len() < READS_PER_FRAME
            && let Ok(read) = reads.try_recv()
        {
            bytes += read.operation.len() + 16;
            if bytes > max_bytes {
                next = Some(read);
                break;
            }
            together.push(read);
        }
        let ticket = BatchTicket(Arc::new(Mutex::new(Some(permit))));
        {
            let mut tallies = shared.reads.lock();
            for read in &together {
                match tallies.get_mut(&read.id) {
                    Some(tally) => tally.ticket = Some(ticket.clone()),
                    // Given up on already: the frame holds back no one.
                    None => ticket.release(),
                }
            }
        }
        let Ok(frame) = codec::encode(&ClientMessage::Reads(together)) else {
            continue;
        };
        let frame = Arc::new(frame);
        for connection in &connections {
            // A full queue drops the frame: its reads time out and are
            // ordered.
            let _ = connection.try_send(Arc::clone(&frame));
        }
    }
}

/// Tallies answers to reads that came over replica `replica`'s connection;
/// one that names another replica is counted as rejected.
pub(super) fn on_answers(shared: &Shared, replica: ReplicaId, answers: Vec<ReadReply>) {
    let mut reads = shared.reads.lock();
    for answer in answers {
        if answer.replica != replica {
            shared.rejected.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if let Some(tally) = reads.get_mut(&answer.id) {
            tally.vote(replica, answer.result, shared.read_quorum, shared.replicas);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::tests::shared_for;

    /// Files a read's tally as `read_unordered` does, and queues it.
    fn issue(shared: &Shared, out: &mpsc::UnboundedSender<ReadRequest>, id: u64) {
        let (done, _result) = oneshot::channel();
        shared.reads.lock().insert(id, ReadTally::new(done));
        out.send(ReadRequest {
            id,
            operation: vec![id as u8],
        })
        .unwrap();
    }

    fn ids(frame: &[u8]) -> Vec<u64> {
        match codec::decode::<ClientMessage>(frame).unwrap() {
            ClientMessage::Reads(reads) => reads.iter().map(|r| r.id).collect(),
            other => panic!("not reads: {other:?}"),
        }
    }

    #[tokio::test]
    async fn reads_wait_for_a_frame_to_settle_and_then_go_out_together() {
        let shared = shared_for(4);
        let (out, reads) = mpsc::unbounded_channel();
        let (queue, mut frames) = mpsc::channel(64);
        let sender = tokio::spawn(send_reads(
            reads,
            vec![queue],
            1 << 20,
            1,
            Arc::clone(&shared),
        ));
        // A lone read leaves at once.
        issue(&shared, &out, 1);
        assert_eq!(ids(&frames.recv().await.unwrap()), vec![1]);
        // With that frame unanswered (one in flight), the next reads wait...
        for id in 2..=4 {
            issue(&shared, &out, id);
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(frames.try_recv().is_err(), "a second frame left early");
        // ...until one of its reads settles: 2f+1 matching answers.
        {
            let mut tallies = shared.reads.lock();
            let tally = tallies.get_mut(&1).unwrap();
            for replica in 0..3 {
                tally.vote(replica, Some(vec![7]), 3, 4);
            }
        }
        assert_eq!(ids(&frames.recv().await.unwrap()), vec![2, 3, 4]);
        // A read given up on (it lingered, see `read_unordered`) frees its
        // frame's claim too.
        issue(&shared, &out, 5);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(frames.try_recv().is_err());
        shared.reads.lock().get(&2).unwrap().release();
        assert_eq!(ids(&frames.recv().await.unwrap()), vec![5]);
        drop(out);
        sender.await.unwrap();
    }

    #[tokio::test]
    async fn a_read_its_caller_gives_up_on_leaves_nothing_behind() {
        // One frame in flight, and no replica answers: only the caller can
        // give the frame's claim back.
        let shared = shared_for(4);
        let (out, reads) = mpsc::unbounded_channel();
        let (queue, mut frames) = mpsc::channel(64);
        let sender = tokio::spawn(send_reads(
            reads,
            vec![queue],
            1 << 20,
            1,
            Arc::clone(&shared),
        ));
        let long = Duration::from_secs(3600);
        {
            // The caller drops the call while it waits for answers (a
            // `select!` or a timeout around it), before it lingers.
            let call = read_unordered(&shared, &out, long, long, &[1]);
            let mut call = std::pin::pin!(call);
            tokio::select! {
                biased;
                _ = &mut call => panic!("nobody answered"),
                () = async {
                    assert_eq!(ids(&frames.recv().await.unwrap()).len(), 1);
                } => {}
            }
        }
        assert!(
            shared.reads.lock().is_empty(),
            "the tally of a dropped read stays forever"
        );
        // The next read still leaves: the dropped one's frame gave its
        // claim back.
        issue(&shared, &out, 1);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            frames.try_recv().map(|frame| ids(&frame)),
            Ok(vec![1]),
            "a dropped read holds its frame's claim forever"
        );
        drop(out);
        sender.await.unwrap();
    }

    #[tokio::test]
    async fn answers_to_reads_of_an_earlier_instance_of_the_client_settle_none_of_its_own() {
        // The same client key before and after a restart. Its first
        // instance sent a read and stopped; the read still waits at the
        // replicas, which will answer it to the key's connection, by then
        // the second instance's.
        let (earlier, later) = (shared_for(4), shared_for(4));
        let (out, mut sent) = mpsc::unbounded_channel();
        let long = Duration::from_secs(3600);
        {
            let call = read_unordered(&earlier, &out, long, long, b"balance(1)");
            let mut call = std::pin::pin!(call);
            tokio::select! {
                biased;
                _ = &mut call => panic!("nobody answered"),
                () = tokio::task::yield_now() => {}
            }
        }
        let old = sent.try_recv().unwrap().id;
        // The second instance reads another operation...
        let call = read_unordered(&later, &out, long, long, b"balance(2)");
        let mut call = std::pin::pin!(call);
        tokio::select! {
            biased;
            _ = &mut call => panic!("nobody answered"),
            () = tokio::task::yield_now() => {}
        }
        let new = sent.try_recv().unwrap().id;
        // ...and 2f+1 replicas answer the first instance's read to it.
        for replica in 0..3 {
            let answer = ReadReply {
                id: old,
                replica,
                result: Some(b"balance of 1".to_vec()),
            };
            on_answers(&later, replica, vec![answer]);
        }
        tokio::select! {
            biased;
            accepted = &mut call => panic!(
                "balance(2) accepted the answer to balance(1): {accepted:?}"
            ),
            () = tokio::task::yield_now() => {}
        }
        // Its own answers settle it.
        for replica in 0..3 {
            let answer = ReadReply {
                id: new,
                replica,
                result: Some(b"balance of 2".to_vec()),
            };
            on_answers(&later, replica, vec![answer]);
        }
        assert_eq!(call.await, Some(b"balance of 2".to_vec()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_waits_no_longer_than_its_timeout_however_long_frames_linger() {
        // No replica answers; frames linger far longer than reads may wait.
        let shared = shared_for(4);
        let (out, _sent) = mpsc::unbounded_channel();
        let (linger, timeout) = (Duration::from_secs(3600), Duration::from_millis(10));
        let start = tokio::time::Instant::now();
        assert_eq!(
            read_unordered(&shared, &out, linger, timeout, b"x").await,
            None
        );
        assert!(
            start.elapsed() <= timeout,
            "ordered only after {:?}",
            start.elapsed()
        );
    }

    fn tally() -> (ReadTally, oneshot::Receiver<Option<Vec<u8>>>) {
        let (done, result) = oneshot::channel();
        (ReadTally::new(done), result)
    }

    #[test]
    fn a_read_settles_on_2f_plus_1_matching_answers_and_only_then() {
        // n = 4, quorum 3. One replica lies, and says so twice.
        let (mut read, mut result) = tally();
        read.vote(0, Some(vec![1]), 3, 4);
        read.vote(3, Some(vec![9]), 3, 4);
        read.vote(3, Some(vec![1]), 3, 4);
        read.vote(1, Some(vec![1]), 3, 4);
        assert!(
            result.try_recv().is_err(),
            "two matching answers are not 2f+1"
        );
        read.vote(2, Some(vec![1]), 3, 4);
        assert_eq!(result.try_recv().unwrap(), Some(vec![1]));

        // Answers split so that 2f+1 can no longer match: ordered instead.
        let (mut read, mut result) = tally();
        read.vote(0, Some(vec![1]), 3, 4);
        read.vote(1, Some(vec![2]), 3, 4);
        assert!(result.try_recv().is_err(), "two more could still match");
        read.vote(2, None, 3, 4);
        assert_eq!(result.try_recv().unwrap(), None);
    }

    #[test]
    fn a_faulty_replicas_huge_answer_does_not_settle_a_read_and_a_second_answer_is_ignored() {
        let tally = || {
            let (done, result) = oneshot::channel();
            (ReadTally::new(done), result)
        };
        let (mut read, mut result) = tally();
        read.vote(3, Some(vec![9; 1 << 20]), 3, 4);
        // Its second answer, now agreeing with the others, is not counted.
        read.vote(3, Some(vec![1]), 3, 4);
        read.vote(0, Some(vec![1]), 3, 4);
        read.vote(1, Some(vec![1]), 3, 4);
        assert!(
            result.try_recv().is_err(),
            "two matching answers and one replica's change of mind are not 2f+1"
        );
        read.vote(2, Some(vec![1]), 3, 4);
        assert_eq!(result.try_recv().unwrap(), Some(vec![1]));
    }
}

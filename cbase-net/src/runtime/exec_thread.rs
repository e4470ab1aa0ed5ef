//! The execution thread's loop: committed batches, fetched states and reads
//! on the fast path, as the protocol task sends them.
//!
//! Batches run in sequence order, each logged to the data directory before
//! it runs (and so before any reply to it), all that queued together in one
//! commit. Reads run once execution has reached their barrier; those that
//! queued together run together, and when the thread has no batch waiting
//! it runs the last job of them itself rather than waking a worker (see
//! [`Execution::read_all`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cbase_core::Service;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::execution::{Execution, ReplySink};
use super::halt::Halt;
use super::reads::{PendingRead, WaitingReads};
use crate::config::ReplicaId;
use crate::message::{Hash, ReadReply, Seq};
use crate::protocol::{Committed, Input};
use crate::storage::Storage;

/// What the protocol task asks of the execution thread, in order.
pub(super) enum ExecCommand {
    Execute(Committed),
    /// Reads on the fast path (those of one frame), each run once
    /// execution reaches its barrier.
    Reads(Vec<PendingRead>),
    Install {
        seq: Seq,
        digest: Hash,
        state: crate::checkpoint::parts::Transferred,
    },
    /// The read barrier went down to this (a new view did not carry a
    /// number this replica voted for, which therefore never committed):
    /// reads parked behind a higher one wait only for this.
    LowerReadBarrier(Seq),
}

/// How many commands the thread takes off its channel at a time.
const TAKE_AT_ONCE: usize = 256;

/// The execution thread and what it talks to.
pub(super) struct ExecThread<S: Service> {
    pub id: ReplicaId,
    pub execution: Execution<S>,
    pub commands: std::sync::mpsc::Receiver<ExecCommand>,
    /// The data directory, if the replica keeps one.
    pub storage: Option<Arc<Storage>>,
    pub halt: Arc<Halt>,
    /// Where answers to reads that cannot wait go.
    pub read_sink: Arc<dyn ReplySink>,
    /// Checkpoints taken and states installed, to the protocol task.
    pub events: super::inbox::Senders,
    /// The protocol's read barrier as connections stamp reads with it
    /// (`NO_READS` while it gives none).
    pub read_barrier: Arc<AtomicU64>,
}

impl<S> ExecThread<S>
where
    S: Service,
    S::Request: DeserializeOwned,
    S::Response: Serialize,
{
    /// Runs until the protocol task is gone (either channel closes) or the
    /// data directory fails; then stops the executor.
    pub fn run(mut self) {
        let mut queued: VecDeque<ExecCommand> = VecDeque::new();
        let mut waiting = WaitingReads::default();
        loop {
            if queued.is_empty() {
                let Ok(command) = self.commands.recv() else {
                    break;
                };
                if !self.take(Some(command), &mut queued) {
                    break;
                }
            }
            let report = match queued.pop_front().expect("just filled") {
                ExecCommand::Reads(reads) => {
                    if !self.take(None, &mut queued) {
                        break;
                    }
                    self.run_reads(reads, &mut queued, &mut waiting);
                    continue;
                }
                ExecCommand::LowerReadBarrier(barrier) => {
                    waiting.lower_to(barrier);
                    None
                }
                ExecCommand::Execute(batch) => self.execution.execute(batch).map(|record| {
                    // (`info` once the checkpoint is stable.)
                    tracing::debug!(
                        replica = self.id,
                        seq = record.seq,
                        digest = %crate::crypto::short_hex(&record.digest),
                        "took a checkpoint"
                    );
                    Input::CheckpointTaken {
                        seq: record.seq,
                        state: record.digest,
                    }
                }),
                ExecCommand::Install { seq, digest, state } => {
                    let started = std::time::Instant::now();
                    match self.execution.install_transferred(seq, state) {
                        Ok((_, installed)) => {
                            tracing::info!(replica = self.id, seq, ?installed, took = ?started.elapsed(), "installed the fetched state");
                            Some(Input::StateInstalled { seq, state: digest })
                        }
                        Err(error) => {
                            // It matched the agreed digest, so this is a bug in the
                            // service's containers, not a lying peer.
                            tracing::error!(seq, %error, "cannot install a verified checkpoint");
                            None
                        }
                    }
                }
            };
            let ready = waiting.ready(self.execution.last_executed());
            self.execution.read_all(ready, queued.is_empty());
            if let Some(report) = report
                && self.events.own_report(report).is_err()
            {
                break;
            }
        }
        self.execution.shutdown();
    }

    /// Queues `first` and what else has arrived, after logging the batches
    /// among them (every batch on disk before it runs, one commit for all);
    /// false if the log cannot be written, and the replica halts.
    fn take(&self, first: Option<ExecCommand>, queued: &mut VecDeque<ExecCommand>) -> bool {
        let arrived: Vec<ExecCommand> = first
            .into_iter()
            .chain(self.commands.try_iter().take(TAKE_AT_ONCE))
            .collect();
        if let Some(storage) = &self.storage {
            let batches: Vec<&Committed> = arrived
                .iter()
                .filter_map(|command| match command {
                    ExecCommand::Execute(batch) => Some(batch),
                    ExecCommand::Install { .. }
                    | ExecCommand::Reads(_)
                    | ExecCommand::LowerReadBarrier(_) => None,
                })
                .collect();
            if let Err(error) = storage.log_executed(&batches) {
                self.halt
                    .stop(format!("it cannot log the batches it executes: {error}"));
                return false;
            }
        }
        queued.extend(arrived);
        true
    }

    /// Runs `reads` and every other read queued, those whose barrier
    /// execution has reached now and the others once it does.
    fn run_reads(
        &mut self,
        mut reads: Vec<PendingRead>,
        queued: &mut VecDeque<ExecCommand>,
        waiting: &mut WaitingReads,
    ) {
        // Each read waits for its own barrier, so running it before a batch
        // queued ahead of it is as correct as running it after.
        let mut others = VecDeque::with_capacity(queued.len());
        for command in queued.drain(..) {
            match command {
                ExecCommand::Reads(more) => reads.extend(more),
                other => others.push_back(other),
            }
        }
        *queued = others;
        let executed = self.execution.last_executed();
        // A read stamped before a new view lowered the barrier may arrive
        // after the command that lowered the parked ones: it waits for no
        // more than the barrier now (which only ever goes down for a new
        // view, over numbers that never committed).
        let barrier = self.read_barrier.load(Ordering::Acquire);
        let mut now = Vec::new();
        if barrier != super::NO_READS {
            // Likewise a read that arrived while views changed (no barrier
            // to cap it with) and is parked behind its old stamp: no
            // lowering command follows if the new view's barrier is no
            // lower than the last one given out.
            waiting.lower_to(barrier);
            now.extend(waiting.ready(executed));
        }
        for mut read in reads {
            if barrier != super::NO_READS {
                read.after = read.after.min(barrier);
            }
            if read.after <= executed {
                now.push(read);
            } else if let Err(read) = waiting.park(read) {
                let reply = ReadReply {
                    id: read.id,
                    replica: self.id,
                    result: None,
                };
                self.read_sink.send_read(&read.client, reply);
            }
        }
        // With no batch waiting, this thread is free to run some itself.
        self.execution.read_all(now, queued.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cbase_core::ExecutorBuilder;

    use super::*;
    use crate::crypto::{PublicKey, SecretKey};
    use crate::message::Reply;
    use crate::runtime::execution::CheckpointRecord;
    use crate::runtime::execution::tests::{Op, Slots};

    /// Passes the answers to reads on.
    struct Answers(parking_lot::Mutex<std::sync::mpsc::Sender<ReadReply>>);

    impl ReplySink for Answers {
        fn send(&self, _: &PublicKey, _: Reply) {}
        fn checkpoint(&self, _: CheckpointRecord) {}
        fn send_read(&self, _: &PublicKey, reply: ReadReply) {
            let _ = self.0.lock().send(reply);
        }
    }

    fn read(client: PublicKey, id: u64, after: Seq) -> PendingRead {
        PendingRead {
            after,
            ..PendingRead::uncounted(client, id, cbase_core::codec::encode(&Op::Get(1)).unwrap())
        }
    }

    /// Defect: a read stamped with the barrier of an earlier view can reach
    /// execution after the command that lowered the parked reads, and is
    /// then clamped to the barrier as it is when execution takes it. While
    /// the replica changes views again that barrier is `NO_READS`, and the
    /// read is parked behind its stale stamp. The protocol task sends
    /// `LowerReadBarrier` only when a barrier falls below the last one it
    /// gave out (the already lowered one), so the next view, which carries
    /// no more than the last, lowers nothing: the read waits for a number
    /// that never committed until later writes take it, holding its
    /// connection's read slot and a place among the parked reads.
    ///
    /// Schedule (the commands the protocol task sends today, in order, and
    /// the barrier it stores): view 0, the replica voted to commit slots 1
    /// and 2 (barrier 2) and executed neither; a connection loads barrier 2
    /// for read A and is preempted before it hands A over. View 1 carries
    /// neither slot: barrier 0 and `LowerReadBarrier(0)`. View 1's primary
    /// fails too: the replica changes views (barrier `NO_READS`). Now the
    /// connection hands A over and execution parks it behind 2. View 2
    /// carries nothing either: barrier 0, no `LowerReadBarrier` (0 is not
    /// below 0). A read B arriving now is answered at once; A never is.
    #[test]
    fn a_read_stamped_before_a_lowered_barrier_and_taken_during_a_later_view_change_is_not_parked_for_good()
     {
        let (answers, answered) = std::sync::mpsc::channel();
        let sink = Arc::new(Answers(parking_lot::Mutex::new(answers))) as Arc<dyn ReplySink>;
        let execution = Execution::start(
            0,
            ExecutorBuilder::new().workers(1),
            Slots::default(),
            Arc::clone(&sink),
            Default::default(),
        )
        .unwrap();
        let (to_execution, commands) = std::sync::mpsc::channel();
        let barrier = Arc::new(AtomicU64::new(2));
        let (events, _inbox) = super::super::inbox::inbox([1, 2, 3]);
        let thread = std::thread::spawn({
            let barrier = Arc::clone(&barrier);
            move || {
                ExecThread {
                    id: 0,
                    execution,
                    commands,
                    storage: None,
                    halt: Arc::default(),
                    read_sink: sink,
                    events,
                    read_barrier: barrier,
                }
                .run()
            }
        });
        let client = SecretKey::from_seed([7; 32]).public();
        // Every read answered (or declined), in order.
        let mut seen: Vec<u64> = Vec::new();
        let wait = |id: u64, seen: &mut Vec<u64>| {
            while !seen.contains(&id) {
                let answer = answered
                    .recv_timeout(Duration::from_secs(60))
                    .unwrap_or_else(|_| panic!("read {id} not answered"));
                seen.push(answer.id);
            }
        };
        // Read A is stamped with view 0's barrier (2) by its connection.
        let stamp = barrier.load(Ordering::Acquire);
        // View 1 lowers the barrier to 0.
        barrier.store(super::super::NO_READS, Ordering::Release);
        barrier.store(0, Ordering::Release);
        to_execution.send(ExecCommand::LowerReadBarrier(0)).unwrap();
        // A view change to view 2 begins; read A reaches execution, then a
        // marker read, answered once both were taken.
        barrier.store(super::super::NO_READS, Ordering::Release);
        to_execution
            .send(ExecCommand::Reads(vec![read(client, 1, stamp)]))
            .unwrap();
        to_execution
            .send(ExecCommand::Reads(vec![read(client, 100, 0)]))
            .unwrap();
        wait(100, &mut seen);
        // View 2 carries nothing: barrier 0, and nothing lowered.
        barrier.store(0, Ordering::Release);
        to_execution
            .send(ExecCommand::Reads(vec![read(client, 2, 0)]))
            .unwrap();
        wait(2, &mut seen);
        // The replica stops: execution waits for everything it ran.
        drop(to_execution);
        thread.join().unwrap();
        seen.extend(answered.try_iter().map(|a| a.id));
        assert!(
            seen.contains(&1),
            "read A, stamped 2 in view 0, is parked behind slot 2, which neither view 1 nor \
             view 2 carries, while later reads are answered (answered: {seen:?})"
        );
    }
}

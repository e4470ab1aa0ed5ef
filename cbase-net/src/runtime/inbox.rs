//! The protocol loop's inputs, in two queues taken from in turn: what other
//! replicas and this replica's own threads send, and what clients send.
//!
//! With one queue, every input waited behind every other in arrival order,
//! and clients are many and cheap to be: one that opens connections by the
//! hundred and keeps each one's batches coming fills the queue, and every
//! prepare, commit and checkpoint from the other replicas then waits behind
//! thousands of client batches. Agreement slows for everyone, and the
//! backups' request timers may run out on a correct primary. Taking from
//! the two queues in turn means a replica message waits for at most as many
//! client inputs as there are replica inputs ahead of it, however many
//! clients queue. It is a turn, not a priority: a faulty replica flooding
//! its messages still leaves the clients every other input.
//!
//! What waits is bounded in bytes as well as in count: each input holds its
//! frame's size from a budget until the loop takes it, one budget per peer
//! replica ([`PEER_BYTES`]) and one for all clients ([`CLIENT_BYTES`]). A
//! count alone let 8,192 inputs of up to a frame each (16 MiB) wait: a
//! faulty peer sending large messages while the loop is busy could make a
//! replica hold 128 GiB. A connection whose budget is spent waits before
//! reading more, and its sender waits on the network.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::config::ReplicaId;
use crate::message::ReplicaMessage;
use crate::protocol::Input;

/// How many inputs each queue holds before its senders wait.
const CAPACITY: usize = 8192;

/// Bytes of messages from one peer replica waiting for the loop.
pub const PEER_BYTES: usize = 64 << 20;

/// Bytes of client batches, from all clients, waiting for the loop.
pub const CLIENT_BYTES: usize = 256 << 20;

/// An input and what it holds of its budget until the loop takes it.
struct Queued {
    input: Input,
    _held: Option<OwnedSemaphorePermit>,
}

/// The inbox is gone: the replica is stopping.
#[derive(Debug)]
pub(super) struct Closed;

/// Where inputs are sent: which queue a sender feeds says whom it speaks for.
#[derive(Clone)]
pub(super) struct Senders {
    /// Other replicas' messages and this replica's own threads' reports.
    replicas: mpsc::Sender<Queued>,
    /// Client batches.
    clients: mpsc::Sender<Queued>,
    /// Each peer's budget.
    peer_bytes: Arc<BTreeMap<ReplicaId, Arc<Semaphore>>>,
    /// The clients' budget.
    client_bytes: Arc<Semaphore>,
}

/// The receiving end, read by the protocol loop alone.
pub(super) struct Inbox {
    replicas: mpsc::Receiver<Queued>,
    clients: mpsc::Receiver<Queued>,
    /// Whose turn it is to go first.
    clients_first: bool,
}

/// A fresh pair of queues, with a budget for each of `peers`.
pub(super) fn inbox(peers: impl IntoIterator<Item = ReplicaId>) -> (Senders, Inbox) {
    let (replicas, replicas_inbox) = mpsc::channel(CAPACITY);
    let (clients, clients_inbox) = mpsc::channel(CAPACITY);
    let peer_bytes = peers
        .into_iter()
        .map(|peer| (peer, Arc::new(Semaphore::new(PEER_BYTES))))
        .collect();
    (
        Senders {
            replicas,
            clients,
            peer_bytes: Arc::new(peer_bytes),
            client_bytes: Arc::new(Semaphore::new(CLIENT_BYTES)),
        },
        Inbox {
            replicas: replicas_inbox,
            clients: clients_inbox,
            clients_first: false,
        },
    )
}

/// Takes `bytes` of `budget` (all of it, for an input larger than the
/// whole budget), waiting until they are free.
async fn take(budget: &Arc<Semaphore>, bytes: usize, all: usize) -> OwnedSemaphorePermit {
    let bytes = u32::try_from(bytes.clamp(1, all)).unwrap_or(u32::MAX);
    Arc::clone(budget)
        .acquire_many_owned(bytes)
        .await
        .expect("budgets are never closed")
}

impl Senders {
    /// Queues `message` from peer `from`, which arrived in a frame of
    /// `bytes` bytes, once its budget has room.
    pub async fn replica_message(
        &self,
        from: ReplicaId,
        message: ReplicaMessage,
        bytes: usize,
    ) -> Result<(), Closed> {
        let held = match self.peer_bytes.get(&from) {
            Some(budget) => Some(take(budget, bytes, PEER_BYTES).await),
            None => None,
        };
        let queued = Queued {
            input: Input::Replica(from, message),
            _held: held,
        };
        self.replicas.send(queued).await.map_err(|_| Closed)
    }

    /// Queues a client's `input`, which arrived in a frame of `bytes`
    /// bytes, once the clients' budget has room.
    pub async fn client_input(&self, input: Input, bytes: usize) -> Result<(), Closed> {
        let held = take(&self.client_bytes, bytes, CLIENT_BYTES).await;
        let queued = Queued {
            input,
            _held: Some(held),
        };
        self.clients.send(queued).await.map_err(|_| Closed)
    }

    /// Queues a report of this replica's own (from a thread that is not
    /// the runtime's), waiting for room.
    pub fn own_report(&self, input: Input) -> Result<(), Closed> {
        self.replicas
            .blocking_send(Queued { input, _held: None })
            .map_err(|_| Closed)
    }
}

impl Inbox {
    /// Waits for the next input; `None` once both queues are closed and empty.
    pub async fn recv(&mut self) -> Option<Input> {
        if let Some(input) = self.try_recv() {
            return Some(input);
        }
        // Both are empty: whichever gets an input first.
        let queued = tokio::select! {
            Some(queued) = self.replicas.recv() => queued,
            Some(queued) = self.clients.recv() => queued,
            else => return None,
        };
        Some(queued.input)
    }

    /// The next input already waiting, from the two queues in turn (from
    /// the other one when it is one's turn and it is empty). Its bytes go
    /// back to its budget.
    pub fn try_recv(&mut self) -> Option<Input> {
        self.clients_first = !self.clients_first;
        let (first, second) = if self.clients_first {
            (&mut self.clients, &mut self.replicas)
        } else {
            (&mut self.replicas, &mut self.clients)
        };
        let queued = first.try_recv().ok().or_else(|| second.try_recv().ok())?;
        Some(queued.input)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    use super::*;
    use crate::message::{ClientBatch, RequestBatch, Status};

    fn client_batch(n: u64) -> Input {
        Input::Client(ClientBatch::unsigned(RequestBatch {
            client: crate::crypto::SecretKey::from_seed([1; 32]).public(),
            requests: vec![crate::message::ClientRequest {
                lane: 0,
                number: n,
                operation: Vec::new(),
            }],
        }))
    }

    fn status(from: u32) -> ReplicaMessage {
        ReplicaMessage::Status(Status {
            view: 0,
            changing_to: None,
            delivered: 0,
            low: 0,
            replica: from,
            probe: None,
            echo: None,
        })
    }

    /// Everything waiting, in the order the loop takes it.
    fn drain(inbox: &mut Inbox) -> Vec<Input> {
        std::iter::from_fn(|| inbox.try_recv()).collect()
    }

    /// Whether `future` is still waiting when polled once.
    fn waits<F: Future>(future: std::pin::Pin<&mut F>) -> bool {
        matches!(
            future.poll(&mut Context::from_waker(Waker::noop())),
            Poll::Pending
        )
    }

    #[tokio::test]
    async fn a_replica_message_does_not_wait_behind_a_full_queue_of_client_batches() {
        let (senders, mut inbox) = inbox([1, 2, 3]);
        for n in 0..CAPACITY as u64 {
            senders.client_input(client_batch(n), 100).await.unwrap();
        }
        assert_eq!(senders.clients.capacity(), 0, "the clients' queue is full");
        senders.replica_message(2, status(2), 100).await.unwrap();
        let first = inbox.recv().await.unwrap();
        let second = inbox.try_recv().unwrap();
        assert!(
            [first, second]
                .iter()
                .any(|input| matches!(input, Input::Replica(2, _))),
            "the replica's message is among the first two inputs taken"
        );
    }

    #[tokio::test]
    async fn a_replica_flooding_its_messages_leaves_clients_every_other_turn() {
        let (senders, mut inbox) = inbox([1, 2, 3]);
        for _ in 0..1000 {
            senders.replica_message(3, status(3), 100).await.unwrap();
        }
        for n in 0..10 {
            senders.client_input(client_batch(n), 100).await.unwrap();
        }
        let taken = drain(&mut inbox);
        assert_eq!(taken.len(), 1010);
        let last_client = taken
            .iter()
            .rposition(|input| matches!(input, Input::Client(_)))
            .unwrap();
        assert!(
            last_client < 20,
            "the ten client batches are taken within the first twenty inputs, not after the flood (last at {last_client})"
        );
    }

    /// A peer's large messages wait for the loop within its budget: the
    /// next one waits (and so does the connection reading it) until the
    /// loop takes one, while another peer's go through.
    #[tokio::test]
    async fn what_a_peer_has_waiting_is_bounded_in_bytes_and_apart_from_the_others() {
        let (senders, mut inbox) = inbox([1, 2, 3]);
        let large = 40 << 20;
        senders.replica_message(1, status(1), large).await.unwrap();
        let mut second = Box::pin(senders.replica_message(1, status(1), large));
        assert!(waits(second.as_mut()), "80 MiB would be over its 64");
        senders.replica_message(2, status(2), large).await.unwrap();
        assert!(matches!(inbox.recv().await, Some(Input::Replica(1, _))));
        second.await.unwrap();
        // Clients share theirs; a frame larger than a budget takes it all.
        senders
            .client_input(client_batch(0), 2 * CLIENT_BYTES)
            .await
            .unwrap();
        let mut next = Box::pin(senders.client_input(client_batch(1), 1));
        assert!(waits(next.as_mut()));
        drop(next);
        assert_eq!(drain(&mut inbox).len(), 3);
        senders.client_input(client_batch(1), 1).await.unwrap();
    }

    #[tokio::test]
    async fn each_queue_keeps_its_own_order_and_the_inbox_ends_when_both_close() {
        let (senders, mut inbox) = inbox([1, 2, 3]);
        for n in 0..3 {
            senders.client_input(client_batch(n), 10).await.unwrap();
        }
        senders.replica_message(1, status(1), 10).await.unwrap();
        senders.replica_message(2, status(2), 10).await.unwrap();
        drop(senders);
        let mut numbers = Vec::new();
        let mut senders_seen = Vec::new();
        while let Some(input) = inbox.recv().await {
            match input {
                Input::Client(batch) => numbers.push(batch.batch.requests[0].number),
                Input::Replica(from, _) => senders_seen.push(from),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(numbers, [0, 1, 2]);
        assert_eq!(senders_seen, [1, 2]);
    }
}

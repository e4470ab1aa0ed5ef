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

use tokio::sync::mpsc;

use crate::protocol::Input;

/// How many inputs each queue holds before its senders wait.
const CAPACITY: usize = 8192;

/// Where inputs are sent: which queue a sender feeds says whom it speaks for.
#[derive(Clone)]
pub(super) struct Senders {
    /// Other replicas' messages and this replica's own threads' reports.
    pub replicas: mpsc::Sender<Input>,
    /// Client batches.
    pub clients: mpsc::Sender<Input>,
}

/// The receiving end, read by the protocol loop alone.
pub(super) struct Inbox {
    replicas: mpsc::Receiver<Input>,
    clients: mpsc::Receiver<Input>,
    /// Whose turn it is to go first.
    clients_first: bool,
}

/// A fresh pair of queues.
pub(super) fn inbox() -> (Senders, Inbox) {
    let (replicas, replicas_inbox) = mpsc::channel(CAPACITY);
    let (clients, clients_inbox) = mpsc::channel(CAPACITY);
    (
        Senders { replicas, clients },
        Inbox {
            replicas: replicas_inbox,
            clients: clients_inbox,
            clients_first: false,
        },
    )
}

impl Inbox {
    /// Waits for the next input; `None` once both queues are closed and empty.
    pub async fn recv(&mut self) -> Option<Input> {
        if let Some(input) = self.try_recv() {
            return Some(input);
        }
        // Both are empty: whichever gets an input first.
        tokio::select! {
            Some(input) = self.replicas.recv() => Some(input),
            Some(input) = self.clients.recv() => Some(input),
            else => None,
        }
    }

    /// The next input already waiting, from the two queues in turn (from
    /// the other one when it is one's turn and it is empty).
    pub fn try_recv(&mut self) -> Option<Input> {
        self.clients_first = !self.clients_first;
        let (first, second) = if self.clients_first {
            (&mut self.clients, &mut self.replicas)
        } else {
            (&mut self.replicas, &mut self.clients)
        };
        first.try_recv().ok().or_else(|| second.try_recv().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ClientBatch, ReplicaMessage, RequestBatch, Status};

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

    fn status(from: u32) -> Input {
        Input::Replica(
            from,
            ReplicaMessage::Status(Status {
                view: 0,
                changing_to: None,
                delivered: 0,
                low: 0,
                replica: from,
            }),
        )
    }

    /// Everything waiting, in the order the loop takes it.
    fn drain(inbox: &mut Inbox) -> Vec<Input> {
        std::iter::from_fn(|| inbox.try_recv()).collect()
    }

    #[tokio::test]
    async fn a_replica_message_does_not_wait_behind_a_full_queue_of_client_batches() {
        let (senders, mut inbox) = inbox();
        for n in 0..CAPACITY as u64 {
            senders.clients.try_send(client_batch(n)).unwrap();
        }
        assert!(
            senders.clients.try_send(client_batch(0)).is_err(),
            "the clients' queue is full"
        );
        senders.replicas.try_send(status(2)).unwrap();
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
        let (senders, mut inbox) = inbox();
        for _ in 0..1000 {
            senders.replicas.try_send(status(3)).unwrap();
        }
        for n in 0..10 {
            senders.clients.try_send(client_batch(n)).unwrap();
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

    #[tokio::test]
    async fn each_queue_keeps_its_own_order_and_the_inbox_ends_when_both_close() {
        let (senders, mut inbox) = inbox();
        for n in 0..3 {
            senders.clients.try_send(client_batch(n)).unwrap();
        }
        senders.replicas.try_send(status(1)).unwrap();
        senders.replicas.try_send(status(2)).unwrap();
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

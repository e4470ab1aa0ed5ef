//! Reads on the read-only fast path, as the runtime and `NetClient` do
//! them: a client sends a read-only operation unordered to every replica;
//! a replica stamps it with its read barrier when it arrives (or declines
//! it while it has none), parks it until its execution reaches the barrier,
//! runs it there and answers over the simulated network; the client accepts
//! 2f+1 matching answers and orders the operation otherwise (answers that
//! cannot match, or none in time).

use std::collections::BTreeMap;

use cbase_core::{ExecError, codec};
use cbase_net::config::ReplicaId;
use cbase_net::message::ReadReply;
use rand::Rng;

use crate::service::Op;
use crate::world::{Delivery, Done, Endpoint, Event, ParkedRead, READ_TIMEOUT, Reading, World};

/// Answers a Byzantine instance remembers per operation (each different
/// from the one before), to replay stale.
const REMEMBERED_ANSWERS: usize = 16;

impl World {
    // ------------------------------------------------------------ clients

    /// Starts a read-only operation on the fast path: to every replica.
    pub fn read_unordered(&mut self, c: usize, op: Op) {
        let now = self.now;
        let client = &mut self.clients[c];
        let id = client.next_read;
        client.next_read += 1;
        let operation = codec::encode(&op).expect("operations encode");
        client.reading = Some(Reading {
            op,
            id,
            invoked: now,
            votes: BTreeMap::new(),
            until: now + READ_TIMEOUT,
        });
        // About the size of a small request's frame.
        let size = 64 + operation.len();
        for to in 0..self.n as ReplicaId {
            for target in self.instances_of(to) {
                for delay in self.network.client_link(now, size, &mut self.rng) {
                    self.schedule(
                        delay,
                        Event::ToReplica {
                            from: Endpoint::Client(c),
                            to: target,
                            message: Delivery::Read {
                                id,
                                operation: operation.clone(),
                            },
                        },
                    );
                }
            }
        }
    }

    /// Gives up on the fast path: the operation is ordered, as invoked
    /// when the read started.
    pub fn order_read(&mut self, c: usize) {
        let reading = self.clients[c].reading.take().expect("a read under way");
        self.ordered_reads += 1;
        self.order(c, reading.op, reading.invoked);
    }

    /// A replica's answer to a read reached client `c` (from replica `from`,
    /// as its connection authenticates it): tallied as `ReadTally` does.
    pub fn on_read_reply(&mut self, c: usize, from: ReplicaId, reply: ReadReply) {
        let (now, n, quorum) = (self.now, self.n, self.cluster.quorum());
        let client = &mut self.clients[c];
        let Some(reading) = &mut client.reading else {
            return;
        };
        if reply.id != reading.id || reply.replica != from {
            return;
        }
        reading.votes.entry(from).or_insert(reply.result);
        let mut counts: BTreeMap<&Vec<u8>, usize> = BTreeMap::new();
        for result in reading.votes.values().flatten() {
            *counts.entry(result).or_default() += 1;
        }
        let best = counts.iter().max_by_key(|(_, count)| **count);
        let most = best.map_or(0, |(_, count)| *count);
        if most >= quorum {
            let bytes = (*best.expect("counted").0).clone();
            let reading = client.reading.take().expect("checked above");
            self.fast_reads += 1;
            client.next_at = now + self.rng.gen_range(0..=self.scenario.think);
            match codec::decode::<Result<u64, ExecError>>(&bytes) {
                Ok(Ok(result)) => client.history.push(Done {
                    invoked: reading.invoked,
                    responded: now,
                    op: reading.op,
                    result,
                    number: None,
                }),
                other => self.violation(format!(
                    "client {c} accepted {other:?} for {:?} on the fast path",
                    reading.op
                )),
            }
        } else if most + n - reading.votes.len() < quorum {
            // 2f+1 matching answers can no longer come: order it.
            self.order_read(c);
        }
    }

    // ------------------------------------------------------------ replicas

    /// A read reached a replica instance: stamped with the read barrier as
    /// of now and parked until execution reaches it, or declined while the
    /// replica has no barrier (recovering, changing views).
    pub fn on_read(&mut self, instance: usize, c: usize, id: u64, operation: Vec<u8>) {
        if self.nodes[instance].crashed || self.byzantine_read(instance, c, id, &operation) {
            return;
        }
        let node = &mut self.nodes[instance];
        match node.replica.read_barrier() {
            None => {
                let reply = ReadReply {
                    id,
                    replica: node.id,
                    result: None,
                };
                self.send_read_reply(instance, c, &operation, reply);
            }
            Some(barrier) => {
                if barrier > node.execution.last_executed() && self.is_correct(instance) {
                    self.parked_reads += 1;
                }
                let node = &mut self.nodes[instance];
                node.read_arrivals += 1;
                node.parked_reads
                    .insert((barrier, node.read_arrivals), (c, id, operation));
                self.run_ready_reads(instance);
            }
        }
    }

    /// Runs the parked reads whose barrier execution has reached. As the
    /// runtime does, reads parked behind a barrier a new view lowered (it
    /// did not carry a number this replica voted for, which so never
    /// committed) wait for the new barrier only.
    pub fn run_ready_reads(&mut self, instance: usize) {
        let node = &mut self.nodes[instance];
        if node.crashed || node.parked_reads.is_empty() {
            return;
        }
        if let Some(barrier) = node.replica.read_barrier() {
            let above = node.parked_reads.split_off(&(barrier.saturating_add(1), 0));
            for ((_, arrival), read) in above {
                node.parked_reads.insert((barrier, arrival), read);
            }
        }
        let executed = node.execution.last_executed();
        let later = node
            .parked_reads
            .split_off(&(executed.saturating_add(1), 0));
        let ready = std::mem::replace(&mut node.parked_reads, later);
        if !ready.is_empty() {
            self.run_reads(instance, ready.into_values().collect());
        }
    }

    /// Runs reads against an instance's state as it is now and sends the
    /// answers.
    pub fn run_reads(&mut self, instance: usize, reads: Vec<ParkedRead>) {
        let node = &mut self.nodes[instance];
        let mut asked = Vec::new();
        for (c, id, operation) in reads {
            let key = self.clients[c].key.public();
            node.execution.read(key, id, &operation);
            asked.push(((key, id), (c, operation)));
        }
        node.execution.wait_idle();
        let answers = std::mem::take(&mut node.collected.lock().unwrap().reads);
        // In the order they were asked (the executor's threads answer in
        // any order).
        let mut answers: BTreeMap<_, _> = answers
            .into_iter()
            .map(|(key, reply)| ((key, reply.id), reply))
            .collect();
        let remember = self.behaviour(instance).is_some();
        for (asked, (c, operation)) in asked {
            let Some(reply) = answers.remove(&asked) else {
                continue;
            };
            if remember && let Some(result) = &reply.result {
                let seen = self.nodes[instance]
                    .read_answers
                    .entry(operation.clone())
                    .or_default();
                if seen.back() != Some(result) {
                    seen.push_back(result.clone());
                }
                if seen.len() > REMEMBERED_ANSWERS {
                    seen.pop_front();
                }
            }
            self.send_read_reply(instance, c, &operation, reply);
        }
    }

    /// What an instance's state answers to a read right now, without
    /// waiting for any barrier (for a Byzantine replica that knows what
    /// the lagging replicas hold).
    pub fn peek_read(&mut self, instance: usize, operation: &[u8]) -> Option<Vec<u8>> {
        let node = &mut self.nodes[instance];
        if node.crashed {
            return None;
        }
        let key = crate::world::stranger().public();
        node.execution.read(key, 0, operation);
        node.execution.wait_idle();
        let mut collected = node.collected.lock().unwrap();
        let at = collected.reads.iter().position(|(k, _)| *k == key)?;
        collected.reads.remove(at).1.result
    }

    /// Sends an instance's answer to a read to client `c` (rewritten if the
    /// instance is Byzantine).
    fn send_read_reply(&mut self, instance: usize, c: usize, operation: &[u8], reply: ReadReply) {
        let reply = self.byzantine_answer(instance, operation, reply);
        for delay in self.network.client_link(self.now, 256, &mut self.rng) {
            self.schedule(
                delay,
                Event::ReadToClient {
                    from: instance,
                    client: c,
                    reply: reply.clone(),
                },
            );
        }
    }
}

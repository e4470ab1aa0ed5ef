//! Deterministic simulation: the pure PBFT state machines and the real core
//! executor, on a seeded simulated network and clock, under message loss,
//! delay, reordering and duplication, crashes, partitions, Byzantine
//! replicas and a Byzantine client.
//!
//! Every run checks
//! - safety: correct replicas execute the same batch at every sequence
//!   number, send the same reply to every request, and agree on every
//!   checkpoint digest;
//! - linearizability: the agreed order is a linearization of the clients'
//!   history: every result is what a sequential bank would answer in that
//!   order, and an operation that finished before another started comes
//!   first;
//! - the bank invariant: money is neither created nor destroyed;
//! - liveness: once the faults stop, every client finishes its script.
//!
//! `SEEDS=N` runs N seeds per scenario (default 500); a failing run prints
//! `SEED=s SCENARIO=name`, and setting those variables replays exactly that run.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex};

use cbase_core::{
    AccessSet, Container, Context, ExecError, ExecutorBuilder, Key, Request, Service, State, Table,
    codec,
};
use cbase_net::checkpoint::CheckpointState;
use cbase_net::config::{ClusterConfig, ReplicaEntry, ReplicaId};
use cbase_net::crypto::{PublicKey, SecretKey};
use cbase_net::message::{
    ClientRequest, Hash, NewView, PrePrepare, Prepare, PreparedProof, Proposal, ReplicaMessage,
    Reply, RequestBatch, Seq, SignedBatch, ViewChange, ViewChangeBody, domain, pre_prepare_header,
    prepare_header, view_change_bytes,
};
use cbase_net::protocol::{Committed, Input, Output, ProtocolConfig, Replica};
use cbase_net::runtime::execution::{CheckpointRecord, Execution, ReplySink};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------- the service

const ACCOUNTS: u64 = 4;
const OPENING: u64 = 100;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Op {
    Transfer { from: u64, to: u64, amount: u64 },
    Balance { id: u64 },
    Total,
}

impl Request for Op {
    fn access_set(&self) -> AccessSet {
        match self {
            Op::Transfer { from, to, .. } => AccessSet::none()
                .write(Key::entry("accounts", from))
                .write(Key::entry("accounts", to)),
            Op::Balance { id } => AccessSet::none().read(Key::entry("accounts", id)),
            Op::Total => AccessSet::none().read(Key::table("accounts")),
        }
    }
    fn method(&self) -> &'static str {
        match self {
            Op::Transfer { .. } => "transfer",
            Op::Balance { .. } => "balance",
            Op::Total => "total",
        }
    }
}

struct Accounts {
    accounts: Table<u64, u64>,
}

impl State for Accounts {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("accounts", &self.accounts)]
    }
}

struct Bank(Accounts);

impl Bank {
    fn new() -> Bank {
        let state = Accounts {
            accounts: Table::new(),
        };
        for id in 0..ACCOUNTS {
            state.accounts.insert(id, OPENING);
        }
        Bank(state)
    }
}

impl Service for Bank {
    type Request = Op;
    type Response = u64;
    fn execute(&self, op: Op, _: &Context) -> u64 {
        let accounts = &self.0.accounts;
        match op {
            Op::Transfer { from, to, amount } => {
                let balance = accounts.get(&from).unwrap_or(0);
                if from == to || balance < amount {
                    return 0;
                }
                accounts.insert(from, balance - amount);
                accounts.update(&to, |b| *b += amount);
                1
            }
            Op::Balance { id } => accounts.get(&id).unwrap_or(0),
            Op::Total => accounts.fold(0, |sum, _, b| sum + b),
        }
    }
    fn state(&self) -> &dyn State {
        &self.0
    }
}

/// The sequential specification the history is checked against.
fn model(balances: &mut [u64; ACCOUNTS as usize], op: &Op) -> u64 {
    match *op {
        Op::Transfer { from, to, amount } => {
            let (f, t) = (from as usize, to as usize);
            if from == to || balances[f] < amount {
                return 0;
            }
            balances[f] -= amount;
            balances[t] += amount;
            1
        }
        Op::Balance { id } => balances[id as usize],
        Op::Total => balances.iter().sum(),
    }
}

// ---------------------------------------------------------------- scenarios

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Byzantine {
    /// As primary, sends different proposals to different backups.
    Equivocate,
    /// Corrupts digests and the `replica` field, replays old messages,
    /// sends bogus view-changes and new-views, lies in checkpoints and replies.
    Chaos,
}

#[derive(Clone, Debug)]
struct Scenario {
    name: &'static str,
    drop: f64,
    duplicate: f64,
    max_delay: u64,
    /// Replica that crashes at `crash_at` (and stays down).
    crash: Option<(ReplicaId, u64)>,
    /// Replica that crashes at the first time and restarts with empty memory
    /// (a fresh state machine and service) at the second.
    restart: Option<(ReplicaId, u64, u64)>,
    /// Replicas cut off from the rest between the two times.
    partition: Option<(Vec<ReplicaId>, u64, u64)>,
    byzantine: Option<(ReplicaId, Byzantine)>,
}

/// State bytes per transfer reply: the simulated states are a few hundred
/// bytes, so this makes every state transfer take several chunks.
const STATE_CHUNK: usize = 64;

const MS: u64 = 1_000_000;
/// Faults stop here; after it the network is reliable and timely.
const HEAL: u64 = 3_000 * MS;
/// How long the world keeps running after the clients are done.
const SETTLE: u64 = 3_000 * MS;
/// Every client must be done by then.
const DEADLINE: u64 = HEAL + 60_000 * MS;

fn scenarios() -> Vec<Scenario> {
    let base = Scenario {
        name: "",
        drop: 0.0,
        duplicate: 0.0,
        max_delay: 2 * MS,
        crash: None,
        restart: None,
        partition: None,
        byzantine: None,
    };
    vec![
        Scenario {
            name: "lossy-network",
            drop: 0.15,
            duplicate: 0.1,
            max_delay: 20 * MS,
            ..base.clone()
        },
        Scenario {
            name: "crashed-primary",
            crash: Some((0, 200 * MS)),
            drop: 0.02,
            ..base.clone()
        },
        Scenario {
            name: "restarted-replica",
            restart: Some((2, 30 * MS, 600 * MS)),
            drop: 0.02,
            ..base.clone()
        },
        Scenario {
            name: "partitioned-primary",
            partition: Some((vec![0], 100 * MS, 1_500 * MS)),
            ..base.clone()
        },
        Scenario {
            name: "equivocating-primary",
            byzantine: Some((0, Byzantine::Equivocate)),
            drop: 0.02,
            ..base.clone()
        },
        Scenario {
            name: "byzantine-backup",
            byzantine: Some((2, Byzantine::Chaos)),
            drop: 0.05,
            duplicate: 0.05,
            ..base.clone()
        },
        Scenario {
            name: "byzantine-primary",
            byzantine: Some((0, Byzantine::Chaos)),
            drop: 0.02,
            ..base
        },
    ]
}

// ---------------------------------------------------------------- the world

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Endpoint {
    Replica(ReplicaId),
    Client(usize),
}

#[derive(Debug)]
enum Event {
    ToReplica {
        from: Endpoint,
        to: ReplicaId,
        message: Delivery,
    },
    ToClient {
        from: ReplicaId,
        client: usize,
        reply: Reply,
    },
    Tick,
}

#[derive(Debug)]
enum Delivery {
    Replica(ReplicaMessage),
    Client(SignedBatch),
}

#[derive(Default)]
struct Collected {
    replies: Vec<(PublicKey, Reply)>,
    checkpoints: Vec<CheckpointRecord>,
}

struct SimSink(Arc<Mutex<Collected>>);

impl ReplySink for SimSink {
    fn send(&self, client: &PublicKey, reply: Reply) {
        self.0.lock().unwrap().replies.push((*client, reply));
    }
    fn checkpoint(&self, record: CheckpointRecord) {
        self.0.lock().unwrap().checkpoints.push(record);
    }
}

struct Node {
    replica: Replica,
    execution: Execution<Bank>,
    collected: Arc<Mutex<Collected>>,
    crashed: bool,
    executed: BTreeMap<Seq, Hash>,
    replies: BTreeMap<(PublicKey, u32, u64), Vec<u8>>,
    checkpoints: BTreeMap<Seq, Hash>,
    /// Messages this replica sent, for a Byzantine one to replay.
    sent: Vec<ReplicaMessage>,
    /// Every request handed to execution, in order: (client, number, op).
    order: Vec<(PublicKey, u64, Op)>,
}

fn new_node(
    id: ReplicaId,
    key: &SecretKey,
    cluster: &ClusterConfig,
    protocol: &ProtocolConfig,
) -> Node {
    let collected = Arc::new(Mutex::new(Collected::default()));
    let execution = Execution::start(
        id,
        ExecutorBuilder::new().workers(2).window(64),
        Bank::new(),
        Arc::new(SimSink(Arc::clone(&collected))),
    )
    .expect("the bank starts");
    Node {
        replica: Replica::new(id, cluster, key.clone(), protocol.clone()),
        execution,
        collected,
        crashed: false,
        executed: BTreeMap::new(),
        replies: BTreeMap::new(),
        checkpoints: BTreeMap::new(),
        sent: Vec::new(),
        order: Vec::new(),
    }
}

struct Outstanding {
    op: Op,
    number: u64,
    batch: SignedBatch,
    invoked: u64,
    votes: BTreeMap<ReplicaId, (Vec<u8>, u64)>,
    next_retransmit: u64,
    backoff: u64,
}

struct Client {
    key: SecretKey,
    script: VecDeque<Op>,
    next_number: u64,
    view: u64,
    outstanding: Option<Outstanding>,
    /// (invoked, responded, op, result, request number)
    history: Vec<(u64, u64, Op, u64, u64)>,
}

struct World {
    now: u64,
    rng: StdRng,
    order: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    nodes: Vec<Node>,
    clients: Vec<Client>,
    keys: Vec<SecretKey>,
    scenario: Scenario,
    cluster: ClusterConfig,
    protocol: ProtocolConfig,
    restarted: bool,
    /// Since when no client has had anything left to do.
    quiet_since: Option<u64>,
    f: usize,
    /// Transferred states installed, across replicas.
    installed: u64,
}

impl World {
    fn new(seed: u64, scenario: Scenario) -> World {
        let n = 4;
        let keys: Vec<SecretKey> = (0..n)
            .map(|i| SecretKey::from_seed([i as u8 + 1; 32]))
            .collect();
        let cluster = ClusterConfig {
            f: 1,
            replicas: keys
                .iter()
                .enumerate()
                .map(|(i, k)| ReplicaEntry {
                    id: i as ReplicaId,
                    address: format!("sim:{i}"),
                    public_key: k.public(),
                })
                .collect(),
        };
        let protocol = ProtocolConfig {
            checkpoint_interval: 4,
            window: 16,
            max_batch_requests: 64,
            pipeline: 2,
            request_timeout: 300 * MS,
            view_change_timeout: 600 * MS,
            max_pending: 1000,
            status_interval: 100 * MS,
            max_state_bytes: 1 << 20,
            ..ProtocolConfig::default()
        };
        let nodes = keys
            .iter()
            .enumerate()
            .map(|(i, key)| new_node(i as ReplicaId, key, &cluster, &protocol))
            .collect();
        let mut rng = StdRng::seed_from_u64(seed);
        // Three honest clients with scripts, and one rogue that reuses numbers.
        let mut clients: Vec<Client> = (0..4)
            .map(|c| {
                let script = (0..8)
                    .map(|_| match rng.gen_range(0..10) {
                        0..6 => Op::Transfer {
                            from: rng.gen_range(0..ACCOUNTS),
                            to: rng.gen_range(0..ACCOUNTS),
                            amount: rng.gen_range(1..60),
                        },
                        6..9 => Op::Balance {
                            id: rng.gen_range(0..ACCOUNTS),
                        },
                        _ => Op::Total,
                    })
                    .collect();
                Client {
                    key: SecretKey::from_seed([100 + c as u8; 32]),
                    script,
                    next_number: 1,
                    view: 0,
                    outstanding: None,
                    history: Vec::new(),
                }
            })
            .collect();
        clients[3].script.clear(); // the rogue acts by hand below
        let mut world = World {
            now: 0,
            rng,
            order: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            nodes,
            clients,
            keys,
            scenario,
            cluster,
            protocol,
            restarted: false,
            quiet_since: None,
            f: 1,
            installed: 0,
        };
        world.rogue_client();
        world.schedule(10 * MS, Event::Tick);
        world
    }

    fn schedule(&mut self, delay: u64, event: Event) {
        self.order += 1;
        self.events.insert(self.order, event);
        self.queue.push(Reverse((self.now + delay, self.order)));
    }

    fn faulty(&self) -> bool {
        self.now < HEAL
    }

    fn connected(&self, a: Endpoint, b: ReplicaId) -> bool {
        let Some((group, from, until)) = &self.scenario.partition else {
            return true;
        };
        if !(self.now >= *from && self.now < *until) {
            return true;
        }
        let inside = |e: Endpoint| matches!(e, Endpoint::Replica(r) if group.contains(&r));
        inside(a) == inside(Endpoint::Replica(b))
    }

    /// Sends over the simulated network: maybe lost, delayed, duplicated.
    fn send(&mut self, from: Endpoint, to: ReplicaId, message: Delivery) {
        if !self.connected(from, to) {
            return;
        }
        let (drop, duplicate, max_delay) = if self.faulty() {
            (
                self.scenario.drop,
                self.scenario.duplicate,
                self.scenario.max_delay,
            )
        } else {
            (0.0, 0.0, 2 * MS)
        };
        if self.rng.gen_bool(drop) {
            return;
        }
        let copies = if self.rng.gen_bool(duplicate) { 2 } else { 1 };
        for copy in 0..copies {
            let delay = self.rng.gen_range(100_000..max_delay.max(200_000));
            let message = match (&message, copy) {
                (Delivery::Replica(m), _) => Delivery::Replica(m.clone()),
                (Delivery::Client(b), _) => Delivery::Client(b.clone()),
            };
            self.schedule(delay, Event::ToReplica { from, to, message });
        }
    }

    fn byzantine(&self, replica: ReplicaId) -> Option<Byzantine> {
        self.scenario
            .byzantine
            .filter(|(r, _)| *r == replica)
            .map(|(_, b)| b)
    }

    fn correct(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|r| self.byzantine(*r as ReplicaId).is_none() && !self.nodes[*r].crashed)
            .collect()
    }

    fn rogue_client(&mut self) {
        // Reuses request number 1 for two different operations.
        let key = self.clients[3].key.clone();
        for op in [
            Op::Transfer {
                from: 0,
                to: 1,
                amount: 5,
            },
            Op::Transfer {
                from: 1,
                to: 0,
                amount: 50,
            },
        ] {
            let batch = SignedBatch::sign(
                RequestBatch {
                    client: key.public(),
                    requests: vec![ClientRequest {
                        lane: 0,
                        number: 1,
                        operation: codec::encode(&op).unwrap(),
                    }],
                },
                &key,
            );
            for to in 0..4 {
                self.send(Endpoint::Client(3), to, Delivery::Client(batch.clone()));
            }
        }
    }

    fn run(&mut self) {
        while let Some(Reverse((at, order))) = self.queue.pop() {
            self.now = at;
            let event = self
                .events
                .remove(&order)
                .expect("every queued event is stored");
            match event {
                Event::Tick => {
                    self.tick();
                    let busy = self
                        .clients
                        .iter()
                        .any(|c| c.outstanding.is_some() || !c.script.is_empty());
                    // Once the clients are done, keep time running a while so
                    // replicas that fell behind can catch up.
                    if busy {
                        self.quiet_since = None;
                    } else if self.quiet_since.is_none() {
                        self.quiet_since = Some(self.now);
                    }
                    let settled = self
                        .quiet_since
                        .is_some_and(|since| self.now >= since + SETTLE);
                    if !settled && self.now < DEADLINE {
                        self.schedule(10 * MS, Event::Tick);
                    }
                }
                Event::ToReplica { from, to, message } => {
                    if let (Delivery::Client(batch), Endpoint::Client(c)) = (&message, from) {
                        // As the runtime does: a retransmission of requests
                        // already executed is answered from the reply cache.
                        if self.answer_from_cache(to, c, batch) {
                            continue;
                        }
                    }
                    let input = match message {
                        Delivery::Replica(m) => match from {
                            Endpoint::Replica(r) => Input::Replica(r, m),
                            Endpoint::Client(_) => continue,
                        },
                        Delivery::Client(b) => Input::Client(b),
                    };
                    self.deliver(to, input);
                }
                Event::ToClient {
                    from,
                    client,
                    reply,
                } => self.on_reply(client, from, reply),
            }
        }
    }

    fn tick(&mut self) {
        if let Some((replica, at)) = self.scenario.crash {
            if self.now >= at {
                self.nodes[replica as usize].crashed = true;
            }
        }
        if let Some((replica, down_at, up_at)) = self.scenario.restart {
            if self.now >= down_at && !self.restarted {
                self.nodes[replica as usize].crashed = true;
            }
            if self.now >= up_at && !self.restarted {
                // Everything it knew is gone: a new state machine, a new service.
                self.restarted = true;
                let fresh = new_node(
                    replica,
                    &self.keys[replica as usize],
                    &self.cluster,
                    &self.protocol,
                );
                let old = std::mem::replace(&mut self.nodes[replica as usize], fresh);
                old.execution.shutdown();
            }
        }
        for replica in 0..self.nodes.len() as ReplicaId {
            self.deliver(replica, Input::Tick);
            if self.byzantine(replica) == Some(Byzantine::Chaos) && self.rng.gen_bool(0.2) {
                self.chaos(replica);
            }
        }
        for client in 0..self.clients.len() {
            self.client_tick(client);
        }
    }

    fn deliver(&mut self, to: ReplicaId, input: Input) {
        let node = &mut self.nodes[to as usize];
        if node.crashed {
            return;
        }
        let mut outputs = Vec::new();
        node.replica.handle(self.now, input, &mut outputs);
        for output in outputs {
            self.output(to, output);
        }
    }

    fn output(&mut self, from: ReplicaId, output: Output) {
        match output {
            Output::Send(to, message) => self.replica_send(from, to, message),
            Output::Broadcast(message) => {
                for to in 0..self.nodes.len() as ReplicaId {
                    if to != from {
                        self.replica_send(from, to, message.clone());
                    }
                }
            }
            Output::Execute(committed) => self.execute(from, committed),
            Output::Stable { .. } | Output::ViewEntered(_) => {}
            Output::ServeState { to, seq, offset } => {
                let record = {
                    let collected = self.nodes[from as usize].collected.lock().unwrap();
                    collected
                        .checkpoints
                        .iter()
                        .rev()
                        .find(|r| r.seq == seq)
                        .cloned()
                };
                if let Some(record) = record {
                    let mut state = codec::encode(&CheckpointState {
                        snapshot: record.snapshot,
                        clients: record.clients,
                        clock: record.clock,
                    })
                    .unwrap();
                    if self.byzantine(from) == Some(Byzantine::Chaos) {
                        let last = state.len() - 1;
                        state[last] ^= 1; // a Byzantine replica serves a bad snapshot
                    }
                    // Small chunks, so that every transfer takes several.
                    let Some(start) = usize::try_from(offset).ok().filter(|&s| s < state.len())
                    else {
                        return;
                    };
                    let end = state.len().min(start + STATE_CHUNK);
                    let reply = ReplicaMessage::StateReply {
                        seq,
                        offset,
                        total: state.len() as u64,
                        chunk: state[start..end].to_vec(),
                    };
                    self.replica_send(from, to, reply);
                }
            }
            Output::InstallState { seq, digest, state } => {
                self.nodes[from as usize]
                    .execution
                    .install(seq, state)
                    .expect("verified states install");
                self.installed += 1;
                self.deliver(from, Input::StateInstalled { seq, state: digest });
            }
            Output::Diverged { seq, .. } => {
                assert!(
                    self.byzantine(from).is_some(),
                    "correct replica {from} diverged at {seq}"
                );
            }
        }
    }

    /// A replica's message to a peer, transformed if the sender is Byzantine.
    fn replica_send(&mut self, from: ReplicaId, to: ReplicaId, message: ReplicaMessage) {
        let message = match self.byzantine(from) {
            None => message,
            Some(Byzantine::Equivocate) => self.equivocate(from, to, message),
            Some(Byzantine::Chaos) => self.corrupt(from, message),
        };
        if self.byzantine(from).is_some() {
            self.nodes[from as usize].sent.push(message.clone());
        }
        self.send(Endpoint::Replica(from), to, Delivery::Replica(message));
    }

    fn equivocate(
        &mut self,
        from: ReplicaId,
        to: ReplicaId,
        message: ReplicaMessage,
    ) -> ReplicaMessage {
        match message {
            ReplicaMessage::PrePrepare(pp) if to.is_multiple_of(2) => {
                // Odd backups get the real proposal, even ones an empty one.
                let proposal = Proposal {
                    timestamp: pp.proposal.timestamp,
                    batches: Vec::new(),
                };
                let digest = proposal.digest();
                let signature = self.keys[from as usize].sign(
                    domain::PRE_PREPARE,
                    &pre_prepare_header(pp.view, pp.seq, &digest),
                );
                ReplicaMessage::PrePrepare(PrePrepare {
                    digest,
                    proposal,
                    signature,
                    ..pp
                })
            }
            other => other,
        }
    }

    fn corrupt(&mut self, from: ReplicaId, message: ReplicaMessage) -> ReplicaMessage {
        let roll = self.rng.gen_range(0..4);
        match message {
            ReplicaMessage::Prepare(mut p) if roll == 0 => {
                p.digest[0] ^= 1;
                ReplicaMessage::Prepare(p)
            }
            ReplicaMessage::Prepare(mut p) if roll == 1 => {
                p.replica = (from + 1) % 4; // a forged sender inside the message
                ReplicaMessage::Prepare(p)
            }
            ReplicaMessage::Commit(mut c) if roll == 0 => {
                c.digest[1] ^= 1;
                ReplicaMessage::Commit(c)
            }
            ReplicaMessage::Checkpoint(mut c) if roll < 2 => {
                c.state[2] ^= 1; // a lie (its signature no longer matches)
                ReplicaMessage::Checkpoint(c)
            }
            ReplicaMessage::PrePrepare(mut pp) if roll == 0 => {
                pp.proposal.timestamp ^= 1; // digest mismatch
                ReplicaMessage::PrePrepare(pp)
            }
            other => other,
        }
    }

    /// Spontaneous Byzantine traffic: replays, bogus view-changes and new-views.
    fn chaos(&mut self, from: ReplicaId) {
        let to = self.rng.gen_range(0..4);
        if to == from {
            return;
        }
        let message = match self.rng.gen_range(0..3) {
            0 => {
                let sent = &self.nodes[from as usize].sent;
                if sent.is_empty() {
                    return;
                }
                sent[self.rng.gen_range(0..sent.len())].clone()
            }
            1 => ReplicaMessage::ViewChange(self.bogus_view_change(from)),
            _ => {
                let view = self.nodes[from as usize].replica.view() + 1;
                ReplicaMessage::NewView(NewView {
                    view,
                    view_changes: vec![self.bogus_view_change(from)],
                    pre_prepares: Vec::new(),
                })
            }
        };
        self.send(Endpoint::Replica(from), to, Delivery::Replica(message));
    }

    /// A view-change claiming a batch prepared, with prepares it forged.
    fn bogus_view_change(&mut self, from: ReplicaId) -> ViewChange {
        let key = &self.keys[from as usize];
        let view = self.nodes[from as usize].replica.view();
        let proposal = Proposal {
            timestamp: 7,
            batches: Vec::new(),
        };
        let digest = proposal.digest();
        let seq = self.nodes[from as usize].replica.low_watermark() + 1;
        let pre_prepare = PrePrepare {
            view,
            seq,
            digest,
            signature: key.sign(domain::PRE_PREPARE, &pre_prepare_header(view, seq, &digest)),
            proposal,
        };
        let prepares = (0..2u32)
            .map(|r| Prepare {
                view,
                seq,
                digest,
                replica: r,
                signature: key.sign(domain::PREPARE, &prepare_header(view, seq, &digest, r)),
            })
            .collect();
        let body = ViewChangeBody {
            new_view: view + 1,
            stable_seq: 0,
            stable_state: [0; 32],
            checkpoint_proof: Vec::new(),
            prepared: vec![PreparedProof {
                pre_prepare: pre_prepare.header(),
                prepares,
            }],
            replica: from,
        };
        let signature = key.sign(domain::VIEW_CHANGE, &view_change_bytes(&body));
        ViewChange { body, signature }
    }

    fn execute(&mut self, replica: ReplicaId, committed: Committed) {
        let (seq, digest) = (committed.seq, committed.digest);
        let node = &mut self.nodes[replica as usize];
        node.executed.insert(seq, digest);
        for batch in &committed.proposal.batches {
            for request in &batch.batch.requests {
                if let Ok(op) = codec::decode::<Op>(&request.operation) {
                    node.order.push((batch.batch.client, request.number, op));
                }
            }
        }
        let checkpoint = node.execution.execute(committed);
        node.execution.wait_idle();
        let mut replies = std::mem::take(&mut node.collected.lock().unwrap().replies);
        replies.sort_by_key(|(client, reply)| (*client, reply.lane, reply.number));
        for (client, reply) in &replies {
            node.replies
                .entry((*client, reply.lane, reply.number))
                .or_insert_with(|| reply.result.clone());
        }
        for (client, mut reply) in replies {
            if self.byzantine(replica) == Some(Byzantine::Chaos) {
                reply.result = codec::encode(&Ok::<u64, ExecError>(999_999)).unwrap();
            }
            if let Some(c) = self.clients.iter().position(|c| c.key.public() == client) {
                let delay = self.rng.gen_range(100_000..2 * MS);
                self.schedule(
                    delay,
                    Event::ToClient {
                        from: replica,
                        client: c,
                        reply,
                    },
                );
            }
        }
        if let Some(record) = checkpoint {
            let mut state = record.digest;
            if self.byzantine(replica).is_some() {
                state[0] ^= 1; // Byzantine replicas lie about their state
            }
            self.nodes[replica as usize]
                .checkpoints
                .insert(record.seq, record.digest);
            self.deliver(
                replica,
                Input::CheckpointTaken {
                    seq: record.seq,
                    state,
                },
            );
        }
    }

    fn answer_from_cache(
        &mut self,
        replica: ReplicaId,
        client: usize,
        batch: &SignedBatch,
    ) -> bool {
        let node = &self.nodes[replica as usize];
        if node.crashed {
            return true;
        }
        let numbers: Vec<(u32, u64)> = batch
            .batch
            .requests
            .iter()
            .map(|r| (r.lane, r.number))
            .collect();
        let Some(cached) = node.execution.shared().cached_replies(
            &batch.batch.client,
            &numbers,
            node.replica.view(),
        ) else {
            return false;
        };
        for reply in cached {
            let delay = self.rng.gen_range(100_000..2 * MS);
            self.schedule(
                delay,
                Event::ToClient {
                    from: replica,
                    client,
                    reply,
                },
            );
        }
        true
    }

    fn client_tick(&mut self, c: usize) {
        if c == 3 {
            return;
        }
        let now = self.now;
        let client = &mut self.clients[c];
        if let Some(outstanding) = &mut client.outstanding {
            if now >= outstanding.next_retransmit {
                outstanding.next_retransmit = now + outstanding.backoff;
                outstanding.backoff = (outstanding.backoff * 2).min(2_000 * MS);
                let batch = outstanding.batch.clone();
                for to in 0..4 {
                    self.send(Endpoint::Client(c), to, Delivery::Client(batch.clone()));
                }
            }
            return;
        }
        let Some(op) = client.script.pop_front() else {
            return;
        };
        let number = client.next_number;
        client.next_number += 1;
        let batch = SignedBatch::sign(
            RequestBatch {
                client: client.key.public(),
                requests: vec![ClientRequest {
                    lane: 0,
                    number,
                    operation: codec::encode(&op).unwrap(),
                }],
            },
            &client.key,
        );
        let primary = (client.view % 4) as ReplicaId;
        client.outstanding = Some(Outstanding {
            op,
            number,
            batch: batch.clone(),
            invoked: now,
            votes: BTreeMap::new(),
            next_retransmit: now + 150 * MS,
            backoff: 300 * MS,
        });
        self.send(Endpoint::Client(c), primary, Delivery::Client(batch));
    }

    fn on_reply(&mut self, c: usize, from: ReplicaId, reply: Reply) {
        let now = self.now;
        let f = self.f;
        let client = &mut self.clients[c];
        let Some(outstanding) = &mut client.outstanding else {
            return;
        };
        if reply.lane != 0 || reply.number != outstanding.number || reply.replica != from {
            return;
        }
        outstanding
            .votes
            .insert(from, (reply.result.clone(), reply.view));
        let matching = outstanding
            .votes
            .values()
            .filter(|(r, _)| *r == reply.result)
            .count();
        if matching > f {
            let result: Result<u64, ExecError> =
                codec::decode(&reply.result).expect("replies decode");
            let mut views: Vec<u64> = outstanding.votes.values().map(|(_, v)| *v).collect();
            views.sort_unstable_by(|a, b| b.cmp(a));
            client.view = client.view.max(views[f]);
            let done = client.outstanding.take().expect("checked above");
            client.history.push((
                done.invoked,
                now,
                done.op,
                result.expect("bank operations do not fail"),
                done.number,
            ));
        }
    }

    // ------------------------------------------------------------ the checks

    fn check(&self) -> Result<(), String> {
        let correct = self.correct();
        // Liveness: every honest client finished its script.
        for (c, client) in self.clients.iter().enumerate().take(3) {
            if client.outstanding.is_some() || !client.script.is_empty() {
                return Err(format!(
                    "client {c} did not finish by the deadline (history {})",
                    client.history.len()
                ));
            }
        }
        // A replica restarted with empty memory caught up by state transfer.
        if let Some((replica, _, _)) = self.scenario.restart {
            let node = &self.nodes[replica as usize];
            let others_low = correct
                .iter()
                .filter(|r| **r != replica as usize)
                .map(|r| self.nodes[*r].replica.low_watermark())
                .min()
                .unwrap_or(0);
            if node.replica.delivered() < others_low {
                return Err(format!(
                    "restarted replica {replica} stayed behind: executed {} < stable checkpoint {others_low}",
                    node.replica.delivered()
                ));
            }
        }
        // Safety: same batch per sequence number, same replies, same checkpoints.
        for pair in correct.windows(2) {
            let (a, b) = (&self.nodes[pair[0]], &self.nodes[pair[1]]);
            for (seq, digest) in &a.executed {
                if b.executed.get(seq).is_some_and(|d| d != digest) {
                    return Err(format!(
                        "replicas {} and {} executed different batches at {seq}",
                        pair[0], pair[1]
                    ));
                }
            }
            for (request, result) in &a.replies {
                if b.replies.get(request).is_some_and(|r| r != result) {
                    return Err(format!(
                        "replicas {} and {} replied differently to {request:?}",
                        pair[0], pair[1]
                    ));
                }
            }
            for (seq, digest) in &a.checkpoints {
                if b.checkpoints.get(seq).is_some_and(|d| d != digest) {
                    return Err(format!(
                        "replicas {} and {} disagree on checkpoint {seq}",
                        pair[0], pair[1]
                    ));
                }
            }
        }
        // Linearizability: replay the agreed order of the most advanced correct
        // replica through the model; every honest result must match, and the
        // order must respect real time.
        let reference = correct
            .iter()
            .copied()
            .max_by_key(|r| self.nodes[*r].executed.len())
            .ok_or("no correct replica left")?;
        let order = self.agreed_order(reference);
        let mut balances = [OPENING; ACCOUNTS as usize];
        let mut position: BTreeMap<(PublicKey, u64), (usize, u64)> = BTreeMap::new();
        let mut seen: BTreeSet<(PublicKey, u64)> = BTreeSet::new();
        for (index, (client, number, op)) in order.iter().enumerate() {
            if !seen.insert((*client, *number)) {
                continue; // executed once only: later copies are skipped
            }
            let result = model(&mut balances, op);
            position.insert((*client, *number), (index, result));
        }
        if balances.iter().sum::<u64>() != ACCOUNTS * OPENING {
            return Err("money was created or destroyed".into());
        }
        for client in self.clients.iter().take(3) {
            for (invoked, responded, op, result, number) in &client.history {
                let Some((_, expected)) = position.get(&(client.key.public(), *number)) else {
                    return Err(format!("{op:?} answered but not in the agreed order"));
                };
                if expected != result {
                    return Err(format!(
                        "{op:?} returned {result}, the sequential bank says {expected}"
                    ));
                }
                let _ = (invoked, responded);
            }
        }
        let mut finished: Vec<(u64, u64, usize)> = Vec::new();
        for client in self.clients.iter().take(3) {
            for (invoked, responded, _, _, number) in &client.history {
                let (index, _) = position[&(client.key.public(), *number)];
                finished.push((*invoked, *responded, index));
            }
        }
        for a in &finished {
            for b in &finished {
                if a.1 < b.0 && a.2 > b.2 {
                    return Err(format!(
                        "an operation that finished at {} is ordered after one invoked at {}",
                        a.1, b.0
                    ));
                }
            }
        }
        Ok(())
    }

    /// Where every replica ended, for failure reports.
    fn describe(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "replica {i}: crashed {}, view {}, changing to {:?}, delivered {}, low {}, pending {}, {:?}",
                    n.crashed,
                    n.replica.view(),
                    n.replica.changing_to(),
                    n.replica.delivered(),
                    n.replica.low_watermark(),
                    n.replica.pending_batches(),
                    n.replica.stats()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The requests a replica handed to execution, in the agreed order.
    fn agreed_order(&self, replica: usize) -> Vec<(PublicKey, u64, Op)> {
        self.nodes[replica].order.clone()
    }

    fn shutdown(self) {
        for node in self.nodes {
            node.execution.shutdown();
        }
    }
}

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("SEED") {
        return vec![seed.parse().expect("SEED is a number")];
    }
    let count = std::env::var("SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    (0..count).collect()
}

fn run_scenario(name: &str) {
    if std::env::var("SCENARIO").is_ok_and(|only| only != name) {
        return;
    }
    let scenario = scenarios()
        .into_iter()
        .find(|s| s.name == name)
        .expect("a known scenario");
    let seeds = seeds();
    for seed in &seeds {
        let mut world = World::new(*seed, scenario.clone());
        world.run();
        let verdict = world
            .check()
            .map_err(|problem| format!("{problem}\n{}", world.describe()));
        world.shutdown();
        if let Err(problem) = verdict {
            panic!(
                "{problem}\nreplay with: SEED={seed} SCENARIO={name} cargo test -p cbase-net --test simulation"
            );
        }
    }
    eprintln!("{name}: {} seeds passed", seeds.len());
}

#[test]
fn lossy_network() {
    run_scenario("lossy-network");
}

#[test]
fn crashed_primary() {
    run_scenario("crashed-primary");
}

#[test]
fn restarted_replica() {
    run_scenario("restarted-replica");
}

#[test]
fn partitioned_primary() {
    run_scenario("partitioned-primary");
}

#[test]
fn equivocating_primary() {
    run_scenario("equivocating-primary");
}

#[test]
fn byzantine_backup() {
    run_scenario("byzantine-backup");
}

#[test]
fn byzantine_primary() {
    run_scenario("byzantine-primary");
}

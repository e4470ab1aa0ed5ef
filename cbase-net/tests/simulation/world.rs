//! The simulated world: replica instances (the pure `Replica` state machine
//! and the real executor over the bank), clients, a seeded event queue and
//! clock. One seed decides everything: the network's rounds and every
//! message's fate, which replicas are faulty and when, the Twins schedule,
//! the clients' scripts.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex};

use cbase_core::{ExecError, ExecutorBuilder, Request, codec};
use cbase_net::checkpoint::CheckpointState;
use cbase_net::checkpoint::parts::CheckpointIndex;
use cbase_net::config::{ClientEntry, ClusterConfig, ReplicaEntry, ReplicaId};
use cbase_net::crypto::{PublicKey, SecretKey};
use cbase_net::message::{
    ClientBatch, ClientRequest, Hash, PrePrepare, ReadReply, ReplicaMessage, Reply, RequestBatch,
    Seq, View,
};
use cbase_net::protocol::{Committed, Input, Output, ProtocolConfig, Replica};
use cbase_net::runtime::execution::{CheckpointRecord, Execution, ReplySink};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::byzantine::Behaviour;
use crate::disk::Disk;
use crate::network::{Network, batch_frame_size, frame_size};
use crate::scenarios::{FRAME_LIMIT, MS, Scenario, Who, protocol_config};
use crate::service::{ACCOUNTS, Bank, Op};
use crate::twins;

/// State bytes per transfer reply: the simulated states are a few hundred
/// bytes, so this makes every state transfer take several chunks.
pub const STATE_CHUNK: usize = 64;
/// Bytes of parts in one reply: small, so buckets and nodes spread over
/// several replies as they would for a large state.
pub const PARTS_ROOM: usize = 1024;
/// How often every replica and client is ticked.
const TICK: u64 = 10 * MS;
/// Most events one run may process (every run is bounded in simulated time
/// too, by its deadline).
const MAX_EVENTS: u64 = 5_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    /// A replica instance (an index into `World::nodes`).
    Replica(usize),
    Client(usize),
}

#[derive(Debug)]
pub enum Event {
    ToReplica {
        from: Endpoint,
        to: usize,
        message: Delivery,
    },
    ToClient {
        from: usize,
        client: usize,
        reply: Reply,
    },
    /// A replica instance's answer to a read on the fast path.
    ReadToClient {
        from: usize,
        client: usize,
        reply: ReadReply,
    },
    Tick,
}

#[derive(Debug)]
pub enum Delivery {
    Replica(ReplicaMessage),
    Client(ClientBatch),
    /// A read on the fast path (`ClientMessage::Read`): unordered, answered
    /// by each replica once it executed everything it saw prepared.
    Read {
        id: u64,
        operation: Vec<u8>,
    },
}

/// A read on the fast path parked at a replica instance until its
/// execution reaches the barrier: (client index, read id, operation).
pub type ParkedRead = (usize, u64, Vec<u8>);

#[derive(Default)]
pub struct Collected {
    replies: Vec<(PublicKey, Reply)>,
    /// Answers to reads on the fast path.
    pub reads: Vec<(PublicKey, ReadReply)>,
}

struct SimSink(Arc<Mutex<Collected>>);

impl ReplySink for SimSink {
    fn send(&self, client: &PublicKey, reply: Reply) {
        self.0.lock().unwrap().replies.push((*client, reply));
    }
    fn checkpoint(&self, _: CheckpointRecord) {}
    fn send_read(&self, client: &PublicKey, reply: ReadReply) {
        self.0.lock().unwrap().reads.push((*client, reply));
    }
}

/// A batch as executed: the proposal's timestamp and its requests
/// (client, request number, operation).
pub type ExecutedBatch = (u64, Vec<(PublicKey, u64, Op)>);

/// Request numbers a primary forging unsigned batches uses (plus the
/// sequence number) in an honest client's name: no honest client gets there.
pub const FORGED_NUMBERS: u64 = 1 << 40;

/// The key of a client no scenario admits: a smuggling primary's requests
/// come from it.
pub fn stranger() -> SecretKey {
    SecretKey::from_seed([250; 32])
}

/// One running instance of a replica. Twins are two instances with one id.
pub struct Node {
    pub id: ReplicaId,
    pub replica: Replica,
    pub execution: Execution<Bank>,
    pub collected: Arc<Mutex<Collected>>,
    pub crashed: bool,
    /// Its service state was damaged (see `Scenario::corrupt`).
    pub corrupted: bool,
    /// How far its clock runs ahead of real time.
    pub clock_offset: u64,
    pub executed: BTreeMap<Seq, Hash>,
    /// What it executed at each sequence number: the proposal's timestamp
    /// and its requests (client, number, operation).
    pub batches: BTreeMap<Seq, ExecutedBatch>,
    pub replies: BTreeMap<(PublicKey, u32, u64), Vec<u8>>,
    /// Checkpoint digests it took, and those it installed by state transfer.
    pub checkpoints: BTreeMap<Seq, Hash>,
    /// Where it learned that its state differs from the quorum's.
    pub diverged: Option<Seq>,
    /// The highest view it voted to change to.
    pub voted: View,
    /// The highest view it voted for before the heal.
    pub voted_before_heal: View,
    /// When it entered which view.
    pub views: Vec<(u64, View)>,
    /// Messages it sent (the latest few), for a Byzantine one to replay.
    pub sent: VecDeque<ReplicaMessage>,
    /// Client batches it saw, for a Byzantine one to forward.
    pub seen: Vec<ClientBatch>,
    /// Pre-prepares a Byzantine primary rewrote, so each is rewritten once.
    pub forged: BTreeMap<(View, Seq), PrePrepare>,
    /// Its data directory.
    pub disk: Disk,
    /// Its state server: the checkpoint it indexed last, and when it is
    /// done with the requests it was given (it answers one at a time).
    pub indexed: Option<Seq>,
    pub serving_until: u64,
    /// Reads on the fast path waiting for execution to reach their barrier,
    /// by (barrier, arrival).
    pub parked_reads: BTreeMap<(Seq, u64), ParkedRead>,
    /// Pre-prepares its replica holds for a view it has not entered, as
    /// far as the world can tell: (view, sender, seq, digest).
    pub held_pre_prepares: BTreeSet<(View, ReplicaId, Seq, Hash)>,
    pub read_arrivals: u64,
    /// Answers it gave to reads, by operation (the latest few), for a
    /// Byzantine one to replay stale.
    pub read_answers: BTreeMap<Vec<u8>, VecDeque<Vec<u8>>>,
}

fn new_node(
    id: ReplicaId,
    key: &SecretKey,
    cluster: &ClusterConfig,
    protocol: &ProtocolConfig,
    clock_offset: u64,
    restarted: Option<u64>,
) -> Node {
    let collected = Arc::new(Mutex::new(Collected::default()));
    // As a replica without a data directory starts: checkpoints are read
    // from the live state (the simulated disk is the world's, apart from it).
    let execution = Execution::start_live(
        id,
        ExecutorBuilder::new().workers(2).window(64),
        Bank::new(),
        Arc::new(SimSink(Arc::clone(&collected))),
        protocol.sessions,
    )
    .expect("the bank starts");
    let mut replica = if let Some(probe) = restarted {
        // As a replica process without a disk starts: it may have run.
        Replica::restarted_with_probe(id, cluster, key.clone(), protocol.clone(), probe)
    } else {
        Replica::new(id, cluster, key.clone(), protocol.clone())
    };
    replica.set_local_checkpoint(execution.checkpoints() as _);
    Node {
        id,
        replica,
        execution,
        collected,
        crashed: false,
        corrupted: false,
        clock_offset,
        executed: BTreeMap::new(),
        batches: BTreeMap::new(),
        replies: BTreeMap::new(),
        checkpoints: BTreeMap::new(),
        diverged: None,
        voted: 0,
        voted_before_heal: 0,
        views: Vec::new(),
        sent: VecDeque::new(),
        seen: Vec::new(),
        forged: BTreeMap::new(),
        disk: Disk::default(),
        indexed: None,
        serving_until: 0,
        parked_reads: BTreeMap::new(),
        held_pre_prepares: BTreeSet::new(),
        read_arrivals: 0,
        read_answers: BTreeMap::new(),
    }
}

/// A read-only operation on the fast path, waiting for answers.
pub struct Reading {
    pub op: Op,
    pub id: u64,
    pub invoked: u64,
    /// Each replica's answer (`None`: it declined).
    pub votes: BTreeMap<ReplicaId, Option<Vec<u8>>>,
    /// When it gives up and orders the operation instead.
    pub until: u64,
}

/// How long a read on the fast path waits for matching answers before the
/// client orders it.
pub const READ_TIMEOUT: u64 = 300 * MS;

/// An operation an honest client completed.
#[derive(Clone, Debug)]
pub struct Done {
    pub invoked: u64,
    pub responded: u64,
    pub op: Op,
    pub result: u64,
    /// Its request number if it was ordered; `None` if it was answered on
    /// the read-only fast path.
    pub number: Option<u64>,
}

pub struct Outstanding {
    pub op: Op,
    pub number: u64,
    pub batch: ClientBatch,
    pub invoked: u64,
    pub votes: BTreeMap<ReplicaId, (Vec<u8>, u64)>,
    pub next_retransmit: u64,
    pub backoff: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// Runs its script, one operation at a time; checked.
    Honest,
    /// Reuses request number 1 for two different operations.
    Reuser,
    /// Sends requests about as large as the frame limit to every replica.
    Oversized,
    /// Sends unsigned batches to some replicas only, different ones to
    /// different replicas under one number, or in another client's name;
    /// never retransmits.
    Partial,
}

pub struct Client {
    pub key: SecretKey,
    pub kind: ClientKind,
    pub script: VecDeque<Op>,
    pub next_number: u64,
    pub view: u64,
    pub outstanding: Option<Outstanding>,
    /// A read-only operation on the fast path (before it is ordered, if
    /// the answers do not agree in time).
    pub reading: Option<Reading>,
    /// Whether it sends read-only operations on the fast path.
    pub fast_reads: bool,
    pub next_read: u64,
    /// When it starts its next operation.
    pub next_at: u64,
    pub history: Vec<Done>,
    /// Numbers of the requests answered with an expired session.
    pub expired: Vec<u64>,
    /// Every request it sent to be ordered, by number: what replicas may
    /// execute in its name.
    pub issued: BTreeMap<u64, Op>,
    /// Whether it signs every batch and sends it to the primary alone
    /// (`ClientConfig::sign_every_batch`) rather than unsigned to all.
    pub signs: bool,
}

impl Client {
    pub fn busy(&self) -> bool {
        self.kind == ClientKind::Honest
            && (self.outstanding.is_some() || self.reading.is_some() || !self.script.is_empty())
    }
}

/// The second restart of a rolling restart (`Scenario::rolling_restart`).
struct Rolling {
    /// The replica restarted second (the primary of view 0).
    instance: usize,
    /// When it goes down: it comes back once the first replica recovered.
    down_at: u64,
}

pub struct World {
    /// A digest of every event the run processed, in order (time, kind,
    /// endpoints, content): two runs of one seed must end with the same one.
    /// Kept only when asked for ([`World::fingerprinted`]): it costs an
    /// encoding of every message.
    pub fingerprint: Option<blake3::Hasher>,
    pub now: u64,
    pub rng: StdRng,
    order: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    pub nodes: Vec<Node>,
    pub clients: Vec<Client>,
    pub keys: Vec<SecretKey>,
    pub scenario: Scenario,
    pub cluster: ClusterConfig,
    pub protocol: ProtocolConfig,
    pub network: Network,
    pub n: usize,
    pub f: usize,
    /// Byzantine replicas (every instance of the id misbehaves alike).
    pub byzantine: BTreeMap<ReplicaId, Behaviour>,
    /// Replicas run as twins.
    pub twinned: Vec<ReplicaId>,
    /// The Twins schedule: the candidate partition of every round.
    pub schedule: Vec<usize>,
    /// Peers a withholding replica is silent to.
    pub withheld: BTreeSet<ReplicaId>,
    /// The timestamp a timestamp-pushing primary proposes (0: now + an hour).
    pub pushed_timestamp: u64,
    /// What Byzantine replicas remember across messages.
    pub attacks: crate::byzantine::Attacks,
    /// The digest each correct replica signed in its pre-prepares and
    /// prepares, by (replica, kind, view, sequence number), across restarts.
    pub signed: BTreeMap<(ReplicaId, &'static str, View, Seq), Hash>,
    pub crash: Option<(usize, u64)>,
    pub restart: Option<(usize, u64, u64)>,
    restarted: bool,
    /// The copy of the restarting replica's directory, once taken (see
    /// `Scenario::restore_copy_at`).
    disk_copy: Option<crate::disk::Disk>,
    /// The second restart of `Scenario::rolling_restart`.
    rolling: Option<Rolling>,
    /// When every replica goes down, and when they all come back.
    power_cut: Option<(u64, u64)>,
    pub corrupt: Option<(usize, u64)>,
    /// Since when no honest client has had anything left to do.
    quiet_since: Option<u64>,
    /// Invariants broken during the run (checked as they happen).
    pub violations: Vec<String>,
    /// The largest multiple of its base timeouts any correct replica ran
    /// with: the lag a backup allows a proposal's timestamp grows with it.
    pub largest_timeout_scale: u64,
    pub deadline: u64,
    pub settle: u64,
    /// Transferred states installed, across instances.
    pub installed: u64,
    /// Reads the honest clients had answered on the fast path, and those
    /// they ordered instead.
    pub fast_reads: u64,
    pub ordered_reads: u64,
    /// Reads a correct replica instance parked: its execution had not
    /// reached their barrier when they arrived.
    pub parked_reads: u64,
    /// `TRACE=1`: print what every instance does about views and state.
    pub tracing: bool,
    /// `TRACE=2`: also print every replica message delivered and every
    /// batch executed.
    pub tracing_messages: bool,
}

impl World {
    pub fn new(seed: u64, scenario: Scenario) -> World {
        let (n, f) = (scenario.n, scenario.f);
        let mut rng = StdRng::seed_from_u64(seed);
        let keys: Vec<SecretKey> = (0..n)
            .map(|i| SecretKey::from_seed([i as u8 + 1; 32]))
            .collect();
        let cluster = ClusterConfig {
            f,
            replicas: keys
                .iter()
                .enumerate()
                .map(|(i, k)| ReplicaEntry {
                    id: i as ReplicaId,
                    address: format!("sim:{i}"),
                    public_key: k.public(),
                })
                .collect(),
            clients: scenario.admit_clients.then(|| {
                // The scenario's clients, honest and rogue (see below).
                let honest = (0..scenario.clients).map(|c| 100 + c as u8);
                honest
                    .chain([200, 201])
                    .map(|seed| ClientEntry {
                        public_key: SecretKey::from_seed([seed; 32]).public(),
                        name: None,
                    })
                    .collect()
            }),
        };
        let protocol = protocol_config(&scenario);
        // As a real replica refuses to start: the largest view-change
        // certificate must fit the transport's frames.
        let certificates = protocol.largest_certificate_bytes(&cluster);
        assert!(
            certificates <= scenario.net.frame_limit as u64,
            "{}: a new-view can take {certificates} bytes, over the frame limit",
            scenario.name
        );

        // Who is faulty: distinct replicas, drawn from the seed.
        let mut taken: BTreeSet<ReplicaId> = BTreeSet::new();
        let mut pick = |who: Who, rng: &mut StdRng| -> ReplicaId {
            let id = match who {
                Who::Replica(r) => r,
                Who::Backup | Who::Any => {
                    let low = if who == Who::Backup { 1 } else { 0 };
                    let free: Vec<ReplicaId> = (low..n as ReplicaId)
                        .filter(|r| !taken.contains(r))
                        .collect();
                    free[rng.gen_range(0..free.len())]
                }
            };
            taken.insert(id);
            id
        };
        let byzantine: BTreeMap<ReplicaId, Behaviour> = scenario
            .byzantine
            .iter()
            .map(|(who, behaviour)| (pick(*who, &mut rng), *behaviour))
            .collect();
        let twinned: Vec<ReplicaId> = (0..scenario.twins.map_or(0, |(t, _)| t))
            .map(|_| pick(Who::Any, &mut rng))
            .collect();
        let corrupt_id = scenario.corrupt.map(|(who, _, _)| pick(who, &mut rng));
        let crash_id = scenario.crash.map(|(who, _)| pick(who, &mut rng));
        let restart_id = scenario.restart.map(|(who, _, _)| pick(who, &mut rng));
        assert!(
            byzantine.len() + twinned.len() + corrupt_id.iter().count() <= f,
            "at most f faulty replicas"
        );

        let ids = twins::instance_ids(n, &twinned);
        let heal = scenario.heal;
        let mut schedule = Vec::new();
        let sides = scenario.twins.map(|(_, max_sides)| {
            let candidates = twins::candidates(&ids, max_sides);
            let rounds = heal.div_ceil(scenario.net.round) as usize;
            let enumerate = std::env::var("TWINS_ENUMERATE").is_ok_and(|v| v == "1");
            schedule = twins::schedule(seed, candidates.len(), rounds, enumerate);
            schedule.iter().map(|i| candidates[*i].clone()).collect()
        });
        let network = Network::plan(scenario.net.clone(), ids.clone(), heal, sides, &mut rng);

        let nodes = ids
            .iter()
            .map(|id| {
                let offset = rng.gen_range(0..=scenario.clock_skew);
                new_node(*id, &keys[*id as usize], &cluster, &protocol, offset, None)
            })
            .collect();

        let mut clients: Vec<Client> = (0..scenario.clients)
            .map(|c| {
                let script = (0..scenario.ops)
                    .map(|_| match rng.gen_range(0..10) {
                        0..5 => Op::Transfer {
                            from: rng.gen_range(0..ACCOUNTS),
                            to: rng.gen_range(0..ACCOUNTS),
                            amount: rng.gen_range(1..60),
                        },
                        5..7 => Op::Balance {
                            id: rng.gen_range(0..ACCOUNTS),
                        },
                        7 => Op::Total,
                        _ => Op::Stamp,
                    })
                    .collect();
                Client {
                    key: SecretKey::from_seed([100 + c as u8; 32]),
                    kind: ClientKind::Honest,
                    script,
                    next_number: 1,
                    expired: Vec::new(),
                    issued: BTreeMap::new(),
                    signs: c % 2 == 1,
                    view: 0,
                    outstanding: None,
                    reading: None,
                    // Most clients read on the fast path, some order all.
                    fast_reads: rng.gen_range(0..4) != 0,
                    next_read: 1,
                    next_at: rng.gen_range(0..=scenario.think),
                    history: Vec::new(),
                }
            })
            .collect();
        let rogue = |kind: ClientKind, c: usize| Client {
            key: SecretKey::from_seed([200 + c as u8; 32]),
            kind,
            script: VecDeque::new(),
            next_number: 1,
            expired: Vec::new(),
            issued: BTreeMap::new(),
            signs: false,
            view: 0,
            outstanding: None,
            reading: None,
            fast_reads: false,
            next_read: 1,
            next_at: 200 * MS,
            history: Vec::new(),
        };
        clients.push(rogue(ClientKind::Reuser, 0));
        if scenario.oversized_client {
            clients.push(rogue(ClientKind::Oversized, 1));
        }
        clients.push(rogue(ClientKind::Partial, 2));

        let withheld = match byzantine.iter().find(|(_, b)| **b == Behaviour::Withhold) {
            Some((id, _)) => {
                let others: Vec<ReplicaId> = (0..n as ReplicaId).filter(|r| r != id).collect();
                let count = rng.gen_range(1..others.len());
                let mut silent = BTreeSet::new();
                while silent.len() < count {
                    silent.insert(others[rng.gen_range(0..others.len())]);
                }
                silent
            }
            None => BTreeSet::new(),
        };
        let pushed_timestamp = if rng.gen_bool(0.5) { u64::MAX } else { 0 };
        let instance = |id: ReplicaId| id as usize; // faults hit the first instance
        let crash = scenario
            .crash
            .zip(crash_id)
            .map(|((_, at), id)| (instance(id), at));
        let restart = scenario
            .restart
            .zip(restart_id)
            .map(|((_, down, up), id)| (instance(id), down, up));
        let rolling = scenario.rolling_restart.map(|down_at| Rolling {
            instance: instance(0),
            down_at,
        });
        let corrupt = scenario
            .corrupt
            .zip(corrupt_id)
            .map(|((_, from, until), id)| (instance(id), rng.gen_range(from..until)));
        let power_cut = scenario.power_cut.map(|(from, until)| {
            let down = rng.gen_range(from..until);
            (down, down + rng.gen_range(50 * MS..500 * MS))
        });
        let settle = 2_000 * MS + 40 * scenario.net.stable_delay.1;
        let deadline = heal + scenario.liveness;

        let mut world = World {
            now: 0,
            rng,
            order: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            nodes,
            clients,
            keys,
            cluster,
            protocol,
            network,
            n,
            f,
            byzantine,
            twinned,
            schedule,
            withheld,
            pushed_timestamp,
            attacks: Default::default(),
            signed: BTreeMap::new(),
            crash,
            restart,
            restarted: false,
            disk_copy: None,
            largest_timeout_scale: 1,
            rolling,
            power_cut,
            corrupt,
            fingerprint: None,
            quiet_since: None,
            violations: Vec::new(),
            deadline,
            settle,
            installed: 0,
            fast_reads: 0,
            ordered_reads: 0,
            parked_reads: 0,
            tracing: std::env::var("TRACE").is_ok_and(|v| v == "1" || v == "2"),
            tracing_messages: std::env::var("TRACE").is_ok_and(|v| v == "2"),
            scenario,
        };
        world.rogue_client();
        world.schedule(TICK, Event::Tick);
        world
    }

    pub fn schedule(&mut self, delay: u64, event: Event) {
        self.order += 1;
        self.events.insert(self.order, event);
        self.queue.push(Reverse((self.now + delay, self.order)));
    }

    /// The instances of replica `id` (two for a twinned id).
    pub fn instances_of(&self, id: ReplicaId) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].id == id)
            .collect()
    }

    pub fn behaviour(&self, instance: usize) -> Option<Behaviour> {
        self.byzantine.get(&self.nodes[instance].id).copied()
    }

    /// Whether an instance follows the protocol with intact state: not
    /// Byzantine, not a twin, not corrupted. (Crashed ones are correct.)
    pub fn is_correct(&self, instance: usize) -> bool {
        let node = &self.nodes[instance];
        !self.byzantine.contains_key(&node.id)
            && !self.twinned.contains(&node.id)
            && !node.corrupted
    }

    /// Correct instances, crashed ones included.
    pub fn correct(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.is_correct(*i))
            .collect()
    }

    /// Keeps a [`fingerprint`](Self::fingerprint) of the events from now on.
    pub fn fingerprinted(mut self) -> World {
        self.fingerprint = Some(blake3::Hasher::new());
        self
    }

    fn fingerprint_event(&mut self, at: u64, order: u64) {
        let Some(fingerprint) = &mut self.fingerprint else {
            return;
        };
        let Some(event) = self.events.get(&order) else {
            return;
        };
        fingerprint.update(&at.to_le_bytes());
        match event {
            Event::ToReplica { from, to, message } => {
                let content = match message {
                    Delivery::Replica(m) => cbase_net::message::digest_of(m),
                    Delivery::Client(b) => b.digest(),
                    Delivery::Read { id, operation } => {
                        cbase_net::message::digest_of(&(id, operation))
                    }
                };
                let from = match from {
                    Endpoint::Replica(i) => *i as u64,
                    Endpoint::Client(c) => (1 << 32) | *c as u64,
                };
                fingerprint.update(&[0]);
                fingerprint.update(&from.to_le_bytes());
                fingerprint.update(&(*to as u64).to_le_bytes());
                fingerprint.update(&content);
            }
            Event::ToClient {
                from,
                client,
                reply,
            } => {
                fingerprint.update(&[1]);
                fingerprint.update(&(*from as u64).to_le_bytes());
                fingerprint.update(&(*client as u64).to_le_bytes());
                fingerprint.update(&cbase_net::message::digest_of(reply));
            }
            Event::ReadToClient {
                from,
                client,
                reply,
            } => {
                fingerprint.update(&[2]);
                fingerprint.update(&(*from as u64).to_le_bytes());
                fingerprint.update(&(*client as u64).to_le_bytes());
                fingerprint.update(&reply.id.to_le_bytes());
                fingerprint.update(&cbase_net::message::digest_of(&reply.result));
            }
            Event::Tick => {
                fingerprint.update(&[3]);
            }
        }
    }

    /// When a live correct replica last entered a view.
    pub fn last_view_entered(&self) -> u64 {
        self.live_correct()
            .iter()
            .filter_map(|i| self.nodes[*i].views.last().map(|(at, _)| *at))
            .max()
            .unwrap_or(0)
    }

    /// Correct instances that are up.
    pub fn live_correct(&self) -> Vec<usize> {
        self.correct()
            .into_iter()
            .filter(|i| !self.nodes[*i].crashed)
            .collect()
    }

    /// Whether every live correct replica executed at least to the highest
    /// stable checkpoint among them (one that fell behind fetches state).
    pub fn caught_up(&self) -> bool {
        let low = self.highest_stable();
        self.live_correct()
            .iter()
            .all(|i| self.nodes[*i].replica.delivered() >= low)
    }

    /// The highest stable checkpoint among the live correct replicas.
    pub fn highest_stable(&self) -> u64 {
        self.live_correct()
            .iter()
            .map(|i| self.nodes[*i].replica.low_watermark())
            .max()
            .unwrap_or(0)
    }

    pub fn trace(&self, instance: usize, text: std::fmt::Arguments) {
        if self.tracing {
            eprintln!(
                "{:>7.1} ms  instance {instance}: {text}",
                self.now as f64 / MS as f64
            );
        }
    }

    pub fn violation(&mut self, text: String) {
        if self.violations.len() < 8 {
            self.violations
                .push(format!("at {} ms: {text}", self.now / MS));
        }
    }

    // ------------------------------------------------------------ sending

    /// A replica instance's message to replica `to`, over every link to
    /// `to`'s instances, after `extra` more delay.
    pub fn transmit(&mut self, from: usize, to: ReplicaId, message: ReplicaMessage, extra: u64) {
        if self.network.outage_loses(self.now, to, &message) {
            return;
        }
        let size = frame_size(&message);
        for target in self.instances_of(to) {
            let delays = self
                .network
                .replica_link(self.now, from, target, size, &mut self.rng);
            for delay in delays {
                self.schedule(
                    delay + extra,
                    Event::ToReplica {
                        from: Endpoint::Replica(from),
                        to: target,
                        message: Delivery::Replica(message.clone()),
                    },
                );
            }
        }
    }

    pub fn client_send(&mut self, client: usize, to: ReplicaId, batch: &ClientBatch) {
        let size = batch_frame_size(batch);
        for target in self.instances_of(to) {
            for delay in self.network.client_link(self.now, size, &mut self.rng) {
                self.schedule(
                    delay,
                    Event::ToReplica {
                        from: Endpoint::Client(client),
                        to: target,
                        message: Delivery::Client(batch.clone()),
                    },
                );
            }
        }
    }

    fn reply(&mut self, from: usize, client: usize, reply: Reply) {
        for delay in self.network.client_link(self.now, 256, &mut self.rng) {
            self.schedule(
                delay,
                Event::ToClient {
                    from,
                    client,
                    reply: reply.clone(),
                },
            );
        }
    }

    // ------------------------------------------------------------ the loop

    pub fn run(&mut self) {
        let mut budget = MAX_EVENTS;
        while let Some(Reverse((at, order))) = self.queue.pop() {
            if !self.violations.is_empty() {
                return; // the run already failed
            }
            if at > self.deadline + self.settle {
                return; // messages still in flight long after the end
            }
            budget -= 1;
            if budget == 0 {
                self.violation(format!("more than {MAX_EVENTS} events: a message storm"));
                return;
            }
            self.now = at;
            self.fingerprint_event(at, order);
            let event = self
                .events
                .remove(&order)
                .expect("every queued event is stored");
            match event {
                Event::Tick => {
                    self.tick();
                    let busy = self.clients.iter().any(Client::busy);
                    // Once the clients are done, keep time running a while
                    // (past the heal) so replicas that fell behind catch up
                    // and views settle.
                    if busy {
                        self.quiet_since = None;
                    } else if self.quiet_since.is_none() {
                        self.quiet_since = Some(self.now);
                    }
                    // Settled: the clients are done, no correct replica
                    // has entered a view for a settle period (after the
                    // heal), and none is behind the latest stable
                    // checkpoint (one formed late, say because a faulty
                    // replica withheld its vote, is fetched after it
                    // forms); the checks then require that this happened
                    // before the deadline.
                    let last_view = self.last_view_entered();
                    let settled = self.quiet_since.is_some_and(|since| {
                        self.now >= since.max(self.network.heal).max(last_view) + self.settle
                    }) && self.caught_up();
                    if !settled && self.now < self.deadline {
                        self.schedule(TICK, Event::Tick);
                    }
                }
                Event::ToReplica { from, to, message } => {
                    if let (Delivery::Client(batch), Endpoint::Client(c)) = (&message, from)
                        && batch.batch.client != self.clients[c].key.public()
                    {
                        // As the runtime does: a connection carries only
                        // its own client's batches.
                        continue;
                    }
                    if let (Delivery::Client(batch), Endpoint::Client(c)) = (&message, from) {
                        // As the runtime does: a retransmission of requests
                        // already executed is answered from the reply cache.
                        if self.answer_from_cache(to, c, batch) {
                            continue;
                        }
                    }
                    let input = match message {
                        Delivery::Replica(m) => match from {
                            Endpoint::Replica(r) => Input::Replica(self.nodes[r].id, m),
                            Endpoint::Client(_) => continue,
                        },
                        Delivery::Client(b) => Input::Client(b),
                        Delivery::Read { id, operation } => {
                            if let Endpoint::Client(c) = from {
                                self.on_read(to, c, id, operation);
                            }
                            continue;
                        }
                    };
                    self.deliver(to, input);
                }
                Event::ToClient {
                    from,
                    client,
                    reply,
                } => self.on_reply(client, self.nodes[from].id, reply),
                Event::ReadToClient {
                    from,
                    client,
                    reply,
                } => self.on_read_reply(client, self.nodes[from].id, reply),
            }
        }
    }

    fn tick(&mut self) {
        if let Some((instance, at)) = self.crash
            && self.now >= at
        {
            if !self.nodes[instance].crashed {
                self.trace(instance, format_args!("crashes"));
            }
            self.nodes[instance].crashed = true;
        }
        if let Some((down_at, up_at)) = self.power_cut {
            if self.now >= down_at && !self.restarted {
                for node in &mut self.nodes {
                    node.crashed = true;
                }
            }
            if self.now >= up_at && !self.restarted {
                self.restarted = true;
                for instance in 0..self.nodes.len() {
                    let lose = self.rng.gen_bool(0.5);
                    self.restart_from_disk(instance, lose, false);
                }
            }
        }
        if let Some((instance, down_at, up_at)) = self.restart {
            if let Some(copy_at) = self.scenario.restore_copy_at
                && self.now >= copy_at
                && self.disk_copy.is_none()
                && !self.restarted
            {
                self.disk_copy = Some(self.nodes[instance].disk.clone());
                self.trace(instance, format_args!("its directory is copied"));
            }
            if self.now >= down_at && !self.restarted {
                self.nodes[instance].crashed = true;
            }
            if self.now >= up_at && !self.restarted && self.scenario.restart_from_disk {
                self.restarted = true;
                if let Some(copy) = self.disk_copy.take() {
                    self.nodes[instance].disk = copy;
                    self.restart_from_disk(instance, false, true);
                } else {
                    let lose = self.rng.gen_bool(0.5);
                    self.restart_from_disk(instance, lose, false);
                }
            }
            if self.now >= up_at && !self.restarted {
                self.restarted = true;
                self.restart_without_memory(instance);
            }
            self.roll_on(instance);
        }
        if let Some((instance, at)) = self.corrupt
            && self.now >= at
            && !self.nodes[instance].corrupted
        {
            self.damage(instance);
        }
        for instance in 0..self.nodes.len() {
            self.deliver(instance, Input::Tick);
            if !self.nodes[instance].crashed {
                self.misbehave(instance);
            }
        }
        self.sample_memory();
        for client in 0..self.clients.len() {
            self.client_tick(client);
        }
    }

    /// Restarts an instance with empty memory: everything it knew is gone,
    /// a new state machine, a new service.
    fn restart_without_memory(&mut self, instance: usize) {
        self.trace(instance, format_args!("restarts with empty memory"));
        let old = &self.nodes[instance];
        let (id, offset) = (old.id, old.clock_offset);
        let probe = self.rng.r#gen();
        let fresh = new_node(
            id,
            &self.keys[id as usize],
            &self.cluster,
            &self.protocol,
            offset,
            Some(probe),
        );
        let old = std::mem::replace(&mut self.nodes[instance], fresh);
        old.execution.shutdown();
    }

    /// The rolling restart's second step: the next replica goes down, and
    /// once `first`, restarted, reports its recovery over, it comes back
    /// without its memory.
    fn roll_on(&mut self, first: usize) {
        let Some(rolling) = &self.rolling else {
            return;
        };
        let instance = rolling.instance;
        if self.now < rolling.down_at {
            return;
        }
        if !self.nodes[instance].crashed {
            self.trace(instance, format_args!("goes down"));
            self.nodes[instance].crashed = true;
        }
        if self.restarted && !self.nodes[first].replica.recovering() {
            self.trace(first, format_args!("recovered"));
            self.rolling = None;
            self.restart_without_memory(instance);
        }
    }

    /// Restarts an instance from its data directory, as a replica process
    /// does: the stored checkpoint installed, the logged batches replayed,
    /// the protocol recovered. `lose_unsynced` drops the writes the disk had
    /// not synced yet; `restored` starts it as a replica put back from a
    /// copy (`Replica::recover_restored`). What the world observed of it
    /// stays.
    fn restart_from_disk(&mut self, instance: usize, lose_unsynced: bool, restored: bool) {
        let old = &self.nodes[instance];
        let (id, offset) = (old.id, old.clock_offset);
        let (stored, replay, mut recovered) = old.disk.read(lose_unsynced);
        let mut disk = old.disk.clone();
        if lose_unsynced {
            disk.drop_unsynced();
        }
        // As the runtime does: a directory restored once starts restored
        // until its recovery ends, told so or not.
        let restored = restored || recovered.restored;
        disk.restored = restored;
        let key = self.keys[id as usize].clone();
        let mut fresh = new_node(id, &key, &self.cluster, &self.protocol, offset, None);
        if let Some((seq, state)) = stored {
            fresh
                .execution
                .install(seq, state)
                .expect("a stored checkpoint installs");
        }
        let mut taken = Vec::new();
        for committed in replay {
            if let Some(record) = fresh.execution.execute(committed) {
                taken.push((record.seq, record.digest));
            }
        }
        fresh.execution.wait_idle();
        // Replies of the replay went to no one.
        fresh.collected.lock().unwrap().replies.clear();
        recovered.executed = fresh.execution.last_executed();
        let executed = recovered.executed;
        fresh.replica = if restored {
            Replica::recover_restored(id, &self.cluster, key, self.protocol.clone(), recovered)
        } else {
            Replica::recover(id, &self.cluster, key, self.protocol.clone(), recovered)
        };
        fresh
            .replica
            .set_local_checkpoint(fresh.execution.checkpoints() as _);
        fresh.disk = disk;
        let old = std::mem::replace(&mut self.nodes[instance], fresh);
        let node = &mut self.nodes[instance];
        node.executed = old.executed;
        node.batches = old.batches;
        node.replies = old.replies;
        node.checkpoints = old.checkpoints;
        node.voted = old.voted;
        node.voted_before_heal = old.voted_before_heal;
        node.views = old.views;
        old.execution.shutdown();
        self.trace(
            instance,
            format_args!(
                "restarts from disk at {executed}{}",
                if restored {
                    ", restored from the copy"
                } else if lose_unsynced {
                    ", unsynced writes lost"
                } else {
                    ""
                }
            ),
        );
        for (seq, state) in taken {
            self.deliver(instance, Input::CheckpointTaken { seq, state });
        }
    }

    /// Rolls an instance's service state back to its oldest checkpoint, as
    /// a lost write would, once it has executed past one.
    fn damage(&mut self, instance: usize) {
        let node = &mut self.nodes[instance];
        let delivered = node.replica.delivered();
        let store = node.execution.checkpoints();
        let oldest = store.held().into_iter().find(|seq| *seq > 0);
        let Some(from) = oldest.filter(|seq| *seq < delivered) else {
            return;
        };
        let state = store.state(from).expect("a held checkpoint");
        node.corrupted = true;
        let to = delivered;
        node.execution
            .install(delivered, CheckpointState::clone(&state))
            .expect("an old checkpoint installs");
        self.trace(
            instance,
            format_args!("state rolled back from {to} to {from}"),
        );
    }

    pub fn deliver(&mut self, to: usize, input: Input) {
        if self.nodes[to].crashed {
            return;
        }
        self.observe(to, &input);
        if self.tracing_messages {
            match &input {
                Input::Replica(sender, message) => {
                    self.trace(to, format_args!("<- {sender}: {}", describe(message)))
                }
                Input::Client(batch) => self.trace(
                    to,
                    format_args!(
                        "<- client {}: batch {} numbers {:?}",
                        batch.batch.client,
                        short(&batch.digest()),
                        batch
                            .batch
                            .requests
                            .iter()
                            .map(|r| r.number)
                            .collect::<Vec<_>>()
                    ),
                ),
                _ => {}
            }
        }
        let future = match &input {
            Input::Replica(_, message) => normal_case_view(message),
            _ => None,
        };
        let proposal = match &input {
            Input::Replica(sender, ReplicaMessage::PrePrepare(pp)) => {
                Some((pp.view, *sender, pp.seq, pp.digest))
            }
            _ => None,
        };
        let node = &mut self.nodes[to];
        let (view, buffered) = (node.replica.view(), node.replica.stats().buffered);
        let clock = if self.byzantine.get(&node.id) == Some(&Behaviour::HoldClock) {
            0
        } else {
            self.now + node.clock_offset
        };
        let recovering = node.replica.recovering();
        let mut outputs = Vec::new();
        node.replica.handle(clock, input, &mut outputs);
        if !self.byzantine.contains_key(&node.id) && !self.twinned.contains(&node.id) {
            self.largest_timeout_scale =
                self.largest_timeout_scale.max(node.replica.timeout_scale());
        }
        if recovering && !self.nodes[to].replica.recovering() {
            let view = self.nodes[to].replica.view();
            self.trace(to, format_args!("recovery over, in view {view}"));
        }
        if let Some(target) = future {
            let held = self.nodes[to].replica.stats().buffered > buffered;
            self.note_buffered(to, view, target, held);
            if let Some(proposal) = proposal.filter(|_| held) {
                self.note_held_pre_prepare(to, proposal);
            }
        }
        for output in outputs {
            self.output(to, output);
        }
        // Execution may have moved past the barrier of parked reads.
        self.run_ready_reads(to);
    }

    fn output(&mut self, from: usize, output: Output) {
        match output {
            Output::Send(to, message) => {
                if let ReplicaMessage::StateRequest { seq, offset, .. } = &message {
                    self.trace(
                        from,
                        format_args!("asks replica {to} for state {seq} from byte {offset}"),
                    );
                }
                self.note_sent(from, &message);
                self.replica_send(from, to, message);
            }
            Output::Broadcast(message) => {
                self.note_sent(from, &message);
                let id = self.nodes[from].id;
                for to in 0..self.n as ReplicaId {
                    if to != id {
                        self.replica_send(from, to, message.clone());
                    }
                }
            }
            Output::Execute(committed) => {
                if self.tracing_messages {
                    self.trace(
                        from,
                        format_args!(
                            "executes s{} (v{}, {} requests)",
                            committed.seq,
                            committed.view,
                            committed.proposal.batches.len()
                        ),
                    );
                }
                self.nodes[from].disk.log_executed(&committed);
                self.execute(from, committed)
            }
            Output::Stable { seq, state, proof } => {
                // The store folds the checkpoint into its base; the disk
                // keeps it if the store held it.
                let store = self.nodes[from].execution.checkpoints();
                store
                    .stabilize(seq, state, &proof, None)
                    .expect("nothing is written");
                if store.held().first() == Some(&seq)
                    && let Some(whole) = store.state(seq)
                    && whole.digest() == state
                {
                    let whole = CheckpointState::clone(&whole);
                    self.nodes[from].disk.stabilize(seq, state, proof, whole);
                }
            }
            Output::Persist(durable) => self.nodes[from].disk.persist(durable),
            Output::ViewEntered(view) => self.note_view_entered(from, view),
            Output::ServeState {
                to,
                seq,
                offset,
                whole,
            } => self.serve_state(from, to, seq, offset, whole),
            Output::ServeParts {
                to,
                seq,
                salt,
                request,
                parts,
            } => self.serve_parts(from, to, seq, (salt, request), parts),
            Output::InstallState { seq, digest, state } => {
                let node = &mut self.nodes[from];
                // As the runtime does: in parts onto the state the parts
                // were compared with, whole otherwise.
                let (_, how) = node
                    .execution
                    .install_transferred(seq, state)
                    .expect("verified states install");
                node.checkpoints.insert(seq, digest);
                self.installed += 1;
                self.trace(
                    from,
                    format_args!("installs transferred state {seq} ({how:?})"),
                );
                self.deliver(from, Input::StateInstalled { seq, state: digest });
            }
            Output::Diverged { seq, .. } => {
                self.nodes[from].diverged.get_or_insert(seq);
                self.trace(from, format_args!("diverged at {seq}"));
                if self.is_correct(from) {
                    self.violation(format!("correct replica instance {from} diverged at {seq}"));
                }
            }
        }
    }

    /// The encoded checkpoint `seq` of an instance (its manifest, or with
    /// `whole` its whole state), if it took one.
    pub fn encoded_checkpoint(&self, instance: usize, seq: Seq, whole: bool) -> Option<Vec<u8>> {
        if whole {
            let state = self.nodes[instance].execution.checkpoints().state(seq)?;
            Some(codec::encode(&*state).unwrap())
        } else {
            Some(codec::encode(&self.checkpoint_index(instance, seq)?.manifest()).unwrap())
        }
    }

    /// Checkpoint `seq` of an instance, indexed for serving parts.
    /// How long the instance's state server takes to get to a request
    /// about checkpoint `seq`. It answers one request at a time, and its
    /// first about a checkpoint indexes the whole state, which for a large
    /// one takes longer than the request timeout (so, here, half the time,
    /// up to three timeouts): peers asking then wait for it, and must not
    /// take that for silence or lies.
    pub fn serving_delay(&mut self, instance: usize, seq: Seq) -> u64 {
        let timeout = self.protocol.request_timeout.as_nanos() as u64;
        let cold = self.nodes[instance].indexed != Some(seq);
        let cost = if cold && self.rng.gen_bool(0.5) {
            self.rng.gen_range(timeout / 2..3 * timeout)
        } else {
            0
        };
        let node = &mut self.nodes[instance];
        node.indexed = Some(seq);
        node.serving_until = node.serving_until.max(self.now) + cost;
        node.serving_until - self.now
    }

    pub fn checkpoint_index(&self, instance: usize, seq: Seq) -> Option<CheckpointIndex> {
        let state = self.nodes[instance].execution.checkpoints().state(seq)?;
        Some(CheckpointIndex::build(state))
    }

    fn execute(&mut self, instance: usize, committed: Committed) {
        let (seq, digest) = (committed.seq, committed.digest);
        let timestamp = committed.proposal.timestamp;
        let ahead = self.scenario.clock_skew + CLOCK_SLACK;
        if self.is_correct(instance) && timestamp > self.now.saturating_add(ahead) {
            self.violation(format!(
                "replica instance {instance} executed {seq} at agreed time {timestamp} ns, \
                 more than {} s ahead of real time {} ns",
                ahead / 1_000 / MS,
                self.now
            ));
        }
        let node = &mut self.nodes[instance];
        node.executed.insert(seq, digest);
        let mut requests = Vec::new();
        for batch in &committed.proposal.batches {
            for request in &batch.batch.requests {
                if let Ok(op) = codec::decode::<Op>(&request.operation) {
                    requests.push((batch.batch.client, request.number, op));
                }
            }
        }
        node.batches.insert(seq, (timestamp, requests));
        let checkpoint = node.execution.execute(committed);
        node.execution.wait_idle();
        let mut replies = std::mem::take(&mut node.collected.lock().unwrap().replies);
        replies.sort_by_key(|(client, reply)| (*client, reply.lane, reply.number));
        for (client, reply) in &replies {
            // A request's result, to compare with the other replicas'. Not
            // an expired session's refusal: that speaks of the session, and
            // a replica that ran the request may later refuse a replay of it.
            let expired = matches!(
                codec::decode::<Result<u64, ExecError>>(&reply.result),
                Ok(Err(ExecError::SessionExpired { .. }))
            );
            if !expired {
                node.replies
                    .entry((*client, reply.lane, reply.number))
                    .or_insert_with(|| reply.result.clone());
            }
        }
        let chaos = self.behaviour(instance) == Some(Behaviour::Chaos);
        for (client, mut reply) in replies {
            if chaos {
                reply.result = codec::encode(&Ok::<u64, ExecError>(999_999)).unwrap();
            }
            if let Some(c) = self.clients.iter().position(|c| c.key.public() == client) {
                self.reply(instance, c, reply);
            }
        }
        if let Some(record) = checkpoint {
            let mut state = record.digest;
            if chaos {
                state[0] ^= 1; // Byzantine replicas lie about their state
            }
            self.nodes[instance]
                .checkpoints
                .insert(record.seq, record.digest);
            self.deliver(
                instance,
                Input::CheckpointTaken {
                    seq: record.seq,
                    state,
                },
            );
        }
    }

    fn answer_from_cache(&mut self, instance: usize, client: usize, batch: &ClientBatch) -> bool {
        let node = &self.nodes[instance];
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
            self.reply(instance, client, reply);
        }
        true
    }

    // ------------------------------------------------------------ clients

    fn rogue_client(&mut self) {
        let c = self
            .clients
            .iter()
            .position(|c| c.kind == ClientKind::Reuser)
            .expect("a reusing client");
        let key = self.clients[c].key.clone();
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
            let batch = sign(&key, 1, op);
            for to in 0..self.n as ReplicaId {
                self.client_send(c, to, &batch);
            }
        }
    }

    fn client_tick(&mut self, c: usize) {
        match self.clients[c].kind {
            ClientKind::Honest => self.honest_tick(c),
            ClientKind::Reuser => {}
            ClientKind::Oversized => self.oversized_tick(c),
            ClientKind::Partial => self.partial_tick(c),
        }
    }

    fn honest_tick(&mut self, c: usize) {
        let (now, n) = (self.now, self.n);
        if let Some(reading) = &self.clients[c].reading {
            if now < reading.until {
                return;
            }
            // No 2f+1 matching answers in time: order it.
            self.order_read(c);
        }
        let client = &mut self.clients[c];
        if let Some(outstanding) = &mut client.outstanding {
            if now >= outstanding.next_retransmit {
                outstanding.next_retransmit = now + outstanding.backoff;
                outstanding.backoff = (outstanding.backoff * 2).min(2_000 * MS);
                let batch = outstanding.batch.clone();
                for to in 0..n as ReplicaId {
                    self.client_send(c, to, &batch);
                }
            }
            return;
        }
        if now < client.next_at {
            return;
        }
        let Some(op) = client.script.pop_front() else {
            return;
        };
        if client.fast_reads && op.read_only() {
            self.read_unordered(c, op);
            return;
        }
        self.order(c, op, now);
    }

    /// Sends an operation to the primary to be ordered; `invoked` is when
    /// the client started it (earlier than now if it tried the fast path).
    pub fn order(&mut self, c: usize, op: Op, invoked: u64) {
        let (now, n) = (self.now, self.n);
        let client = &mut self.clients[c];
        let number = client.next_number;
        client.next_number += 1;
        client.issued.insert(number, op.clone());
        let batch = sign(&client.key, number, op.clone());
        let primary = (client.view % n as u64) as ReplicaId;
        let signs = client.signs;
        client.outstanding = Some(Outstanding {
            op,
            number,
            batch: batch.clone(),
            invoked,
            votes: BTreeMap::new(),
            next_retransmit: now + 150 * MS,
            backoff: 300 * MS,
        });
        if signs {
            self.client_send(c, primary, &batch);
        } else {
            // As a `NetClient` does by default: unsigned to every replica,
            // signed only when it retransmits.
            let unsigned = ClientBatch::unsigned(batch.batch);
            for to in 0..n as ReplicaId {
                self.client_send(c, to, &unsigned);
            }
        }
    }

    /// Every 250 ms until the heal, a faulty client's unsigned batch of
    /// padding: to a random part of the cluster, different under one
    /// number to each replica, or in an honest client's name (which the
    /// transport refuses, as a replica's runtime does).
    fn partial_tick(&mut self, c: usize) {
        let (now, n) = (self.now, self.n);
        if now < self.clients[c].next_at || now >= self.network.heal {
            return;
        }
        self.clients[c].next_at = now + 250 * MS;
        let number = self.clients[c].next_number;
        self.clients[c].next_number += 1;
        let own = self.clients[c].key.public();
        let unsigned = |client, tag: u8| {
            ClientBatch::unsigned(RequestBatch {
                client,
                requests: vec![ClientRequest {
                    lane: 0,
                    number,
                    operation: codec::encode(&Op::Pad(vec![tag])).expect("ops encode"),
                }],
            })
        };
        match self.rng.gen_range(0..4) {
            0 => {
                let count = self.rng.gen_range(1..n);
                let mut targets = BTreeSet::new();
                while targets.len() < count {
                    targets.insert(self.rng.gen_range(0..n) as ReplicaId);
                }
                for to in targets {
                    self.client_send(c, to, &unsigned(own, 0));
                }
            }
            1 => {
                for to in 0..n as ReplicaId {
                    self.client_send(c, to, &unsigned(own, to as u8));
                }
            }
            2 => {
                let victim = self.clients[0].key.public();
                for to in 0..n as ReplicaId {
                    self.client_send(c, to, &unsigned(victim, 0));
                }
            }
            _ => {
                for to in 0..n as ReplicaId {
                    self.client_send(c, to, &unsigned(own, 0));
                }
            }
        }
    }

    /// Every 600 ms until the heal, a request about as large as a frame:
    /// most fit a client's frame but not a pre-prepare's, or not two of
    /// them in one; a few do not fit at all.
    fn oversized_tick(&mut self, c: usize) {
        let client = &mut self.clients[c];
        if self.now < client.next_at || self.now >= self.network.heal {
            return;
        }
        client.next_at = self.now + 600 * MS;
        let number = client.next_number;
        client.next_number += 1;
        let key = client.key.clone();
        let empty = batch_frame_size(&sign(&key, number, Op::Pad(Vec::new())));
        let room = FRAME_LIMIT.min(self.network.spec.frame_limit) - empty;
        let size = match self.rng.gen_range(0..8) {
            0..5 => room - self.rng.gen_range(0..120),
            5..7 => room / 2 + self.rng.gen_range(0..room / 4),
            _ => room + self.rng.gen_range(1..200),
        };
        let batch = sign(&key, number, Op::Pad(vec![0x5a; size]));
        for to in 0..self.n as ReplicaId {
            self.client_send(c, to, &batch);
        }
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
            client.next_at = now + self.rng.gen_range(0..=self.scenario.think);
            match result {
                Ok(result) => client.history.push(Done {
                    invoked: done.invoked,
                    responded: now,
                    op: done.op,
                    result,
                    number: Some(done.number),
                }),
                // Its session was evicted: whether the operation ran is
                // unknown (the checks replay the agreed order to decide),
                // and the next one is numbered above the floor.
                Err(ExecError::SessionExpired { floor, .. }) => {
                    client.next_number = client.next_number.max(floor + 1);
                    client.expired.push(done.number);
                }
                Err(error) => panic!("a bank operation failed: {error}"),
            }
        }
    }

    /// Where every instance ended, for failure reports.
    pub fn describe(&self) -> String {
        let mut lines: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let role = match (self.byzantine.get(&n.id), self.twinned.contains(&n.id)) {
                    (Some(b), _) => format!("byzantine {b:?}"),
                    (None, true) => "twin".into(),
                    _ if n.corrupted => "corrupted".into(),
                    _ => "correct".into(),
                };
                format!(
                    "instance {i} (replica {}, {role}): crashed {}, view {}, changing to {:?}, \
                     delivered {}, low {}, pending {}, log {}, missing proposals {}, recovering {}, {:?}",
                    n.id,
                    n.crashed,
                    n.replica.view(),
                    n.replica.changing_to(),
                    n.replica.delivered(),
                    n.replica.low_watermark(),
                    n.replica.pending_batches(),
                    n.replica.log_len(),
                    n.replica.missing_proposals(),
                    n.replica.recovering(),
                    n.replica.stats()
                )
            })
            .collect();
        if !self.schedule.is_empty() {
            lines.push(format!(
                "twins schedule (candidate per round): {:?}",
                self.schedule
            ));
        }
        for (r, round) in self.network.rounds.iter().enumerate() {
            lines.push(format!("round {r}: {}", round.describe()));
        }
        lines.join("\n")
    }

    pub fn shutdown(self) {
        for node in self.nodes {
            node.execution.shutdown();
        }
    }
}

/// How far ahead of real time (beyond the clocks' skew) the agreed clock may
/// run at a correct replica.
pub const CLOCK_SLACK: u64 = 10_000 * MS;

/// The view of a normal-case message (one a replica holds if it is for a
/// view it has not entered yet).
/// The first bytes of a digest in hex, for traces.
fn short(hash: &[u8; 32]) -> String {
    hash[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// A one-line summary of a replica message for `TRACE=2`.
fn describe(message: &ReplicaMessage) -> String {
    match message {
        ReplicaMessage::PrePrepare(p) => format!(
            "pre-prepare v{} s{} batches {:?}",
            p.view,
            p.seq,
            p.proposal
                .batches
                .iter()
                .map(|b| short(&b.digest()))
                .collect::<Vec<_>>()
        ),
        ReplicaMessage::Forward(b) => format!("forward {}", short(&b.digest())),
        ReplicaMessage::Have(digests) => {
            format!("have {:?}", digests.iter().map(short).collect::<Vec<_>>())
        }
        ReplicaMessage::Prepare(p) => format!("prepare v{} s{}", p.view, p.seq),
        ReplicaMessage::Commit(c) => format!("commit v{} s{}", c.view, c.seq),
        ReplicaMessage::Checkpoint(c) => format!("checkpoint s{}", c.seq),
        ReplicaMessage::ViewChange(v) => format!(
            "view-change v{} low {} prepared {:?}",
            v.body.new_view,
            v.body.stable_seq,
            v.body
                .prepared
                .iter()
                .map(|p| p.pre_prepare.seq)
                .collect::<Vec<_>>()
        ),
        ReplicaMessage::NewView(v) => format!(
            "new-view v{} seqs {:?}",
            v.view,
            v.pre_prepares.iter().map(|p| p.seq).collect::<Vec<_>>()
        ),
        ReplicaMessage::Status(s) => format!("status {s:?}"),
        ReplicaMessage::FetchProposal { seq, .. } => format!("fetch-proposal s{seq}"),
        ReplicaMessage::ProposalBody { seq, .. } => format!("proposal-body s{seq}"),
        ReplicaMessage::StateRequest { seq, offset, whole } => {
            format!("state-request s{seq} @{offset} whole {whole}")
        }
        ReplicaMessage::StateReply { seq, offset, .. } => format!("state-reply s{seq} @{offset}"),
        ReplicaMessage::PartsRequest {
            seq,
            request,
            parts,
            ..
        } => {
            format!("parts-request s{seq} #{request:x} {} parts", parts.len())
        }
        ReplicaMessage::Parts {
            seq,
            request,
            parts,
        } => format!("parts s{seq} #{request:x} {} parts", parts.len()),
    }
}

fn normal_case_view(message: &ReplicaMessage) -> Option<View> {
    match message {
        ReplicaMessage::PrePrepare(p) => Some(p.view),
        ReplicaMessage::Prepare(p) => Some(p.view),
        ReplicaMessage::Commit(c) => Some(c.view),
        _ => None,
    }
}

pub fn sign(key: &SecretKey, number: u64, op: Op) -> ClientBatch {
    ClientBatch::sign(
        RequestBatch {
            client: key.public(),
            requests: vec![ClientRequest {
                lane: 0,
                number,
                operation: codec::encode(&op).unwrap(),
            }],
        },
        key,
    )
}

//! Rule-by-rule tests of the pure protocol, driven by a tiny in-memory network.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use super::*;
use crate::checkpoint::parts::{CheckpointIndex, PartRequest};
use crate::config::{ClusterConfig, ReplicaEntry};
use crate::message::{
    ClientRequest, Commit, PrePrepare, Prepare, RequestBatch, checkpoint_header, digest_of, domain,
    pre_prepare_header, prepare_header,
};

fn keys(n: usize) -> Vec<SecretKey> {
    (0..n)
        .map(|i| SecretKey::from_seed([i as u8 + 1; 32]))
        .collect()
}

/// A cluster of `n` replicas on loopback addresses, with their keys.
pub(crate) fn cluster(n: usize) -> (ClusterConfig, Vec<SecretKey>) {
    let secrets = keys(n);
    let config = ClusterConfig {
        f: (n - 1) / 3,
        replicas: secrets
            .iter()
            .enumerate()
            .map(|(i, k)| ReplicaEntry {
                id: i as ReplicaId,
                address: format!("127.0.0.1:{}", 9000 + i),
                public_key: k.public(),
            })
            .collect(),
        clients: None,
    };
    (config, secrets)
}

fn client_batch(client: &SecretKey, lane: u32, number: u64) -> ClientBatch {
    ClientBatch::sign(
        RequestBatch {
            client: client.public(),
            requests: vec![ClientRequest {
                lane,
                number,
                operation: vec![number as u8],
            }],
        },
        client,
    )
}

mod clock_review;
mod extremes;
mod parts;
mod proposals_on_disk;
mod schedules;
mod uptime;
mod vc_review;
mod vouching;

/// Decides whether a message in flight is lost (or held back): (from, to, message).
type DropRule = Box<dyn Fn(ReplicaId, ReplicaId, &ReplicaMessage) -> bool>;

/// A message in flight: (from, to, message).
type InFlight = (ReplicaId, ReplicaId, ReplicaMessage);

struct Net {
    now: u64,
    drop_rule: Option<DropRule>,
    /// Messages this rule matches are held back (delayed) instead of
    /// delivered, until [`Net::release`] lets them go.
    hold_rule: Option<DropRule>,
    held: Vec<InFlight>,
    views_entered: Vec<Vec<View>>,
    replicas: Vec<Replica>,
    queue: VecDeque<(ReplicaId, ReplicaId, ReplicaMessage)>,
    executed: Vec<Vec<Committed>>,
    stable: Vec<Vec<Seq>>,
    diverged: Vec<Vec<Seq>>,
    down: BTreeSet<ReplicaId>,
    /// Replicas that report a wrong state digest at checkpoints.
    liars: BTreeSet<ReplicaId>,
    /// Whether execution reports checkpoints at all.
    checkpoints: bool,
    /// What each replica asked to have on disk, in order.
    persisted: Vec<Vec<Durable>>,
}

impl Net {
    fn new(n: usize, config: ProtocolConfig) -> Net {
        let (cluster, secrets) = cluster(n);
        Net {
            now: 1_000,
            drop_rule: None,
            hold_rule: None,
            held: Vec::new(),
            views_entered: vec![Vec::new(); n],
            replicas: secrets
                .into_iter()
                .enumerate()
                .map(|(i, k)| Replica::new(i as ReplicaId, &cluster, k, config.clone()))
                .collect(),
            queue: VecDeque::new(),
            executed: vec![Vec::new(); n],
            stable: vec![Vec::new(); n],
            diverged: vec![Vec::new(); n],
            down: BTreeSet::new(),
            liars: BTreeSet::new(),
            checkpoints: true,
            persisted: vec![Vec::new(); n],
        }
    }

    fn input(&mut self, to: ReplicaId, input: Input) {
        if self.down.contains(&to) {
            return;
        }
        let mut out = Vec::new();
        self.replicas[to as usize].handle(self.now, input, &mut out);
        self.route(to, out);
    }

    fn route(&mut self, from: ReplicaId, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send(to, message) => self.queue.push_back((from, to, message)),
                Output::Broadcast(message) => {
                    for to in 0..self.replicas.len() as ReplicaId {
                        if to != from {
                            self.queue.push_back((from, to, message.clone()));
                        }
                    }
                }
                Output::Execute(committed) => {
                    let (seq, checkpoint) = (committed.seq, committed.checkpoint);
                    self.executed[from as usize].push(committed);
                    if checkpoint && self.checkpoints {
                        // The "state" is the sequence of executed digests.
                        let mut state = digest_of(
                            &self.executed[from as usize]
                                .iter()
                                .map(|c| c.digest)
                                .collect::<Vec<_>>(),
                        );
                        if self.liars.contains(&from) {
                            state[0] ^= 1;
                        }
                        self.input(from, Input::CheckpointTaken { seq, state });
                    }
                }
                Output::Stable { seq, .. } => self.stable[from as usize].push(seq),
                Output::Persist(durable) => self.persisted[from as usize].push(durable),
                Output::ViewEntered(view) => self.views_entered[from as usize].push(view),
                Output::ServeState { .. }
                | Output::ServeParts { .. }
                | Output::InstallState { .. } => {}
                Output::Diverged { seq, .. } => self.diverged[from as usize].push(seq),
            }
        }
    }

    fn run(&mut self) {
        let mut steps = 0;
        while let Some((from, to, message)) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 1_000_000, "the protocol does not quiesce");
            if self
                .drop_rule
                .as_ref()
                .is_some_and(|lost| lost(from, to, &message))
            {
                continue;
            }
            if self
                .hold_rule
                .as_ref()
                .is_some_and(|hold| hold(from, to, &message))
            {
                self.held.push((from, to, message));
                continue;
            }
            self.input(to, Input::Replica(from, message));
        }
    }

    /// Delivers the held messages that `which` picks (in the order they were
    /// held), and what follows from them.
    fn release(&mut self, which: impl Fn(ReplicaId, ReplicaId, &ReplicaMessage) -> bool) {
        let (go, stay): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(from, to, m)| which(*from, *to, m));
        self.held = stay;
        for (from, to, message) in go {
            self.input(to, Input::Replica(from, message));
        }
        self.run();
    }

    /// Lets `nanos` pass, ticking every replica, and delivers what follows.
    fn advance(&mut self, nanos: u64) {
        self.now += nanos;
        for replica in 0..self.replicas.len() as ReplicaId {
            self.input(replica, Input::Tick);
        }
        self.run();
    }

    /// A client that sends a batch to every replica (as on retransmission).
    fn broadcast_client(&mut self, batch: &ClientBatch) {
        for replica in 0..self.replicas.len() as ReplicaId {
            self.input(replica, Input::Client(batch.clone()));
        }
        self.run();
    }

    fn executed_requests(&self, replica: usize) -> Vec<u64> {
        self.executed[replica]
            .iter()
            .flat_map(|c| {
                c.proposal
                    .batches
                    .iter()
                    .flat_map(|b| b.batch.requests.iter().map(|r| r.number))
            })
            .collect()
    }

    fn executed_digests(&self, replica: usize) -> Vec<Hash> {
        self.executed[replica].iter().map(|c| c.digest).collect()
    }
}

/// What replica `replica` of `net` finds on its disk: everything it asked to
/// persist, and the batches it executed (which the runtime logs).
fn on_disk(net: &Net, replica: usize) -> Recovered {
    let persisted = &net.persisted[replica];
    Recovered {
        view: persisted
            .iter()
            .filter_map(Durable::view)
            .max()
            .unwrap_or(0),
        entered: persisted.iter().rev().find_map(|d| match d {
            Durable::Entered { view, carried } => Some((*view, *carried)),
            _ => None,
        }),
        window: persisted
            .iter()
            .filter_map(|d| match d {
                Durable::Window { view, seq } => Some((*view, *seq)),
                _ => None,
            })
            .max(),
        restored: false,
        stable: None,
        prepared: persisted
            .iter()
            .filter_map(|d| match d {
                Durable::Prepared { proof, proposal } => Some((proof.clone(), proposal.clone())),
                _ => None,
            })
            .collect(),
        proposals: persisted
            .iter()
            .filter_map(|d| match d {
                Durable::Proposal {
                    view,
                    seq,
                    digest,
                    proposal,
                } => Some((*view, *seq, *digest, proposal.clone())),
                _ => None,
            })
            .collect(),
        executed: net.executed[replica].last().map_or(0, |c| c.seq),
        executed_proposals: net.executed[replica]
            .iter()
            .map(|c| (c.seq, c.digest, c.proposal.clone()))
            .collect(),
    }
}

const SECOND: u64 = 1_000_000_000;

fn small() -> ProtocolConfig {
    ProtocolConfig {
        checkpoint_interval: 4,
        window: 8,
        max_batch_requests: 16,
        pipeline: 2,
        request_timeout: Duration::from_nanos(SECOND),
        view_change_timeout: Duration::from_nanos(2 * SECOND),
        max_pending: 1000,
        max_pending_bytes: 1 << 20,
        max_pending_per_client: 1000,
        max_batch_bytes: 64 << 10,
        status_interval: Duration::from_nanos(SECOND / 10),
        max_state_bytes: 1 << 20,
        min_transfer_rate: 1 << 20,
        max_part_requests_per_second: 64,
        max_clock_skew: Duration::from_nanos(10 * SECOND),
        sessions: Default::default(),
    }
}

#[test]
fn a_request_is_executed_by_every_replica_in_the_same_slot() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    net.input(0, Input::Client(client_batch(&client, 0, 1)));
    net.run();
    for replica in 0..4 {
        assert_eq!(net.executed[replica].len(), 1, "replica {replica}");
        assert_eq!(net.executed[replica][0].seq, 1);
        assert_eq!(
            net.executed[replica][0].proposal.batches[0].batch.requests[0].number,
            1
        );
    }
}

#[test]
fn many_requests_execute_in_one_order_and_checkpoints_collect_garbage() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    for number in 1..=50 {
        net.input(0, Input::Client(client_batch(&client, 0, number)));
        net.run();
    }
    let reference = net.executed_digests(0);
    assert!(!reference.is_empty());
    let executed: usize = net.executed[0].iter().map(|c| c.proposal.len()).sum();
    assert_eq!(executed, 50);
    for replica in 1..4 {
        assert_eq!(
            net.executed_digests(replica),
            reference,
            "replica {replica}"
        );
    }
    for replica in 0..4 {
        let stable = &net.stable[replica];
        assert!(!stable.is_empty(), "replica {replica} never stabilized");
        let r = &net.replicas[replica];
        assert_eq!(r.low_watermark(), *stable.last().unwrap());
        assert!(r.log_len() <= 8, "log not collected: {}", r.log_len());
        assert!(
            r.checkpoint_vote_seqs()
                .iter()
                .all(|s| *s > r.low_watermark())
        );
    }
}

#[test]
fn one_replica_down_still_commits_two_down_does_not() {
    let client = SecretKey::from_seed([99; 32]);
    let mut net = Net::new(4, small());
    net.down.insert(3);
    net.input(0, Input::Client(client_batch(&client, 0, 1)));
    net.run();
    assert_eq!(net.executed[1].len(), 1);

    let mut net = Net::new(4, small());
    net.down.extend([2, 3]);
    net.input(0, Input::Client(client_batch(&client, 0, 1)));
    net.run();
    assert!(
        net.executed.iter().all(Vec::is_empty),
        "committed without a quorum"
    );
}

#[test]
fn the_primary_never_proposes_past_the_high_watermark() {
    let mut net = Net::new(4, small());
    net.checkpoints = false; // nothing ever becomes stable
    let client = SecretKey::from_seed([99; 32]);
    for number in 1..=40 {
        net.input(0, Input::Client(client_batch(&client, 0, number)));
        net.run();
    }
    assert_eq!(net.executed[0].last().unwrap().seq, 8, "stopped at low + L");
    assert!(net.replicas[0].pending_batches() > 0);
    // Checkpoints resume: the window moves and the rest is proposed.
    net.checkpoints = true;
    for seq in [4, 8] {
        for replica in 0..4 {
            let state = digest_of(&net.executed_digests(replica)[..seq as usize].to_vec());
            net.input(replica as ReplicaId, Input::CheckpointTaken { seq, state });
        }
        net.run();
    }
    let executed: usize = net.executed[0].iter().map(|c| c.proposal.len()).sum();
    assert_eq!(executed, 40);
}

fn pre_prepare(signer: &SecretKey, view: View, seq: Seq, batches: Vec<ClientBatch>) -> PrePrepare {
    let proposal = Proposal {
        timestamp: 5,
        batches,
    };
    signed_pre_prepare(signer, view, seq, proposal)
}

/// `proposal` pre-prepared at (`view`, `seq`), signed by `signer`.
fn signed_pre_prepare(signer: &SecretKey, view: View, seq: Seq, proposal: Proposal) -> PrePrepare {
    let digest = proposal.digest();
    let signature = signer.sign(domain::PRE_PREPARE, &pre_prepare_header(view, seq, &digest));
    PrePrepare {
        view,
        seq,
        digest,
        proposal,
        signature,
    }
}

fn backup() -> (Replica, Vec<SecretKey>) {
    let (cluster, secrets) = cluster(4);
    (
        Replica::new(1, &cluster, secrets[1].clone(), small()),
        secrets,
    )
}

/// The outputs that are not writes to disk.
fn sent(out: &[Output]) -> Vec<&Output> {
    out.iter()
        .filter(|o| !matches!(o, Output::Persist(_)))
        .collect()
}

fn deliver(replica: &mut Replica, from: ReplicaId, message: ReplicaMessage) -> Vec<Output> {
    let mut out = Vec::new();
    replica.handle(1, Input::Replica(from, message), &mut out);
    out
}

#[test]
fn pre_prepares_that_break_a_rule_are_dropped_and_counted() {
    let client = SecretKey::from_seed([99; 32]);
    let batch = client_batch(&client, 0, 1);
    let (mut r, secrets) = backup();

    // Signed by a backup, not the primary (whoever relays it).
    let out = deliver(
        &mut r,
        2,
        ReplicaMessage::PrePrepare(pre_prepare(&secrets[2], 0, 1, vec![batch.clone()])),
    );
    assert!(out.is_empty());
    let out = deliver(
        &mut r,
        0,
        ReplicaMessage::PrePrepare(pre_prepare(&secrets[2], 0, 1, vec![batch.clone()])),
    );
    assert!(out.is_empty());
    assert_eq!(r.stats().bad_signature, 2);

    // The next view: held until that view starts, not acted on now; a view
    // further ahead is dropped, and so is an unsigned one for the next view.
    let out = deliver(
        &mut r,
        0,
        ReplicaMessage::PrePrepare(pre_prepare(&secrets[1], 1, 1, vec![batch.clone()])),
    );
    assert!(out.is_empty());
    assert_eq!(r.stats().buffered, 1);
    deliver(
        &mut r,
        0,
        ReplicaMessage::PrePrepare(pre_prepare(&secrets[3], 3, 1, vec![batch.clone()])),
    );
    deliver(
        &mut r,
        0,
        ReplicaMessage::PrePrepare(pre_prepare(&secrets[0], 1, 1, vec![batch.clone()])),
    );
    assert_eq!(r.stats().buffered, 1);
    assert_eq!(r.stats().wrong_view, 1);
    assert_eq!(r.stats().bad_signature, 3);
    assert_eq!(r.held_messages(), 1);

    // Outside the window (low = 0, L = 8).
    deliver(
        &mut r,
        0,
        ReplicaMessage::PrePrepare(pre_prepare(&secrets[0], 0, 9, vec![batch.clone()])),
    );
    deliver(
        &mut r,
        0,
        ReplicaMessage::PrePrepare(pre_prepare(&secrets[0], 0, 0, vec![batch.clone()])),
    );
    assert_eq!(r.stats().out_of_window, 2);

    // A digest that does not match the proposal.
    let mut forged = pre_prepare(&secrets[0], 0, 1, vec![batch.clone()]);
    forged.proposal.timestamp = 6;
    deliver(&mut r, 0, ReplicaMessage::PrePrepare(forged));
    assert_eq!(r.stats().bad_digest, 1);

    // A request the client did not sign: the primary cannot forge requests.
    let mut tampered = batch.clone();
    tampered.batch.requests[0].operation = vec![42];
    deliver(
        &mut r,
        0,
        ReplicaMessage::PrePrepare(pre_prepare(&secrets[0], 0, 1, vec![tampered])),
    );
    assert_eq!(r.stats().bad_signature, 4);

    // The primary's own pre-prepare relayed by another replica is accepted
    // (that is how a replica that missed it catches up); see below.

    // A good one is prepared...
    let out = deliver(
        &mut r,
        0,
        ReplicaMessage::PrePrepare(pre_prepare(&secrets[0], 0, 1, vec![batch.clone()])),
    );
    assert!(
        matches!(&sent(&out)[..], [Output::Broadcast(ReplicaMessage::Prepare(p))] if p.seq == 1 && p.replica == 1)
    );
    // ...and a second, different proposal for the same slot is equivocation.
    let other = client_batch(&client, 0, 2);
    let out = deliver(
        &mut r,
        0,
        ReplicaMessage::PrePrepare(pre_prepare(&secrets[0], 0, 1, vec![other])),
    );
    assert!(out.is_empty());
    assert_eq!(r.stats().equivocation, 1);
}

fn prepare(signer: &SecretKey, replica: ReplicaId, seq: Seq, digest: Hash) -> Prepare {
    signed_prepare(signer, replica, 0, seq, digest)
}

/// `replica`'s prepare of `digest` at (`view`, `seq`), signed by `signer`.
fn signed_prepare(
    signer: &SecretKey,
    replica: ReplicaId,
    view: View,
    seq: Seq,
    digest: Hash,
) -> Prepare {
    let signature = signer.sign(
        domain::PREPARE,
        &prepare_header(view, seq, &digest, replica),
    );
    Prepare {
        view,
        seq,
        digest,
        replica,
        signature,
    }
}

#[test]
fn prepared_needs_2f_matching_prepares_and_committed_2f_plus_1_commits() {
    let client = SecretKey::from_seed([99; 32]);
    let (mut r, secrets) = backup();
    let pp = pre_prepare(&secrets[0], 0, 1, vec![client_batch(&client, 0, 1)]);
    let digest = pp.digest;
    deliver(&mut r, 0, ReplicaMessage::PrePrepare(pp));

    // A prepare from the primary does not count; nor one naming another sender.
    deliver(
        &mut r,
        0,
        ReplicaMessage::Prepare(prepare(&secrets[0], 0, 1, digest)),
    );
    deliver(
        &mut r,
        3,
        ReplicaMessage::Prepare(prepare(&secrets[2], 2, 1, digest)),
    );
    assert_eq!(r.stats().wrong_sender, 2);
    // A prepare for another digest does not match.
    let out = deliver(
        &mut r,
        2,
        ReplicaMessage::Prepare(prepare(&secrets[2], 2, 1, [7; 32])),
    );
    assert!(
        out.is_empty(),
        "own prepare plus a mismatching one is not 2f matching"
    );
    // A forged signature is dropped.
    deliver(
        &mut r,
        3,
        ReplicaMessage::Prepare(prepare(&secrets[2], 3, 1, digest)),
    );
    assert_eq!(r.stats().bad_signature, 1);
    // Own prepare + replica 3's = 2f = 2: prepared, the certificate goes to
    // disk, then the commit is sent.
    let out = deliver(
        &mut r,
        3,
        ReplicaMessage::Prepare(prepare(&secrets[3], 3, 1, digest)),
    );
    assert!(matches!(
        &out[..],
        [
            Output::Persist(Durable::Prepared { proof, .. }),
            Output::Broadcast(ReplicaMessage::Commit(c)),
        ] if c.seq == 1 && proof.pre_prepare.seq == 1 && proof.prepares.len() == 2
    ));

    // Own commit + one more is not 2f+1.
    let commit = |replica| {
        ReplicaMessage::Commit(Commit {
            view: 0,
            seq: 1,
            digest,
            replica,
        })
    };
    assert!(deliver(&mut r, 0, commit(0)).is_empty());
    // A repeated commit is a duplicate, not a second vote.
    assert!(deliver(&mut r, 0, commit(0)).is_empty());
    assert_eq!(r.stats().duplicate, 1);
    let out = deliver(&mut r, 3, commit(3));
    assert!(matches!(&out[..], [Output::Execute(c)] if c.seq == 1 && c.digest == digest));
}

#[test]
fn a_prepare_for_a_slot_prepared_already_is_neither_verified_nor_kept() {
    let client = SecretKey::from_seed([99; 32]);
    let (mut r, secrets) = backup();
    let pp = pre_prepare(&secrets[0], 0, 1, vec![client_batch(&client, 0, 1)]);
    let digest = pp.digest;
    deliver(&mut r, 0, ReplicaMessage::PrePrepare(pp));
    let out = deliver(
        &mut r,
        3,
        ReplicaMessage::Prepare(prepare(&secrets[3], 3, 1, digest)),
    );
    let proof = match &out[..] {
        [
            Output::Persist(Durable::Prepared { proof, .. }),
            Output::Broadcast(_),
        ] => proof.clone(),
        other => panic!("expected the slot to prepare, got {other:?}"),
    };

    // Replica 2's vote comes last, with a signature replica 2 never made
    // (a faulty replica, or a lying relay of its connection). Whatever it
    // carries, it changes nothing: no output, no signature check, not kept
    // for the view change's certificate, which holds the two verified ones.
    let late = deliver(
        &mut r,
        2,
        ReplicaMessage::Prepare(prepare(&secrets[1], 2, 1, digest)),
    );
    assert!(late.is_empty());
    assert_eq!(r.stats().late_prepares, 1);
    assert_eq!(r.stats().bad_signature, 0);
    assert_eq!(proof.prepares.len(), 2);
    assert!(proof.prepares.iter().all(|p| p.replica != 2));
    assert!(r.quorums().prepared_proof_holds(&proof));

    // Before the slot prepared, the same forged vote is checked and dropped.
    let pp = pre_prepare(&secrets[0], 0, 2, vec![client_batch(&client, 0, 2)]);
    let digest = pp.digest;
    deliver(&mut r, 0, ReplicaMessage::PrePrepare(pp));
    let out = deliver(
        &mut r,
        2,
        ReplicaMessage::Prepare(prepare(&secrets[1], 2, 2, digest)),
    );
    assert!(out.is_empty(), "a forged vote does not prepare the slot");
    assert_eq!(r.stats().bad_signature, 1);
}

#[test]
fn commits_without_a_prepared_certificate_do_not_execute() {
    let (mut r, _) = backup();
    for replica in [0, 2, 3] {
        let out = deliver(
            &mut r,
            replica,
            ReplicaMessage::Commit(Commit {
                view: 0,
                seq: 1,
                digest: [1; 32],
                replica,
            }),
        );
        assert!(out.is_empty());
    }
    assert_eq!(r.delivered(), 0);
}

#[test]
fn a_replica_whose_checkpoint_disagrees_with_the_quorum_learns_it_diverged() {
    let mut net = Net::new(4, small());
    net.liars.insert(2);
    let client = SecretKey::from_seed([99; 32]);
    for number in 1..=12 {
        net.input(0, Input::Client(client_batch(&client, 0, number)));
        net.run();
    }
    assert!(!net.diverged[2].is_empty(), "the liar is told");
    assert!(net.diverged[0].is_empty());
    assert!(
        !net.stable[0].is_empty(),
        "three honest replicas still stabilize"
    );
    assert!(
        net.stable[2].is_empty(),
        "the liar does not collect garbage on a wrong state"
    );
}

#[test]
fn client_batches_with_bad_signatures_or_seen_before_are_dropped() {
    let (cluster, secrets) = cluster(4);
    let mut primary = Replica::new(0, &cluster, secrets[0].clone(), small());
    let client = SecretKey::from_seed([99; 32]);
    let mut bad = client_batch(&client, 0, 1);
    bad.batch.requests[0].number = 2;
    let mut out = Vec::new();
    primary.handle(1, Input::Client(bad), &mut out);
    assert!(out.is_empty());
    assert_eq!(primary.stats().bad_signature, 1);

    let good = client_batch(&client, 0, 1);
    primary.handle(1, Input::Client(good.clone()), &mut out);
    assert_eq!(sent(&out).len(), 1, "proposed");
    out.clear();
    primary.handle(1, Input::Client(good), &mut out);
    assert!(out.is_empty());
    assert_eq!(primary.stats().duplicate, 1);
}

#[test]
fn a_batch_checked_on_its_connection_is_taken_without_a_second_check_and_only_if_genuine() {
    let (cluster, secrets) = cluster(4);
    let mut primary = Replica::new(0, &cluster, secrets[0].clone(), small());
    let client = SecretKey::from_seed([99; 32]);
    let mut forged = client_batch(&client, 0, 1);
    forged.batch.requests[0].number = 2;
    assert!(forged.clone().check().is_none(), "a forgery does not pass");
    assert!(
        ClientBatch::unsigned(forged.batch.clone())
            .check()
            .is_none(),
        "an unsigned batch is not a checked one"
    );
    let good = client_batch(&client, 0, 1);
    let checked = good.clone().check().expect("genuine");
    let mut out = Vec::new();
    primary.handle(1, Input::CheckedClient(checked), &mut out);
    assert_eq!(sent(&out).len(), 1, "proposed");
    assert_eq!(primary.stats().bad_signature, 0);
    // The same batch forwarded by a backup is known: no second check.
    out.clear();
    primary.handle(
        1,
        Input::Replica(1, ReplicaMessage::Forward(good)),
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(primary.stats().duplicate, 1);
}

#[test]
fn a_backup_forwards_client_batches_to_the_primary() {
    let (mut r, _) = backup();
    let client = SecretKey::from_seed([99; 32]);
    let batch = client_batch(&client, 0, 1);
    let mut out = Vec::new();
    r.handle(1, Input::Client(batch.clone()), &mut out);
    assert_eq!(out, vec![Output::Send(0, ReplicaMessage::Forward(batch))]);
}

#[test]
fn checkpoint_votes_off_interval_are_dropped_and_beyond_the_window_only_remembered() {
    let (mut r, secrets) = backup();
    let vote = |seq: Seq| {
        let state = [3; 32];
        let signature = secrets[2].sign(domain::CHECKPOINT, &checkpoint_header(seq, &state, 2));
        ReplicaMessage::Checkpoint(Checkpoint {
            seq,
            state,
            replica: 2,
            signature,
        })
    };
    deliver(&mut r, 2, vote(3)); // not a multiple of K = 4
    assert_eq!(r.stats().out_of_window, 1);
    // Beyond low + L = 8: not a vote in the window, only remembered (the
    // latest per replica) as a sign this replica may be behind.
    deliver(&mut r, 2, vote(12));
    assert!(r.checkpoint_vote_seqs().is_empty());
    deliver(&mut r, 2, vote(4));
    assert_eq!(
        r.checkpoint_vote_seqs().into_iter().collect::<Vec<_>>(),
        vec![4]
    );
}

/// Votes beyond the window make a replica fetch that checkpoint only when
/// 2f+1 replicas signed the same digest there: a faulty peer's own vote,
/// votes it forges for others, its vote repeated, or votes for another
/// digest do not; genuine votes it relays do.
#[test]
fn only_a_quorum_of_signed_votes_beyond_the_window_starts_a_transfer() {
    let (mut r, secrets) = backup();
    let faulty = 3;
    let vote = |signer: usize, replica: ReplicaId, seq: Seq, state: Hash| {
        let signature =
            secrets[signer].sign(domain::CHECKPOINT, &checkpoint_header(seq, &state, replica));
        ReplicaMessage::Checkpoint(Checkpoint {
            seq,
            state,
            replica,
            signature,
        })
    };
    let far = 1_000;
    let fetching = |out: &[Output]| {
        out.iter().find_map(|o| match o {
            Output::Send(_, ReplicaMessage::StateRequest { seq, .. }) => Some(*seq),
            _ => None,
        })
    };
    deliver(&mut r, faulty, vote(3, 3, far, [5; 32]));
    deliver(&mut r, faulty, vote(3, 3, far, [5; 32]));
    assert_eq!(r.stats().duplicate, 1);
    for forged in [0, 2] {
        deliver(&mut r, faulty, vote(3, forged, far, [5; 32]));
    }
    assert_eq!(r.stats().bad_signature, 2);
    // Genuine votes, relayed, but for another digest, or older than the
    // replica's latest one known.
    deliver(&mut r, faulty, vote(0, 0, far, [6; 32]));
    deliver(&mut r, faulty, vote(2, 2, far + 4, [5; 32]));
    deliver(&mut r, faulty, vote(2, 2, far, [5; 32]));
    assert_eq!(r.stats().duplicate, 2);
    let mut now = 2;
    for _ in 0..40 {
        now += SECOND / 2;
        assert_eq!(fetching(&tick(&mut r, now)), None);
    }
    // At `far + 4`: replica 0's vote, with 2's, makes two; the faulty
    // peer's own makes three, a quorum.
    deliver(&mut r, faulty, vote(0, 0, far + 4, [5; 32]));
    assert_eq!(fetching(&tick(&mut r, now + 1)), None);
    deliver(&mut r, faulty, vote(3, 3, far + 4, [5; 32]));
    assert_eq!(fetching(&tick(&mut r, now + 2)), Some(far + 4));
}

#[test]
fn a_crashed_primary_is_replaced_and_requests_go_on() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    net.input(0, Input::Client(client_batch(&client, 0, 1)));
    net.run();
    net.down.insert(0);
    // The client retransmits to everyone; the backups wait, then suspect.
    net.broadcast_client(&client_batch(&client, 0, 2));
    net.advance(SECOND / 2);
    assert!(net.executed_requests(1).len() == 1, "not yet");
    net.advance(SECOND);
    for replica in 1..4 {
        assert_eq!(net.replicas[replica].view(), 1, "replica {replica}");
        assert_eq!(
            net.executed_requests(replica),
            vec![1, 2],
            "replica {replica}"
        );
    }
    // View 1 works normally afterwards.
    net.input(1, Input::Client(client_batch(&client, 0, 3)));
    net.run();
    assert_eq!(net.executed_requests(3), vec![1, 2, 3]);
}

#[test]
fn a_batch_that_prepared_survives_the_view_change_in_the_same_slot() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    // Commits of view 0 are lost: the batch prepares everywhere but commits
    // nowhere, until a view change carries it into view 1.
    net.drop_rule = Some(Box::new(
        |_, _, m| matches!(m, ReplicaMessage::Commit(c) if c.view == 0),
    ));
    net.broadcast_client(&client_batch(&client, 0, 1));
    assert!(net.executed.iter().all(Vec::is_empty));
    net.advance(SECOND + 1);
    for replica in 0..4 {
        assert_eq!(net.executed[replica].len(), 1, "replica {replica}");
        assert_eq!(net.executed[replica][0].seq, 1, "same slot");
        assert_eq!(
            net.executed[replica][0].view, 1,
            "committed in the new view"
        );
    }
}

#[test]
fn an_equivocating_primary_is_replaced() {
    let (cluster, secrets) = cluster(4);
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    // The primary is silenced; we play it and equivocate by hand.
    net.down.insert(0);
    let a = client_batch(&client, 0, 1);
    let b = client_batch(&client, 1, 1);
    for (to, batch) in [(1, &a), (2, &b), (3, &a)] {
        let pp = pre_prepare(&secrets[0], 0, 1, vec![batch.clone()]);
        net.input(to, Input::Replica(0, ReplicaMessage::PrePrepare(pp)));
    }
    net.run();
    drop(cluster);
    // Replicas 1 and 3 prepare `a` (2f = 2 matching prepares), but with the
    // primary silent and 2 holding `b` there are only two commits: nothing
    // commits until a view change carries `a`'s certificate forward.
    assert!(net.executed.iter().all(Vec::is_empty));
    net.broadcast_client(&b);
    net.advance(SECOND + 1);
    for replica in 1..4 {
        assert_eq!(net.replicas[replica].view(), 1);
        let mut numbers = net.executed[replica]
            .iter()
            .flat_map(|c| c.proposal.batches.iter().map(|b| b.batch.requests[0].lane))
            .collect::<Vec<_>>();
        numbers.sort();
        assert!(
            numbers.contains(&1),
            "the request the primary hid from some is executed: {numbers:?}"
        );
    }
    let reference = net.executed_digests(1);
    assert_eq!(net.executed_digests(2), reference);
    assert_eq!(net.executed_digests(3), reference);
}

#[test]
fn a_silent_primary_that_drops_requests_is_replaced() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    // Everything the primary sends is lost: it looks alive but does nothing.
    net.drop_rule = Some(Box::new(|from, _, _| from == 0));
    net.broadcast_client(&client_batch(&client, 0, 1));
    net.advance(SECOND + 1);
    for replica in 1..4 {
        assert_eq!(net.executed_requests(replica), vec![1], "replica {replica}");
    }
}

#[test]
fn failed_view_changes_move_on_with_growing_timeouts() {
    // n = 7, f = 2: the primaries of views 0 and 1 are both down.
    let mut net = Net::new(7, small());
    net.down.extend([0, 1]);
    let client = SecretKey::from_seed([99; 32]);
    net.broadcast_client(&client_batch(&client, 0, 1));
    net.advance(SECOND + 1); // view change to 1 starts; its primary is down
    assert!(net.executed.iter().all(Vec::is_empty));
    net.advance(2 * SECOND + 1); // the view change to 1 times out: on to view 2
    for replica in 2..7 {
        assert_eq!(net.replicas[replica].view(), 2, "replica {replica}");
        assert_eq!(net.executed_requests(replica), vec![1]);
    }
    assert!(net.replicas[2].stats().view_changes_started >= 2);
}

#[test]
fn view_changes_and_new_views_with_bad_certificates_are_rejected() {
    let (cluster, secrets) = cluster(4);
    let mut r = Replica::new(1, &cluster, secrets[1].clone(), small());
    let client = SecretKey::from_seed([99; 32]);
    let pp = pre_prepare(&secrets[0], 0, 1, vec![client_batch(&client, 0, 1)]);
    // A prepared certificate with only one prepare, signed by replica 2.
    let proof = crate::message::PreparedProof {
        pre_prepare: pp.header(),
        prepares: vec![prepare(&secrets[2], 2, 1, pp.digest)],
    };
    let body = crate::message::ViewChangeBody {
        new_view: 1,
        stable_seq: 0,
        stable_state: [0; 32],
        checkpoint_proof: vec![],
        prepared: vec![proof],
        replica: 2,
    };
    let signature = secrets[2].sign(
        domain::VIEW_CHANGE,
        &crate::message::view_change_bytes(&body),
    );
    let out = deliver(
        &mut r,
        2,
        ReplicaMessage::ViewChange(ViewChange {
            body: body.clone(),
            signature,
        }),
    );
    assert!(out.is_empty());
    assert_eq!(r.stats().bad_certificate, 1);

    // A stable checkpoint claimed without proof.
    let mut body = body;
    body.prepared.clear();
    body.stable_seq = 4;
    let signature = secrets[2].sign(
        domain::VIEW_CHANGE,
        &crate::message::view_change_bytes(&body),
    );
    deliver(
        &mut r,
        2,
        ReplicaMessage::ViewChange(ViewChange {
            body: body.clone(),
            signature,
        }),
    );
    assert_eq!(r.stats().bad_certificate, 2);

    // Signed by someone else.
    body.stable_seq = 0;
    let signature = secrets[3].sign(
        domain::VIEW_CHANGE,
        &crate::message::view_change_bytes(&body),
    );
    deliver(
        &mut r,
        2,
        ReplicaMessage::ViewChange(ViewChange {
            body: body.clone(),
            signature,
        }),
    );
    assert_eq!(r.stats().bad_certificate, 3);

    // A new-view from the right primary with too few view-changes.
    let good = |replica: ReplicaId| {
        let body = crate::message::ViewChangeBody {
            replica,
            ..body.clone()
        };
        let signature = secrets[replica as usize].sign(
            domain::VIEW_CHANGE,
            &crate::message::view_change_bytes(&body),
        );
        ViewChange { body, signature }
    };
    let thin = crate::message::NewView {
        view: 1,
        view_changes: vec![good(1), good(2)],
        pre_prepares: vec![],
    };
    let mut r0 = Replica::new(0, &cluster, secrets[0].clone(), small());
    deliver(&mut r0, 1, ReplicaMessage::NewView(thin));
    assert_eq!(r0.stats().bad_certificate, 1);
    // Enough view-changes, but a pre-prepare slipped in that none of them justifies.
    let smuggled = crate::message::NewView {
        view: 1,
        view_changes: vec![good(1), good(2), good(3)],
        pre_prepares: vec![
            pre_prepare(&secrets[1], 1, 1, vec![client_batch(&client, 0, 9)]).header(),
        ],
    };
    deliver(&mut r0, 1, ReplicaMessage::NewView(smuggled));
    assert_eq!(r0.stats().bad_certificate, 2);
    assert_eq!(r0.view(), 0);
}

#[test]
fn a_primary_that_ignores_one_clients_requests_is_replaced() {
    let mut net = Net::new(4, small());
    let favoured = SecretKey::from_seed([98; 32]);
    let shunned = SecretKey::from_seed([99; 32]);
    let shunned_key = shunned.public();
    // The primary drops (never proposes) whatever comes from one client,
    // directly or forwarded, and serves everyone else.
    net.drop_rule = Some(Box::new(move |_, to, m| {
        to == 0 && matches!(m, ReplicaMessage::Forward(b) if b.batch.client == shunned_key)
    }));
    net.input(0, Input::Client(client_batch(&favoured, 0, 1)));
    net.run();
    assert_eq!(net.executed_requests(1), vec![1], "others are served");
    // The shunned client retransmits to everyone; the primary ignores it.
    for replica in 1..4 {
        net.input(replica, Input::Client(client_batch(&shunned, 0, 1)));
    }
    net.run();
    net.advance(SECOND + 1);
    for replica in 1..4 {
        assert_eq!(
            net.replicas[replica].view(),
            1,
            "replica {replica} replaced the primary"
        );
        assert_eq!(
            net.executed_requests(replica),
            vec![1, 1],
            "replica {replica}"
        );
    }
}

#[test]
fn a_peer_serving_a_bad_snapshot_is_caught_and_another_is_asked() {
    use crate::checkpoint::CheckpointState;
    let (cluster, secrets) = cluster(4);
    let mut r = Replica::new(1, &cluster, secrets[1].clone(), small());
    // The state 2f+1 peers vouch for at checkpoint 4, which replica 1 never executed.
    let good = CheckpointState {
        clock: 0,
        snapshot: cbase_core::Snapshot::from_bytes(
            &cbase_core::codec::encode(&Vec::<(String, Vec<u8>)>::new()).unwrap(),
        )
        .unwrap(),
        clients: Default::default(),
    };
    let digest = good.digest();
    vote_checkpoint(&mut r, &secrets, 4, digest);
    // Execution does not get there within the request timeout: fetch.
    let out = tick(&mut r, 1 + SECOND + 1);
    let asked: Vec<ReplicaId> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send(
                to,
                ReplicaMessage::StateRequest {
                    seq: 4, offset: 0, ..
                },
            ) => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 1, "{out:?}");
    let liar = asked[0];

    // The first peer lies: the state does not hash to the agreed digest.
    let mut forged = good.clone();
    forged.clients = [(
        (SecretKey::from_seed([9; 32]).public(), 0),
        crate::checkpoint::LaneRecord {
            number: 1,
            reply: None,
        },
    )]
    .into_iter()
    .collect();
    let out = deliver(&mut r, liar, whole_state(4, &forged));
    assert!(out.is_empty());
    assert_eq!(r.stats().bad_state, 1);

    // At once, another peer is asked, and its honest answer is installed.
    let out = tick(&mut r, 2 + SECOND + 1);
    let next = out
        .iter()
        .find_map(|o| match o {
            Output::Send(
                to,
                ReplicaMessage::StateRequest {
                    seq: 4, offset: 0, ..
                },
            ) => Some(*to),
            _ => None,
        })
        .expect("another peer is asked");
    assert_ne!(next, liar);
    let out = deliver(&mut r, next, whole_state(4, &good));
    assert!(
        matches!(&out[..], [Output::InstallState { seq: 4, .. }]),
        "{out:?}"
    );
    let mut out = Vec::new();
    r.handle(
        3 + SECOND,
        Input::StateInstalled {
            seq: 4,
            state: digest,
        },
        &mut out,
    );
    assert_eq!(r.delivered(), 4);
    assert_eq!(r.low_watermark(), 4);
}

/// A state reply carrying all of `state`'s manifest in one chunk.
fn whole_state(seq: Seq, state: &crate::checkpoint::CheckpointState) -> ReplicaMessage {
    let bytes = manifest_bytes(state);
    ReplicaMessage::StateReply {
        seq,
        offset: 0,
        total: bytes.len() as u64,
        chunk: bytes,
        whole: false,
    }
}

/// The encoded manifest of `state`: what a peer serves first.
fn manifest_bytes(state: &crate::checkpoint::CheckpointState) -> Vec<u8> {
    let index = CheckpointIndex::build(std::sync::Arc::new(state.clone()));
    cbase_core::codec::encode(&index.manifest()).unwrap()
}

/// Answers the part requests in `out`, and those they lead to, as honest
/// peers holding `state` would; returns what `r` did on the last answers
/// (which asked for nothing more).
fn serve_parts(
    r: &mut Replica,
    mut out: Vec<Output>,
    state: &crate::checkpoint::CheckpointState,
) -> Vec<Output> {
    let index = CheckpointIndex::build(std::sync::Arc::new(state.clone()));
    loop {
        let requests: Vec<(ReplicaId, Seq, Hash, u64, Vec<PartRequest>)> = out
            .iter()
            .filter_map(|o| match o {
                Output::Send(
                    to,
                    ReplicaMessage::PartsRequest {
                        seq,
                        salt,
                        request,
                        parts,
                    },
                ) => Some((*to, *seq, *salt, *request, parts.clone())),
                _ => None,
            })
            .collect();
        if requests.is_empty() {
            return out;
        }
        out = Vec::new();
        for (peer, seq, salt, request, parts) in requests {
            let parts = index.answer(&salt, &parts, 1 << 20);
            let reply = ReplicaMessage::Parts {
                seq,
                request,
                parts,
            };
            out.extend(deliver(r, peer, reply));
        }
    }
}

/// Replica 1 of 4, told by replicas 0, 2 and 3 that the state at checkpoint
/// 4 (which it never executed) is `state`, with a client table of `lanes`
/// lanes so that its encoding is large; returns the replica, the encoded
/// state and its digest.
fn behind_checkpoint_4(lanes: u32, config: ProtocolConfig) -> (Replica, Vec<u8>, Hash) {
    let (cluster, secrets) = cluster(4);
    let mut r = Replica::new(1, &cluster, secrets[1].clone(), config);
    let state = state_at_4(lanes);
    let digest = state.digest();
    vote_checkpoint(&mut r, &secrets, 4, digest);
    (r, manifest_bytes(&state), digest)
}

/// The state of [`behind_checkpoint_4`], with `lanes` client lanes.
fn state_at_4(lanes: u32) -> crate::checkpoint::CheckpointState {
    use crate::checkpoint::{CheckpointState, LaneRecord};
    let client = SecretKey::from_seed([9; 32]).public();
    CheckpointState {
        clock: 0,
        snapshot: cbase_core::Snapshot::from_parts(vec![(
            "t".to_owned(),
            [(vec![1u8], vec![5u8; 300])].into(),
        )]),
        clients: (0..lanes)
            .map(|lane| {
                let record = LaneRecord {
                    number: u64::from(lane),
                    reply: Some(vec![1; 40]),
                };
                ((client, lane), record)
            })
            .collect(),
    }
}

/// Time passes for `r`: what it does on a tick at `now`.
fn tick(r: &mut Replica, now: u64) -> Vec<Output> {
    let mut out = Vec::new();
    r.handle(now, Input::Tick, &mut out);
    out
}

/// Replicas 0, 2 and 3 send replica `r` (replica 1) their signed votes for
/// `state` at checkpoint `seq`.
fn vote_checkpoint(r: &mut Replica, secrets: &[SecretKey], seq: Seq, state: Hash) {
    for voter in [0u32, 2, 3] {
        let header = checkpoint_header(seq, &state, voter);
        let signature = secrets[voter as usize].sign(domain::CHECKPOINT, &header);
        let vote = Checkpoint {
            seq,
            state,
            replica: voter,
            signature,
        };
        deliver(r, voter, ReplicaMessage::Checkpoint(vote));
    }
}

/// The state request in `out`, as (peer, offset).
fn state_request(out: &[Output]) -> Option<(ReplicaId, u64)> {
    out.iter().find_map(|o| match o {
        Output::Send(to, ReplicaMessage::StateRequest { offset, .. }) => Some((*to, *offset)),
        _ => None,
    })
}

fn chunk(bytes: &[u8], offset: usize, len: usize) -> ReplicaMessage {
    let end = bytes.len().min(offset + len);
    ReplicaMessage::StateReply {
        seq: 4,
        offset: offset as u64,
        total: bytes.len() as u64,
        chunk: bytes[offset..end].to_vec(),
        whole: false,
    }
}

#[test]
fn a_state_larger_than_a_frame_arrives_in_chunks_asked_one_by_one() {
    let (mut r, bytes, digest) = behind_checkpoint_4(64, small());
    assert!(bytes.len() > 2000, "{} bytes", bytes.len());
    let out = tick(&mut r, 1 + SECOND + 1);
    let (peer, offset) = state_request(&out).expect("a peer is asked");
    assert_eq!(offset, 0);
    let mut at = 0;
    let mut requests = 0;
    let out = loop {
        let out = deliver(&mut r, peer, chunk(&bytes, at, 500));
        at = bytes.len().min(at + 500);
        if at == bytes.len() {
            break serve_parts(&mut r, out, &state_at_4(64));
        }
        // Each chunk asks the same peer for the next one.
        assert_eq!(state_request(&out), Some((peer, at as u64)), "{out:?}");
        requests += 1;
    };
    assert!(requests >= 4);
    assert!(
        matches!(&out[..], [Output::InstallState { seq: 4, digest: d, .. }] if *d == digest),
        "{out:?}"
    );
    assert_eq!(r.stats().bad_state, 0);
}

#[test]
fn chunks_out_of_turn_are_ignored_and_chunks_that_do_not_fit_are_refused() {
    let (mut r, bytes, digest) = behind_checkpoint_4(64, small());
    let out = tick(&mut r, 1 + SECOND + 1);
    let (peer, _) = state_request(&out).expect("a peer is asked");
    let other = (peer + 1..4).chain(0..peer).find(|&p| p != 1).unwrap();

    // A peer that was not asked, and a chunk from the wrong offset: ignored,
    // not blamed, and the transfer goes on.
    assert!(deliver(&mut r, other, chunk(&bytes, 0, 500)).is_empty());
    assert!(deliver(&mut r, peer, chunk(&bytes, 500, 500)).is_empty());
    assert_eq!(r.stats().stale, 2);
    let out = deliver(&mut r, peer, chunk(&bytes, 0, 500));
    assert_eq!(state_request(&out), Some((peer, 500)));
    // The same chunk again (a duplicate): ignored.
    assert!(deliver(&mut r, peer, chunk(&bytes, 0, 500)).is_empty());
    assert_eq!(r.stats().bad_state, 0);

    // The next chunk announces a different total: the peer lied.
    let ReplicaMessage::StateReply {
        seq,
        offset,
        chunk: part,
        ..
    } = chunk(&bytes, 500, 500)
    else {
        unreachable!()
    };
    let lie = ReplicaMessage::StateReply {
        seq,
        offset,
        total: bytes.len() as u64 + 1,
        chunk: part,
        whole: false,
    };
    assert!(deliver(&mut r, peer, lie).is_empty());
    assert_eq!(r.stats().bad_state, 1);

    // At once, another peer is asked, from the start.
    let out = tick(&mut r, 2 + SECOND);
    let (next, offset) = state_request(&out).expect("another peer is asked");
    assert_ne!(next, peer);
    assert_eq!(offset, 0);
    // Chunks still arriving from the liar are stale now.
    assert!(deliver(&mut r, peer, chunk(&bytes, 0, 500)).is_empty());
    // An empty chunk, and one running past the announced total, are lies too.
    let empty = ReplicaMessage::StateReply {
        seq: 4,
        offset: 0,
        total: bytes.len() as u64,
        chunk: Vec::new(),
        whole: false,
    };
    assert!(deliver(&mut r, next, empty).is_empty());
    assert_eq!(r.stats().bad_state, 2);
    let out = tick(&mut r, 3 + SECOND);
    let (third, _) = state_request(&out).expect("a third peer is asked");
    let overrun = ReplicaMessage::StateReply {
        seq: 4,
        offset: 0,
        total: 10,
        chunk: bytes[..20].to_vec(),
        whole: false,
    };
    assert!(deliver(&mut r, third, overrun).is_empty());
    assert_eq!(r.stats().bad_state, 3);

    // An honest peer then delivers the whole state.
    let out = tick(&mut r, 4 + SECOND);
    let (honest, _) = state_request(&out).expect("a peer is asked again");
    let out = deliver(&mut r, honest, whole_state_bytes(&bytes));
    let out = serve_parts(&mut r, out, &state_at_4(64));
    assert!(
        matches!(&out[..], [Output::InstallState { seq: 4, digest: d, .. }] if *d == digest),
        "{out:?}"
    );
}

fn whole_state_bytes(bytes: &[u8]) -> ReplicaMessage {
    chunk(bytes, 0, bytes.len())
}

#[test]
fn a_state_larger_than_the_limit_is_refused_before_it_is_received() {
    let config = ProtocolConfig {
        max_state_bytes: 1000,
        ..small()
    };
    let (mut r, bytes, _) = behind_checkpoint_4(64, config);
    assert!(bytes.len() > 1000);
    let out = tick(&mut r, 1 + SECOND + 1);
    let (peer, _) = state_request(&out).expect("a peer is asked");
    // Refused at the first chunk, from what it announces.
    assert!(deliver(&mut r, peer, chunk(&bytes, 0, 100)).is_empty());
    assert_eq!(r.stats().bad_state, 1);
}

#[test]
fn a_peer_that_stops_mid_transfer_is_replaced_and_the_transfer_restarts() {
    let (mut r, bytes, digest) = behind_checkpoint_4(64, small());
    let out = tick(&mut r, 1 + SECOND + 1);
    let (peer, _) = state_request(&out).expect("a peer is asked");
    let out = deliver(&mut r, peer, chunk(&bytes, 0, 500));
    assert_eq!(state_request(&out), Some((peer, 500)));
    // The attempt may take the request timeout plus the time the whole
    // takes at the minimum rate: just before that, nothing.
    let out = tick(&mut r, 1 + 2 * SECOND);
    assert_eq!(state_request(&out), None, "{out:?}");
    // Then the silent peer is replaced, and the new one starts from 0.
    let out = tick(&mut r, 2 * SECOND + SECOND / 10);
    let (next, offset) = state_request(&out).expect("another peer is asked");
    assert_ne!(next, peer);
    assert_eq!(offset, 0);
    assert_eq!(r.stats().bad_state, 0, "silence is not a lie");
    let out = deliver(&mut r, next, whole_state_bytes(&bytes));
    let out = serve_parts(&mut r, out, &state_at_4(64));
    assert!(
        matches!(&out[..], [Output::InstallState { seq: 4, digest: d, .. }] if *d == digest),
        "{out:?}"
    );
}

#[test]
fn a_later_checkpoint_learned_mid_transfer_is_fetched_after_the_current_one() {
    let (_, secrets) = cluster(4);
    let (mut r, bytes, digest) = behind_checkpoint_4(64, small());
    let out = tick(&mut r, 1 + SECOND + 1);
    let (peer, _) = state_request(&out).expect("a peer is asked");
    let out = deliver(&mut r, peer, chunk(&bytes, 0, 500));
    assert_eq!(state_request(&out), Some((peer, 500)));

    // Meanwhile 2f+1 replicas agree on checkpoint 8.
    vote_checkpoint(&mut r, &secrets, 8, [8u8; 32]);

    // The transfer of checkpoint 4 goes on to the end and is installed.
    let out = deliver(&mut r, peer, chunk(&bytes, 500, bytes.len()));
    let out = serve_parts(&mut r, out, &state_at_4(64));
    assert!(
        matches!(&out[..], [Output::InstallState { seq: 4, digest: d, .. }] if *d == digest),
        "{out:?}"
    );
    let mut out = Vec::new();
    r.handle(
        2 + SECOND,
        Input::StateInstalled {
            seq: 4,
            state: digest,
        },
        &mut out,
    );
    assert_eq!(r.delivered(), 4);

    // Then, execution not getting there, checkpoint 8 is fetched.
    let out = tick(&mut r, 3 + 3 * SECOND);
    let asked = out.iter().find_map(|o| match o {
        Output::Send(
            to,
            ReplicaMessage::StateRequest {
                seq: 8, offset: 0, ..
            },
        ) => Some(*to),
        _ => None,
    });
    assert!(asked.is_some(), "{out:?}");
}

/// Found by the simulation (asymmetric-links, seed 2713): a replica fetching
/// checkpoint 4 learned that checkpoint 8 was stable too, then caught up to
/// 4 by executing instead. Reaching the target dropped the transfer and,
/// with it, the later checkpoint it had queued; its peers had discarded
/// their log below 8 and sent no more votes for it, so it never moved again.
#[test]
fn a_checkpoint_queued_behind_a_transfer_made_moot_is_still_fetched() {
    let (_, secrets) = cluster(4);
    let (mut r, bytes, _) = behind_checkpoint_4(64, small());
    let out = tick(&mut r, 1 + SECOND + 1);
    let (peer, _) = state_request(&out).expect("a peer is asked");
    let out = deliver(&mut r, peer, chunk(&bytes, 0, 500));
    assert_eq!(state_request(&out), Some((peer, 500)));
    // Meanwhile 2f+1 replicas agree on checkpoint 8: queued behind the
    // transfer under way.
    vote_checkpoint(&mut r, &secrets, 8, [8u8; 32]);

    // Execution gets to 4 by itself: seqs 1 to 4 commit in view 0.
    let client = SecretKey::from_seed([5; 32]);
    for seq in 1..=4 {
        let pp = pre_prepare(&secrets[0], 0, seq, vec![client_batch(&client, 0, seq)]);
        let digest = pp.digest;
        deliver(&mut r, 0, ReplicaMessage::PrePrepare(pp));
        for replica in [2, 3] {
            deliver(
                &mut r,
                replica,
                ReplicaMessage::Prepare(prepare(&secrets[replica as usize], replica, seq, digest)),
            );
        }
        for replica in [0, 2, 3] {
            let commit = Commit {
                view: 0,
                seq,
                digest,
                replica,
            };
            deliver(&mut r, replica, ReplicaMessage::Commit(commit));
        }
    }
    assert_eq!(r.delivered(), 4);

    // Checkpoint 8 is not lost: execution not getting there, it is fetched.
    let mut asked = None;
    for step in 2..6 {
        let out = tick(&mut r, step * 2 * SECOND);
        asked = asked.or(out.iter().find_map(|o| match o {
            Output::Send(
                to,
                ReplicaMessage::StateRequest {
                    seq: 8, offset: 0, ..
                },
            ) => Some(*to),
            _ => None,
        }));
    }
    assert!(asked.is_some(), "checkpoint 8 was never fetched");
}

/// The state requests in `out`, as (peer, checkpoint).
fn state_requests(out: &[Output]) -> Vec<(ReplicaId, Seq)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(to, ReplicaMessage::StateRequest { seq, .. }) => Some((*to, *seq)),
            _ => None,
        })
        .collect()
}

/// Found by the restart test on a busy machine: checkpoints became stable
/// every 100 ms while a peer took 300 ms to index the one asked for. Each
/// new stable checkpoint made the fetching replica drop the request in
/// flight and ask for the newer one, so no answer was ever awaited long
/// enough to be used, and it never caught up. A request in flight is kept
/// until its deadline; later checkpoints wait their turn.
#[test]
fn a_request_in_flight_is_not_dropped_for_each_later_checkpoint() {
    let (_, secrets) = cluster(4);
    let (mut r, bytes, digest) = behind_checkpoint_4(64, small());
    let out = tick(&mut r, 1 + SECOND + 1);
    let (peer, _) = state_request(&out).expect("a peer is asked");
    // Before the peer answers, 2f+1 replicas agree on checkpoints 8 and 12.
    for (seq, at) in [(8, SECOND + SECOND / 5), (12, SECOND + 2 * SECOND / 5)] {
        vote_checkpoint(&mut r, &secrets, seq, [seq as u8; 32]);
        let out = tick(&mut r, at);
        assert_eq!(state_requests(&out), vec![], "at {at}: {out:?}");
    }
    // The answer about checkpoint 4 comes in time, and is used.
    let out = deliver(&mut r, peer, whole_state_bytes(&bytes));
    let out = serve_parts(&mut r, out, &state_at_4(64));
    assert!(
        matches!(&out[..], [Output::InstallState { seq: 4, digest: d, .. }] if *d == digest),
        "{out:?}"
    );
}

/// A replica that is behind gives execution a request timeout to get there
/// before it asks a peer. Later checkpoints agreed meanwhile change what it
/// will ask for, not when: otherwise checkpoints agreed faster than the
/// timeout would put the request off for ever.
#[test]
fn later_checkpoints_do_not_put_off_the_first_request() {
    let (_, secrets) = cluster(4);
    let (mut r, _, _) = behind_checkpoint_4(64, small());
    // Checkpoint 8 (within the window, so execution may still get there)
    // just before the timeout.
    let out = tick(&mut r, 9 * SECOND / 10);
    assert_eq!(state_requests(&out), vec![], "{out:?}");
    vote_checkpoint(&mut r, &secrets, 8, [8; 32]);
    let out = tick(&mut r, 1 + SECOND + 1);
    assert_eq!(state_requests(&out).len(), 1, "{out:?}");
    assert_eq!(state_requests(&out)[0].1, 8, "the newest is asked for");
}

/// A new view that does not carry a number a replica voted to commit
/// lowers its read barrier (that number never committed), but never below
/// a number that did commit, even one the replica has not executed: the
/// write there may have completed at f+1 other replicas, and a read this
/// replica answers from below it could be one of 2f+1 matching stale
/// answers.
#[test]
fn a_new_view_lowers_the_read_barrier_past_numbers_that_never_committed_and_no_further() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    // Slot 1 commits at replicas 0 to 2; replica 3 votes to commit it but
    // never hears the others' votes, so it does not execute it.
    net.drop_rule = Some(Box::new(|_, to, m| {
        to == 3 && matches!(m, ReplicaMessage::Commit(c) if c.view == 0 && c.seq == 1)
    }));
    net.broadcast_client(&client_batch(&client, 0, 1));
    for replica in 0..3 {
        assert_eq!(net.executed[replica].len(), 1, "replica {replica}");
    }
    assert!(net.executed[3].is_empty());
    assert_eq!(net.replicas[3].read_barrier(), Some(1));
    // Slot 2 prepares at replica 3 alone (the others never see its
    // prepares), and commits nowhere. Replica 3's view-change vote, the
    // only one carrying slot 2, never reaches the next primary, so view 1
    // does not carry slot 2. Replica 3 hears nothing of view 1 but its
    // new-view until told otherwise.
    net.drop_rule = Some(Box::new(|from, to, m| match m {
        ReplicaMessage::Commit(c) if c.view == 0 => (to == 3 && c.seq == 1) || c.seq == 2,
        ReplicaMessage::Prepare(p) if p.view == 0 && p.seq == 2 => to != 3,
        ReplicaMessage::ViewChange(_) => from == 3 && to == 1,
        _ => false,
    }));
    net.hold_rule = Some(Box::new(|_, to, m| match m {
        ReplicaMessage::PrePrepare(p) => p.view >= 1 && (to == 3 || p.seq >= 2),
        ReplicaMessage::Prepare(p) => p.view >= 1 && (to == 3 || p.seq >= 2),
        ReplicaMessage::Commit(c) => c.view >= 1 && (to == 3 || c.seq >= 2),
        _ => false,
    }));
    net.broadcast_client(&client_batch(&client, 0, 2));
    assert_eq!(
        net.replicas[3].read_barrier(),
        Some(2),
        "replica 3 voted to commit slot 2"
    );
    for replica in 0..3 {
        assert_eq!(
            net.replicas[replica].read_barrier(),
            Some(1),
            "replica {replica}"
        );
    }
    for _ in 0..4 {
        net.advance(SECOND + 1);
        if net
            .replicas
            .iter()
            .all(|r| r.view() >= 1 && r.changing_to().is_none())
        {
            break;
        }
    }
    for (id, replica) in net.replicas.iter().enumerate() {
        assert_eq!(
            (replica.view(), replica.changing_to()),
            (1, None),
            "replica {id}"
        );
    }
    // Replica 3 is in view 1 with slot 1 still not executed and nothing
    // prepared there: its barrier is what view 1 carries, slot 1.
    assert!(net.executed[3].is_empty(), "replica 3 executed slot 1");
    assert_eq!(net.replicas[3].delivered(), 0);
    assert_eq!(
        net.replicas[3].read_barrier(),
        Some(1),
        "lowered past slot 2, which never committed, and not past slot 1, which did"
    );
    // Once the held messages of view 1 arrive, everyone executes both
    // batches in one order, and the barrier covers them again.
    net.drop_rule = None;
    net.hold_rule = None;
    net.release(|_, _, _| true);
    net.advance(SECOND / 2);
    for replica in 0..4 {
        assert_eq!(
            net.executed_requests(replica),
            vec![1, 2],
            "replica {replica}"
        );
        assert!(
            net.replicas[replica].read_barrier().is_some_and(|b| b >= 2),
            "replica {replica}"
        );
    }
}

#[test]
fn the_read_barrier_covers_what_a_replica_voted_to_commit_and_is_withheld_while_views_change() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    // Commit votes of view 0 are held back: every replica votes to commit
    // slot 1, and none executes it.
    net.hold_rule = Some(Box::new(
        |_, _, m| matches!(m, ReplicaMessage::Commit(c) if c.view == 0),
    ));
    net.broadcast_client(&client_batch(&client, 0, 1));
    assert!(net.executed.iter().all(Vec::is_empty));
    for replica in 0..4 {
        let voted = net.held.iter().any(|(from, _, m)| {
            *from == replica && matches!(m, ReplicaMessage::Commit(c) if c.seq == 1)
        });
        assert!(voted, "replica {replica} voted to commit slot 1");
        // A read arriving now must wait for slot 1: the write in it may
        // complete at f+1 replicas while this one has not executed it.
        assert_eq!(net.replicas[replica as usize].delivered(), 0);
        assert_eq!(
            net.replicas[replica as usize].read_barrier(),
            Some(1),
            "replica {replica}"
        );
    }
    // The votes are lost; view-change votes are held back, so the backups
    // (which suspect the primary) are left changing views, and answer no
    // reads.
    net.held.clear();
    net.drop_rule = Some(Box::new(
        |_, _, m| matches!(m, ReplicaMessage::Commit(c) if c.view == 0),
    ));
    net.hold_rule = Some(Box::new(|_, _, m| {
        matches!(
            m,
            ReplicaMessage::ViewChange(_) | ReplicaMessage::NewView(_)
        )
    }));
    net.advance(SECOND + 1);
    for replica in &net.replicas[1..] {
        assert_eq!(replica.changing_to(), Some(1));
        assert_eq!(replica.read_barrier(), None);
    }
    // The new view carries slot 1; each replica's barrier covers it again,
    // and the slot executes.
    net.hold_rule = None;
    net.release(|_, _, _| true);
    for (id, replica) in net.replicas.iter().enumerate() {
        assert_eq!(replica.changing_to(), None, "replica {id}");
        assert!(
            replica.read_barrier().is_some_and(|b| b >= 1),
            "replica {id}"
        );
        assert_eq!(net.executed[id].len(), 1, "replica {id}");
    }
}

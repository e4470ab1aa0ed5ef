//! Rule-by-rule tests of the pure protocol, driven by a tiny in-memory network.

use std::collections::{BTreeSet, VecDeque};

use super::*;
use crate::config::{ClusterConfig, ReplicaEntry};
use crate::message::{ClientRequest, RequestBatch, digest_of};

fn keys(n: usize) -> Vec<SecretKey> {
    (0..n).map(|i| SecretKey::from_seed([i as u8 + 1; 32])).collect()
}

fn cluster(n: usize) -> (ClusterConfig, Vec<SecretKey>) {
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
    };
    (config, secrets)
}

fn client_batch(client: &SecretKey, lane: u32, number: u64) -> SignedBatch {
    SignedBatch::sign(
        RequestBatch {
            client: client.public(),
            requests: vec![ClientRequest { lane, number, operation: vec![number as u8] }],
        },
        client,
    )
}

struct Net {
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
}

impl Net {
    fn new(n: usize, config: ProtocolConfig) -> Net {
        let (cluster, secrets) = cluster(n);
        Net {
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
        }
    }

    fn input(&mut self, to: ReplicaId, input: Input) {
        if self.down.contains(&to) {
            return;
        }
        let mut out = Vec::new();
        self.replicas[to as usize].handle(1_000, input, &mut out);
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
                            &self.executed[from as usize].iter().map(|c| c.digest).collect::<Vec<_>>(),
                        );
                        if self.liars.contains(&from) {
                            state[0] ^= 1;
                        }
                        self.input(from, Input::CheckpointTaken { seq, state });
                    }
                }
                Output::Stable { seq, .. } => self.stable[from as usize].push(seq),
                Output::Diverged { seq, .. } => self.diverged[from as usize].push(seq),
            }
        }
    }

    fn run(&mut self) {
        let mut steps = 0;
        while let Some((from, to, message)) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 1_000_000, "the protocol does not quiesce");
            self.input(to, Input::Replica(from, message));
        }
    }

    fn executed_digests(&self, replica: usize) -> Vec<Hash> {
        self.executed[replica].iter().map(|c| c.digest).collect()
    }
}

fn small() -> ProtocolConfig {
    ProtocolConfig { checkpoint_interval: 4, window: 8, max_batch_requests: 16, pipeline: 2 }
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
        assert_eq!(net.executed[replica][0].proposal.batches[0].batch.requests[0].number, 1);
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
        assert_eq!(net.executed_digests(replica), reference, "replica {replica}");
    }
    for replica in 0..4 {
        let stable = &net.stable[replica];
        assert!(!stable.is_empty(), "replica {replica} never stabilized");
        let r = &net.replicas[replica];
        assert_eq!(r.low_watermark(), *stable.last().unwrap());
        assert!(r.log_len() <= 8, "log not collected: {}", r.log_len());
        assert!(r.checkpoint_vote_seqs().iter().all(|s| *s > r.low_watermark()));
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
    assert!(net.executed.iter().all(Vec::is_empty), "committed without a quorum");
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

fn pre_prepare(
    signer: &SecretKey,
    view: View,
    seq: Seq,
    batches: Vec<SignedBatch>,
) -> PrePrepare {
    let proposal = Proposal { timestamp: 5, batches };
    let digest = proposal.digest();
    let signature = signer.sign(domain::PRE_PREPARE, &pre_prepare_header(view, seq, &digest));
    PrePrepare { view, seq, digest, proposal, signature }
}

fn backup() -> (Replica, Vec<SecretKey>) {
    let (cluster, secrets) = cluster(4);
    (Replica::new(1, &cluster, secrets[1].clone(), small()), secrets)
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

    // From a backup, not the primary.
    let out = deliver(&mut r, 2, ReplicaMessage::PrePrepare(pre_prepare(&secrets[2], 0, 1, vec![batch.clone()])));
    assert!(out.is_empty());
    assert_eq!(r.stats().wrong_sender, 1);

    // Signed by someone else than the primary.
    let out = deliver(&mut r, 0, ReplicaMessage::PrePrepare(pre_prepare(&secrets[2], 0, 1, vec![batch.clone()])));
    assert!(out.is_empty());
    assert_eq!(r.stats().bad_signature, 1);

    // Wrong view.
    deliver(&mut r, 0, ReplicaMessage::PrePrepare(pre_prepare(&secrets[0], 3, 1, vec![batch.clone()])));
    assert_eq!(r.stats().wrong_view, 1);

    // Outside the window (low = 0, L = 8).
    deliver(&mut r, 0, ReplicaMessage::PrePrepare(pre_prepare(&secrets[0], 0, 9, vec![batch.clone()])));
    deliver(&mut r, 0, ReplicaMessage::PrePrepare(pre_prepare(&secrets[0], 0, 0, vec![batch.clone()])));
    assert_eq!(r.stats().out_of_window, 2);

    // A digest that does not match the proposal.
    let mut forged = pre_prepare(&secrets[0], 0, 1, vec![batch.clone()]);
    forged.proposal.timestamp = 6;
    deliver(&mut r, 0, ReplicaMessage::PrePrepare(forged));
    assert_eq!(r.stats().bad_digest, 1);

    // A request the client did not sign: the primary cannot forge requests.
    let mut tampered = batch.clone();
    tampered.batch.requests[0].operation = vec![42];
    deliver(&mut r, 0, ReplicaMessage::PrePrepare(pre_prepare(&secrets[0], 0, 1, vec![tampered])));
    assert_eq!(r.stats().bad_signature, 2);

    // A good one is prepared...
    let out = deliver(&mut r, 0, ReplicaMessage::PrePrepare(pre_prepare(&secrets[0], 0, 1, vec![batch.clone()])));
    assert!(matches!(&out[..], [Output::Broadcast(ReplicaMessage::Prepare(p))] if p.seq == 1 && p.replica == 1));
    // ...and a second, different proposal for the same slot is equivocation.
    let other = client_batch(&client, 0, 2);
    let out = deliver(&mut r, 0, ReplicaMessage::PrePrepare(pre_prepare(&secrets[0], 0, 1, vec![other])));
    assert!(out.is_empty());
    assert_eq!(r.stats().equivocation, 1);
}

fn prepare(signer: &SecretKey, replica: ReplicaId, seq: Seq, digest: Hash) -> Prepare {
    let signature = signer.sign(domain::PREPARE, &prepare_header(0, seq, &digest, replica));
    Prepare { view: 0, seq, digest, replica, signature }
}

#[test]
fn prepared_needs_2f_matching_prepares_and_committed_2f_plus_1_commits() {
    let client = SecretKey::from_seed([99; 32]);
    let (mut r, secrets) = backup();
    let pp = pre_prepare(&secrets[0], 0, 1, vec![client_batch(&client, 0, 1)]);
    let digest = pp.digest;
    deliver(&mut r, 0, ReplicaMessage::PrePrepare(pp));

    // A prepare from the primary does not count; nor one naming another sender.
    deliver(&mut r, 0, ReplicaMessage::Prepare(prepare(&secrets[0], 0, 1, digest)));
    deliver(&mut r, 3, ReplicaMessage::Prepare(prepare(&secrets[2], 2, 1, digest)));
    assert_eq!(r.stats().wrong_sender, 2);
    // A prepare for another digest does not match.
    let out = deliver(&mut r, 2, ReplicaMessage::Prepare(prepare(&secrets[2], 2, 1, [7; 32])));
    assert!(out.is_empty(), "own prepare plus a mismatching one is not 2f matching");
    // A forged signature is dropped.
    deliver(&mut r, 3, ReplicaMessage::Prepare(prepare(&secrets[2], 3, 1, digest)));
    assert_eq!(r.stats().bad_signature, 1);
    // Own prepare + replica 3's = 2f = 2: prepared, commit sent.
    let out = deliver(&mut r, 3, ReplicaMessage::Prepare(prepare(&secrets[3], 3, 1, digest)));
    assert!(matches!(&out[..], [Output::Broadcast(ReplicaMessage::Commit(c))] if c.seq == 1));

    // Own commit + one more is not 2f+1.
    let commit = |replica| ReplicaMessage::Commit(Commit { view: 0, seq: 1, digest, replica });
    assert!(deliver(&mut r, 0, commit(0)).is_empty());
    // A repeated commit is a duplicate, not a second vote.
    assert!(deliver(&mut r, 0, commit(0)).is_empty());
    assert_eq!(r.stats().duplicate, 1);
    let out = deliver(&mut r, 3, commit(3));
    assert!(matches!(&out[..], [Output::Execute(c)] if c.seq == 1 && c.digest == digest));
}

#[test]
fn commits_without_a_prepared_certificate_do_not_execute() {
    let (mut r, _) = backup();
    for replica in [0, 2, 3] {
        let out = deliver(
            &mut r,
            replica,
            ReplicaMessage::Commit(Commit { view: 0, seq: 1, digest: [1; 32], replica }),
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
    assert!(!net.stable[0].is_empty(), "three honest replicas still stabilize");
    assert!(net.stable[2].is_empty(), "the liar does not collect garbage on a wrong state");
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
    assert_eq!(out.len(), 1, "proposed");
    out.clear();
    primary.handle(1, Input::Client(good), &mut out);
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
fn checkpoint_votes_outside_the_window_or_off_interval_are_dropped() {
    let (mut r, secrets) = backup();
    let vote = |seq: Seq| {
        let state = [3; 32];
        let signature = secrets[2].sign(domain::CHECKPOINT, &checkpoint_header(seq, &state, 2));
        ReplicaMessage::Checkpoint(Checkpoint { seq, state, replica: 2, signature })
    };
    deliver(&mut r, 2, vote(3)); // not a multiple of K = 4
    deliver(&mut r, 2, vote(12)); // beyond low + L = 8
    assert_eq!(r.stats().out_of_window, 2);
    deliver(&mut r, 2, vote(4));
    assert_eq!(r.checkpoint_vote_seqs().into_iter().collect::<Vec<_>>(), vec![4]);
}

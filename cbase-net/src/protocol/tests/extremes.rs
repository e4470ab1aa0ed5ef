//! Extreme values in every numeric field of what a peer (or a client) sends.
//!
//! A faulty replica may put any number in any field. Overflow checks are on
//! in debug builds, so unchecked arithmetic on such a number lets one faulty
//! peer crash correct replicas. Each test delivers messages carrying 0, 1,
//! values at and just past the window, and values at the end of the number
//! space, from a genuine peer id (signed with that peer's key where a
//! signature is checked first), to correct replicas in several situations,
//! then lets time pass so that timers using what was stored run too. The
//! assertion is that nothing panics; where it is cheap, that the cluster
//! still commits afterwards.

use std::sync::Arc;

use super::*;
use crate::checkpoint::parts::{MAX_HAVE, MAX_PARTS_PER_REQUEST, PartReply, have_list};
use crate::checkpoint::{CheckpointState, ClientTable, SessionLimits};
use crate::crypto::Signature;
use crate::message::{
    self, NewView, PrePrepareHeader, PreparedProof, ViewChange, ViewChangeBody, view_change_bytes,
};

/// The peer that misbehaves.
const FAULTY: ReplicaId = 3;

/// Numbers at the edges: small ones, ones around the small window (L = 8,
/// K = 4), and ones at the end of the number space.
fn edges() -> Vec<u64> {
    vec![
        0,
        1,
        2,
        3,
        4,
        5,
        7,
        8,
        9,
        12,
        13,
        16,
        17,
        u64::from(u32::MAX),
        u64::MAX / 2,
        u64::MAX - 8,
        u64::MAX - 4,
        u64::MAX - 3,
        u64::MAX - 2,
        u64::MAX - 1,
        u64::MAX,
    ]
}

/// Fewer edges, for loops over two fields at once.
fn few() -> Vec<u64> {
    vec![0, 1, u64::MAX / 2, u64::MAX - 3, u64::MAX - 1, u64::MAX]
}

/// [`edges`] and the numbers around `around` (a replica's view, window
/// edges, what it executed).
fn edges_around(around: &[u64]) -> Vec<u64> {
    with_around(edges(), around)
}

/// [`few`] and the numbers around `around`.
fn few_around(around: &[u64]) -> Vec<u64> {
    with_around(few(), around)
}

fn with_around(mut all: Vec<u64>, around: &[u64]) -> Vec<u64> {
    for &a in around {
        all.extend([
            a.saturating_sub(1),
            a,
            a.saturating_add(1),
            a.saturating_add(2),
        ]);
    }
    all.sort_unstable();
    all.dedup();
    all
}

fn bogus_signature() -> Signature {
    Signature::from_bytes([0x5a; 64])
}

/// A cluster of 4 that committed six requests (checkpoint 4 stable).
fn normal() -> (Net, SecretKey) {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    for number in 1..=6 {
        net.input(0, Input::Client(client_batch(&client, 0, number)));
        net.run();
    }
    assert_eq!(net.replicas[1].low_watermark(), 4);
    (net, client)
}

/// [`normal`], then the primary (0) falls silent while a client waits: the
/// backups vote for view 1, and their votes are lost, so they stay in the
/// middle of the view change (replica 1 is the primary of view 1).
fn changing() -> (Net, SecretKey) {
    let (mut net, client) = normal();
    net.down.insert(0);
    net.drop_rule = Some(Box::new(|_, _, m| {
        matches!(
            m,
            ReplicaMessage::ViewChange(_) | ReplicaMessage::NewView(_)
        )
    }));
    net.broadcast_client(&client_batch(&client, 0, 7));
    net.advance(2 * SECOND);
    for replica in 1..4 {
        assert_eq!(
            net.replicas[replica].changing_to(),
            Some(1),
            "replica {replica}"
        );
    }
    (net, client)
}

/// Delivers `message` from `from` to `to` (and what follows from it among
/// the replicas), then ticks `to` a little later. A panic's backtrace
/// names the handler that overflowed.
fn hit(net: &mut Net, to: ReplicaId, from: ReplicaId, message: ReplicaMessage) {
    net.input(to, Input::Replica(from, message));
    net.run();
    net.now += SECOND / 20;
    net.input(to, Input::Tick);
    net.run();
}

/// Lets time pass on every replica in steps long enough for every timer
/// (status, request, view change, transfer) to fire.
fn let_time_pass(net: &mut Net) {
    for step in [SECOND / 10, SECOND, 3 * SECOND, 10 * SECOND, 60 * SECOND] {
        net.advance(step);
    }
}

/// After a scenario's extremes: time passes, and in the normal scenario a
/// new request still commits.
fn settle(net: &mut Net, scenario: &str, client: &SecretKey) {
    let_time_pass(net);
    if scenario == "normal" {
        still_commits(net, client);
    }
}

/// After the extremes, with the network healed, a new request still
/// commits at 2f+1 replicas.
fn still_commits(net: &mut Net, client: &SecretKey) {
    net.drop_rule = None;
    net.down.clear();
    let number = 1_000;
    net.broadcast_client(&client_batch(client, 1, number));
    for _ in 0..20 {
        let done = (0..4)
            .filter(|r| net.executed_requests(*r).contains(&number))
            .count();
        if done >= 3 {
            return;
        }
        net.advance(SECOND);
    }
    panic!("request {number} did not commit after the extreme messages");
}

/// The targets of a scenario: (replica, its role) for the messages.
fn targets(net: &Net) -> Vec<ReplicaId> {
    (0..4)
        .filter(|r| *r != FAULTY && !net.down.contains(r))
        .collect()
}

fn the_proposal(timestamp: u64, batches: Vec<ClientBatch>) -> Proposal {
    Proposal { timestamp, batches }
}

fn header(signer: &SecretKey, view: View, seq: Seq, digest: Hash) -> PrePrepareHeader {
    PrePrepareHeader {
        view,
        seq,
        digest,
        signature: signer.sign(domain::PRE_PREPARE, &pre_prepare_header(view, seq, &digest)),
    }
}

fn signed_checkpoint(signer: &SecretKey, replica: ReplicaId, seq: Seq, state: Hash) -> Checkpoint {
    Checkpoint {
        seq,
        state,
        replica,
        signature: signer.sign(domain::CHECKPOINT, &checkpoint_header(seq, &state, replica)),
    }
}

fn signed_view_change(signer: &SecretKey, body: ViewChangeBody) -> ViewChange {
    let signature = signer.sign(domain::VIEW_CHANGE, &view_change_bytes(&body));
    ViewChange { body, signature }
}

/// Where a replica stands: its view, window and progress, as numbers to
/// put next to the edges.
fn around(r: &Replica) -> Vec<u64> {
    vec![
        r.view(),
        r.heading_to(),
        r.low_watermark(),
        r.high(),
        r.delivered(),
        r.next_seq,
    ]
}

/// A cluster in some state, and a client.
type Scenario = fn() -> (Net, SecretKey);

fn scenarios() -> [(&'static str, Scenario); 2] {
    [("normal", normal), ("changing views", changing)]
}

#[test]
fn pre_prepares_with_extreme_views_seqs_and_timestamps() {
    for (name, scenario) in scenarios() {
        let (mut net, client) = scenario();
        let secrets = keys(4);
        for to in targets(&net) {
            let at = around(&net.replicas[to as usize]);
            let numbers = few_around(&at);
            let batch = client_batch(&client, 2, 1);
            for &view in &numbers {
                // The primary of `view` signs, unless that is the target
                // itself (then the faulty peer does, and it fails later).
                let primary = net.replicas[to as usize].primary_of(view);
                let from = if primary == to { FAULTY } else { primary };
                for &seq in &numbers {
                    let pp = signed_pre_prepare(
                        &secrets[from as usize],
                        view,
                        seq,
                        the_proposal(5, vec![batch.clone()]),
                    );
                    hit(&mut net, to, from, ReplicaMessage::PrePrepare(pp));
                }
                for timestamp in [0, 1, u64::MAX - 1, u64::MAX] {
                    let seq = net.replicas[to as usize].low_watermark() + 1;
                    let pp = signed_pre_prepare(
                        &secrets[from as usize],
                        view,
                        seq,
                        the_proposal(timestamp, Vec::new()),
                    );
                    hit(&mut net, to, from, ReplicaMessage::PrePrepare(pp));
                }
            }
            // Requests with extreme lanes and numbers, in a well-signed
            // pre-prepare of the view's primary.
            let view = net.replicas[to as usize].view();
            let primary = net.replicas[to as usize].primary_of(view);
            if primary != to {
                let seq = net.replicas[to as usize].high();
                for (lane, number) in [(u32::MAX, u64::MAX), (0, 0), (u32::MAX, 0)] {
                    let batch = ClientBatch::sign(
                        RequestBatch {
                            client: client.public(),
                            requests: vec![ClientRequest {
                                lane,
                                number,
                                operation: Vec::new(),
                            }],
                        },
                        &client,
                    );
                    let pp = signed_pre_prepare(
                        &secrets[primary as usize],
                        view,
                        seq,
                        the_proposal(net.now, vec![batch]),
                    );
                    hit(&mut net, to, primary, ReplicaMessage::PrePrepare(pp));
                }
            }
        }
        settle(&mut net, name, &client);
    }
}

#[test]
fn prepares_and_commits_with_extreme_views_and_seqs() {
    for (name, scenario) in scenarios() {
        let (mut net, client) = scenario();
        let secrets = keys(4);
        for to in targets(&net) {
            let numbers = few_around(&around(&net.replicas[to as usize]));
            for &view in &numbers {
                for &seq in &numbers {
                    let prepare =
                        signed_prepare(&secrets[FAULTY as usize], FAULTY, view, seq, [7; 32]);
                    hit(&mut net, to, FAULTY, ReplicaMessage::Prepare(prepare));
                    let commit = Commit {
                        view,
                        seq,
                        digest: [7; 32],
                        replica: FAULTY,
                    };
                    hit(&mut net, to, FAULTY, ReplicaMessage::Commit(commit));
                }
            }
            // Naming another replica, or none that exists.
            for replica in [0, 4, u32::MAX] {
                let prepare = signed_prepare(&secrets[FAULTY as usize], replica, 0, 5, [7; 32]);
                hit(&mut net, to, FAULTY, ReplicaMessage::Prepare(prepare));
                let commit = Commit {
                    view: 0,
                    seq: 5,
                    digest: [7; 32],
                    replica,
                };
                hit(&mut net, to, FAULTY, ReplicaMessage::Commit(commit));
            }
        }
        settle(&mut net, name, &client);
    }
}

#[test]
fn checkpoints_with_extreme_seqs_and_replicas() {
    for (name, scenario) in scenarios() {
        let (mut net, client) = scenario();
        let secrets = keys(4);
        for to in targets(&net) {
            let numbers = edges_around(&around(&net.replicas[to as usize]));
            for &seq in &numbers {
                for state in [[0; 32], [1; 32]] {
                    let vote = signed_checkpoint(&secrets[FAULTY as usize], FAULTY, seq, state);
                    hit(&mut net, to, FAULTY, ReplicaMessage::Checkpoint(vote));
                }
                // A vote naming a replica outside the cluster (unsigned).
                for replica in [4, u32::MAX] {
                    let vote = Checkpoint {
                        seq,
                        state: [2; 32],
                        replica,
                        signature: bogus_signature(),
                    };
                    hit(&mut net, to, FAULTY, ReplicaMessage::Checkpoint(vote));
                }
            }
        }
        settle(&mut net, name, &client);
    }
}

#[test]
fn forwards_and_haves_with_extreme_requests() {
    for (name, scenario) in scenarios() {
        let (mut net, client) = scenario();
        for to in targets(&net).into_iter().chain([0]) {
            for &number in &edges() {
                for lane in [0, 1, u32::MAX - 1, u32::MAX] {
                    let batch = ClientBatch::sign(
                        RequestBatch {
                            client: client.public(),
                            requests: vec![ClientRequest {
                                lane,
                                number,
                                operation: vec![0xff; 3],
                            }],
                        },
                        &client,
                    );
                    hit(&mut net, to, FAULTY, ReplicaMessage::Forward(batch));
                }
            }
            // Many lanes in one batch, and an unsigned batch relayed.
            let many = RequestBatch {
                client: client.public(),
                requests: (0..16)
                    .map(|i| ClientRequest {
                        lane: u32::MAX - i,
                        number: u64::MAX - u64::from(i),
                        operation: Vec::new(),
                    })
                    .collect(),
            };
            hit(
                &mut net,
                to,
                FAULTY,
                ReplicaMessage::Forward(ClientBatch::sign(many.clone(), &client)),
            );
            hit(
                &mut net,
                to,
                FAULTY,
                ReplicaMessage::Forward(ClientBatch::unsigned(many)),
            );
            let digests: Vec<Hash> = (0..5_000u32)
                .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
                .collect();
            hit(&mut net, to, FAULTY, ReplicaMessage::Have(digests));
            hit(&mut net, to, FAULTY, ReplicaMessage::Have(Vec::new()));
        }
        settle(&mut net, name, &client);
    }
}

#[test]
fn view_changes_and_new_views_with_extreme_numbers() {
    for (name, scenario) in scenarios() {
        let (mut net, client) = scenario();
        let secrets = keys(4);
        let faulty = &secrets[FAULTY as usize];
        for to in targets(&net) {
            let r = &net.replicas[to as usize];
            let (low, proof, state) = (r.low, r.stable_proof.clone(), r.stable_state);
            let numbers = few_around(&around(r));
            for &new_view in &numbers {
                for &stable_seq in &few_around(&[low]) {
                    // A stable checkpoint with no proof (holds only at 0),
                    // and prepared certificates at the edges.
                    let prepared = [0, 1, low + 1, low + 8, low + 9, u64::MAX - 1, u64::MAX]
                        .into_iter()
                        .map(|seq| PreparedProof {
                            pre_prepare: header(faulty, u64::MAX, seq, [3; 32]),
                            prepares: vec![signed_prepare(faulty, FAULTY, u64::MAX, seq, [7; 32])],
                        })
                        .collect();
                    let body = ViewChangeBody {
                        new_view,
                        stable_seq,
                        stable_state: [0; 32],
                        checkpoint_proof: Vec::new(),
                        prepared,
                        replica: FAULTY,
                    };
                    let vc = signed_view_change(faulty, body);
                    hit(&mut net, to, FAULTY, ReplicaMessage::ViewChange(vc));
                }
                // The genuine stable checkpoint, and certificates just
                // inside and outside the window above it.
                let body = ViewChangeBody {
                    new_view,
                    stable_seq: low,
                    stable_state: state,
                    checkpoint_proof: proof.clone(),
                    prepared: [low + 1, low + 8, low + 9]
                        .into_iter()
                        .map(|seq| PreparedProof {
                            pre_prepare: header(&secrets[0], 0, seq, [3; 32]),
                            prepares: Vec::new(),
                        })
                        .collect(),
                    replica: FAULTY,
                };
                let vc = signed_view_change(faulty, body.clone());
                hit(&mut net, to, FAULTY, ReplicaMessage::ViewChange(vc.clone()));
                // A new-view for the view, carrying that vote and headers
                // at the edges, signed by the view's primary.
                let primary = net.replicas[to as usize].primary_of(new_view);
                for seqs in [vec![], vec![low + 1], edges()] {
                    let pre_prepares = seqs
                        .iter()
                        .map(|&seq| header(&secrets[primary as usize], new_view, seq, [4; 32]))
                        .collect();
                    let nv = NewView {
                        view: new_view,
                        view_changes: vec![vc.clone(), vc.clone()],
                        pre_prepares,
                    };
                    hit(&mut net, to, FAULTY, ReplicaMessage::NewView(nv));
                }
                // A vote naming another replica.
                let other = ViewChangeBody {
                    replica: u32::MAX,
                    ..body
                };
                let vc = signed_view_change(faulty, other);
                hit(&mut net, to, FAULTY, ReplicaMessage::ViewChange(vc));
            }
        }
        settle(&mut net, name, &client);
    }
}

#[test]
fn statuses_with_extreme_views_and_progress() {
    for (name, scenario) in scenarios() {
        let (mut net, client) = scenario();
        for to in targets(&net) {
            let numbers = few_around(&around(&net.replicas[to as usize]));
            for &view in &numbers {
                for changing_to in [None, Some(0), Some(view), Some(u64::MAX)] {
                    for &delivered in &numbers {
                        for low in [0, 4, delivered, u64::MAX - 1, u64::MAX] {
                            let status = message::Status {
                                view,
                                changing_to,
                                delivered,
                                low,
                                replica: FAULTY,
                                probe: None,
                                echo: None,
                            };
                            // Statuses are answered once per half interval.
                            net.now += SECOND;
                            hit(&mut net, to, FAULTY, ReplicaMessage::Status(status));
                        }
                    }
                }
            }
        }
        settle(&mut net, name, &client);
    }
}

#[test]
fn proposal_fetches_and_bodies_with_extreme_seqs() {
    for (name, scenario) in scenarios() {
        let (mut net, client) = scenario();
        for to in targets(&net) {
            let numbers = edges_around(&around(&net.replicas[to as usize]));
            for &seq in &numbers {
                for digest in [[0; 32], *crate::protocol::proposals::NULL_DIGEST] {
                    hit(
                        &mut net,
                        to,
                        FAULTY,
                        ReplicaMessage::FetchProposal { seq, digest },
                    );
                }
                for timestamp in [0, u64::MAX] {
                    let proposal = the_proposal(timestamp, Vec::new());
                    hit(
                        &mut net,
                        to,
                        FAULTY,
                        ReplicaMessage::ProposalBody { seq, proposal },
                    );
                }
            }
        }
        settle(&mut net, name, &client);
    }
}

#[test]
fn state_and_part_requests_with_extreme_numbers() {
    let parts = || {
        vec![
            PartRequest::Node {
                container: u16::MAX,
                level: u8::MAX,
                index: u32::MAX,
            },
            PartRequest::Node {
                container: 0,
                level: 3,
                index: 4095,
            },
            PartRequest::Node {
                container: 0,
                level: 3,
                index: u32::MAX,
            },
            PartRequest::Node {
                container: 0,
                level: 4,
                index: 0,
            },
            PartRequest::Bucket {
                container: 0,
                bucket: u16::MAX,
                have: vec![u64::MAX; MAX_HAVE],
            },
            PartRequest::Bucket {
                container: u16::MAX,
                bucket: u16::MAX,
                have: vec![0; MAX_HAVE + 1],
            },
        ]
    };
    for (name, scenario) in scenarios() {
        let (mut net, client) = scenario();
        for to in targets(&net) {
            let numbers = few_around(&around(&net.replicas[to as usize]));
            for &seq in &numbers {
                for &offset in &edges() {
                    for whole in [false, true] {
                        net.now += SECOND;
                        hit(
                            &mut net,
                            to,
                            FAULTY,
                            ReplicaMessage::StateRequest { seq, offset, whole },
                        );
                    }
                }
                for request in [0, u64::MAX] {
                    net.now += SECOND;
                    let message = ReplicaMessage::PartsRequest {
                        seq,
                        salt: [0xff; 32],
                        request,
                        parts: parts(),
                    };
                    hit(&mut net, to, FAULTY, message);
                }
            }
            let too_many = vec![
                PartRequest::Node {
                    container: 0,
                    level: 0,
                    index: 0,
                };
                MAX_PARTS_PER_REQUEST + 1
            ];
            let message = ReplicaMessage::PartsRequest {
                seq: 4,
                salt: [0; 32],
                request: u64::MAX,
                parts: too_many,
            };
            hit(&mut net, to, FAULTY, message);
        }
        settle(&mut net, name, &client);
    }
    // What serving such a request does with a checkpoint's index, whatever
    // room the frame leaves.
    let state = state_at_4(4);
    let index = CheckpointIndex::build(Arc::new(state));
    for room in [0, 1, 64, usize::MAX - 1, usize::MAX] {
        for salt in [[0; 32], [0xff; 32]] {
            index.answer(&salt, &parts(), room);
        }
    }
}

/// Replica 1, which learned that checkpoint 4 is agreed and asked a peer
/// for its manifest; returns it, the peer asked and the manifest's bytes.
fn asking_for_the_manifest() -> (Replica, ReplicaId, Vec<u8>) {
    let (mut r, bytes, _) = behind_checkpoint_4(64, small());
    let out = tick(&mut r, 1 + SECOND + 1);
    let (peer, offset) = state_request(&out).expect("a peer is asked");
    assert_eq!(offset, 0);
    (r, peer, bytes)
}

fn state_reply(seq: Seq, offset: u64, total: u64, chunk: Vec<u8>, whole: bool) -> ReplicaMessage {
    ReplicaMessage::StateReply {
        seq,
        offset,
        total,
        chunk,
        whole,
    }
}

#[test]
fn state_replies_with_extreme_offsets_and_totals() {
    let mut now = 10 * SECOND;
    for started in [false, true] {
        let (mut r, peer, bytes) = asking_for_the_manifest();
        if started {
            // The first chunk came: the extremes arrive mid-transfer.
            now += 1;
            receive(&mut r, now, peer, chunk(&bytes, 0, 100));
        }
        for seq in [0, 4, u64::MAX] {
            for &offset in &edges_around(&[100]) {
                for &total in &edges_around(&[bytes.len() as u64]) {
                    for len in [0usize, 1, 100] {
                        for whole in [false, true] {
                            let message = state_reply(seq, offset, total, vec![1; len], whole);
                            for from in [peer, FAULTY] {
                                now += 1;
                                receive(&mut r, now, from, message.clone());
                            }
                        }
                    }
                }
            }
        }
        for step in [SECOND, 10 * SECOND, 100 * SECOND] {
            now += step;
            tick(&mut r, now);
        }
    }
}

fn receive(r: &mut Replica, now: u64, from: ReplicaId, message: ReplicaMessage) -> Vec<Output> {
    let mut out = Vec::new();
    r.handle(now, Input::Replica(from, message), &mut out);
    out
}

/// A state of `keys` entries of 100 bytes in one container.
fn entries_state(keys: u32) -> CheckpointState {
    let entries = (0..keys)
        .map(|k| (cbase_core::codec::encode(&k).unwrap(), vec![1; 100]))
        .collect();
    CheckpointState::new(
        cbase_core::Snapshot::from_parts(vec![("accounts".to_owned(), entries)]),
        Default::default(),
        42,
    )
}

/// The part requests in `out`: (peer, request number, parts).
fn asked_parts(out: &[Output]) -> Vec<(ReplicaId, u64, Vec<PartRequest>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(to, ReplicaMessage::PartsRequest { request, parts, .. }) => {
                Some((*to, *request, parts.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Replies to a part request whose numbers are at the edges.
fn extreme_part_replies() -> Vec<Vec<PartReply>> {
    let node = |container, level, index, children| PartReply::Node {
        container,
        level,
        index,
        children,
    };
    let bucket = |container, bucket, keep: Vec<u8>, entries, complete| PartReply::Bucket {
        container,
        bucket,
        keep,
        entries,
        complete,
    };
    vec![
        vec![],
        vec![node(0, 0, 0, vec![])],
        vec![node(0, 0, 0, vec![[0; 32]; 17])],
        vec![node(u16::MAX, u8::MAX, u32::MAX, vec![[0; 32]; 16])],
        vec![node(0, 3, u32::MAX, vec![[0; 32]; 16])],
        vec![bucket(0, u16::MAX, vec![0xff; 1 << 12], vec![], true)],
        vec![bucket(0, 0, vec![], vec![(vec![], vec![])], false)],
        vec![bucket(u16::MAX, u16::MAX, vec![0xff], vec![], false)],
        vec![PartReply::Oversized {
            container: u16::MAX,
            bucket: u16::MAX,
        }],
        vec![PartReply::Oversized {
            container: 0,
            bucket: 0,
        }],
    ]
}

#[test]
fn part_replies_with_extreme_numbers() {
    // Replica 1 fetching a state of 3,000 entries in parts, with nothing of
    // its own; every peer's answers at the edges, to requests it made (so
    // they are not ignored as stale) and to requests it never made.
    let target = entries_state(3_000);
    let (mut r, peer, _) = {
        let (cluster, secrets) = cluster(4);
        let mut r = Replica::new(1, &cluster, secrets[1].clone(), small());
        vote_checkpoint(&mut r, &secrets, 4, target.digest());
        let out = tick(&mut r, 1 + SECOND + 1);
        let (peer, _) = state_request(&out).expect("a peer is asked");
        (r, peer, ())
    };
    let mut now = 2 * SECOND;
    let out = receive(&mut r, now, peer, whole_state(4, &target));
    let mut asked = asked_parts(&out);
    assert!(!asked.is_empty(), "the walk asks for parts");
    let index = CheckpointIndex::build(Arc::new(target.clone()));
    for replies in extreme_part_replies() {
        // To a request it made: the peer asked answers with the extremes.
        if let Some((to, request, _)) = asked.pop() {
            now += 1;
            let message = ReplicaMessage::Parts {
                seq: 4,
                request,
                parts: replies.clone(),
            };
            let out = receive(&mut r, now, to, message);
            asked.extend(asked_parts(&out));
        }
        // To requests it never made, and for other checkpoints.
        for seq in [0, 4, u64::MAX] {
            for request in [0, 1, u64::from(u32::MAX), u64::MAX] {
                now += 1;
                let message = ReplicaMessage::Parts {
                    seq,
                    request,
                    parts: replies.clone(),
                };
                let out = receive(&mut r, now, FAULTY, message);
                asked.extend(asked_parts(&out));
            }
        }
        // The others answer honestly, so the walk goes on.
        if let Some((to, request, parts)) = asked.pop() {
            now += 1;
            let message = ReplicaMessage::Parts {
                seq: 4,
                request,
                parts: index.answer(&[0; 32], &parts, 1 << 20),
            };
            let out = receive(&mut r, now, to, message);
            asked.extend(asked_parts(&out));
        }
        now += SECOND;
        let out = tick(&mut r, now);
        asked.extend(asked_parts(&out));
    }
    for step in [SECOND, 100 * SECOND, 10_000 * SECOND] {
        now += step;
        tick(&mut r, now);
    }
}

#[test]
fn a_replica_recovering_from_a_restart_hears_extreme_views() {
    // A replica restarted without its memory raises its floor to any view
    // it hears of: at the end of the number space too.
    let (cluster, secrets) = cluster(4);
    let mut r = Replica::restarted(1, &cluster, secrets[1].clone(), small());
    let faulty = &secrets[FAULTY as usize];
    let mut now = SECOND;
    for &view in &edges() {
        let messages = [
            ReplicaMessage::Status(message::Status {
                view,
                changing_to: Some(view),
                delivered: view,
                low: view,
                replica: FAULTY,
                probe: None,
                echo: None,
            }),
            ReplicaMessage::Commit(Commit {
                view,
                seq: 1,
                digest: [0; 32],
                replica: FAULTY,
            }),
            ReplicaMessage::ViewChange(signed_view_change(
                faulty,
                ViewChangeBody {
                    new_view: view,
                    stable_seq: 0,
                    stable_state: [0; 32],
                    checkpoint_proof: Vec::new(),
                    prepared: Vec::new(),
                    replica: FAULTY,
                },
            )),
        ];
        for message in messages {
            now += SECOND;
            receive(&mut r, now, FAULTY, message);
            tick(&mut r, now + 1);
        }
    }
    for step in [SECOND, 10 * SECOND, 100 * SECOND, 1_000 * SECOND] {
        now += step;
        tick(&mut r, now);
    }
}

#[test]
fn the_client_table_takes_extreme_lanes_numbers_and_clocks() {
    // What execution does with a request's lane and number (any a client
    // picks) at any agreed clock.
    let client = SecretKey::from_seed([1; 32]).public();
    let limits = [
        SessionLimits::default(),
        SessionLimits {
            max_sessions: 1,
            max_lanes: 1,
            max_lanes_per_session: 1,
            max_reply_bytes: 0,
            idle: std::time::Duration::ZERO,
            max_number_ahead: std::time::Duration::MAX,
        },
    ];
    for limits in limits {
        let mut table = ClientTable::new();
        for &clock in &edges() {
            for &number in &edges() {
                for lane in [0, 1, u32::MAX] {
                    table.admit(&client, lane, number, clock, &limits);
                    table.settled(&client, lane, number);
                    table.expired(&client, lane, number);
                }
                table.expire_idle(clock, &limits);
                table.trim_replies(&limits);
            }
        }
    }
    // have lists of any length.
    let state = entries_state(100);
    let index = CheckpointIndex::build(Arc::new(state));
    for max in [0, 1, MAX_HAVE, usize::MAX] {
        have_list(&[0; 32], index.bucket(0, 0), max);
    }
}

#[test]
fn garbage_frames_decode_to_errors_not_panics() {
    // Every message a peer or client can send, encoded, then with bytes
    // set to the edges of the varints and lengths that follow.
    let secrets = keys(4);
    let client = SecretKey::from_seed([99; 32]);
    let replica_messages = vec![
        ReplicaMessage::PrePrepare(signed_pre_prepare(
            &secrets[0],
            1,
            2,
            the_proposal(3, vec![client_batch(&client, 1, 2)]),
        )),
        ReplicaMessage::Prepare(signed_prepare(&secrets[1], 1, 2, 3, [7; 32])),
        ReplicaMessage::Checkpoint(signed_checkpoint(&secrets[1], 1, 4, [1; 32])),
        ReplicaMessage::Status(message::Status {
            view: 1,
            changing_to: Some(2),
            delivered: 3,
            low: 4,
            replica: 1,
            probe: None,
            echo: None,
        }),
        ReplicaMessage::StateReply {
            seq: 4,
            offset: 5,
            total: 6,
            chunk: vec![1, 2, 3],
            whole: false,
        },
        ReplicaMessage::PartsRequest {
            seq: 4,
            salt: [1; 32],
            request: 5,
            parts: vec![PartRequest::Bucket {
                container: 1,
                bucket: 2,
                have: vec![3, 4],
            }],
        },
        ReplicaMessage::Parts {
            seq: 4,
            request: 5,
            parts: vec![PartReply::Bucket {
                container: 1,
                bucket: 2,
                keep: vec![1],
                entries: vec![(vec![1], vec![2])],
                complete: false,
            }],
        },
        ReplicaMessage::Have(vec![[1; 32], [2; 32]]),
    ];
    let client_messages = vec![
        message::ClientMessage::Requests(client_batch(&client, 1, 2)),
        message::ClientMessage::Reads(vec![message::ReadRequest {
            id: 1,
            operation: vec![1, 2],
        }]),
        message::ClientMessage::Service {
            service: "s".to_owned(),
            fingerprint: 1,
        },
    ];
    let reply_messages = vec![
        message::ReplyMessage::Replies(vec![message::Reply {
            view: 1,
            lane: 2,
            number: 3,
            replica: 1,
            result: vec![1],
        }]),
        message::ReplyMessage::Reads(vec![message::ReadReply {
            id: 1,
            replica: 1,
            result: Some(vec![1]),
        }]),
    ];
    fn mangle<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) {
        let bytes = cbase_core::codec::encode(value).unwrap();
        for at in 0..bytes.len() {
            for fill in [0x00, 0x7f, 0x80, 0xfe, 0xff] {
                let mut one = bytes.clone();
                one[at] = fill;
                let _ = cbase_core::codec::decode::<T>(&one);
                // The rest of the frame all 0xff: the longest varints.
                let mut run = bytes.clone();
                for b in &mut run[at..] {
                    *b = fill;
                }
                run.extend([fill; 16]);
                let _ = cbase_core::codec::decode::<T>(&run);
                let _ = cbase_core::codec::decode::<T>(&bytes[..at]);
            }
        }
    }
    for m in &replica_messages {
        mangle(m);
    }
    for m in &client_messages {
        mangle(m);
    }
    for m in &reply_messages {
        mangle(m);
    }
}

//! Schedules around view changes and new-views: Byzantine new primaries and
//! voters, replays, and long stretches of failed view changes.

use super::*;
use crate::message::PrePrepareHeader;

/// Whether `m` is a view-change sent to the primary of the view it votes for.
fn vote_to_its_primary(to: ReplicaId, m: &ReplicaMessage) -> bool {
    matches!(m, ReplicaMessage::ViewChange(vc) if vc.body.new_view % 4 == to as u64)
}

/// After 4n view changes in a row fail (no new primary hears enough votes
/// in time: a stretch of asynchrony, no faulty replica needed), the replicas
/// still work in view 0 while they vote for view 17: and `on_view_change`
/// drops a vote for a view more than 4n above the view a replica *works in*
/// (not the one it votes for) as too far ahead. Once the network heals, the
/// primary of view 17 drops every vote for its own view, the others refuse
/// view 16 as below their vote, and the cluster is stuck for good. It must
/// recover once messages flow again.
#[test]
fn after_many_failed_view_changes_the_healed_cluster_enters_a_view_again() {
    // 1. n = 4, a client's batch reaches every replica; the pre-prepares of
    //    view 0 are lost, so the backups suspect primary 0.
    // 2. For a while, every view-change sent to the primary of the view it
    //    votes for is lost (and so are new-views): each view change is
    //    joined by a quorum of the other three and times out, so the
    //    replicas move on view after view, all still working in view 0.
    // 3. Once replicas 1-3 vote for view 17 (> 0 + 4n), the network heals.
    // 4. Expected: a new primary collects a quorum and the batch executes.
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    net.drop_rule = Some(Box::new(|_, to, m| {
        matches!(
            m,
            ReplicaMessage::PrePrepare(_) | ReplicaMessage::NewView(_)
        ) || vote_to_its_primary(to, m)
    }));
    net.broadcast_client(&client_batch(&client, 0, 1));
    for _ in 0..60 {
        net.advance(3_000 * SECOND);
    }
    // All vote for view 16 or later (replicas 1-3 for view 17, while
    // replica 0, the primary of view 16, heard no vote for it and waits).
    for r in 0..4 {
        assert_eq!(net.replicas[r].view(), 0, "replica {r}");
        let target = net.replicas[r].changing_to();
        assert!(target >= Some(16), "replica {r} votes for {target:?}");
    }
    assert!((1..4).all(|r| net.replicas[r].changing_to() >= Some(17)));

    // The network heals: everything is delivered from now on.
    net.drop_rule = None;
    for _ in 0..40 {
        net.advance(3_000 * SECOND);
    }
    let targets: Vec<_> = (0..4).map(|r| net.replicas[r].changing_to()).collect();
    let views: Vec<_> = (0..4).map(|r| net.replicas[r].view()).collect();
    for r in 0..4 {
        assert_eq!(
            net.executed_requests(r),
            vec![1],
            "replica {r}: healed for long, yet views {views:?}, voting for {targets:?}, \
             and votes dropped as too far ahead: {:?}",
            (0..4)
                .map(|r| net.replicas[r].stats().out_of_window)
                .collect::<Vec<_>>()
        );
    }
}

/// A correct replica cut off while the others went through more than 4n
/// views comes back while they are changing views again: they answer its
/// status with their votes (a replica changing views does not resend its
/// last new-view), and it drops every such vote as more than 4n views
/// ahead of the view it works in. With one faulty replica silent, the two
/// others wait for a third vote for good (their votes for view 1 and the
/// like, its own, are stale to them), though a third correct replica is
/// there to give it. The returning replica must be able to join them.
#[test]
fn a_replica_back_from_a_partition_far_behind_joins_the_view_change_of_the_others() {
    // 1. n = 4. Replica 3 is cut off. Every pre-prepare is lost, so the
    //    others (0, 1, 2) suspect primary after primary and enter view
    //    after view (those of replica 3 time out), past view 20.
    // 2. The primary of that view turns faulty and falls silent; the client
    //    keeps retransmitting its batch: the two other replicas time out,
    //    vote for the next view, and wait for a third vote.
    // 3. Replica 3 comes back (still in view 0) and hears of the batch too.
    // 4. Expected: the two and replica 3 form a quorum of the next views
    //    and the batch executes at all three.
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    let batch = client_batch(&client, 0, 1);
    net.down.insert(3);
    net.drop_rule = Some(Box::new(|_, _, m| {
        matches!(m, ReplicaMessage::PrePrepare(_))
    }));
    net.broadcast_client(&batch);
    for _ in 0..200 {
        // The client retransmits now and then.
        net.broadcast_client(&batch);
        net.advance(3_000 * SECOND);
        let live = [0, 1, 2].map(|r| &net.replicas[r]);
        if live
            .iter()
            .all(|r| r.view() >= 20 && r.changing_to().is_none())
        {
            break;
        }
    }
    let view = net.replicas[0].view();
    assert!(view >= 20, "the others reached view {view}");
    assert_eq!(net.replicas[3].view(), 0);

    let faulty = (view % 4) as ReplicaId;
    assert_ne!(faulty, 3);
    let others: Vec<ReplicaId> = (0..3).filter(|r| *r != faulty).collect();
    net.down.insert(faulty);
    net.drop_rule = None;
    for _ in 0..5 {
        net.broadcast_client(&batch);
        net.advance(3_000 * SECOND);
    }
    for &r in &others {
        assert!(
            net.replicas[r as usize].changing_to().is_some(),
            "replica {r} changes views"
        );
    }

    net.down.remove(&3);
    net.broadcast_client(&batch);
    for _ in 0..40 {
        net.broadcast_client(&batch);
        net.advance(3_000 * SECOND);
    }
    let views: Vec<_> = (0..4)
        .map(|r| (net.replicas[r].view(), net.replicas[r].changing_to()))
        .collect();
    for r in others.into_iter().chain([3]) {
        assert_eq!(
            net.executed_requests(r as usize),
            vec![1],
            "replica {r}: (view, voting for) of each: {views:?}; votes replica 3 dropped as too \
             far ahead: {}",
            net.replicas[3].stats().out_of_window
        );
    }
}

/// The runtime refuses to start unless the largest new-view a quorum of
/// well-formed view-changes can make fits a frame, and a frame too large
/// is refused by the transport (not sent). But a view-change is taken with
/// any number of entries in its checkpoint proof (at sequence number 0 not
/// even checked) and of prepares in its certificates, so one faulty
/// replica's vote can be as large as a frame: the new primary takes it as
/// one of its quorum, and the new-view it builds from it cannot be sent.
/// The faulty replica does so for every view (it may send its votes ahead),
/// so no view change ever completes. A new-view a correct primary builds
/// must fit a frame, whatever a faulty vote carries.
#[test]
fn a_faulty_vote_as_large_as_a_frame_does_not_make_the_new_view_too_large_to_send() {
    // 1. n = 4, replica 0 faulty: it sends replica 1 (the primary of view
    //    1) a signed view-change for view 1 with stable checkpoint 0 and a
    //    "proof" of junk checkpoints filling a frame.
    // 2. Replica 2 votes for view 1 (empty, well-formed).
    // 3. Replica 1 joins (f+1 votes) and, with its own vote, has a quorum:
    //    it builds and broadcasts the new-view.
    // 4. Expected: that new-view fits a frame (or the vote was refused and
    //    the new-view waits for a well-formed quorum).
    let (cluster, secrets) = cluster(4);
    let config = small();
    let max_frame = crate::transport::TransportConfig::default().max_frame;
    assert!(config.largest_certificate_bytes(&cluster) <= max_frame as u64);
    let mut r1 = Replica::new(1, &cluster, secrets[1].clone(), config);
    let vote = |replica: ReplicaId, checkpoint_proof: Vec<Checkpoint>| {
        let body = crate::message::ViewChangeBody {
            new_view: 1,
            stable_seq: 0,
            stable_state: [0; 32],
            checkpoint_proof,
            prepared: vec![],
            replica,
        };
        let signature = secrets[replica as usize].sign(
            domain::VIEW_CHANGE,
            &crate::message::view_change_bytes(&body),
        );
        ViewChange { body, signature }
    };
    let junk = Checkpoint {
        seq: 0,
        state: [0; 32],
        replica: 0,
        signature: crate::crypto::Signature::from_bytes([0; 64]),
    };
    let frame_of = |vc: &ViewChange| {
        cbase_core::codec::encode(&ReplicaMessage::ViewChange(vc.clone()))
            .unwrap()
            .len()
    };
    let per_entry = cbase_core::codec::encode(&junk).unwrap().len();
    let mut entries = max_frame / per_entry;
    let bloated = loop {
        let vc = vote(0, vec![junk.clone(); entries]);
        if frame_of(&vc) <= max_frame {
            break vc;
        }
        entries -= 1;
    };
    deliver(&mut r1, 0, ReplicaMessage::ViewChange(bloated));
    let out = deliver(&mut r1, 2, ReplicaMessage::ViewChange(vote(2, vec![])));
    // Replica 1 builds a new-view from the three votes (or refuses the
    // oversized one, and waits for a third well-formed vote).
    let new_view = out.iter().find_map(|o| match o {
        Output::Broadcast(m @ ReplicaMessage::NewView(_)) => Some(m),
        _ => None,
    });
    if let Some(new_view) = new_view {
        let bytes = cbase_core::codec::encode(new_view).unwrap().len();
        assert!(
            bytes <= max_frame,
            "the new-view is {bytes} bytes, over the frame limit of {max_frame}: it cannot be \
             sent"
        );
    }
}

/// A prepared certificate can be assembled by a faulty primary from the
/// prepares of backups that never saw it prepared themselves. Those
/// backups forget the proposal once a new view that does not re-issue it
/// starts (nothing they hold refers to it any more), so when a later
/// new-view re-issues it from the faulty replica's vote, no correct replica
/// has the proposal: the slot is agreed on but can never be executed, and
/// neither can anything after it. (PBFT re-issues a request only if f+1
/// view-changes show it pre-prepared, so a correct replica holds it.)
#[test]
fn a_certificate_from_a_faulty_vote_is_reissued_only_if_a_correct_replica_can_serve_its_proposal() {
    // 1. n = 4, replica 0 (primary of view 0) faulty. A client sends batch
    //    b to replicas 1-3. Replica 0 pre-prepares b at (0, 1) to replicas
    //    1 and 2 only; their prepares to each other are delayed, so neither
    //    prepares, but replica 0 gets both: a valid certificate.
    // 2. 1-3 time out and enter view 1 (no certificate among their votes):
    //    1 and 2 forget b's proposal. View 1's pre-prepares are lost.
    // 3. 1-3 time out again; replica 0 sends the primary of view 2 its
    //    vote carrying the certificate, which the new-view re-issues at 1.
    // 4. The network heals. Expected: b executes at replicas 1-3.
    let mut net = Net::new(4, small());
    let secrets = keys(4);
    let client = SecretKey::from_seed([99; 32]);
    let b = client_batch(&client, 0, 1);
    net.down.insert(0);
    net.hold_rule = Some(Box::new(
        |_, _, m| matches!(m, ReplicaMessage::Prepare(p) if p.view == 0),
    ));
    net.drop_rule = Some(Box::new(
        |_, _, m| matches!(m, ReplicaMessage::PrePrepare(p) if p.view == 1),
    ));
    net.broadcast_client(&b);
    let pp = pre_prepare(&secrets[0], 0, 1, vec![b.clone()]);
    for to in [1, 2] {
        net.input(
            to,
            Input::Replica(0, ReplicaMessage::PrePrepare(pp.clone())),
        );
    }
    net.run();
    let prepares: Vec<Prepare> = [1, 2]
        .map(|from| {
            net.held
                .iter()
                .find_map(|(f, to, m)| match m {
                    // The copy addressed to replica 0.
                    ReplicaMessage::Prepare(p)
                        if *f == from && *to == 0 && p.digest == pp.digest =>
                    {
                        Some(p.clone())
                    }
                    _ => None,
                })
                .expect("replicas 1 and 2 prepared b")
        })
        .to_vec();
    assert!(net.replicas[1].prepared.is_empty() && net.replicas[2].prepared.is_empty());

    // View 1: nothing re-issued; its primary's proposal of b is lost.
    net.advance(SECOND + 1);
    for r in 1..4 {
        assert_eq!(net.replicas[r].view(), 1, "replica {r}");
    }

    // Replica 0's vote for view 2 reaches its primary first.
    let body = crate::message::ViewChangeBody {
        new_view: 2,
        stable_seq: 0,
        stable_state: [0; 32],
        checkpoint_proof: vec![],
        prepared: vec![crate::message::PreparedProof {
            pre_prepare: pp.header(),
            prepares,
        }],
        replica: 0,
    };
    let signature = secrets[0].sign(
        domain::VIEW_CHANGE,
        &crate::message::view_change_bytes(&body),
    );
    net.input(
        2,
        Input::Replica(
            0,
            ReplicaMessage::ViewChange(ViewChange { body, signature }),
        ),
    );
    net.run();
    assert_eq!(net.replicas[2].stats().bad_certificate, 0);
    for _ in 0..3 {
        // The client retransmits.
        net.broadcast_client(&b);
        net.advance(3 * SECOND);
        if (1..4).all(|r| net.replicas[r].view() == 2) {
            break;
        }
    }
    for r in 1..4 {
        assert_eq!(net.replicas[r].view(), 2, "replica {r}");
        assert_eq!(
            net.replicas[r].log.get(&1).and_then(|slot| slot.digest()),
            Some(&pp.digest),
            "replica {r}: view 2 re-issues b's proposal at 1"
        );
    }

    // Everything is delivered from now on (but replica 0 stays silent).
    net.drop_rule = None;
    net.hold_rule = None;
    for _ in 0..30 {
        net.broadcast_client(&b);
        net.advance(5 * SECOND);
    }
    for r in 1..4 {
        assert_eq!(
            net.executed_requests(r),
            vec![1],
            "replica {r}: view {}, proposals still missing {}",
            net.replicas[r].view(),
            net.replicas[r].missing_proposals()
        );
    }
}

/// A header of (`view`, `seq`, `digest`) signed by `signer`.
fn header_by(signer: &SecretKey, view: View, seq: Seq, digest: Hash) -> PrePrepareHeader {
    let signature = signer.sign(domain::PRE_PREPARE, &pre_prepare_header(view, seq, &digest));
    PrePrepareHeader {
        view,
        seq,
        digest,
        signature,
    }
}

/// `replica`'s checkpoint vote for (`seq`, `state`).
fn checkpoint_by(secrets: &[SecretKey], replica: ReplicaId, seq: Seq, state: Hash) -> Checkpoint {
    Checkpoint {
        seq,
        state,
        replica,
        signature: secrets[replica as usize]
            .sign(domain::CHECKPOINT, &checkpoint_header(seq, &state, replica)),
    }
}

/// `replica`'s signed view-change for `new_view`.
fn view_change_by(
    secrets: &[SecretKey],
    replica: ReplicaId,
    new_view: View,
    stable: (Seq, Hash, Vec<Checkpoint>),
    prepared: Vec<crate::message::PreparedProof>,
) -> ViewChange {
    let body = crate::message::ViewChangeBody {
        new_view,
        stable_seq: stable.0,
        stable_state: stable.1,
        checkpoint_proof: stable.2,
        prepared,
        replica,
    };
    let signature = secrets[replica as usize].sign(
        domain::VIEW_CHANGE,
        &crate::message::view_change_bytes(&body),
    );
    ViewChange { body, signature }
}

/// Certificates a faulty voter may try, each refused: prepares of two
/// views or two digests mixed, a pre-prepare of one view with prepares of
/// another, one backup's prepare counted twice, the primary's prepare
/// counted, a checkpoint vote counted thrice, checkpoint votes for two
/// states. And new-views a faulty primary may try: a vote for another view
/// among its quorum, a slot given the certificate of a lower view than
/// another vote carries, slots re-issued at or below the highest stable
/// checkpoint. The honest new-views are taken.
#[test]
fn certificates_mixing_views_digests_or_signers_and_new_views_bending_the_plan_are_refused() {
    // Votes for view 2 delivered to replica 2 (its primary); new-views for
    // view 2 delivered to replica 0, one after the other.
    let (cluster, secrets) = cluster(4);
    let (a, b, state) = ([0xa; 32], [0xb; 32], [0x5; 32]);
    let prep = |replica: ReplicaId, view: View, digest: Hash| {
        signed_prepare(&secrets[replica as usize], replica, view, 1, digest)
    };
    let cert = |header: PrePrepareHeader, prepares: Vec<Prepare>| crate::message::PreparedProof {
        pre_prepare: header,
        prepares,
    };
    let at0 = header_by(&secrets[0], 0, 1, a);
    let at1 = header_by(&secrets[1], 1, 1, b);
    let none = || (0, [0; 32], vec![]);
    let bad_votes = [
        // Prepares of views 0 and 1 for a pre-prepare of view 0.
        (none(), vec![cert(at0, vec![prep(2, 0, a), prep(3, 1, a)])]),
        // Prepares of two digests.
        (none(), vec![cert(at0, vec![prep(2, 0, a), prep(3, 0, b)])]),
        // A pre-prepare of view 1 with prepares of view 0.
        (
            none(),
            vec![cert(
                header_by(&secrets[1], 1, 1, a),
                vec![prep(2, 0, a), prep(3, 0, a)],
            )],
        ),
        // One backup's prepare twice.
        (none(), vec![cert(at0, vec![prep(2, 0, a), prep(2, 0, a)])]),
        // The primary's own prepare counted.
        (none(), vec![cert(at0, vec![prep(0, 0, a), prep(2, 0, a)])]),
        // One checkpoint vote three times.
        (
            (4, state, vec![checkpoint_by(&secrets, 3, 4, state); 3]),
            vec![],
        ),
        // Three votes, two states.
        (
            (
                4,
                state,
                vec![
                    checkpoint_by(&secrets, 1, 4, state),
                    checkpoint_by(&secrets, 3, 4, state),
                    checkpoint_by(&secrets, 0, 4, [0x6; 32]),
                ],
            ),
            vec![],
        ),
    ];
    let mut r2 = Replica::new(2, &cluster, secrets[2].clone(), small());
    for (i, (stable, prepared)) in bad_votes.into_iter().enumerate() {
        let vote = view_change_by(&secrets, 3, 2, stable, prepared);
        deliver(&mut r2, 3, ReplicaMessage::ViewChange(vote));
        assert_eq!(r2.stats().bad_certificate, i as u64 + 1, "vote {i}");
    }

    // Replica 1 prepared a in view 0, replica 2 prepared b at the same
    // number in view 1; replica 3 has a stable checkpoint at 4 or not.
    let in_view0 = cert(at0, vec![prep(2, 0, a), prep(3, 0, a)]);
    let in_view1 = cert(at1, vec![prep(2, 1, b), prep(3, 1, b)]);
    let proof = [1, 2, 3]
        .map(|r| checkpoint_by(&secrets, r, 4, state))
        .to_vec();
    let v1 = view_change_by(&secrets, 1, 2, none(), vec![in_view0.clone()]);
    let v2 = view_change_by(&secrets, 2, 2, none(), vec![in_view1]);
    let v3 = view_change_by(&secrets, 3, 2, none(), vec![]);
    let v3_stable = view_change_by(&secrets, 3, 2, (4, state, proof), vec![]);
    let v3_for_1 = view_change_by(&secrets, 3, 1, none(), vec![]);
    let headers = |digests: &[(Seq, Hash)]| {
        digests
            .iter()
            .map(|(seq, digest)| header_by(&secrets[2], 2, *seq, *digest))
            .collect::<Vec<_>>()
    };
    let null = *crate::protocol::proposals::NULL_DIGEST;
    let bad_new_views = [
        // A vote for view 1 among the quorum.
        (vec![v1.clone(), v2.clone(), v3_for_1], headers(&[(1, b)])),
        // The lower view's certificate.
        (vec![v1.clone(), v2.clone(), v3.clone()], headers(&[(1, a)])),
        // Numbers at and below the stable checkpoint 4 re-issued.
        (
            vec![v1.clone(), v2.clone(), v3_stable.clone()],
            headers(&[(1, null), (2, null), (3, null), (4, null)]),
        ),
        (
            vec![v1.clone(), v2.clone(), v3_stable.clone()],
            headers(&[(4, null)]),
        ),
    ];
    let mut r0 = Replica::new(0, &cluster, secrets[0].clone(), small());
    for (i, (view_changes, pre_prepares)) in bad_new_views.into_iter().enumerate() {
        let new_view = crate::message::NewView {
            view: 2,
            view_changes,
            pre_prepares,
        };
        deliver(&mut r0, 2, ReplicaMessage::NewView(new_view));
        assert_eq!(r0.stats().bad_certificate, i as u64 + 1, "new-view {i}");
        assert_eq!(r0.view(), 0);
    }
    let honest = crate::message::NewView {
        view: 2,
        view_changes: vec![v1.clone(), v2.clone(), v3],
        pre_prepares: headers(&[(1, b)]),
    };
    deliver(&mut r0, 2, ReplicaMessage::NewView(honest));
    assert_eq!(r0.view(), 2);
    // Above the stable checkpoint, nothing to re-issue: a new-view without
    // headers, and the replica starts from checkpoint 4.
    let mut r0 = Replica::new(0, &cluster, secrets[0].clone(), small());
    let honest = crate::message::NewView {
        view: 2,
        view_changes: vec![v1, v2, v3_stable],
        pre_prepares: vec![],
    };
    deliver(&mut r0, 2, ReplicaMessage::NewView(honest));
    assert_eq!((r0.view(), r0.low_watermark()), (2, 4));
}

/// A replica cut off through view 1 hears view 2's votes (pre-prepare,
/// prepares, commits) before view 2's new-view: it drops them as for a
/// view it cannot enter next, then catches up from the new-view the others
/// resend. Replayed new-views and view-changes of view 1 then change
/// nothing anywhere, and the cluster goes on in one order.
#[test]
fn a_replica_that_missed_a_view_hears_the_next_one_first_and_old_votes_replayed_change_nothing() {
    // 1. n = 4, replica 3 cut off. Request 1's pre-prepare in view 0 is
    //    lost: view 1 starts (new-view and votes recorded). Request 1's
    //    pre-prepare in view 1 is lost too: view 2 starts, and executes it.
    // 2. View 2's messages reach replica 3 first, then the partition heals.
    // 3. View 1's new-view and view-changes are replayed to everyone.
    // 4. Expected: 3 enters view 2 and executes request 1; nobody leaves
    //    view 2; request 2 executes everywhere in one order.
    use std::cell::RefCell;
    use std::rc::Rc;
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    let seen: Rc<RefCell<Vec<(ReplicaId, ReplicaId, ReplicaMessage)>>> = Rc::default();
    let record = Rc::clone(&seen);
    let cut_off = Rc::new(RefCell::new(true));
    let cut = Rc::clone(&cut_off);
    net.drop_rule = Some(Box::new(move |from, to, m| {
        record.borrow_mut().push((from, to, m.clone()));
        let lost = matches!(m, ReplicaMessage::PrePrepare(p) if p.view < 2);
        lost || (*cut.borrow() && (from == 3 || to == 3))
    }));
    for _ in 0..20 {
        // The client retransmits.
        net.broadcast_client(&client_batch(&client, 0, 1));
        net.advance(SECOND / 2);
        if net.replicas[0].view() == 2 && net.executed_requests(0) == vec![1] {
            break;
        }
    }
    for r in 0..3 {
        assert_eq!(net.replicas[r].view(), 2, "replica {r}");
        assert_eq!(net.executed_requests(r), vec![1], "replica {r}");
    }
    assert_eq!(net.replicas[3].view(), 0);

    // View 2's normal-case messages first (to replica 3, as sent to 0).
    let view2: Vec<ReplicaMessage> = seen
        .borrow()
        .iter()
        .filter(|(_, to, m)| {
            *to == 0
                && match m {
                    ReplicaMessage::PrePrepare(p) => p.view == 2,
                    ReplicaMessage::Prepare(p) => p.view == 2,
                    ReplicaMessage::Commit(c) => c.view == 2,
                    _ => false,
                }
        })
        .map(|(_, _, m)| m.clone())
        .collect();
    assert!(!view2.is_empty());
    *cut_off.borrow_mut() = false;
    for m in view2 {
        let from = match &m {
            ReplicaMessage::Prepare(p) => p.replica,
            ReplicaMessage::Commit(c) => c.replica,
            _ => 2,
        };
        net.input(3, Input::Replica(from, m));
    }
    net.run();
    assert_eq!(
        net.replicas[3].view(),
        0,
        "nothing of view 2 is taken before its new-view"
    );
    for _ in 0..10 {
        net.advance(SECOND / 2);
    }
    assert_eq!(net.replicas[3].view(), 2);
    assert_eq!(net.executed_requests(3), vec![1]);

    // View 1's new-view and view-changes, replayed by their senders.
    let view1: Vec<(ReplicaId, ReplicaMessage)> = seen
        .borrow()
        .iter()
        .filter(|(_, to, m)| {
            *to == 0 && matches!(m, ReplicaMessage::NewView(nv) if nv.view == 1)
                || *to == 2 && matches!(m, ReplicaMessage::ViewChange(vc) if vc.body.new_view == 1)
        })
        .map(|(from, _, m)| (*from, m.clone()))
        .collect();
    assert!(
        view1
            .iter()
            .any(|(_, m)| matches!(m, ReplicaMessage::NewView(_)))
    );
    let stale: Vec<u64> = (0..4).map(|r| net.replicas[r].stats().stale).collect();
    for to in 0..4 {
        for (from, m) in &view1 {
            if *from != to {
                net.input(to, Input::Replica(*from, m.clone()));
            }
        }
    }
    net.run();
    for (r, before) in stale.iter().enumerate() {
        assert!(
            net.replicas[r].stats().stale > *before,
            "replica {r} dropped them as stale"
        );
    }
    net.broadcast_client(&client_batch(&client, 0, 2));
    for _ in 0..4 {
        net.advance(SECOND / 2);
    }
    for r in 0..4 {
        assert_eq!(
            (net.replicas[r].view(), net.replicas[r].changing_to()),
            (2, None),
            "replica {r}"
        );
        assert_eq!(net.executed_requests(r), vec![1, 2], "replica {r}");
    }
}

/// Messages for the next view are held up to a count per sender, three
/// times the window (a pre-prepare, a prepare and a commit per slot), not
/// bytes: the primary of the next view, if faulty, fills its whole share
/// with pre-prepares of the largest size, all for one slot (only one of
/// which could ever count), and they stay held for as long as the current
/// view lasts. At the defaults (a window of 512, proposals of 1 MiB) that
/// is 1.5 GiB at every correct replica, from one faulty replica and no view
/// change at all: three times what even a window of honest proposals
/// takes. At most one pre-prepare per slot (a window's worth of proposal
/// bytes) must be held.
#[test]
fn a_faulty_next_primary_cannot_make_a_backup_hold_more_than_a_window_of_proposals() {
    // 1. n = 4, view 0; replica 1, the primary of view 1, is faulty.
    // 2. It sends backup 2 three windows' worth of signed pre-prepares for
    //    view 1, slot 1, each a different proposal of nearly the largest
    //    size.
    // 3. Expected: backup 2 holds at most a window of them.
    let (cluster, secrets) = cluster(4);
    let config = small();
    let window = config.window as usize;
    let mut r2 = Replica::new(2, &cluster, secrets[2].clone(), config.clone());
    let client = SecretKey::from_seed([99; 32]);
    let big = ClientBatch::sign(
        RequestBatch {
            client: client.public(),
            requests: vec![ClientRequest {
                lane: 0,
                number: 1,
                operation: vec![7; config.max_batch_bytes - 1024],
            }],
        },
        &client,
    );
    for timestamp in 0..3 * window as u64 {
        let proposal = Proposal {
            timestamp,
            batches: vec![big.clone()],
        };
        let pp = signed_pre_prepare(&secrets[1], 1, 1, proposal);
        deliver(&mut r2, 1, ReplicaMessage::PrePrepare(pp));
    }
    assert_eq!(r2.view(), 0);
    assert!(
        r2.held_messages() <= window,
        "backup 2 holds {} pre-prepares of {} bytes each for one slot of a view it is not in",
        r2.held_messages(),
        config.max_batch_bytes - 1024
    );
}

/// A faulty replica that votes for view after view (each vote signed and
/// well-formed) must not make a correct replica keep them all: its votes
/// are bounded per sender, now that no bound on how far ahead a vote may be
/// drops the votes of peers that went through many view changes.
#[test]
fn a_replica_voting_for_view_after_view_leaves_a_bounded_number_of_its_votes_held() {
    // 1. n = 4, replica 0 faulty: it sends replica 1 a signed, empty
    //    view-change for every view from 1 to 1,000, in a scattered order.
    // 2. Expected: replica 1 keeps at most two of them (its highest) and
    //    starts no view change on one replica's word.
    let (cluster, secrets) = cluster(4);
    let mut r1 = Replica::new(1, &cluster, secrets[1].clone(), small());
    for at in 0..1_000u64 {
        let view = 1 + (at * 617) % 1_000;
        let vote = view_change_by(&secrets, 0, view, (0, [0; 32], vec![]), vec![]);
        deliver(&mut r1, 0, ReplicaMessage::ViewChange(vote));
    }
    let held: Vec<View> = r1
        .view_changes
        .iter()
        .filter(|(_, votes)| votes.contains_key(&0))
        .map(|(view, _)| *view)
        .collect();
    assert!(
        held.len() <= 2,
        "replica 1 holds replica 0's votes for {held:?}"
    );
    assert!(held.contains(&1_000), "its highest vote is kept: {held:?}");
    assert_eq!(
        r1.changing_to(),
        None,
        "one replica's votes make nobody join"
    );
}

/// A correct backup keeps the proposals it sent a prepare for, but only the
/// latest n digests per sequence number: a slot that fails to prepare view
/// after view (lost prepares, no faulty replica needed) gets a fresh
/// digest from every new primary (its timestamp), so after n such views
/// the backups that prepared a faulty primary's first proposal have
/// dropped it. That primary still holds the prepared certificate it
/// assembled from their prepares, and its vote in a later view change
/// makes the new-view re-issue it: the slot is agreed on a proposal no
/// correct replica has, and the cluster stalls for good.
#[test]
fn a_certificate_re_issued_after_n_later_proposals_for_its_slot_is_still_served_by_a_backup() {
    // 1. n = 4, replica 0 faulty. A client's signed batch reaches everyone.
    //    Primary 0 proposes P at seq 1 in view 0; its pre-prepare to 3 is
    //    lost, backups 1 and 2 prepare, their prepares reach only 0: so 0
    //    alone holds a prepared certificate for P (from their prepares).
    // 2. 0 goes silent. Every prepare of views 1 to 5 is lost: views 1, 2,
    //    3 and 5 (4's primary is 0) each propose the batch at seq 1 anew
    //    with a new timestamp, backups prepare it, nothing prepares, and the
    //    view times out (the client retransmits its batch in view 5).
    //    Backups 1 and 2 have noted 5 digests at seq 1.
    //    View 6 fails alike, and entering it the backups drop P.
    // 3. In view 6, 0 sends a vote for view 7 carrying its certificate for
    //    P; it is in the quorum primary 3 builds view 7 from, which
    //    re-issues P at seq 1. From view 7 on nothing is lost.
    // 4. Expected: the correct replicas execute the batch (some correct
    //    replica that prepared P still has it to serve).
    let mut net = Net::new(4, small());
    let secrets = keys(4);
    let client = SecretKey::from_seed([99; 32]);
    net.drop_rule = Some(Box::new(|from, to, m| match m {
        ReplicaMessage::PrePrepare(_) => to == 3,
        ReplicaMessage::Prepare(_) => from != 0 && to != 0,
        _ => false,
    }));
    net.broadcast_client(&client_batch(&client, 0, 1));
    let cert = net.replicas[0]
        .prepared
        .get(&1)
        .cloned()
        .expect("primary 0 prepared P from the prepares of 1 and 2");
    let p = cert.pre_prepare.digest;
    assert!(net.executed_requests(0).is_empty());
    net.down.insert(0);

    // Views 1 to 5: every prepare is lost.
    net.drop_rule = Some(Box::new(|_, _, m| matches!(m, ReplicaMessage::Prepare(_))));
    for _ in 0..2_000 {
        if (1..4).all(|r| net.replicas[r].view() == 5 && net.replicas[r].changing_to().is_none()) {
            break;
        }
        net.advance(SECOND / 2);
    }
    for r in 1..4 {
        assert_eq!(net.replicas[r].view(), 5, "replica {r}");
        assert!(net.executed_requests(r).is_empty(), "replica {r}");
    }
    // The client retransmits: primary 1 proposes the batch again.
    net.broadcast_client(&client_batch(&client, 0, 1));
    // View 5 fails too; the replicas enter view 6, which also lacks P.
    for _ in 0..2_000 {
        if (1..4).all(|r| net.replicas[r].view() == 6 && net.replicas[r].changing_to().is_none()) {
            break;
        }
        net.advance(SECOND / 2);
    }
    for r in 1..4 {
        assert_eq!(net.replicas[r].view(), 6, "replica {r}");
        assert!(net.executed_requests(r).is_empty(), "replica {r}");
    }
    // Backups 1 and 2 still note P, however many views proposed the slot
    // anew since: only executing the slot makes it forgettable.
    for r in [1, 2] {
        let noted = net.replicas[r]
            .pre_prepared
            .get(&1)
            .cloned()
            .unwrap_or_default();
        assert!(
            noted.iter().any(|(_, d)| *d == p),
            "replica {r} forgot P; it notes views {:?}",
            noted.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        );
    }

    // Faulty 0 votes for view 7 with its certificate.
    let body = crate::message::ViewChangeBody {
        new_view: 7,
        stable_seq: 0,
        stable_state: net.replicas[1].stable_state,
        checkpoint_proof: Vec::new(),
        prepared: vec![cert],
        replica: 0,
    };
    let signature = secrets[0].sign(
        domain::VIEW_CHANGE,
        &crate::message::view_change_bytes(&body),
    );
    let vote = crate::message::ViewChange { body, signature };
    for r in 1..4 {
        net.input(
            r,
            Input::Replica(0, ReplicaMessage::ViewChange(vote.clone())),
        );
    }
    net.run();
    // Prepares of view 6 and below stay lost; from view 7 on nothing is.
    net.drop_rule = Some(Box::new(
        |_, _, m| matches!(m, ReplicaMessage::Prepare(p) if p.view < 7),
    ));
    for _ in 0..400 {
        net.advance(SECOND / 2);
    }
    let views: Vec<_> = (1..4).map(|r| net.replicas[r].view()).collect();
    let known: Vec<_> = (1..4)
        .map(|r| net.replicas[r].proposals.get(1, &p).is_some())
        .collect();
    let waiting: Vec<_> = (1..4)
        .map(|r| net.replicas[r].proposals.is_missing(1, &p))
        .collect();
    for r in 1..4 {
        assert_eq!(
            net.executed_requests(r),
            vec![1],
            "replica {r}: views {views:?}; P known at replicas 1-3: {known:?}, \
             fetched in vain: {waiting:?}; views entered: {:?}",
            net.views_entered[r]
        );
    }
}

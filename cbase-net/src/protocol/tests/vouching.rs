//! Unsigned client batches: the schedules a faulty client or primary could
//! use to slip in a request, stall a sequence number, or depose a correct
//! primary (see `protocol::vouching`).

use super::*;

fn unsigned(client: &SecretKey, lane: u32, number: u64) -> ClientBatch {
    ClientBatch::unsigned(RequestBatch {
        client: client.public(),
        requests: vec![ClientRequest {
            lane,
            number,
            operation: vec![number as u8],
        }],
    })
}

fn prepares_sent(out: &[Output]) -> usize {
    out.iter()
        .filter(|o| matches!(o, Output::Broadcast(ReplicaMessage::Prepare(_))))
        .count()
}

#[test]
fn an_unsigned_batch_every_replica_received_is_proposed_once_2f_backups_have_it() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    let batch = unsigned(&client, 0, 1);
    // The primary alone has it: it holds it, proposes nothing.
    net.input(0, Input::Client(batch.clone()));
    net.run();
    assert_eq!(net.replicas[0].stats().proposals, 0);
    // One backup says it has it: still not enough (2f = 2).
    net.input(1, Input::Client(batch.clone()));
    net.run();
    assert_eq!(net.replicas[0].stats().proposals, 0);
    net.input(2, Input::Client(batch.clone()));
    net.run();
    assert_eq!(net.replicas[0].stats().proposals, 1);
    net.input(3, Input::Client(batch));
    net.run();
    for replica in 0..4 {
        assert_eq!(net.executed_requests(replica), vec![1], "replica {replica}");
    }
    // Backups that had it from the client did not wait for vouchers; the
    // last one got the pre-prepare first and waited for them.
    for replica in 1..3 {
        assert_eq!(net.replicas[replica].stats().awaited_vouchers, 0);
    }
    assert_eq!(net.replicas[3].stats().awaited_vouchers, 1);
}

#[test]
fn a_backup_the_client_skipped_prepares_once_f_plus_1_replicas_vouch() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    let batch = unsigned(&client, 0, 1);
    for replica in 0..3 {
        net.input(replica, Input::Client(batch.clone()));
    }
    net.run();
    for replica in 0..4 {
        assert_eq!(net.executed_requests(replica), vec![1], "replica {replica}");
    }
    assert_eq!(net.replicas[3].stats().awaited_vouchers, 1);
    // It prepared too (its vote came after the primary had prepared on
    // the others', so the primary counted it late and did not keep it).
    assert!(net.replicas[3].log[&1].prepares.contains_key(&3));
    assert_eq!(net.replicas[0].stats().late_prepares, 1);
}

#[test]
fn a_batch_sent_to_too_few_replicas_is_never_proposed_and_deposes_no_one() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    // A faulty client: the primary and one backup only.
    let batch = unsigned(&client, 0, 1);
    net.input(0, Input::Client(batch.clone()));
    net.input(1, Input::Client(batch));
    net.run();
    for _ in 0..20 {
        net.advance(SECOND);
    }
    assert_eq!(net.replicas[0].stats().proposals, 0);
    for replica in 0..4 {
        assert!(net.views_entered[replica].is_empty(), "replica {replica}");
        assert_eq!(net.replicas[replica].stats().view_changes_started, 0);
    }
    // The same requests, retransmitted signed, go through.
    net.broadcast_client(&client_batch(&client, 0, 1));
    for replica in 0..4 {
        assert_eq!(net.executed_requests(replica), vec![1], "replica {replica}");
    }
}

#[test]
fn a_faulty_primary_cannot_get_an_unsigned_batch_no_client_sent_prepared() {
    let (mut r, secrets) = backup();
    let client = SecretKey::from_seed([99; 32]);
    let forged = pre_prepare(&secrets[0], 0, 1, vec![unsigned(&client, 0, 1)]);
    let digest = forged.digest;
    let out = deliver(&mut r, 0, ReplicaMessage::PrePrepare(forged));
    assert_eq!(prepares_sent(&out), 0, "the primary alone is not f+1");
    assert_eq!(r.stats().awaited_vouchers, 1);
    // A second replica preparing the same digest makes f+1 vouchers: one
    // of them is correct and had the batch from its client.
    let out = deliver(
        &mut r,
        2,
        ReplicaMessage::Prepare(prepare(&secrets[2], 2, 1, digest)),
    );
    assert_eq!(prepares_sent(&out), 1);
}

#[test]
fn a_batch_arriving_after_its_pre_prepare_releases_the_prepare() {
    let (mut r, secrets) = backup();
    let client = SecretKey::from_seed([99; 32]);
    let batch = unsigned(&client, 0, 1);
    let out = deliver(
        &mut r,
        0,
        ReplicaMessage::PrePrepare(pre_prepare(&secrets[0], 0, 1, vec![batch.clone()])),
    );
    assert_eq!(prepares_sent(&out), 0);
    let mut out = Vec::new();
    r.handle(1, Input::Client(batch.clone()), &mut out);
    assert_eq!(prepares_sent(&out), 1);
    assert!(out.contains(&Output::Send(0, ReplicaMessage::Have(vec![batch.digest()]))));
    // And only once: the prepare is not sent again on a retransmission.
    let mut out = Vec::new();
    r.handle(1, Input::Client(batch), &mut out);
    assert_eq!(prepares_sent(&out), 0);
}

#[test]
fn an_unsigned_batch_relayed_by_a_peer_is_dropped() {
    let (cluster, secrets) = cluster(4);
    let mut primary = Replica::new(0, &cluster, secrets[0].clone(), small());
    let client = SecretKey::from_seed([99; 32]);
    let batch = unsigned(&client, 0, 1);
    let mut out = Vec::new();
    primary.handle(
        1,
        Input::Replica(1, ReplicaMessage::Forward(batch.clone())),
        &mut out,
    );
    // Even with 2f haves, a relayed copy proves nothing.
    primary.handle(
        1,
        Input::Replica(1, ReplicaMessage::Have(vec![batch.digest()])),
        &mut out,
    );
    primary.handle(
        1,
        Input::Replica(2, ReplicaMessage::Have(vec![batch.digest()])),
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(primary.stats().relayed_unsigned, 1);
    // From the client itself, with the haves already in: proposed at once.
    primary.handle(1, Input::Client(batch), &mut out);
    assert_eq!(primary.stats().proposals, 1);
}

#[test]
fn one_backup_repeating_its_have_counts_once() {
    let (cluster, secrets) = cluster(4);
    let mut primary = Replica::new(0, &cluster, secrets[0].clone(), small());
    let client = SecretKey::from_seed([99; 32]);
    let batch = unsigned(&client, 0, 1);
    let mut out = Vec::new();
    primary.handle(1, Input::Client(batch.clone()), &mut out);
    for _ in 0..5 {
        primary.handle(
            1,
            Input::Replica(1, ReplicaMessage::Have(vec![batch.digest()])),
            &mut out,
        );
    }
    assert_eq!(primary.stats().proposals, 0);
    primary.handle(
        1,
        Input::Replica(3, ReplicaMessage::Have(vec![batch.digest()])),
        &mut out,
    );
    assert_eq!(primary.stats().proposals, 1);
}

#[test]
fn a_backup_arms_no_timer_for_an_unsigned_batch() {
    // A faulty client sending to the backups alone must not make them
    // depose a correct primary.
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    let batch = unsigned(&client, 0, 1);
    for replica in 1..4 {
        net.input(replica, Input::Client(batch.clone()));
    }
    net.run();
    for _ in 0..20 {
        net.advance(SECOND);
    }
    for replica in 0..4 {
        assert!(net.views_entered[replica].is_empty(), "replica {replica}");
    }
    // The primary had 3 haves and no batch: nothing proposed.
    assert_eq!(net.replicas[0].stats().proposals, 0);
}

#[test]
fn a_backup_lying_that_it_has_a_batch_cannot_stall_it() {
    // A faulty client sends its batch to the primary and one correct
    // backup; a faulty backup (1) claims to have it too, so the primary
    // proposes it, and then stays silent. The correct backup that had the
    // batch and the primary are f+1 vouchers: the backup the client skipped
    // prepares too, and the three correct replicas commit it.
    let mut net = Net::new(4, small());
    net.drop_rule = Some(Box::new(|from, _, _| from == 1));
    let client = SecretKey::from_seed([99; 32]);
    let batch = unsigned(&client, 0, 1);
    net.input(0, Input::Client(batch.clone()));
    net.input(
        0,
        Input::Replica(1, ReplicaMessage::Have(vec![batch.digest()])),
    );
    net.input(2, Input::Client(batch));
    net.run();
    for replica in [0, 2, 3] {
        assert_eq!(net.executed_requests(replica), vec![1], "replica {replica}");
    }
    assert_eq!(net.replicas[3].stats().awaited_vouchers, 1);
}

/// The digests of the haves in `out`, all addressed to the primary.
fn haves_sent(out: &[Output]) -> Vec<Hash> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(0, ReplicaMessage::Have(digests)) => Some(digests.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn position(out: &[Output], what: impl Fn(&Output) -> bool) -> usize {
    out.iter().position(what).expect("in the output")
}

#[test]
fn an_idle_backup_says_at_once_that_it_has_a_batch() {
    let (mut r, _) = backup();
    let batch = unsigned(&SecretKey::from_seed([99; 32]), 0, 1);
    let mut out = Vec::new();
    r.handle(1, Input::Client(batch.clone()), &mut out);
    assert_eq!(haves_sent(&out), vec![batch.digest()]);
}

#[test]
fn a_backup_with_a_proposal_in_flight_says_what_it_has_just_ahead_of_its_next_vote() {
    let (mut r, secrets) = backup();
    let client = SecretKey::from_seed([99; 32]);
    let first = unsigned(&client, 0, 1);
    let mut out = Vec::new();
    r.handle(1, Input::Client(first.clone()), &mut out);
    let proposed = pre_prepare(&secrets[0], 0, 1, vec![first]);
    let digest = proposed.digest;
    let out = deliver(&mut r, 0, ReplicaMessage::PrePrepare(proposed));
    assert_eq!(prepares_sent(&out), 1);
    // Slot 1 is open: a vote of this backup's is due there, so what it
    // receives meanwhile waits for that vote rather than taking a message
    // (and the primary's reading of one) per batch.
    let (second, third) = (unsigned(&client, 1, 1), unsigned(&client, 2, 1));
    for batch in [&second, &third] {
        let mut out = Vec::new();
        r.handle(1, Input::Client(batch.clone()), &mut out);
        assert!(haves_sent(&out).is_empty());
    }
    // Its own prepare and one more make 2f: the commit vote carries both,
    // the haves first, so the primary counts them before the vote that may
    // free its pipeline for them.
    let out = deliver(
        &mut r,
        2,
        ReplicaMessage::Prepare(prepare(&secrets[2], 2, 1, digest)),
    );
    assert_eq!(haves_sent(&out), vec![second.digest(), third.digest()]);
    let have = position(&out, |o| {
        matches!(o, Output::Send(0, ReplicaMessage::Have(_)))
    });
    let commit = position(&out, |o| {
        matches!(o, Output::Broadcast(ReplicaMessage::Commit(_)))
    });
    assert!(have < commit);
    // Slot 1 done, nothing is due: the next batch is told at once.
    for from in [0, 2] {
        deliver(
            &mut r,
            from,
            ReplicaMessage::Commit(Commit {
                view: 0,
                seq: 1,
                digest,
                replica: from,
            }),
        );
    }
    assert_eq!(r.delivered(), 1);
    let fourth = unsigned(&client, 3, 1);
    let mut out = Vec::new();
    r.handle(1, Input::Client(fourth.clone()), &mut out);
    assert_eq!(haves_sent(&out), vec![fourth.digest()]);
}

#[test]
fn haves_held_for_a_vote_that_does_not_come_leave_at_the_next_tick() {
    let (mut r, secrets) = backup();
    let client = SecretKey::from_seed([99; 32]);
    // A proposal whose batch never reached this backup: it waits for
    // vouchers that do not come, so no vote of its carries anything.
    let elsewhere = unsigned(&client, 0, 1);
    deliver(
        &mut r,
        0,
        ReplicaMessage::PrePrepare(pre_prepare(&secrets[0], 0, 1, vec![elsewhere])),
    );
    let batch = unsigned(&client, 1, 1);
    let mut out = Vec::new();
    r.handle(1, Input::Client(batch.clone()), &mut out);
    assert!(haves_sent(&out).is_empty());
    assert_eq!(haves_sent(&tick(&mut r, 2)), vec![batch.digest()]);
}

#[test]
fn batches_arriving_while_a_proposal_is_in_flight_go_into_one_proposal_after_it() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    // Commits held: slot 1 stays open at every backup.
    net.hold_rule = Some(Box::new(|_, _, m| matches!(m, ReplicaMessage::Commit(_))));
    net.broadcast_client(&unsigned(&client, 0, 1));
    assert_eq!(net.replicas[0].stats().proposals, 1);
    for lane in 1..6 {
        net.broadcast_client(&unsigned(&client, lane, 1));
    }
    // The backups said nothing yet, so the primary held them.
    assert_eq!(net.replicas[0].stats().proposals, 1);
    net.hold_rule = None;
    net.release(|_, _, _| true);
    assert_eq!(net.replicas[0].stats().proposals, 2);
    for replica in 0..4 {
        assert_eq!(
            net.executed_requests(replica),
            vec![1; 6],
            "replica {replica}"
        );
    }
}

#[test]
fn haves_held_when_a_backup_stops_taking_part_in_the_view_were_told_first() {
    // Schedule (n = 4, f = 1): backup 1 has slot 1 open (its prepare waits
    // for vouchers) and a signed request it watches the primary for. Half
    // a timeout later an unsigned batch X arrives: its have is held for a
    // vote or the next tick. That tick finds the request overdue and starts
    // a view change, and the haves, held while not in the normal case, are
    // never sent. If the others do not follow (the primary is correct and
    // only backup 1's copy of its pre-prepare was slow), the primary goes
    // on in view 0 without backup 1's have of X: had X reached only
    // backups 1 and 2 besides the primary, it is never proposed (only the
    // client's signed retransmission orders it). The old code told the
    // primary when X arrived.
    let (mut r, secrets) = backup();
    let client = SecretKey::from_seed([99; 32]);
    let elsewhere = unsigned(&client, 0, 1);
    deliver(
        &mut r,
        0,
        ReplicaMessage::PrePrepare(pre_prepare(&secrets[0], 0, 1, vec![elsewhere])),
    );
    let mut sent = Vec::new();
    r.handle(1, Input::Client(client_batch(&client, 9, 1)), &mut sent);
    sent.extend(tick(&mut r, SECOND / 2));
    let x = unsigned(&client, 1, 1);
    r.handle(SECOND / 2 + 1, Input::Client(x.clone()), &mut sent);
    sent.extend(tick(&mut r, 2 * SECOND));
    assert_eq!(r.stats().view_changes_started, 1, "the tick deposes view 0");
    assert!(
        haves_sent(&sent).contains(&x.digest()),
        "the primary of view 0 was never told of X"
    );
}

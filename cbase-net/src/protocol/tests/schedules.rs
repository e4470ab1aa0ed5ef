//! Adversarial schedules: each test replays a schedule of delays, losses or
//! Byzantine messages that once broke a protocol rule, and checks the rule.

use super::*;

fn is_view_change_for(message: &ReplicaMessage, view: View) -> bool {
    matches!(message, ReplicaMessage::ViewChange(vc) if vc.body.new_view == view)
}

/// Every two replicas that executed a sequence number executed the same batch there.
fn assert_one_order(net: &Net) {
    let mut first: BTreeMap<Seq, (usize, Hash)> = BTreeMap::new();
    for (replica, executed) in net.executed.iter().enumerate() {
        for committed in executed {
            match first.get(&committed.seq) {
                Some((other, digest)) => assert_eq!(
                    *digest, committed.digest,
                    "replicas {other} and {replica} executed different batches at {}",
                    committed.seq
                ),
                None => {
                    first.insert(committed.seq, (replica, committed.digest));
                }
            }
        }
    }
}

/// Defect: a replica that voted for view 2 still entered view 1 when its
/// new-view arrived late, and committed there, while the primary of view 2
/// built its new-view from view-changes sent before that commit, and reused
/// the sequence number. Only delays, no faulty replica.
#[test]
fn a_replica_that_voted_for_a_view_enters_no_view_below_it() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    let a = client_batch(&client, 0, 1);
    let b = client_batch(&client, 1, 1);

    // The primary of view 0 is silent; everything replica 1 (primary of
    // view 1) sends is delayed.
    net.drop_rule = Some(Box::new(|from, _, _| from == 0));
    net.hold_rule = Some(Box::new(|from, _, _| from == 1));
    net.broadcast_client(&a);
    net.advance(SECOND + 1);
    assert_eq!(net.replicas[1].view(), 1, "replica 1 started view 1 alone");

    // Replica 1's view-change arrives, its new-view does not: the change to
    // view 1 times out at 0, 2 and 3, which vote for view 2. Their votes to
    // replicas 1 and 2 (the primaries of views 1 and 2) are delayed.
    net.drop_rule = None;
    net.hold_rule = Some(Box::new(|from, to, m| {
        from == 1 || (to != 3 && to != 0 && is_view_change_for(m, 2))
    }));
    net.release(|from, _, m| from == 1 && is_view_change_for(m, 1));
    net.advance(2 * SECOND + 1);
    for replica in [0, 2, 3] {
        assert_eq!(
            net.replicas[replica].changing_to(),
            Some(2),
            "replica {replica}"
        );
    }

    // View 1's new-view and pre-prepare reach replicas 0 and 2 late.
    net.hold_rule = Some(Box::new(|from, to, m| {
        (from == 1 && to == 3) || (to != 3 && to != 0 && is_view_change_for(m, 2))
    }));
    net.release(|from, to, m| from == 1 && to != 3 && !is_view_change_for(m, 2));
    for replica in [0, 2] {
        assert_ne!(
            net.replicas[replica].view(),
            1,
            "replica {replica} voted for view 2 and must not enter view 1"
        );
    }

    // The votes for view 2 reach its primary; a second request follows.
    net.hold_rule = Some(Box::new(|from, to, m| {
        (from == 1 && to == 3) || (to == 1 && is_view_change_for(m, 2))
    }));
    net.release(|_, to, m| to == 2 && is_view_change_for(m, 2));
    net.broadcast_client(&b);
    assert_one_order(&net);

    // Everything is delivered: one order, and both requests executed everywhere.
    net.hold_rule = None;
    net.release(|_, _, _| true);
    for _ in 0..8 {
        net.advance(SECOND);
    }
    assert_one_order(&net);
    for replica in 0..4 {
        let mut lanes: Vec<u32> = net.executed[replica]
            .iter()
            .flat_map(|c| c.proposal.batches.iter().map(|b| b.batch.requests[0].lane))
            .collect();
        lanes.sort_unstable();
        assert_eq!(lanes, vec![0, 1], "replica {replica} executed both once");
    }
}

fn prepare_in(signer: &SecretKey, replica: ReplicaId, view: View, seq: Seq) -> Prepare {
    signed_prepare(signer, replica, view, seq, [seq as u8; 32])
}

/// Defect: pre-prepares, prepares and commits for any later view were held
/// before their signatures were checked, up to `u64::MAX`, and kept forever.
#[test]
fn a_peer_flooding_future_views_cannot_make_a_replica_hold_more_than_its_share() {
    let (mut r, secrets) = backup();
    let window = small().window as usize;
    // Far-future views: dropped at once, whatever their number.
    for view in [2, 3, 1_000, u64::MAX] {
        deliver(
            &mut r,
            2,
            ReplicaMessage::Prepare(prepare_in(&secrets[2], 2, view, 1)),
        );
        let commit = Commit {
            view,
            seq: 1,
            digest: [1; 32],
            replica: 2,
        };
        deliver(&mut r, 2, ReplicaMessage::Commit(commit));
    }
    assert_eq!(r.held_messages(), 0);
    assert_eq!(r.stats().wrong_view, 8);
    // Unsigned (forged) prepares for the next view are not held either.
    let mut forged = prepare_in(&secrets[3], 2, 1, 1);
    forged.seq = 2;
    deliver(&mut r, 2, ReplicaMessage::Prepare(forged));
    assert_eq!(r.held_messages(), 0);
    // The next view: at most a fair share per sender, however many it sends
    // (one commit per sequence number of the window: the later rounds, for
    // the same slots, are dropped).
    for round in 0..10u64 {
        for seq in 1..=window as u64 {
            let commit = Commit {
                view: 1,
                seq,
                digest: [round as u8; 32],
                replica: 2,
            };
            deliver(&mut r, 2, ReplicaMessage::Commit(commit));
        }
    }
    assert_eq!(r.held_messages(), window);
    // Another sender still has its own share.
    deliver(
        &mut r,
        3,
        ReplicaMessage::Prepare(prepare_in(&secrets[3], 3, 1, 1)),
    );
    assert_eq!(r.held_messages(), window + 1);
}

/// Held messages for a view are dropped once a later view is voted for.
#[test]
fn voting_for_a_later_view_drops_what_was_held_for_an_earlier_one() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    // Replica 3 holds a commit for view 1 (the next view).
    let commit = Commit {
        view: 1,
        seq: 1,
        digest: [7; 32],
        replica: 2,
    };
    net.input(3, Input::Replica(2, ReplicaMessage::Commit(commit)));
    assert_eq!(net.replicas[3].held_messages(), 1);
    // Everyone suspects the silent primary; the primary of view 1 is down
    // too, so the change moves on to view 2.
    net.down.extend([0, 1]);
    net.broadcast_client(&client_batch(&client, 0, 1));
    net.advance(SECOND + 1);
    assert_eq!(net.replicas[3].changing_to(), Some(1));
    assert_eq!(net.replicas[3].held_messages(), 1);
    // Replica 0 comes back: the votes it missed are said again, it joins,
    // and with a quorum the change to view 1 (whose primary is down) times
    // out and moves on.
    net.down.remove(&0);
    net.advance(2 * SECOND + 1);
    assert_eq!(net.replicas[0].changing_to(), Some(1));
    net.advance(2 * SECOND + 1);
    assert!(net.replicas[3].heading_to() >= 2);
    assert_eq!(net.replicas[3].held_messages(), 0);
}

/// Defect: a view change that fewer than a quorum joined never recovered.
/// View-changes were resent only to peers changing to the same view, and
/// never on a timeout, so votes lost in a partition stayed lost.
#[test]
fn a_view_change_too_few_joined_recovers_once_the_partition_heals() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    // Replicas 2 and 3 are cut off from 0 and 1, and only they hear the
    // client: they suspect the primary, alone.
    let cut = |a: ReplicaId, b: ReplicaId| (a >= 2) != (b >= 2);
    net.drop_rule = Some(Box::new(move |from, to, _| cut(from, to)));
    for replica in [2, 3] {
        net.input(replica, Input::Client(client_batch(&client, 0, 1)));
    }
    net.run();
    net.advance(SECOND + 1);
    for replica in [2, 3] {
        assert_eq!(net.replicas[replica].changing_to(), Some(1));
    }
    net.advance(2 * SECOND + 1);
    // The partition heals; nothing else happens but time and status messages.
    net.drop_rule = None;
    for _ in 0..6 {
        net.advance(SECOND);
    }
    let view = net.replicas[0].view();
    assert!(view >= 1);
    for replica in 0..4 {
        assert_eq!(net.replicas[replica].view(), view, "replica {replica}");
        assert_eq!(net.replicas[replica].changing_to(), None);
        assert_eq!(net.executed_requests(replica), vec![1], "replica {replica}");
    }
}

/// Defect: timeouts never grew, so with every message slower than the
/// request timeout the cluster changed views forever and executed nothing
/// (weak synchrony: delays above the timeouts, but bounded).
#[test]
fn timeouts_grow_until_a_slow_network_makes_progress() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    let delay = SECOND + SECOND / 5; // above the 1 s request timeout
    // A network where every message takes `delay`: messages sent in one
    // step arrive `delay` later, in order.
    let mut in_flight: Vec<(u64, InFlight)> = Vec::new();
    let mut executed_at = None;
    for number in 1..=3u64 {
        let batch = client_batch(&client, 0, number);
        for replica in 0..4 {
            net.input(replica, Input::Client(batch.clone()));
        }
        let deadline = net.now + 600 * SECOND;
        while net.now < deadline && net.executed_requests(3).len() < number as usize {
            net.now += SECOND / 10;
            for replica in 0..4 {
                net.input(replica, Input::Tick);
            }
            let now = net.now;
            in_flight.extend(net.queue.drain(..).map(|m| (now + delay, m)));
            let (due, later): (Vec<_>, Vec<_>) =
                in_flight.into_iter().partition(|(at, _)| *at <= now);
            in_flight = later;
            for (_, (from, to, message)) in due {
                net.input(to, Input::Replica(from, message));
            }
            let now = net.now;
            in_flight.extend(net.queue.drain(..).map(|m| (now + delay, m)));
        }
        executed_at.get_or_insert(net.now);
    }
    for replica in 0..4 {
        assert_eq!(
            net.executed_requests(replica),
            vec![1, 2, 3],
            "replica {replica}"
        );
    }
    assert!(net.replicas[3].timeout_scale() > 1, "the timeouts grew");
}

/// Defect: with n = 5 and f = 1 every quorum was 2f+1 = 3, so an
/// equivocating primary could show A to {1, 2} and B to {3, 4}, add its own
/// commit to each side, and both sides executed. Quorums of
/// ceil((n+f+1)/2) = 4 always share a correct replica.
#[test]
fn an_equivocating_primary_cannot_split_five_replicas() {
    let (_, secrets) = cluster(5);
    let mut net = Net::new(5, small());
    let client = SecretKey::from_seed([99; 32]);
    net.down.insert(0); // played by hand below
    let a = client_batch(&client, 0, 1);
    let b = client_batch(&client, 1, 1);
    for (side, batch) in [([1, 2], &a), ([3, 4], &b)] {
        let pp = pre_prepare(&secrets[0], 0, 1, vec![batch.clone()]);
        for to in side {
            net.input(
                to,
                Input::Replica(0, ReplicaMessage::PrePrepare(pp.clone())),
            );
            let commit = Commit {
                view: 0,
                seq: 1,
                digest: pp.digest,
                replica: 0,
            };
            net.input(to, Input::Replica(0, ReplicaMessage::Commit(commit)));
        }
    }
    net.run();
    assert!(
        net.executed.iter().all(Vec::is_empty),
        "nothing commits on three votes"
    );
    assert_one_order(&net);
    // The backups replace the primary and agree on one order.
    net.broadcast_client(&a);
    net.broadcast_client(&b);
    for _ in 0..6 {
        net.advance(SECOND);
    }
    assert_one_order(&net);
    for replica in 1..5 {
        assert_eq!(
            net.executed_requests(replica),
            vec![1, 1],
            "replica {replica}"
        );
    }
}

/// Defect: the time an attempt was given grew with the size the first
/// chunk announced, so a faulty peer that claimed the largest state
/// accepted and then sent nothing more held every attempt it was asked for
/// max_state_bytes / min_transfer_rate (hours, by default).
#[test]
fn a_peer_announcing_a_huge_state_and_going_silent_is_replaced_in_time() {
    let config = ProtocolConfig {
        min_transfer_rate: 10_000, // bytes per second: 1 MiB would take 104 s
        ..small()
    };
    let max = config.max_state_bytes;
    let (mut r, bytes, _) = behind_checkpoint_4(64, config);
    let start = 1 + SECOND + 1;
    let out = tick(&mut r, start);
    let (liar, _) = state_request(&out).expect("a peer is asked");
    let claim = ReplicaMessage::StateReply {
        seq: 4,
        offset: 0,
        total: max,
        chunk: bytes[..1].to_vec(),
        whole: false,
    };
    let mut out = Vec::new();
    r.handle(start + 1, Input::Replica(liar, claim), &mut out);
    assert!(
        matches!(state_request(&out), Some((to, 1)) if to == liar),
        "the next chunk is asked for: {out:?}"
    );
    // It sends nothing more. What it sent allows it no more than a request
    // timeout for each chunk it is asked for.
    let mut now = start + 1;
    let mut replaced_by = None;
    while now < start + 10 * SECOND {
        now += SECOND / 10;
        if let Some((peer, 0)) = state_request(&tick(&mut r, now)) {
            replaced_by = Some(peer);
            break;
        }
    }
    let next = replaced_by.expect("the silent peer is given up on within 10 s");
    assert_ne!(next, liar);
}

/// Defect: the state-transfer timeout restarted with every chunk, so a
/// faulty peer that served one byte per timeout was asked forever.
#[test]
fn a_peer_dripping_a_state_transfer_is_replaced() {
    let config = ProtocolConfig {
        min_transfer_rate: 10_000, // bytes per second
        ..small()
    };
    let (mut r, bytes, digest) = behind_checkpoint_4(64, config);
    let mut now = 1 + SECOND + 1;
    let out = tick(&mut r, now);
    let (dripper, _) = state_request(&out).expect("a peer is asked");
    // It answers every request in time, one byte at a time.
    let mut replaced_by = None;
    for offset in 0..bytes.len() {
        now += SECOND / 2;
        let out = tick(&mut r, now);
        if let Some((peer, 0)) = state_request(&out) {
            replaced_by = Some(peer);
            break;
        }
        let mut out = Vec::new();
        r.handle(
            now,
            Input::Replica(dripper, chunk(&bytes, offset, 1)),
            &mut out,
        );
    }
    // The whole may take the request timeout plus size / rate.
    let allowed = SECOND + bytes.len() as u64 * SECOND / 10_000;
    let next = replaced_by.expect("the dripping peer is given up on");
    assert_ne!(next, dripper);
    assert!(
        now - (2 + SECOND) <= allowed + SECOND,
        "given up on in time"
    );
    // An honest peer completes it.
    let mut out = Vec::new();
    r.handle(
        now,
        Input::Replica(next, whole_state_bytes(&bytes)),
        &mut out,
    );
    let out = serve_parts(&mut r, out, &state_at_4(64));
    assert!(
        matches!(&out[..], [Output::InstallState { seq: 4, digest: d, .. }] if *d == digest),
        "{out:?}"
    );
}

/// A small valid checkpoint state in which `client`'s lane 0 executed
/// request 1, encoded, with its digest.
fn state_with(client: &SecretKey) -> (Vec<u8>, Hash) {
    use crate::checkpoint::{CheckpointState, LaneRecord};
    let state = CheckpointState {
        clock: 0,
        snapshot: cbase_core::Snapshot::from_parts(vec![(
            "t".to_owned(),
            [(vec![1u8], vec![5u8; 100])].into(),
        )]),
        clients: [(
            (client.public(), 0),
            LaneRecord {
                number: 1,
                reply: Some(vec![1]),
            },
        )]
        .into_iter()
        .collect(),
    };
    (cbase_core::codec::encode(&state).unwrap(), state.digest())
}

fn vote(secrets: &[SecretKey], voter: ReplicaId, seq: Seq, state: Hash) -> ReplicaMessage {
    let signature =
        secrets[voter as usize].sign(domain::CHECKPOINT, &checkpoint_header(seq, &state, voter));
    ReplicaMessage::Checkpoint(Checkpoint {
        seq,
        state,
        replica: voter,
        signature,
    })
}

/// Transfers `bytes` (the state at `seq`) to `r` from whichever peer it asks.
fn transfer(r: &mut Replica, now: u64, seq: Seq, bytes: &[u8], digest: Hash) {
    let out = tick(r, now);
    let (peer, _) = state_request(&out).expect("a peer is asked");
    let mut out = Vec::new();
    let state: crate::checkpoint::CheckpointState = cbase_core::codec::decode(bytes).unwrap();
    let manifest = manifest_bytes(&state);
    let reply = ReplicaMessage::StateReply {
        seq,
        offset: 0,
        total: manifest.len() as u64,
        chunk: manifest,
        whole: false,
    };
    r.handle(now, Input::Replica(peer, reply), &mut out);
    let out = serve_parts(r, out, &state);
    assert!(
        matches!(&out[..], [Output::InstallState { seq: s, .. }] if *s == seq),
        "{out:?}"
    );
    let mut out = Vec::new();
    r.handle(now, Input::StateInstalled { seq, state: digest }, &mut out);
}

/// Defect: the proof of a checkpoint installed by state transfer was rebuilt
/// from each peer's latest vote beyond the window; votes for a later
/// checkpoint that arrived during the transfer left it short of a quorum,
/// and every peer then rejected this replica's view-changes.
#[test]
fn a_checkpoint_installed_by_transfer_keeps_its_proof() {
    let (cluster, secrets) = cluster(4);
    let mut r = Replica::new(1, &cluster, secrets[1].clone(), small());
    let client = SecretKey::from_seed([9; 32]);
    let (bytes, digest) = state_with(&client);
    // A quorum votes for checkpoint 12, beyond the window (high = 8).
    for voter in [0, 2, 3] {
        deliver(&mut r, voter, vote(&secrets, voter, 12, digest));
    }
    // During the transfer, two of them already vote for checkpoint 16.
    let later = [9; 32];
    for voter in [0, 2] {
        deliver(&mut r, voter, vote(&secrets, voter, 16, later));
    }
    transfer(&mut r, 10, 12, &bytes, digest);
    assert_eq!(r.low_watermark(), 12);
    // Its view-change (it suspects the primary) convinces a peer.
    deliver(
        &mut r,
        0,
        ReplicaMessage::Forward(client_batch(&client, 1, 1)),
    );
    let mut out = Vec::new();
    r.handle(20, Input::Client(client_batch(&client, 2, 1)), &mut out);
    let out = tick(&mut r, 30 + SECOND);
    let view_change = out
        .iter()
        .find_map(|o| match o {
            Output::Broadcast(ReplicaMessage::ViewChange(vc)) => Some(vc.clone()),
            _ => None,
        })
        .expect("it starts a view change");
    let mut peer = Replica::new(2, &cluster, secrets[2].clone(), small());
    deliver(&mut peer, 1, ReplicaMessage::ViewChange(view_change));
    assert_eq!(peer.stats().bad_certificate, 0);
}

/// Defect: batches the transfer skipped over stayed in the request timers,
/// so a replica that caught up suspected a primary that had done its job,
/// alone.
#[test]
fn catching_up_by_transfer_does_not_make_a_backup_suspect_the_primary() {
    let (cluster, secrets) = cluster(4);
    let mut r = Replica::new(1, &cluster, secrets[1].clone(), small());
    let client = SecretKey::from_seed([9; 32]);
    // It heard of the client's request 1, then fell behind while the others
    // executed it.
    let mut out = Vec::new();
    r.handle(5, Input::Client(client_batch(&client, 0, 1)), &mut out);
    let (bytes, digest) = state_with(&client);
    for voter in [0, 2, 3] {
        deliver(&mut r, voter, vote(&secrets, voter, 12, digest));
    }
    transfer(&mut r, 10, 12, &bytes, digest);
    assert_eq!(r.delivered(), 12);
    for now in [SECOND, 2 * SECOND, 4 * SECOND] {
        tick(&mut r, now);
    }
    assert_eq!(
        r.changing_to(),
        None,
        "no view change over an executed request"
    );
    assert_eq!(r.stats().view_changes_started, 0);
}

/// Found by the simulation (twins-n4-three-sides, seed 595): a backup that
/// saw a batch proposed, then got it again straight from the client (so it
/// timed it without holding it in its queue), skipped its execution by a
/// state transfer and kept timing it: long after the cluster went quiet it
/// suspected a primary that had done its job and took everyone to the next
/// view.
#[test]
fn a_batch_seen_proposed_then_skipped_by_a_transfer_is_not_timed() {
    let (cluster, secrets) = cluster(4);
    let mut r = Replica::new(1, &cluster, secrets[1].clone(), small());
    let client = SecretKey::from_seed([9; 32]);
    let batch = client_batch(&client, 0, 1);
    // The primary proposes the batch; this backup sees the pre-prepare, and
    // nothing more of that sequence number (lost messages).
    let pp = pre_prepare(&secrets[0], 0, 1, vec![batch.clone()]);
    deliver(&mut r, 0, ReplicaMessage::PrePrepare(pp));
    // The client, still waiting, retransmits to every replica.
    let mut out = Vec::new();
    r.handle(5, Input::Client(batch), &mut out);
    // The others executed it and moved on; this backup catches up by a
    // transfer of checkpoint 12, whose client table has the request.
    let (bytes, digest) = state_with(&client);
    for voter in [0, 2, 3] {
        deliver(&mut r, voter, vote(&secrets, voter, 12, digest));
    }
    transfer(&mut r, 10, 12, &bytes, digest);
    assert_eq!(r.delivered(), 12);
    for now in [SECOND, 2 * SECOND, 4 * SECOND, 8 * SECOND] {
        tick(&mut r, now);
    }
    assert_eq!(
        r.changing_to(),
        None,
        "no view change over a request the transferred state executed"
    );
    assert_eq!(r.stats().view_changes_started, 0);
}

#[test]
fn a_timed_batch_ends_when_its_requests_execute_in_another_batch() {
    // Seen in a twins-n5 campaign (seed 200449): a client sent two batches
    // with the same request (lane 0, number 1); the one this backup timed
    // was never proposed again, the other executed. Timers keyed by batch
    // digest alone outlived the request and deposed one primary after
    // another.
    let (cluster, secrets) = cluster(4);
    let mut r = Replica::new(1, &cluster, secrets[1].clone(), small());
    let client = SecretKey::from_seed([9; 32]);
    let timed = client_batch(&client, 0, 1);
    let mut executed = timed.clone();
    executed.batch.requests[0].operation = vec![7];
    let executed = ClientBatch::sign(executed.batch, &client);
    assert_ne!(timed.digest(), executed.digest());
    let mut out = Vec::new();
    r.handle(5, Input::Client(timed), &mut out);
    // The primary orders the other batch, and it commits.
    let pp = pre_prepare(&secrets[0], 0, 1, vec![executed]);
    let digest = pp.digest;
    deliver(&mut r, 0, ReplicaMessage::PrePrepare(pp));
    for backup in [2, 3] {
        let p = prepare(&secrets[backup as usize], backup, 1, digest);
        deliver(&mut r, backup, ReplicaMessage::Prepare(p));
    }
    for replica in [0, 2, 3] {
        let commit = Commit {
            view: 0,
            seq: 1,
            digest,
            replica,
        };
        deliver(&mut r, replica, ReplicaMessage::Commit(commit));
    }
    assert_eq!(r.delivered(), 1);
    for now in [SECOND, 2 * SECOND, 4 * SECOND, 8 * SECOND] {
        tick(&mut r, now);
    }
    assert_eq!(
        r.changing_to(),
        None,
        "no view change over an executed request"
    );
    assert_eq!(r.stats().view_changes_started, 0);
}

/// Commits `proposal`s at sequence numbers `1..=last` at backup `r`, as the
/// primary (0) and backups 2 and 3 would.
fn commit_by_hand(r: &mut Replica, secrets: &[SecretKey], last: Seq) -> Vec<Output> {
    let client = SecretKey::from_seed([8; 32]);
    let mut out = Vec::new();
    for seq in 1..=last {
        let pp = pre_prepare(&secrets[0], 0, seq, vec![client_batch(&client, 0, seq)]);
        let digest = pp.digest;
        out.extend(deliver(r, 0, ReplicaMessage::PrePrepare(pp)));
        for backup in [2, 3] {
            let p = prepare(&secrets[backup as usize], backup, seq, digest);
            out.extend(deliver(r, backup, ReplicaMessage::Prepare(p)));
        }
        for replica in [0, 2, 3] {
            let commit = Commit {
                view: 0,
                seq,
                digest,
                replica,
            };
            out.extend(deliver(r, replica, ReplicaMessage::Commit(commit)));
        }
    }
    out
}

/// Replica `r` (1) reports a wrong digest at checkpoint 4, and replicas 0, 2
/// and 3 then vote for the right one: the right state's bytes, its digest,
/// and what `r` did on the votes.
fn quorum_disagrees_at_4(r: &mut Replica, secrets: &[SecretKey]) -> (Vec<u8>, Hash, Vec<Output>) {
    let client = SecretKey::from_seed([9; 32]);
    let (bytes, digest) = state_with(&client);
    let mut out = Vec::new();
    let wrong = Input::CheckpointTaken {
        seq: 4,
        state: [1; 32],
    };
    r.handle(2, wrong, &mut out);
    let mut out = Vec::new();
    for voter in [0, 2, 3] {
        out.extend(deliver(r, voter, vote(secrets, voter, 4, digest)));
    }
    (bytes, digest, out)
}

/// Defect: a replica that learned its state diverged from the quorum's only
/// logged it; it must fetch the certified state and execute on from it.
#[test]
fn a_replica_that_diverged_repairs_itself_and_executes_on() {
    let (cluster, secrets) = cluster(4);
    let mut r = Replica::new(1, &cluster, secrets[1].clone(), small());
    let out = commit_by_hand(&mut r, &secrets, 5);
    let executed = out
        .iter()
        .filter(|o| matches!(o, Output::Execute(_)))
        .count();
    assert_eq!(executed, 5);
    // Its state at 4 is wrong; the quorum's is right.
    let (bytes, digest, out) = quorum_disagrees_at_4(&mut r, &secrets);
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, Output::Diverged { seq: 4, .. }))
            .count(),
        1,
        "{out:?}"
    );
    // It fetches the certified state at once and installs it...
    let out = tick(&mut r, 3);
    let (peer, _) = state_request(&out).expect("a peer is asked at once");
    let mut out = Vec::new();
    let state: crate::checkpoint::CheckpointState = cbase_core::codec::decode(&bytes).unwrap();
    r.handle(4, Input::Replica(peer, whole_state(4, &state)), &mut out);
    let out = serve_parts(&mut r, out, &state);
    assert!(
        matches!(&out[..], [Output::InstallState { seq: 4, .. }]),
        "{out:?}"
    );
    // ...then executes what follows the checkpoint again, on the right state.
    let mut out = Vec::new();
    r.handle(
        5,
        Input::StateInstalled {
            seq: 4,
            state: digest,
        },
        &mut out,
    );
    let again: Vec<Seq> = out
        .iter()
        .filter_map(|o| match o {
            Output::Execute(c) => Some(c.seq),
            _ => None,
        })
        .collect();
    assert_eq!(again, vec![5]);
    assert_eq!(r.low_watermark(), 4);
    assert_eq!(r.delivered(), 5);
}

/// Defect: a forwarded batch armed the backups' request timers but was not
/// passed on to the primary, so a faulty backup forwarding client-signed
/// batches to the other backups only forced a view change every timeout.
#[test]
fn a_backup_forwarding_to_backups_only_cannot_depose_the_primary() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    for round in 1..=6u64 {
        let batch = client_batch(&client, 0, round);
        for to in [1, 3] {
            net.input(
                to,
                Input::Replica(2, ReplicaMessage::Forward(batch.clone())),
            );
        }
        net.advance(SECOND);
    }
    for replica in 0..4 {
        assert_eq!(net.replicas[replica].view(), 0, "replica {replica}");
        assert_eq!(net.replicas[replica].stats().view_changes_started, 0);
    }
    // The primary still orders what clients send it.
    net.input(0, Input::Client(client_batch(&client, 1, 1)));
    net.run();
    assert_eq!(net.executed_requests(3), vec![1]);
}

/// Defect: backups never checked the primary's timestamp, so a faulty
/// primary could push the agreed clock to `u64::MAX` and freeze it there.
#[test]
fn a_proposal_stamped_far_ahead_of_a_backups_clock_is_refused() {
    let (mut r, secrets) = backup();
    let client = SecretKey::from_seed([99; 32]);
    let stamped = |timestamp: u64, seq: Seq, number: u64| {
        let proposal = Proposal {
            timestamp,
            batches: vec![client_batch(&client, 0, number)],
        };
        let digest = proposal.digest();
        ReplicaMessage::PrePrepare(PrePrepare {
            view: 0,
            seq,
            digest,
            signature: secrets[0].sign(domain::PRE_PREPARE, &pre_prepare_header(0, seq, &digest)),
            proposal,
        })
    };
    let now = 1_000 * SECOND;
    let mut out = Vec::new();
    r.handle(now, Input::Replica(0, stamped(u64::MAX, 1, 1)), &mut out);
    r.handle(
        now,
        Input::Replica(0, stamped(now + 11 * SECOND, 1, 1)),
        &mut out,
    );
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(r.stats().bad_timestamp, 2);
    // Within the allowed skew, ahead or behind, it is prepared; further
    // behind, only once f+1 replicas vouch for it (see
    // `a_primary_that_holds_the_agreed_clock_still_is_replaced`).
    r.handle(
        now,
        Input::Replica(0, stamped(now + 9 * SECOND, 1, 1)),
        &mut out,
    );
    r.handle(
        now,
        Input::Replica(0, stamped(now - 19 * SECOND, 2, 2)),
        &mut out,
    );
    r.handle(now, Input::Replica(0, stamped(5, 3, 3)), &mut out);
    let prepared = || {
        out.iter()
            .filter(|o| matches!(o, Output::Broadcast(ReplicaMessage::Prepare(_))))
            .count()
    };
    assert_eq!(prepared(), 2);
    assert_eq!(r.stats().stale_timestamp, 1);
}

/// Defect: a backup prepared a proposal stamped any time behind its clock,
/// so a faulty primary could hold the agreed clock still for as long as it
/// stayed primary: sessions stopped idling out, and after a day every
/// client's wall-clock numbers were refused as too far ahead. Nothing
/// deposed it.
#[test]
fn a_primary_that_holds_the_agreed_clock_still_is_replaced() {
    let (_, secrets) = cluster(4);
    let mut net = Net::new(4, small());
    net.now = 10_000 * SECOND;
    let client = SecretKey::from_seed([99; 32]);
    // The primary is faulty; we play it. It stamps its proposal an hour
    // behind every backup's clock, as if time had stopped an hour ago.
    net.down.insert(0);
    let batch = client_batch(&client, 0, 1);
    let held_still = Proposal {
        timestamp: net.now - 3_600 * SECOND,
        batches: vec![batch.clone()],
    };
    let pp = signed_pre_prepare(&secrets[0], 0, 1, held_still);
    for to in 1..4 {
        net.input(
            to,
            Input::Replica(0, ReplicaMessage::PrePrepare(pp.clone())),
        );
    }
    net.broadcast_client(&batch);
    assert!(
        net.executed.iter().all(Vec::is_empty),
        "no correct backup prepares a proposal stamped that far behind its clock"
    );
    for replica in 1..4 {
        assert_eq!(net.replicas[replica].stats().stale_timestamp, 1);
    }
    // The request's timers run out, the backups replace the primary, the
    // client, unanswered, sends its request again, and the next primary
    // orders it at the time it is.
    net.advance(SECOND + 1);
    net.advance(SECOND);
    net.broadcast_client(&batch);
    for replica in 1..4 {
        assert!(net.replicas[replica].view() >= 1, "replica {replica}");
        assert_eq!(net.executed_requests(replica), vec![1], "replica {replica}");
        let stamp = net.executed[replica][0].proposal.timestamp;
        assert!(
            stamp >= 10_000 * SECOND,
            "replica {replica} executed at agreed time {stamp}, before the request was sent"
        );
    }
}

/// The rule above must not stop a pre-prepare that reaches a backup long
/// after the others prepared it (a slow link, a retransmission): the
/// primary and f prepares vouch that a correct replica found it fresh.
#[test]
fn a_pre_prepare_that_arrives_long_after_the_others_prepared_it_is_prepared_once_vouched_for() {
    let mut net = Net::new(4, small());
    net.now = 1_000 * SECOND;
    let client = SecretKey::from_seed([99; 32]);
    net.hold_rule = Some(Box::new(|_, to, message| {
        to == 3 && matches!(message, ReplicaMessage::PrePrepare(_))
    }));
    net.input(0, Input::Client(client_batch(&client, 0, 1)));
    net.run();
    for replica in 0..3 {
        assert_eq!(net.executed_requests(replica), vec![1], "replica {replica}");
    }
    assert!(net.executed[3].is_empty());
    // A minute later, the pre-prepare reaches replica 3 at last.
    net.now += 60 * SECOND;
    net.hold_rule = None;
    net.release(|_, _, _| true);
    assert_eq!(net.executed_requests(3), vec![1]);
    assert_eq!(net.replicas[3].stats().stale_timestamp, 1);
    assert_eq!(net.replicas[3].view(), 0);
}

/// Seen in review: a primary replaced before it proposed all it held kept
/// those batches pending for ever, even after the next view executed them.
#[test]
fn a_former_primary_forgets_batches_the_next_view_executed() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    net.drop_rule = Some(Box::new(|from, _, _| from == 0));
    for number in 1..=5 {
        net.broadcast_client(&client_batch(&client, 0, number));
    }
    assert!(
        net.replicas[0].pending_batches() > 0,
        "the pipeline held some back"
    );
    net.advance(SECOND + 1);
    net.drop_rule = None;
    for _ in 0..4 {
        net.advance(SECOND);
    }
    assert_eq!(net.replicas[0].view(), 1);
    assert_eq!(net.executed_requests(0), vec![1, 2, 3, 4, 5]);
    for replica in 0..4 {
        assert_eq!(
            net.replicas[replica].pending_batches(),
            0,
            "replica {replica}"
        );
    }
}

/// Seen in review: one status message makes a replica resend up to a
/// window of messages, and state requests were served without limit; a
/// peer repeating them amplified its traffic for free.
#[test]
fn repeated_status_and_state_requests_are_answered_once() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    for number in 1..=4 {
        net.input(0, Input::Client(client_batch(&client, 0, number)));
        net.run();
    }
    let behind = crate::message::Status {
        view: 0,
        changing_to: None,
        delivered: 0,
        low: 0,
        replica: 3,
        probe: None,
        echo: None,
    };
    let r = &mut net.replicas[1];
    let first = deliver(r, 3, ReplicaMessage::Status(behind.clone()));
    assert!(!first.is_empty(), "a peer that is behind gets help");
    for _ in 0..10 {
        assert!(deliver(r, 3, ReplicaMessage::Status(behind.clone())).is_empty());
    }
    // State requests: each chunk once per attempt.
    let request = ReplicaMessage::StateRequest {
        seq: 4,
        offset: 0,
        whole: false,
    };
    let served = |out: &[Output]| out.iter().any(|o| matches!(o, Output::ServeState { .. }));
    assert!(served(&deliver(r, 3, request.clone())));
    for _ in 0..10 {
        assert!(!served(&deliver(r, 3, request.clone())));
    }
    let next = ReplicaMessage::StateRequest {
        seq: 4,
        offset: 100,
        whole: false,
    };
    assert!(served(&deliver(r, 3, next)), "the next chunk is progress");
    // After a request timeout, a new attempt starts from 0 again.
    let mut out = Vec::new();
    r.handle(10 * SECOND, Input::Replica(3, request), &mut out);
    assert!(served(&out));
}

/// Defect: a state request counted as progress whenever its offset was
/// further on, whichever kind it asked for. A peer alternating between the
/// manifest and the whole state, one byte further each time, was served
/// every request, and the server encodes the whole state anew (O(state))
/// each time the kind changes: one faulty peer kept it doing that.
#[test]
fn switching_between_manifest_and_whole_state_is_a_new_attempt() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    for number in 1..=4 {
        net.input(0, Input::Client(client_batch(&client, 0, number)));
        net.run();
    }
    let r = &mut net.replicas[1];
    let request = |offset: u64, whole: bool| ReplicaMessage::StateRequest {
        seq: 4,
        offset,
        whole,
    };
    let served = |out: &[Output]| out.iter().any(|o| matches!(o, Output::ServeState { .. }));
    assert!(served(&deliver(r, 3, request(0, false))));
    for offset in 1..10 {
        assert!(
            !served(&deliver(r, 3, request(offset, true))),
            "offset {offset}"
        );
    }
    // Further on in the same kind is progress; the other kind is a new
    // attempt, after a request timeout.
    assert!(served(&deliver(r, 3, request(100, false))));
    let mut out = Vec::new();
    r.handle(10 * SECOND, Input::Replica(3, request(0, true)), &mut out);
    assert!(served(&out));
}

fn batch_of_bytes(client: &SecretKey, lane: u32, bytes: usize) -> ClientBatch {
    ClientBatch::sign(
        RequestBatch {
            client: client.public(),
            requests: vec![ClientRequest {
                lane,
                number: 1,
                operation: vec![7; bytes],
            }],
        },
        client,
    )
}

/// Defect: proposals had no byte limit, so one large request made a
/// pre-prepare larger than the transport's frame limit, which the sender
/// could never deliver: the cluster changed views over and over.
#[test]
fn proposals_are_bounded_in_bytes_and_a_request_that_cannot_fit_is_refused() {
    let mut net = Net::new(4, small());
    let limit = small().max_batch_bytes;
    let client = SecretKey::from_seed([99; 32]);
    // Too large for any proposal: refused where it arrives, never ordered.
    net.broadcast_client(&batch_of_bytes(&client, 0, limit + 1));
    assert!(net.replicas.iter().all(|r| r.stats().oversized == 1));
    net.advance(2 * SECOND);
    assert!(net.executed.iter().all(Vec::is_empty));
    assert_eq!(net.replicas[1].stats().view_changes_started, 0);
    // Batches that fit alone but not together go into separate proposals.
    net.drop_rule = Some(Box::new(|_, to, _| to != 0)); // hold back agreement
    for lane in 1..=3 {
        net.input(0, Input::Client(batch_of_bytes(&client, lane, limit / 2)));
    }
    net.drop_rule = None;
    net.advance(SECOND / 10);
    for _ in 0..4 {
        net.advance(SECOND / 10);
    }
    for replica in 0..4 {
        let sizes: Vec<usize> = net.executed[replica]
            .iter()
            .map(|c| c.proposal.batches.len())
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), 3, "replica {replica}");
        assert!(sizes.iter().all(|n| *n == 1), "one per proposal: {sizes:?}");
    }
    // A faulty primary's oversized proposal is refused by backups.
    let (mut r, secrets) = backup();
    let pp = pre_prepare(
        &secrets[0],
        0,
        1,
        vec![
            batch_of_bytes(&client, 0, limit / 2),
            batch_of_bytes(&client, 1, limit / 2),
        ],
    );
    assert!(deliver(&mut r, 0, ReplicaMessage::PrePrepare(pp)).is_empty());
    assert_eq!(r.stats().oversized, 1);
}

/// Defect (part of 8): certificates carried whole proposals, so a
/// view-change or new-view with large proposals outgrew a frame. They now
/// carry digests; a replica that lacks a proposal a new view re-issues
/// fetches it by digest, and executes it once it arrives.
#[test]
fn a_replica_fetches_a_reissued_proposal_it_never_received() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    // Replica 3 never gets the pre-prepare, and no commit gets through:
    // the batch prepares at 0, 1 and 2 only.
    net.drop_rule = Some(Box::new(|_, to, m| {
        (to == 3 && matches!(m, ReplicaMessage::PrePrepare(_)))
            || matches!(m, ReplicaMessage::Commit(_))
    }));
    net.broadcast_client(&client_batch(&client, 0, 1));
    assert!(net.executed.iter().all(Vec::is_empty));
    // The primary falls silent; view 1 re-issues the batch by digest.
    net.drop_rule = Some(Box::new(|from, to, m| {
        from == 0 || (to == 3 && matches!(m, ReplicaMessage::PrePrepare(_)))
    }));
    net.advance(SECOND + 1);
    for _ in 0..3 {
        net.advance(SECOND / 5);
    }
    for replica in 1..4 {
        assert_eq!(net.replicas[replica].view(), 1, "replica {replica}");
        assert_eq!(net.executed_requests(replica), vec![1], "replica {replica}");
        assert_eq!(net.replicas[replica].missing_proposals(), 0);
    }
    assert_one_order(&net);
}

/// A peer answering a proposal fetch with anything but the agreed proposal
/// is ignored, and a peer asking again and again is served once.
#[test]
fn proposal_fetches_are_checked_and_not_amplified() {
    let (mut r, secrets) = backup();
    let client = SecretKey::from_seed([99; 32]);
    let pp = pre_prepare(&secrets[0], 0, 1, vec![client_batch(&client, 0, 1)]);
    deliver(&mut r, 0, ReplicaMessage::PrePrepare(pp.clone()));
    let ask = ReplicaMessage::FetchProposal {
        seq: 1,
        digest: pp.digest,
    };
    let served = |out: &[Output]| {
        out.iter()
            .filter(|o| matches!(o, Output::Send(3, ReplicaMessage::ProposalBody { .. })))
            .count()
    };
    assert_eq!(served(&deliver(&mut r, 3, ask.clone())), 1);
    for _ in 0..10 {
        assert_eq!(served(&deliver(&mut r, 3, ask.clone())), 0);
    }
    // Unasked-for bodies are dropped.
    let forged = ReplicaMessage::ProposalBody {
        seq: 2,
        proposal: Proposal::null(),
    };
    assert!(deliver(&mut r, 3, forged).is_empty());
    assert_eq!(r.missing_proposals(), 0);
}

/// Certificates carry digests, so the largest new-view depends on the
/// cluster and the window only, and the defaults fit a frame with room.
#[test]
fn the_largest_certificate_fits_a_frame_at_the_defaults() {
    let config = ProtocolConfig::default();
    let frame = crate::transport::TransportConfig::default().max_frame as u64;
    let (four, _) = cluster(4);
    let (seven, _) = cluster(7);
    let small = config.largest_certificate_bytes(&four);
    let larger = config.largest_certificate_bytes(&seven);
    assert!(
        small < larger && larger < frame / 4,
        "{small} {larger} {frame}"
    );
    // A real worst case stays within the estimate: a view-change with a
    // prepared certificate for every slot of the window.
    let (keys4, secrets) = cluster(4);
    let window = small_window_certificate(&secrets, 8);
    assert!(window <= small_config_bytes(&keys4, 8), "{window}");
}

fn small_config_bytes(cluster: &ClusterConfig, window: u64) -> u64 {
    ProtocolConfig {
        window,
        ..ProtocolConfig::default()
    }
    .largest_certificate_bytes(cluster)
}

/// The encoded size of a real new-view with a quorum of view-changes, each
/// proving `window` prepared slots.
fn small_window_certificate(secrets: &[SecretKey], window: u64) -> u64 {
    let client = SecretKey::from_seed([99; 32]);
    let prepared: Vec<crate::message::PreparedProof> = (1..=window)
        .map(|seq| {
            let pp = pre_prepare(&secrets[0], 0, seq, vec![client_batch(&client, 0, seq)]);
            crate::message::PreparedProof {
                prepares: [1, 2]
                    .into_iter()
                    .map(|r| prepare(&secrets[r as usize], r, seq, pp.digest))
                    .collect(),
                pre_prepare: pp.header(),
            }
        })
        .collect();
    let view_changes: Vec<ViewChange> = (0..3u32)
        .map(|replica| {
            let body = crate::message::ViewChangeBody {
                new_view: 1,
                stable_seq: 0,
                stable_state: [0; 32],
                checkpoint_proof: Vec::new(),
                prepared: prepared.clone(),
                replica,
            };
            let signature = secrets[replica as usize].sign(
                domain::VIEW_CHANGE,
                &crate::message::view_change_bytes(&body),
            );
            ViewChange { body, signature }
        })
        .collect();
    let new_view = crate::message::NewView {
        view: 1,
        pre_prepares: prepared.iter().map(|p| p.pre_prepare).collect(),
        view_changes,
    };
    cbase_core::codec::encode(&ReplicaMessage::NewView(new_view))
        .unwrap()
        .len() as u64
}

/// Found by the simulation: a backup that missed messages (a lossy link)
/// suspected a primary that everyone else saw working, alone, and so left
/// the view for good. A backup that f+1 peers report ahead of it in its view
/// is behind, not the primary stuck: it catches up instead.
#[test]
fn a_backup_that_lags_catches_up_instead_of_suspecting() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    // Replica 3 loses every pre-prepare for a while; the client retries
    // with it too, so it waits for the request.
    net.drop_rule = Some(Box::new(|_, to, m| {
        to == 3 && matches!(m, ReplicaMessage::PrePrepare(_))
    }));
    net.broadcast_client(&client_batch(&client, 0, 1));
    for _ in 0..15 {
        net.advance(SECOND / 10);
    }
    assert_eq!(net.executed_requests(0), vec![1]);
    assert_eq!(
        net.replicas[3].stats().view_changes_started,
        0,
        "no lone suspicion"
    );
    // The link recovers: retransmission brings it up to date.
    net.drop_rule = None;
    for _ in 0..3 {
        net.advance(SECOND / 5);
    }
    assert_eq!(net.executed_requests(3), vec![1]);
    assert_eq!(net.replicas[3].changing_to(), None);
}

/// Found by the simulation (restart-then-view-change, seed 302364): replica
/// 3 missed the commits of two slots; of the replicas that sent them one had
/// crashed and one was recovering (it votes in no view it may have acted
/// in), so no retransmission could ever complete them. Replicas 0 (before
/// it crashed) and 1 had reported executing further, so replica 3 took
/// itself for merely behind at every timeout and never suspected: the
/// client waited forever. Catching up excuses one timeout per step of
/// progress, not more.
#[test]
fn a_backup_that_lags_without_progress_suspects_after_all() {
    let (cluster, secrets) = cluster(4);
    let mut r = Replica::new(3, &cluster, secrets[3].clone(), small());
    let client = SecretKey::from_seed([99; 32]);
    let mut out = Vec::new();
    r.handle(1, Input::Client(client_batch(&client, 0, 1)), &mut out);
    // Replicas 0 and 1 say they executed two slots; nothing else comes.
    for peer in [0, 1] {
        let status = crate::message::Status {
            view: 0,
            changing_to: None,
            delivered: 2,
            low: 0,
            replica: peer,
            probe: None,
            echo: None,
        };
        r.handle(
            2,
            Input::Replica(peer, ReplicaMessage::Status(status)),
            &mut out,
        );
    }
    tick(&mut r, SECOND + 3);
    assert_eq!(r.changing_to(), None, "first it takes itself for behind");
    tick(&mut r, 2 * SECOND + 3);
    assert_eq!(
        r.changing_to(),
        Some(1),
        "a whole timeout without progress: the view cannot finish what it missed"
    );
}

/// Found by the simulation: a replica that suspected the primary alone
/// stayed in its view change, executing nothing, until the next view. A
/// vote cannot be taken back, but the replica still learns what the others
/// commit in the view it voted to leave, from a quorum of their commits.
#[test]
fn a_replica_that_suspected_alone_keeps_executing_what_the_others_commit() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    // Only replica 3 hears of request 1, and its forward to the primary is lost.
    net.drop_rule = Some(Box::new(|from, to, m| {
        from == 3 && to == 0 && matches!(m, ReplicaMessage::Forward(_))
    }));
    net.input(3, Input::Client(client_batch(&client, 0, 1)));
    net.run();
    net.advance(SECOND + 1);
    assert_eq!(net.replicas[3].changing_to(), Some(1), "it suspects, alone");
    // The others go on in view 0; replica 3 executes with them.
    for lane in 1..=3 {
        net.input(0, Input::Client(client_batch(&client, lane, 1)));
        net.run();
    }
    assert_eq!(net.replicas[0].view(), 0);
    assert_eq!(net.executed_requests(3), net.executed_requests(0));
    assert_eq!(net.executed_requests(3).len(), 3);
    assert_one_order(&net);
}

/// Found by the simulation: a primary that restarted without its memory
/// proposed again at a sequence number it had used before the restart, and
/// executed its second proposal where everyone else had executed the first.
/// A restarted replica votes in no view it may have acted in.
#[test]
fn a_primary_restarted_without_memory_does_not_reuse_a_sequence_number() {
    let (cluster, secrets) = cluster(4);
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    net.input(0, Input::Client(client_batch(&client, 0, 1)));
    net.run();
    assert_eq!(net.executed_requests(3), vec![1]);
    // Replica 0, the primary, restarts with nothing.
    net.replicas[0] = Replica::restarted(0, &cluster, secrets[0].clone(), small());
    net.executed[0].clear();
    assert!(net.replicas[0].recovering());
    net.input(0, Input::Client(client_batch(&client, 1, 1)));
    net.run();
    assert_eq!(
        net.replicas[0].stats().proposals,
        0,
        "no proposal while recovering"
    );
    // The client retries with everyone; the backups replace the primary.
    net.broadcast_client(&client_batch(&client, 1, 1));
    for _ in 0..6 {
        net.advance(SECOND / 2);
    }
    assert_one_order(&net);
    for replica in 0..4 {
        assert_eq!(
            net.executed_requests(replica),
            vec![1, 1],
            "replica {replica}"
        );
    }
    // It followed the others into view 1 as a learner: it may have acted
    // there before the restart, for all it knows.
    assert_eq!(net.replicas[0].view(), 1);
    assert!(net.replicas[0].recovering());
    // The next view change takes it above every view it heard of: an
    // ordinary replica again.
    net.drop_rule = Some(Box::new(|from, _, _| from == 1));
    net.broadcast_client(&client_batch(&client, 2, 1));
    for _ in 0..8 {
        net.advance(SECOND / 2);
    }
    net.drop_rule = None;
    net.advance(SECOND / 2);
    assert!(net.replicas[0].view() >= 2);
    assert!(
        !net.replicas[0].recovering(),
        "it voted its way into a new view"
    );
    assert_one_order(&net);
    assert_eq!(net.executed_requests(0), vec![1, 1, 1]);
}

/// Defect: a replica restarted without its memory took the highest view it
/// happened to hear of before its first vote as the last one it may have
/// acted in. Cut off from everyone, it heard of none, timed out, voted for
/// view 1 and, when a peer relayed view 1's new-view, entered it as an
/// ordinary replica, though it may well have prepared there before the
/// restart. Schedule that splits the order (n = 4, replica 1 faulty): in
/// view 1, primary 1 proposes X at slot s to replicas 2 and 3 and Y to
/// replica 0; 1, 2 and 3 prepare and commit X, and 3 executes it. Replica 2
/// restarts with nothing, isolated; it votes for view 1, 1 relays the
/// new-view, 2 leaves its recovery in view 1, and 1 proposes Y at s to it:
/// 0, 1 and 2 prepare and commit Y, and 0 executes Y where 3 executed X.
/// Only replica 1 was faulty (replica 2 lost its memory, and counts against
/// f only while it recovers). Now a replica without its memory votes only
/// once 2f peers have answered a status it sent since the restart: at
/// least one correct replica that voted for every view it may have entered
/// is among them, so the view it reports raises the floor above it.
#[test]
fn a_replica_restarted_without_memory_and_cut_off_does_not_leave_recovery_in_a_view_it_may_have_acted_in()
 {
    let (cluster, secrets) = cluster(4);
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    // Primary 0 is down: the others move to view 1 and execute there.
    net.down.insert(0);
    net.broadcast_client(&client_batch(&client, 0, 1));
    for _ in 0..6 {
        net.advance(SECOND / 2);
    }
    for replica in 1..4 {
        assert_eq!(net.replicas[replica].view(), 1, "replica {replica}");
        assert_eq!(net.executed_requests(replica), vec![1], "replica {replica}");
    }
    // Replica 2 restarts with nothing, cut off from everyone, and is asked
    // for a request it cannot get ordered: its request timer runs out.
    net.replicas[2] = Replica::restarted(2, &cluster, secrets[2].clone(), small());
    net.executed[2].clear();
    net.drop_rule = Some(Box::new(|from, to, _| from == 2 || to == 2));
    net.broadcast_client(&client_batch(&client, 1, 1));
    for _ in 0..8 {
        net.advance(SECOND / 2);
    }
    assert_eq!(
        net.replicas[2].changing_to(),
        None,
        "it voted for a view change having heard from no peer"
    );
    // Only replica 1 reaches it, and relays view 1's new-view.
    net.drop_rule = Some(Box::new(|from, to, _| {
        (from == 2 || to == 2) && from != 1 && to != 1
    }));
    for _ in 0..8 {
        net.advance(SECOND / 2);
    }
    assert_eq!(net.replicas[2].view(), 1, "it follows the others to learn");
    assert!(
        net.replicas[2].recovering(),
        "it left its recovery in view 1, where it may have prepared before"
    );
    // With everyone reachable it hears 2f peers, and its next vote takes
    // it above every view it may have acted in.
    net.drop_rule = None;
    net.down.remove(&0);
    net.drop_rule = Some(Box::new(|from, _, _| from == 1));
    net.broadcast_client(&client_batch(&client, 2, 1));
    for _ in 0..8 {
        net.advance(SECOND / 2);
    }
    net.drop_rule = None;
    for _ in 0..4 {
        net.advance(SECOND / 2);
    }
    assert!(net.replicas[2].view() >= 2);
    assert!(
        !net.replicas[2].recovering(),
        "it voted its way into a new view"
    );
    assert_one_order(&net);
}

/// The wait for peers' answers leaves out f of them: with one replica
/// crashed, a replica restarted without its memory still hears enough
/// peers, votes, and becomes an ordinary replica again, so the cluster
/// (which needs its votes) goes on. Beyond f faults (it counts against f
/// while it recovers), so a courtesy, not a guarantee; but it must not
/// deadlock on the answers of a peer that will never answer.
#[test]
fn a_replica_restarted_without_memory_beside_a_crashed_peer_hears_enough_to_vote() {
    let (cluster, secrets) = cluster(4);
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    net.broadcast_client(&client_batch(&client, 0, 1));
    net.down.insert(3);
    net.replicas[2] = Replica::restarted(2, &cluster, secrets[2].clone(), small());
    net.executed[2].clear();
    net.broadcast_client(&client_batch(&client, 1, 1));
    for _ in 0..16 {
        net.advance(SECOND / 2);
    }
    assert!(!net.replicas[2].recovering(), "it never voted its way out");
    assert!(net.replicas[2].view() >= 1);
    for replica in 0..3 {
        assert_eq!(
            *net.executed_requests(replica).last().unwrap(),
            1,
            "replica {replica} did not execute the request made after the restart"
        );
    }
    assert_one_order(&net);
}

/// A replica whose directory was put back from a copy taken before it voted
/// in later views: started as restored, it keeps the copy's state and
/// certificates but treats its votes as forgotten, as one restarted without
/// its memory does. Started as an ordinary restart from disk instead, the
/// copy's view (0) would be its floor, and cut off from everyone it would
/// vote for view 1 and leave its recovery there when a peer relayed the
/// new-view, though it had entered view 1 and prepared there before.
#[test]
fn a_replica_restored_from_an_old_copy_does_not_leave_recovery_in_a_view_it_voted_in_since() {
    let (cluster, secrets) = cluster(4);
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    net.input(0, Input::Client(client_batch(&client, 0, 1)));
    net.run();
    // The copy of replica 2's directory, taken in view 0.
    let copy = on_disk(&net, 2);
    assert_eq!(copy.view, 0);
    // Primary 0 goes down: the others, 2 among them, move to view 1.
    net.down.insert(0);
    net.broadcast_client(&client_batch(&client, 1, 1));
    for _ in 0..6 {
        net.advance(SECOND / 2);
    }
    assert_eq!(net.replicas[2].view(), 1);
    assert_eq!(net.executed_requests(2), vec![1, 1]);
    // Replica 2 is put back from the copy, cut off from everyone.
    net.replicas[2] = Replica::recover_restored(2, &cluster, secrets[2].clone(), small(), copy);
    net.executed[2].truncate(1);
    net.drop_rule = Some(Box::new(|from, to, _| from == 2 || to == 2));
    net.broadcast_client(&client_batch(&client, 2, 1));
    for _ in 0..8 {
        net.advance(SECOND / 2);
    }
    assert_eq!(
        net.replicas[2].changing_to(),
        None,
        "it voted having heard from no peer"
    );
    // Only replica 1 reaches it, and relays view 1's new-view.
    net.drop_rule = Some(Box::new(|from, to, _| {
        (from == 2 || to == 2) && from != 1 && to != 1
    }));
    for _ in 0..8 {
        net.advance(SECOND / 2);
    }
    assert!(
        net.replicas[2].recovering(),
        "it left its recovery in view {}, where it may have prepared before",
        net.replicas[2].view()
    );
    assert!(
        !net.persisted[2].contains(&Durable::RestoreOver),
        "while it recovers, its directory still says it was restored"
    );
    // With everyone reachable, its next vote makes it an ordinary replica
    // again, in a view it cannot have voted in.
    net.drop_rule = None;
    net.down.remove(&0);
    net.drop_rule = Some(Box::new(|from, _, _| from == 1));
    net.broadcast_client(&client_batch(&client, 3, 1));
    for _ in 0..8 {
        net.advance(SECOND / 2);
    }
    net.drop_rule = None;
    for _ in 0..6 {
        net.advance(SECOND / 2);
    }
    assert!(net.replicas[2].view() >= 2);
    assert!(!net.replicas[2].recovering());
    assert!(
        net.persisted[2].contains(&Durable::RestoreOver),
        "the end of its recovery is written, so a later start is an ordinary one"
    );
    assert!(!net.persisted[1].contains(&Durable::RestoreOver));
    assert_one_order(&net);
    assert_eq!(net.executed_requests(2), vec![1, 1, 1, 1]);
}

/// Found by the simulation: a replica that learned it diverged kept
/// repairing an old checkpoint after its state had come right again (its
/// own later checkpoint matched the quorum's); installing the old state then
/// left it below its own stable checkpoint, with the log to catch up gone.
#[test]
fn a_repair_made_moot_by_a_later_matching_checkpoint_is_dropped() {
    let (cluster, secrets) = cluster(4);
    let mut r = Replica::new(1, &cluster, secrets[1].clone(), small());
    commit_by_hand(&mut r, &secrets, 8);
    let (bytes, _, _) = quorum_disagrees_at_4(&mut r, &secrets);
    let out = tick(&mut r, 3);
    let (peer, _) = state_request(&out).expect("the repair starts");
    // Its state at 8 agrees with the quorum's: stable, the repair is moot.
    let mut out = Vec::new();
    r.handle(
        4,
        Input::CheckpointTaken {
            seq: 8,
            state: [8; 32],
        },
        &mut out,
    );
    for voter in [0, 2, 3] {
        out.extend(deliver(&mut r, voter, vote(&secrets, voter, 8, [8; 32])));
    }
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Stable { seq: 8, .. }))
    );
    assert_eq!(r.low_watermark(), 8);
    let late = ReplicaMessage::StateReply {
        seq: 4,
        offset: 0,
        total: bytes.len() as u64,
        chunk: bytes,
        whole: false,
    };
    let out = deliver(&mut r, peer, late);
    assert!(out.is_empty(), "the old state is not installed: {out:?}");
    assert_eq!(r.delivered(), 8);
}

/// Found by the campaign (crashed-primary, seed 3826): a new view re-issued
/// a slot the others had executed in the old one; the lagging replica's
/// prepare for it was lost, and retransmission went only to peers behind the
/// sender, so the others never committed the slot again and the laggard,
/// which needed their commits, never executed it.
#[test]
fn a_lost_prepare_for_a_reissued_slot_reaches_peers_that_are_ahead() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    // Replica 3 hears nothing of request 1, which the others execute.
    net.drop_rule = Some(Box::new(|_, to, _| to == 3));
    net.input(0, Input::Client(client_batch(&client, 0, 1)));
    net.run();
    assert_eq!(net.executed_requests(1), vec![1]);
    // The primary crashes; view 1 re-issues slot 1. Replica 3's prepares are lost.
    net.down.insert(0);
    net.drop_rule = Some(Box::new(|from, _, m| {
        from == 3 && matches!(m, ReplicaMessage::Prepare(_))
    }));
    net.broadcast_client(&client_batch(&client, 1, 1));
    net.advance(SECOND + 1);
    assert_eq!(net.replicas[3].view(), 1);
    net.drop_rule = None;
    for _ in 0..5 {
        net.advance(SECOND / 5);
    }
    assert_eq!(net.executed_requests(3), vec![1, 1], "replica 3 caught up");
    assert_one_order(&net);
}

/// A backup records the proposal with its prepare, and its prepared
/// certificate before its commit vote leaves: in its outputs, each
/// `Persist` comes first, and the proposal is recorded once (the
/// certificate's record does not carry it again).
#[test]
fn a_backup_records_the_proposal_with_its_prepare_and_the_certificate_before_its_commit_vote() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    let mut outputs = Vec::new();
    net.replicas[1].handle(
        net.now,
        Input::Client(client_batch(&client, 0, 1)),
        &mut outputs,
    );
    net.input(0, Input::Client(client_batch(&client, 0, 1)));
    // Run everything but replica 1's own handling, then feed it its inputs
    // one at a time and look at the order of what it outputs.
    net.hold_rule = Some(Box::new(|_, to, _| to == 1));
    net.run();
    let held = std::mem::take(&mut net.held);
    let (mut proposal_at, mut prepare_at) = (None, None);
    let (mut persisted_at, mut commit_at) = (None, None);
    let mut position = 0;
    for (from, _, message) in held {
        let mut out = Vec::new();
        net.replicas[1].handle(net.now, Input::Replica(from, message), &mut out);
        for output in out {
            match output {
                Output::Persist(Durable::Proposal {
                    seq,
                    digest,
                    proposal,
                    ..
                }) => {
                    assert_eq!((seq, proposal.digest()), (1, digest));
                    assert!(proposal_at.is_none(), "written once");
                    proposal_at = Some(position);
                }
                Output::Broadcast(ReplicaMessage::Prepare(p)) if p.seq == 1 => {
                    prepare_at.get_or_insert(position);
                }
                Output::Persist(Durable::Prepared { proof, proposal }) => {
                    assert_eq!(proof.pre_prepare.seq, 1);
                    assert!(proposal.is_none(), "the proposal is on disk already");
                    persisted_at.get_or_insert(position);
                }
                Output::Broadcast(ReplicaMessage::Commit(c)) if c.seq == 1 => {
                    commit_at.get_or_insert(position);
                }
                _ => {}
            }
            position += 1;
        }
    }
    let (proposal_at, prepare_at) = (proposal_at.unwrap(), prepare_at.unwrap());
    assert!(
        proposal_at < prepare_at,
        "proposal persisted at {proposal_at}, prepare at {prepare_at}"
    );
    let (persisted_at, commit_at) = (persisted_at.unwrap(), commit_at.unwrap());
    assert!(
        persisted_at < commit_at,
        "persisted at {persisted_at}, commit at {commit_at}"
    );
}

/// A primary does not wait for its disk before its pre-prepare leaves (the
/// backups' records cover the proposal, see `durable.rs`); its prepared
/// certificate's record carries the proposal instead.
#[test]
fn a_primary_writes_its_proposal_with_its_prepared_certificate() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    net.broadcast_client(&client_batch(&client, 0, 1));
    assert_eq!(net.executed_requests(0), vec![1]);
    let records = &net.persisted[0];
    assert!(
        !records
            .iter()
            .any(|d| matches!(d, Durable::Proposal { .. })),
        "{records:?}"
    );
    assert!(
        records.iter().any(|d| matches!(
            d,
            Durable::Prepared { proof, proposal: Some(proposal) }
                if proof.pre_prepare.seq == 1 && proposal.digest() == proof.pre_prepare.digest
        )),
        "{records:?}"
    );
}

/// Every replica restarts at once (a power cut) after a batch prepared
/// everywhere but committed at replica 1 only, which executed it and
/// answered. Restarted from their disks, the replicas must keep that batch
/// at sequence number 1: a new view built from their view-change votes
/// re-proposes it there, and the next request gets 2. Restarted without
/// their disks, they would give sequence number 1 to the next request,
/// and replica 1 would hold a different batch there than everyone else.
#[test]
fn a_restart_of_every_replica_from_disk_keeps_what_committed() {
    let (cluster, secrets) = cluster(4);
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    // Commit votes reach replica 1 only.
    net.drop_rule = Some(Box::new(|_, to, m| {
        to != 1 && matches!(m, ReplicaMessage::Commit(_))
    }));
    net.input(0, Input::Client(client_batch(&client, 0, 1)));
    net.run();
    net.drop_rule = None;
    assert_eq!(net.executed_requests(1), vec![1]);
    for replica in [0, 2, 3] {
        assert!(net.executed[replica].is_empty(), "replica {replica}");
    }
    let first = net.executed[1][0].digest;

    // Power cut: every replica restarts from its disk.
    for (replica, secret) in secrets.iter().enumerate() {
        let disk = on_disk(&net, replica);
        assert_eq!(disk.prepared.len(), 1, "replica {replica} prepared seq 1");
        net.replicas[replica] = Replica::recover(
            replica as ReplicaId,
            &cluster,
            secret.clone(),
            small(),
            disk,
        );
        assert!(net.replicas[replica].recovering());
    }
    assert_eq!(net.replicas[1].delivered(), 1);

    // A new request: nobody takes part in view 0 any more, so the backups
    // time out and move to view 1, whose new-view keeps seq 1.
    net.broadcast_client(&client_batch(&client, 1, 1));
    for _ in 0..8 {
        net.advance(SECOND / 2);
    }
    assert_one_order(&net);
    for replica in 0..4 {
        assert_eq!(
            net.executed_requests(replica),
            vec![1, 1],
            "replica {replica} executes the committed batch, then the new one"
        );
        assert_eq!(net.executed[replica][0].digest, first);
        assert_eq!(net.executed[replica][1].seq, 2);
    }
}

/// A replica that wrote that it voted for view 2 takes part in no view up
/// to 2 after a restart, even if nobody tells it about view 2.
#[test]
fn a_replica_restarted_from_disk_takes_part_in_no_view_it_wrote() {
    let (cluster, secrets) = cluster(4);
    let replica = Replica::recover(
        2,
        &cluster,
        secrets[2].clone(),
        small(),
        Recovered {
            view: 2,
            ..Recovered::default()
        },
    );
    assert!(replica.recovering());
    assert!(replica.view() < 2);
    assert_eq!(replica.changing_to(), Some(2), "it votes for view 2 again");
    assert_eq!(replica.delivered(), 0);
}

/// A cluster file that admits only client `admitted`.
fn admitting(admitted: &SecretKey) -> (ClusterConfig, Vec<SecretKey>) {
    let (mut cluster, secrets) = cluster(4);
    cluster.clients = Some(vec![crate::config::ClientEntry {
        public_key: admitted.public(),
        name: Some("ann".into()),
    }]);
    (cluster, secrets)
}

/// Admission: a faulty primary cannot smuggle in a request from a client
/// the cluster file does not list. Its pre-prepare gets no prepare from a
/// correct backup, so it never commits (and the client's retransmissions to
/// the backups are refused too, so none of them times it and deposes a
/// correct primary on its account).
#[test]
fn a_backup_refuses_a_proposal_carrying_a_client_not_admitted() {
    let ann = SecretKey::from_seed([31; 32]);
    let stranger = SecretKey::from_seed([32; 32]);
    let (cluster, secrets) = admitting(&ann);
    let mut r = Replica::new(1, &cluster, secrets[1].clone(), small());
    let smuggled = pre_prepare(
        &secrets[0],
        0,
        1,
        vec![client_batch(&ann, 0, 1), client_batch(&stranger, 0, 1)],
    );
    let out = deliver(&mut r, 0, ReplicaMessage::PrePrepare(smuggled));
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Broadcast(ReplicaMessage::Prepare(_)))),
        "no prepare for a proposal with a stranger's request"
    );
    assert_eq!(r.stats().unadmitted, 1);
    // The stranger sends its request to the backup itself: refused, not timed.
    let mut out = Vec::new();
    r.handle(2, Input::Client(client_batch(&stranger, 1, 1)), &mut out);
    assert!(out.is_empty());
    assert_eq!(r.stats().unadmitted, 2);
    tick(&mut r, 10 * SECOND);
    assert_eq!(
        r.changing_to(),
        None,
        "nothing of the stranger's is awaited"
    );
    // The same slot with the admitted client alone is prepared.
    let honest = pre_prepare(&secrets[0], 0, 2, vec![client_batch(&ann, 0, 1)]);
    let out = deliver(&mut r, 0, ReplicaMessage::PrePrepare(honest));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Broadcast(ReplicaMessage::Prepare(_)))),
        "{out:?}"
    );
}

/// A correct primary orders nothing from a client the cluster does not
/// admit, whoever passes it on.
#[test]
fn a_primary_does_not_order_a_client_not_admitted() {
    let ann = SecretKey::from_seed([31; 32]);
    let stranger = SecretKey::from_seed([32; 32]);
    let (cluster, secrets) = admitting(&ann);
    let mut primary = Replica::new(0, &cluster, secrets[0].clone(), small());
    let mut out = Vec::new();
    primary.handle(1, Input::Client(client_batch(&stranger, 0, 1)), &mut out);
    primary.handle(
        2,
        Input::Replica(1, ReplicaMessage::Forward(client_batch(&stranger, 1, 1))),
        &mut out,
    );
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(primary.stats().unadmitted, 2);
    primary.handle(3, Input::Client(client_batch(&ann, 0, 1)), &mut out);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Broadcast(ReplicaMessage::PrePrepare(_)))),
        "{out:?}"
    );
}

/// Fairness: a client that floods the primary cannot push another client's
/// request back behind all of its own. The primary serves clients in turn,
/// one batch each; under a plain queue, the other client's request would
/// wait for every batch the flood sent before it.
#[test]
fn a_flooding_client_does_not_push_the_others_back() {
    let mut net = Net::new(4, small());
    let (flood, other) = (
        SecretKey::from_seed([41; 32]),
        SecretKey::from_seed([42; 32]),
    );
    for lane in 0..50 {
        net.input(0, Input::Client(client_batch(&flood, lane, 1)));
    }
    net.input(0, Input::Client(client_batch(&other, 0, 7)));
    net.run();
    let order: Vec<(PublicKey, u64, u32)> = net.executed[0]
        .iter()
        .flat_map(|c| c.proposal.batches.clone())
        .flat_map(|b| {
            let client = b.batch.client;
            b.batch
                .requests
                .into_iter()
                .map(move |r| (client, r.number, r.lane))
        })
        .collect();
    assert_eq!(order.len(), 51, "everything executed");
    let at = order
        .iter()
        .position(|(client, ..)| *client == other.public())
        .unwrap();
    // Two proposals were under way (the pipeline) when it came; the next
    // one serves it second.
    assert!(at <= 3, "the other client's request came {at}th: {order:?}");
    assert_one_order(&net);
}

/// A client may hold at most `max_pending_per_client` batches waiting at a
/// replica; more are refused, not timed, so a flood cannot fill the queue
/// nor make backups suspect a correct primary for it.
#[test]
fn a_client_over_its_pending_cap_is_refused_not_timed() {
    let config = ProtocolConfig {
        max_pending_per_client: 4,
        ..small()
    };
    let (cluster, secrets) = cluster(4);
    let mut backup = Replica::new(1, &cluster, secrets[1].clone(), config);
    let flood = SecretKey::from_seed([41; 32]);
    let mut out = Vec::new();
    for lane in 0..10 {
        backup.handle(1, Input::Client(client_batch(&flood, lane, 1)), &mut out);
    }
    assert_eq!(backup.pending_batches(), 4);
    assert_eq!(backup.stats().client_full, 6);
    let other = SecretKey::from_seed([42; 32]);
    backup.handle(2, Input::Client(client_batch(&other, 0, 1)), &mut out);
    assert_eq!(backup.pending_batches(), 5, "another client still gets in");
}

#[test]
fn a_backup_suspects_a_view_whose_accepted_slot_never_commits() {
    // A backup that saw a request only in the primary's pre-prepare has no
    // request timer for it (the same holds for one that executed it in an
    // earlier view and answers the client from its reply cache). If the
    // slot cannot commit (here two replicas are silent), the backup must
    // still suspect the view, or a view change that needs its vote never
    // comes.
    let mut net = Net::new(4, small());
    net.down.insert(2);
    net.down.insert(3);
    let client = SecretKey::from_seed([99; 32]);
    net.input(0, Input::Client(client_batch(&client, 0, 1)));
    net.run();
    assert!(
        net.replicas[1]
            .log
            .get(&1)
            .is_some_and(|slot| slot.header.is_some())
    );
    assert!(net.replicas[1].waiting.is_empty(), "no request timer runs");
    for _ in 0..3 {
        net.advance(SECOND / 2);
    }
    assert_eq!(net.replicas[1].stats().view_changes_started, 1);
    assert_eq!(net.replicas[1].changing_to(), Some(1));
}

#[test]
fn a_slot_that_commits_in_time_is_not_suspected() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    for number in 1..=6 {
        net.input(0, Input::Client(client_batch(&client, 0, number)));
        net.run();
        net.advance(SECOND / 2);
    }
    for replica in 0..4 {
        assert_eq!(net.replicas[replica].stats().view_changes_started, 0);
        assert_eq!(net.executed_requests(replica).len(), 6);
    }
}

#[test]
fn a_replica_that_moved_past_a_view_resends_its_vote_for_it_to_peers_still_waiting() {
    // Replica 1, the primary of view 1, is down. Replica 0's votes for view
    // 1 are lost on their way to 2 and 3 until it has voted for view 2.
    // Replica 0 holds a quorum for view 1 (its own and theirs), waits in
    // vain for replica 1 and moves on to view 2. Replicas 2 and 3 hold two
    // votes for view 1 and see only one replica ahead of them: unless
    // replica 0 resends its vote for view 1, nobody ever reaches view 2.
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut net = Net::new(4, small());
    net.down.insert(1);
    let moved_on = AtomicBool::new(false);
    net.drop_rule = Some(Box::new(move |from, _, message| match message {
        // Primary 0 ignores the client, so the backups suspect it.
        ReplicaMessage::PrePrepare(pre_prepare) => from == 0 && pre_prepare.view == 0,
        ReplicaMessage::ViewChange(vote) if from == 0 => {
            if vote.body.new_view == 2 {
                moved_on.store(true, Ordering::Relaxed);
            }
            vote.body.new_view == 1 && !moved_on.load(Ordering::Relaxed)
        }
        _ => false,
    }));
    let client = SecretKey::from_seed([99; 32]);
    net.broadcast_client(&client_batch(&client, 0, 1));
    for _ in 0..40 {
        net.advance(SECOND / 2);
    }
    for replica in [0, 2, 3] {
        assert_eq!(net.replicas[replica].view(), 2, "replica {replica}");
        assert_eq!(net.replicas[replica].changing_to(), None);
        assert_eq!(net.executed_requests(replica), vec![1], "replica {replica}");
    }
}

#[test]
fn votes_for_a_reissued_slot_are_resent_to_peers_that_executed_it_too() {
    // Replica 2 misses view 0 entirely; the others execute request 1 in
    // slot 1. Then primary 0 crashes and view 1 re-issues slot 1. Replica
    // 3's prepare for it is lost on its way to the new primary 1, so 1
    // never prepares the slot and replica 2 lacks 1's commit. Replicas 1
    // and 3 both executed slot 1 long ago, so neither sees the other as
    // behind: unless votes for slots uncommitted in this view are resent
    // regardless, replica 2 never executes it (and only a second view
    // change would help).
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut net = Net::new(4, small());
    let lost_once = AtomicBool::new(false);
    net.drop_rule = Some(Box::new(move |from, to, message| match message {
        ReplicaMessage::PrePrepare(m) => to == 2 && m.view == 0,
        ReplicaMessage::Prepare(m) if to == 2 && m.view == 0 => true,
        ReplicaMessage::Commit(m) if to == 2 && m.view == 0 => true,
        ReplicaMessage::Prepare(m) if m.view == 1 && m.seq == 1 && from == 3 && to == 1 => {
            !lost_once.swap(true, Ordering::Relaxed)
        }
        _ => false,
    }));
    let client = SecretKey::from_seed([99; 32]);
    net.broadcast_client(&client_batch(&client, 0, 1));
    for replica in [0, 1, 3] {
        assert_eq!(net.executed_requests(replica), vec![1]);
    }
    assert!(net.executed_requests(2).is_empty());
    net.down.insert(0);
    net.broadcast_client(&client_batch(&client, 1, 2));
    for _ in 0..20 {
        net.advance(SECOND / 2);
    }
    for replica in [1, 2, 3] {
        assert_eq!(net.replicas[replica].view(), 1, "replica {replica}");
        assert_eq!(net.replicas[replica].changing_to(), None);
    }
    assert_eq!(net.executed_requests(2), vec![1, 2]);
    assert_eq!(net.executed_requests(1), vec![1, 2]);
}

/// A faulty client cannot depose a correct primary by filling its own
/// share of the primary's queue and sending one more batch to the backups
/// only. Schedule (n = 4, at most 2 batches per client waiting): the client
/// sends four signed batches to the primary alone (two are proposed, the
/// pipeline is then full, two wait), then a fifth to the three backups
/// alone. Each backup times the fifth and forwards it; the primary, with two
/// of the client's batches waiting, must not drop the forwarded copy, or
/// every backup's timer runs out on a batch the primary never had room for
/// and the backups vote the correct primary out.
#[test]
fn a_client_over_its_share_at_the_primary_cannot_make_backups_depose_it() {
    let config = ProtocolConfig {
        max_pending_per_client: 2,
        ..small()
    };
    let mut net = Net::new(4, config);
    let client = SecretKey::from_seed([43; 32]);
    for lane in 0..4 {
        net.input(0, Input::Client(client_batch(&client, lane, 1)));
    }
    assert_eq!(net.replicas[0].pending_batches(), 2, "the client's share");
    let backups_only = client_batch(&client, 9, 1);
    for backup in 1..4 {
        net.input(backup, Input::Client(backups_only.clone()));
    }
    net.run();
    for _ in 0..6 {
        net.advance(SECOND / 2);
    }
    for replica in 0..4 {
        assert_eq!(
            net.replicas[replica].stats().view_changes_started,
            0,
            "replica {replica} suspected a correct primary"
        );
        let mut executed = net.executed_requests(replica);
        executed.sort();
        assert_eq!(executed, vec![1; 5], "replica {replica}");
    }
    assert_one_order(&net);
}

/// Faulty clients cannot depose a correct primary by filling the primary's
/// whole queue, each within its own share, and leaving an honest client's
/// batch to the backups. Schedule (n = 4, at most 2 batches waiting in
/// all): four fresh client keys send one signed batch each to the primary
/// alone (two are proposed, the pipeline is then full, two wait: the queue
/// is full); then an honest client's batch reaches the three backups only
/// (its message to the primary was lost). Each backup times it and
/// forwards it; the primary must have room for what a correct backup
/// forwards, or every backup's timer runs out on a batch the primary never
/// had room for and the backups vote the correct primary out.
#[test]
fn clients_filling_the_primarys_queue_cannot_make_backups_depose_it() {
    let config = ProtocolConfig {
        max_pending: 2,
        ..small()
    };
    let mut net = Net::new(4, config);
    for seed in 0..4u8 {
        let flooder = SecretKey::from_seed([60 + seed; 32]);
        net.input(0, Input::Client(client_batch(&flooder, 0, 1)));
    }
    assert_eq!(net.replicas[0].pending_batches(), 2, "the queue is full");
    let honest = client_batch(&SecretKey::from_seed([70; 32]), 0, 1);
    for backup in 1..4 {
        net.input(backup, Input::Client(honest.clone()));
    }
    net.run();
    for _ in 0..6 {
        net.advance(SECOND / 2);
    }
    for replica in 0..4 {
        assert_eq!(
            net.replicas[replica].stats().view_changes_started,
            0,
            "replica {replica} suspected a correct primary"
        );
        assert_eq!(
            net.executed_requests(replica),
            vec![1; 5],
            "replica {replica}"
        );
    }
    assert_one_order(&net);
}

/// A replica restarted from its disk knows which slots it voted to commit
/// (each certificate was written before its vote left), so it answers reads
/// on the fast path at once, each after those slots; it does not wait for a
/// view change, which may not come for a long time. One restarted without
/// its memory does not know, and answers none until a new view.
#[test]
fn a_replica_restarted_from_disk_answers_reads_after_what_it_voted_to_commit() {
    let (cluster, secrets) = cluster(4);
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    // Every replica votes to commit slot 1; the votes are lost.
    net.drop_rule = Some(Box::new(|_, _, m| matches!(m, ReplicaMessage::Commit(_))));
    net.input(0, Input::Client(client_batch(&client, 0, 1)));
    net.run();
    assert!(net.executed.iter().all(Vec::is_empty));
    for (replica, secret) in secrets.iter().enumerate() {
        let disk = on_disk(&net, replica);
        let from_disk = Replica::recover(
            replica as ReplicaId,
            &cluster,
            secret.clone(),
            small(),
            disk,
        );
        assert!(from_disk.recovering());
        assert_eq!(from_disk.read_barrier(), Some(1), "replica {replica}");
        let forgetful = Replica::restarted(replica as ReplicaId, &cluster, secret.clone(), small());
        assert_eq!(forgetful.read_barrier(), None, "replica {replica}");
    }
}

/// Defect: a replica restarted from its disk also raised the floor of its
/// recovery (the views it takes no part in) to any view a message named,
/// before checking anything. One faulty peer claiming a view far ahead (a
/// status message costs it nothing) kept it a learner for good: it never
/// entered a view above that floor, never prepared again, and never built
/// a new-view as primary. Schedule (n = 4): replica 1 restarts from its
/// disk; faulty replica 3 sends it a status for view 1,000,000 and falls
/// silent. Replicas 0 and 2 can then commit nothing without 1, and every
/// view change leaves 1 a learner: the cluster stalls with one fault. Its
/// disk already names the highest view it voted for or entered.
#[test]
fn a_peer_claiming_a_far_view_cannot_keep_a_replica_restarted_from_disk_recovering() {
    let (cluster, secrets) = cluster(4);
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    net.input(0, Input::Client(client_batch(&client, 0, 1)));
    net.run();
    assert_eq!(net.executed_requests(1), vec![1]);
    let disk = on_disk(&net, 1);
    net.replicas[1] = Replica::recover(1, &cluster, secrets[1].clone(), small(), disk);
    assert!(net.replicas[1].recovering());
    net.input(
        1,
        Input::Replica(
            3,
            ReplicaMessage::Status(crate::message::Status {
                view: 1_000_000,
                changing_to: None,
                delivered: 0,
                low: 0,
                replica: 3,
                probe: None,
                echo: None,
            }),
        ),
    );
    net.run();
    net.drop_rule = Some(Box::new(|from, to, _| from == 3 || to == 3));
    net.broadcast_client(&client_batch(&client, 1, 1));
    for _ in 0..40 {
        net.advance(SECOND / 2);
    }
    assert_one_order(&net);
    assert!(
        !net.replicas[1].recovering(),
        "replica 1 is still recovering in view {}",
        net.replicas[1].view()
    );
    for replica in 0..3 {
        assert_eq!(
            net.executed_requests(replica),
            vec![1, 1],
            "replica {replica}"
        );
    }
}

/// Defect: a replica restarted from its disk took the view it had written
/// for the view it worked in, though it may only have voted for it. Its
/// vote was lost with its memory, and it refused the others' votes for
/// that view as stale, so a view change that needed its vote never
/// completed. Schedule (n = 4): primary 0 crashes; backups 1, 2 and 3 time
/// out and vote for view 1, but replica 2's vote is lost, and 2 restarts
/// from its disk (which says view 1). Replicas 1 and 3 wait for a third
/// vote for view 1 and 2 sends none; 2 alone moves on to view 2, where
/// nobody follows it (f+1 votes make a replica join). The cluster stalls
/// for good with one crashed replica.
#[test]
fn a_replica_restarted_from_disk_mid_view_change_votes_again() {
    let (cluster, secrets) = cluster(4);
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    net.down.insert(0);
    net.drop_rule = Some(Box::new(|from, _, m| {
        from == 2 && matches!(m, ReplicaMessage::ViewChange(_))
    }));
    net.broadcast_client(&client_batch(&client, 0, 1));
    for _ in 0..3 {
        net.advance(SECOND / 2);
    }
    assert_eq!(net.replicas[2].changing_to(), Some(1));
    net.drop_rule = None;
    let disk = on_disk(&net, 2);
    assert_eq!(disk.view, 1);
    net.replicas[2] = Replica::recover(2, &cluster, secrets[2].clone(), small(), disk);
    net.broadcast_client(&client_batch(&client, 0, 1));
    for _ in 0..40 {
        net.advance(SECOND / 2);
    }
    assert_one_order(&net);
    for replica in 1..4 {
        assert_eq!(net.executed_requests(replica), vec![1], "replica {replica}");
    }
}

/// A new primary cannot drop a batch that prepared: a new-view whose
/// view-changes carry a prepared certificate for sequence number 1 must
/// re-issue that batch there. One that leaves the slot out, puts the null
/// proposal there, or makes its quorum by listing one replica's
/// view-change twice is refused; the honest one is taken.
#[test]
fn a_new_view_that_drops_a_prepared_batch_or_repeats_a_voter_is_refused() {
    let (cluster, secrets) = cluster(4);
    let client = SecretKey::from_seed([99; 32]);
    let pp = pre_prepare(&secrets[0], 0, 1, vec![client_batch(&client, 0, 1)]);
    let proof = crate::message::PreparedProof {
        pre_prepare: pp.header(),
        prepares: vec![
            prepare(&secrets[2], 2, 1, pp.digest),
            prepare(&secrets[3], 3, 1, pp.digest),
        ],
    };
    let vote = |replica: ReplicaId, prepared: bool| {
        let body = crate::message::ViewChangeBody {
            new_view: 1,
            stable_seq: 0,
            stable_state: [0; 32],
            checkpoint_proof: vec![],
            prepared: if prepared {
                vec![proof.clone()]
            } else {
                vec![]
            },
            replica,
        };
        let signature = secrets[replica as usize].sign(
            domain::VIEW_CHANGE,
            &crate::message::view_change_bytes(&body),
        );
        ViewChange { body, signature }
    };
    let header = |digest: Hash| {
        let signature = secrets[1].sign(domain::PRE_PREPARE, &pre_prepare_header(1, 1, &digest));
        crate::message::PrePrepareHeader {
            view: 1,
            seq: 1,
            digest,
            signature,
        }
    };
    let quorum = vec![vote(1, false), vote(2, true), vote(3, false)];
    let null = *crate::protocol::proposals::NULL_DIGEST;
    let bad = [
        (quorum.clone(), vec![]),
        (quorum.clone(), vec![header(null)]),
        (
            vec![vote(2, true), vote(3, false), vote(3, false)],
            vec![header(pp.digest)],
        ),
        (vec![vote(1, false), vote(3, false), vote(3, false)], vec![]),
    ];
    let mut r0 = Replica::new(0, &cluster, secrets[0].clone(), small());
    for (i, (view_changes, pre_prepares)) in bad.into_iter().enumerate() {
        let new_view = crate::message::NewView {
            view: 1,
            view_changes,
            pre_prepares,
        };
        deliver(&mut r0, 1, ReplicaMessage::NewView(new_view));
        assert_eq!(r0.stats().bad_certificate, i as u64 + 1, "new-view {i}");
        assert_eq!(r0.view(), 0);
    }
    let honest = crate::message::NewView {
        view: 1,
        view_changes: quorum,
        pre_prepares: vec![header(pp.digest)],
    };
    deliver(&mut r0, 1, ReplicaMessage::NewView(honest));
    assert_eq!(r0.view(), 1);
}

/// Seen in review: a status message claiming the highest stable checkpoint
/// there is made a replica compute one past it (an overflow: a panic where
/// overflow is checked, as in debug builds), so one faulty peer could stop
/// correct replicas. Such a peer is simply not behind: it gets nothing, and
/// the replica goes on.
#[test]
fn a_status_claiming_the_last_sequence_number_is_answered_without_overflow() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    net.input(0, Input::Client(client_batch(&client, 0, 1)));
    net.run();
    for (view, delivered, low) in [(0, Seq::MAX, Seq::MAX), (View::MAX, 0, Seq::MAX)] {
        let status = crate::message::Status {
            view,
            changing_to: None,
            delivered,
            low,
            replica: 3,
            probe: None,
            echo: None,
        };
        let out = deliver(&mut net.replicas[1], 3, ReplicaMessage::Status(status));
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::Send(3, ReplicaMessage::Checkpoint(_)))),
            "checkpoint votes sent to a peer claiming to be ahead of all of them"
        );
        net.advance(SECOND);
    }
    net.input(0, Input::Client(client_batch(&client, 0, 2)));
    net.run();
    for replica in 0..4 {
        assert_eq!(
            net.executed_requests(replica),
            vec![1, 2],
            "replica {replica}"
        );
    }
}

/// Defect: a state request counts as progress whenever its offset is
/// further on than the last one served to that peer, by any amount. The
/// server answers each with a whole chunk from that offset (up to 1 MiB),
/// so a faulty peer asking one byte further each time, as fast as it can
/// send, gets a full chunk for every few bytes it sends: the serving
/// thread's queue (the runtime counts on the protocol limiting each peer's
/// rate) fills with its jobs, and the correct peers' state and part
/// requests are dropped. One attempt's worth of chunks becomes as many
/// chunks as the encoding has bytes. Requests within one request timeout
/// must not be served beyond what the per-peer allowance for part
/// requests lets through.
#[test]
fn state_requests_one_byte_further_each_are_not_all_served() {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    for number in 1..=4 {
        net.input(0, Input::Client(client_batch(&client, 0, number)));
        net.run();
    }
    let r = &mut net.replicas[1];
    let mut served = 0;
    // A thousand requests within a millisecond, each one byte further on.
    for offset in 0..1_000u64 {
        let mut out = Vec::new();
        let request = ReplicaMessage::StateRequest {
            seq: 4,
            offset,
            whole: true,
        };
        r.handle(1 + offset * 1_000, Input::Replica(3, request), &mut out);
        served += out
            .iter()
            .filter(|o| matches!(o, Output::ServeState { .. }))
            .count();
    }
    let allowance = small().max_part_requests_per_second as usize;
    assert!(
        served <= 1 + allowance,
        "{served} overlapping chunks served to one peer within a millisecond"
    );
}

/// A replica restarted from its disk votes again for the view its disk
/// names, and that vote must carry every certificate its lost vote for the
/// same view carried (durable.rs: "its certificates are a superset"). But
/// the disk keeps one certificate per sequence number, the latest: once
/// the replica entered the view and prepared the re-issued batch there, the
/// certificate from the earlier view is overwritten, and the re-vote, which
/// leaves out certificates of the view itself, carries nothing for that
/// slot. Two signed view-changes for view 1 from one replica then differ on
/// what prepared. Schedule (n = 4): batch prepares everywhere in view 0,
/// its commits lost; view change to 1 (replica 2's vote carries the
/// certificate for 1); the new-view re-issues 1 and replica 2 prepares it
/// in view 1 (written over the view-0 certificate); replica 2 restarts
/// from its disk and votes for view 1 again: without seq 1.
#[test]
fn a_replica_restarted_from_disk_votes_again_with_every_certificate_its_first_vote_carried() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let (cluster, secrets) = cluster(4);
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    let first_vote: Rc<RefCell<Option<ViewChange>>> = Rc::default();
    let seen = Rc::clone(&first_vote);
    net.drop_rule = Some(Box::new(move |from, _, m| {
        if let ReplicaMessage::ViewChange(vote) = m
            && from == 2
            && vote.body.new_view == 1
        {
            seen.borrow_mut().get_or_insert_with(|| vote.clone());
        }
        matches!(m, ReplicaMessage::Commit(_))
    }));
    net.broadcast_client(&client_batch(&client, 0, 1));
    net.advance(SECOND + 1);
    assert_eq!(net.replicas[2].view(), 1, "replica 2 entered view 1");
    let first_vote = first_vote
        .borrow()
        .clone()
        .expect("replica 2 voted for view 1");
    let carried: Vec<Seq> = first_vote
        .body
        .prepared
        .iter()
        .map(|p| p.pre_prepare.seq)
        .collect();
    assert_eq!(carried, vec![1], "its vote for view 1 carried seq 1");
    let disk = on_disk(&net, 2);
    assert_eq!(disk.view, 1);
    assert!(
        disk.prepared.iter().any(|(p, _)| p.pre_prepare.view == 1),
        "it prepared seq 1 again in view 1"
    );

    net.replicas[2] = Replica::recover(2, &cluster, secrets[2].clone(), small(), disk);
    // Its disk shows it entered view 1 (a certificate made there): it casts
    // no second vote for view 1, which could say less than the first, and
    // takes up the view as a learner.
    let again = net.replicas[2]
        .view_changes
        .get(&1)
        .and_then(|votes| votes.get(&2))
        .cloned();
    if let Some(again) = again {
        let carried_again: Vec<Seq> = again
            .body
            .prepared
            .iter()
            .map(|p| p.pre_prepare.seq)
            .collect();
        assert_eq!(
            carried_again, carried,
            "its second signed vote for view 1 leaves out what its first carried"
        );
    }
    assert_eq!(
        (net.replicas[2].view(), net.replicas[2].changing_to()),
        (1, None),
        "it takes up the view it entered"
    );
    // Its votes for a later view carry the certificate it made in view 1.
    net.drop_rule = Some(Box::new(|_, _, m| {
        matches!(m, ReplicaMessage::Commit(_) | ReplicaMessage::PrePrepare(_))
    }));
    net.broadcast_client(&client_batch(&client, 0, 2));
    for _ in 0..40 {
        net.advance(SECOND / 2);
        if net.replicas[2].changing_to().is_some() {
            break;
        }
    }
    let later = net.replicas[2]
        .view_changes
        .iter()
        .find_map(|(view, votes)| votes.get(&2).filter(|_| *view > 1).cloned())
        .expect("it votes for a later view once the new batch times out");
    assert!(
        later.body.prepared.iter().any(|p| p.pre_prepare.seq == 1),
        "its vote for view {} carries the certificate for seq 1",
        later.body.new_view
    );
}

/// Defect: a replica restarted from its disk takes its read barrier from
/// every prepared certificate it stored, including one from an earlier view
/// for a number the view it entered since did not carry (that number never
/// committed). In memory, entering that view had lowered the barrier past
/// it (`a_new_view_lowers_the_read_barrier_...`); the restart raises it
/// again, and every read the replica takes parks behind a number only a
/// later write will fill. Schedule (n = 4): slot 1 commits everywhere.
/// Replica 0 proposes slots 2 and 3 in view 0; only replica 3 sees them
/// prepared (the others' prepares reach only it) and no commit vote
/// arrives. Replica 3's view-change vote is lost on its way to replica 1,
/// so view 1 carries slot 1 only; replica 3 enters it, its barrier drops
/// to 1. Another client's write takes slot 2 in view 1 and executes
/// everywhere (replica 3's barrier: 2). Replica 3 restarts from its disk,
/// which names view 1 and holds a view-1 certificate, so it resumes in
/// view 1 answering reads at once, behind slot 3, which nothing fills.
#[test]
fn a_replica_restarted_from_disk_does_not_raise_its_read_barrier_to_a_number_its_view_dropped() {
    let (cluster, secrets) = cluster(4);
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    net.broadcast_client(&client_batch(&client, 0, 1));
    for replica in 0..4 {
        assert_eq!(net.executed_requests(replica), vec![1], "replica {replica}");
    }
    net.drop_rule = Some(Box::new(|from, to, m| match m {
        ReplicaMessage::Prepare(p) => p.view == 0 && p.seq >= 2 && to != 3,
        ReplicaMessage::Commit(c) => c.view == 0 && c.seq >= 2,
        ReplicaMessage::ViewChange(_) => from == 3 && to == 1,
        _ => false,
    }));
    net.input(0, Input::Client(client_batch(&client, 0, 2)));
    net.run();
    net.input(0, Input::Client(client_batch(&client, 0, 3)));
    net.run();
    assert_eq!(
        net.replicas[3].read_barrier(),
        Some(3),
        "replica 3 voted to commit slots 2 and 3 in view 0"
    );
    for _ in 0..8 {
        net.advance(SECOND / 2);
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
    net.drop_rule = None;
    // A write of another client takes slot 2 in view 1.
    let other = SecretKey::from_seed([98; 32]);
    net.broadcast_client(&client_batch(&other, 0, 1));
    assert_one_order(&net);
    for replica in 0..4 {
        assert_eq!(net.replicas[replica].delivered(), 2, "replica {replica}");
        assert_eq!(net.replicas[replica].view(), 1, "replica {replica}");
    }
    assert_eq!(
        net.replicas[3].read_barrier(),
        Some(2),
        "in memory, view 1 lowered replica 3's barrier past slot 3"
    );
    // Replica 3 restarts from its disk.
    let disk = on_disk(&net, 3);
    assert_eq!(disk.view, 1);
    net.replicas[3] = Replica::recover(3, &cluster, secrets[3].clone(), small(), disk);
    net.run();
    assert_eq!(net.replicas[3].delivered(), 2);
    // Nothing in view 1 fills slot 3 without a further write: a read
    // stamped with a barrier of 3 waits for one.
    // Ten idle seconds: no view change comes to lower it.
    for _ in 0..20 {
        net.advance(SECOND / 2);
    }
    assert_eq!(net.replicas[3].view(), 1);
    let barrier = net.replicas[3].read_barrier();
    assert!(
        barrier.is_none_or(|b| b <= net.replicas[3].delivered()),
        "replica 3 (delivered {}) parks every read behind {barrier:?}, a number view 1 \
         never carried",
        net.replicas[3].delivered()
    );
}

/// A replica restarted without its memory that entered a view above its
/// floor takes part there, but it holds none of the prepared certificates
/// it held before the restart: it recovers until it holds one again for
/// every slot the view carried. Were it to count as correct at once, a
/// second replica restarted the same way after it (one restart at a time,
/// no Byzantine replica at all) would lose a batch that committed.
/// Schedule (n = 4): in view 0, primary 0 proposes X at slot 1; view-0
/// pre-prepares, prepares and commits to replica 1 are lost; 0, 2 and 3
/// prepare X, commit and execute it. Replica 2 restarts without its
/// memory; votes for view 1 and statuses of replicas changing views reach
/// it late, so the answers it hears report view 0; it votes for view 1 and,
/// once everything is delivered, enters it (1 > floor 0). View 1 re-issues
/// X at slot 1 but its prepares are lost, so nobody prepares there: replica
/// 2 still recovers. Had it stopped there, replica 0 restarting without its
/// memory next would follow into view 1 and vote for view 2 with 1 and 2,
/// and with replica 3's vote late, view 2 would be built from votes none of
/// which carries X: another batch at slot 1 where 3 executed X. So the
/// next restart waits, as an operator rolling restarts does, until replica
/// 2 reports its recovery over, which it does once it prepared X again.
#[test]
fn a_replica_restarted_without_memory_recovers_until_it_holds_the_certificates_it_lost() {
    let (cluster, secrets) = cluster(4);
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    // View 0: replica 1 sees nothing of slot 1; 0, 2 and 3 commit X there.
    net.drop_rule = Some(Box::new(|_, to, m| {
        to == 1
            && match m {
                ReplicaMessage::PrePrepare(p) => p.view == 0,
                ReplicaMessage::Prepare(p) => p.view == 0,
                ReplicaMessage::Commit(c) => c.view == 0,
                _ => false,
            }
    }));
    net.input(0, Input::Client(client_batch(&client, 0, 1)));
    net.run();
    for replica in [0, 2, 3] {
        assert_eq!(net.executed_requests(replica), vec![1], "replica {replica}");
    }
    assert!(net.executed_requests(1).is_empty());
    // Replica 2 restarts without its memory.
    net.replicas[2] = Replica::restarted_with_probe(2, &cluster, secrets[2].clone(), small(), 7);
    net.executed[2].clear();
    // Prepares of view 1 are lost too: nobody prepares there.
    net.drop_rule = Some(Box::new(|_, to, m| match m {
        ReplicaMessage::PrePrepare(p) => p.view == 0 && to == 1,
        ReplicaMessage::Prepare(p) => p.view == 1 || (p.view == 0 && to == 1),
        ReplicaMessage::Commit(c) => c.view == 0 && to == 1,
        _ => false,
    }));
    // Until replica 2 votes, what would tell it of view 1 (votes, and
    // statuses of replicas changing views) reaches it late.
    net.hold_rule = Some(Box::new(|_, to, m| {
        to == 2
            && match m {
                ReplicaMessage::ViewChange(_) | ReplicaMessage::NewView(_) => true,
                ReplicaMessage::Status(s) => s.changing_to.is_some(),
                _ => false,
            }
    }));
    net.broadcast_client(&client_batch(&client, 1, 2));
    for _ in 0..12 {
        net.advance(SECOND / 2);
        if net.replicas[2].changing_to().is_some() {
            break;
        }
    }
    assert_eq!(net.replicas[2].changing_to(), Some(1));
    net.hold_rule = None;
    net.release(|_, _, _| true);
    for _ in 0..12 {
        net.advance(SECOND / 2);
        if net
            .replicas
            .iter()
            .all(|r| r.view() == 1 && r.changing_to().is_none())
        {
            break;
        }
    }
    for replica in 0..4 {
        assert_eq!(net.replicas[replica].view(), 1, "replica {replica}");
    }
    assert!(
        !net.replicas[2].learning_after_restart(),
        "replica 2 entered view 1 above its floor: it takes part there"
    );
    assert!(
        net.replicas[2].recovering(),
        "replica 2 holds no certificate for slot 1, which view 1 carried: still recovering"
    );
    // The next restart waits for replica 2's recovery to end; the losses
    // end meanwhile.
    for _ in 0..24 {
        if !net.replicas[2].recovering() {
            break;
        }
        net.drop_rule = None;
        net.advance(SECOND / 2);
    }
    assert!(
        !net.replicas[2].recovering(),
        "replica 2 prepared slot 1 again: recovered"
    );
    let view = net.replicas[2].view();
    // Replica 0 restarts without its memory: the only replica recovering.
    net.replicas[0] = Replica::restarted_with_probe(0, &cluster, secrets[0].clone(), small(), 8);
    net.executed[0].clear();
    // Prepares are lost again, and replica 3's votes for the next view
    // reach replica 2 late.
    net.drop_rule = Some(Box::new(move |_, to, m| match m {
        ReplicaMessage::PrePrepare(p) => p.view == 0 && to == 1,
        ReplicaMessage::Prepare(p) => p.view >= view || (p.view == 0 && to == 1),
        ReplicaMessage::Commit(c) => c.view == 0 && to == 1,
        _ => false,
    }));
    net.hold_rule = Some(Box::new(move |from, to, m| {
        from == 3 && to == 2 && matches!(m, ReplicaMessage::ViewChange(_))
    }));
    net.broadcast_client(&client_batch(&client, 1, 3));
    for _ in 0..16 {
        net.advance(SECOND / 2);
        if net.replicas[1].view() > view && net.replicas[1].delivered() >= 1 {
            break;
        }
    }
    net.drop_rule = None;
    net.hold_rule = None;
    net.release(|_, _, _| true);
    for _ in 0..8 {
        net.advance(SECOND / 2);
    }
    // Replicas 1 and 3 never failed.
    assert_eq!(
        net.executed_digests(1).first(),
        net.executed_digests(3).first(),
        "replicas 1 and 3 executed different batches at slot 1 (requests {:?} and {:?})",
        net.executed_requests(1),
        net.executed_requests(3)
    );
    assert_one_order(&net);
}

/// Sends one client batch a slot, `numbers` in turn, each agreed before the
/// next goes.
fn one_slot_each(net: &mut Net, client: &SecretKey, numbers: std::ops::RangeInclusive<u64>) {
    for number in numbers {
        net.input(0, Input::Client(client_batch(client, 0, number)));
        net.run();
    }
}

/// A replica restarted from its disk in the view it had entered need not
/// wait for a view change to take part again: its disk names how far its
/// window reached there, and once its stable checkpoint is past that,
/// nothing it does in the view can contradict what it did before. Schedule
/// (n = 4, checkpoints every 4, window 8): slots 1 to 3 agree in view 0;
/// replica 3 restarts from its disk (its window reached 8); the others go
/// on to slot 12, so the checkpoint at 8 becomes stable; then replica 2
/// crashes. Only with replica 3 taking part do 0, 1 and 3 commit more in
/// view 0; while it only learned, nothing would commit until a view change.
#[test]
fn a_replica_restarted_from_disk_takes_part_in_its_view_again_once_its_checkpoint_passes_its_window()
 {
    let (cluster, secrets) = cluster(4);
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    one_slot_each(&mut net, &client, 1..=3);
    let disk = on_disk(&net, 3);
    assert_eq!(disk.window, Some((0, 8)), "its window reached 8 in view 0");
    net.replicas[3] = Replica::recover(3, &cluster, secrets[3].clone(), small(), disk);
    one_slot_each(&mut net, &client, 4..=7);
    assert!(net.replicas[3].low_watermark() < 8);
    assert!(
        net.replicas[3].learning_after_restart(),
        "its checkpoint is below where its window reached: it learns"
    );
    one_slot_each(&mut net, &client, 8..=12);
    assert!(net.replicas[3].low_watermark() >= 8);
    assert!(
        !net.replicas[3].recovering(),
        "its checkpoint passed its window: it takes part again"
    );
    // Replica 2 crashes: 0, 1 and 3 still commit, in view 0.
    net.drop_rule = Some(Box::new(|from, to, _| from == 2 || to == 2));
    one_slot_each(&mut net, &client, 13..=14);
    for replica in [0, 1, 3] {
        assert_eq!(net.replicas[replica].view(), 0, "replica {replica}");
        assert_eq!(
            net.executed_requests(replica).last(),
            Some(&14),
            "replica {replica}"
        );
    }
    assert_one_order(&net);
}

/// The bound that lets it take part again must cover everything it did in
/// the view: a replica restarted from its disk sends no prepare in its view
/// at a number its window reached before the restart. Schedule (n = 4):
/// slots 1 to 3 agree in view 0; replica 3 then receives the pre-prepare
/// of slot 4 (X) and prepares it, but the others' prepares to it are lost,
/// so it holds no certificate; it restarts from its disk. A faulty primary
/// 0 then sends it a second proposal (Y) for slot 4: had it taken part at
/// once, its prepare for Y beside its earlier one for X would let X prepare
/// at one replica and Y commit at others.
#[test]
fn a_replica_restarted_from_disk_prepares_nothing_in_its_view_where_its_window_reached() {
    let (cluster, secrets) = cluster(4);
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    one_slot_each(&mut net, &client, 1..=3);
    net.drop_rule = Some(Box::new(|_, to, m| {
        to == 3 && matches!(m, ReplicaMessage::Prepare(p) if p.seq == 4)
    }));
    one_slot_each(&mut net, &client, 4..=4);
    let disk = on_disk(&net, 3);
    assert!(
        disk.prepared
            .iter()
            .all(|(proof, _)| proof.pre_prepare.seq != 4),
        "it prepared nothing at 4"
    );
    let mut replica = Replica::recover(3, &cluster, secrets[3].clone(), small(), disk);
    // Whatever it decides about taking part, it has decided by now.
    replica.handle(net.now, Input::Tick, &mut Vec::new());
    let other = client_batch(&client, 1, 1);
    let out = deliver(
        &mut replica,
        0,
        ReplicaMessage::PrePrepare(pre_prepare(&secrets[0], 0, 4, vec![other])),
    );
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Broadcast(ReplicaMessage::Prepare(_)))),
        "it prepared a second proposal for slot 4 of view 0: {out:?}"
    );
}

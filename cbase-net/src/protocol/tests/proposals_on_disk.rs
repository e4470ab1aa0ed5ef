//! A proposal a replica vouched for survives its restart from disk.
//!
//! A faulty primary can assemble a prepared certificate from the prepares
//! of correct backups that never prepared the proposal themselves, and any
//! later view must then re-issue that digest. Those backups are the only
//! correct replicas that hold the proposal; if they forget it, nobody can
//! serve it and the cluster stops at that sequence number.

use super::*;

/// Schedule: n = 4, f = 1, the primary (0) is faulty. It sends its
/// pre-prepare for slot 1 to backups 1 and 2 only, and their prepares
/// reach it alone, so it holds a prepared certificate while no correct
/// replica is prepared. Backups 1 and 2 restart from their disks (a power
/// cut). The view changes to 1; the faulty replica votes with its
/// certificate and serves nothing else, and the new primary (1) builds
/// the view from the votes of 0, 1 and 2, so the view re-issues the
/// proposal at slot 1. Every correct replica must execute it.
#[test]
fn a_proposal_vouched_for_before_a_restart_from_disk_can_still_be_served() {
    let (cluster, secrets) = cluster(4);
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    let batch = client_batch(&client, 0, 1);
    // The primary's pre-prepare reaches 1 and 2 only, and the backups'
    // prepares reach the primary only.
    net.drop_rule = Some(Box::new(|from, to, m| match m {
        ReplicaMessage::PrePrepare(_) => to == 3,
        ReplicaMessage::Prepare(_) => to != 0,
        ReplicaMessage::Commit(_) => true,
        _ => from == 0,
    }));
    net.broadcast_client(&batch);
    assert!(
        net.replicas[0].prepared.contains_key(&1),
        "the primary holds a certificate for slot 1"
    );
    for replica in 1..4 {
        assert!(
            !net.replicas[replica].prepared.contains_key(&1),
            "replica {replica} is not prepared"
        );
    }
    let proposal_digest = net.replicas[0].prepared[&1].pre_prepare.digest;

    // Backups 1 and 2 restart from what they wrote to disk.
    for replica in [1, 2] {
        let disk = on_disk(&net, replica);
        net.replicas[replica] = Replica::recover(
            replica as ReplicaId,
            &cluster,
            secrets[replica].clone(),
            small(),
            disk,
        );
    }

    // From now on the faulty replica sends only its view-change votes (with
    // its certificate), and replica 3's votes do not reach the new primary,
    // which builds view 1 from the votes of 0, 1 and 2.
    net.drop_rule = Some(Box::new(|from, to, m| match m {
        ReplicaMessage::ViewChange(_) => from == 3 && to == 1,
        _ => from == 0,
    }));
    for _ in 0..40 {
        net.broadcast_client(&batch);
        net.advance(SECOND / 2);
    }
    for replica in 1..4 {
        assert_eq!(
            net.executed[replica].first().map(|c| c.digest),
            Some(proposal_digest),
            "replica {replica} executed the re-issued proposal at slot 1 (missing proposals: {})",
            net.replicas[replica].proposals.missing_count()
        );
        assert_eq!(net.executed_requests(replica), vec![1], "replica {replica}");
    }
}

//! Schedules around view changes and new-views: Byzantine new primaries and
//! voters, replays, and long stretches of failed view changes.

use super::*;

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

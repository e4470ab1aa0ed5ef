//! What a replica holds must not grow with elapsed time or with the
//! requests, views and checkpoints it served: every collection is emptied
//! on every path that makes its entries moot.

use super::*;

/// A client's batch proposed in view 0 at a slot that never prepares
/// (view 0's pre-prepare does not reach replica 1, and none of its
/// prepares arrive anywhere), then retransmitted to the backups that saw
/// it proposed: they time it, holding no copy.
fn timed_in_a_slot_that_never_prepares() -> (Net, ClientBatch) {
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    let batch = client_batch(&client, 0, 1);
    net.drop_rule = Some(Box::new(|_, to, m| match m {
        ReplicaMessage::PrePrepare(p) => p.view == 0 && to == 1,
        ReplicaMessage::Prepare(p) => p.view == 0,
        _ => false,
    }));
    net.input(0, Input::Client(batch.clone()));
    net.run();
    net.input(2, Input::Client(batch.clone()));
    net.input(3, Input::Client(batch.clone()));
    net.run();
    (net, batch)
}

/// A backup times a batch it saw proposed when its client sends it
/// directly (a retransmission): `waiting` gets an entry, and no copy is
/// queued (the batch is known). A new view that skips the slot (it never
/// prepared) makes the replicas forget where the batch was
/// (`known_batches`), but not the timer. If the client sends nothing more
/// (it crashed, or gave up after its timeout), no replica holds the batch
/// to propose it again, and the timer is never disarmed: it stays in
/// `waiting` for good and makes the backups depose every primary in turn.
#[test]
fn a_request_timer_for_a_batch_a_new_view_skipped_does_not_outlive_its_client() {
    let (mut net, _) = timed_in_a_slot_that_never_prepares();
    // The client is heard from no more.
    assert_eq!(net.replicas[2].waiting.len(), 1);
    // A minute of an idle cluster.
    for _ in 0..600 {
        net.advance(SECOND / 10);
    }
    let views: Vec<View> = net.replicas.iter().map(Replica::view).collect();
    let timers: Vec<usize> = net.replicas.iter().map(|r| r.waiting.len()).collect();
    assert!(
        net.replicas.iter().all(|r| r.waiting.is_empty()),
        "request timers still held after a minute: {timers:?} (views now {views:?}, every \
         replica's known_batches {:?})",
        net.replicas
            .iter()
            .map(Replica::known_batch_count)
            .collect::<Vec<_>>()
    );
}

/// The same schedule, but the client keeps retransmitting (as `NetClient`
/// does until its call times out): dropping the timers loses nothing, the
/// retransmission after the new view is held, timed and ordered anew, and
/// every replica executes it once.
#[test]
fn a_batch_a_new_view_skipped_is_ordered_when_its_client_retransmits() {
    let (mut net, batch) = timed_in_a_slot_that_never_prepares();
    // Long enough for the backups to depose view 0's primary.
    for _ in 0..100 {
        net.advance(SECOND / 10);
    }
    assert!(net.replicas.iter().all(|r| r.view() >= 1));
    assert!((0..4).all(|r| net.executed_requests(r).is_empty()));
    net.broadcast_client(&batch);
    net.run();
    for replica in 0..4 {
        assert_eq!(net.executed_requests(replica), vec![1], "replica {replica}");
    }
    assert!(net.replicas.iter().all(|r| r.waiting.is_empty()));
}

//! What a replica holds must not grow with elapsed time or with the
//! requests, views and checkpoints it served: every collection is emptied
//! on every path that makes its entries moot.

use super::*;

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
    let mut net = Net::new(4, small());
    let client = SecretKey::from_seed([99; 32]);
    let batch = client_batch(&client, 0, 1);
    // View 0's pre-prepare does not reach replica 1, and none of view 0's
    // prepares arrive anywhere: slot 1 never prepares.
    net.drop_rule = Some(Box::new(|_, to, m| match m {
        ReplicaMessage::PrePrepare(p) => p.view == 0 && to == 1,
        ReplicaMessage::Prepare(p) => p.view == 0,
        _ => false,
    }));
    net.input(0, Input::Client(batch.clone()));
    net.run();
    // The client retransmits to the backups that saw it proposed, then is
    // heard from no more.
    net.input(2, Input::Client(batch.clone()));
    net.input(3, Input::Client(batch));
    net.run();
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

//! Replicas restarted over data directories that are not theirs.

use std::time::Duration;

use cbase_net::protocol::ProtocolConfig;
use cbase_net::{DataDirs, LocalCluster};

mod kv_store;
use kv_store::{Put, empty};

fn builder(data: DataDirs) -> cbase_net::LocalClusterBuilder {
    LocalCluster::builder()
        .replicas(4)
        .workers(1)
        .data(data)
        .protocol(ProtocolConfig {
            checkpoint_interval: 4,
            window: 16,
            ..ProtocolConfig::default()
        })
}

/// A cluster over temporary directories that completed 5 puts (a stable
/// checkpoint on every disk), and its client.
async fn started_with_five_puts() -> (LocalCluster, cbase_net::client::NetClient) {
    let cluster = builder(DataDirs::Temporary)
        .start(empty)
        .await
        .expect("cluster");
    let client = cluster.client().expect("client");
    for key in 0..5 {
        let () = client.call(&Put { key, value: key }).await.expect("put");
    }
    (cluster, client)
}

/// A `LocalCluster` started again over the directories of an earlier one
/// (`DataDirs::Under`, documented to "continue where it was") runs with
/// fresh keys, so each replica restarts from a directory written under
/// another cluster file: its stable checkpoint's proof and its prepared
/// certificates are signed by keys this cluster does not have. Nothing
/// checks whose directory it is: every replica recovers from it (a
/// learner in the view it wrote), and the view change that would end the
/// recovery needs view-change votes whose certificates hold under the new
/// keys, which none of them can send. Schedule: start 4 replicas under a
/// root; complete 10 puts (stable checkpoints on disk); shut down; start a
/// new `LocalCluster` under the same root; one put. It must either be
/// refused at start (the directories belong to another cluster file) or
/// complete; it does neither: the put never completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_started_over_directories_written_under_other_keys_is_refused_or_works() {
    let root = tempfile::tempdir().expect("root");
    let first = builder(DataDirs::Under(root.path().to_owned()))
        .start(empty)
        .await
        .expect("first cluster");
    let client = first.client().expect("client");
    for key in 0..10 {
        let () = client.call(&Put { key, value: key }).await.expect("put");
    }
    drop(client);
    first.shutdown().await;

    let second = match builder(DataDirs::Under(root.path().to_owned()))
        .start(empty)
        .await
    {
        // Refusing directories of another cluster file is a correct answer.
        Err(error) => {
            eprintln!("refused: {error}");
            return;
        }
        Ok(cluster) => cluster,
    };
    let client = second.client().expect("client");
    let put = tokio::time::timeout(
        Duration::from_secs(60),
        client.call(&Put { key: 99, value: 1 }),
    )
    .await;
    let views: Vec<u64> = second
        .replicas()
        .map(|r| r.metrics().view.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    let refused: Vec<u64> = second
        .replicas()
        .map(|r| r.metrics().protocol.lock().bad_certificate)
        .collect();
    assert!(
        matches!(put, Ok(Ok(()))),
        "started over the old directories, the cluster did not complete a put in 60 s \
         ({put:?}); replicas' views {views:?}, view-change votes refused as bad certificates \
         {refused:?}"
    );
    second.shutdown().await;
}

/// A data directory records nothing of whose it is: replica 1 restarted
/// over replica 2's directory (directories swapped by hand, or a deploy
/// pointing at the wrong one) recovers from it, taking replica 2's view as
/// the highest it voted for and replica 2's certificates as its own. As a
/// replica restarted from its disk it then ignores what peers say about
/// higher views, so it may vote again in views it voted in before, and its
/// view-change votes omit the certificates it had written. Schedule: 4
/// replicas with data directories; 5 puts; stop replicas 1 and 2; swap
/// their directories; restart replica 1: it must be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_over_another_replicas_directory_is_refused() {
    let (mut cluster, _client) = started_with_five_puts().await;
    cluster.stop_replica(1).await;
    cluster.stop_replica(2).await;
    let (one, two) = (
        cluster.data_dir(1).expect("dir"),
        cluster.data_dir(2).expect("dir"),
    );
    let aside = one.with_extension("aside");
    std::fs::rename(&one, &aside).expect("move 1 aside");
    std::fs::rename(&two, &one).expect("2 to 1");
    std::fs::rename(&aside, &two).expect("1 to 2");
    let restarted = cluster.restart_replica(1, empty()).await;
    assert!(
        restarted.is_err(),
        "replica 1 started over replica 2's data directory"
    );
    cluster.shutdown().await;
}

/// Copies a replica's data directory (its files; it holds no
/// subdirectories), as a backup would.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("backup directory");
    for entry in std::fs::read_dir(from).expect("data directory") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

/// A replica put back from a copy taken before a view change, while the
/// others went on, started as restored: it catches up from the copy and
/// its peers, and executes what they executed, without voting as if the
/// copy's view were its last. Schedule: 4 replicas with data directories;
/// 5 puts; replica 2's directory copied (it stopped for the copy); primary
/// 0 stops, the others move to a later view and complete 5 more puts;
/// replica 2 stops, gets its copy back and is restored; 0 comes back; 5
/// more puts; replica 2 reaches what the others executed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restored_from_a_copy_taken_before_a_view_change_catches_up() {
    let (mut cluster, client) = started_with_five_puts().await;
    let dir = cluster.data_dir(2).expect("dir");
    let copy = dir.with_extension("copy");
    cluster.stop_replica(2).await;
    copy_dir(&dir, &copy);
    cluster
        .restart_replica(2, empty())
        .await
        .expect("restart 2");
    cluster.stop_replica(0).await;
    for key in 5..10 {
        let () = client.call(&Put { key, value: key }).await.expect("put");
    }
    let view = |cluster: &LocalCluster, id| {
        cluster
            .replica(id)
            .expect("running")
            .metrics()
            .view
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert!(view(&cluster, 1) >= 1, "primary 0 was replaced");
    cluster.stop_replica(2).await;
    std::fs::remove_dir_all(&dir).expect("remove 2's directory");
    copy_dir(&copy, &dir);
    cluster
        .restore_replica(2, empty())
        .await
        .expect("restore 2");
    cluster
        .restart_replica(0, empty())
        .await
        .expect("restart 0");
    for key in 10..15 {
        let () = client.call(&Put { key, value: key }).await.expect("put");
    }
    let delivered = |cluster: &LocalCluster, id| {
        cluster
            .replica(id)
            .expect("running")
            .metrics()
            .delivered
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    // Bounded in count, not time: each round is a put the others order.
    let target = delivered(&cluster, 1);
    let mut rounds = 0;
    while delivered(&cluster, 2) < target {
        rounds += 1;
        assert!(rounds < 200, "replica 2 never caught up");
        let () = client
            .call(&Put {
                key: 100 + rounds,
                value: rounds,
            })
            .await
            .expect("put");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cluster.checkpoint_agreement().agree());
    cluster.shutdown().await;
}

/// A replica restarted from its own directory in a healthy cluster takes
/// part again without waiting for a view change (a healthy cluster may
/// never have one): once its stable checkpoint passes how far its window
/// reached before the restart, which its directory records. Bounded in
/// count, not time: each round is a put the others order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_from_its_directory_takes_part_again_without_a_view_change() {
    let (mut cluster, client) = started_with_five_puts().await;
    cluster.stop_replica(3).await;
    cluster
        .restart_replica(3, empty())
        .await
        .expect("restart 3");
    let recovering = |cluster: &LocalCluster| {
        cluster
            .replica(3)
            .expect("running")
            .metrics()
            .recovering
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert!(recovering(&cluster), "restarted: it learns first");
    let mut rounds = 0;
    while recovering(&cluster) {
        rounds += 1;
        assert!(rounds < 200, "replica 3 never took part again");
        let () = client
            .call(&Put {
                key: 100 + rounds,
                value: rounds,
            })
            .await
            .expect("put");
    }
    assert!(cluster.checkpoint_agreement().agree());
    cluster.shutdown().await;
}

//! A replica whose data directory holds a state that no longer matches the
//! checkpoint digest it recorded (an entry added behind its back, with
//! every file checksum intact) refuses to start, naming the file, and the
//! cluster goes on without it.

use cbase_net::protocol::ProtocolConfig;
use cbase_net::{DataDirs, LocalCluster};

mod kv_store;
use kv_store::{Put, empty};

const ENTRIES: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("entries");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_that_does_not_match_its_checkpoint_digest_is_refused_at_start() {
    let mut cluster = LocalCluster::builder()
        .replicas(4)
        .workers(2)
        .data(DataDirs::Temporary)
        .protocol(ProtocolConfig {
            checkpoint_interval: 4,
            window: 16,
            ..ProtocolConfig::default()
        })
        .start(empty)
        .await
        .expect("cluster");
    let client = cluster.client().expect("client");
    for key in 0..40 {
        let () = client.call(&Put { key, value: key }).await.expect("put");
    }
    // Wait until replica 3 has a stable checkpoint on disk.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while cluster
        .replica(3)
        .expect("running")
        .metrics()
        .stable
        .lock()
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "no stable checkpoint");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    cluster.stop_replica(3).await;

    // Add an entry behind the replica's back: redb's checksums still hold.
    // (Its recent changes may still be deltas, sealed with checksums of
    // their own; the entries table is plain.)
    let file = cluster
        .data_dir(3)
        .expect("a data directory")
        .join("replica.redb");
    {
        let db = redb::Database::open(&file).expect("open the state file");
        let txn = db.begin_write().expect("write");
        {
            let mut entries = txn.open_table(ENTRIES).expect("entries");
            // Container 0, key 200 (one byte), value 7: no request wrote it.
            let key = [0u8, 0, 0, 0, 200];
            entries
                .insert(key.as_slice(), [7u8].as_slice())
                .expect("insert");
        }
        txn.commit().expect("commit");
    }

    let error = cluster
        .restart_replica(3, empty())
        .await
        .expect_err("a state that does not match its digest is refused")
        .to_string();
    assert!(
        error.contains("does not match the digest of checkpoint") && error.contains("replica.redb"),
        "{error}"
    );
    // The others go on.
    let () = client.call(&Put { key: 99, value: 1 }).await.expect("put");
    cluster.shutdown().await;
}

//! The read-only fast path: a method whose rules only read is answered by
//! 2f+1 matching replicas without ordering, sees every write completed
//! before it, keeps to the fast path with a replica down, and can be turned
//! off.

use std::time::Duration;

use cbase::prelude::*;
use cbase::{ClientConfig, ClientError, ExecError, LocalCluster};

/// A shelf of numbered slots.
#[cbase::service]
pub trait Shelf {
    /// Puts `value` in slot `id`.
    #[writes(slots[id])]
    fn put(&self, id: u64, value: u64);

    /// What slot `id` holds.
    #[reads(slots[id])]
    fn get(&self, id: u64) -> Option<u64>;

    /// Declares a read, then writes: refused.
    #[reads(slots[id])]
    fn sneak(&self, id: u64);

    /// No rule: conflicts with everything, so it is ordered.
    fn count(&self) -> u64;
}

#[derive(Default, cbase::State)]
pub struct Slots {
    slots: Table<u64, u64>,
}

impl Shelf for Slots {
    fn put(&self, id: u64, value: u64) {
        self.slots.insert(id, value);
    }

    fn get(&self, id: u64) -> Option<u64> {
        self.slots.get(&id)
    }

    fn sneak(&self, id: u64) {
        self.slots.insert(id, 0);
    }

    fn count(&self) -> u64 {
        self.slots.len() as u64
    }
}

/// A client that waits long for 2f+1 matching answers, so a busy machine
/// does not turn fast reads into ordered ones.
fn patient(fast_path: bool) -> ClientConfig {
    ClientConfig {
        read_fast_path: fast_path,
        read_timeout: Duration::from_secs(30),
        ..ClientConfig::default()
    }
}

/// Reads slot `id` (each read must answer `value`) until one is answered
/// on the fast path. Bounded tries: a replica still executing the last
/// write answers otherwise, and that read is ordered.
async fn read_until_fast(
    net: &cbase::NetClient,
    shelf: &ShelfClient<cbase::NetClient>,
    id: u64,
    value: u64,
) {
    let before = net.fast_reads();
    for _ in 0..50 {
        assert_eq!(shelf.get(id).await.unwrap(), Some(value));
        if net.fast_reads() > before {
            return;
        }
    }
    panic!("no read took the fast path");
}

#[test]
fn methods_whose_rules_only_read_are_read_only() {
    assert!(ShelfRequest::Get { id: 1 }.read_only());
    assert!(ShelfRequest::Sneak { id: 1 }.read_only());
    assert!(!ShelfRequest::Put { id: 1, value: 2 }.read_only());
    assert!(
        !ShelfRequest::Count {}.read_only(),
        "the default rule writes everything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_sees_every_write_completed_before_it() {
    let cluster = LocalCluster::builder()
        .replicas(4)
        .start(|| ShelfService(Slots::default()))
        .await
        .unwrap();
    let writer = ShelfClient::new(cluster.client_with(patient(true)).unwrap());
    let reader_net = cluster.client_with(patient(true)).unwrap();
    let reader = ShelfClient::new(reader_net.clone());
    for value in 1..=40 {
        writer.put(7, value).await.unwrap();
        // Another client, right after the write completed.
        assert_eq!(reader.get(7).await.unwrap(), Some(value));
    }
    // Once the replicas are quiet, reads take the fast path.
    read_until_fast(&reader_net, &reader, 7, 40).await;
    let answered: u64 = cluster
        .replicas()
        .map(|r| {
            r.metrics()
                .reads_answered
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    assert!(answered >= 3, "{answered} reads answered unordered");
    cluster.shutdown().await;
}

/// A read needs 2f+1 matching answers, not n: with a replica down, reads
/// stay on the fast path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_stay_on_the_fast_path_with_a_replica_down() {
    let mut cluster = LocalCluster::builder()
        .replicas(4)
        .start(|| ShelfService(Slots::default()))
        .await
        .unwrap();
    let net = cluster.client_with(patient(true)).unwrap();
    let shelf = ShelfClient::new(net.clone());
    shelf.put(7, 1).await.unwrap();
    // A backup: the primary keeps ordering without a view change.
    cluster.stop_replica(3).await;
    shelf.put(7, 2).await.unwrap();
    // Right after the write, one of the three replicas up may not have
    // seen it prepared: its answer differs, and the read is ordered.
    read_until_fast(&net, &shelf, 7, 2).await;
    // Now all three executed it: their answers match, and the client waits
    // long (`patient`) for them.
    let before = net.fast_reads();
    for _ in 0..40 {
        assert_eq!(shelf.get(7).await.unwrap(), Some(2));
    }
    assert_eq!(net.fast_reads() - before, 40, "a read was ordered");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_method_that_writes_is_refused_on_the_fast_path_too() {
    let cluster = LocalCluster::builder()
        .replicas(4)
        .start(|| ShelfService(Slots::default()))
        .await
        .unwrap();
    let client = ShelfClient::new(cluster.client_with(patient(true)).unwrap());
    client.put(3, 9).await.unwrap();
    let error = client.sneak(3).await.unwrap_err();
    let ClientError::Exec(ExecError::UndeclaredAccess(refusal)) = &error else {
        panic!("{error}");
    };
    assert!(refusal.to_string().contains("sneak"), "{refusal}");
    assert_eq!(client.get(3).await.unwrap(), Some(9), "nothing was written");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_path_can_be_turned_off() {
    let cluster = LocalCluster::builder()
        .replicas(4)
        .start(|| ShelfService(Slots::default()))
        .await
        .unwrap();
    let net = cluster.client_with(patient(false)).unwrap();
    let client = ShelfClient::new(net.clone());
    client.put(1, 5).await.unwrap();
    for _ in 0..5 {
        assert_eq!(client.get(1).await.unwrap(), Some(5));
    }
    assert_eq!(client.count().await.unwrap(), 1);
    assert_eq!(net.fast_reads(), 0);
    cluster.shutdown().await;
}

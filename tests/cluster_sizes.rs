//! Clusters of other sizes than 3f+1 = 4, end to end: n = 5 (f = 1, quorums
//! of 4) and n = 7 (f = 2, quorums of 5), each serving with as many replicas
//! stopped as it tolerates.

use std::time::Duration;

use cbase::prelude::*;

#[cbase::service]
pub trait Tally {
    #[writes(counts[name])]
    fn add(&self, name: String, amount: u64) -> u64;

    #[reads(counts[*])]
    fn sum(&self) -> u64;
}

#[derive(Default, cbase::State)]
pub struct Counts {
    counts: Table<String, u64>,
}

impl Tally for Counts {
    fn add(&self, name: String, amount: u64) -> u64 {
        let next = self.counts.get(&name).unwrap_or(0) + amount;
        self.counts.insert(name, next);
        next
    }
    fn sum(&self) -> u64 {
        self.counts.fold(0, |sum, _, count| sum + count)
    }
}

/// Starts `n` replicas, stops the `stopped` ones (the primary of view 0
/// among them, so a view change must complete with the rest), and checks
/// that calls are still answered exactly once.
async fn serves_with_replicas_stopped(n: usize, stopped: &[u32]) {
    let protocol = cbase::ProtocolConfig {
        request_timeout: Duration::from_millis(300),
        view_change_timeout: Duration::from_secs(1),
        checkpoint_interval: 8,
        window: 32,
        ..cbase::ProtocolConfig::default()
    };
    let mut cluster = LocalCluster::builder()
        .replicas(n)
        .workers(2)
        .protocol(protocol)
        .start(|| TallyService(Counts::default()))
        .await
        .unwrap();
    let tally = TallyClient::new(cluster.client().unwrap());
    assert_eq!(tally.add("a".into(), 1).await.unwrap(), 1);
    for replica in stopped {
        cluster.stop_replica(*replica).await;
    }
    for i in 0..20u64 {
        tally.add(format!("k{}", i % 3), 1).await.unwrap();
    }
    assert_eq!(tally.sum().await.unwrap(), 21);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_replicas_serve_with_one_stopped() {
    serves_with_replicas_stopped(5, &[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_replicas_serve_with_two_stopped() {
    serves_with_replicas_stopped(7, &[0, 3]).await;
}

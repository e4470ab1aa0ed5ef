//! A 4-replica cluster in one process, serving a bank through the generated
//! typed client: correct replies, the same digest on every replica at every
//! checkpoint, and progress with one replica stopped.

use std::time::{Duration, Instant};

use cbase::prelude::*;
use cbase::{ProtocolConfig, net::ReplicaId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankError {
    NoSuchAccount(u64),
    Insufficient,
}

#[cbase::service]
pub trait Bank {
    #[writes(accounts[id])]
    fn open(&self, id: u64, amount: u64);

    #[reads(accounts[id])]
    fn balance(&self, id: u64) -> Option<u64>;

    #[writes(accounts[from], accounts[to])]
    fn transfer(&self, from: u64, to: u64, amount: u64) -> Result<(), BankError>;

    #[reads(accounts[*])]
    fn total(&self) -> u64;
}

#[derive(Default, cbase::State)]
pub struct Accounts {
    accounts: Table<u64, u64>,
}

impl Bank for Accounts {
    fn open(&self, id: u64, amount: u64) {
        self.accounts.insert(id, amount);
    }
    fn balance(&self, id: u64) -> Option<u64> {
        self.accounts.get(&id)
    }
    fn transfer(&self, from: u64, to: u64, amount: u64) -> Result<(), BankError> {
        if from == to {
            return Ok(());
        }
        let balance = self
            .accounts
            .get(&from)
            .ok_or(BankError::NoSuchAccount(from))?;
        if !self.accounts.contains_key(&to) {
            return Err(BankError::NoSuchAccount(to));
        }
        if balance < amount {
            return Err(BankError::Insufficient);
        }
        self.accounts.insert(from, balance - amount);
        self.accounts.update(&to, |b| *b += amount);
        Ok(())
    }
    fn total(&self) -> u64 {
        self.accounts.fold(0, |sum, _, b| sum + b)
    }
}

fn small_checkpoints() -> ProtocolConfig {
    ProtocolConfig {
        checkpoint_interval: 8,
        window: 32,
        ..ProtocolConfig::default()
    }
}

/// Waits until `condition` holds; a busy machine gets a generous deadline.
async fn wait_for<F: Fn() -> bool>(what: &str, condition: F) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ANCHOR: cluster-test
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_on_four_replicas_agrees_at_every_checkpoint() {
    let cluster = LocalCluster::builder()
        .replicas(4)
        .workers(8)
        .protocol(small_checkpoints())
        .start(|| BankService(Accounts::default()))
        .await
        .unwrap();
    let bank = BankClient::new(cluster.client().unwrap());
    for id in 0..10 {
        bank.open(id, 100).await.unwrap();
    }
    // Concurrent transfers from many tasks, so batches hold several requests.
    let mut tasks = Vec::new();
    for t in 0..20u64 {
        let bank = bank.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10u64 {
                let (from, to) = ((t + i) % 10, (t * 3 + i + 1) % 10);
                bank.transfer(from, to, 1 + i % 5).await.unwrap().ok();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(bank.total().await.unwrap(), 1000, "money is conserved");
    assert_eq!(bank.balance(42).await.unwrap(), None);
    assert_eq!(
        bank.transfer(0, 42, 1).await.unwrap(),
        Err(BankError::NoSuchAccount(42))
    );

    // Every replica reaches the same stable checkpoints with the same digests
    // (compared by sequence number: a replica that caught up by state
    // transfer skipped the checkpoints it did not execute).
    wait_for("stable checkpoints on every replica", || {
        cluster
            .replicas()
            .all(|r| r.metrics().stable.lock().len() >= 3)
    })
    .await;
    wait_for("3 checkpoints taken by every replica", || {
        cluster.checkpoint_agreement().common >= 3
    })
    .await;
    let agreement = cluster.checkpoint_agreement();
    assert!(
        agreement.agree(),
        "checkpoint digests differ: {agreement:?}"
    );
    for replica in cluster.replicas() {
        assert_eq!(
            replica
                .metrics()
                .diverged
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        let stats = replica.metrics().protocol.lock().clone();
        assert_eq!(
            replica.metrics().total_dropped(),
            0,
            "a correct run drops nothing: {stats:?}"
        );
    }
    cluster.shutdown().await;
}
// ANCHOR_END: cluster-test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stopped_replica_does_not_stop_the_cluster() {
    let mut cluster = LocalCluster::builder()
        .replicas(4)
        .workers(4)
        .protocol(small_checkpoints())
        .start(|| BankService(Accounts::default()))
        .await
        .unwrap();
    let bank = BankClient::new(cluster.client().unwrap());
    bank.open(1, 10).await.unwrap();
    let stopped: ReplicaId = 3;
    cluster.stop_replica(stopped).await;
    for i in 0..40 {
        bank.open(100 + i, i).await.unwrap();
    }
    assert_eq!(bank.balance(139).await.unwrap(), Some(39));
    assert_eq!(bank.total().await.unwrap(), 10 + (0..40).sum::<u64>());
    // The three live replicas still stabilize checkpoints.
    wait_for("stable checkpoints without replica 3", || {
        cluster
            .replicas()
            .all(|r| !r.metrics().stable.lock().is_empty())
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_primary_is_replaced_by_a_view_change() {
    let protocol = ProtocolConfig {
        request_timeout: Duration::from_millis(300),
        view_change_timeout: Duration::from_secs(1),
        ..small_checkpoints()
    };
    let mut cluster = LocalCluster::builder()
        .replicas(4)
        .workers(4)
        .protocol(protocol)
        .start(|| BankService(Accounts::default()))
        .await
        .unwrap();
    let bank = BankClient::new(cluster.client().unwrap());
    for id in 0..5 {
        bank.open(id, 100).await.unwrap();
    }
    cluster.stop_replica(0).await; // the primary of view 0
    bank.transfer(1, 2, 30).await.unwrap().unwrap();
    for i in 0..20u64 {
        bank.transfer(i % 5, (i + 1) % 5, 1).await.unwrap().unwrap();
    }
    assert_eq!(bank.balance(2).await.unwrap(), Some(130));
    assert_eq!(bank.total().await.unwrap(), 500);
    for replica in cluster.replicas() {
        assert!(
            replica
                .metrics()
                .view
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1,
            "replica {} moved on",
            replica.id()
        );
    }
    cluster.shutdown().await;
}

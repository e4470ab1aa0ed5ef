//! State transfer over real connections, with a state many times larger than
//! the transport's frame limit: a replica that was down while its peers
//! moved past several checkpoints (and discarded their logs) fetches the
//! state in parts, installs it, and from then on takes the same checkpoints
//! as its peers. A replica restarted from its data directory fetches only
//! what changed while it was down.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cbase_core::{
    AccessSet, Container, Context, ExecutorBuilder, Key, Request, Service, State, Table,
};
use cbase_net::client::{ClientConfig, NetClient};
use cbase_net::config::{ClusterConfig, ReplicaEntry, ReplicaId};
use cbase_net::crypto::SecretKey;
use cbase_net::protocol::ProtocolConfig;
use cbase_net::runtime::{NodeConfig, ReplicaNode};
use cbase_net::transport::TransportConfig;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// Frames of at most 32 KiB (room for the new-views of a window of 16): the
/// state below grows to about 200 KiB.
const MAX_FRAME: usize = 32 * 1024;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Put {
    key: u64,
    len: usize,
}

impl Request for Put {
    fn access_set(&self) -> AccessSet {
        AccessSet::none().write(Key::entry("blobs", &self.key))
    }
    fn method(&self) -> &'static str {
        "put"
    }
}

struct Blobs {
    blobs: Table<u64, Vec<u8>>,
}

impl State for Blobs {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("blobs", &self.blobs)]
    }
}

struct Store(Blobs);

impl Service for Store {
    type Request = Put;
    type Response = u64;
    fn execute(&self, put: Put, _: &Context) -> u64 {
        // Distinct bytes per key, so a misplaced chunk changes the digest.
        let bytes = (0..put.len).map(|i| (put.key as usize + i) as u8).collect();
        self.0.blobs.insert(put.key, bytes);
        put.key
    }
    fn state(&self) -> &dyn State {
        &self.0
    }
}

fn secret(id: ReplicaId) -> SecretKey {
    SecretKey::from_seed([id as u8 + 40; 32])
}

async fn start_replica(
    id: ReplicaId,
    cluster: &ClusterConfig,
    listener: TcpListener,
) -> ReplicaNode {
    let config = NodeConfig {
        id,
        cluster: cluster.clone(),
        secret: secret(id),
        protocol: ProtocolConfig {
            checkpoint_interval: 4,
            window: 16,
            request_timeout: Duration::from_millis(300),
            view_change_timeout: Duration::from_millis(600),
            // A full proposal must fit the small frames.
            max_batch_bytes: MAX_FRAME / 2,
            ..ProtocolConfig::default()
        },
        transport: TransportConfig {
            max_frame: MAX_FRAME,
            ..TransportConfig::default()
        },
        executor: ExecutorBuilder::new().workers(4),
        recovering: false,
        restored: false,
        data_dir: None,
    };
    let service = Store(Blobs {
        blobs: Table::new(),
    });
    ReplicaNode::start(config, listener, service).await.unwrap()
}

async fn put_all(client: &NetClient, keys: std::ops::Range<u64>) {
    for key in keys {
        let put = Put { key, len: 1024 };
        let answer: u64 = client.call(&put).await.expect("the put is answered");
        assert_eq!(answer, key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_was_down_fetches_a_state_larger_than_a_frame_in_parts() {
    let mut listeners = Vec::new();
    let mut replicas = Vec::new();
    for id in 0..4 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        replicas.push(ReplicaEntry {
            id,
            address: listener.local_addr().unwrap().to_string(),
            public_key: secret(id).public(),
        });
        listeners.push(listener);
    }
    let cluster = ClusterConfig {
        f: 1,
        replicas,
        clients: None,
    };
    let late_listener = listeners.pop().expect("four listeners");
    let mut nodes = Vec::new();
    for (id, listener) in listeners.into_iter().enumerate() {
        nodes.push(start_replica(id as ReplicaId, &cluster, listener).await);
    }
    let client = NetClient::connect(
        cluster.clone(),
        ClientConfig {
            transport: TransportConfig {
                max_frame: MAX_FRAME,
                ..TransportConfig::default()
            },
            // Batches must fit the small frames.
            max_request_bytes: MAX_FRAME / 2,
            ..ClientConfig::default()
        },
    )
    .unwrap();

    // Replica 3 is down while the others store about 200 KiB and move past
    // many checkpoints (every 4 sequence numbers), discarding their logs.
    put_all(&client, 0..200).await;

    // The last checkpoint taken while replica 3 was down.
    let outage_end = nodes[0]
        .metrics()
        .checkpoints
        .lock()
        .back()
        .expect("checkpoints")
        .0;

    let late = start_replica(3, &cluster, late_listener).await;
    // Keep the cluster moving, so replica 3 hears of newer checkpoints.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut next = 200;
    let installed = |node: &ReplicaNode| node.metrics().states_installed.load(Ordering::Relaxed);
    while installed(&late) == 0 {
        assert!(
            Instant::now() < deadline,
            "replica 3 never installed a transferred state: {:?}",
            late.metrics().protocol.lock()
        );
        put_all(&client, next..next + 4).await;
        next += 4;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // From the installed state on, replica 3 takes the checkpoints the others
    // take: one it computed itself, after the outage, agrees with replica 0's.
    // Requests come a few at a time, each round waiting for replica 3 to
    // catch up, so on a busy machine it is not left chasing the others.
    let agrees = || {
        let ours = late.metrics().checkpoints.lock().clone();
        let theirs = nodes[0].metrics().checkpoints.lock().clone();
        ours.iter().any(|c| c.0 > outage_end && theirs.contains(c))
    };
    'rounds: loop {
        assert!(
            Instant::now() < deadline,
            "replica 3 never caught up: {:?}",
            late.metrics().protocol.lock()
        );
        put_all(&client, next..next + 4).await;
        next += 4;
        for _ in 0..100 {
            if agrees() {
                break 'rounds;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let stats = late.metrics().protocol.lock().clone();
    assert_eq!(stats.bad_state, 0, "{stats:?}");
    assert!(stats.state_requests >= 1, "{stats:?}");

    late.shutdown().await;
    for node in nodes {
        node.shutdown().await;
    }
}

/// The keys of a state preloaded before the replicas start.
const PRELOADED: u64 = 20_000;

fn preloaded() -> Store {
    let blobs = Table::new();
    for key in 0..PRELOADED {
        blobs.insert(key, vec![key as u8; 100]);
    }
    Store(Blobs { blobs })
}

/// The newest stable checkpoint of each running replica.
fn stable_seqs(cluster: &cbase_net::LocalCluster) -> Vec<u64> {
    cluster
        .replicas()
        .map(|r| r.metrics().stable.lock().back().map_or(0, |s| s.0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_from_its_directory_fetches_only_what_changed() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .try_init();
    }
    let mut cluster = cbase_net::LocalCluster::builder()
        .replicas(4)
        .workers(4)
        .protocol(ProtocolConfig {
            checkpoint_interval: 4,
            window: 16,
            ..ProtocolConfig::default()
        })
        .start(preloaded)
        .await
        .unwrap();
    let client = cluster.client().unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    // Every replica has its state on disk.
    let stored = |c: &cbase_net::LocalCluster| {
        c.replicas()
            .all(|r| r.metrics().checkpoints_stored.load(Ordering::Relaxed) > 0)
    };
    let mut next = 0;
    while !stored(&cluster) {
        assert!(
            Instant::now() < deadline,
            "the replicas never stored a checkpoint"
        );
        put_all(&client, next..next + 4).await;
        next += 4;
    }
    cluster.stop_replica(3).await;
    let before = stable_seqs(&cluster).into_iter().max().unwrap();
    // While it is down, 1% of the keys change, again and again, until the
    // others have moved a window past it and discarded their logs.
    let changed = 0..PRELOADED / 100;
    while stable_seqs(&cluster).into_iter().min().unwrap() <= before + 32 {
        assert!(Instant::now() < deadline, "the others did not move on");
        put_all(&client, changed.clone()).await;
    }
    cluster.restart_replica(3, preloaded()).await.unwrap();
    let target = stable_seqs(&cluster).into_iter().max().unwrap();
    loop {
        assert!(Instant::now() < deadline, "replica 3 never caught up");
        let late = cluster.replica(3).unwrap().metrics();
        if late.states_installed.load(Ordering::Relaxed) > 0
            && late.stable.lock().back().is_some_and(|s| s.0 >= target)
        {
            break;
        }
        put_all(&client, 0..1).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = cluster
        .replica(3)
        .unwrap()
        .metrics()
        .protocol
        .lock()
        .clone();
    // The state holds 20,000 entries of about 110 encoded bytes; 1% of them
    // changed. Spread this thin (a third of an entry per bucket), the
    // digest tree's nodes on the way to the changed buckets weigh most.
    let whole = PRELOADED * 110;
    assert!(
        stats.state_bytes * 4 < whole,
        "{} bytes transferred for a state of about {whole}: {stats:?}",
        stats.state_bytes
    );
    assert_eq!(stats.bad_state, 0, "{stats:?}");
    // And it takes the checkpoints the others take from then on. Requests
    // come a few at a time, each round waiting for replica 3 to catch up,
    // so on a busy machine it is not left chasing the others.
    let agrees = |cluster: &cbase_net::LocalCluster| {
        let ours = cluster
            .replica(3)
            .unwrap()
            .metrics()
            .checkpoints
            .lock()
            .clone();
        let theirs = cluster
            .replica(0)
            .unwrap()
            .metrics()
            .checkpoints
            .lock()
            .clone();
        ours.iter().any(|c| c.0 > target && theirs.contains(c))
    };
    'rounds: loop {
        assert!(
            Instant::now() < deadline,
            "replica 3 took no later checkpoint: {:?}",
            cluster.replica(3).unwrap().metrics().protocol.lock()
        );
        put_all(&client, 0..4).await;
        for _ in 0..100 {
            if agrees(&cluster) {
                break 'rounds;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(cluster.checkpoint_agreement().agree());
    cluster.shutdown().await;
}

/// Execution on its own, without agreement: what a replica restored from a
/// checkpoint computes must not differ from what its peers compute.
mod installed_checkpoints {
    use std::sync::Arc;

    use cbase_core::{
        AccessSet, Container, Context, ExecutorBuilder, Key, Request, Service, State, Table, codec,
    };
    use std::collections::BTreeMap;

    use cbase_net::checkpoint::CheckpointState;
    use cbase_net::checkpoint::parts::{CheckpointIndex, Fetched, Transferred};
    use cbase_net::crypto::{PublicKey, SecretKey};
    use cbase_net::message::{
        ClientBatch, ClientRequest, Hash, Proposal, Reply, RequestBatch, Seq,
    };
    use cbase_net::protocol::Committed;
    use cbase_net::runtime::execution::{CheckpointRecord, Execution, Installed, ReplySink};
    use serde::{Deserialize, Serialize};

    /// Records the agreed time of the request under `key`.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    struct Stamp {
        key: u64,
    }

    impl Request for Stamp {
        fn access_set(&self) -> AccessSet {
            AccessSet::none().write(Key::entry("stamps", &self.key))
        }
        fn method(&self) -> &'static str {
            "stamp"
        }
    }

    struct Stamps {
        stamps: Table<u64, u64>,
    }

    impl State for Stamps {
        fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
            vec![("stamps", &self.stamps)]
        }
    }

    struct Clocked(Stamps);

    impl Service for Clocked {
        type Request = Stamp;
        type Response = u64;
        fn execute(&self, stamp: Stamp, ctx: &Context) -> u64 {
            self.0.stamps.insert(stamp.key, ctx.timestamp_nanos());
            ctx.timestamp_nanos()
        }
        fn state(&self) -> &dyn State {
            &self.0
        }
    }

    struct Discard;

    impl ReplySink for Discard {
        fn send(&self, _: &PublicKey, _: Reply) {}
        fn checkpoint(&self, _: CheckpointRecord) {}
        fn send_read(&self, _: &PublicKey, _: cbase_net::message::ReadReply) {}
    }

    fn start() -> Execution<Clocked> {
        let service = Clocked(Stamps {
            stamps: Table::new(),
        });
        Execution::start(
            0,
            ExecutorBuilder::new().workers(2),
            service,
            Arc::new(Discard),
            Default::default(),
        )
        .unwrap()
    }

    /// Batch `seq`, proposed at `timestamp`, with one request that stamps
    /// `key`; a checkpoint follows it if `checkpoint`.
    fn batch(seq: Seq, timestamp: u64, key: u64, checkpoint: bool) -> Committed {
        let client = SecretKey::from_seed([7; 32]);
        let request = ClientRequest {
            lane: 0,
            number: seq,
            operation: codec::encode(&Stamp { key }).unwrap(),
        };
        let signed = ClientBatch::sign(
            RequestBatch {
                client: client.public(),
                requests: vec![request],
            },
            &client,
        );
        let proposal = Proposal {
            timestamp,
            batches: vec![signed],
        };
        Committed {
            view: 0,
            seq,
            digest: proposal.digest(),
            proposal,
            checkpoint,
        }
    }

    /// A fresh execution that has executed `batches`.
    fn after(batches: impl IntoIterator<Item = Committed>) -> Execution<Clocked> {
        let mut execution = start();
        for committed in batches {
            execution.execute(committed);
        }
        execution
    }

    fn digest_after(execution: &mut Execution<Clocked>, committed: Committed) -> Hash {
        execution
            .execute(committed)
            .expect("the batch ends a checkpoint interval")
            .digest
    }

    #[test]
    fn a_restored_replica_keeps_the_agreed_clock_of_its_checkpoint() {
        let mut peer = start();
        peer.execute(batch(1, 1_000, 1, false));
        peer.execute(batch(2, 5_000, 2, true))
            .expect("a checkpoint at 2");
        let checkpoint = CheckpointState::clone(&peer.checkpoints().state(2).unwrap());

        let mut restored = start();
        restored.install(2, checkpoint.clone()).unwrap();
        assert_eq!(restored.last_executed(), 2);

        // A primary whose clock runs behind: agreed time stays at 5000 on both.
        let theirs = digest_after(&mut peer, batch(3, 3_000, 3, true));
        let ours = digest_after(&mut restored, batch(3, 3_000, 3, true));
        assert_eq!(ours, theirs, "the restored replica's ctx time differs");
        peer.shutdown();
        restored.shutdown();
    }

    /// What a transfer in parts would hand over: `target`, fetched by a
    /// replica whose own checkpoint is `base`.
    fn fetched_in_parts(base: CheckpointState, target: CheckpointState) -> Transferred {
        let base = Arc::new(CheckpointIndex::build(Arc::new(base)));
        let target = CheckpointIndex::build(Arc::new(target));
        let mut buckets = BTreeMap::new();
        for bucket in 0..=u16::MAX {
            let theirs = target.bucket(0, bucket);
            if theirs
                .iter()
                .map(|e| e.2)
                .ne(base.bucket(0, bucket).iter().map(|e| e.2))
            {
                let contents = theirs.iter().map(|(k, v, _)| (k.to_vec(), v.to_vec()));
                buckets.insert((0, bucket), contents.collect());
            }
        }
        Transferred::Parts(Fetched {
            base: Some(base),
            manifest: target.manifest(),
            buckets,
        })
    }

    #[test]
    fn a_transfer_in_parts_patches_the_state_it_was_compared_with() {
        let mut peer = start();
        for seq in 1..=4 {
            peer.execute(batch(seq, seq * 1_000, seq, seq % 2 == 0));
        }
        let at = |execution: &Execution<Clocked>, seq| {
            CheckpointState::clone(&execution.checkpoints().state(seq).unwrap())
        };
        let (two, four) = (at(&peer, 2), at(&peer, 4));

        let install = |execution: &mut Execution<Clocked>| {
            execution
                .install_transferred(4, fetched_in_parts(two.clone(), four.clone()))
                .unwrap()
        };

        // Still at its checkpoint 2: only the two stamps written since are
        // written into its state.
        let mut behind = after((1..=2).map(|seq| batch(seq, seq * 1_000, seq, seq == 2)));
        let (digest, installed) = install(&mut behind);
        assert_eq!(installed, Installed::Patched { entries: 2 });
        assert_eq!(digest, four.digest());

        // Past its checkpoint (it executed 3 since, as a restarted replica
        // replays its log): the patch overwrites what 3 wrote too.
        let mut ahead = after((1..=3).map(|seq| batch(seq, seq * 1_000, seq, seq == 2)));
        let (digest, installed) = install(&mut ahead);
        assert_eq!(installed, Installed::Patched { entries: 2 });
        assert_eq!(digest, four.digest());

        // A state the patch does not lead to the fetched one (other
        // requests, another clock): restored whole, to the same end.
        let mut elsewhere =
            after((1..=3).map(|seq| batch(seq, seq * 1_000 + 1, seq + 10, seq == 2)));
        let (digest, installed) = install(&mut elsewhere);
        assert_eq!(installed, Installed::Whole);
        assert_eq!(digest, four.digest());

        let theirs = digest_after(&mut peer, batch(5, 6_000, 5, true));
        for mut installed in [behind, ahead, elsewhere] {
            let ours = digest_after(&mut installed, batch(5, 6_000, 5, true));
            assert_eq!(ours, theirs, "an installed replica differs from its peer");
            installed.shutdown();
        }
        peer.shutdown();
    }

    #[test]
    fn a_checkpoint_installed_over_diverged_state_replaces_it() {
        let mut peer = start();
        peer.execute(batch(1, 1_000, 1, false));
        peer.execute(batch(2, 5_000, 2, true))
            .expect("a checkpoint at 2");
        let checkpoint = CheckpointState::clone(&peer.checkpoints().state(2).unwrap());

        // A replica that executed other batches up to 3, with a later clock.
        let mut diverged = start();
        diverged.execute(batch(1, 2_000, 10, false));
        diverged.execute(batch(2, 9_000, 20, true));
        diverged.execute(batch(3, 9_500, 30, false));
        // It learns that it diverged and installs the agreed checkpoint at 2.
        diverged.install(2, checkpoint.clone()).unwrap();
        assert_eq!(diverged.last_executed(), 2);

        // Batch 3 is executed again, on the repaired state.
        let theirs = digest_after(&mut peer, batch(3, 3_000, 3, true));
        let ours = digest_after(&mut diverged, batch(3, 3_000, 3, true));
        assert_eq!(ours, theirs, "the repaired replica differs from its peer");
        peer.shutdown();
        diverged.shutdown();
    }
}

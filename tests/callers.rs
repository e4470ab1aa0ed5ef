//! `Context::client`: a service decides by who is calling. The caller is the
//! key that signed the request, the same on every replica, and a client with
//! a key of its own stays the same caller across restarts.

use cbase::net::crypto::SecretKey;
use cbase::prelude::*;
use cbase::{ClientConfig, LocalCluster};

/// Lockers: whoever rents one first owns it; only the owner may empty it.
#[cbase::service]
pub trait Lockers {
    /// Puts `amount` into locker `id`, renting it to the caller if free.
    #[writes(contents[id], owners[id])]
    fn put(&self, id: u64, amount: u64, ctx: &Context) -> u64;

    /// Empties locker `id`: only its owner may.
    #[reads(owners[id])]
    #[writes(contents[id])]
    fn take(&self, id: u64, ctx: &Context) -> Result<u64, String>;

    /// Who is calling, as the service sees it.
    #[reads(owners[0])]
    fn whoami(&self, ctx: &Context) -> ClientId;
}

#[derive(Default, cbase::State)]
pub struct Rooms {
    contents: Table<u64, u64>,
    owners: Table<u64, ClientId>,
}

impl Lockers for Rooms {
    fn put(&self, id: u64, amount: u64, ctx: &Context) -> u64 {
        if self.owners.get(&id).is_none() {
            self.owners.insert(id, ctx.client());
        }
        self.contents.upsert(
            id,
            || 0,
            |held| {
                *held += amount;
                *held
            },
        )
    }

    fn take(&self, id: u64, ctx: &Context) -> Result<u64, String> {
        match self.owners.get(&id) {
            Some(owner) if owner == ctx.client() => {
                let held = self.contents.get(&id).unwrap_or(0);
                self.contents.insert(id, 0);
                Ok(held)
            }
            Some(owner) => Err(format!("locker {id} belongs to {owner}")),
            None => Err(format!("locker {id} is free")),
        }
    }

    fn whoami(&self, ctx: &Context) -> ClientId {
        ctx.client()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_plays_several_callers_in_process() {
    let invoker = LocalInvoker::start(
        ExecutorBuilder::new().workers(2),
        LockersService(Rooms::default()),
    )
    .unwrap();
    let lockers = LockersClient::new(invoker);
    let (ann, bob) = (ClientId([1; 32]), ClientId([2; 32]));
    let invoker = lockers.invoker();
    assert_eq!(lockers.whoami().await.unwrap(), ClientId::LOCAL);
    invoker.set_client(ann);
    assert_eq!(lockers.put(7, 10).await.unwrap(), 10);
    invoker.set_client(bob);
    assert_eq!(lockers.put(7, 5).await.unwrap(), 15, "anyone may put in");
    let refused = lockers.take(7).await.unwrap().unwrap_err();
    assert!(refused.contains(&ann.to_string()), "{refused}");
    invoker.set_client(ann);
    assert_eq!(lockers.take(7).await.unwrap(), Ok(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_sees_the_signing_client_and_a_kept_key_stays_the_owner() {
    let cluster = LocalCluster::builder()
        .replicas(4)
        .workers(2)
        .start(|| LockersService(Rooms::default()))
        .await
        .unwrap();
    let key = SecretKey::from_seed([61; 32]);
    let with_key = || ClientConfig {
        key: Some(key.clone()),
        ..ClientConfig::default()
    };
    let ann = cluster.client_with(with_key()).unwrap();
    let ann_id = ann.id();
    assert_eq!(ann_id, key.public().client_id());
    let ann_lockers = LockersClient::new(ann);
    assert_eq!(ann_lockers.whoami().await.unwrap(), ann_id);
    ann_lockers.put(1, 30).await.unwrap();

    // Someone else (a fresh identity) cannot empty it.
    let bob = LockersClient::new(cluster.client().unwrap());
    assert_ne!(bob.whoami().await.unwrap(), ann_id);
    assert!(bob.take(1).await.unwrap().is_err());

    // Ann's program restarts with her key: still the owner.
    drop(ann_lockers);
    let ann_again = LockersClient::new(cluster.client_with(with_key()).unwrap());
    assert_eq!(ann_again.take(1).await.unwrap(), Ok(30));

    // The owner is replicated state: every replica's checkpoints agree.
    let agreement = cluster.checkpoint_agreement();
    assert!(agreement.agree(), "{:?}", agreement.conflicts);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_lists_its_clients_refuses_the_others() {
    let ann = SecretKey::from_seed([62; 32]);
    let cluster = LocalCluster::builder()
        .replicas(4)
        .workers(2)
        .admit([ann.public()])
        .start(|| LockersService(Rooms::default()))
        .await
        .unwrap();
    let admitted = LockersClient::new(
        cluster
            .client_with(ClientConfig {
                key: Some(ann.clone()),
                ..ClientConfig::default()
            })
            .unwrap(),
    );
    assert_eq!(admitted.put(3, 1).await.unwrap(), 1);

    // A stranger learns it is refused: an error that says so, not a
    // timeout (its timeout is an hour).
    let stranger = LockersClient::new(
        cluster
            .client_with(ClientConfig {
                timeout: std::time::Duration::from_secs(3600),
                ..ClientConfig::default()
            })
            .unwrap(),
    );
    let error = stranger.put(3, 1).await.unwrap_err();
    let ClientError::Refused(why) = &error else {
        panic!("{error}");
    };
    assert!(why.contains("does not list client"), "{why}");
    let refused: u64 = cluster
        .replicas()
        .map(|node| {
            node.metrics()
                .unadmitted_clients
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    assert!(refused >= 3, "{refused}");
    // Nothing of the stranger's was executed.
    assert_eq!(admitted.take(3).await.unwrap(), Ok(1));
    cluster.shutdown().await;
}

/// A state written by hand, not derived: it says `impl cbase::StateTables`
/// (through the facade, as the book's compile-errors chapter tells) and its
/// service runs; its rules' tables are checked when it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_state_serves_through_the_facade() {
    pub struct HandRooms {
        contents: Table<u64, u64>,
        owners: Table<u64, ClientId>,
    }
    impl cbase::State for HandRooms {
        fn containers(&self) -> Vec<(&'static str, &dyn cbase::Container)> {
            vec![("contents", &self.contents), ("owners", &self.owners)]
        }
    }
    impl cbase::StateTables for HandRooms {}
    impl Lockers for HandRooms {
        fn put(&self, id: u64, amount: u64, _: &Context) -> u64 {
            self.contents.insert(id, amount);
            amount
        }
        fn take(&self, _: u64, _: &Context) -> Result<u64, String> {
            Err("closed".into())
        }
        fn whoami(&self, ctx: &Context) -> ClientId {
            ctx.client()
        }
    }
    let cluster = LocalCluster::builder()
        .replicas(4)
        .start(|| {
            LockersService(HandRooms {
                contents: Table::new(),
                owners: Table::new(),
            })
        })
        .await
        .unwrap();
    let client = LockersClient::new(cluster.client().unwrap());
    assert_eq!(client.put(1, 5).await.unwrap(), 5);
    cluster.shutdown().await;
}

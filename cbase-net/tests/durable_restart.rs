//! Replicas restarted over data directories that are not theirs.

use std::time::Duration;

use cbase_core::{AccessSet, Container, Context, Key, Request, Service, State, Table};
use cbase_net::protocol::ProtocolConfig;
use cbase_net::{DataDirs, LocalCluster};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Put {
    key: u64,
    value: u64,
}

impl Request for Put {
    fn access_set(&self) -> AccessSet {
        AccessSet::none().write(Key::entry("values", &self.key))
    }
    fn method(&self) -> &'static str {
        "put"
    }
}

struct Values {
    values: Table<u64, u64>,
}

impl State for Values {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("values", &self.values)]
    }
}

struct Store(Values);

impl Service for Store {
    type Request = Put;
    type Response = ();
    fn execute(&self, put: Put, _: &Context) {
        self.0.values.insert(put.key, put.value);
    }
    fn state(&self) -> &dyn State {
        &self.0
    }
}

fn empty() -> Store {
    Store(Values {
        values: Table::new(),
    })
}

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

//! Requests too large to be ordered fail at once with a clear error, and the
//! client splits batches so that every signed batch stays within the limit.

use std::sync::atomic::Ordering;
use std::time::Duration;

use cbase_core::{AccessSet, ClientError, Container, Context, Key, Request, Service, State, Table};
use cbase_net::LocalCluster;
use cbase_net::client::ClientConfig;
use cbase_net::transport::TransportConfig;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Op {
    Put { key: String, value: Vec<u8> },
    Len { key: String },
}

impl Request for Op {
    fn access_set(&self) -> AccessSet {
        match self {
            Op::Put { key, .. } => AccessSet::none().write(Key::entry("values", key)),
            Op::Len { key } => AccessSet::none().read(Key::entry("values", key)),
        }
    }
    fn method(&self) -> &'static str {
        match self {
            Op::Put { .. } => "put",
            Op::Len { .. } => "len",
        }
    }
}

struct Values {
    values: Table<String, Vec<u8>>,
}

impl State for Values {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("values", &self.values)]
    }
}

/// A key-value store that answers with the length of the stored value.
struct Store(Values);

impl Service for Store {
    type Request = Op;
    type Response = Option<usize>;
    fn execute(&self, op: Op, _: &Context) -> Option<usize> {
        match op {
            Op::Put { key, value } => {
                let len = value.len();
                self.0.values.insert(key, value);
                Some(len)
            }
            Op::Len { key } => self.0.values.get(&key).map(|v| v.len()),
        }
    }
    fn state(&self) -> &dyn State {
        &self.0
    }
}

fn store() -> Store {
    Store(Values {
        values: Table::new(),
    })
}

fn put(key: &str, len: usize) -> Op {
    Op::Put {
        key: key.into(),
        value: vec![7; len],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_too_large_to_be_ordered_fails_at_once_and_the_next_succeeds() {
    let cluster = LocalCluster::builder()
        .replicas(4)
        .workers(2)
        .start(store)
        .await
        .unwrap();
    let client = cluster.client().unwrap();

    // Refused at once: no timeout to wait for, since it is never sent.
    let result: Result<Option<usize>, ClientError> = client.call(&put("big", 2 << 20)).await;
    let Err(ClientError::TooLarge { bytes, limit }) = result else {
        panic!("a 2 MiB request is refused as too large: {result:?}");
    };
    assert_eq!(limit, 1 << 20, "the default limit");
    assert!(bytes > 2 << 20, "{bytes}");
    let message = ClientError::TooLarge { bytes, limit }.to_string();
    assert!(
        message.contains("1048576") && message.contains("max_request_bytes"),
        "the message names the limit and how to raise it: {message}"
    );

    let small: Option<usize> = client.call(&put("small", 10)).await.unwrap();
    assert_eq!(small, Some(10));
    let big: Option<usize> = client.call(&Op::Len { key: "big".into() }).await.unwrap();
    assert_eq!(big, None, "the large request was never executed");
    cluster.shutdown().await;
}

/// The limit on one signed batch in the test below, and the frame limit just
/// above it (room for the pre-prepare around a full proposal): a batch over
/// the limit would not even be read.
const LIMIT: usize = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_fit_alone_never_fail_because_of_their_neighbours() {
    let transport = TransportConfig {
        max_frame: LIMIT + cbase_net::protocol::PRE_PREPARE_OVERHEAD,
        ..TransportConfig::default()
    };
    let cluster = LocalCluster::builder()
        .replicas(4)
        .workers(2)
        .transport(transport.clone())
        .protocol(cbase_net::ProtocolConfig {
            // Certificates of a small window fit these small frames.
            checkpoint_interval: 8,
            window: 32,
            max_batch_bytes: LIMIT,
            ..cbase_net::ProtocolConfig::default()
        })
        .start(store)
        .await
        .unwrap();
    // One batch in flight until its first reply, so that the others pile up
    // and would go out together.
    let client = cluster
        .client_with(ClientConfig {
            batches_in_flight: 1,
            batch_linger: Duration::from_secs(3600),
            timeout: Duration::from_secs(120),
            max_request_bytes: LIMIT,
            transport,
            ..ClientConfig::default()
        })
        .unwrap();
    let mut calls = Vec::new();
    for i in 0..24 {
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            let len = 20 * 1024 + i;
            let answer: Option<usize> = client.call(&put(&format!("k{i}"), len)).await.unwrap();
            assert_eq!(answer, Some(len));
        }));
    }
    for call in calls {
        call.await.unwrap();
    }
    for replica in cluster.replicas() {
        assert_eq!(replica.metrics().bad_frames.load(Ordering::Relaxed), 0);
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_limit_that_frames_cannot_carry_is_refused() {
    let cluster = cbase_net::config::ClusterConfig {
        f: 0,
        replicas: vec![cbase_net::config::ReplicaEntry {
            id: 0,
            address: "127.0.0.1:1".into(),
            public_key: cbase_net::crypto::SecretKey::from_seed([1; 32]).public(),
        }],
        clients: None,
    };
    let config = |max_request_bytes, max_frame| ClientConfig {
        max_request_bytes,
        transport: TransportConfig {
            max_frame,
            ..TransportConfig::default()
        },
        ..ClientConfig::default()
    };
    for (request, frame) in [
        (16 << 20, 16 << 20),
        (2 << 20, 1 << 20),
        (usize::MAX, 16 << 20),
    ] {
        match cbase_net::NetClient::connect(cluster.clone(), config(request, frame)) {
            Err(ClientError::Config(message)) => {
                assert!(message.contains("max_frame"), "{message}")
            }
            Err(other) => panic!("a configuration error, not {other:?}"),
            Ok(_) => panic!("max_request_bytes {request} with max_frame {frame} is refused"),
        }
    }
    let fits = cbase_net::client::MESSAGE_OVERHEAD;
    assert!(
        cbase_net::NetClient::connect(cluster.clone(), config(1 << 20, (1 << 20) + fits)).is_ok()
    );
    assert!(cbase_net::NetClient::connect(cluster, ClientConfig::default()).is_ok());
}

/// A client whose limit is above the replicas' still gets a clear answer:
/// every correct replica refuses the batch unordered with the same error,
/// so the client has f+1 matching refusals instead of waiting in vain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_refuse_a_batch_larger_than_any_proposal_with_an_error() {
    let limit = 64 * 1024;
    let cluster = LocalCluster::builder()
        .replicas(4)
        .workers(2)
        .protocol(cbase_net::ProtocolConfig {
            max_batch_bytes: limit,
            ..cbase_net::ProtocolConfig::default()
        })
        .start(store)
        .await
        .unwrap();
    // The client believes 1 MiB is fine.
    let client = cluster.client().unwrap();
    let result: Result<Option<usize>, ClientError> = client.call(&put("big", 200 * 1024)).await;
    let Err(ClientError::Exec(cbase_core::ExecError::TooLarge { bytes, limit: said })) = result
    else {
        panic!("refused by the replicas: {result:?}");
    };
    assert_eq!(said, limit as u64);
    assert!(bytes > 200 * 1024);
    let small: Option<usize> = client.call(&put("small", 10)).await.unwrap();
    assert_eq!(small, Some(10));
    let refused: u64 = cluster
        .replicas()
        .map(|r| r.metrics().oversized_requests.load(Ordering::Relaxed))
        .sum();
    assert!(refused >= 2, "at least f+1 replicas refused it: {refused}");
    cluster.shutdown().await;
}

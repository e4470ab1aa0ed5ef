//! What a client's earlier connection keeps on a replica once its newer
//! connection took its place.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cbase_core::{ExecutorBuilder, Table};
use cbase_net::config::{ClusterConfig, ReplicaEntry};
use cbase_net::crypto::SecretKey;
use cbase_net::message::{ClientBatch, ClientMessage, ClientRequest, RequestBatch};
use cbase_net::runtime::{NodeConfig, ReplicaNode};
use cbase_net::transport::{self, Identity, TransportConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

mod raw_cluster;

use raw_cluster::{Counter, Counts, protocol, secret};

mod live_heap;

use live_heap::live_bytes;

/// Starts replica 0 alone of a 4-replica cluster (the others' ports are
/// closed). Its accepted sockets inherit the smallest send buffer the
/// kernel allows (fixed: no autotuning), so an answer frame of a few KiB
/// that its client does not read stops its writer for good.
async fn start_replica_0() -> (ClusterConfig, ReplicaNode) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(1).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1024).unwrap();
    let mut replicas = vec![ReplicaEntry {
        id: 0,
        address: listener.local_addr().unwrap().to_string(),
        public_key: secret(0).public(),
    }];
    for id in 1..4u32 {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        replicas.push(ReplicaEntry {
            id,
            address: closed.local_addr().unwrap().to_string(),
            public_key: secret(id as u8).public(),
        });
    }
    let cluster = ClusterConfig {
        f: 1,
        replicas,
        clients: None,
    };
    let transport = TransportConfig::default();
    let config = NodeConfig {
        id: 0,
        cluster: cluster.clone(),
        secret: secret(0),
        protocol: protocol(&transport),
        transport,
        executor: ExecutorBuilder::new().workers(1),
        recovering: false,
        restored: false,
        data_dir: None,
    };
    let node = ReplicaNode::start(
        config,
        listener,
        Counter(Counts {
            counts: Table::new(),
        }),
    )
    .await
    .unwrap();
    (cluster, node)
}

/// A relay between a client and replica 0 that forwards both ways until
/// frozen; frozen, it stops reading what the replica sends at its first
/// byte (and says so), so the replica's writer stalls as on a client that
/// does not read. It keeps both sockets open for as long as it lives.
struct Relay {
    address: std::net::SocketAddr,
    frozen: Arc<AtomicBool>,
    /// Set once the replica sent a byte after the relay froze.
    answered: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(replica: std::net::SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let (report, answered) = watch::channel(false);
        let freeze = Arc::clone(&frozen);
        let task = tokio::spawn(async move {
            let (mut client, _) = listener.accept().await.unwrap();
            let socket = TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(1).unwrap();
            let replica = socket.connect(replica).await.unwrap();
            let (mut from_replica, mut to_replica) = replica.into_split();
            let (mut from_client, mut to_client) = client.split();
            let back = async {
                let mut buffer = [0u8; 4096];
                loop {
                    match from_replica.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => {
                            if freeze.load(Ordering::SeqCst) {
                                let _ = report.send(true);
                                break;
                            }
                            if to_client.write_all(&buffer[..read]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                std::future::pending::<()>().await
            };
            let forth = async {
                let mut buffer = [0u8; 4096];
                loop {
                    match from_client.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => {
                            if to_replica.write_all(&buffer[..read]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                std::future::pending::<()>().await
            };
            tokio::join!(back, forth);
        });
        Relay {
            address,
            frozen,
            answered,
            task,
        }
    }
}

/// A batch of `client` with more requests than a proposal may carry: each
/// replica refuses it at the connection with one reply per request.
fn too_many_requests(client: &SecretKey) -> ClientBatch {
    let requests = (0..16_000u64)
        .map(|n| ClientRequest {
            lane: u32::MAX,
            number: u64::MAX - n,
            operation: Vec::new(),
        })
        .collect();
    ClientBatch::sign(
        RequestBatch {
            client: client.public(),
            requests,
        },
        client,
    )
}

/// A client connects to replica 0, sends a batch of 16,000 requests (more
/// than `max_batch_requests`, so the replica queues 16,000 refusals for it)
/// and does not read: the connection's writer stops in its first frame of
/// answers. The client then asks for the replica's status (the answer
/// waits in the connection's one-place queue of control answers, since the
/// writer is stopped), and connects again. Its newer connection takes the
/// place, and the earlier one, told to close, waits to queue the refusal
/// that says so behind the status answer no one will ever take: its task
/// never ends, and keeps its refusals, its buffers and its socket, though
/// it no longer counts against `max_client_connections` or
/// `max_clients_per_source`. A client that does this in a loop (one key,
/// one address) makes the replica hold such a connection per round, with
/// no bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_client_connection_that_does_not_read_is_let_go() {
    const ROUNDS: usize = 12;
    let (cluster, node) = start_replica_0().await;
    let replica_0: std::net::SocketAddr = cluster.replicas[0].address.parse().unwrap();
    let key = SecretKey::from_seed([61; 32]);
    let identity = Identity::client(key.clone());
    let batch = ClientMessage::Requests(too_many_requests(&key));
    let other = SecretKey::from_seed([62; 32]);
    let impersonation = ClientMessage::Requests(ClientBatch::sign(
        RequestBatch {
            client: other.public(),
            requests: vec![ClientRequest {
                lane: 0,
                number: 1,
                operation: Vec::new(),
            }],
        },
        &other,
    ));
    let before = live_bytes();
    let mut relays = Vec::new();
    for round in 0..ROUNDS {
        let mut relay = Relay::start(replica_0).await;
        let stream = TcpStream::connect(relay.address).await.unwrap();
        // This connection takes the place of the previous round's.
        let session = tokio::time::timeout(
            Duration::from_secs(60),
            transport::connect(stream, &identity, 0, &cluster, &TransportConfig::default()),
        )
        .await
        .expect("the handshake ends in time")
        .unwrap();
        let (_reader, mut writer) = session.split();
        relay.frozen.store(true, Ordering::SeqCst);
        writer.send_value(&batch).await.unwrap();
        writer.flush().await.unwrap();
        // The writer has taken the first refusals and is writing them.
        tokio::time::timeout(
            Duration::from_secs(60),
            relay.answered.wait_for(|answered| *answered),
        )
        .await
        .expect("replica 0 starts answering")
        .unwrap();
        writer.send_value(&ClientMessage::Status).await.unwrap();
        // Seen by replica 0 only after the status query, on the same
        // connection: the query has been taken when it is counted.
        writer.send_value(&impersonation).await.unwrap();
        writer.flush().await.unwrap();
        let impersonations = &node.metrics().impersonations;
        tokio::time::timeout(Duration::from_secs(60), async {
            while impersonations.load(Ordering::SeqCst) < round as u64 + 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("replica 0 reads the status query");
        relays.push(relay);
    }
    // Only the last connection has a place; the others were told to close.
    // Whatever they held should go (within the guard below), leaving about
    // one connection's worth of answers.
    let bound = before + (4 << 20);
    let let_go = tokio::time::timeout(Duration::from_secs(60), async {
        while live_bytes() > bound {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let held = live_bytes().saturating_sub(before);
    assert!(
        let_go.is_ok(),
        "after one client's {ROUNDS} connections, each replaced by the next, replica 0 still \
         holds {} KiB a minute later (one connection's worth is about a MiB): replaced \
         connections whose client does not read are never let go",
        held >> 10
    );
    for relay in relays {
        relay.task.abort();
    }
    node.shutdown().await;
}

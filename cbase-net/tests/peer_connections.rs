//! What one peer replica can make another hold through its connections.
//!
//! A replica authenticated at the handshake as peer `j` may open any number
//! of connections; the rule is that what it can make the receiving replica
//! hold stays bounded per sender whatever it does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cbase_core::ExecutorBuilder;
use cbase_core::Table;
use cbase_net::config::{ClusterConfig, ReplicaEntry};
use cbase_net::runtime::{NodeConfig, ReplicaNode};
use cbase_net::transport::{self, FrameReader, FrameWriter, Identity, TransportConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

mod raw_cluster;

use raw_cluster::{Counter, Counts, protocol, secret};

mod live_heap;

use live_heap::live_bytes;

/// Kernel buffers of the sockets the bytes cross are kept small (and fixed:
/// no autotuning), so a write that completed means the replica's own
/// process read nearly all of it.
const SMALL_BUFFER: u32 = 16 * 1024;

/// A listener whose accepted sockets inherit a small, fixed receive buffer.
fn small_listener() -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(SMALL_BUFFER).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.listen(1024).unwrap()
}

/// Starts replica 0 alone of a 4-replica cluster (the others' ports are
/// closed), listening with small socket buffers.
async fn start_replica_0(transport: TransportConfig) -> (ClusterConfig, ReplicaNode) {
    let listener = small_listener();
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

/// Where a relayed stream stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Relayed {
    Running,
    /// Every byte up to the cap was written to the replica.
    ReachedCap,
    /// The replica's side failed (it closed the connection).
    Failed,
}

/// A relay between a peer and replica 0 that forwards everything, except
/// that once capped it forwards toward the replica no more than the cap
/// (the rest is withheld for good).
struct Relay {
    address: std::net::SocketAddr,
    forwarded: Arc<AtomicU64>,
    cap: Arc<AtomicU64>,
    state: watch::Receiver<Relayed>,
}

impl Relay {
    async fn start(replica: std::net::SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let forwarded = Arc::new(AtomicU64::new(0));
        let cap = Arc::new(AtomicU64::new(u64::MAX));
        let (report, state) = watch::channel(Relayed::Running);
        let (count, limit) = (Arc::clone(&forwarded), Arc::clone(&cap));
        tokio::spawn(async move {
            let (mut peer, _) = listener.accept().await.unwrap();
            let socket = TcpSocket::new_v4().unwrap();
            socket.set_send_buffer_size(SMALL_BUFFER).unwrap();
            let replica = socket.connect(replica).await.unwrap();
            let (mut from_replica, mut to_replica) = replica.into_split();
            let (mut from_peer, mut to_peer) = peer.split();
            let back = async {
                let _ = tokio::io::copy(&mut from_replica, &mut to_peer).await;
                std::future::pending::<()>().await
            };
            let forth = async {
                let mut buffer = vec![0u8; 64 * 1024];
                loop {
                    let read = match from_peer.read(&mut buffer).await {
                        Ok(0) | Err(_) => return std::future::pending::<()>().await,
                        Ok(read) => read,
                    };
                    let done = count.load(Ordering::SeqCst);
                    let allowed = limit.load(Ordering::SeqCst).saturating_sub(done);
                    let take = (read as u64).min(allowed) as usize;
                    count.fetch_add(take as u64, Ordering::SeqCst);
                    if take > 0 && to_replica.write_all(&buffer[..take]).await.is_err() {
                        let _ = report.send(Relayed::Failed);
                        return std::future::pending::<()>().await;
                    }
                    if take > 0 && done + take as u64 == limit.load(Ordering::SeqCst) {
                        let _ = report.send(Relayed::ReachedCap);
                    }
                }
            };
            tokio::join!(back, forth);
        });
        Relay {
            address,
            forwarded,
            cap,
            state,
        }
    }
}

/// Bytes of a frame's length prefix and MAC.
const HEADER: usize = 4;
const MAC: usize = 32;

/// A replica that proved at the handshake to be replica 1 opens one
/// connection after another to replica 0 and on each sends all of a
/// maximum-size frame but its MAC's last bytes, which it never sends.
/// Replica connections have no limit (a client's new connection replaces
/// its earlier one; a replica's does not), no frame budget (client frames
/// share `client_frame_budget`), and no idle timeout: each keeps a buffer
/// of `max_frame` bytes on replica 0 for as long as replica 1 keeps the
/// connection open. With 16 connections of 4 MiB frames, replica 0 holds
/// 64 MiB for replica 1; with more connections (or the default 16 MiB
/// frames), as much as it likes: memory a peer can make a replica spend
/// is not bounded per sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_replica_cannot_make_a_replica_hold_a_frame_buffer_per_connection_it_opens() {
    const MAX_FRAME: usize = 4 << 20;
    const CONNECTIONS: usize = 16;
    let transport = TransportConfig {
        max_frame: MAX_FRAME,
        ..TransportConfig::default()
    };
    let (cluster, node) = start_replica_0(transport.clone()).await;
    let replica_0: std::net::SocketAddr = cluster.replicas[0].address.parse().unwrap();
    let me = Identity::replica(&cluster, 1, secret(1))
        .unwrap()
        .with_settings(protocol(&transport).agreement_digest());
    let payload = vec![0u8; MAX_FRAME];
    let before = live_bytes();
    let mut held: Vec<(FrameReader, FrameWriter, Relay)> = Vec::new();
    let mut taken = 0;
    for _ in 0..CONNECTIONS {
        let mut relay = Relay::start(replica_0).await;
        let stream = TcpStream::connect(relay.address).await.unwrap();
        let Ok(session) = tokio::time::timeout(
            Duration::from_secs(60),
            transport::connect(stream, &me, 0, &cluster, &transport),
        )
        .await
        .expect("the handshake ends in time") else {
            // Refused: it costs replica 0 nothing more.
            continue;
        };
        // Every byte of the handshake went through (replica 0 answered
        // the last of them); of the frame, all but the last 33 bytes go.
        let handshake = relay.forwarded.load(Ordering::SeqCst);
        relay.cap.store(
            handshake + (HEADER + MAX_FRAME + MAC - 33) as u64,
            Ordering::SeqCst,
        );
        let (reader, mut writer) = session.split();
        writer.send(&payload).await.unwrap();
        writer.flush().await.unwrap();
        let state = tokio::time::timeout(
            Duration::from_secs(60),
            relay.state.wait_for(|s| *s != Relayed::Running),
        )
        .await
        .expect("replica 0 reads the frame or closes the connection")
        .map(|s| *s)
        .unwrap();
        if state == Relayed::ReachedCap {
            taken += 1;
        }
        held.push((reader, writer, relay));
    }
    let grown = live_bytes().saturating_sub(before);
    assert!(
        grown <= 3 * MAX_FRAME,
        "replica 1 made replica 0 hold {} MiB with {taken} connections, each an unfinished \
         frame of at most max_frame = {} MiB (the bound per peer would be a few frames)",
        grown >> 20,
        MAX_FRAME >> 20
    );
    drop(held);
    node.shutdown().await;
}

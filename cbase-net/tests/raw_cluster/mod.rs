//! The cluster the node tests attack by hand: 4 replicas started from
//! known keys, a counter service, and a client driven frame by frame.

#![allow(dead_code)]

use std::time::Duration;

use cbase_core::{
    AccessSet, Container, Context, ExecError, ExecutorBuilder, Key, Request, Service, State, Table,
    codec,
};
use cbase_net::config::{ClusterConfig, ReplicaEntry, ReplicaId};
use cbase_net::crypto::SecretKey;
use cbase_net::message::{ClientBatch, ClientMessage, ClientRequest, ReplyMessage, RequestBatch};
use cbase_net::protocol::ProtocolConfig;
use cbase_net::runtime::{NodeConfig, ReplicaNode};
use cbase_net::transport::{self, FrameReader, FrameWriter, Identity, TransportConfig};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Op {
    Add { key: u64, by: u64 },
    Get { key: u64 },
}

impl Request for Op {
    fn access_set(&self) -> AccessSet {
        match self {
            Op::Add { key, .. } => AccessSet::none().write(Key::entry("counts", key)),
            Op::Get { key } => AccessSet::none().read(Key::entry("counts", key)),
        }
    }
    fn method(&self) -> &'static str {
        match self {
            Op::Add { .. } => "add",
            Op::Get { .. } => "get",
        }
    }
}

pub struct Counts {
    pub counts: Table<u64, u64>,
}

impl State for Counts {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("counts", &self.counts)]
    }
}

pub struct Counter(pub Counts);

impl Service for Counter {
    type Request = Op;
    type Response = u64;
    fn execute(&self, op: Op, _: &Context) -> u64 {
        match op {
            Op::Add { key, by } => self.0.counts.upsert(
                key,
                || 0,
                |n| {
                    *n += by;
                    *n
                },
            ),
            Op::Get { key } => self.0.counts.get(&key).unwrap_or(0),
        }
    }
    fn state(&self) -> &dyn State {
        &self.0
    }
}

pub fn secret(id: u8) -> SecretKey {
    SecretKey::from_seed([id + 1; 32])
}

pub struct Cluster {
    pub config: ClusterConfig,
    pub nodes: Vec<Option<ReplicaNode>>,
}

/// The agreement settings of the test clusters.
pub fn protocol(transport: &TransportConfig) -> ProtocolConfig {
    ProtocolConfig {
        checkpoint_interval: 4,
        window: 16,
        // A full proposal must fit the frames.
        max_batch_bytes: transport.max_frame - cbase_net::protocol::PRE_PREPARE_OVERHEAD,
        ..ProtocolConfig::default()
    }
}

/// Starts the replicas in `running` of a 4-replica cluster with known keys.
pub async fn start(running: &[ReplicaId], transport: TransportConfig) -> Cluster {
    let mut listeners = Vec::new();
    let mut replicas = Vec::new();
    for id in 0..4u32 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        replicas.push(ReplicaEntry {
            id,
            address: listener.local_addr().unwrap().to_string(),
            public_key: secret(id as u8).public(),
        });
        listeners.push(listener);
    }
    let config = ClusterConfig {
        f: 1,
        replicas,
        clients: None,
    };
    let mut nodes = Vec::new();
    for (id, listener) in listeners.into_iter().enumerate() {
        let id = id as ReplicaId;
        if !running.contains(&id) {
            nodes.push(None);
            continue;
        }
        let node_config = NodeConfig {
            id,
            cluster: config.clone(),
            secret: secret(id as u8),
            protocol: protocol(&transport),
            transport: transport.clone(),
            executor: ExecutorBuilder::new().workers(4),
            recovering: false,
            restored: false,
            data_dir: None,
        };
        let service = Counter(Counts {
            counts: Table::new(),
        });
        nodes.push(Some(
            ReplicaNode::start(node_config, listener, service)
                .await
                .unwrap(),
        ));
    }
    Cluster { config, nodes }
}

impl Cluster {
    pub fn node(&self, id: ReplicaId) -> &ReplicaNode {
        self.nodes[id as usize].as_ref().unwrap()
    }

    pub fn address(&self, id: ReplicaId) -> String {
        self.config.replicas[id as usize].address.clone()
    }

    pub async fn shutdown(self) {
        for node in self.nodes.into_iter().flatten() {
            node.shutdown().await;
        }
    }
}

/// A hand-driven client: one authenticated session per replica.
pub struct RawClient {
    pub key: SecretKey,
    pub sessions: Vec<(FrameReader, FrameWriter)>,
}

impl RawClient {
    pub async fn connect(cluster: &Cluster, ids: &[ReplicaId], key: SecretKey) -> RawClient {
        let identity = Identity::client(key.clone());
        let mut sessions = Vec::new();
        for id in ids {
            let stream = TcpStream::connect(cluster.address(*id)).await.unwrap();
            let session = transport::connect(
                stream,
                &identity,
                *id,
                &cluster.config,
                &TransportConfig::default(),
            )
            .await
            .unwrap();
            sessions.push(session.split());
        }
        // A replica files a client's session for replies only after its side
        // of the handshake, which may come after ours: a reply to a request
        // executed before that is not sent (a real client retransmits). So
        // wait for each replica to answer a status query, which it does
        // through the filed session.
        for (reader, writer) in &mut sessions {
            writer.send_value(&ClientMessage::Status).await.unwrap();
            writer.flush().await.unwrap();
            loop {
                let message: ReplyMessage =
                    tokio::time::timeout(Duration::from_secs(60), reader.recv_value())
                        .await
                        .expect("a status answer in time")
                        .expect("a valid frame");
                if matches!(message, ReplyMessage::Status(_)) {
                    break;
                }
            }
        }
        RawClient { key, sessions }
    }

    pub fn batch(&self, requests: Vec<(u32, u64, Op)>) -> ClientBatch {
        let requests = requests
            .into_iter()
            .map(|(lane, number, op)| ClientRequest {
                lane,
                number,
                operation: codec::encode(&op).unwrap(),
            })
            .collect();
        ClientBatch::sign(
            RequestBatch {
                client: self.key.public(),
                requests,
            },
            &self.key,
        )
    }

    pub async fn send(&mut self, to: usize, batch: &ClientBatch) {
        let (_, writer) = &mut self.sessions[to];
        writer
            .send_value(&ClientMessage::Requests(batch.clone()))
            .await
            .unwrap();
        writer.flush().await.unwrap();
    }

    /// Waits for the reply to (lane, number) from session `from`.
    pub async fn reply(&mut self, from: usize, lane: u32, number: u64) -> Result<u64, ExecError> {
        let (reader, _) = &mut self.sessions[from];
        loop {
            let message: ReplyMessage =
                tokio::time::timeout(Duration::from_secs(20), reader.recv_value())
                    .await
                    .expect("a reply in time")
                    .expect("a valid reply frame");
            let ReplyMessage::Replies(replies) = message else {
                continue;
            };
            if let Some(reply) = replies
                .into_iter()
                .find(|r| r.lane == lane && r.number == number)
            {
                return codec::decode(&reply.result).unwrap();
            }
        }
    }
}

//! Asking every replica of a cluster how it is doing: for operators (the
//! `status` command of `cbase::app`), not for clients' decisions.
//!
//! Each replica answers for itself over an authenticated connection (the
//! handshake proves the answer comes from the key the cluster file lists),
//! but a faulty replica may still report anything: compare the answers.

use std::sync::Arc;
use std::time::Duration;

use cbase_core::codec;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::config::{ClusterConfig, ReplicaId};
use crate::crypto::SecretKey;
use crate::message::{ClientMessage, ReplicaStatus, ReplyMessage};
use crate::transport::{self, Identity, TransportConfig, TransportError};

/// One replica's answer to a status query, or why there is none.
#[derive(Clone, Debug)]
pub struct StatusReport {
    /// The replica.
    pub replica: ReplicaId,
    /// Its address in the cluster file.
    pub address: String,
    /// What it said, or why it said nothing (unreachable, refused the
    /// handshake, no answer in time).
    pub status: Result<ReplicaStatus, String>,
}

/// Asks every replica of `cluster` for its status, all at once, waiting at
/// most `wait` for each; one report per replica, in the cluster file's order.
/// Asks as the client holding `key` (one the cluster admits, if its file
/// lists clients), or as a fresh identity.
pub async fn query(
    cluster: &ClusterConfig,
    transport: &TransportConfig,
    key: Option<SecretKey>,
    wait: Duration,
) -> Vec<StatusReport> {
    let key = key.unwrap_or_else(SecretKey::generate);
    let identity = Arc::new(Identity::client(key));
    let shared = Arc::new((cluster.clone(), transport.clone()));
    let mut asks = JoinSet::new();
    for (at, replica) in cluster.replicas.iter().enumerate() {
        let (identity, shared) = (Arc::clone(&identity), Arc::clone(&shared));
        let (id, address) = (replica.id, replica.address.clone());
        asks.spawn(async move {
            let (cluster, transport) = &*shared;
            let asked = ask(id, &address, &identity, cluster, transport);
            let status = match tokio::time::timeout(wait, asked).await {
                Ok(answer) => answer,
                Err(_) => Err(format!("no answer within {wait:?}")),
            };
            let report = StatusReport {
                replica: id,
                address,
                status,
            };
            (at, report)
        });
    }
    let mut reports: Vec<(usize, StatusReport)> = asks.join_all().await;
    reports.sort_by_key(|(at, _)| *at);
    reports.into_iter().map(|(_, report)| report).collect()
}

/// One replica's status, over a connection of its own.
async fn ask(
    replica: ReplicaId,
    address: &str,
    identity: &Identity,
    cluster: &ClusterConfig,
    config: &TransportConfig,
) -> Result<ReplicaStatus, String> {
    let unreachable = |error: TransportError| format!("unreachable: {error}");
    let stream = TcpStream::connect(address)
        .await
        .map_err(|error| unreachable(error.into()))?;
    let session = transport::connect(stream, identity, replica, cluster, config)
        .await
        .map_err(unreachable)?;
    let (mut reader, mut writer) = session.split();
    let query = codec::encode(&ClientMessage::Status).expect("a status query always encodes");
    writer.send(&query).await.map_err(unreachable)?;
    writer.flush().await.map_err(unreachable)?;
    loop {
        let frame = reader.recv().await.map_err(|error| match error {
            // A replica that predates status queries closes the connection.
            TransportError::Closed => "closed the connection without an answer".to_string(),
            error => unreachable(error),
        })?;
        match codec::decode::<ReplyMessage>(&frame) {
            Ok(ReplyMessage::Status(status)) if status.replica == replica => return Ok(status),
            Ok(ReplyMessage::Status(status)) => {
                return Err(format!("answered as replica {}", status.replica));
            }
            // Replies are for calls; this connection made none.
            Ok(ReplyMessage::Replies(_) | ReplyMessage::Reads(_)) => continue,
            Ok(ReplyMessage::Refused(why)) => return Err(format!("refused: {why}")),
            Err(error) => return Err(format!("undecodable answer: {error}")),
        }
    }
}

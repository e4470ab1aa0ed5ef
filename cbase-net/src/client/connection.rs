//! One replica's connection, kept up for the client: queued frames out,
//! replies and read answers in, tallied into the calls they answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cbase_core::codec;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{REFUSED_BACKOFF, Shared, reads};
use crate::config::{ClusterConfig, ReplicaId};
use crate::message::{Reply, ReplyMessage};
use crate::transport::reachability::Reachability;
use crate::transport::{self, FrameReader, Identity, TransportConfig, TransportError};

/// Keeps one replica (the `at`th of the cluster file) connected: writes
/// queued frames, reads replies.
#[allow(clippy::too_many_arguments)]
pub(super) async fn connection(
    at: usize,
    replica: ReplicaId,
    address: String,
    identity: Arc<Identity>,
    cluster: Arc<ClusterConfig>,
    config: TransportConfig,
    mut outgoing: mpsc::Receiver<Arc<Vec<u8>>>,
    shared: Arc<Shared>,
) {
    let mut backoff = Duration::from_millis(20);
    let by = format!("client {}", identity.key.public());
    let mut reachability = Reachability::new(by, replica, address.clone());
    loop {
        let session = match TcpStream::connect(&address).await {
            Ok(stream) => transport::connect(stream, &identity, replica, &cluster, &config).await,
            Err(error) => Err(TransportError::Io(error)),
        };
        let session = match session {
            Ok(session) => session,
            Err(error) => {
                reachability.failed(&error, Instant::now());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        reachability.connected();
        let up = |up: bool| shared.connected[at].store(up, std::sync::atomic::Ordering::Relaxed);
        up(true);
        backoff = Duration::from_millis(20);
        let (reader, mut writer) = session.split();
        let service = shared.service.lock().clone();
        if let Some(frame) = service
            && (writer.send(&frame).await.is_err() || writer.flush().await.is_err())
        {
            up(false);
            continue;
        }
        let mut reading = tokio::spawn(read_replies(at, replica, reader, Arc::clone(&shared)));
        let mut refused = false;
        loop {
            tokio::select! {
                frame = outgoing.recv() => {
                    let Some(frame) = frame else {
                        reading.abort();
                        return;
                    };
                    let mut sent = writer.send(&frame).await;
                    while sent.is_ok() {
                        match outgoing.try_recv() {
                            Ok(more) => sent = writer.send(&more).await,
                            Err(_) => break,
                        }
                    }
                    if sent.is_err() || writer.flush().await.is_err() {
                        break;
                    }
                }
                ended = &mut reading => {
                    refused = ended.unwrap_or(false);
                    break;
                }
            }
        }
        up(false);
        reading.abort();
        if refused {
            // Asking again at once would only be refused again (until an
            // operator admits the client).
            tokio::time::sleep(REFUSED_BACKOFF).await;
        } else {
            shared.refused[at].lock().take();
        }
    }
}

/// Reads replica `replica`'s replies until the connection ends; returns
/// whether the replica refused this client.
async fn read_replies(
    at: usize,
    replica: ReplicaId,
    mut reader: FrameReader,
    shared: Arc<Shared>,
) -> bool {
    while let Ok(frame) = reader.recv().await {
        let replies = match codec::decode::<ReplyMessage>(&frame) {
            Ok(ReplyMessage::Replies(replies)) => replies,
            Ok(ReplyMessage::Reads(answers)) => {
                reads::on_answers(&shared, replica, answers);
                continue;
            }
            Ok(ReplyMessage::Refused(why)) => {
                let mut refused = shared.refused[at].lock();
                if refused.is_none() {
                    tracing::warn!(replica, "replica {replica} refuses this client: {why}");
                }
                *refused = Some(why);
                return true;
            }
            // A status answer this connection never asked for, or garbage.
            Ok(ReplyMessage::Status(_)) | Err(_) => {
                shared
                    .rejected
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return false;
            }
        };
        on_replies(&shared, replica, replies);
    }
    false
}

/// Tallies replies that came over replica `replica`'s connection; one that
/// names another replica is counted as rejected.
pub(super) fn on_replies(shared: &Shared, replica: ReplicaId, replies: Vec<Reply>) {
    let mut pending = shared.pending.lock();
    for reply in replies {
        if reply.replica != replica {
            shared
                .rejected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        }
        let Some(call) = pending.get_mut(&(reply.lane, reply.number)) else {
            continue;
        };
        if let Some(view) = call.vote(replica, reply.result, reply.view, shared.weak_quorum) {
            shared
                .view
                .fetch_max(view, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

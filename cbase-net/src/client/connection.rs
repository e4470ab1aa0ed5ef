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
use crate::transport::{self, FrameReader, FrameWriter, Identity, TransportConfig, TransportError};

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
    let mut last_refusal: Option<String> = None;
    loop {
        let session = match TcpStream::connect(&address).await {
            Ok(stream) => transport::connect(stream, &identity, replica, &cluster, &config).await,
            Err(error) => Err(TransportError::Io(error)),
        };
        let session = match session {
            Ok(session) => session,
            Err(error) => {
                reachability.failed(&error, Instant::now());
                if !wait_discarding(&mut outgoing, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        reachability.connected();
        // A replica that refused this client before may admit it now (a
        // place freed, an operator listed it): until it says otherwise on
        // this connection, it counts as answering. Were the mark kept until
        // a reply came, calls would fail at once as refused and never be
        // sent, so no reply could come.
        shared.refused[at].lock().take();
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
        let (backlog, to_write) = mpsc::channel(WRITE_BACKLOG);
        let mut writing = tokio::spawn(write_frames(writer, to_write));
        let mut refused = None;
        loop {
            tokio::select! {
                frame = outgoing.recv() => {
                    let Some(frame) = frame else {
                        reading.abort();
                        writing.abort();
                        return;
                    };
                    // Full: the replica is not reading what it was sent
                    // (faulty, or far behind). The frame is dropped rather
                    // than kept (see `wait_discarding` for why nothing is
                    // lost); the queue is never left to fill.
                    let _ = backlog.try_send(frame);
                }
                ended = &mut reading => {
                    refused = ended.unwrap_or(None);
                    break;
                }
                // A write failed: the connection is gone.
                _ = &mut writing => break,
            }
        }
        up(false);
        reading.abort();
        writing.abort();
        if let Some(why) = refused {
            // Said once per reason, not at every reconnection.
            if last_refusal.as_ref() != Some(&why) {
                tracing::warn!(replica, "replica {replica} refuses this client: {why}");
            }
            last_refusal = Some(why);
            // Asking again at once would only be refused again (until an
            // operator admits the client).
            if !wait_discarding(&mut outgoing, REFUSED_BACKOFF).await {
                return;
            }
        } else {
            last_refusal = None;
        }
    }
}

/// How many frames a connection's writer may have waiting: beyond them, a
/// replica that does not read what it is sent has frames dropped, not
/// queued for it (up to the queue's 16,384 frames of up to
/// `max_request_bytes` each, held for calls long ended).
const WRITE_BACKLOG: usize = 64;

/// Writes `frames` to a replica until one fails, those that are waiting
/// together with one flush.
async fn write_frames(mut writer: FrameWriter, mut frames: mpsc::Receiver<Arc<Vec<u8>>>) {
    while let Some(frame) = frames.recv().await {
        let mut sent = writer.send(&frame).await;
        while sent.is_ok() {
            match frames.try_recv() {
                Ok(more) => sent = writer.send(&more).await,
                Err(_) => break,
            }
        }
        if sent.is_err() || writer.flush().await.is_err() {
            return;
        }
    }
}

/// Waits `how_long` before the next connection attempt, dropping the frames
/// queued for this replica meanwhile; returns false if the client is gone.
///
/// A replica that cannot be reached (down, or refusing this client) must
/// not make the client hold every frame its calls send: up to the queue's
/// 16,384 frames of up to `max_request_bytes` each. Nothing is lost by
/// dropping them: a call with no f+1 matching replies yet is sent again,
/// signed, to every replica, and a replica that missed an unsigned batch
/// takes it from the f+1 replicas that vouch for it.
async fn wait_discarding(outgoing: &mut mpsc::Receiver<Arc<Vec<u8>>>, how_long: Duration) -> bool {
    let until = tokio::time::Instant::now() + how_long;
    loop {
        while outgoing.try_recv().is_ok() {}
        tokio::select! {
            () = tokio::time::sleep_until(until) => return true,
            frame = outgoing.recv() => {
                if frame.is_none() {
                    return false;
                }
            }
        }
    }
}

/// Reads replica `replica`'s replies until the connection ends; returns
/// why the replica refused this client, if it did (and marks it refusing).
async fn read_replies(
    at: usize,
    replica: ReplicaId,
    mut reader: FrameReader,
    shared: Arc<Shared>,
) -> Option<String> {
    while let Ok(frame) = reader.recv().await {
        let replies = match codec::decode::<ReplyMessage>(&frame) {
            Ok(ReplyMessage::Replies(replies)) => replies,
            Ok(ReplyMessage::Reads(answers)) => {
                reads::on_answers(&shared, replica, answers);
                continue;
            }
            Ok(ReplyMessage::Refused(why)) => {
                *shared.refused[at].lock() = Some(why.clone());
                return Some(why);
            }
            // A status answer this connection never asked for, or garbage.
            Ok(ReplyMessage::Status(_)) | Err(_) => {
                shared
                    .rejected
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return None;
            }
        };
        on_replies(&shared, replica, replies);
    }
    None
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

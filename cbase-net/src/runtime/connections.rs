//! Connection tasks: one outbound connection per peer replica (sending only),
//! and a listener whose connections carry peers' messages in, client requests
//! in and replies out.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cbase_core::{ExecError, codec};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::client_slots::Filed;
use super::reads::{ClientQueue, Outgoing, PendingRead};
use super::sources::{Counted, PerSource, Source};
use super::{ClientQueues, NodeMetrics};
use crate::config::{ClusterConfig, ReplicaId};
use crate::crypto::PublicKey;
use crate::message::{
    ClientMessage, ReadReply, ReplicaMessage, ReplicaStatus, Reply, ReplyMessage,
};
use crate::protocol::Input;
use crate::runtime::execution::ExecutionShared;
use crate::transport::reachability::Reachability;
use crate::transport::{
    self, FrameReader, FrameWriter, Identity, Role, TransportConfig, TransportError,
};

/// Reconnect delays grow from this to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Keeps a connection to `peer` and writes everything queued for it.
/// Messages queued while disconnected wait (up to the queue's bound).
pub(super) async fn outbound(
    peer: ReplicaId,
    address: String,
    identity: Arc<Identity>,
    cluster: Arc<ClusterConfig>,
    config: Arc<TransportConfig>,
    mut outbox: super::peer_queue::PeerOutbox,
    metrics: Arc<NodeMetrics>,
) {
    let mut backoff = MIN_BACKOFF;
    let by = match identity.role {
        transport::Role::Replica(id) => format!("replica {id}"),
        transport::Role::Client(key) => format!("client {key}"),
    };
    let mut reachability = Reachability::new(by, peer, address.clone());
    loop {
        let session = match TcpStream::connect(&address).await {
            Ok(stream) => transport::connect(stream, &identity, peer, &cluster, &config).await,
            Err(error) => Err(TransportError::Io(error)),
        };
        let mut writer = match session {
            Ok(session) => {
                backoff = MIN_BACKOFF;
                reachability.connected();
                session.split().1
            }
            Err(error) => {
                if matches!(
                    error,
                    TransportError::Handshake(_)
                        | TransportError::BadSignature
                        | TransportError::WrongPeer { .. }
                ) {
                    metrics.handshake_failures.fetch_add(1, Ordering::Relaxed);
                }
                reachability.failed(&error, std::time::Instant::now());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        loop {
            let Some(first) = outbox.frames.recv().await else {
                return;
            };
            if write_burst(&mut writer, first, &mut outbox).await.is_err() {
                break;
            }
        }
    }
}

/// Writes one frame and whatever else is already queued, then flushes once.
/// The frames taken no longer count against the queue's bytes, written or
/// (on an error) lost.
async fn write_burst(
    writer: &mut FrameWriter,
    first: Arc<Vec<u8>>,
    outbox: &mut super::peer_queue::PeerOutbox,
) -> Result<(), TransportError> {
    let mut taken = first.len();
    let result = async {
        writer.send(&first).await?;
        for _ in 0..1024 {
            match outbox.frames.try_recv() {
                Ok(frame) => {
                    taken += frame.len();
                    writer.send(&frame).await?;
                }
                Err(_) => break,
            }
        }
        writer.flush().await
    }
    .await;
    outbox.written(taken);
    result
}

/// Connections refused at the handshake, told to the log at most once per
/// [`RefusalLog::EVERY`]: anyone can knock on the port, and the log must
/// not grow with their knocking.
#[derive(Debug, Default)]
pub(super) struct RefusalLog {
    /// When the last warning was written, and refusals since.
    last: parking_lot::Mutex<Option<(std::time::Instant, u64)>>,
}

impl RefusalLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn refused(&self, from: Option<std::net::SocketAddr>, error: &TransportError) {
        let now = std::time::Instant::now();
        let mut last = self.last.lock();
        match &mut *last {
            Some((at, since)) if now.duration_since(*at) < Self::EVERY => {
                *since += 1;
                tracing::debug!(?from, %error, "refused a connection");
            }
            _ => {
                let more = last.map_or(0, |(_, since)| since);
                *last = Some((now, 0));
                tracing::warn!(
                    ?from,
                    %error,
                    refused_since_last_warning = more,
                    "refused a connection at the handshake"
                );
            }
        }
    }
}

/// What the listener's connections need.
pub(super) struct Inbound {
    /// This replica.
    pub id: ReplicaId,
    /// Refused handshakes, for the log.
    pub refusals: RefusalLog,
    pub identity: Arc<Identity>,
    pub cluster: Arc<ClusterConfig>,
    pub transport: Arc<TransportConfig>,
    /// The protocol loop's queues (see [`inbox`](super::inbox)).
    pub events: super::inbox::Senders,
    pub clients: ClientQueues,
    pub execution: Arc<ExecutionShared>,
    /// Where reads on the fast path go.
    pub reads: ReadPath,
    pub metrics: Arc<NodeMetrics>,
    /// The largest signed client batch the protocol accepts
    /// (`ProtocolConfig::max_batch_bytes`).
    pub max_batch_bytes: usize,
    /// The most requests in a client batch the protocol accepts
    /// (`ProtocolConfig::max_batch_requests`).
    pub max_batch_requests: usize,
    /// The service this replica runs and its interface fingerprint, if its
    /// request type has one: clients built for another are refused.
    pub service: Option<cbase_core::Fingerprint>,
    /// Why the replica stopped, once it has: clients are told.
    pub halt: Arc<super::halt::Halt>,
    /// Shared by client connections' large frames
    /// (`TransportConfig::client_frame_budget`).
    pub client_frames: transport::FrameBudget,
    /// What one source's client connections may hold of it together.
    pub client_frame_shares: transport::SourceShares<Source>,
    /// Shared by client connections' answers waiting beyond a small share
    /// each (`TransportConfig::client_answer_budget`).
    pub client_answers: Arc<super::answers::AnswerBudget>,
    /// The connection each peer replica has open to this one, told when a
    /// newer one replaces it.
    pub replica_links:
        parking_lot::Mutex<std::collections::BTreeMap<ReplicaId, Arc<tokio::sync::Notify>>>,
}

/// What a connection needs to hand a read on the fast path to execution.
pub(super) struct ReadPath {
    /// The protocol's read barrier (`Replica::read_barrier`), or
    /// `NO_READS` while it answers none.
    pub barrier: Arc<std::sync::atomic::AtomicU64>,
    /// The execution thread's queue.
    pub execution: std::sync::mpsc::Sender<super::ExecCommand>,
    /// Bytes of all reads handed to execution and not yet run, from every
    /// connection (see [`HeldBytes::within`](super::reads::HeldBytes::within)).
    pub waiting: Arc<std::sync::atomic::AtomicUsize>,
}

/// Accepts connections until aborted; aborting it aborts every connection task.
pub(super) async fn listen(listener: TcpListener, inbound: Inbound) {
    let inbound = Arc::new(inbound);
    let mut connections = JoinSet::new();
    // Connections past `max_handshakes` under way are closed on accept
    // (see `TransportConfig::max_handshakes`).
    let handshakes = Arc::new(tokio::sync::Semaphore::new(
        inbound.transport.max_handshakes,
    ));
    // And past `max_handshakes_per_source` from the connection's source.
    let handshakes_by_source = PerSource::new(inbound.transport.max_handshakes_per_source);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => {
                    let source = Source::of(from.ip());
                    let Some(handshake) = handshakes_by_source
                        .try_count(source)
                        .and_then(|by_source| {
                            let permit = Arc::clone(&handshakes).try_acquire_owned().ok()?;
                            Some((by_source, permit))
                        })
                    else {
                        inbound
                            .metrics
                            .handshakes_over_limit
                            .fetch_add(1, Ordering::Relaxed);
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve(stream, source, Arc::clone(&inbound), handshake));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(MIN_BACKOFF).await;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(
    stream: TcpStream,
    source: Source,
    inbound: Arc<Inbound>,
    handshake: (Counted, tokio::sync::OwnedSemaphorePermit),
) {
    let from = stream.peer_addr().ok();
    let accepted = transport::accept(
        stream,
        &inbound.identity,
        &inbound.cluster,
        &inbound.transport,
    )
    .await;
    drop(handshake);
    let session = match accepted {
        Ok(session) => session,
        Err(error) => {
            inbound
                .metrics
                .handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            inbound.refusals.refused(from, &error);
            return;
        }
    };
    let peer = session.peer();
    let (reader, writer) = session.split();
    let result = match peer {
        Role::Replica(id) => serve_replica(id, reader, &inbound).await,
        Role::Client(key) => serve_client(key, source, reader, writer, &inbound).await,
    };
    if let Err(error) = result {
        match error {
            ConnectionEnd::Closed | ConnectionEnd::Refused => {}
            ConnectionEnd::Frame(error) => {
                inbound.metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(?peer, %error, "connection closed: bad frame");
            }
            ConnectionEnd::Malformed(error) => {
                inbound.metrics.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(?peer, %error, "connection closed: malformed message");
            }
        }
    }
}

enum ConnectionEnd {
    Closed,
    /// This replica refused the client, and told it why.
    Refused,
    Frame(TransportError),
    Malformed(codec::CodecError),
}

async fn next_frame(reader: &mut FrameReader) -> Result<Vec<u8>, ConnectionEnd> {
    match reader.recv().await {
        Ok(frame) => Ok(frame),
        Err(TransportError::Closed) => Err(ConnectionEnd::Closed),
        Err(TransportError::Io(_)) => Err(ConnectionEnd::Closed),
        Err(error) => Err(ConnectionEnd::Frame(error)),
    }
}

async fn serve_replica(
    id: ReplicaId,
    mut reader: FrameReader,
    inbound: &Inbound,
) -> Result<(), ConnectionEnd> {
    // One connection from each peer: a newer one replaces it, as a
    // client's does, so a peer that connects again and again (each time
    // leaving a frame all but finished, which holds a read buffer of up to
    // a frame) holds one connection's worth here, not one per connection.
    let replaced = Arc::new(tokio::sync::Notify::new());
    if let Some(older) = inbound
        .replica_links
        .lock()
        .insert(id, Arc::clone(&replaced))
    {
        older.notify_one();
    }
    let served = async {
        loop {
            let frame = tokio::select! {
                frame = next_frame(&mut reader) => frame?,
                () = replaced.notified() => return Err(ConnectionEnd::Closed),
            };
            let message: ReplicaMessage =
                codec::decode(&frame).map_err(ConnectionEnd::Malformed)?;
            if inbound
                .events
                .replica_message(id, message, frame.len())
                .await
                .is_err()
            {
                return Err(ConnectionEnd::Closed);
            }
        }
    };
    let result = served.await;
    let mut links = inbound.replica_links.lock();
    if links
        .get(&id)
        .is_some_and(|link| Arc::ptr_eq(link, &replaced))
    {
        links.remove(&id);
    }
    result
}

async fn serve_client(
    key: PublicKey,
    source: Source,
    mut reader: FrameReader,
    writer: FrameWriter,
    inbound: &Inbound,
) -> Result<(), ConnectionEnd> {
    if !inbound.cluster.admits(&key) {
        inbound
            .metrics
            .unadmitted_clients
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(client = %key, "refused a client the cluster file does not admit");
        let why = format!(
            "the cluster file of replica {} does not list client {} among the clients it \
             admits; add its public key ({}) to every replica's [[clients]]",
            inbound.id,
            key,
            key.to_hex()
        );
        refuse_at_once(writer, why).await;
        return Ok(());
    }
    let (outgoing, queue) = mpsc::channel(16_384);
    let replies = ClientQueue::new(outgoing, Arc::clone(&inbound.client_answers));
    // Answers other than replies (a status, a refusal). One waits at most:
    // a client asking faster than it reads gets fewer answers, and costs
    // nothing more.
    let (control, control_queue) = mpsc::channel(1);
    // One connection per client, and at most so many clients (see
    // `client_slots`).
    let limits = super::client_slots::Limits {
        clients: inbound.transport.max_client_connections,
        per_source: inbound.transport.max_clients_per_source,
        idle_after: inbound.transport.evict_idle_clients_after,
    };
    let filed =
        super::client_slots::file(&inbound.clients, key, source, &replies, &limits, inbound.id);
    let refused = match filed {
        Filed::Placed => None,
        Filed::Full => Some(format!(
            "replica {} serves {} clients already, as many as its \
             max_client_connections allows, all active; try again later",
            inbound.id, limits.clients
        )),
        Filed::SourceFull => Some(format!(
            "replica {} serves {} clients from {source} already, as many as its \
             max_clients_per_source allows, all active; try again later, or raise \
             max_clients_per_source if many clients share that address",
            inbound.id, limits.per_source
        )),
    };
    if let Some(why) = refused {
        inbound
            .metrics
            .clients_over_limit
            .fetch_add(1, Ordering::Relaxed);
        refuse_at_once(writer, why).await;
        return Ok(());
    }
    // Frames larger than what clients send almost always share a budget
    // with every other client connection's (see `transport::FrameBudget`).
    // One source holds at most its share of it.
    reader.share_budget(
        inbound
            .client_frames
            .for_source(&inbound.client_frame_shares, &source),
    );
    let mut writer_task = tokio::spawn(write_replies(
        writer,
        queue,
        control_queue,
        Arc::clone(&replies.bytes),
    ));
    let result = async {
        loop {
            let frame = tokio::select! {
                frame = next_frame(&mut reader) => frame?,
                why = replies.place.closed() => {
                    // Without waiting: a client that reads nothing has a
                    // full queue, and this connection must go all the same.
                    let _ = control.try_send(ReplyMessage::Refused(why));
                    return Err(ConnectionEnd::Refused);
                }
            };
            replies.place.active();
            if let Some(why) = inbound.halt.reason() {
                let _ = control.try_send(ReplyMessage::Refused(stopped(inbound.id, &why)));
                return Err(ConnectionEnd::Refused);
            }
            let frame_bytes = frame.len();
            let batch = match codec::decode(&frame).map_err(ConnectionEnd::Malformed)? {
                ClientMessage::Requests(batch) => batch,
                ClientMessage::Status => {
                    let _ = control.try_send(ReplyMessage::Status(replica_status(inbound)));
                    continue;
                }
                ClientMessage::Reads(reads) => {
                    inbound.reads.admit(inbound.id, &replies, key, reads);
                    continue;
                }
                ClientMessage::Service {
                    service,
                    fingerprint,
                } => match other_version(inbound, &service, fingerprint) {
                    None => continue,
                    Some(why) => {
                        inbound
                            .metrics
                            .mismatched_clients
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(client = %key, "{why}");
                        let _ = control.try_send(ReplyMessage::Refused(why));
                        return Err(ConnectionEnd::Refused);
                    }
                },
            };
            if batch.batch.client != key {
                inbound
                    .metrics
                    .impersonations
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let numbers: Vec<(u32, u64)> = batch
                .batch
                .requests
                .iter()
                .map(|r| (r.lane, r.number))
                .collect();
            // A batch no proposal could carry is refused here, with a reply
            // that says so: every correct replica sends the same one, so the
            // client gets f+1 matching refusals instead of waiting in vain.
            let bytes = encoded_len(&batch);
            let refusal = if numbers.len() > inbound.max_batch_requests {
                Some(ExecError::TooManyRequests {
                    requests: numbers.len() as u64,
                    limit: inbound.max_batch_requests as u64,
                })
            } else if bytes > inbound.max_batch_bytes {
                Some(ExecError::TooLarge {
                    bytes: bytes as u64,
                    limit: inbound.max_batch_bytes as u64,
                })
            } else {
                None
            };
            if let Some(refusal) = refusal {
                inbound
                    .metrics
                    .oversized_requests
                    .fetch_add(1, Ordering::Relaxed);
                for reply in refusals(&inbound.execution, &numbers, refusal) {
                    replies.send_reply(reply);
                }
                continue;
            }
            // A retransmission of requests already executed is answered from
            // the reply cache, without going through agreement again.
            if let Some(cached) = inbound.execution.cached_replies(&key, &numbers, 0) {
                inbound
                    .metrics
                    .cached_replies
                    .fetch_add(cached.len() as u64, Ordering::Relaxed);
                for reply in cached {
                    replies.send_reply(reply);
                }
                continue;
            }
            // A signed batch is checked here, on this connection's task,
            // so that the protocol's one thread never spends a verification
            // on it. The connection is authenticated as the client the
            // batch names, so a signature that is not that client's means
            // the client is faulty: it costs a verification once, then the
            // connection is closed (with one batch after another, it could
            // keep a core busy verifying).
            let input = if batch.is_signed() {
                match batch.check() {
                    Some(checked) => Input::CheckedClient(checked),
                    None => {
                        inbound
                            .metrics
                            .forged_batches
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(client = %key, "closed a client's connection: a batch's signature is not its own");
                        let _ = control
                            .send(ReplyMessage::Refused(format!(
                                "replica {} closed the connection: client {key} sent a \
                                 batch whose signature is not its own",
                                inbound.id
                            )))
                            .await;
                        return Err(ConnectionEnd::Refused);
                    }
                }
            } else {
                Input::Client(batch)
            };
            if inbound
                .events
                .client_input(input, frame_bytes)
                .await
                .is_err()
            {
                return Err(ConnectionEnd::Closed);
            }
        }
    }
    .await;
    {
        let mut clients = inbound.clients.lock();
        if clients
            .get(&key)
            .is_some_and(|q| q.outgoing.same_channel(&replies.outgoing))
        {
            clients.remove(&key);
        }
    }
    if matches!(result, Err(ConnectionEnd::Refused)) {
        // Let the refusal out before the connection closes (briefly: the
        // client may not be reading).
        drop((replies, control));
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut writer_task).await;
    }
    writer_task.abort();
    result
}

/// Tells a client why it is refused before anything else is set up for it
/// (best effort: the client learns why, then the connection closes).
async fn refuse_at_once(mut writer: FrameWriter, why: String) {
    let frame = codec::encode(&ReplyMessage::Refused(why)).expect("a refusal always encodes");
    if writer.send(&frame).await.is_ok() {
        let _ = writer.flush().await;
    }
}

/// What a client hears from a replica that stopped because it could not
/// write to its data directory.
fn stopped(replica: ReplicaId, why: &str) -> String {
    format!(
        "replica {replica} has stopped: {why}. The other replicas go on without it; fix the \
         cause (free space in its data directory) and restart it, and it catches up from them"
    )
}

impl ReadPath {
    /// Hands reads on the fast path from `client` (over `queue`) to
    /// execution, stamped with the read barrier as of now; answers a read
    /// with no result at once if replica `replica` answers no reads now or
    /// the client has too many waiting, or too many bytes of them.
    fn admit(
        &self,
        replica: ReplicaId,
        queue: &ClientQueue,
        client: PublicKey,
        reads: Vec<crate::message::ReadRequest>,
    ) {
        let after = self.barrier.load(Ordering::Acquire);
        let mut admitted = Vec::with_capacity(reads.len());
        for read in reads {
            let refuse = ReadReply {
                id: read.id,
                replica,
                result: None,
            };
            let Some(slot) = queue.admit_read() else {
                queue.send_read(refuse);
                continue;
            };
            let held = queue
                .hold_bytes(read.operation.len())
                .and_then(|held| held.within(&self.waiting));
            let Some(held) = held else {
                queue.send_read(refuse);
                continue;
            };
            if after == super::NO_READS {
                queue.send_read(refuse);
            } else {
                admitted.push(PendingRead {
                    client,
                    id: read.id,
                    operation: read.operation,
                    after,
                    held,
                    slot,
                });
            }
        }
        if !admitted.is_empty() {
            // Execution gone: the reads drop, and their slots with them.
            let _ = self.execution.send(super::ExecCommand::Reads(admitted));
        }
    }
}

/// Why a client built for `service` with interface `fingerprint` cannot be
/// served here, if it cannot: this replica runs another service, or another
/// version of it.
fn other_version(inbound: &Inbound, service: &str, fingerprint: u64) -> Option<String> {
    let ours = inbound.service?;
    if ours.service == service && ours.hash == fingerprint {
        return None;
    }
    Some(format!(
        "replica {} serves `{}` with interface fingerprint {:016x}, but this client was built \
         for `{service}` with fingerprint {fingerprint:016x}: client and replicas run different \
         versions of the service (its methods, argument or return types differ); rebuild the \
         client from the version the replicas run",
        inbound.id, ours.service, ours.hash
    ))
}

/// This replica's answer to a status query, from its metrics.
fn replica_status(inbound: &Inbound) -> ReplicaStatus {
    let metrics = &inbound.metrics;
    ReplicaStatus {
        replica: inbound.id,
        view: metrics.view.load(Ordering::Relaxed),
        recovering: metrics.recovering.load(Ordering::Relaxed),
        delivered: metrics.delivered.load(Ordering::Relaxed),
        stable: metrics.stable.lock().back().copied(),
        checkpoints_taken: metrics.checkpoints_taken.load(Ordering::Relaxed),
        states_installed: metrics.states_installed.load(Ordering::Relaxed),
    }
}

async fn write_replies(
    mut writer: FrameWriter,
    mut queue: mpsc::Receiver<Outgoing>,
    mut control: mpsc::Receiver<ReplyMessage>,
    queued_bytes: Arc<super::answers::QueuedAnswers>,
) {
    loop {
        let first = tokio::select! {
            // A refusal goes out even when the reply queue has closed.
            biased;
            Some(message) = control.recv() => {
                let frame = codec::encode(&message).expect("answers always encode");
                if writer.send(&frame).await.is_err() || writer.flush().await.is_err() {
                    return;
                }
                continue;
            }
            next = queue.recv() => match next {
                Some(next) => next,
                None => return,
            },
        };
        // Replies ready together leave in one frame, answers to reads in
        // another, in the same flush.
        let mut replies = Vec::new();
        let mut answers = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(outgoing) = next.take() {
            bytes += outgoing.bytes();
            match outgoing {
                Outgoing::Reply(reply) => replies.push(reply),
                Outgoing::Read(answer) => answers.push(answer),
            }
            if replies.len() + answers.len() < crate::message::ANSWERS_PER_FRAME {
                next = queue.try_recv().ok();
            }
        }
        let mut frames = Vec::new();
        if !replies.is_empty() {
            frames.push(
                codec::encode(&ReplyMessage::Replies(replies)).expect("replies always encode"),
            );
        }
        if !answers.is_empty() {
            frames
                .push(codec::encode(&ReplyMessage::Reads(answers)).expect("answers always encode"));
        }
        for frame in &frames {
            if writer.send(frame).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
        // Written: their bytes no longer count against the connection.
        queued_bytes.release(bytes);
    }
}

/// The encoded size of a signed batch, as the protocol measures it.
fn encoded_len(batch: &crate::message::ClientBatch) -> usize {
    codec::encode(batch).map_or(usize::MAX, |bytes| bytes.len())
}

/// One reply per request of a batch the protocol would refuse, saying why.
fn refusals(execution: &ExecutionShared, numbers: &[(u32, u64)], refusal: ExecError) -> Vec<Reply> {
    let refusal: Result<(), ExecError> = Err(refusal);
    // The error's encoding does not depend on the response type.
    let result = codec::encode(&refusal).expect("errors always encode");
    numbers
        .iter()
        .map(|&(lane, number)| Reply {
            view: 0,
            lane,
            number,
            replica: execution.replica(),
            result: result.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::super::ExecCommand;
    use super::super::reads::{READ_BYTES_PER_CONNECTION, READS_PER_CONNECTION};
    use super::*;
    use crate::crypto::SecretKey;
    use crate::message::ReadRequest;

    /// Reads with ids `ids`, each an operation of `bytes` bytes.
    fn read_requests(ids: std::ops::Range<u64>, bytes: usize) -> Vec<ReadRequest> {
        ids.map(|id| ReadRequest {
            id,
            operation: vec![0; bytes],
        })
        .collect()
    }

    /// A read path at barrier 7 handing reads to `execution`.
    fn read_path(execution: std::sync::mpsc::Sender<ExecCommand>) -> ReadPath {
        ReadPath {
            barrier: Arc::new(AtomicU64::new(7)),
            execution,
            waiting: Arc::default(),
        }
    }

    /// The reads handed to execution so far, off its queue.
    fn handed_to_execution(commands: &std::sync::mpsc::Receiver<ExecCommand>) -> Vec<PendingRead> {
        commands
            .try_iter()
            .flat_map(|command| match command {
                ExecCommand::Reads(reads) => reads,
                _ => panic!("only reads were sent"),
            })
            .collect()
    }

    #[test]
    fn a_connection_may_leave_only_so_many_bytes_of_reads_waiting() {
        let (execution, commands) = std::sync::mpsc::channel();
        let path = read_path(execution);
        let (outgoing, mut answers) = mpsc::channel(READS_PER_CONNECTION);
        let queue = ClientQueue::new(
            outgoing,
            crate::runtime::answers::AnswerBudget::new(usize::MAX),
        );
        let client = SecretKey::from_seed([1; 32]).public();
        // Far fewer reads than a connection may leave unanswered, but each
        // 16 KiB: 8 MiB in all, waiting for a barrier execution has not
        // reached.
        let reads = |ids| read_requests(ids, 16 << 10);
        let waiting = || handed_to_execution(&commands);
        path.admit(0, &queue, client, reads(0..512));
        let parked = waiting();
        let bytes: usize = parked.iter().map(|read| read.operation.len()).sum();
        assert!(
            bytes <= READ_BYTES_PER_CONNECTION,
            "{bytes} bytes of one connection's reads wait at execution"
        );
        // The others are declined at once (the client orders them).
        let mut declined = 0;
        while let Ok(Outgoing::Read(answer)) = answers.try_recv() {
            assert_eq!(answer.result, None);
            declined += 1;
        }
        assert_eq!(parked.len() + declined, 512);
        // Once execution is done with them, the connection may send as many
        // again.
        let before = parked.len();
        drop(parked);
        path.admit(0, &queue, client, reads(512..1024));
        assert_eq!(waiting().len(), before);
    }

    /// Seen in review: the count of a connection's unanswered reads was
    /// lowered by every answer its writer wrote, and answers go to the
    /// client key's connection as it is when the read runs. A client that
    /// left reads parked at execution, connected again and filled the new
    /// connection's count saw the earlier connection's answers uncount the
    /// new one's reads, which stayed unanswered: the new connection got
    /// that many more admitted than `READS_PER_CONNECTION`. Now each read
    /// carries its own connection's slot until it is answered.
    #[test]
    fn answers_to_an_earlier_connections_reads_make_no_room_on_the_next() {
        let (execution, commands) = std::sync::mpsc::channel();
        let path = read_path(execution);
        let budget = crate::runtime::answers::AnswerBudget::new(usize::MAX);
        let client = SecretKey::from_seed([1; 32]).public();
        let reads = |ids| read_requests(ids, 0);
        let admitted = || handed_to_execution(&commands);
        let n = READS_PER_CONNECTION as u64;
        // The first connection fills its count; its reads wait at
        // execution for barrier 7.
        let (outgoing, _first_answers) = mpsc::channel(2 * READS_PER_CONNECTION);
        let first = ClientQueue::new(outgoing, Arc::clone(&budget));
        path.admit(0, &first, client, reads(0..n));
        let earlier = admitted();
        assert_eq!(earlier.len(), READS_PER_CONNECTION);
        // The client connects again: the new connection takes the key's
        // place, and fills its own count with reads behind a barrier
        // execution has not reached either.
        let (outgoing, mut answers) = mpsc::channel(4 * READS_PER_CONNECTION);
        let second = ClientQueue::new(outgoing, budget);
        let clients: super::super::ClientQueues = Arc::default();
        clients.lock().insert(client, second.clone());
        let sink = super::super::RuntimeSink {
            clients: Arc::clone(&clients),
            metrics: Arc::default(),
        };
        path.barrier.store(9, Ordering::Release);
        path.admit(0, &second, client, reads(n..2 * n));
        let own = admitted();
        assert_eq!(own.len(), READS_PER_CONNECTION);
        assert!(
            second.admit_read().is_none(),
            "the second connection is full"
        );
        // Execution reaches 7 and runs the first connection's reads; their
        // answers go to the key's connection, the second, whose writer
        // writes and uncounts each.
        for read in earlier {
            use super::super::execution::ReplySink;
            sink.send_read(
                &read.client,
                ReadReply {
                    id: read.id,
                    replica: 0,
                    result: Some(vec![1]),
                },
            );
        }
        while let Ok(answer) = answers.try_recv() {
            second.written(answer.bytes());
        }
        assert_eq!(
            first.reads.load(Ordering::Acquire),
            0,
            "the first's are answered"
        );
        // None of the second connection's own reads has been answered
        // (`own` still waits at execution).
        path.admit(0, &second, client, reads(2 * n..3 * n));
        let more = admitted().len();
        assert_eq!(
            more, 0,
            "a connection with {READS_PER_CONNECTION} reads unanswered had {more} more admitted"
        );
        // Once its own are answered (or given up on), it has room again.
        drop(own);
        path.admit(0, &second, client, reads(3 * n..4 * n));
        assert_eq!(admitted().len(), READS_PER_CONNECTION);
    }

    /// Defect: a connection's reads are bounded (`READS_PER_CONNECTION`,
    /// `READ_BYTES_PER_CONNECTION`) and so are those parked at execution
    /// (`MAX_WAITING_READS`, `MAX_WAITING_READ_BYTES`), but nothing bounds
    /// in all the reads handed to execution and not yet taken off its
    /// queue (an unbounded channel). While the execution thread is busy
    /// (installing a fetched state, or waiting for a full executor window
    /// or a checkpoint barrier), a client that connects again and again
    /// gets a fresh connection's bounds each time: the reads its earlier
    /// connections left in the queue keep their operations, counted only
    /// against connections that are gone. Schedule: execution takes
    /// nothing; one client key connects 20 times in turn, each time sending
    /// 1,024 reads of 4 KiB (its connection's 4 MiB): 80 MiB of operations
    /// wait for execution, beyond the 64 MiB the replica lets wait there.
    #[test]
    fn reads_waiting_for_a_busy_execution_are_bounded_in_all_whatever_a_client_reconnects() {
        use super::super::reads::MAX_WAITING_READ_BYTES;
        let (execution, commands) = std::sync::mpsc::channel();
        let path = read_path(execution);
        let budget = crate::runtime::answers::AnswerBudget::new(usize::MAX);
        let client = SecretKey::from_seed([1; 32]).public();
        let per_read = READ_BYTES_PER_CONNECTION / READS_PER_CONNECTION;
        let n = READS_PER_CONNECTION as u64;
        for connection in 0..20u64 {
            // The client connects again: its earlier connection is closed,
            // its reads still in execution's queue.
            let (outgoing, _answers) = mpsc::channel(READS_PER_CONNECTION);
            let queue = ClientQueue::new(outgoing, Arc::clone(&budget));
            path.admit(
                0,
                &queue,
                client,
                read_requests(connection * n..(connection + 1) * n, per_read),
            );
        }
        let waiting = handed_to_execution(&commands);
        let bytes: usize = waiting.iter().map(|read| read.operation.len()).sum();
        assert!(
            bytes <= MAX_WAITING_READ_BYTES + READ_BYTES_PER_CONNECTION,
            "one client that connected 20 times left {} MiB of reads ({} reads) waiting \
             for execution",
            bytes >> 20,
            waiting.len()
        );
    }
}

//! The client of a replicated service: [`NetClient`].
//!
//! It connects to every replica, sends new requests to the primary, and
//! accepts a result once f+1 replicas (so at least one correct one) send the
//! same reply. A request that gets no such result in time is retransmitted to
//! every replica, with growing delays, until an overall deadline.
//!
//! A client has several *lanes*, each with its own sequence of request
//! numbers, so one client can have many requests in flight; requests issued
//! together are signed once as a batch. It implements [`Invoke`], so
//! generated typed clients (`BankClient::new(client)`) use it directly.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cbase_core::codec;
use cbase_core::{ClientError, ExecError, Invoke};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::{ClusterConfig, ReplicaId};
use crate::crypto::SecretKey;
use crate::message::{ClientMessage, ClientRequest, ReplyMessage, RequestBatch, SignedBatch};
use crate::transport::{self, FrameReader, Identity, Role, TransportConfig, TransportError};

/// Client tuning.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How many requests may be in flight at once.
    pub lanes: usize,
    /// The most requests signed together in one batch.
    pub max_batch: usize,
    /// How many signed batches may be unanswered at once. While that many
    /// are, new requests wait and go out together in the next batch: one
    /// signature (and four verifications) for many requests under load, no
    /// delay for a lone request.
    pub batches_in_flight: usize,
    /// A batch counts as unanswered until its first reply arrives or this
    /// much time has passed, so one slow request never holds back others.
    pub batch_linger: Duration,
    /// How long to wait before the first retransmission.
    pub first_retransmit: Duration,
    /// The longest wait between retransmissions.
    pub max_retransmit: Duration,
    /// How long a call may take before it fails with a timeout.
    pub timeout: Duration,
    /// Connection limits.
    pub transport: TransportConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            lanes: 256,
            max_batch: 256,
            batches_in_flight: 2,
            batch_linger: Duration::from_millis(2),
            first_retransmit: Duration::from_millis(500),
            max_retransmit: Duration::from_secs(4),
            timeout: Duration::from_secs(30),
            transport: TransportConfig::default(),
        }
    }
}

struct Pending {
    /// Each replica's reply and the view it reported, by replica.
    votes: BTreeMap<ReplicaId, (Vec<u8>, u64)>,
    done: Option<oneshot::Sender<Vec<u8>>>,
    /// The signed frame that carried the request, for retransmission.
    frame: Option<Arc<Vec<u8>>>,
}

/// State shared by the client handle and its connection tasks.
struct Shared {
    pending: Mutex<HashMap<(u32, u64), Pending>>,
    weak_quorum: usize,
    /// The latest view at least one correct replica reported: its primary
    /// gets new requests.
    view: std::sync::atomic::AtomicU64,
    /// Replies that named a replica other than the connection's, or did not decode.
    rejected: std::sync::atomic::AtomicU64,
}

struct Lanes {
    free: Mutex<Vec<(u32, u64)>>,
    available: Semaphore,
}

/// One signed batch's claim on the in-flight limit, given up at the first
/// reply to any of its requests or after the linger time.
#[derive(Clone)]
struct BatchTicket(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl BatchTicket {
    fn release(&self) {
        self.0.lock().take();
    }
}

/// A signed frame carrying a request, and its batch's ticket.
type Framed = (Arc<Vec<u8>>, BatchTicket);

struct Inner {
    shared: Arc<Shared>,
    lanes: Lanes,
    submit: mpsc::UnboundedSender<(ClientRequest, oneshot::Sender<Framed>)>,
    connections: Vec<mpsc::Sender<Arc<Vec<u8>>>>,
    config: ClientConfig,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A client of a replicated cbase service. Cheap to clone; clones share lanes
/// and connections.
#[derive(Clone)]
pub struct NetClient {
    inner: Arc<Inner>,
}

impl NetClient {
    /// Connects to the cluster with a fresh client identity. Connections are
    /// made (and remade) in the background; calls wait for them.
    pub fn connect(cluster: ClusterConfig, config: ClientConfig) -> Result<NetClient, ClientError> {
        cluster
            .validate()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        if config.lanes == 0 || config.max_batch == 0 || config.batches_in_flight == 0 {
            return Err(ClientError::Config(
                "lanes, max_batch and batches_in_flight must be at least 1".into(),
            ));
        }
        let key = SecretKey::generate();
        let identity = Arc::new(Identity {
            role: Role::Client(key.public()),
            key: key.clone(),
        });
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            weak_quorum: cluster.weak_quorum(),
            view: Default::default(),
            rejected: Default::default(),
        });
        let cluster = Arc::new(cluster);
        let mut tasks = Vec::new();
        let mut connections = Vec::new();
        for replica in &cluster.replicas {
            let (queue, outgoing) = mpsc::channel(16_384);
            connections.push(queue);
            tasks.push(tokio::spawn(connection(
                replica.id,
                replica.address.clone(),
                Arc::clone(&identity),
                Arc::clone(&cluster),
                config.transport.clone(),
                outgoing,
                Arc::clone(&shared),
            )));
        }
        let (submit, requests) = mpsc::unbounded_channel();
        tasks.push(tokio::spawn(batch_and_sign(
            key,
            requests,
            connections.clone(),
            Arc::clone(&shared),
            config.clone(),
        )));
        let lanes = Lanes {
            free: Mutex::new(
                (0..config.lanes as u32)
                    .rev()
                    .map(|lane| (lane, 0))
                    .collect(),
            ),
            available: Semaphore::new(config.lanes),
        };
        Ok(NetClient {
            inner: Arc::new(Inner {
                shared,
                lanes,
                submit,
                connections,
                config,
                tasks,
            }),
        })
    }

    /// Replies that were rejected (wrong sender or undecodable), for tests.
    pub fn rejected_replies(&self) -> u64 {
        self.inner
            .shared
            .rejected
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends one request and waits for f+1 matching replies.
    pub async fn call<Req, Resp>(&self, request: &Req) -> Result<Resp, ClientError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let operation = codec::encode(request).map_err(|e| ClientError::Config(e.to_string()))?;
        let inner = &self.inner;
        let _permit = inner
            .lanes
            .available
            .acquire()
            .await
            .map_err(|_| ClientError::Unavailable("the client is closed".into()))?;
        let (lane, number) = {
            let mut free = inner.lanes.free.lock();
            let (lane, last) = free.pop().expect("a permit guarantees a free lane");
            (lane, last + 1)
        };
        let result = self.run_on_lane(lane, number, operation).await;
        inner.lanes.free.lock().push((lane, number));
        let bytes = result?;
        match codec::decode::<Result<Resp, ExecError>>(&bytes) {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(ClientError::Exec(error)),
            Err(error) => Err(ClientError::Unavailable(format!(
                "f+1 replicas agree on a reply this client cannot decode ({error}); client and service versions differ"
            ))),
        }
    }

    async fn run_on_lane(
        &self,
        lane: u32,
        number: u64,
        operation: Vec<u8>,
    ) -> Result<Vec<u8>, ClientError> {
        let inner = &self.inner;
        let (done, mut result) = oneshot::channel();
        inner.shared.pending.lock().insert(
            (lane, number),
            Pending {
                votes: BTreeMap::new(),
                done: Some(done),
                frame: None,
            },
        );
        let (framed, frame) = oneshot::channel();
        let request = ClientRequest {
            lane,
            number,
            operation,
        };
        if inner.submit.send((request, framed)).is_err() {
            inner.shared.pending.lock().remove(&(lane, number));
            return Err(ClientError::Unavailable("the client is closed".into()));
        }
        let (frame, ticket) = match frame.await {
            Ok((frame, ticket)) => (Some(frame), Some(ticket)),
            Err(_) => (None, None),
        };
        if let Some(pending) = inner.shared.pending.lock().get_mut(&(lane, number)) {
            pending.frame = frame.clone();
        }
        let deadline = Instant::now() + inner.config.timeout;
        let mut wait = inner.config.first_retransmit;
        let outcome = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(wait.min(left), &mut result).await {
                Ok(Ok(bytes)) => break Ok(bytes),
                Ok(Err(_)) => break Err(ClientError::Unavailable("the client is closed".into())),
                Err(_) if left <= wait => break Err(ClientError::Timeout(inner.config.timeout)),
                Err(_) => {
                    // No f+1 matching replies yet: send to every replica, so
                    // the backups learn of it even if the primary is not passing it on.
                    if let Some(frame) = &frame {
                        for connection in &inner.connections {
                            let _ = connection.try_send(Arc::clone(frame));
                        }
                    }
                    wait = (wait * 2).min(inner.config.max_retransmit);
                }
            }
        };
        inner.shared.pending.lock().remove(&(lane, number));
        if let Some(ticket) = ticket {
            ticket.release();
        }
        outcome
    }
}

impl<Req, Resp> Invoke<Req, Resp> for NetClient
where
    Req: Serialize + Send + Sync + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    fn invoke(
        &self,
        request: Req,
    ) -> impl std::future::Future<Output = Result<Resp, ClientError>> + Send {
        let client = self.clone();
        async move { client.call(&request).await }
    }
}

/// Signs whatever requests are ready as one batch and sends it to the primary,
/// keeping at most `batches_in_flight` batches unanswered.
async fn batch_and_sign(
    key: SecretKey,
    mut requests: mpsc::UnboundedReceiver<(ClientRequest, oneshot::Sender<Framed>)>,
    connections: Vec<mpsc::Sender<Arc<Vec<u8>>>>,
    shared: Arc<Shared>,
    config: ClientConfig,
) {
    let in_flight = Arc::new(Semaphore::new(config.batches_in_flight));
    while let Some(first) = requests.recv().await {
        // While earlier batches are unanswered, requests pile up in the channel.
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let mut ready = vec![first];
        while ready.len() < config.max_batch {
            match requests.try_recv() {
                Ok(next) => ready.push(next),
                Err(_) => break,
            }
        }
        let (requests_in_batch, waiters): (Vec<_>, Vec<_>) = ready.into_iter().unzip();
        let batch = SignedBatch::sign(
            RequestBatch {
                client: key.public(),
                requests: requests_in_batch,
            },
            &key,
        );
        let frame = Arc::new(
            codec::encode(&ClientMessage::Requests(batch)).expect("requests always encode"),
        );
        let ticket = BatchTicket(Arc::new(Mutex::new(Some(permit))));
        let linger = ticket.clone();
        let delay = config.batch_linger;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            linger.release();
        });
        // A full queue means the primary is not keeping up; the retransmission
        // timer will send the frame to every replica.
        let view = shared.view.load(std::sync::atomic::Ordering::Relaxed);
        let primary = &connections[(view % connections.len() as u64) as usize];
        let _ = primary.try_send(Arc::clone(&frame));
        for waiter in waiters {
            let _ = waiter.send((Arc::clone(&frame), ticket.clone()));
        }
    }
}

/// Keeps one replica connected: writes queued frames, reads replies.
async fn connection(
    replica: ReplicaId,
    address: String,
    identity: Arc<Identity>,
    cluster: Arc<ClusterConfig>,
    config: TransportConfig,
    mut outgoing: mpsc::Receiver<Arc<Vec<u8>>>,
    shared: Arc<Shared>,
) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let session = match TcpStream::connect(&address).await {
            Ok(stream) => transport::connect(stream, &identity, replica, &cluster, &config).await,
            Err(error) => Err(TransportError::Io(error)),
        };
        let Ok(session) = session else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            continue;
        };
        backoff = Duration::from_millis(20);
        let (reader, mut writer) = session.split();
        let mut reading = tokio::spawn(read_replies(replica, reader, Arc::clone(&shared)));
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
                _ = &mut reading => break,
            }
        }
        reading.abort();
    }
}

async fn read_replies(replica: ReplicaId, mut reader: FrameReader, shared: Arc<Shared>) {
    while let Ok(frame) = reader.recv().await {
        let Ok(ReplyMessage::Replies(replies)) = codec::decode::<ReplyMessage>(&frame) else {
            shared
                .rejected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        };
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
            call.votes.insert(replica, (reply.result, reply.view));
            let latest = &call.votes[&replica].0;
            let matching = call.votes.values().filter(|(r, _)| r == latest).count();
            if matching >= shared.weak_quorum {
                if let Some(done) = call.done.take() {
                    let _ = done.send(latest.clone());
                    // f+1 replicas report at least this view, so a correct
                    // one does: a lying replica cannot redirect us alone.
                    let mut views: Vec<u64> = call.votes.values().map(|(_, v)| *v).collect();
                    views.sort_unstable_by(|a, b| b.cmp(a));
                    if let Some(view) = views.get(shared.weak_quorum - 1) {
                        shared
                            .view
                            .fetch_max(*view, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

//! The client of a replicated service: [`NetClient`].
//!
//! It connects to every replica, sends new requests to every replica
//! (unsigned, each copy authenticated by its connection; see
//! [`ClientConfig::sign_every_batch`]), and accepts a result once f+1
//! replicas (so at least one correct one) send the same reply. A request that
//! gets no such result in time is retransmitted, signed, to every replica,
//! with growing delays, until an overall deadline.
//!
//! A client has several *lanes*, each with its own sequence of request
//! numbers, so one client can have many requests in flight; requests issued
//! together travel as one batch. It implements [`Invoke`], so
//! generated typed clients (`BankClient::new(client)`) use it directly.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cbase_core::codec;
use cbase_core::{ClientError, ExecError, Invoke, Request};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::{ClusterConfig, ReplicaId};
use crate::crypto::SecretKey;
use crate::message::{ClientBatch, ClientMessage, ClientRequest, ReadRequest, RequestBatch};
use crate::transport::{Identity, TransportConfig};

mod batching;
mod connection;
mod reads;

use batching::{BatchSizes, batch_and_sign};
use connection::connection;

/// Client tuning.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How many requests may be in flight at once.
    pub lanes: usize,
    /// The most requests sent together in one batch.
    pub max_batch: usize,
    /// How many batches may be unanswered at once. While that many are, new
    /// requests wait and go out together in the next batch: one frame per
    /// replica for many requests under load, no delay for a lone request.
    /// Reads on the fast path go out in frames held to the same limit (a
    /// frame is unanswered until one of its reads is settled).
    pub batches_in_flight: usize,
    /// A batch counts as unanswered until one of its calls completes or this
    /// much time has passed, so one slow request never holds back others.
    pub batch_linger: Duration,
    /// How long to wait before the first retransmission.
    pub first_retransmit: Duration,
    /// The longest wait between retransmissions.
    pub max_retransmit: Duration,
    /// How long a call may take before it fails with a timeout.
    pub timeout: Duration,
    /// The most bytes one signed batch of requests may take, encoded
    /// (default 1 MiB). A call whose request does not fit even alone fails at
    /// once with [`ClientError::TooLarge`] instead of being sent, and
    /// requests are batched only as far as they fit together.
    ///
    /// Must not exceed the replicas' `ProtocolConfig::max_batch_bytes`, which
    /// refuse larger batches (so a request over it could never be ordered);
    /// and `transport.max_frame` must exceed it by at least
    /// [`MESSAGE_OVERHEAD`], or [`NetClient::connect`] refuses the
    /// configuration.
    pub max_request_bytes: usize,
    /// Connection limits.
    pub transport: TransportConfig,
    /// The client's identity: its key authenticates every request (through
    /// the handshake's session keys, and signatures on retransmission), and
    /// services see its public half as the caller (`Context::client`). `None` (the
    /// default): a fresh key for every [`NetClient::connect`]. A key kept in
    /// a file ([`SecretKey::read_file`], written by `cbase-keygen
    /// --clients`) makes the client the same caller across restarts.
    ///
    /// Exactly-once across a restart: the replicas remember each lane's
    /// last request number per key (while the key's session lasts, see
    /// [`NetClient::call`]) and ignore anything not above it, so a client
    /// starts every lane's numbers at the wall clock's time in nanoseconds
    /// (since 1970) when it connects; each call adds one. A restarted
    /// client's numbers are then above every number it used before, unless
    /// its clock went back in between. Run one client per key at a time:
    /// two would use each other's numbers (replicas answer a number below
    /// a lane's last with [`ExecError::Superseded`]).
    pub key: Option<SecretKey>,
    /// Send read-only calls (methods whose rules only read) on the fast
    /// path: to every replica, unordered, accepted on 2f+1 matching answers,
    /// and ordered as usual if they do not come (default `true`). Turn it
    /// off to order every call, for example to measure the difference.
    pub read_fast_path: bool,
    /// How long a read on the fast path waits for 2f+1 matching answers
    /// before it is ordered instead.
    pub read_timeout: Duration,
    /// Sign every batch and send it to the primary alone, as PBFT's clients
    /// with signatures do (default `false`). By default a batch goes out
    /// unsigned to every replica, each copy authenticated by its
    /// connection's MACs, and is signed only if it must be retransmitted:
    /// signing costs the client tens of microseconds a batch and every
    /// replica as much again to verify, a MAC a fraction of one. Signing
    /// every batch spends that to send one copy instead of n.
    pub sign_every_batch: bool,
}

/// The bytes a frame carrying a signed batch needs beyond the batch itself
/// (the message's tag, with room to spare).
pub const MESSAGE_OVERHEAD: usize = 16;

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            lanes: 256,
            max_batch: 256,
            batches_in_flight: 2,
            batch_linger: Duration::from_millis(2),
            first_retransmit: Duration::from_millis(500),
            sign_every_batch: false,
            max_retransmit: Duration::from_secs(4),
            timeout: Duration::from_secs(30),
            max_request_bytes: 1 << 20,
            transport: TransportConfig::default(),
            key: None,
            read_fast_path: true,
            read_timeout: Duration::from_millis(250),
        }
    }
}

/// The number before each lane's first request: the wall clock in
/// nanoseconds, so that a restarted client's numbers continue above those
/// it used before (see [`ClientConfig::key`]), and a new client's are
/// usually above the floor the replicas keep for expired sessions.
fn first_numbers_after() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

/// How many times a call refused as superseded is sent again, each time
/// numbered above what the refusal reported.
const SUPERSEDED_TRIES: u32 = 4;

/// A call's result from the replies the replicas agree on.
fn decode_result<Resp: DeserializeOwned>(bytes: &[u8]) -> Result<Resp, ClientError> {
    match codec::decode::<Result<Resp, ExecError>>(bytes) {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) => Err(ClientError::Exec(error)),
        Err(error) => Err(ClientError::Unavailable(format!(
            "f+1 replicas agree on a reply this client cannot decode ({error}); client and \
             service versions differ"
        ))),
    }
}

struct Pending {
    /// A key of each replica's reply (`result_key`) and the view it
    /// reported, by replica. Keys, not results: a faulty replica answering
    /// every call in flight with a result as large as a frame would
    /// otherwise make the client hold a frame per call. The result handed
    /// to the caller is the one in the reply that completes f+1 matching.
    votes: BTreeMap<ReplicaId, (ResultKey, u64)>,
    done: Option<oneshot::Sender<Vec<u8>>>,
}

/// What a vote keeps of a result: the result itself if it is at most 32
/// bytes (most are: a number, a unit, a short error), else its digest. The
/// first byte tells which (the length, or 0xff), so a short result never
/// equals a long one's digest.
type ResultKey = [u8; 33];

/// The key a vote on `result` keeps.
fn result_key(result: &[u8]) -> ResultKey {
    let mut key = [0u8; 33];
    if result.len() <= 32 {
        key[0] = result.len() as u8;
        key[1..=result.len()].copy_from_slice(result);
    } else {
        key[0] = 0xff;
        key[1..].copy_from_slice(blake3::hash(result).as_bytes());
    }
    key
}

impl Pending {
    /// Counts `replica`'s reply (its result and the view it reports);
    /// once f+1 (`weak_quorum`) agree, hands the result to the caller and
    /// returns the view that f+1 replicas report at least.
    fn vote(
        &mut self,
        replica: ReplicaId,
        result: Vec<u8>,
        view: u64,
        weak_quorum: usize,
    ) -> Option<u64> {
        let digest = result_key(&result);
        self.votes.insert(replica, (digest, view));
        let matching = self.votes.values().filter(|(d, _)| *d == digest).count();
        if matching < weak_quorum {
            return None;
        }
        let done = self.done.take()?;
        let _ = done.send(result);
        // f+1 replicas report at least this view, so a correct one does: a
        // lying replica cannot redirect the client alone.
        let mut views: Vec<u64> = self.votes.values().map(|(_, v)| *v).collect();
        views.sort_unstable_by(|a, b| b.cmp(a));
        views.get(weak_quorum - 1).copied()
    }
}

/// State shared by the client handle and its connection tasks.
/// How long a client waits before it reconnects to a replica that
/// refused it.
const REFUSED_BACKOFF: Duration = Duration::from_secs(5);

struct Shared {
    pending: Mutex<HashMap<(u32, u64), Pending>>,
    weak_quorum: usize,
    /// The latest view at least one correct replica reported: its primary
    /// gets new requests.
    view: std::sync::atomic::AtomicU64,
    /// Replies that named a replica other than the connection's, or did not decode.
    rejected: std::sync::atomic::AtomicU64,
    /// Whether each replica's connection is up (by position in the cluster
    /// file), to say what a timed-out call saw.
    connected: Vec<std::sync::atomic::AtomicBool>,
    /// Why each replica refused this client, if it did (by position).
    refused: Vec<Mutex<Option<String>>>,
    /// The service this client's requests are for, once a typed client
    /// said ([`Invoke::bind_service`]): sent first on every connection.
    service: Mutex<Option<Arc<Vec<u8>>>>,
    /// Reads on the fast path waiting for answers, by id.
    reads: Mutex<HashMap<u64, reads::ReadTally>>,
    /// The next read's id (the first at random, see
    /// [`reads::first_read_id`]).
    next_read: AtomicU64,
    /// Calls answered on the read-only fast path.
    fast_reads: AtomicU64,
    /// Matching answers that accept a read: 2f+1.
    read_quorum: usize,
    /// How many replicas there are.
    replicas: usize,
}

impl Shared {
    /// Why no call can complete, if so many replicas refused this client
    /// that fewer than f+1 are left to answer (f+1 refusals include a
    /// correct replica's, so a faulty one cannot fake this alone).
    fn hopeless(&self) -> Option<String> {
        let refused: Vec<String> = self
            .refused
            .iter()
            .filter_map(|why| why.lock().clone())
            .collect();
        let answering = self.refused.len() - refused.len();
        (answering < self.weak_quorum).then(|| refused[0].clone())
    }
}

struct Lanes {
    free: Mutex<Vec<(u32, u64)>>,
    available: Semaphore,
    /// Every lane's next number goes above this: raised when the replicas
    /// report an expired session's floor, and to the number that opened
    /// the current session (a new session's lanes must start above it).
    floor: AtomicU64,
}

/// Whether the replicas keep a session for this client (see
/// [`NetClient::call`]).
#[derive(Default)]
struct SessionState {
    open: AtomicBool,
    /// Held while a session opener is in flight, so concurrent first
    /// calls open one session, not one each.
    opening: tokio::sync::Mutex<()>,
}

/// One batch's claim on the in-flight limit, given up when one of its calls
/// completes or after the linger time.
#[derive(Clone)]
struct BatchTicket(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl BatchTicket {
    fn release(&self) {
        self.0.lock().take();
    }
}

/// A batch as sent, and its signed frame for retransmissions.
struct SentBatch {
    batch: RequestBatch,
    key: SecretKey,
    /// The frame that went out first (signed if it went to the primary
    /// alone).
    first: Arc<Vec<u8>>,
    signed: std::sync::OnceLock<Arc<Vec<u8>>>,
}

impl SentBatch {
    /// The frame to retransmit: the batch signed (once, on the first
    /// retransmission), so every replica can check it whoever shows it.
    fn signed_frame(&self) -> Arc<Vec<u8>> {
        Arc::clone(self.signed.get_or_init(|| {
            let batch = ClientBatch::sign(self.batch.clone(), &self.key);
            Arc::new(
                codec::encode(&ClientMessage::Requests(batch)).expect("requests always encode"),
            )
        }))
    }
}

/// A request's batch as sent, and the batch's ticket.
type Framed = (Arc<SentBatch>, BatchTicket);

struct Inner {
    shared: Arc<Shared>,
    sizes: BatchSizes,
    lanes: Lanes,
    session: SessionState,
    submit: mpsc::UnboundedSender<(ClientRequest, oneshot::Sender<Framed>)>,
    /// Reads on the fast path, to the task that sends them together.
    reads_out: mpsc::UnboundedSender<ReadRequest>,
    connections: Vec<mpsc::Sender<Arc<Vec<u8>>>>,
    /// The replicas' ids, in the cluster file's order.
    cluster_ids: Vec<ReplicaId>,
    config: ClientConfig,
    tasks: Vec<JoinHandle<()>>,
    /// This client's public key, as services see it.
    id: cbase_core::ClientId,
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
    pub fn connect(
        mut cluster: ClusterConfig,
        config: ClientConfig,
    ) -> Result<NetClient, ClientError> {
        cluster
            .validate()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        // A cluster file may list the replicas in any order. Kept by id,
        // the connection at index `view % n` is the view's primary (to
        // which a signed batch goes first), whatever the file's order.
        cluster.replicas.sort_by_key(|replica| replica.id);
        if config.lanes == 0 || config.max_batch == 0 || config.batches_in_flight == 0 {
            return Err(ClientError::Config(
                "lanes, max_batch and batches_in_flight must be at least 1".into(),
            ));
        }
        // Frames longer than u32::MAX bytes cannot be sent whatever max_frame says.
        let max_frame = config.transport.max_frame.min(u32::MAX as usize);
        if config.max_request_bytes.saturating_add(MESSAGE_OVERHEAD) > max_frame {
            return Err(ClientError::Config(format!(
                "max_request_bytes ({}) plus {MESSAGE_OVERHEAD} bytes of message overhead must \
                 not exceed the transport's max_frame ({max_frame})",
                config.max_request_bytes
            )));
        }
        let numbers_after = first_numbers_after();
        let key = config.key.clone().unwrap_or_else(SecretKey::generate);
        let id = key.public().client_id();
        let sizes = BatchSizes::new(&key);
        let identity = Arc::new(Identity::client(key.clone()));
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            weak_quorum: cluster.weak_quorum(),
            view: Default::default(),
            rejected: Default::default(),
            connected: cluster
                .replicas
                .iter()
                .map(|_| Default::default())
                .collect(),
            refused: cluster
                .replicas
                .iter()
                .map(|_| Default::default())
                .collect(),
            service: Mutex::new(None),
            reads: Mutex::new(HashMap::new()),
            next_read: AtomicU64::new(reads::first_read_id()),
            fast_reads: AtomicU64::new(0),
            read_quorum: cluster.quorum(),
            replicas: cluster.replicas.len(),
        });
        let cluster_ids: Vec<ReplicaId> = cluster.replicas.iter().map(|r| r.id).collect();
        let cluster = Arc::new(cluster);
        let mut tasks = Vec::new();
        let mut connections = Vec::new();
        for (at, replica) in cluster.replicas.iter().enumerate() {
            let (queue, outgoing) = mpsc::channel(16_384);
            connections.push(queue);
            tasks.push(tokio::spawn(connection(
                at,
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
            sizes,
            requests,
            connections.clone(),
            Arc::clone(&shared),
            config.clone(),
        )));
        let (reads_out, reads_in) = mpsc::unbounded_channel();
        tasks.push(tokio::spawn(reads::send_reads(
            reads_in,
            connections.clone(),
            config.max_request_bytes,
            config.batches_in_flight,
            Arc::clone(&shared),
        )));
        let lanes = Lanes {
            free: Mutex::new(
                (0..config.lanes as u32)
                    .rev()
                    .map(|lane| (lane, 0))
                    .collect(),
            ),
            available: Semaphore::new(config.lanes),
            floor: AtomicU64::new(numbers_after),
        };
        Ok(NetClient {
            inner: Arc::new(Inner {
                shared,
                sizes,
                lanes,
                session: SessionState::default(),
                submit,
                reads_out,
                connections,
                cluster_ids,
                config,
                tasks,
                id,
            }),
        })
    }

    /// Who this client is to the service: what its requests see as
    /// `Context::client`.
    pub fn id(&self) -> cbase_core::ClientId {
        self.inner.id
    }

    /// Replies that were rejected (wrong sender or undecodable), for tests.
    pub fn rejected_replies(&self) -> u64 {
        self.inner
            .shared
            .rejected
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends one request and waits for f+1 matching replies.
    ///
    /// Fails at once with [`ClientError::TooLarge`] if the request's signed
    /// batch alone would exceed [`ClientConfig::max_request_bytes`].
    ///
    /// The replicas remember each client in a bounded *session* (its last
    /// request number and reply per lane, for exactly-once). Before its
    /// first call, and after the replicas report its session expired, the
    /// client opens one with a request that does nothing (safe to repeat).
    /// A call whose session expired while it was in flight fails with
    /// [`ExecError::SessionExpired`]: the replicas cannot tell whether it
    /// ran before; the calls after it open a new session by themselves.
    ///
    /// Dropping the returned future (a `tokio::time::timeout` or `select!`
    /// around it) gives the call up: the request may still execute, once at
    /// most, and the client's lane and memory for it are free again at once.
    pub async fn call<Req, Resp>(&self, request: &Req) -> Result<Resp, ClientError>
    where
        Req: Serialize + Request,
        Resp: DeserializeOwned,
    {
        let operation = codec::encode(request).map_err(|e| ClientError::Config(e.to_string()))?;
        let method = request.method();
        let limit = self.inner.config.max_request_bytes;
        // Without waiting for a lane if it cannot fit on any: the lane and
        // number take at least a byte each (the exact check follows below).
        let at_least = self
            .inner
            .sizes
            .batch(1, 2 + BatchSizes::operation(&operation));
        if at_least > limit {
            return Err(ClientError::TooLarge {
                bytes: at_least,
                limit,
            });
        }
        if request.read_only()
            && self.inner.config.read_fast_path
            && let Some(bytes) = self.read_unordered(&operation).await
        {
            // 2f+1 replicas agree; a refusal among them is as final as an
            // ordered one would be (a read-only method's error).
            return decode_result(&bytes);
        }
        // A call refused as superseded never ran (and never will): once the
        // client numbers above the lane's last, it goes again. More than a
        // few times in a row means another client is using this key.
        let mut tries = 0;
        loop {
            self.open_session(method).await?;
            let (_, bytes) = self.on_lane(operation.clone(), method).await?;
            let result = decode_result(&bytes);
            if let Err(ClientError::Exec(error)) = &result {
                self.note_refusal(error);
                tries += 1;
                if matches!(error, ExecError::Superseded { .. }) && tries < SUPERSEDED_TRIES {
                    continue;
                }
            }
            return result;
        }
    }

    /// Sends a read-only request to every replica unordered and waits for
    /// 2f+1 matching answers (see [`ClientConfig::read_fast_path`]); `None`
    /// if they do not come in time or cannot (answers differ, or replicas
    /// decline), and the call is then ordered.
    async fn read_unordered(&self, operation: &[u8]) -> Option<Vec<u8>> {
        let inner = &self.inner;
        reads::read_unordered(
            &inner.shared,
            &inner.reads_out,
            inner.config.batch_linger,
            inner.config.read_timeout,
            operation,
        )
        .await
    }

    /// How many calls were answered on the read-only fast path (the rest
    /// were ordered): for tests and tuning.
    pub fn fast_reads(&self) -> u64 {
        self.inner.shared.fast_reads.load(Ordering::Relaxed)
    }

    /// Opens a session with the replicas unless one is open: sends a
    /// request with an empty operation (which executes nothing) until it
    /// executes; an expired-session answer tells the floor to number the
    /// next try above.
    async fn open_session(&self, method: &str) -> Result<(), ClientError> {
        let session = &self.inner.session;
        if session.open.load(Ordering::Acquire) {
            return Ok(());
        }
        let _opening = session.opening.lock().await;
        if session.open.load(Ordering::Acquire) {
            return Ok(());
        }
        // Twice is enough for a correct cluster: the second try is above
        // the floor f+1 replicas reported. More tries cover floors that
        // rose meanwhile (other sessions evicted in between).
        for _ in 0..4 {
            let (number, bytes) = self.on_lane(Vec::new(), method).await?;
            match codec::decode::<Result<(), ExecError>>(&bytes) {
                Ok(Ok(())) => {
                    // Lanes this session has not used must start above the
                    // floor it began with, which is below `number`.
                    self.inner.lanes.floor.fetch_max(number, Ordering::AcqRel);
                    session.open.store(true, Ordering::Release);
                    return Ok(());
                }
                Ok(Err(
                    error @ (ExecError::SessionExpired { .. } | ExecError::Superseded { .. }),
                )) => self.note_refusal(&error),
                Ok(Err(error)) => return Err(ClientError::Exec(error)),
                Err(error) => {
                    return Err(ClientError::Unavailable(format!(
                        "f+1 replicas agree on an answer to opening a session that this client \
                         cannot decode ({error}); client and replica versions differ"
                    )));
                }
            }
        }
        Err(ClientError::Unavailable(
            "the replicas refused to open a session four times in a row (their client table \
             evicts sessions faster than this client can open one; see \
             ProtocolConfig::sessions)"
                .into(),
        ))
    }

    /// What a refusal tells about the session: an expired one must be
    /// opened again, above the floor the replicas reported; a superseded
    /// request means this key used higher numbers before (an earlier run
    /// of this client that numbered above its clock, having adopted a
    /// floor), which every lane's next number must now be above.
    fn note_refusal(&self, error: &ExecError) {
        match error {
            ExecError::SessionExpired { floor, .. } => {
                self.inner.lanes.floor.fetch_max(*floor, Ordering::AcqRel);
                self.inner.session.open.store(false, Ordering::Release);
            }
            ExecError::Superseded { last, .. } => {
                self.inner.lanes.floor.fetch_max(*last, Ordering::AcqRel);
            }
            _ => {}
        }
    }

    /// Sends `operation` on a free lane and waits for f+1 matching
    /// replies; returns the request's number and the reply.
    async fn on_lane(
        &self,
        operation: Vec<u8>,
        method: &str,
    ) -> Result<(u64, Vec<u8>), ClientError> {
        let inner = &self.inner;
        let limit = inner.config.max_request_bytes;
        let _permit = inner
            .lanes
            .available
            .acquire()
            .await
            .map_err(|_| ClientError::Unavailable("the client is closed".into()))?;
        let (lane, last) = inner
            .lanes
            .free
            .lock()
            .pop()
            .expect("a permit guarantees a free lane");
        // Declared after the permit, so dropped before it: the lane is free
        // again before another call can take the permit, however this call
        // ends (dropped by its caller included).
        let mut held = HeldLane {
            lanes: &inner.lanes,
            lane,
            // Never sent, so the lane's next request can use the number.
            last,
        };
        let request = ClientRequest {
            lane,
            number: last.max(inner.lanes.floor.load(Ordering::Acquire)) + 1,
            operation,
        };
        let bytes = inner.sizes.batch(1, BatchSizes::request(&request));
        if bytes > limit {
            return Err(ClientError::TooLarge { bytes, limit });
        }
        let number = request.number;
        // From here the request may reach the replicas: the lane's next
        // request goes above it, even if this call is given up on.
        held.last = number;
        let result = self
            .run_on_lane(request)
            .await
            .map_err(|timeout| match timeout {
                Late::Closed => ClientError::Unavailable("the client is closed".into()),
                Late::Refused(why) => ClientError::Refused(why),
                Late::Timeout(seen) => ClientError::Timeout {
                    method: method.to_owned(),
                    after: inner.config.timeout,
                    seen,
                },
            });
        drop(held);
        Ok((number, result?))
    }

    async fn run_on_lane(&self, request: ClientRequest) -> Result<Vec<u8>, Late> {
        let inner = &self.inner;
        let (lane, number) = (request.lane, request.number);
        let (done, mut result) = oneshot::channel();
        inner.shared.pending.lock().insert(
            (lane, number),
            Pending {
                votes: BTreeMap::new(),
                done: Some(done),
            },
        );
        // However this call ends, dropped by its caller included, its
        // entry goes.
        let _filed = FiledCall {
            shared: &inner.shared,
            lane,
            number,
        };
        let (framed, frame) = oneshot::channel();
        if inner.submit.send((request, framed)).is_err() {
            return Err(Late::Closed);
        }
        let (sent, ticket) = match frame.await {
            Ok((sent, ticket)) => (Some(sent), Some(ticket)),
            Err(_) => (None, None),
        };
        let start = Instant::now();
        let deadline = start + inner.config.timeout;
        let mut wait = inner.config.first_retransmit;
        let mut retransmit_at = start + wait;
        // The batch counts as unanswered (holding one of `batches_in_flight`)
        // until a call of it completes or this passes, so one slow request
        // never holds back others; every call of the batch watches it, so no
        // timer task is needed per batch.
        let mut linger = ticket.as_ref().map(|_| start + inner.config.batch_linger);
        let outcome = loop {
            if let Some(why) = inner.shared.hopeless() {
                break Err(Late::Refused(why));
            }
            let wake = linger
                .map_or(retransmit_at, |at| at.min(retransmit_at))
                .min(deadline);
            match tokio::time::timeout_at(wake.into(), &mut result).await {
                Ok(Ok(bytes)) => break Ok(bytes),
                Ok(Err(_)) => break Err(Late::Closed),
                Err(_) => {
                    let now = Instant::now();
                    if linger.is_some_and(|at| now >= at) {
                        if let Some(ticket) = &ticket {
                            ticket.release();
                        }
                        linger = None;
                    }
                    if now >= deadline {
                        break Err(Late::Timeout(self.seen(lane, number)));
                    }
                    if now >= retransmit_at {
                        // No f+1 matching replies yet: send it signed to
                        // every replica, so the backups learn of it even if
                        // the primary is not passing it on, and watch the
                        // primary.
                        if let Some(sent) = &sent {
                            let frame = sent.signed_frame();
                            for connection in &inner.connections {
                                let _ = connection.try_send(Arc::clone(&frame));
                            }
                        }
                        wait = (wait * 2).min(inner.config.max_retransmit);
                        retransmit_at = now + wait;
                    }
                }
            }
        };
        if let Some(ticket) = ticket {
            ticket.release();
        }
        outcome
    }
}

/// A lane taken by a call, put back free when the call ends or is
/// dropped, with the last number it may have sent on it.
struct HeldLane<'a> {
    lanes: &'a Lanes,
    lane: u32,
    last: u64,
}

impl Drop for HeldLane<'_> {
    fn drop(&mut self) {
        self.lanes.free.lock().push((self.lane, self.last));
    }
}

/// A call's entry in `Shared::pending`, removed when the call ends or is
/// dropped.
struct FiledCall<'a> {
    shared: &'a Shared,
    lane: u32,
    number: u64,
}

impl Drop for FiledCall<'_> {
    fn drop(&mut self) {
        self.shared.pending.lock().remove(&(self.lane, self.number));
    }
}

/// Why a call on a lane ended without a result.
enum Late {
    Closed,
    /// Too many replicas refused this client for any call to complete.
    Refused(String),
    /// No f+1 matching replies in time; what the client saw.
    Timeout(String),
}

impl NetClient {
    /// What the client saw of the call on (`lane`, `number`), in words: how
    /// many replicas replied, whether f+1 agree, and which replicas it is
    /// not connected to.
    fn seen(&self, lane: u32, number: u64) -> String {
        let shared = &self.inner.shared;
        let (replied, results) = shared
            .pending
            .lock()
            .get(&(lane, number))
            .map(|call| {
                let results: std::collections::BTreeSet<&ResultKey> =
                    call.votes.values().map(|(digest, _)| digest).collect();
                (call.votes.len(), results.len())
            })
            .unwrap_or((0, 0));
        let n = shared.connected.len();
        let mut seen = format!(
            "{replied} of {n} replicas replied ({results} distinct results; {} matching needed)",
            shared.weak_quorum
        );
        let down: Vec<String> = self
            .inner
            .cluster_ids
            .iter()
            .zip(&shared.connected)
            .filter(|(_, up)| !up.load(std::sync::atomic::Ordering::Relaxed))
            .map(|(id, _)| id.to_string())
            .collect();
        let refused: Vec<String> = self
            .inner
            .cluster_ids
            .iter()
            .zip(&shared.refused)
            .filter(|(_, why)| why.lock().is_some())
            .map(|(id, _)| id.to_string())
            .collect();
        if !refused.is_empty() {
            seen.push_str(&format!(
                "; refused by replica(s) {} (see the log for why)",
                refused.join(", ")
            ));
        }
        if down.is_empty() {
            seen.push_str("; connected to every replica");
        } else {
            seen.push_str(&format!(
                "; not connected to replica(s) {}",
                down.join(", ")
            ));
        }
        seen
    }
}

impl<Req, Resp> Invoke<Req, Resp> for NetClient
where
    Req: Serialize + Request + Send + Sync + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    fn invoke(
        &self,
        request: Req,
    ) -> impl std::future::Future<Output = Result<Resp, ClientError>> + Send {
        let client = self.clone();
        async move { client.call(&request).await }
    }

    fn bind_service(&self, fingerprint: cbase_core::Fingerprint) {
        let message = ClientMessage::Service {
            service: fingerprint.service.to_owned(),
            fingerprint: fingerprint.hash,
        };
        let frame = Arc::new(codec::encode(&message).expect("a service message always encodes"));
        *self.inner.shared.service.lock() = Some(Arc::clone(&frame));
        // Connections already up get it now, ahead of any request of the
        // typed client (which is being made); later ones on connecting.
        for connection in &self.inner.connections {
            let _ = connection.try_send(Arc::clone(&frame));
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::message::Reply;

    pub(super) fn shared_for(replicas: usize) -> Arc<Shared> {
        Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            weak_quorum: 2,
            view: Default::default(),
            rejected: Default::default(),
            connected: (0..replicas).map(|_| Default::default()).collect(),
            refused: (0..replicas).map(|_| Default::default()).collect(),
            service: Mutex::new(None),
            reads: Mutex::new(HashMap::new()),
            next_read: AtomicU64::new(reads::first_read_id()),
            fast_reads: AtomicU64::new(0),
            read_quorum: 3,
            replicas,
        })
    }

    fn reply(replica: ReplicaId, number: u64, result: Vec<u8>, view: u64) -> Reply {
        Reply {
            replica,
            view,
            lane: 0,
            number,
            result,
        }
    }

    #[test]
    fn a_faulty_replicas_huge_replies_settle_nothing_and_the_agreed_result_is_delivered() {
        let shared = shared_for(4);
        let mut results = Vec::new();
        for number in 1..=64 {
            let (done, result) = oneshot::channel();
            shared.pending.lock().insert(
                (0, number),
                Pending {
                    votes: BTreeMap::new(),
                    done: Some(done),
                },
            );
            results.push(result);
        }
        // Replica 3 answers every call in flight with a megabyte and a far
        // view; what each call keeps of it is a digest.
        for number in 1..=64 {
            connection::on_replies(
                &shared,
                3,
                vec![reply(3, number, vec![7; 1 << 20], 1_000_000)],
            );
        }
        for result in &mut results {
            assert!(result.try_recv().is_err(), "one reply settles nothing");
        }
        for replica in [0, 1] {
            let replies = (1..=64)
                .map(|n| reply(replica, n, vec![n as u8], 2))
                .collect();
            connection::on_replies(&shared, replica, replies);
        }
        for (number, result) in (1..=64).zip(&mut results) {
            assert_eq!(result.try_recv().unwrap(), vec![number as u8]);
        }
        assert_eq!(
            shared.view.load(std::sync::atomic::Ordering::Relaxed),
            2,
            "the view f+1 replicas report, not the liar's"
        );
        // A reply naming another replica than its connection's is refused.
        connection::on_replies(&shared, 0, vec![reply(1, 1, vec![1], 2)]);
        assert_eq!(
            shared.rejected.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    /// A caller that gives up on a call (drops its future: a
    /// `tokio::time::timeout` or `select!` around `call`) must give back
    /// the lane and the call's entry in `pending`, as a call that times out
    /// by itself does. Each lane lost is gone for the client's lifetime:
    /// after `lanes` such calls, a permit is free with no lane behind it and
    /// the next call panics ("a permit guarantees a free lane").
    #[tokio::test]
    async fn a_call_dropped_by_its_caller_gives_back_its_lane_and_pending_entry() {
        let replicas = (0..4u8)
            .map(|i| crate::config::ReplicaEntry {
                id: u32::from(i),
                // Nothing listens there: calls wait for ever.
                address: format!("127.0.0.1:{}", 9 + u16::from(i)),
                public_key: SecretKey::from_seed([i + 1; 32]).public(),
            })
            .collect();
        let cluster = ClusterConfig {
            f: 1,
            replicas,
            clients: None,
        };
        let lanes = 4;
        let client = NetClient::connect(
            cluster,
            ClientConfig {
                lanes,
                ..ClientConfig::default()
            },
        )
        .unwrap();
        for _ in 0..lanes {
            let call = client.on_lane(vec![1], "op");
            let gave_up = tokio::time::timeout(Duration::from_millis(5), call).await;
            assert!(gave_up.is_err(), "nobody answers");
        }
        let free = client.inner.lanes.free.lock().len();
        let pending = client.inner.shared.pending.lock().len();
        assert_eq!(
            (free, pending),
            (lanes, 0),
            "after {} abandoned calls: {free} of {lanes} lanes free, {pending} calls \
             still filed as pending",
            lanes
        );
    }

    /// Makes `calls` calls of `size` bytes, one after another, each
    /// answered alike by replicas 0 and 1 (their replies handed to the
    /// client as their connections would), so each completes.
    async fn answered_calls(client: &NetClient, calls: usize, size: usize) {
        for i in 0..calls {
            let call = tokio::spawn({
                let client = client.clone();
                async move { client.on_lane(vec![i as u8; size], "op").await }
            });
            let shared = &client.inner.shared;
            let mut filed = None;
            for _ in 0..100_000 {
                filed = shared.pending.lock().keys().next().copied();
                if filed.is_some() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            let (lane, number) = filed.expect("the call was never filed");
            for replica in [0, 1] {
                let reply = Reply {
                    replica,
                    view: 0,
                    lane,
                    number,
                    result: vec![1],
                };
                connection::on_replies(shared, replica, vec![reply]);
            }
            let (_, result) = tokio::time::timeout(Duration::from_secs(60), call)
                .await
                .expect("an answered call completes")
                .unwrap()
                .unwrap();
            assert_eq!(result, vec![1]);
        }
    }

    /// A replica the client cannot reach (down, or one that never reads)
    /// must not make the client keep every frame it was sent: the queue of
    /// its connection keeps up to 16,384 frames, each up to
    /// `max_request_bytes` (1 MiB by default): gigabytes held for one
    /// faulty replica, for calls that ended long ago.
    ///
    /// Schedule (n = 4, f = 1; nothing listens at any address):
    /// 1. The client makes 64 calls of 256 KiB each, one after another.
    /// 2. Each is answered alike by replicas 0 and 1 (their replies handed
    ///    to the client as their connections would), so each completes.
    /// 3. Expected: once they all ended, the client holds no more frames for
    ///    unreachable replica 3 than the calls in flight could need
    ///    (`batches_in_flight`: none are in flight now).
    #[tokio::test]
    async fn frames_for_an_unreachable_replica_are_not_kept_after_their_calls_end() {
        let replicas = (0..4u8)
            .map(|i| crate::config::ReplicaEntry {
                id: u32::from(i),
                // Nothing listens there.
                address: format!("127.0.0.1:{}", 9 + u16::from(i)),
                public_key: SecretKey::from_seed([i + 1; 32]).public(),
            })
            .collect();
        let cluster = ClusterConfig {
            f: 1,
            replicas,
            clients: None,
        };
        let config = ClientConfig {
            lanes: 1,
            ..ClientConfig::default()
        };
        let in_flight = config.batches_in_flight;
        let client = NetClient::connect(cluster, config).unwrap();
        let calls = 64;
        let size = 256 << 10;
        answered_calls(&client, calls, size).await;
        let queue = &client.inner.connections[3];
        let held = queue.max_capacity() - queue.capacity();
        assert!(
            held <= in_flight,
            "{held} frames of over {} KiB each (over {} MiB) held for unreachable replica 3 \
             after all {calls} calls ended",
            size >> 10,
            (held * size) >> 20
        );
    }

    /// A faulty replica that completes the handshake and then never reads
    /// must not make the client keep every frame it was sent either: the
    /// connection's writer blocks in its first write once the socket's
    /// buffers are full, so nothing drains the queue (frames are dropped
    /// only between connection attempts, and this connection never ends).
    ///
    /// Schedule (n = 4, f = 1):
    /// 1. Replica 3 (faulty) accepts the client's connection, completes the
    ///    handshake and never reads from it; nothing listens for 0, 1, 2.
    /// 2. The client makes 160 calls of 256 KiB each, one after another;
    ///    each is answered alike by replicas 0 and 1 (their replies handed to
    ///    the client as their connections would), so each completes.
    /// 3. Expected: once they all ended, the client holds no more frames for
    ///    replica 3 than the calls in flight could need (none now).
    #[tokio::test]
    async fn frames_for_a_replica_that_never_reads_are_not_kept_after_their_calls_end() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let replicas = (0..4u8)
            .map(|i| crate::config::ReplicaEntry {
                id: u32::from(i),
                address: if i == 3 {
                    listener.local_addr().unwrap().to_string()
                } else {
                    // Nothing listens there.
                    format!("127.0.0.1:{}", 9 + u16::from(i))
                },
                public_key: SecretKey::from_seed([i + 1; 32]).public(),
            })
            .collect();
        let cluster = ClusterConfig {
            f: 1,
            replicas,
            clients: None,
        };
        // Replica 3: handshakes, then holds the session and reads nothing.
        let identity =
            crate::transport::Identity::replica(&cluster, 3, SecretKey::from_seed([4; 32]))
                .unwrap();
        let served = cluster.clone();
        let (keep, mut kept) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let config = crate::transport::TransportConfig::default();
                if let Ok(session) =
                    crate::transport::accept(stream, &identity, &served, &config).await
                {
                    let _ = keep.send(session);
                }
            }
        });
        let config = ClientConfig {
            lanes: 1,
            ..ClientConfig::default()
        };
        let in_flight = config.batches_in_flight;
        let client = NetClient::connect(cluster, config).unwrap();
        let _session = tokio::time::timeout(Duration::from_secs(60), kept.recv())
            .await
            .expect("the client connects to replica 3")
            .unwrap();
        let calls = 160;
        let size = 256 << 10;
        answered_calls(&client, calls, size).await;
        // Let the connection task write what it can.
        for _ in 0..1000 {
            tokio::task::yield_now().await;
        }
        let queue = &client.inner.connections[3];
        let held = queue.max_capacity() - queue.capacity();
        assert!(
            held <= in_flight,
            "{held} frames of over {} KiB each (over {} MiB) held for replica 3, which \
             never reads, after all {calls} calls ended",
            size >> 10,
            (held * size) >> 20
        );
    }

    #[test]
    fn result_keys_are_equal_exactly_when_the_results_are() {
        let results: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![1],
            vec![1, 0],
            vec![0; 32],
            vec![0; 33],
            vec![0xff; 32],
            vec![0xff; 33],
            vec![9; 1 << 16],
        ];
        for (i, a) in results.iter().enumerate() {
            for (j, b) in results.iter().enumerate() {
                assert_eq!(result_key(a) == result_key(b), i == j, "{a:?} vs {b:?}");
            }
        }
        // A short result is kept as itself, so a long result cannot be
        // made to match it without a blake3 collision.
        assert_eq!(&result_key(&[5, 6])[..3], &[2, 5, 6]);
        assert_eq!(result_key(&[0; 33])[0], 0xff);
    }
}

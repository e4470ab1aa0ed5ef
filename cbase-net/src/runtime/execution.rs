//! Execution behind agreement: committed batches in, replies and checkpoints out.
//!
//! A driver thread takes committed batches in sequence order and submits their
//! requests to the core executor, which runs independent ones in parallel.
//! Exactly-once per client lane is decided here, in sequence order, so it is the
//! same on every correct replica: a request whose number is not above the
//! lane's last executed number is not executed again (a retransmission gets
//! the cached reply instead).
//!
//! At a checkpoint sequence number the driver submits a barrier and waits for
//! it before looking at the next batch. So when the barrier runs, everything
//! up to the checkpoint has finished, nothing after it has started, and the
//! client table holds exactly the effects of the batches up to it: the digest
//! (service state + client table + agreed clock) is the same on every correct
//! replica.
//!
//! The agreed clock is the largest proposal timestamp executed so far; every
//! request's [`Context`] gets it as its time. It is part of every checkpoint
//! and is restored by [`Execution::install`], so a replica restored from a
//! checkpoint gives its service the same times as its peers.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use cbase_core::codec;
use cbase_core::{
    Context, Digest, ExecError, Executor, ExecutorBuilder, ReadOnly, Service, ServiceHandle,
    Snapshot, StateChanges, StateError,
};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::ReplicaId;
use crate::crypto::PublicKey;
use crate::message::{Hash, ReadReply, Reply, Seq};
use crate::protocol::Committed;

use super::checkpoints::{CheckpointStore, LiveState};
use super::reads::{PendingRead, ReadSlot};
use crate::checkpoint::CheckpointState;
use crate::checkpoint::checkpoint_digest_encoded;
use crate::checkpoint::parts::{Patch, Transferred};
use crate::checkpoint::{Admission, SessionLimits};
pub use crate::checkpoint::{ClientTable, LaneRecord, checkpoint_digest};

/// What a checkpoint captured. Taking one copies nothing: it carries the
/// entries changed since the previous checkpoint, not the whole state.
#[derive(Clone, Debug)]
pub struct CheckpointRecord {
    /// Its sequence number.
    pub seq: Seq,
    /// Digest of the service state, the client table and the clock.
    pub digest: Hash,
    /// The service state's digest alone.
    pub state_digest: Digest,
    /// The service state's changes since the previous checkpoint.
    pub changes: Arc<StateChanges>,
    /// The client table.
    pub clients: ClientTable,
    /// The client table's encoded size, in bytes.
    pub client_table_bytes: usize,
    /// The agreed clock (nanoseconds since the Unix epoch).
    pub clock: u64,
    /// How long execution stood still for it: from the barrier's start
    /// (everything before it finished) to its end. A local measurement, not
    /// part of the replicated state.
    pub barrier: std::time::Duration,
}

/// How a transferred checkpoint was installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installed {
    /// Only the entries that differ were written into the service state.
    Patched {
        /// How many entries were written or removed.
        entries: usize,
    },
    /// The service state was restored whole.
    Whole,
}

/// Where replies go: the runtime sends them to the client's connection.
pub trait ReplySink: Send + Sync + 'static {
    /// Deliver `reply` to `client`, if it is connected.
    fn send(&self, client: &PublicKey, reply: Reply);
    /// A checkpoint was taken.
    fn checkpoint(&self, record: CheckpointRecord);
    /// Deliver the answer to a read on the fast path to `client`.
    fn send_read(&self, client: &PublicKey, reply: ReadReply);
}

struct Route {
    client: PublicKey,
    lane: u32,
    number: u64,
    view: u64,
}

/// Shared between the driver, the executor's reply sink and the connection
/// readers (which answer retransmissions from the cache).
pub struct ExecutionShared {
    pub(crate) clients: Mutex<ClientTable>,
    routes: Mutex<BTreeMap<u64, Route>>,
    /// Reads on the fast path being executed, by tag: (client, read id,
    /// its place among its connection's unanswered reads).
    reads: Mutex<BTreeMap<u64, (PublicKey, u64, ReadSlot)>>,
    replica: ReplicaId,
}

impl ExecutionShared {
    /// The replica this execution belongs to.
    pub fn replica(&self) -> ReplicaId {
        self.replica
    }

    /// Cached replies for requests of `batch` already executed; `None` if
    /// any request in it is new, or of no session (the batch must then go
    /// to agreement).
    pub fn cached_replies(
        &self,
        client: &PublicKey,
        requests: &[(u32, u64)],
        view: u64,
    ) -> Option<Vec<Reply>> {
        let clients = self.clients.lock();
        let mut replies = Vec::new();
        for &(lane, number) in requests {
            // A request of no session (it expired, or was evicted) is not
            // answered here but ordered, and refused in sequence order: the
            // refusal names the table's floor, which rises as sessions go,
            // and correct replicas at different points would name different
            // floors, none f+1 alike, and the client would never learn it.
            let record = clients.lane(client, lane)?;
            if number > record.number {
                return None;
            }
            if number < record.number {
                // The lane's last number is the same on every correct
                // replica unless the key is sending on it right now: a
                // request below it comes from an earlier run of the client
                // (or another client using its key), not from one waiting
                // on this lane.
                replies.push(superseded(self.replica, view, lane, number, record.number));
            } else if let Some(result) = &record.reply {
                replies.push(Reply {
                    view,
                    lane,
                    number,
                    replica: self.replica,
                    result: result.clone(),
                });
            }
        }
        Some(replies)
    }
}

/// Runs committed batches on a service. See the [module documentation](self).
pub struct Execution<S: Service> {
    executor: Executor<S>,
    shared: Arc<ExecutionShared>,
    checkpoints: Arc<CheckpointStore>,
    sink: Arc<dyn ReplySink>,
    next_tag: u64,
    /// The agreed clock: the largest proposal timestamp executed so far.
    clock: u64,
    /// The client table's bounds.
    sessions: SessionLimits,
    last_executed: Seq,
    /// The client lanes with a request submitted in the batch being executed.
    lanes_in_batch: std::collections::BTreeSet<(PublicKey, u32)>,
    /// Checkpoints are read from the live state, which keeps versions
    /// ([`Execution::start_live`]).
    live: bool,
}

/// Checkpoints read from the service's live state and the versions it keeps.
struct LiveCheckpoints<S: Service>(ServiceHandle<S>);

impl<S: Service> LiveState for LiveCheckpoints<S> {
    fn snapshot_at(&self, seq: Seq) -> Option<Snapshot> {
        match self.0.state().snapshot_at(seq) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                tracing::warn!(%error, seq, "the state could not be encoded to serve a checkpoint");
                None
            }
        }
    }

    fn forget_before(&self, seq: Seq) {
        self.0.state().forget_versions_before(seq);
    }
}

impl<S> Execution<S>
where
    S: Service,
    S::Request: DeserializeOwned,
    S::Response: Serialize,
{
    /// Starts the executor for `service`. The checkpoint store keeps the
    /// stable checkpoint as a copy (in memory until it is on disk, for a
    /// replica with a data directory: see [`CheckpointStore::keep_on`]).
    pub fn start(
        replica: ReplicaId,
        builder: ExecutorBuilder,
        service: S,
        sink: Arc<dyn ReplySink>,
        sessions: SessionLimits,
    ) -> Result<Execution<S>, StateError> {
        Self::launch(replica, builder, service, sink, sessions, false)
    }

    /// Starts the executor for `service`, serving checkpoints from the live
    /// state rather than from a copy of it: for a replica with no data
    /// directory, whose stable checkpoint would otherwise be a second copy
    /// of the whole state in memory. The state keeps the earlier values of
    /// what changes after the stable checkpoint, and lets them go as later
    /// ones become stable; nothing of the state is copied, not even at start.
    pub fn start_live(
        replica: ReplicaId,
        builder: ExecutorBuilder,
        service: S,
        sink: Arc<dyn ReplySink>,
        sessions: SessionLimits,
    ) -> Result<Execution<S>, StateError> {
        Self::launch(replica, builder, service, sink, sessions, true)
    }

    fn launch(
        replica: ReplicaId,
        builder: ExecutorBuilder,
        service: S,
        sink: Arc<dyn ReplySink>,
        sessions: SessionLimits,
        live: bool,
    ) -> Result<Execution<S>, StateError> {
        let shared = Arc::new(ExecutionShared {
            clients: Mutex::new(ClientTable::new()),
            routes: Mutex::new(BTreeMap::new()),
            reads: Mutex::new(BTreeMap::new()),
            replica,
        });
        let (reply_shared, reply_sink) = (Arc::clone(&shared), Arc::clone(&sink));
        let executor = builder.start(service, move |reply: cbase_core::Reply<S::Response>| {
            if reply.tag & READ_TAG != 0 {
                let answered = reply_shared.reads.lock().remove(&reply.tag);
                // The slot goes back once the answer is made.
                if let Some((client, id, _slot)) = answered {
                    let result = Some(encode_result(reply.result));
                    let replica = reply_shared.replica;
                    reply_sink.send_read(
                        &client,
                        ReadReply {
                            id,
                            replica,
                            result,
                        },
                    );
                }
                return;
            }
            let Some(route) = reply_shared.routes.lock().remove(&reply.tag) else {
                return;
            };
            let result = encode_result(reply.result);
            if let Some(record) = reply_shared
                .clients
                .lock()
                .lane_mut(&route.client, route.lane)
                && record.number == route.number
            {
                record.reply = Some(result.clone());
            }
            reply_sink.send(
                &route.client,
                Reply {
                    view: route.view,
                    lane: route.lane,
                    number: route.number,
                    replica: reply_shared.replica,
                    result,
                },
            );
        })?;
        // The initial state is checkpoint 0, the store's first base; from
        // here on the state records its changes for the checkpoints after
        // it (or, read live, the values they change from).
        let state = executor.service().state();
        let digest = checkpoint_digest(&state.digest(), &ClientTable::new(), 0);
        let checkpoints = if live {
            state.keep_versions(0);
            CheckpointStore::live(
                0,
                digest,
                Arc::new(LiveCheckpoints(executor.service_handle())),
            )
        } else {
            let initial = CheckpointState::new(
                state
                    .snapshot()
                    .map_err(|error| StateError::Unencodable(error.to_string()))?,
                ClientTable::new(),
                0,
            );
            state.record_changes();
            CheckpointStore::new(0, digest, initial)
        };
        Ok(Execution {
            executor,
            shared,
            checkpoints: Arc::new(checkpoints),
            sink,
            next_tag: 0,
            lanes_in_batch: std::collections::BTreeSet::new(),
            sessions,
            clock: 0,
            last_executed: 0,
            live,
        })
    }

    /// What the executor's workers have done, for metrics.
    pub fn work(&self) -> cbase_core::WorkHandle {
        self.executor.work()
    }

    /// The state shared with connection readers.
    pub fn shared(&self) -> Arc<ExecutionShared> {
        Arc::clone(&self.shared)
    }

    /// The checkpoints this execution took, to serve to peers.
    pub fn checkpoints(&self) -> Arc<CheckpointStore> {
        Arc::clone(&self.checkpoints)
    }

    /// The last sequence number executed.
    pub fn last_executed(&self) -> Seq {
        self.last_executed
    }

    /// Replaces the service state, the client table and the agreed clock
    /// with a checkpoint at `seq` (already verified against the agreed
    /// digest). Waits for everything submitted before it to finish first.
    ///
    /// The state is replaced even at or below [`last_executed`]
    /// (a replica that learned its own state diverged repairs it this way),
    /// and afterwards `last_executed` is exactly `seq`: whatever was executed
    /// after `seq` is gone with the old state, so the next batch executed must
    /// be `seq + 1`, handed over again if it was before. (The runtime passes
    /// batches and installs through one queue in the protocol's order, so
    /// everything handed over before the install runs before it.)
    ///
    /// Returns the checkpoint digest of the installed state, computed from
    /// the digest trees the restore builds: a caller that loaded the state
    /// from disk checks it against the digest it recorded.
    ///
    /// [`last_executed`]: Execution::last_executed
    pub fn install(
        &mut self,
        seq: Seq,
        state: CheckpointState,
    ) -> Result<Hash, cbase_core::RestoreError> {
        self.install_or_patch(seq, state, None)
            .map(|(digest, _)| digest)
    }

    /// Installs a checkpoint fetched from peers ([`Execution::install`]). If
    /// it came in parts with a [`Patch`] (they change a small part of the
    /// state), only the entries that differ are written into the service
    /// state: the cost of what changed, not of the state. If the result is
    /// not the fetched state, or there is no patch, the state is restored
    /// whole. Returns the checkpoint digest and how it was installed.
    pub fn install_transferred(
        &mut self,
        seq: Seq,
        transferred: Transferred,
    ) -> Result<(Hash, Installed), cbase_core::RestoreError> {
        let (state, patch) = transferred.assemble();
        self.install_or_patch(seq, state, patch)
    }

    fn install_or_patch(
        &mut self,
        seq: Seq,
        state: CheckpointState,
        patch: Option<Patch>,
    ) -> Result<(Hash, Installed), cbase_core::RestoreError> {
        let (sender, receiver) = std::sync::mpsc::channel();
        let state = Arc::new(state);
        let installing = Arc::clone(&state);
        let live = self.live;
        let barrier = self.executor.barrier(move |service: &S| {
            let service = service.state();
            // The patch turns the base it was made against into the fetched
            // state. The service state is usually that base, or a state that
            // went on from it by agreed requests (a restarted replica that
            // replayed its log), whose changes the patch then overwrites. If
            // the result is not the fetched state, the restore repairs it.
            let patched = patch.filter(|patch| {
                service.patch(&patch.changes).is_ok() && service.digest() == patch.to
            });
            let installed = match patched {
                Some(patch) => Ok(Installed::Patched {
                    entries: patch.changes.len(),
                }),
                // The restored containers' digest trees give the state's
                // digest at once: no second pass over the entries.
                None => service
                    .restore(&installing.snapshot)
                    .map(|()| Installed::Whole),
            };
            if live && installed.is_ok() {
                // The installed state is checkpoint `seq`; what changes
                // after it is kept from here.
                service.keep_versions(seq);
            }
            let _ = sender.send(installed.map(|how| (service.digest(), how)));
        });
        let (state_digest, installed) = match barrier.ok().and_then(|()| receiver.recv().ok()) {
            Some(result) => result?,
            None => panic!("the executor stopped while installing a checkpoint"),
        };
        *self.shared.clients.lock() = state.clients.clone();
        self.clock = state.clock;
        self.last_executed = seq;
        let digest = checkpoint_digest(&state_digest, &state.clients, state.clock);
        self.checkpoints.install(seq, digest, state);
        Ok((digest, installed))
    }

    /// Executes one committed batch (the next in sequence order). Returns the
    /// checkpoint digest if the batch ends a checkpoint interval. A batch at
    /// or below an installed checkpoint is already part of it and skipped.
    pub fn execute(&mut self, committed: Committed) -> Option<CheckpointRecord> {
        if committed.seq <= self.last_executed {
            return None;
        }
        debug_assert_eq!(
            committed.seq,
            self.last_executed + 1,
            "batches arrive in order"
        );
        self.last_executed = committed.seq;
        // Agreed time never runs backwards, even if a primary's clock does.
        self.clock = self.clock.max(committed.proposal.timestamp);
        self.shared
            .clients
            .lock()
            .expire_idle(self.clock, &self.sessions);
        let mut index: u64 = 0;
        self.lanes_in_batch.clear();
        for signed in committed.proposal.batches {
            let client = signed.batch.client;
            for request in signed.batch.requests {
                index += 1;
                let seed = request_seed(&committed.digest, index);
                self.execute_one(
                    client,
                    request,
                    committed.view,
                    // The key that signed the batch: authenticated, and the
                    // same on every replica.
                    Context::new(self.clock, seed).with_client(client.client_id()),
                );
            }
        }
        committed.checkpoint.then(|| self.checkpoint(committed.seq))
    }

    fn execute_one(
        &mut self,
        client: PublicKey,
        request: crate::message::ClientRequest,
        view: u64,
        ctx: Context,
    ) {
        let (lane, number) = (request.lane, request.number);
        let refused = {
            let mut clients = self.shared.clients.lock();
            match clients.admit(&client, lane, number, self.clock, &self.sessions) {
                Admission::Execute => None,
                // Below the lane's last number: an old request (a late
                // duplicate), or another client using this key. Never
                // executed, and no answer from here: whether a replica
                // executed the original itself or skipped it in a state
                // transfer would change what it says. A client waiting for
                // it is answered from the client table when it retransmits
                // (`cached_replies`).
                Admission::Old => return,
                Admission::Again(reply) => {
                    // Already executed (a retransmission ordered twice, or a
                    // client reusing a number): answer from the cache, once.
                    // Not if the original is in this same proposal: its
                    // reply answers the client, and whether it had finished
                    // by now depends on thread timing, which must not
                    // decide what a replica sends.
                    let original_here = self.lanes_in_batch.contains(&(client, lane));
                    if !original_here && let Some(result) = reply {
                        drop(clients);
                        self.sink.send(
                            &client,
                            Reply {
                                view,
                                lane,
                                number,
                                replica: self.shared.replica,
                                result,
                            },
                        );
                    }
                    return;
                }
                Admission::Expired { floor } => Some(ExecError::SessionExpired {
                    lane,
                    number,
                    floor,
                }),
                Admission::Ahead { limit } => Some(ExecError::NumberAhead {
                    lane,
                    number,
                    limit,
                }),
                Admission::TooManyLanes { limit } => Some(ExecError::TooManyLanes {
                    lane,
                    number,
                    limit,
                }),
            }
        };
        if let Some(error) = refused {
            // Decided in sequence order on agreed inputs: every correct
            // replica refuses the same requests with the same error.
            self.sink.send(
                &client,
                refusal(self.shared.replica, view, lane, number, error),
            );
            return;
        }
        self.lanes_in_batch.insert((client, request.lane));
        if request.operation.is_empty() {
            // A session opener (`NetClient` sends one before its first call
            // and after its session expired): it only records the number,
            // so executing it twice does no harm. No service request
            // encodes to nothing (its variant takes a byte).
            self.answer_unrun(client, lane, number, view, encode_result::<()>(Ok(())));
            return;
        }
        let tag = self.next_tag;
        self.next_tag += 1;
        let route = Route {
            client,
            lane: request.lane,
            number: request.number,
            view,
        };
        match codec::decode::<S::Request>(&request.operation) {
            Ok(operation) => {
                self.shared.routes.lock().insert(tag, route);
                if self.executor.submit(tag, ctx, operation).is_err() {
                    self.shared.routes.lock().remove(&tag);
                }
            }
            Err(error) => {
                // Every replica decodes the same bytes the same way, so this
                // error reply is deterministic too.
                let result = encode_result::<S::Response>(Err(ExecError::Panicked {
                    method: "<undecodable request>".into(),
                    message: error.to_string(),
                }));
                self.answer_unrun(client, lane, number, view, result);
            }
        }
    }

    /// Answers a request recorded for execution without running it on the
    /// service (a session opener, an undecodable request): the result goes
    /// into its lane's reply cache and to the client.
    fn answer_unrun(&self, client: PublicKey, lane: u32, number: u64, view: u64, result: Vec<u8>) {
        if let Some(record) = self.shared.clients.lock().lane_mut(&client, lane) {
            record.reply = Some(result.clone());
        }
        let replica = self.shared.replica;
        let reply = Reply {
            view,
            lane,
            number,
            replica,
            result,
        };
        self.sink.send(&client, reply);
    }

    /// Waits until everything so far has run, then digests the service
    /// state, the client table and the agreed clock. The barrier costs what
    /// changed since the last checkpoint: it folds those changes into the
    /// state's digest tree and takes them, copying nothing else.
    fn checkpoint(&mut self, seq: Seq) -> CheckpointRecord {
        let (sender, receiver) = std::sync::mpsc::channel();
        let barrier = self.executor.barrier(move |service: &S| {
            let started = std::time::Instant::now();
            let state = service.state();
            state.checkpoint_taken(seq);
            let _ = sender.send((state.digest(), state.take_changes(), started.elapsed()));
        });
        let Some((state_digest, changes, barrier)) =
            barrier.ok().and_then(|()| receiver.recv().ok())
        else {
            panic!("the executor stopped while taking a checkpoint");
        };
        let clients = {
            let mut clients = self.shared.clients.lock();
            // Here every request before the checkpoint has finished on
            // every replica, so every replica counts the same reply bytes.
            clients.trim_replies(&self.sessions);
            clients.clone()
        };
        let encoded = codec::encode(&clients).expect("client tables always encode");
        let digest = checkpoint_digest_encoded(&state_digest, &encoded, self.clock);
        let record = CheckpointRecord {
            seq,
            digest,
            state_digest,
            changes: Arc::new(changes),
            clients,
            client_table_bytes: encoded.len(),
            clock: self.clock,
            barrier,
        };
        self.checkpoints.push(&record);
        self.sink.checkpoint(record.clone());
        record
    }

    /// Runs a read on the fast path against the state as it is now, after
    /// every request executed so far and before any executed later (the
    /// executor orders it among them as a reader, so it never overlaps a
    /// conflicting write). It is not ordered, enters no client table and
    /// changes nothing: a request whose access set writes anything is not
    /// run (answered `None`: the client orders it instead), and a read-only
    /// method that tries to write is refused like any undeclared access.
    /// Its `Context` has the agreed clock of this point, a seed from the
    /// client and read id, and the client.
    pub fn read(&mut self, client: PublicKey, id: u64, operation: &[u8]) {
        self.read_all(
            vec![PendingRead::uncounted(client, id, operation.to_vec())],
            false,
        );
    }

    /// Runs several reads on the fast path as [`read`](Self::read) does,
    /// in jobs of the executor (each read's barrier is the caller's business:
    /// these run now). With
    /// `last_here`, the last job runs on this thread if it can start at
    /// once (see [`Executor::run_reads`]): for a caller with nothing else
    /// to do, that is cheaper than waking a worker.
    ///
    /// [`Executor::run_reads`]: cbase_core::Executor::run_reads
    pub fn read_all(&mut self, reads: Vec<PendingRead>, last_here: bool) {
        let mut jobs = Vec::with_capacity(reads.len());
        for read in reads {
            let PendingRead {
                client,
                id,
                operation,
                slot,
                ..
            } = read;
            let request = codec::decode::<S::Request>(&operation)
                .ok()
                .and_then(|request| ReadOnly::new(request).ok());
            let Some(request) = request else {
                let replica = self.shared.replica;
                self.sink.send_read(
                    &client,
                    ReadReply {
                        id,
                        replica,
                        result: None,
                    },
                );
                continue;
            };
            let ctx =
                Context::new(self.clock, read_seed(&client, id)).with_client(client.client_id());
            let tag = READ_TAG | self.next_tag;
            self.next_tag += 1;
            self.shared.reads.lock().insert(tag, (client, id, slot));
            jobs.push((tag, ctx, request));
        }
        // In jobs of a few: one job per read would wake a worker per read,
        // one for all would make every read wait for any earlier write to
        // what any of them reads.
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let chunk: Vec<_> = jobs.by_ref().take(READS_PER_JOB).collect();
            let tags: Vec<u64> = chunk.iter().map(|(tag, _, _)| *tag).collect();
            let submitted = if last_here && jobs.peek().is_none() {
                self.executor.run_reads(chunk)
            } else {
                self.executor.submit_reads(chunk)
            };
            if submitted.is_err() {
                let mut reads = self.shared.reads.lock();
                for tag in tags {
                    reads.remove(&tag);
                }
            }
        }
    }

    /// Blocks until every submitted request has finished and replied.
    pub fn wait_idle(&self) {
        self.executor.wait_idle();
    }

    /// Waits for everything submitted, then stops the workers.
    pub fn shutdown(self) {
        self.executor.shutdown();
    }
}

/// Set in the executor tags of reads on the fast path (and clear in those
/// of ordered requests), so each reply finds its route with one lookup.
const READ_TAG: u64 = 1 << 63;

/// How many reads on the fast path share one job of the executor.
const READS_PER_JOB: usize = 16;

/// A read's seed, the same on every replica: from the client and read id.
fn read_seed(client: &PublicKey, id: u64) -> [u8; 32] {
    // Derived once: deriving a key from the context string on every read
    // doubled the hashing a read costs.
    static KEY: LazyLock<[u8; 32]> =
        LazyLock::new(|| blake3::derive_key("cbase read seed v1", &[]));
    let mut input = [0u8; 40];
    input[..32].copy_from_slice(client.as_bytes());
    input[32..].copy_from_slice(&id.to_le_bytes());
    *blake3::keyed_hash(&KEY, &input).as_bytes()
}

/// The agreed per-request seed: from the batch digest and the position.
fn request_seed(batch_digest: &Hash, index: u64) -> [u8; 32] {
    *blake3::keyed_hash(batch_digest, &index.to_le_bytes()).as_bytes()
}

/// The answer to a request numbered below its lane's last: never executed
/// (see [`ExecError::Superseded`]).
fn superseded(replica: ReplicaId, view: u64, lane: u32, number: u64, last: u64) -> Reply {
    refusal(
        replica,
        view,
        lane,
        number,
        ExecError::Superseded { lane, number, last },
    )
}

/// The answer to a request refused without executing it. The error's
/// encoding does not depend on the response type.
fn refusal(replica: ReplicaId, view: u64, lane: u32, number: u64, error: ExecError) -> Reply {
    let refusal: Result<(), ExecError> = Err(error);
    Reply {
        view,
        lane,
        number,
        replica,
        result: codec::encode(&refusal).expect("errors always encode"),
    }
}

fn encode_result<R: Serialize>(result: Result<R, ExecError>) -> Vec<u8> {
    match codec::encode(&result) {
        Ok(bytes) => bytes,
        Err(error) => {
            // A response type that cannot encode fails the same way on every replica.
            let fallback: Result<R, ExecError> = Err(ExecError::Panicked {
                method: "<unencodable response>".into(),
                message: error.to_string(),
            });
            codec::encode(&fallback).unwrap_or_default()
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use cbase_core::{AccessSet, Container, Key, Request, State, Table};
    use serde::Deserialize;

    use super::*;
    use crate::crypto::SecretKey;
    use crate::message::Reply;

    /// A request of [`Slots`]: read or write one slot.
    #[derive(Debug, Serialize, Deserialize)]
    pub(in crate::runtime) enum Op {
        Get(u64),
        Put(u64, u64),
    }

    impl Request for Op {
        fn access_set(&self) -> AccessSet {
            match self {
                Op::Get(key) => AccessSet::none().read(Key::entry("slots", key)),
                Op::Put(key, _) => AccessSet::none().write(Key::entry("slots", key)),
            }
        }
        fn method(&self) -> &'static str {
            match self {
                Op::Get(_) => "get",
                Op::Put(..) => "put",
            }
        }
    }

    /// A service of numbered slots.
    #[derive(Default)]
    pub(in crate::runtime) struct Slots {
        slots: Table<u64, u64>,
    }

    impl State for Slots {
        fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
            vec![("slots", &self.slots)]
        }
    }

    impl Service for Slots {
        type Request = Op;
        type Response = Option<u64>;
        fn execute(&self, op: Op, _: &Context) -> Option<u64> {
            match op {
                Op::Get(key) => self.slots.get(&key),
                Op::Put(key, value) => self.slots.insert(key, value),
            }
        }
        fn state(&self) -> &dyn State {
            self
        }
    }

    /// Keeps the answers to reads.
    #[derive(Default)]
    struct Answers(Mutex<Vec<ReadReply>>);

    impl ReplySink for Answers {
        fn send(&self, _: &PublicKey, _: Reply) {}
        fn checkpoint(&self, _: CheckpointRecord) {}
        fn send_read(&self, _: &PublicKey, reply: ReadReply) {
            self.0.lock().push(reply);
        }
    }

    #[test]
    fn a_write_sent_as_a_read_is_declined_and_writes_nothing() {
        let answers = Arc::new(Answers::default());
        let mut execution = Execution::start(
            0,
            ExecutorBuilder::new().workers(2),
            Slots::default(),
            Arc::clone(&answers) as Arc<dyn ReplySink>,
            SessionLimits::default(),
        )
        .unwrap();
        let client = SecretKey::from_seed([5; 32]).public();
        let encode = |op: &Op| codec::encode(op).unwrap();
        // A client sends a write on the fast path, and garbage.
        execution.read(client, 1, &encode(&Op::Put(3, 7)));
        execution.read(client, 2, b"not a request");
        execution.wait_idle();
        execution.read(client, 3, &encode(&Op::Get(3)));
        execution.wait_idle();
        let mut answers = std::mem::take(&mut *answers.0.lock());
        answers.sort_by_key(|answer| answer.id);
        let results: Vec<_> = answers
            .into_iter()
            .map(|answer| (answer.id, answer.result))
            .collect();
        let nothing: Result<Option<u64>, ExecError> = Ok(None);
        assert_eq!(
            results,
            vec![
                (1, None),
                (2, None),
                (3, Some(codec::encode(&nothing).unwrap()))
            ],
            "the write is declined (the client orders it) and left no trace"
        );
        execution.shutdown();
    }
}

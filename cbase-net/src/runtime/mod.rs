//! The tokio runtime of one replica: sockets, tasks and the execution thread
//! around the pure [`protocol`](crate::protocol).
//!
//! ```text
//!  peers ──► inbound ──┐                         ┌──► outbound (one task per peer)
//!  clients ─► inbound ─┼─► protocol task ────────┤
//!                      │   (Replica::handle)     └──► execution thread ──► core executor
//!                      └─◄── checkpoint digests ◄──────┘                    │
//!  clients ◄──────────────────────────── replies ◄──────────────────────────┘
//! ```
//!
//! Every connection is authenticated by [`transport`](crate::transport); a
//! frame that fails authentication, is oversized or does not decode closes
//! that connection only, and is counted in [`NodeMetrics`].

mod agreement_log;
mod answers;
mod byte_bound;
pub mod checkpoints;
mod client_slots;
mod connections;
mod exec_thread;
pub mod execution;
mod halt;
mod inbox;
mod memory;
mod metrics;
mod peer_queue;
mod prepared_index;
pub mod prometheus;
mod reads;
mod sources;
mod state_server;

pub use metrics::{CHECKPOINT_HISTORY, CheckpointAgreement, NodeMetrics};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use cbase_core::{ExecutorBuilder, Service, StateError};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{ClusterConfig, ReplicaId};
use crate::crypto::{PublicKey, SecretKey};
use crate::message::{Hash, ReadReply, ReplicaMessage, Reply, Seq};
use crate::protocol::{Input, Output, ProtocolConfig, Replica};
use crate::transport::{Identity, Role, TransportConfig};
use exec_thread::ExecCommand;
use execution::{CheckpointRecord, Execution, ReplySink};

/// Everything one replica needs to run.
#[derive(Clone)]
pub struct NodeConfig {
    /// This replica's id.
    pub id: ReplicaId,
    /// The cluster.
    pub cluster: ClusterConfig,
    /// This replica's secret key (its public key is in the cluster file).
    pub secret: SecretKey,
    /// Agreement tuning.
    pub protocol: ProtocolConfig,
    /// Connection limits.
    pub transport: TransportConfig,
    /// Worker pool and window of the executor.
    pub executor: ExecutorBuilder,
    /// Start as a replica that may have run before and lost its memory
    /// ([`Replica::restarted`]): it votes only once it has voted its way
    /// into a view above all it hears of, so it cannot contradict votes it
    /// cast before a restart. It matters when the replica has no data
    /// directory, or an empty one that may have been emptied by hand: a
    /// replica process should set it; a cluster whose replicas all start
    /// together for the first time (a [`LocalCluster`](crate::LocalCluster))
    /// need not. A replica whose data directory holds what it wrote before
    /// restarts from there instead ([`Replica::recover`]).
    pub recovering: bool,
    /// The data directory was put back from a copy (a backup) while the
    /// other replicas went on, so it may be older than what this replica
    /// voted since: it starts from the copy's state and certificates but
    /// votes again only as a replica that forgot its votes does
    /// ([`Replica::recover_restored`]). A copy restored into every replica
    /// at once (all stopped, each given its copy from the same stop) needs
    /// no flag. Ignored when the directory is empty.
    pub restored: bool,
    /// Where the replica keeps its state and what it needs of the agreement
    /// log ([`crate::storage`]), so that it restarts where it was; `None`:
    /// in memory only, lost when the replica stops.
    pub data_dir: Option<std::path::PathBuf>,
}

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The service's state does not match its rules.
    #[error(transparent)]
    State(#[from] StateError),
    /// The data directory cannot be used.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// The secret key is not the one the cluster file lists for this id.
    #[error("the secret key does not match replica {0}'s public key in the cluster file")]
    WrongKey(ReplicaId),
    /// The id is not in the cluster file.
    #[error("replica {0} is not in the cluster file")]
    UnknownReplica(ReplicaId),
    /// A full proposal would not fit a frame, so the primary could not send it.
    #[error(
        "a pre-prepare can carry {max_batch_bytes} bytes of requests \
         (ProtocolConfig::max_batch_bytes) plus its own header, more than the transport's \
         frame limit of {max_frame} bytes: lower max_batch_bytes or raise \
         TransportConfig::max_frame"
    )]
    ProposalsTooLarge {
        /// The configured proposal limit.
        max_batch_bytes: usize,
        /// The frame limit.
        max_frame: usize,
    },
    /// Batches of as many requests as configured would not decode.
    #[error(
        "ProtocolConfig::max_batch_requests is {max_batch_requests}, more than the {limit} \
         requests a batch can hold and still decode"
    )]
    BatchesTooLong {
        /// The configured limit.
        max_batch_requests: usize,
        /// What a batch can hold (`message::MAX_BATCH_REQUESTS`).
        limit: usize,
    },
    /// A view change in this cluster could carry certificates larger than a
    /// frame, so it could never be sent.
    #[error(
        "a new-view can take {bytes} bytes with this cluster and window, more than the \
         transport's frame limit of {max_frame} bytes: lower ProtocolConfig::window or \
         raise TransportConfig::max_frame"
    )]
    CertificatesTooLarge {
        /// The largest new-view, encoded.
        bytes: u64,
        /// The frame limit.
        max_frame: usize,
    },
    /// `ProtocolConfig::sessions` cannot be met.
    #[error("ProtocolConfig::sessions is not usable: {0}")]
    SessionLimits(String),
    /// The listening address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Brings `execution` to where the data directory says this replica was:
/// installs the stored stable checkpoint and replays the batches executed
/// above it. Returns what the protocol restarts from (`None` for a fresh
/// directory: nothing was ever written) and the checkpoints the replay took.
#[allow(clippy::type_complexity)]
fn recover_execution<S>(
    id: ReplicaId,
    execution: &mut Execution<S>,
    loaded: crate::storage::Loaded,
    file: std::path::PathBuf,
) -> Result<(Option<crate::protocol::Recovered>, Vec<(Seq, Hash)>), NodeError>
where
    S: Service,
    S::Request: DeserializeOwned,
    S::Response: Serialize,
{
    if loaded.fresh {
        return Ok((None, Vec::new()));
    }
    if let Some((seq, state)) = loaded.state {
        let corrupt = |what: String| {
            NodeError::Storage(crate::storage::StorageError::Corrupt {
                file: file.clone(),
                what,
            })
        };
        let digest = execution
            .install(seq, state)
            .map_err(|error| corrupt(format!("its state does not fit the service: {error}")))?;
        let recorded = loaded.recovered.stable.as_ref().map(|stable| stable.1);
        if recorded != Some(digest) {
            return Err(corrupt(format!(
                "the state does not match the digest of checkpoint {seq}"
            )));
        }
        execution.checkpoints().mark_written();
    }
    let mut replayed = Vec::new();
    let batches = loaded.executed.len();
    for committed in loaded.executed {
        if let Some(record) = execution.execute(committed) {
            replayed.push((record.seq, record.digest));
        }
    }
    execution.wait_idle();
    let mut recovered = loaded.recovered;
    recovered.executed = execution.last_executed();
    tracing::info!(
        replica = id,
        stable = recovered.stable.as_ref().map_or(0, |s| s.0),
        executed = recovered.executed,
        replayed = batches,
        view = recovered.view,
        "restarted from the data directory"
    );
    Ok((Some(recovered), replayed))
}

/// The read barrier while the replica answers no reads.
const NO_READS: u64 = u64::MAX;

/// How often the protocol's timers are checked.
const TICK: std::time::Duration = std::time::Duration::from_millis(20);

/// Connected clients' reply queues, by client key.
type ClientQueues = Arc<Mutex<BTreeMap<PublicKey, reads::ClientQueue>>>;

struct RuntimeSink {
    clients: ClientQueues,
    metrics: Arc<NodeMetrics>,
}

impl ReplySink for RuntimeSink {
    fn send(&self, client: &PublicKey, reply: Reply) {
        if let Some(queue) = self.clients.lock().get(client) {
            // A client that does not read its replies loses them; it will
            // retransmit and be answered from the cache.
            queue.send_reply(reply);
        }
    }

    fn send_read(&self, client: &PublicKey, reply: ReadReply) {
        if reply.result.is_some() {
            self.metrics.reads_answered.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(queue) = self.clients.lock().get(client) {
            queue.send_read(reply);
        }
    }

    fn checkpoint(&self, record: CheckpointRecord) {
        self.metrics.record_checkpoint(record.seq, record.digest);
        let nanos = u64::try_from(record.barrier.as_nanos()).unwrap_or(u64::MAX);
        let metrics = &self.metrics;
        metrics
            .checkpoint_barrier_max_nanos
            .fetch_max(nanos, Ordering::Relaxed);
        metrics
            .checkpoint_barrier_total_nanos
            .fetch_add(nanos, Ordering::Relaxed);
        let clients = &record.clients;
        for (gauge, value) in [
            (&metrics.client_sessions, clients.sessions()),
            (&metrics.client_lanes, clients.lanes()),
            (&metrics.client_table_bytes, record.client_table_bytes),
        ] {
            gauge.store(value as u64, Ordering::Relaxed);
        }
    }
}

/// A running replica. Dropping it without [`ReplicaNode::shutdown`] aborts its tasks.
pub struct ReplicaNode {
    id: ReplicaId,
    address: SocketAddr,
    metrics: Arc<NodeMetrics>,
    tasks: Vec<JoinHandle<()>>,
    execution_thread: Option<std::thread::JoinHandle<()>>,
    /// Writes stable checkpoints to the data directory, if there is one.
    storage_thread: Option<std::thread::JoinHandle<()>>,
    serve_thread: Option<std::thread::JoinHandle<()>>,
    /// Why it stopped, if it could not write to its data directory.
    halt: Arc<halt::Halt>,
}

/// The current time in nanoseconds since the Unix epoch: the primary's
/// timestamp for its proposals. Only the primary's reading is ever used, and
/// it is agreed before anyone executes with it.
fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl ReplicaNode {
    /// Starts replica `config.id` serving `service` on `listener`.
    pub async fn start<S>(
        config: NodeConfig,
        listener: TcpListener,
        service: S,
    ) -> Result<ReplicaNode, NodeError>
    where
        S: Service,
        S::Request: DeserializeOwned,
        S::Response: Serialize,
    {
        let id = config.id;
        let expected = config
            .cluster
            .public_key(id)
            .ok_or(NodeError::UnknownReplica(id))?;
        if *expected != config.secret.public() {
            return Err(NodeError::WrongKey(id));
        }
        let proposal = config
            .protocol
            .max_batch_bytes
            .saturating_add(crate::protocol::PRE_PREPARE_OVERHEAD);
        if proposal > config.transport.max_frame {
            return Err(NodeError::ProposalsTooLarge {
                max_batch_bytes: config.protocol.max_batch_bytes,
                max_frame: config.transport.max_frame,
            });
        }
        if config.protocol.max_batch_requests > crate::message::MAX_BATCH_REQUESTS {
            return Err(NodeError::BatchesTooLong {
                max_batch_requests: config.protocol.max_batch_requests,
                limit: crate::message::MAX_BATCH_REQUESTS,
            });
        }
        let certificates = config.protocol.largest_certificate_bytes(&config.cluster);
        if certificates > config.transport.max_frame as u64 {
            return Err(NodeError::CertificatesTooLarge {
                bytes: certificates,
                max_frame: config.transport.max_frame,
            });
        }
        let sessions = &config.protocol.sessions;
        if sessions.max_sessions == 0 || sessions.max_lanes < sessions.max_lanes_per_session {
            return Err(NodeError::SessionLimits(format!(
                "max_sessions must be at least 1 (it is {}) and max_lanes ({}) at least \
                 max_lanes_per_session ({})",
                sessions.max_sessions, sessions.max_lanes, sessions.max_lanes_per_session
            )));
        }
        let address = listener.local_addr().map_err(|source| NodeError::Bind {
            address: format!("{:?}", listener),
            source,
        })?;
        let metrics = Arc::new(NodeMetrics::default());
        let clients: ClientQueues = Arc::default();
        let sink = Arc::new(RuntimeSink {
            clients: Arc::clone(&clients),
            metrics: Arc::clone(&metrics),
        });
        let layout = service.state().table_names();
        // With no disk to keep the stable checkpoint on, it is read from the
        // live state rather than held as a second copy of it.
        let start = if config.data_dir.is_some() {
            Execution::start
        } else {
            Execution::start_live
        };
        let mut execution = start(
            id,
            config.executor.clone(),
            service,
            Arc::clone(&sink) as Arc<dyn ReplySink>,
            config.protocol.sessions,
        )?;
        let execution_shared = execution.shared();
        let checkpoints = execution.checkpoints();
        // Execution waits for the disk rather than hold more than two
        // windows of checkpoints waiting to be written.
        checkpoints.limit_unwritten(config.protocol.window);
        let _ = metrics.work.set(execution.work());
        let (storage, recovered, replayed) = match &config.data_dir {
            Some(dir) => {
                let (storage, loaded) = crate::storage::Storage::open(dir, &layout)?;
                if let Some(owner) = crate::storage::Owner::of(&config.cluster, id) {
                    storage.claim(&owner)?;
                }
                if config.restored {
                    // Until its recovery ends, so that a start without the
                    // flag in the meantime still counts as one from a copy.
                    storage.mark_restored()?;
                }
                let storage = Arc::new(storage);
                // From the first stable checkpoint on disk, the store keeps
                // it there rather than a second copy of the state in memory.
                checkpoints.keep_on(Arc::clone(&storage));
                let file = dir.join(crate::storage::DATA_FILE);
                let (recovered, replayed) = recover_execution(id, &mut execution, loaded, file)?;
                (Some(storage), recovered, replayed)
            }
            None => (None, None, Vec::new()),
        };

        let (events, mut inbox) = inbox::inbox(
            config
                .cluster
                .replicas
                .iter()
                .map(|r| r.id)
                .filter(|r| *r != id),
        );
        // The protocol's read barrier, for connections to stamp reads with;
        // no reads until the protocol says (it may be recovering).
        let read_barrier = Arc::new(std::sync::atomic::AtomicU64::new(NO_READS));
        // The standard library's channel, not crossbeam's: with nothing to
        // take, crossbeam's `recv` yields the CPU up to four times before it
        // sleeps, and the execution thread often waits a little: on two
        // cores those yields took the CPU from the threads that would give
        // it work (9% of all CPU time with reads on the fast path). The
        // standard one spins briefly and sleeps.
        let (to_execution, committed) = std::sync::mpsc::channel();
        let identity = Arc::new(Identity {
            role: Role::Replica(id),
            key: config.secret.clone(),
            settings: config.protocol.agreement_digest(),
        });
        let cluster = Arc::new(config.cluster.clone());
        let transport = Arc::new(config.transport.clone());

        // Why the replica stopped, if a write to its data directory failed.
        let halt = Arc::new(halt::Halt::default());
        // The execution thread: committed batches in order, checkpoint digests back.
        let checkpoint_events = events.clone();
        let execution_halt = Arc::clone(&halt);
        let read_sink = Arc::clone(&sink);
        let execution_storage = storage.clone();
        let execution_read_barrier = Arc::clone(&read_barrier);
        let execution_thread = std::thread::Builder::new()
            .name(format!("cbase-exec-{id}"))
            .spawn(move || {
                exec_thread::ExecThread {
                    id,
                    execution,
                    commands: committed,
                    storage: execution_storage,
                    halt: execution_halt,
                    read_sink,
                    events: checkpoint_events,
                    read_barrier: execution_read_barrier,
                }
                .run()
            })
            .expect("the OS refused to start the execution thread");

        let mut tasks = Vec::new();
        let mut peer_queues: BTreeMap<ReplicaId, peer_queue::PeerQueue> = BTreeMap::new();
        for peer in cluster.replicas.iter().filter(|r| r.id != id) {
            let (queue, outgoing) = peer_queue::peer_queue();
            peer_queues.insert(peer.id, queue);
            tasks.push(tokio::spawn(connections::outbound(
                peer.id,
                peer.address.clone(),
                Arc::clone(&identity),
                Arc::clone(&cluster),
                Arc::clone(&transport),
                outgoing,
                Arc::clone(&metrics),
            )));
        }
        let client_frames =
            crate::transport::FrameBudget::new(config.transport.client_frame_budget);
        tasks.push(tokio::spawn(connections::listen(
            listener,
            connections::Inbound {
                id: config.id,
                refusals: connections::RefusalLog::default(),
                identity: Arc::clone(&identity),
                cluster: Arc::clone(&cluster),
                transport: Arc::clone(&transport),
                events: events.clone(),
                clients,
                execution: execution_shared,
                reads: connections::ReadPath {
                    barrier: Arc::clone(&read_barrier),
                    execution: to_execution.clone(),
                    waiting: Arc::default(),
                },
                metrics: Arc::clone(&metrics),
                max_batch_bytes: config.protocol.max_batch_bytes,
                max_batch_requests: config.protocol.max_batch_requests,
                service: <S::Request as cbase_core::Request>::fingerprint(),
                halt: Arc::clone(&halt),
                client_frames: client_frames.clone(),
                client_frame_shares: crate::transport::SourceShares::new(
                    &client_frames,
                    config.transport.max_frame,
                ),
                client_answers: answers::AnswerBudget::new(config.transport.client_answer_budget),
                replica_links: Default::default(),
            },
        )));

        let (serving, serve_thread) = spawn_state_server(
            id,
            state_server::StateServer::new(config.transport.max_frame),
            Arc::clone(&checkpoints),
            peer_queues.clone(),
            Arc::clone(&metrics),
        );
        let start = if config.recovering {
            Replica::restarted
        } else {
            Replica::new
        };
        let mut replica = match recovered {
            Some(recovered) if config.restored || recovered.restored => {
                if !config.restored {
                    tracing::warn!(
                        "this data directory was put back from a copy and its recovery has \
                         not ended: starting as restored again, as with --restored"
                    );
                }
                Replica::recover_restored(
                    id,
                    &config.cluster,
                    config.secret.clone(),
                    config.protocol.clone(),
                    recovered,
                )
            }
            Some(recovered) => Replica::recover(
                id,
                &config.cluster,
                config.secret.clone(),
                config.protocol.clone(),
                recovered,
            ),
            None => start(
                id,
                &config.cluster,
                config.secret.clone(),
                config.protocol.clone(),
            ),
        };
        metrics
            .recovering
            .store(replica.recovering(), Ordering::Relaxed);
        // A state transfer fetches only what differs from this replica's
        // stable checkpoint.
        replica.set_local_checkpoint(Arc::clone(&checkpoints) as _);
        // Checkpoints taken while replaying the log: the protocol votes them.
        let mut startup = Vec::new();
        for (seq, state) in replayed {
            replica.handle(
                now_nanos(),
                Input::CheckpointTaken { seq, state },
                &mut startup,
            );
        }
        // Stable checkpoints go to disk (and into the store's base) on a
        // thread of their own: a large one (the first, or after a state
        // transfer, is the whole state) must not hold up the protocol, nor
        // must folding one into an in-memory base of a million entries. The
        // log on disk keeps everything above the stored checkpoint until the
        // write is done.
        let stable_writes = {
            let (writes, pending) = crossbeam::channel::unbounded::<checkpoints::StableWrite>();
            let (store, failed) = (Arc::clone(&checkpoints), Arc::clone(&halt));
            let stored_metrics = Arc::clone(&metrics);
            let storage = storage.clone();
            let thread = std::thread::Builder::new()
                .name(format!("cbase-store-{id}"))
                .spawn(move || {
                    // However this thread ends, execution stops waiting
                    // for it.
                    let _stopped = WriterStopped(Arc::clone(&store));
                    for write in pending {
                        let started = std::time::Instant::now();
                        let result = storage.as_ref().map(|storage| write.write(storage));
                        tracing::debug!(replica = id, seq = write.seq(), took = ?started.elapsed(), "stored a stable checkpoint");
                        if let Some(Err(error)) = result {
                            failed.stop(format!("it cannot store a stable checkpoint: {error}"));
                            return;
                        }
                        // Counted once the store has let go of what the disk
                        // now holds (the first time, a whole state).
                        store.finish_stabilize(write);
                        if storage.is_some() {
                            stored_metrics
                                .checkpoints_stored
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
                .expect("the OS refused to start the storage thread");
            (writes, thread)
        };
        let mut agreement_log = storage.map(agreement_log::AgreementLog::new);
        let protocol_halt = Arc::clone(&halt);
        let (stable_writes, storage_thread) = stable_writes;
        let protocol_metrics = Arc::clone(&metrics);
        let protocol_read_barrier = Arc::clone(&read_barrier);
        tracing::info!(
            replica = id,
            %address,
            replicas = cluster.replicas.len(),
            f = cluster.f,
            view = replica.view(),
            "replica started"
        );
        let span = tracing::info_span!("replica", id);
        tasks.push(tokio::spawn(tracing::Instrument::instrument(
            async move {
                let mut outputs = startup;
                // The last read barrier given out.
                let mut answered_after: Seq = 0;
                // Timers (request and view-change timeouts) are checked on ticks.
                let mut ticks = tokio::time::interval(TICK);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    let first = tokio::select! {
                        input = inbox.recv() => match input {
                            Some(input) => input,
                            None => break,
                        },
                        _ = ticks.tick() => Input::Tick,
                    };
                    let now = now_nanos();
                    replica.handle(now, first, &mut outputs);
                    // Take what else is already waiting before routing, so
                    // broadcasts of one burst leave together.
                    for _ in 0..256 {
                        match inbox.try_recv() {
                            Some(input) => replica.handle(now, input, &mut outputs),
                            None => break,
                        }
                    }
                    // Before any commit vote of this burst leaves: a read
                    // that arrives after a write it voted for completed must
                    // see the barrier past it.
                    let barrier = replica.read_barrier().unwrap_or(NO_READS);
                    protocol_read_barrier.store(barrier, Ordering::Release);
                    // A new view that does not carry a number this replica
                    // voted for lowers the barrier (that number never
                    // committed): reads parked at execution behind it may
                    // run once execution reaches the new one, or they would
                    // wait for some later proposal to take the number.
                    if barrier != NO_READS {
                        if barrier < answered_after {
                            let _ = to_execution.send(ExecCommand::LowerReadBarrier(barrier));
                        }
                        answered_after = barrier;
                    }
                    // What the protocol asked to persist is on disk before any
                    // of this burst's messages leaves (one commit for all; see
                    // `agreement_log` for the records that wait for the next).
                    if let Some(log) = &mut agreement_log
                        && let Err(error) = log.write_burst(&mut outputs)
                    {
                        protocol_halt.stop(format!("it cannot store its agreement log: {error}"));
                        break;
                    }
                    // A write failed here or on another thread: nothing of
                    // this burst leaves, and the replica takes no further part.
                    if protocol_halt.reason().is_some() {
                        break;
                    }
                    merge_haves(&mut outputs);
                    for output in outputs.drain(..) {
                        if let Output::Stable { seq, state, proof } = &output
                            && let Some(write) = checkpoints.begin_stabilize(*seq, *state, proof)
                        {
                            let _ = stable_writes.send(write);
                        }
                        route(
                            output,
                            &peer_queues,
                            &to_execution,
                            &protocol_metrics,
                            &serving,
                        );
                    }
                    protocol_metrics.protocol.lock().clone_from(replica.stats());
                    protocol_metrics
                        .view
                        .store(replica.view(), Ordering::Relaxed);
                    protocol_metrics
                        .recovering
                        .store(replica.recovering(), Ordering::Relaxed);
                    protocol_metrics
                        .delivered
                        .store(replica.delivered(), Ordering::Relaxed);
                }
            },
            span,
        )));

        Ok(ReplicaNode {
            id,
            address,
            metrics,
            tasks,
            execution_thread: Some(execution_thread),
            storage_thread: Some(storage_thread),
            serve_thread: Some(serve_thread),
            halt,
        })
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Why this replica stopped, if it did: a write to its data directory
    /// failed (a full disk, an I/O error), so it takes no further part in
    /// agreement or execution and answers clients with this reason. Its
    /// peers go on without it; restarted once the cause is fixed, it catches
    /// up from them.
    pub fn stopped(&self) -> Option<String> {
        self.halt.reason()
    }

    /// Waits until this replica stops (see [`stopped`](Self::stopped));
    /// returns why. A program serving a replica waits for this beside
    /// Ctrl-C and exits with the reason.
    pub async fn halted(&self) -> String {
        self.halt.wait().await
    }

    /// Its counters and checkpoint history.
    pub fn metrics(&self) -> &Arc<NodeMetrics> {
        &self.metrics
    }

    /// Serves this replica's metrics in the Prometheus format at
    /// `GET /metrics` on `listener`, until the replica shuts down.
    pub fn serve_metrics(&mut self, listener: TcpListener) {
        self.tasks.push(tokio::spawn(prometheus::serve(
            listener,
            self.id,
            Arc::clone(&self.metrics),
        )));
    }

    /// Stops every task and waits for execution to finish what it has.
    pub async fn shutdown(mut self) {
        self.stop_tasks();
        for thread in [
            self.execution_thread.take(),
            self.storage_thread.take(),
            self.serve_thread.take(),
        ]
        .into_iter()
        .flatten()
        {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    fn stop_tasks(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for ReplicaNode {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

/// Merges the burst's haves to each replica into as few messages as
/// possible (each in the place of the first it takes in): a burst of many
/// clients' batches would otherwise send the primary as many frames. None
/// grows past what the primary reads of one (`MAX_HAVE_DIGESTS`): it
/// ignores the rest, and a backup never says it has a batch twice.
fn merge_haves(outputs: &mut Vec<Output>) {
    let mut into: BTreeMap<ReplicaId, usize> = BTreeMap::new();
    let mut merged = 0;
    for at in 0..outputs.len() {
        let Output::Send(to, ReplicaMessage::Have(digests)) = &outputs[at] else {
            continue;
        };
        let (to, count) = (*to, digests.len());
        let room = into.get(&to).is_some_and(|&first| {
            matches!(&outputs[first], Output::Send(_, ReplicaMessage::Have(all))
                if all.len() + count <= crate::protocol::MAX_HAVE_DIGESTS)
        });
        if !room {
            into.insert(to, at);
            continue;
        }
        let first = into[&to];
        let digests = match &mut outputs[at] {
            Output::Send(_, ReplicaMessage::Have(digests)) => std::mem::take(digests),
            _ => unreachable!("matched above"),
        };
        if let Output::Send(_, ReplicaMessage::Have(all)) = &mut outputs[first] {
            all.extend(digests);
        }
        merged += 1;
    }
    if merged > 0 {
        outputs.retain(|output| {
            !matches!(output, Output::Send(_, ReplicaMessage::Have(digests)) if digests.is_empty())
        });
    }
}

fn route(
    output: Output,
    peers: &BTreeMap<ReplicaId, peer_queue::PeerQueue>,
    execution: &std::sync::mpsc::Sender<ExecCommand>,
    metrics: &NodeMetrics,
    serving: &crossbeam::channel::Sender<Output>,
) {
    let send = |to: ReplicaId, frame: Arc<Vec<u8>>| {
        if let Some(queue) = peers.get(&to)
            && !queue.try_send(frame)
        {
            metrics.dropped_sends.fetch_add(1, Ordering::Relaxed);
        }
    };
    match output {
        Output::Send(to, message) => send(to, Arc::new(encode_message(&message))),
        Output::Broadcast(message) => {
            let frame = Arc::new(encode_message(&message));
            for to in peers.keys() {
                send(*to, Arc::clone(&frame));
            }
        }
        Output::Execute(batch) => {
            // The execution thread only stops when the node does.
            let _ = execution.send(ExecCommand::Execute(batch));
        }
        Output::InstallState { seq, digest, state } => {
            tracing::info!(
                seq,
                digest = %crate::crypto::short_hex(&digest),
                "installing a state fetched from peers"
            );
            metrics.states_installed.fetch_add(1, Ordering::Relaxed);
            let _ = execution.send(ExecCommand::Install { seq, digest, state });
        }
        output @ (Output::ServeState { .. } | Output::ServeParts { .. }) => {
            // Served on a thread of its own; if it is busy, the peer asks
            // again after its timeout.
            if serving.try_send(output).is_err() {
                metrics.dropped_sends.fetch_add(1, Ordering::Relaxed);
            }
        }
        Output::Stable { seq, state, .. } => {
            tracing::info!(
                seq,
                digest = %crate::crypto::short_hex(&state),
                "checkpoint {seq} is stable: 2f+1 replicas agree on its digest"
            );
            metrics.record_stable(seq, state);
        }
        // Replicas keep nothing on disk yet.
        Output::Persist(_) => {}
        Output::ViewEntered(view) => {
            metrics.view.store(view, Ordering::Relaxed);
            let primary = view % (peers.len() as u64 + 1);
            tracing::info!(view, primary, "entered view {view}");
        }
        Output::Diverged { seq, .. } => {
            metrics.diverged.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                seq,
                "a quorum of replicas disagrees with this replica's checkpoint; \
                 fetching theirs and executing again from there"
            );
        }
    }
}

/// Starts the thread that answers peers' state requests (see
/// [`state_server`]); returns where to send them. It stops when the sender
/// is dropped (with the protocol task).
fn spawn_state_server(
    id: ReplicaId,
    mut server: state_server::StateServer,
    checkpoints: Arc<checkpoints::CheckpointStore>,
    peers: BTreeMap<ReplicaId, peer_queue::PeerQueue>,
    metrics: Arc<NodeMetrics>,
) -> (
    crossbeam::channel::Sender<Output>,
    std::thread::JoinHandle<()>,
) {
    /// Requests waiting to be answered; the protocol limits each peer's
    /// rate, so this only fills if answering falls far behind.
    const QUEUED: usize = 256;
    /// After this long without requests, the indexed and encoded
    /// checkpoints (each a copy of a whole state) are let go.
    const IDLE: std::time::Duration = std::time::Duration::from_secs(10);
    let (serving, jobs) = crossbeam::channel::bounded::<Output>(QUEUED);
    let thread = std::thread::Builder::new()
        .name(format!("cbase-serve-{id}"))
        .spawn(move || {
            loop {
                let job = match jobs.recv_timeout(IDLE) {
                    Ok(job) => job,
                    Err(crossbeam::channel::RecvTimeoutError::Timeout) => {
                        server.forget();
                        continue;
                    }
                    Err(crossbeam::channel::RecvTimeoutError::Disconnected) => return,
                };
                let (to, reply) = match job {
                    Output::ServeState {
                        to,
                        seq,
                        offset,
                        whole,
                    } => (to, server.reply(&checkpoints, seq, offset, whole)),
                    Output::ServeParts {
                        to,
                        seq,
                        salt,
                        request,
                        parts,
                    } => (
                        to,
                        Some(server.parts(&checkpoints, seq, &salt, request, &parts)),
                    ),
                    _ => continue,
                };
                if let (Some(reply), Some(queue)) = (reply, peers.get(&to))
                    && !queue.try_send(Arc::new(encode_message(&reply)))
                {
                    metrics.dropped_sends.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .expect("the OS refused to start the state server thread");
    (serving, thread)
}

fn encode_message<T: Serialize>(message: &T) -> Vec<u8> {
    cbase_core::codec::encode(message).expect("protocol messages always encode")
}

/// Tells the checkpoint store, when dropped, that its writes will never
/// finish: see [`checkpoints::CheckpointStore::writer_stopped`].
struct WriterStopped(Arc<checkpoints::CheckpointStore>);

impl Drop for WriterStopped {
    fn drop(&mut self) {
        self.0.writer_stopped();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bursts_haves_leave_as_one_message_per_replica_in_place_of_the_first() {
        let have = |to, digest: u8| Output::Send(to, ReplicaMessage::Have(vec![[digest; 32]]));
        let mut outputs = vec![
            have(0, 1),
            Output::Broadcast(ReplicaMessage::Forward(
                crate::message::ClientBatch::unsigned(crate::message::RequestBatch {
                    client: SecretKey::from_seed([9; 32]).public(),
                    requests: Vec::new(),
                }),
            )),
            have(2, 2),
            have(0, 3),
            have(0, 4),
        ];
        merge_haves(&mut outputs);
        assert_eq!(outputs.len(), 3);
        assert_eq!(
            outputs[0],
            Output::Send(0, ReplicaMessage::Have(vec![[1; 32], [3; 32], [4; 32]]))
        );
        assert!(matches!(outputs[1], Output::Broadcast(_)));
        assert_eq!(outputs[2], have(2, 2));
    }

    /// Schedule (n = 4, f = 1): backup 1 has a proposal in flight (slot 1,
    /// its commit vote not yet due), so it holds the haves of the unsigned
    /// batches that keep arriving; the 4096th releases them all in one have
    /// (`MAX_HAVE_DIGESTS`). In the same burst one more unsigned batch, Y,
    /// arrives (held: slot 1 is still open) and then backup 2's prepare,
    /// whose commit vote carries Y's have. The burst's two haves to the
    /// primary are merged into one of 4097 digests, and the primary reads
    /// only the first 4096: backup 1's have of Y is lost, and backup 1 never
    /// says it again. Y reached the primary and backups 1 and 3 (2f correct
    /// backups); backup 3 told the primary, yet the primary never proposes
    /// Y, and no tick changes that (only the client's signed retransmission
    /// does). With a have per batch, a burst held at most a few hundred.
    #[test]
    fn a_bursts_merged_haves_beyond_one_haves_worth_are_not_lost() {
        use crate::message::{ClientBatch, ClientRequest, RequestBatch};

        let (cluster, secrets) = crate::protocol::tests::cluster(4);
        let replica = |id: usize| {
            Replica::new(
                id as ReplicaId,
                &cluster,
                secrets[id].clone(),
                ProtocolConfig::default(),
            )
        };
        let (mut primary, mut backup, mut other) = (replica(0), replica(1), replica(2));
        let client = SecretKey::from_seed([99; 32]);
        let batch = |lane: u32| RequestBatch {
            client: client.public(),
            requests: vec![ClientRequest {
                lane,
                number: 1,
                operation: vec![1],
            }],
        };
        let now = 1_000_000_000;
        // Slot 1: a signed batch, proposed by the primary; backups 1 and 2
        // prepare it, and backup 2's prepare is held back for now.
        let mut out = Vec::new();
        primary.handle(
            now,
            Input::Client(ClientBatch::sign(batch(0), &client)),
            &mut out,
        );
        let pre_prepare = out
            .iter()
            .find_map(|o| match o {
                Output::Broadcast(m @ ReplicaMessage::PrePrepare(_)) => Some(m.clone()),
                _ => None,
            })
            .expect("the primary proposes the signed batch");
        let mut out = Vec::new();
        backup.handle(now, Input::Replica(0, pre_prepare.clone()), &mut out);
        let mut out = Vec::new();
        other.handle(now, Input::Replica(0, pre_prepare), &mut out);
        let prepare = out
            .iter()
            .find_map(|o| match o {
                Output::Broadcast(m @ ReplicaMessage::Prepare(_)) => Some(m.clone()),
                _ => None,
            })
            .expect("backup 2 prepares");
        // Earlier bursts: 4095 unsigned batches, their haves held for the
        // vote due on slot 1. (Whatever these bursts send, the primary
        // needs no batch of theirs.)
        for lane in 1..4096 {
            let mut out = Vec::new();
            backup.handle(
                now,
                Input::Client(ClientBatch::unsigned(batch(lane))),
                &mut out,
            );
        }
        // One burst: the 4096th batch, then Y, then backup 2's prepare.
        let y = ClientBatch::unsigned(batch(5000));
        let mut burst = Vec::new();
        backup.handle(
            now,
            Input::Client(ClientBatch::unsigned(batch(4096))),
            &mut burst,
        );
        backup.handle(now, Input::Client(y.clone()), &mut burst);
        backup.handle(now, Input::Replica(2, prepare), &mut burst);
        merge_haves(&mut burst);
        // The primary has Y from its client and backup 3's have of it;
        // backup 1's haves make 2f.
        let mut out = Vec::new();
        primary.handle(now, Input::Client(y.clone()), &mut out);
        primary.handle(
            now,
            Input::Replica(3, ReplicaMessage::Have(vec![y.digest()])),
            &mut out,
        );
        assert_eq!(primary.stats().proposals, 1, "Y waits for a second have");
        for output in burst {
            if let Output::Send(0, have @ ReplicaMessage::Have(_)) = output {
                primary.handle(now, Input::Replica(1, have), &mut out);
            }
        }
        assert_eq!(
            primary.stats().proposals,
            2,
            "2f backups told the primary they have Y: it proposes Y"
        );
    }
}

//! PBFT agreement as a pure state machine.
//!
//! [`Replica::handle`] takes one [`Input`] (a message, a client batch, a
//! finished checkpoint) and the current time, and appends [`Output`]s (messages
//! to send, batches to execute, checkpoints that became stable). It does no I/O,
//! reads no clock and uses no randomness, so the same code runs on the tokio
//! runtime and in a deterministic simulator.
//!
//! Normal case (Castro and Liskov, OSDI 1999), n = 3f+1:
//! 1. The primary of view `v` (replica `v mod n`) assigns the next sequence
//!    number within the window to a batch of client requests and broadcasts a
//!    signed pre-prepare.
//! 2. A backup that accepts it broadcasts a signed prepare. A replica is
//!    *prepared* for `(v, n, d)` with the pre-prepare and 2f matching prepares.
//! 3. A prepared replica broadcasts a commit; with 2f+1 matching commits it is
//!    *committed* and hands the batch to execution, strictly in sequence order.
//! 4. Every `K` sequence numbers, execution reports a state digest; replicas
//!    broadcast signed checkpoints, and 2f+1 matching ones make it *stable*:
//!    the low watermark moves up and everything below it is discarded. The
//!    primary never proposes beyond `low + L`.
//!
//! Anything that does not follow these rules (wrong view or primary, outside
//! the window, bad signature or digest, a second proposal for a slot) is
//! dropped and counted in [`Stats`], never acted on.
//!
//! Where each part lives: this module holds the replica's state, its
//! construction and the dispatch of inputs; `normal_case` steps 1-3;
//! `intake`, `vouching` and `pending` client batches on their way into a
//! proposal; `checkpoints` step 4; `view_change`, `certificates` and
//! `timeouts` replacing a primary; `state_transfer` and `state_parts`
//! catching up from a checkpoint; `durable` and `recovery` what a restart
//! must not forget.

mod awaited;
mod certificates;
mod checkpoints;
mod config;
mod durable;
mod held;
mod intake;
mod normal_case;
mod pending;
mod proposals;
mod recovery;
mod slot;
mod state_parts;
mod state_transfer;
#[cfg(test)]
pub(crate) mod tests;
mod timeouts;
mod view_change;
mod vouching;
pub(crate) use vouching::MAX_HAVE_DIGESTS;

use std::collections::BTreeMap;

use crate::config::{ClusterConfig, ReplicaId};
use crate::crypto::{PublicKey, SecretKey};
use crate::message::{
    CheckedBatch, Checkpoint, ClientBatch, Hash, Proposal, ReplicaMessage, Seq, View, ViewChange,
};
pub use config::{PRE_PREPARE_OVERHEAD, ProtocolConfig};
pub use durable::{Durable, Recovered};
use slot::Slot;

/// Something that happened to a replica.
#[derive(Debug)]
pub enum Input {
    /// A client batch, received directly from the client: over a
    /// connection the transport authenticated as the client the batch
    /// names (the runtime drops a batch naming another), which is what
    /// makes an unsigned batch genuine.
    Client(ClientBatch),
    /// A signed client batch received directly from its client, whose
    /// signature the runtime already checked on the connection's own task:
    /// a forged one never costs the protocol's single thread a
    /// verification (see [`ClientBatch::check`]).
    CheckedClient(CheckedBatch),
    /// A message from another replica (authenticated by the transport).
    Replica(ReplicaId, ReplicaMessage),
    /// Time passed: timers are checked against the time given to `handle`.
    Tick,
    /// The runtime installed transferred state at `seq` (see
    /// [`Output::InstallState`]).
    StateInstalled {
        /// The checkpoint's sequence number.
        seq: Seq,
        /// Its digest.
        state: Hash,
    },
    /// Execution finished everything up to `seq` and digested the state.
    CheckpointTaken {
        /// The checkpoint's sequence number.
        seq: Seq,
        /// The digest of the service state and the reply cache.
        state: Hash,
    },
}

/// What the replica wants done.
#[derive(Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Output {
    /// Send to one replica.
    Send(ReplicaId, ReplicaMessage),
    /// Send to every other replica.
    Broadcast(ReplicaMessage),
    /// Execute a committed batch. Emitted strictly in sequence order.
    Execute(Committed),
    /// A checkpoint became stable: 2f+1 replicas, this one included, agree
    /// on the state digest at `seq`.
    Stable {
        /// The sequence number.
        seq: Seq,
        /// The agreed digest.
        state: Hash,
        /// The quorum of signed votes that proves it.
        proof: Vec<Checkpoint>,
    },
    /// Write this to disk before acting on any output after it (see
    /// [`Durable`]). A runtime without a disk ignores it.
    Persist(Durable),
    /// A peer asked for the state at checkpoint `seq`: send it a
    /// [`ReplicaMessage::StateReply`] with the chunk of this replica's
    /// encoded manifest (or, with `whole`, whole checkpoint) that starts at
    /// `offset`, if it still has that checkpoint.
    ServeState {
        /// The peer.
        to: ReplicaId,
        /// The checkpoint.
        seq: Seq,
        /// Where the chunk starts in the encoding.
        offset: u64,
        /// The whole state rather than its manifest.
        whole: bool,
    },
    /// A peer asked for parts of checkpoint `seq`: send it a
    /// [`ReplicaMessage::Parts`] with the answers that fit in a frame, if
    /// this replica still has that checkpoint.
    ServeParts {
        /// The peer.
        to: ReplicaId,
        /// The checkpoint.
        seq: Seq,
        /// The key of short digests.
        salt: Hash,
        /// The request's name, to send back with the answer.
        request: u64,
        /// The parts asked for.
        parts: Vec<crate::checkpoint::parts::PartRequest>,
    },
    /// Replace the service state and client table with `state` (already
    /// checked against the agreed digest), then report
    /// [`Input::StateInstalled`].
    InstallState {
        /// The checkpoint's sequence number.
        seq: Seq,
        /// Its agreed digest.
        digest: Hash,
        /// The state.
        state: crate::checkpoint::parts::Transferred,
    },
    /// This replica entered a new view.
    ViewEntered(View),
    /// 2f+1 replicas agree on a digest at `seq` that differs from ours: our
    /// state is wrong and must be replaced (state transfer).
    Diverged {
        /// The sequence number.
        seq: Seq,
        /// The digest the quorum agrees on.
        state: Hash,
    },
}

/// A batch ready for execution.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Committed {
    /// The view it was committed in.
    pub view: View,
    /// Its sequence number.
    pub seq: Seq,
    /// The proposal's digest (seeds the per-request randomness).
    pub digest: Hash,
    /// What to execute.
    pub proposal: Proposal,
    /// Take a checkpoint after executing this batch.
    pub checkpoint: bool,
}

/// Why messages were dropped, counted; and how much was proposed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// View-change votes a replica restarted without its memory held back
    /// because too few peers had answered its probe yet (see
    /// [`Replica::restarted`]).
    pub votes_withheld: u64,
    /// Pre-prepares this replica sent as primary.
    pub proposals: u64,
    /// Requests in those pre-prepares.
    pub proposed_requests: u64,
    /// A signature that does not verify (replica or client).
    pub bad_signature: u64,
    /// A pre-prepare whose digest does not match its proposal.
    pub bad_digest: u64,
    /// For another view.
    pub wrong_view: u64,
    /// A pre-prepare from a replica that is not the primary, or a prepare
    /// from the primary.
    pub wrong_sender: u64,
    /// Beyond the high watermark (or sequence number 0).
    pub out_of_window: u64,
    /// At or below the stable checkpoint: late, and harmless.
    pub stale: u64,
    /// A second, different pre-prepare or vote for the same slot.
    pub equivocation: u64,
    /// A batch or vote seen before.
    pub duplicate: u64,
    /// Prepares for a slot this replica had prepared already: not needed,
    /// so not verified and not kept.
    pub late_prepares: u64,
    /// Over the size limits.
    pub oversized: u64,
    /// A proposal stamped further ahead of this replica's clock than
    /// `max_clock_skew`.
    pub bad_timestamp: u64,
    /// A proposal stamped further behind this replica's clock than twice
    /// `max_clock_skew`, held back until f+1 replicas vouch for it.
    pub stale_timestamp: u64,
    /// View changes this replica started.
    pub view_changes_started: u64,
    /// View-change or new-view messages whose certificates did not hold.
    pub bad_certificate: u64,
    /// Messages for the next view held until it starts.
    pub buffered: u64,
    /// State requests this replica sent.
    pub state_requests: u64,
    /// Transferred states or parts that did not match the agreed digest.
    pub bad_state: u64,
    /// Bytes of state received in transfers (manifests, parts, whole states).
    pub state_bytes: u64,
    /// Part requests refused over `max_part_requests_per_second`.
    pub throttled: u64,
    /// Client batches, or proposals carrying them, from clients the cluster
    /// file does not admit.
    pub unadmitted: u64,
    /// Client batches refused because their client had
    /// `max_pending_per_client` batches waiting already.
    pub client_full: u64,
    /// Unsigned client batches a peer passed on: only the client's own
    /// connection proves one genuine, so they are dropped.
    pub relayed_unsigned: u64,
    /// Pre-prepares this backup could not prepare at once because it had
    /// not received some unsigned batch in them itself: it prepared once
    /// f+1 replicas vouched for the proposal, or the batch arrived.
    pub awaited_vouchers: u64,
}

/// What a proposal's encoding adds to its client batches (the timestamp and
/// the batch count): a proposal may take `max_batch_bytes` plus this.
const PROPOSAL_FRAMING: usize = 32;

/// Most proposals asked for in one status round.
const MAX_FETCHES_PER_ROUND: usize = 64;

/// Where a normal-case message's view stands (see `Replica::view_fit`).
enum ViewFit {
    /// The view this replica works in.
    Current,
    /// The view this replica has voted to leave: it no longer votes there,
    /// but still learns what the others commit in it (see `Replica::learning`).
    Learn,
    /// The next view it can enter.
    Next,
    Other,
}

/// Whether a replica works in its view or is moving to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Normal,
    /// Voted to move to `target` at time `since`.
    ChangingTo {
        target: View,
        since: u64,
    },
}

/// One replica's agreement state. See the [module documentation](self).
pub struct Replica {
    id: ReplicaId,
    n: usize,
    f: usize,
    /// Votes that make a certificate: `ceil((n + f + 1) / 2)`, 2f+1 when n = 3f+1.
    quorum: usize,
    keys: Vec<PublicKey>,
    /// The clients allowed to submit, if the cluster file lists them.
    admitted: Option<std::collections::BTreeSet<PublicKey>>,
    secret: SecretKey,
    config: ProtocolConfig,
    view: View,
    /// The next sequence number this replica assigns when primary.
    next_seq: Seq,
    /// The stable checkpoint: the low watermark.
    low: Seq,
    log: BTreeMap<Seq, Slot>,
    /// Proposals of the slots above the stable checkpoint, by digest, and
    /// those this replica still has to fetch.
    proposals: proposals::Proposals,
    /// The last proposal served to each peer: (seq, when), so a peer cannot
    /// make this replica send the same proposal in a loop.
    proposals_served: BTreeMap<ReplicaId, (Seq, u64)>,
    /// The last sequence number handed to execution.
    delivered: Seq,
    /// The highest sequence number this replica voted to commit (it saw it
    /// prepared), in any view: see [`Replica::read_barrier`].
    highest_prepared: Seq,
    /// The last [`Durable::Window`] written: in that view, this replica
    /// sent no pre-prepare or prepare above that number (see `durable.rs`).
    window_written: (View, Seq),
    /// Client batches waiting for a sequence number, with their digests. The
    /// primary proposes them; a backup keeps them in case it becomes primary.
    pending: pending::Pending,
    /// The batches a backup waits on (its request timers), by digest.
    waiting: BTreeMap<Hash, awaited::Awaited>,
    /// The lowest sequence number this backup accepted a pre-prepare for
    /// in the current view and has not seen committed, and since when: a
    /// slot that stays so as long as a request may wait is suspected like
    /// a request (see `on_tick`).
    stalled: Option<(Seq, u64)>,
    /// Digests of batches pending or in the log, to drop duplicates.
    known_batches: BTreeMap<Hash, Option<Seq>>,
    /// Digests of batches this replica authenticated itself: received
    /// unsigned from their client, or signature checked. A proposal
    /// carrying only such batches gets this replica's prepare at once
    /// (see [`vouching`]), and no signature is checked twice.
    authenticated: vouching::Recent,
    /// As primary: which unsigned batches each backup says it has.
    haves: vouching::Haves,
    /// As backup: unsigned batches it received and has not yet told the
    /// primary of, held for its next vote (see [`Replica::release_haves`]).
    untold: Vec<Hash>,
    /// As primary: unsigned batches waiting for 2f backups to have them.
    unvouched: vouching::Unvouched,
    /// Slots whose pre-prepare this backup holds without having prepared
    /// it, waiting for batches or vouchers (see [`Slot::withheld`]); a
    /// superset: entries for slots gone since are skipped and dropped.
    withheld: std::collections::BTreeSet<Seq>,
    /// Signed checkpoint votes within the window: seq -> replica -> vote.
    checkpoint_votes: BTreeMap<Seq, BTreeMap<ReplicaId, Checkpoint>>,
    /// The digest of the stable checkpoint, and the 2f+1 votes proving it.
    stable_state: Hash,
    stable_proof: Vec<Checkpoint>,
    /// Normal operation, or changing to a new view.
    status: Status,
    /// The scale of the request and view-change timeouts (grows while views
    /// fail to make progress).
    backoff: timeouts::Backoff,
    /// Valid view-changes received, by target view and sender.
    view_changes: BTreeMap<View, BTreeMap<ReplicaId, ViewChange>>,
    /// Authenticated messages for the next view, replayed when it starts.
    held: held::Held,
    /// The latest prepared certificate per sequence number above the stable
    /// checkpoint, kept across views: a view change must carry what
    /// prepared in earlier views too, or a committed batch could be lost.
    prepared: BTreeMap<Seq, crate::message::PreparedProof>,
    /// Per sequence number above what this replica executed, the digests
    /// it sent a prepare for (or proposed), latest view last: their
    /// proposals are kept across views. A faulty primary can assemble a
    /// prepared certificate from the prepares of backups that never
    /// prepared themselves, and any later new view may re-issue it; those
    /// backups are then the only correct replicas that can serve its
    /// proposal (PBFT's view change re-issues only what f+1 replicas show
    /// pre-prepared, for the same reason). Once a slot is executed here it
    /// committed, and no new view can re-issue another digest there, so
    /// the others are forgotten when the next view starts. So a slot holds
    /// one digest per view entered while it stayed uncommitted here (no
    /// count cap: dropping the oldest lets n failed views lose the one a
    /// faulty primary's certificate names).
    pre_prepared: BTreeMap<Seq, Vec<(View, Hash)>>,
    /// The proposals among those that this replica wrote to disk
    /// ([`Durable::Proposal`]), so that each is written once.
    proposals_on_disk: std::collections::BTreeSet<(Seq, Hash)>,
    /// The new-view that started the current view, resent to replicas still
    /// in an older one.
    last_new_view: Option<crate::message::NewView>,
    /// When this replica last broadcast its status.
    last_status: u64,
    /// When each peer's status was last answered: one status message makes
    /// this replica resend up to a window's worth of messages, so a peer
    /// gets at most one answer per half status interval.
    status_answered: BTreeMap<ReplicaId, u64>,
    /// Each peer's last reported (view, executed), while it was not
    /// changing views: how a replica tells that it is behind rather than
    /// the primary stuck.
    peer_progress: BTreeMap<ReplicaId, (View, Seq)>,
    /// What this replica had executed when it last let an expired request
    /// timer pass because peers were ahead: it lets one pass per step of
    /// progress, never two in a row without any.
    lag_excused_at: Option<Seq>,
    /// The last state chunk served to each peer: (checkpoint, whole state
    /// rather than manifest, offset, when).
    state_served: BTreeMap<ReplicaId, (Seq, bool, u64, u64)>,
    /// Each peer's allowance of answers of up to a frame (parts, or chunks
    /// of a state): (answers left, when last topped up).
    parts_allowance: BTreeMap<ReplicaId, (u64, u64)>,
    /// The checkpoint this replica has, to fetch only what differs from it.
    local: state_transfer::Local,
    /// Keys the salts of this replica's part requests (derived from its
    /// secret, so nobody else can predict them).
    salt_key: Hash,
    /// Salts issued so far.
    salts: u64,
    /// The most entries of a bucket a part request lists as had
    /// (`checkpoint::parts::MAX_HAVE`; lowered in tests, which cannot
    /// afford buckets of thousands of entries).
    max_have: usize,
    /// A stable checkpoint this replica has not executed to.
    behind: Option<state_transfer::Behind>,
    /// The chunks of that checkpoint received so far from the peer asked.
    transfer: state_transfer::Transfer,
    /// A transferred state being installed by the runtime.
    installing: Option<Seq>,
    /// Each replica's latest signed checkpoint vote beyond this replica's
    /// window (one per replica, so bounded): how a replica that fell far
    /// behind learns which checkpoint to fetch.
    future_checkpoints: BTreeMap<ReplicaId, Checkpoint>,
    /// Our own checkpoint digests not yet stable.
    own_checkpoints: BTreeMap<Seq, Hash>,
    /// Set while a replica that restarted without its memory may not vote.
    recovery: Option<recovery::Recovery>,
    /// The latest time given to `handle`; the primary stamps proposals with it.
    now: u64,
    stats: Stats,
}

/// The number a replica that forgot its votes puts in its statuses for
/// peers to echo: random, so that no status a peer sent before the restart
/// (queued for a link that was down) echoes it.
fn random_probe() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64)
    })
}

impl Replica {
    /// A replica with id `id` in the cluster, in view 0 with nothing executed.
    ///
    /// # Panics
    /// If `id` is not in the cluster or the window is not a positive multiple
    /// of the checkpoint interval.
    pub fn new(
        id: ReplicaId,
        cluster: &ClusterConfig,
        secret: SecretKey,
        config: ProtocolConfig,
    ) -> Replica {
        assert!(
            config.checkpoint_interval > 0
                && config.window >= config.checkpoint_interval
                && config.window.is_multiple_of(config.checkpoint_interval),
            "the window must be a positive multiple of the checkpoint interval"
        );
        let n = cluster.n();
        let keys: Vec<PublicKey> = (0..n as ReplicaId)
            .map(|i| {
                *cluster
                    .public_key(i)
                    .expect("a validated cluster has every id")
            })
            .collect();
        assert!((id as usize) < n, "replica {id} is not in the cluster");
        // A signature is deterministic and unpredictable without the key.
        let salt_key = *blake3::hash(
            &secret
                .sign("cbase transfer salt v1", &id.to_le_bytes())
                .to_bytes(),
        )
        .as_bytes();
        Replica {
            id,
            n,
            f: cluster.f,
            quorum: cluster.quorum(),
            keys,
            admitted: cluster
                .clients
                .as_ref()
                .map(|clients| clients.iter().map(|client| client.public_key).collect()),
            secret,
            config,
            view: 0,
            next_seq: 1,
            low: 0,
            log: BTreeMap::new(),
            proposals: proposals::Proposals::default(),
            proposals_served: BTreeMap::new(),
            delivered: 0,
            highest_prepared: 0,
            window_written: (0, 0),
            pending: pending::Pending::default(),
            waiting: BTreeMap::new(),
            stalled: None,
            known_batches: BTreeMap::new(),
            authenticated: vouching::Recent::new(vouching::AUTHENTICATED),
            haves: vouching::Haves::default(),
            untold: Vec::new(),
            unvouched: vouching::Unvouched::default(),
            withheld: std::collections::BTreeSet::new(),
            checkpoint_votes: BTreeMap::new(),
            stable_state: [0; 32],
            stable_proof: Vec::new(),
            status: Status::Normal,
            backoff: timeouts::Backoff::default(),
            view_changes: BTreeMap::new(),
            held: held::Held::default(),
            prepared: BTreeMap::new(),
            pre_prepared: BTreeMap::new(),
            proposals_on_disk: std::collections::BTreeSet::new(),
            last_new_view: None,
            last_status: 0,
            status_answered: BTreeMap::new(),
            peer_progress: BTreeMap::new(),
            lag_excused_at: None,
            state_served: BTreeMap::new(),
            parts_allowance: BTreeMap::new(),
            local: state_transfer::Local::default(),
            salt_key,
            salts: 0,
            max_have: crate::checkpoint::parts::MAX_HAVE,
            behind: None,
            transfer: state_transfer::Transfer::default(),
            installing: None,
            future_checkpoints: BTreeMap::new(),
            own_checkpoints: BTreeMap::new(),
            recovery: None,
            now: 0,
            stats: Stats::default(),
        }
    }

    /// A replica that restarted without its memory: it only learns what the
    /// others commit (executes it, fetches checkpoints) in every view it may
    /// have acted in before (up to the highest it hears of before its first
    /// view-change vote), builds no new-view for such a view, and becomes an
    /// ordinary replica once it enters a later view, so it cannot contradict
    /// what it said before the restart. Until then it counts against f. A
    /// replica process that keeps no state on disk should always start this
    /// way; the cost on a cluster's first start is one view change.
    ///
    /// It votes for no view change until n - q + f peers (2f when
    /// n = 3f+1) have answered a status it sent since the restart, so that
    /// it hears of every view it may have entered before (see
    /// `recovery.rs`); a replica that cannot reach that many waits.
    pub fn restarted(
        id: ReplicaId,
        cluster: &ClusterConfig,
        secret: SecretKey,
        config: ProtocolConfig,
    ) -> Replica {
        Replica::restarted_with_probe(id, cluster, secret, config, random_probe())
    }

    /// [`Replica::restarted`] with the number its statuses carry for peers
    /// to echo given, for a deterministic test or simulation. It must differ
    /// from the one of every earlier start of this replica.
    pub fn restarted_with_probe(
        id: ReplicaId,
        cluster: &ClusterConfig,
        secret: SecretKey,
        config: ProtocolConfig,
        probe: u64,
    ) -> Replica {
        let mut replica = Replica::new(id, cluster, secret, config);
        replica.recovery = Some(recovery::Recovery::new(probe));
        replica
    }

    /// Whether this replica is still recovering from a restart: it takes
    /// part in no view yet, or it does but still lacks a certificate for a
    /// slot it may have prepared before (see `recovery.rs`). Until it is
    /// over the replica counts as one of the f faults the cluster
    /// tolerates, so restart the next replica only after.
    pub fn recovering(&self) -> bool {
        self.recovery.is_some()
    }

    /// Whether this replica restarted and still only learns: it takes part
    /// in no view until it has entered one above every view it may have
    /// acted in before the restart.
    pub fn learning_after_restart(&self) -> bool {
        self.learns_after_restart()
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// The current view.
    pub fn view(&self) -> View {
        self.view
    }

    /// The primary of the current view.
    pub fn primary(&self) -> ReplicaId {
        self.primary_of(self.view)
    }

    /// Whether this replica is the primary.
    pub fn is_primary(&self) -> bool {
        self.primary() == self.id
    }

    /// The view this replica is changing to, if it is changing views.
    pub fn changing_to(&self) -> Option<View> {
        match self.status {
            Status::Normal => None,
            Status::ChangingTo { target, .. } => Some(target),
        }
    }

    /// The stable checkpoint (low watermark).
    pub fn low_watermark(&self) -> Seq {
        self.low
    }

    /// The last sequence number handed to execution.
    pub fn delivered(&self) -> Seq {
        self.delivered
    }

    /// What a read on the fast path must wait for: execution of every
    /// sequence number up to this one (the highest this replica saw
    /// prepared, or delivered). A write that completed at any client was
    /// prepared at f+1 correct replicas before it did (2f+1 commit votes
    /// preceded its execution), and any 2f+1 replicas answering a read
    /// later include one of them; that one's answer reflects the write, so
    /// 2f+1 matching answers do (see the book's "How it works").
    ///
    /// `None` while the replica is changing views, or still learning after
    /// a restart without its memory: what it prepared before may be
    /// unknown to it, so it answers no reads until a new view tells it what
    /// may have committed (the view's carried slots, which the barrier
    /// covers from then on). One that restarted from its disk knows (it
    /// wrote each prepared certificate before its commit vote left, see
    /// `durable.rs`) and answers reads while it learns; it votes to commit
    /// nothing new until it takes part in a view.
    pub fn read_barrier(&self) -> Option<Seq> {
        let knows_its_votes = self
            .recovery
            .as_ref()
            .is_none_or(|recovery| recovery.from_disk || !recovery.learns());
        (self.status == Status::Normal && knows_its_votes)
            .then(|| self.highest_prepared.max(self.delivered))
    }

    /// Dropped-message counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Client batches waiting for a sequence number.
    pub fn pending_batches(&self) -> usize {
        self.pending.len()
    }

    fn high(&self) -> Seq {
        self.low + self.config.window
    }

    fn in_window(&self, seq: Seq) -> bool {
        seq > self.low && seq <= self.high()
    }

    /// Counts a message for `seq` that is outside the window; returns true if so.
    fn outside_window(&mut self, seq: Seq) -> bool {
        if self.in_window(seq) {
            return false;
        }
        if seq <= self.low && seq > 0 {
            self.stats.stale += 1;
        } else {
            self.stats.out_of_window += 1;
        }
        true
    }

    /// Handles one input at time `now` (nanoseconds since the Unix epoch; the
    /// primary stamps its proposals with it).
    pub fn handle(&mut self, now: u64, input: Input, out: &mut Vec<Output>) {
        self.now = self.now.max(now);
        let before = out.len();
        let tick = matches!(input, Input::Tick);
        match input {
            Input::Client(batch) => self.on_client_batch(batch, out, None, false),
            Input::CheckedClient(batch) => {
                self.on_client_batch(batch.into_inner(), out, None, true)
            }
            Input::Replica(from, message) => self.on_replica_message(from, message, out),
            Input::CheckpointTaken { seq, state } => self.on_checkpoint_taken(seq, state, out),
            Input::Tick => {
                self.on_tick(out);
                self.fetch_state_if_overdue(out);
            }
            Input::StateInstalled { seq, state } => self.on_state_installed(seq, state, out),
        }
        self.release_haves(out, before, tick);
        self.settle_recovery(out);
    }

    /// Ends a recovery from a restart once this replica holds, or no longer
    /// needs, a certificate for every slot it owes, or, restarted from its
    /// disk in the view it entered, once its stable checkpoint covers every
    /// number it may have acted on there (see `recovery.rs`).
    fn settle_recovery(&mut self, out: &mut Vec<Output>) {
        let Some(recovery) = &mut self.recovery else {
            return;
        };
        let rejoins = self.status == Status::Normal && recovery.rejoins(self.view, self.low);
        if rejoins {
            // Everything it may have proposed before the restart is at or
            // below the checkpoint, so executed.
            self.next_seq = self.next_seq.max(self.delivered.max(self.low) + 1);
        }
        if rejoins || recovery.settle(self.low, &self.prepared) {
            if recovery.restored {
                out.push(Output::Persist(Durable::RestoreOver));
            }
            self.recovery = None;
        }
    }

    /// Before this replica sends a pre-prepare or a prepare for `seq` in
    /// `view`: writes how far its window reaches there, if it has not
    /// already (once per window, not per message; the runtime writes a
    /// burst's `Persist`s before it sends any of its messages).
    fn cover_window(&mut self, view: View, seq: Seq, out: &mut Vec<Output>) {
        if (view, seq) <= self.window_written {
            return;
        }
        let reach = seq.max(self.high());
        self.window_written = (view, reach);
        out.push(Output::Persist(Durable::Window { view, seq: reach }));
    }

    fn on_replica_message(
        &mut self,
        from: ReplicaId,
        message: ReplicaMessage,
        out: &mut Vec<Output>,
    ) {
        if from as usize >= self.n || from == self.id {
            self.stats.wrong_sender += 1;
            return;
        }
        if let Some(recovery) = &mut self.recovery {
            recovery.hear(&message);
        }
        match message {
            ReplicaMessage::PrePrepare(pre_prepare) => self.on_pre_prepare(from, pre_prepare, out),
            ReplicaMessage::Prepare(prepare) => self.on_prepare(from, prepare, out),
            ReplicaMessage::Commit(commit) => self.on_commit(from, commit, out),
            ReplicaMessage::Checkpoint(checkpoint) => self.on_checkpoint(from, checkpoint, out),
            ReplicaMessage::Forward(batch) => self.on_forward(from, batch, out),
            ReplicaMessage::Have(digests) => self.on_have(from, digests, out),
            ReplicaMessage::ViewChange(view_change) => self.on_view_change(from, view_change, out),
            ReplicaMessage::NewView(new_view) => self.on_new_view(from, new_view, out),
            ReplicaMessage::Status(status) => self.on_status(from, status, out),
            ReplicaMessage::FetchProposal { seq, digest } => {
                self.on_fetch_proposal(from, seq, digest, out)
            }
            ReplicaMessage::ProposalBody { seq, proposal } => {
                self.on_proposal_body(seq, proposal, out)
            }
            ReplicaMessage::StateRequest { seq, offset, whole } => {
                self.on_state_request(from, seq, offset, whole, out)
            }
            ReplicaMessage::StateReply {
                seq,
                offset,
                total,
                chunk,
                whole,
            } => {
                let chunk = state_transfer::Chunk {
                    seq,
                    offset,
                    total,
                    chunk,
                    whole,
                };
                self.on_state_reply(from, chunk, out)
            }
            ReplicaMessage::PartsRequest {
                seq,
                salt,
                request,
                parts,
            } => self.on_parts_request(from, seq, salt, request, parts, out),
            ReplicaMessage::Parts {
                seq,
                request,
                parts,
            } => self.on_parts(from, seq, request, parts, out),
        }
    }

    /// Where a normal-case message for `view` stands: for the view this
    /// replica works in, for the next view it can enter (held until then),
    /// or for any other view (dropped). A replica changing views takes part
    /// in no view below the one it voted for.
    fn view_fit(&mut self, view: View) -> ViewFit {
        if view == self.view {
            return match self.status {
                Status::Normal => ViewFit::Current,
                Status::ChangingTo { .. } => ViewFit::Learn,
            };
        }
        let heading_to = self.heading_to();
        let next = match self.status {
            Status::Normal => heading_to + 1,
            Status::ChangingTo { .. } => heading_to,
        };
        if view == next {
            ViewFit::Next
        } else {
            self.stats.wrong_view += 1;
            ViewFit::Other
        }
    }

    /// Holds an authenticated message for the next view (see [`held`]).
    fn hold(&mut self, view: View, from: ReplicaId, message: ReplicaMessage) {
        // A sender's fair share: of each kind (pre-prepare, prepare,
        // commit), one for every sequence number of the window.
        let limit = self.config.window as usize;
        if self.held.hold(view, from, message, limit) {
            self.stats.buffered += 1;
        } else {
            self.stats.out_of_window += 1;
        }
    }

    /// How many times the base timeouts the current ones are (they grow
    /// while views fail to make progress).
    pub fn timeout_scale(&self) -> u64 {
        self.backoff.scale()
    }

    /// Agreed slots whose proposal this replica is still fetching.
    pub fn missing_proposals(&self) -> usize {
        self.proposals.missing_count()
    }

    /// Messages held for the next view (bounded per sender).
    pub fn held_messages(&self) -> usize {
        self.held.len()
    }

    /// Which batches are known (pending or ordered), for tests and metrics.
    pub fn known_batch_count(&self) -> usize {
        self.known_batches.len()
    }

    /// The replicas other than this one.
    pub fn peers(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        (0..self.n as ReplicaId).filter(move |r| *r != self.id)
    }

    /// Sequence numbers with agreement state in the log.
    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    #[cfg(test)]
    pub(crate) fn checkpoint_vote_seqs(&self) -> std::collections::BTreeSet<Seq> {
        self.checkpoint_votes.keys().copied().collect()
    }
}

//! What replicas and clients say to each other.
//!
//! Every message travels inside an authenticated session (see
//! [`crate::transport`]), so the receiver knows which replica or client sent
//! it. Messages that must also convince a third party (a pre-prepare, a
//! prepare and a checkpoint become parts of certificates; a client's requests
//! are relayed by the primary to the backups) carry an ed25519 signature too.

use serde::{Deserialize, Serialize};

use cbase_core::codec;

use crate::config::ReplicaId;
use crate::crypto::{PublicKey, SecretKey, Signature};

/// A view number: view `v` has replica `v mod n` as its primary.
pub type View = u64;
/// A sequence number in the agreed order of batches.
pub type Seq = u64;
/// A blake3 digest.
pub type Hash = [u8; 32];

/// Signature domains, so a signature made for one purpose never verifies for another.
pub mod domain {
    /// A client's batch of requests.
    pub const CLIENT_BATCH: &str = "cbase client batch v1";
    /// A pre-prepare header.
    pub const PRE_PREPARE: &str = "cbase pre-prepare v1";
    /// A prepare.
    pub const PREPARE: &str = "cbase prepare v1";
    /// A checkpoint.
    pub const CHECKPOINT: &str = "cbase checkpoint v1";
    /// A view-change message.
    pub const VIEW_CHANGE: &str = "cbase view-change v1";
}

/// One operation from one client lane. A client runs several lanes so it can
/// have several requests outstanding; within a lane, numbers only grow and
/// each is executed at most once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    /// The lane of the client that sent it.
    pub lane: u32,
    /// The request number within the lane.
    pub number: u64,
    /// The encoded service request.
    #[serde(with = "cbase_core::codec::bytes")]
    pub operation: Vec<u8>,
}

/// Requests a client sends together, authenticated once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestBatch {
    /// The client's identity.
    pub client: PublicKey,
    /// The requests: at most [`MAX_BATCH_REQUESTS`], or the batch does not
    /// decode.
    #[serde(deserialize_with = "cbase_core::codec::bounded::vec::<_, _, MAX_BATCH_REQUESTS>")]
    pub requests: Vec<ClientRequest>,
}

/// The most requests a batch can hold and still decode, whatever
/// `ProtocolConfig::max_batch_requests` says (which may not be higher). A
/// request takes about 13 times more memory decoded than encoded when its
/// operation is empty, so without a bound a client's frame of 16 MiB could
/// make a replica allocate over 200 MiB before any check ran.
pub const MAX_BATCH_REQUESTS: usize = 65_536;

/// The most reads on the fast path one [`ClientMessage::Reads`] frame can
/// hold and still decode (as many as a connection may have unanswered).
pub const READS_PER_FRAME: usize = 1024;

/// The most replies, or answers to reads, one [`ReplyMessage`] frame can
/// hold and still decode: a client holds no more than this of what a
/// faulty replica sends at once.
pub const ANSWERS_PER_FRAME: usize = 1024;

/// A client's batch as the replicas order it: what the primary proposes and
/// the backups check.
///
/// A batch travels in one of two forms:
/// - **Unsigned**, the usual case: the client sends it to every replica,
///   each over its own connection, whose frame MACs (keyed by the
///   handshake) prove the client sent it. Only the replica that received it
///   so can tell; a backup that did not is convinced by f+1 replicas
///   vouching for the proposal (see the protocol's vouching rule).
/// - **Signed**: anyone can check it. A client signs a batch when it
///   retransmits it, so a batch some replicas missed still gets through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientBatch {
    /// The batch.
    pub batch: RequestBatch,
    /// The client's signature over the encoded batch, if it signed it.
    pub signature: Option<Signature>,
}

impl ClientBatch {
    /// Signs `batch` with the client's key.
    pub fn sign(batch: RequestBatch, key: &SecretKey) -> ClientBatch {
        let bytes = codec::encode(&batch).expect("request batches always encode");
        ClientBatch {
            signature: Some(key.sign(domain::CLIENT_BATCH, &bytes)),
            batch,
        }
    }

    /// `batch` without a signature, for a client to send over its
    /// authenticated connections.
    pub fn unsigned(batch: RequestBatch) -> ClientBatch {
        ClientBatch {
            batch,
            signature: None,
        }
    }

    /// Whether the batch carries a signature (checked or not).
    pub fn is_signed(&self) -> bool {
        self.signature.is_some()
    }

    /// Whether the batch carries the named client's signature. An unsigned
    /// batch does not.
    pub fn verify(&self) -> bool {
        let Some(signature) = &self.signature else {
            return false;
        };
        match codec::encode(&self.batch) {
            Ok(bytes) => self
                .batch
                .client
                .verify(domain::CLIENT_BATCH, &bytes, signature),
            Err(_) => false,
        }
    }

    /// The digest that identifies this batch (signature included, so the
    /// unsigned and the signed copy, or two differently signed copies, are
    /// different batches; the client table executes their requests once).
    pub fn digest(&self) -> Hash {
        digest_of(self)
    }

    /// Checks the signature of a signed batch, for a connection to do where
    /// the batch arrived rather than on the protocol's one thread. `None`
    /// if it is unsigned or its signature is not the named client's.
    pub fn check(self) -> Option<CheckedBatch> {
        self.verify().then_some(CheckedBatch(self))
    }
}

/// A signed client batch whose signature was checked
/// ([`ClientBatch::check`]), so the protocol does not check it again. Made
/// only by checking, never decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedBatch(ClientBatch);

impl CheckedBatch {
    /// The batch.
    pub fn batch(&self) -> &ClientBatch {
        &self.0
    }

    /// The batch, no longer marked as checked.
    pub fn into_inner(self) -> ClientBatch {
        self.0
    }
}

/// The primary's proposal for one sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrePrepare {
    /// The view.
    pub view: View,
    /// The sequence number.
    pub seq: Seq,
    /// The digest of [`Proposal`], which the signature covers.
    pub digest: Hash,
    /// The proposal itself.
    pub proposal: Proposal,
    /// The primary's signature over `(view, seq, digest)`.
    pub signature: Signature,
}

impl PrePrepare {
    /// The whole pre-prepare from its header and the proposal it names.
    pub fn from_header(header: PrePrepareHeader, proposal: Proposal) -> PrePrepare {
        PrePrepare {
            view: header.view,
            seq: header.seq,
            digest: header.digest,
            proposal,
            signature: header.signature,
        }
    }

    /// The part the signature covers, without the proposal: what
    /// certificates carry.
    pub fn header(&self) -> PrePrepareHeader {
        PrePrepareHeader {
            view: self.view,
            seq: self.seq,
            digest: self.digest,
            signature: self.signature,
        }
    }
}

/// A pre-prepare without its proposal: the view, sequence number and
/// proposal digest the primary signed. Certificates (view-changes, new-views)
/// carry headers, not proposals, so their size does not grow with the
/// proposals' and they always fit a frame; a replica that needs a proposal
/// it lacks fetches it by digest ([`ReplicaMessage::FetchProposal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrePrepareHeader {
    /// The view.
    pub view: View,
    /// The sequence number.
    pub seq: Seq,
    /// The digest of the [`Proposal`].
    pub digest: Hash,
    /// The primary's signature over `(view, seq, digest)`.
    pub signature: Signature,
}

/// What a pre-prepare proposes: the batches, and the primary's clock reading
/// that becomes every request's agreed timestamp.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Nanoseconds since the Unix epoch on the primary's clock.
    pub timestamp: u64,
    /// The client batches, in order.
    pub batches: Vec<ClientBatch>,
}

impl Proposal {
    /// The empty ("null") proposal a new view puts where nothing prepared.
    pub fn null() -> Proposal {
        Proposal {
            timestamp: 0,
            batches: Vec::new(),
        }
    }

    /// The digest a pre-prepare names.
    pub fn digest(&self) -> Hash {
        digest_of(self)
    }

    /// The number of requests in the proposal.
    pub fn len(&self) -> usize {
        self.batches.iter().map(|b| b.batch.requests.len()).sum()
    }

    /// Whether it proposes nothing (a null request, used to fill gaps).
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

/// A backup's agreement with a pre-prepare.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare {
    /// The view.
    pub view: View,
    /// The sequence number.
    pub seq: Seq,
    /// The proposal's digest.
    pub digest: Hash,
    /// Who prepares.
    pub replica: ReplicaId,
    /// Its signature over `(view, seq, digest, replica)`.
    pub signature: Signature,
}

/// A replica's readiness to execute: it has seen a prepared certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The view.
    pub view: View,
    /// The sequence number.
    pub seq: Seq,
    /// The proposal's digest.
    pub digest: Hash,
    /// Who commits.
    pub replica: ReplicaId,
}

/// A replica's state digest after executing everything up to `seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The sequence number.
    pub seq: Seq,
    /// The digest of the service state and the reply cache at `seq`.
    pub state: Hash,
    /// Who reports it.
    pub replica: ReplicaId,
    /// Its signature over `(seq, state, replica)`.
    pub signature: Signature,
}

/// Proof that a proposal prepared at a sequence number in some view: the
/// primary's signed pre-prepare header and 2f signed prepares from other
/// replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedProof {
    /// The pre-prepare's header (the proposal travels separately).
    pub pre_prepare: PrePrepareHeader,
    /// 2f matching prepares from distinct backups of that view.
    pub prepares: Vec<Prepare>,
}

/// A replica's request to move to `new_view`, with what it knows: its stable
/// checkpoint (and 2f+1 signed checkpoints proving it) and every batch it
/// prepared above it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChangeBody {
    /// The view to move to.
    pub new_view: View,
    /// The sender's stable checkpoint.
    pub stable_seq: Seq,
    /// Its digest.
    pub stable_state: Hash,
    /// 2f+1 signed checkpoints for it (empty for the initial state, seq 0).
    pub checkpoint_proof: Vec<Checkpoint>,
    /// Prepared certificates above the stable checkpoint.
    pub prepared: Vec<PreparedProof>,
    /// The sender.
    pub replica: ReplicaId,
}

/// A signed view-change message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChange {
    /// The content.
    pub body: ViewChangeBody,
    /// The sender's signature over the encoded body.
    pub signature: Signature,
}

/// The new primary's announcement of a view: 2f+1 view-changes that justify
/// it and the pre-prepares it re-issues for the sequence numbers they carry.
/// Every backup recomputes the pre-prepares from the view-changes and
/// rejects the message if they differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewView {
    /// The new view.
    pub view: View,
    /// 2f+1 view-changes for it, from distinct replicas.
    pub view_changes: Vec<ViewChange>,
    /// Pre-prepare headers in the new view, signed by its primary, in
    /// sequence order. Replicas that lack a proposal fetch it by digest.
    pub pre_prepares: Vec<PrePrepareHeader>,
}

/// A replica's periodic report of where it is, so peers can resend what it
/// missed (messages may be lost; PBFT recovers by retransmission).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The view it works in.
    pub view: View,
    /// The view it is moving to, if it is changing views.
    pub changing_to: Option<View>,
    /// The last sequence number it executed.
    pub delivered: Seq,
    /// Its stable checkpoint.
    pub low: Seq,
    /// The sender.
    pub replica: ReplicaId,
    /// Set by a replica restarted without its memory, until it first votes:
    /// a number it drew at the restart, which peers send back in `echo`
    /// with their own status. An answer that carries it was sent after the
    /// restart, so the view it reports is at least every view that peer had
    /// voted for before (see `protocol::recovery`).
    pub probe: Option<u64>,
    /// The `probe` of the replica this status answers.
    pub echo: Option<u64>,
}

/// Replica-to-replica messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaMessage {
    /// A proposal from the primary.
    PrePrepare(PrePrepare),
    /// A backup's prepare.
    Prepare(Prepare),
    /// A commit.
    Commit(Commit),
    /// A checkpoint vote.
    Checkpoint(Checkpoint),
    /// A signed client batch a backup received directly, passed on to the
    /// primary.
    Forward(ClientBatch),
    /// Digests of unsigned client batches a backup received directly from
    /// their clients, sent to the primary: it proposes an unsigned batch
    /// only once 2f backups say they have it, so that f+1 correct replicas
    /// can vouch for it (see the protocol's vouching rule).
    Have(Vec<Hash>),
    /// A vote to change views.
    ViewChange(ViewChange),
    /// The start of a new view.
    NewView(NewView),
    /// Where the sender is, so peers can resend what it missed.
    Status(Status),
    /// A request for the proposal a certificate names by digest at `seq`.
    FetchProposal {
        /// The sequence number.
        seq: Seq,
        /// The proposal's digest.
        digest: Hash,
    },
    /// A proposal asked for with [`ReplicaMessage::FetchProposal`]; the
    /// receiver checks it against the digest it asked for.
    ProposalBody {
        /// The sequence number.
        seq: Seq,
        /// The proposal.
        proposal: Proposal,
    },
    /// A request for the state at a checkpoint, from a replica that fell
    /// behind it: the part of the encoded manifest (or, with `whole`, of the
    /// encoded whole state) from `offset` on.
    StateRequest {
        /// The checkpoint's sequence number.
        seq: Seq,
        /// Where in the encoding to continue.
        offset: u64,
        /// The whole state rather than its manifest: the fallback when a
        /// part is too large to travel on its own.
        whole: bool,
    },
    /// One chunk of a checkpoint's encoded
    /// [`Manifest`](crate::checkpoint::parts::Manifest) (or, with `whole`,
    /// [`CheckpointState`](crate::checkpoint::CheckpointState)): bytes
    /// `offset..offset + chunk.len()` of `total`. They travel in chunks so
    /// that any size fits the transport's frame limit; the receiver checks
    /// the whole against the digest 2f+1 replicas signed.
    StateReply {
        /// The checkpoint's sequence number.
        seq: Seq,
        /// Where `chunk` starts in the encoding.
        offset: u64,
        /// The length of the whole encoding.
        total: u64,
        /// The bytes.
        #[serde(with = "cbase_core::codec::bytes")]
        chunk: Vec<u8>,
        /// The whole state rather than its manifest.
        whole: bool,
    },
    /// A request for parts of a checkpoint's digest trees and entries, from
    /// a replica fetching only what differs from what it has (see
    /// [`crate::checkpoint::parts`]).
    PartsRequest {
        /// The checkpoint's sequence number.
        seq: Seq,
        /// The key of the short digests in bucket requests.
        salt: Hash,
        /// Names this request; the reply carries it back, so a late reply
        /// to an earlier request is known for what it is.
        request: u64,
        /// The parts.
        parts: Vec<crate::checkpoint::parts::PartRequest>,
    },
    /// Parts of a checkpoint, answering a [`ReplicaMessage::PartsRequest`]
    /// in its order; as many as fit in a frame.
    Parts {
        /// The checkpoint's sequence number.
        seq: Seq,
        /// The request answered.
        request: u64,
        /// The parts.
        parts: Vec<crate::checkpoint::parts::PartReply>,
    },
}

/// Client-to-replica messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// New requests, or a retransmission of earlier ones.
    Requests(ClientBatch),
    /// Asks the replica how it is doing ([`ReplyMessage::Status`]): for
    /// operators, not part of agreement.
    Status,
    /// The service (and interface version) this client's requests are
    /// for; a replica running another version refuses the client
    /// ([`ReplyMessage::Refused`]) before ordering anything it sends.
    Service {
        /// The service trait's name.
        service: String,
        /// Its interface fingerprint (`cbase_core::Fingerprint::hash`).
        fingerprint: u64,
    },
    /// Read-only requests on the fast path (several issued together travel
    /// in one frame): not ordered; the replica runs each against its
    /// committed state once it has executed everything it saw prepared,
    /// and answers with [`ReplyMessage::Reads`]. The connection
    /// authenticates the client, so they carry no signature. At most
    /// [`READS_PER_FRAME`].
    #[serde(deserialize_with = "cbase_core::codec::bounded::vec::<_, _, READS_PER_FRAME>")]
    Reads(Vec<ReadRequest>),
}

/// What a replica says of itself when a client asks
/// ([`ClientMessage::Status`]). One replica's word: a faulty one may lie, so
/// this is for operators watching a cluster, never for a decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// The replica.
    pub replica: ReplicaId,
    /// The view it is in.
    pub view: View,
    /// Whether it is still recovering from a restart: until it is over it
    /// counts as one of the f faults the cluster tolerates, so restart the
    /// next replica only once this is false.
    pub recovering: bool,
    /// The highest sequence number it agreed on and handed to execution.
    pub delivered: Seq,
    /// Its latest stable checkpoint (proved by 2f+1 replicas), if any: its
    /// sequence number and state digest.
    pub stable: Option<(Seq, Hash)>,
    /// Checkpoints it has taken since it started.
    pub checkpoints_taken: u64,
    /// Whole states it installed from peers (state transfers) since it
    /// started.
    pub states_installed: u64,
}

/// A replica's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The view the replica was in when it executed the request.
    pub view: View,
    /// The lane of the request.
    pub lane: u32,
    /// The request number.
    pub number: u64,
    /// The replica.
    pub replica: ReplicaId,
    /// The encoded `Result<Response, ExecError>`.
    #[serde(with = "cbase_core::codec::bytes")]
    pub result: Vec<u8>,
}

/// Replica-to-client messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplyMessage {
    /// Replies, several at once when they are ready together (at most
    /// [`ANSWERS_PER_FRAME`]).
    #[serde(deserialize_with = "cbase_core::codec::bounded::vec::<_, _, ANSWERS_PER_FRAME>")]
    Replies(Vec<Reply>),
    /// The answer to [`ClientMessage::Status`].
    Status(ReplicaStatus),
    /// The replica will not serve this client (for example, the cluster
    /// file does not admit it); it closes the connection after saying so.
    Refused(String),
    /// Answers to [`ClientMessage::Reads`], several at once when they are
    /// ready together (at most [`ANSWERS_PER_FRAME`]).
    #[serde(deserialize_with = "cbase_core::codec::bounded::vec::<_, _, ANSWERS_PER_FRAME>")]
    Reads(Vec<ReadReply>),
}

/// One read on the fast path ([`ClientMessage::Reads`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadRequest {
    /// The client's number for it, echoed in the answer.
    pub id: u64,
    /// The encoded service request.
    #[serde(with = "cbase_core::codec::bytes")]
    pub operation: Vec<u8>,
}

/// A replica's answer to a read on the fast path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadReply {
    /// The read's id ([`ReadRequest::id`]).
    pub id: u64,
    /// The replica.
    pub replica: ReplicaId,
    /// The encoded `Result<Response, ExecError>`; `None` if the replica will
    /// not answer it on the fast path (too many reads waiting, or not a
    /// read-only request): the client orders it instead.
    #[serde(with = "cbase_core::codec::bytes")]
    pub result: Option<Vec<u8>>,
}

/// The blake3 digest of a value's canonical encoding and that encoding's
/// length in bytes, from one encoding.
pub fn digest_and_size_of<T: Serialize>(value: &T) -> (Hash, usize) {
    let bytes = codec::encode(value).expect("protocol values always encode");
    (*blake3::hash(&bytes).as_bytes(), bytes.len())
}

/// The blake3 digest of a value's canonical encoding.
pub fn digest_of<T: Serialize>(value: &T) -> Hash {
    let bytes = codec::encode(value).expect("protocol values always encode");
    *blake3::hash(&bytes).as_bytes()
}

/// The bytes a pre-prepare's signature covers.
pub fn pre_prepare_header(view: View, seq: Seq, digest: &Hash) -> Vec<u8> {
    codec::encode(&(view, seq, digest)).expect("headers always encode")
}

/// The bytes a prepare's signature covers.
pub fn prepare_header(view: View, seq: Seq, digest: &Hash, replica: ReplicaId) -> Vec<u8> {
    codec::encode(&(view, seq, digest, replica)).expect("headers always encode")
}

/// The bytes a view-change's signature covers.
pub fn view_change_bytes(body: &ViewChangeBody) -> Vec<u8> {
    codec::encode(body).expect("view-change bodies always encode")
}

/// The bytes a checkpoint's signature covers.
pub fn checkpoint_header(seq: Seq, state: &Hash, replica: ReplicaId) -> Vec<u8> {
    codec::encode(&(seq, state, replica)).expect("headers always encode")
}

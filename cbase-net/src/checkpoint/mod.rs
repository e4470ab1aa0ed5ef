//! What a checkpoint is made of, shared by the protocol (which verifies
//! transferred state) and the runtime (which takes and installs it).
//!
//! A checkpoint's digest covers the service state, the client table
//! (exactly-once bookkeeping) and the agreed clock, so a replica restored from
//! a transferred checkpoint answers retransmissions exactly as its peers do
//! and gives its service the same request times.

pub mod clients;
pub mod parts;

use cbase_core::{Digest, Snapshot, codec};
use serde::{Deserialize, Serialize};

use crate::message::Hash;
pub use clients::{Admission, ClientTable, LaneRecord, Session, SessionLimits};

/// The whole replicated state at a checkpoint, as transferred between replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// The service state.
    pub snapshot: Snapshot,
    /// The client table.
    pub clients: ClientTable,
    /// The agreed clock: the largest proposal timestamp executed so far, in
    /// nanoseconds since the Unix epoch. Requests after the checkpoint see
    /// at least this time in their `Context`, even if a primary's clock runs
    /// behind.
    pub clock: u64,
}

impl CheckpointState {
    /// The state made of `snapshot`, `clients` and the agreed `clock`.
    pub fn new(snapshot: Snapshot, clients: ClientTable, clock: u64) -> CheckpointState {
        CheckpointState {
            snapshot,
            clients,
            clock,
        }
    }

    /// The digest replicas agree on, computed from scratch (O(state)): how a
    /// transferred state is checked.
    pub fn digest(&self) -> Hash {
        checkpoint_digest(&self.snapshot.digest(), &self.clients, self.clock)
    }
}

/// The digest a checkpoint agrees on: the service state's digest, the client
/// table and the agreed clock.
pub fn checkpoint_digest(state: &Digest, clients: &ClientTable, clock: u64) -> Hash {
    let encoded = codec::encode(clients).expect("client tables always encode");
    checkpoint_digest_encoded(state, &encoded, clock)
}

/// [`checkpoint_digest`] of a client table already encoded.
pub fn checkpoint_digest_encoded(state: &Digest, clients: &[u8], clock: u64) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&state.0);
    hasher.update(clients);
    hasher.update(&clock.to_le_bytes());
    *hasher.finalize().as_bytes()
}

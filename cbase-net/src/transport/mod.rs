//! Authenticated, integrity-protected connections between replicas and from
//! clients to replicas, over tokio TCP.
//!
//! Threat model: anyone can open a TCP connection to a replica, and the network
//! between two honest parties may read, drop, replay, reorder, alter or inject
//! bytes. The transport guarantees that a [`Session`] is only established with
//! a peer that proves the identity it claims ([`Role::Replica`] through the key
//! listed in the cluster file, [`Role::Client`] through the key it names), and
//! that every frame delivered by [`FrameReader::recv`] was sent, in that order,
//! by that peer on this very connection. It does **not** hide contents (there is
//! no encryption: PBFT needs integrity and authenticity, not secrecy), and it
//! cannot stop a peer from closing the connection. Whatever a peer sends, it
//! costs the receiver at most `max_frame` bytes of buffer and the sender its
//! connection.
//!
//! How:
//! - Handshake ([`connect`] / [`accept`]): both sides exchange a `Hello`
//!   (protocol version, claimed role, a fresh x25519 ephemeral key and a random
//!   nonce), then an `Auth` holding an ed25519 signature (domain
//!   `"cbase handshake v1"`) over the hash of both hellos, the signer's side
//!   (initiator or responder) and its role. The initiator's `Auth` goes first;
//!   the responder answers with its own only once the initiator's verified, so
//!   a refused initiator sees the connection close during [`connect`]. The
//!   signatures bind the ephemeral keys to the long-term identities, so a man in
//!   the middle cannot substitute its own. Handshake messages are length-prefixed (at most 4 KiB) and the
//!   whole handshake is bounded by [`TransportConfig::handshake_timeout`].
//! - Session keys: one per direction,
//!   `blake3::derive_key("cbase session v1 initiator->responder", dh || transcript)`
//!   and the `responder->initiator` counterpart.
//! - Frames: `u32 big-endian length || payload || blake3 keyed MAC(direction key,
//!   u64 frame counter || payload)`. Counters start at 0 and rise by one per
//!   frame, so a replayed, reordered, dropped or injected frame fails the MAC.
//!   The length is checked against [`TransportConfig::max_frame`] before any
//!   buffer is sized for it.

mod budget;
mod frame;
mod handshake;
pub(crate) mod reachability;

use std::fmt;
use std::io;
use std::time::Duration;

use cbase_core::codec::CodecError;
use serde::{Deserialize, Serialize};

use crate::config::{ClusterConfig, ReplicaId};
use crate::crypto::{PublicKey, SecretKey};

pub use budget::{FREE_FRAME, FrameBudget, SourceShares};
pub use frame::{FrameReader, FrameWriter, Session};
pub use handshake::{PROTOCOL_VERSION, accept, connect};

/// Who a party on a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Replica `id` of the cluster, authenticated by the key the cluster file
    /// lists for it.
    Replica(ReplicaId),
    /// A client, identified (and authenticated) by its own public key.
    Client(PublicKey),
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Replica(id) => write!(f, "replica {id}"),
            Role::Client(key) => write!(f, "client {key}"),
        }
    }
}

/// This party's identity: the role it claims and the secret key that proves it.
///
/// For [`Role::Replica`] the key must be the one whose public half the cluster
/// file lists for that id (otherwise peers refuse the handshake); for
/// [`Role::Client`] the role must name the key's own public half.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The role claimed in handshakes.
    pub role: Role,
    /// The long-term key that signs handshakes.
    pub key: SecretKey,
    /// For a replica, the digest of the agreement settings it runs
    /// ([`crate::ProtocolConfig::agreement_digest`]): two replicas whose
    /// digests differ refuse each other at the handshake. Clients send
    /// zeros, and are not checked.
    pub settings: [u8; 32],
}

impl Identity {
    /// The identity of replica `id` holding `key`; checks that the cluster file
    /// lists `key`'s public half for `id`.
    pub fn replica(
        cluster: &ClusterConfig,
        id: ReplicaId,
        key: SecretKey,
    ) -> Result<Identity, TransportError> {
        let listed = cluster
            .public_key(id)
            .ok_or(TransportError::UnknownReplica(id))?;
        if *listed != key.public() {
            return Err(TransportError::Handshake(format!(
                "this secret key (public key {}) is not the key the cluster file lists for \
                 replica {id} ({listed})",
                key.public()
            )));
        }
        Ok(Identity {
            role: Role::Replica(id),
            key,
            settings: [0; 32],
        })
    }

    /// The identity with the digest of the agreement settings it runs.
    pub fn with_settings(self, settings: [u8; 32]) -> Identity {
        Identity { settings, ..self }
    }

    /// A client identity for `key` (the role is derived from the key).
    pub fn client(key: SecretKey) -> Identity {
        Identity {
            role: Role::Client(key.public()),
            key,
            settings: [0; 32],
        }
    }
}

/// Limits of the transport.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// The largest payload accepted or sent in one frame, in bytes (default
    /// 16 MiB; values above `u32::MAX` act as `u32::MAX`). A peer announcing a
    /// larger frame loses its connection.
    pub max_frame: usize,
    /// How long the whole handshake may take (default 5 s).
    pub handshake_timeout: Duration,
    /// A replica's limit on handshakes under way at once (default 4,096).
    /// Anyone who reaches its port can start one, and each holds a task and
    /// its buffers until it completes or `handshake_timeout` passes, so
    /// connections past this many are closed on accept; a steady stream of
    /// silent connections would otherwise grow its memory with their rate.
    /// Such a flood delays only new connections (replicas and clients
    /// retry with growing backoff), never established ones.
    pub max_handshakes: usize,
    /// A replica's limit on handshakes under way at once from one source
    /// (an IPv4 address, or the /64 prefix of an IPv6 one; default 512),
    /// so that one party cannot take all of `max_handshakes` alone.
    /// Connections past it are closed on accept, as past `max_handshakes`.
    pub max_handshakes_per_source: usize,
    /// A replica's limit on client connections at once (default 1,024).
    /// A client's new connection replaces its earlier one, so this counts
    /// clients; connections from replicas do not count. Past it, the
    /// connection idle longest makes room if it has been idle for
    /// `evict_idle_clients_after` (its client connects again when it next
    /// has something to send); if none has, the new client is refused
    /// after its handshake, with a reply that says why.
    pub max_client_connections: usize,
    /// How long a client connection must have been idle (no frame from its
    /// client) to make room for a new client when a replica serves
    /// `max_client_connections` already (default 30 s).
    pub evict_idle_clients_after: Duration,
    /// A replica's limit on clients connected at once from one source (an
    /// IPv4 address, or the /64 prefix of an IPv6 one; default 512), so
    /// that without a list of clients one party needs several sources to
    /// take every place of `max_client_connections`. Past it, that
    /// source's connection idle longest makes room if it has been idle for
    /// `evict_idle_clients_after`; if none has, the new client is refused
    /// after its handshake, with a reply that says why. Raise it for many
    /// clients behind one address (a NAT).
    pub max_clients_per_source: usize,
    /// Bytes that frames larger than [`FREE_FRAME`] arriving from clients
    /// may take at once on a replica, all connections together (default
    /// 256 MiB); such a frame waits while they are taken. Frames up to
    /// [`FREE_FRAME`] need none of it. With `max_client_connections`, it
    /// bounds what clients' frames can make a replica hold:
    /// `max_client_connections` × [`FREE_FRAME`] plus this. The clients of
    /// one source (address) hold at most a quarter of it together, or one
    /// `max_frame` frame if that is more, so a party that sends length
    /// prefixes and never the frames delays only its own.
    pub client_frame_budget: usize,
    /// Bytes of answers that client connections on a replica may have
    /// waiting to be written beyond 64 KiB each, all together (default
    /// 256 MiB); an answer past it is dropped (the client's retransmission
    /// is answered from the reply cache; a read is answered with no result
    /// and ordered). A client that does not read its answers holds at most
    /// 16 MiB, but many could hold this much.
    pub client_answer_budget: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_frame: 16 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(5),
            max_handshakes: 4096,
            max_handshakes_per_source: 512,
            max_client_connections: 1024,
            max_clients_per_source: 512,
            evict_idle_clients_after: Duration::from_secs(30),
            client_frame_budget: 256 << 20,
            client_answer_budget: 256 << 20,
        }
    }
}

/// Why a connection could not be set up or a frame not be sent or received.
///
/// After any error other than [`TransportError::Oversized`] on send, the
/// reader or writer that returned it is unusable and the connection should be
/// dropped.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection at a frame boundary (or the reader/writer
    /// was already unusable after an earlier error).
    #[error("the connection is closed")]
    Closed,
    /// A frame is larger than the configured maximum.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// The announced (or offered) length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// A frame failed authentication: it was altered, replayed, reordered,
    /// dropped or injected.
    #[error("frame failed authentication (altered, replayed, reordered or injected)")]
    BadMac,
    /// The handshake failed: malformed or oversized messages, a protocol
    /// version mismatch, the peer closing early, and so on.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// A replica id that the cluster file does not list.
    #[error("replica {0} is not in the cluster configuration")]
    UnknownReplica(ReplicaId),
    /// The peer is not the replica we meant to reach.
    #[error("expected to reach replica {expected}, but the peer is {found}")]
    WrongPeer {
        /// The replica we dialled.
        expected: ReplicaId,
        /// Who answered.
        found: Role,
    },
    /// The peer replica runs other agreement settings (a different
    /// `ProtocolConfig`): the two could never agree, so they do not talk.
    #[error(
        "replica {peer} runs other agreement settings than this replica (ProtocolConfig digest \
         {theirs}, ours {ours}): every replica must run the same checkpoint_interval, window, \
         max_batch_requests, max_batch_bytes, max_clock_skew and timeouts"
    )]
    SettingsMismatch {
        /// The peer.
        peer: ReplicaId,
        /// Its settings digest, short.
        theirs: String,
        /// Ours, short.
        ours: String,
    },
    /// The peer's handshake signature does not verify with the key of the
    /// identity it claims.
    #[error("the peer's handshake signature does not verify for the identity it claims")]
    BadSignature,
    /// The handshake did not complete within the configured timeout.
    #[error("the handshake did not complete in time")]
    Timeout,
    /// A payload could not be encoded or decoded (see
    /// [`FrameWriter::send_value`] and [`FrameReader::recv_value`]).
    #[error(transparent)]
    Decode(#[from] CodecError),
}

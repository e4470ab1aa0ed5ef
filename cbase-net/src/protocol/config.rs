//! The agreement protocol's tuning: [`ProtocolConfig`], and the digest of
//! the settings every replica of a cluster must share.

use std::time::Duration;

use super::certificates;
use crate::checkpoint::SessionLimits;
use crate::config::ClusterConfig;
use crate::message::Hash;

/// Tuning of the agreement protocol.
#[derive(Clone, Debug)]
pub struct ProtocolConfig {
    /// Checkpoint every this many sequence numbers (K).
    pub checkpoint_interval: u64,
    /// How far past the stable checkpoint the primary may propose (L); a
    /// multiple of K.
    pub window: u64,
    /// The most requests one pre-prepare may carry (and so one client
    /// batch). At most `message::MAX_BATCH_REQUESTS` (65,536), what a batch
    /// can hold and still decode; a replica refuses to start with more.
    pub max_batch_requests: usize,
    /// The most proposals the primary keeps in flight (proposed, not yet
    /// committed) before it waits and lets requests accumulate into a batch.
    pub pipeline: usize,
    /// How long a backup waits for a request it knows of to be executed
    /// before it suspects the primary and starts a view change (the base:
    /// it doubles while suspicions follow each other).
    pub request_timeout: Duration,
    /// How long a view change may take before the replica moves on to the
    /// next view; doubled after each failed view change.
    pub view_change_timeout: Duration,
    /// The most client batches a replica holds waiting for a sequence
    /// number, of those that came one way: from their clients, or forwarded
    /// by one backup. A primary counts each way apart (so that clients
    /// filling its queue cannot have the batches correct backups forward
    /// dropped, see `protocol::pending`), so it may hold up to n times this
    /// many; a backup holds only what clients sent it.
    pub max_pending: usize,
    /// The most bytes of client batches a replica holds waiting for a
    /// sequence number, of those that came one way (as for `max_pending`).
    pub max_pending_bytes: usize,
    /// The most batches of one client a replica holds waiting. The primary
    /// serves clients in turn, one batch each, so a client that floods it
    /// waits for its own batches and not the others for its; this cap keeps
    /// one client from filling the whole queue (a correct `NetClient` has
    /// at most `batches_in_flight` batches unanswered). The primary counts
    /// the batches a client sent it and those each backup forwarded apart
    /// (as for `max_pending`), so it may hold up to n times this many.
    pub max_pending_per_client: usize,
    /// The most bytes of client batches one proposal carries; also the
    /// largest client batch a replica accepts (a larger one could never be
    /// proposed). It must leave room in the transport's frame limit for the
    /// pre-prepare around it.
    pub max_batch_bytes: usize,
    /// How often a replica tells its peers where it is, so they can resend
    /// what it missed.
    pub status_interval: Duration,
    /// The largest encoded checkpoint (service state and client table, in
    /// bytes) this replica accepts in a state transfer. It bounds the memory
    /// a peer can make it fill before the digest check can reject a lie.
    pub max_state_bytes: u64,
    /// How many requests of a state transfer (for parts, or for chunks of
    /// a whole state or manifest) a replica answers per second and peer.
    /// Each answer fills at most a frame, so this bounds what one peer can
    /// make this replica send.
    pub max_part_requests_per_second: u64,
    /// The slowest a state transfer may run, in bytes per second, once its
    /// first chunk arrived (which must happen within `request_timeout`). A
    /// peer whose chunks fall behind this pace by more than
    /// `request_timeout` is given up on and another one asked, so a faulty
    /// peer that drips a byte now and then, or announces a huge state and
    /// falls silent, cannot stall a replica that fell behind.
    pub min_transfer_rate: u64,
    /// How far a primary's proposal timestamp may be ahead of
    /// a backup's own clock. Timestamps become the agreed clock that services
    /// read through `Context`, which never runs backwards; without this bound
    /// a faulty primary could push it to the end of time and freeze it there.
    /// A backup refuses (does not prepare) a proposal stamped further ahead.
    /// It holds back its prepare for one stamped more than twice this behind
    /// its clock until f+1 replicas vouch for it, so that a faulty primary
    /// cannot hold the agreed clock still either: an ordered request runs
    /// at an agreed time at most three times this behind the fastest
    /// correct clock when it was sent. That lag grows by what the request
    /// timeout has grown by while views fail in quick succession (a
    /// network slower than the skew must not depose every correct primary)
    /// and shrinks with it again. Correct replicas' clocks must agree
    /// within this bound.
    pub max_clock_skew: Duration,
    /// The bounds of the client table (exactly-once sessions): how many
    /// clients and lanes it remembers, how many bytes of replies it caches,
    /// and when an idle session expires. Part of the replicated state's
    /// rules, so every replica of a cluster must use the same.
    pub sessions: SessionLimits,
}

/// The most bytes a pre-prepare (and the message around it) adds to the
/// client batches of its proposal: a frame must hold `max_batch_bytes` plus
/// this.
pub const PRE_PREPARE_OVERHEAD: usize = 1024;

impl ProtocolConfig {
    /// A digest of the settings every replica of a cluster must share:
    /// checkpoints at the same sequence numbers (`checkpoint_interval`),
    /// the same client table bounds (`sessions`), the same window, proposals every backup accepts (`max_batch_requests`,
    /// `max_batch_bytes`, `max_clock_skew`), and the same timeouts (so no
    /// replica suspects primaries sooner than the others). Replicas compare
    /// it at the handshake and refuse a peer whose digest differs. The other
    /// settings are limits each replica sets for itself.
    pub fn agreement_digest(&self) -> Hash {
        let mut hasher = blake3::Hasher::new_derive_key("cbase agreement settings v1");
        for value in [
            self.checkpoint_interval,
            self.window,
            self.max_batch_requests as u64,
            self.max_batch_bytes as u64,
            nanos(self.max_clock_skew),
            nanos(self.request_timeout),
            nanos(self.view_change_timeout),
            self.sessions.max_sessions as u64,
            self.sessions.max_lanes as u64,
            self.sessions.max_lanes_per_session as u64,
            self.sessions.max_reply_bytes,
            nanos(self.sessions.idle),
            nanos(self.sessions.max_number_ahead),
        ] {
            hasher.update(&value.to_le_bytes());
        }
        *hasher.finalize().as_bytes()
    }

    /// The largest certificate message this configuration can produce in
    /// `cluster`, in encoded bytes: a new-view carrying a quorum of
    /// view-changes, each with a prepared certificate for every sequence
    /// number of the window. Certificates carry proposal digests, not
    /// proposals, so this does not depend on `max_batch_bytes`; it must fit
    /// the transport's frame limit, or a view change could never be sent
    /// (a replica refuses to start otherwise).
    pub fn largest_certificate_bytes(&self, cluster: &ClusterConfig) -> u64 {
        certificates::largest_new_view_bytes(cluster.quorum(), self.window)
    }

    /// [`request_timeout`](Self::request_timeout) on the protocol's clock
    /// (nanoseconds).
    pub(super) fn request_timeout_ns(&self) -> u64 {
        nanos(self.request_timeout)
    }

    /// [`view_change_timeout`](Self::view_change_timeout) in nanoseconds.
    pub(super) fn view_change_timeout_ns(&self) -> u64 {
        nanos(self.view_change_timeout)
    }

    /// [`status_interval`](Self::status_interval) in nanoseconds.
    pub(super) fn status_interval_ns(&self) -> u64 {
        nanos(self.status_interval)
    }

    /// [`max_clock_skew`](Self::max_clock_skew) in nanoseconds.
    pub(super) fn max_clock_skew_ns(&self) -> u64 {
        nanos(self.max_clock_skew)
    }

    /// How far behind a backup's clock a proposal may be stamped and still
    /// be prepared at once while the timeouts are at their base: twice
    /// [`max_clock_skew`](Self::max_clock_skew), room for a correct
    /// primary's clock behind the backup's and for the pre-prepare's time in
    /// flight. `Backoff::clock_lag` widens it as the timeouts grow.
    pub(super) fn max_clock_lag_ns(&self) -> u64 {
        self.max_clock_skew_ns().saturating_mul(2)
    }
}

/// A duration on the protocol's clock (nanoseconds since an arbitrary
/// start), saturating at about 584 years.
pub(super) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            checkpoint_interval: 128,
            window: 512,
            max_batch_requests: 2048,
            pipeline: 2,
            request_timeout: Duration::from_secs(1),
            view_change_timeout: Duration::from_secs(2),
            max_pending: 100_000,
            max_pending_bytes: 256 << 20,
            max_pending_per_client: 1024,
            max_batch_bytes: 1 << 20,
            status_interval: Duration::from_millis(100),
            max_state_bytes: 16 << 30,
            min_transfer_rate: 1 << 20,
            max_part_requests_per_second: 64,
            max_clock_skew: Duration::from_secs(10),
            sessions: SessionLimits::default(),
        }
    }
}

//! When to tell the log that a replica cannot be reached.
//!
//! Connections retry with backoff, so a failure is logged once per outage,
//! not per attempt: at `warn` once the replica has been unreachable for
//! [`GRACE`] (peers starting at slightly different times are not worth a
//! warning) or at once when the replica answered but could not be
//! authenticated (a wrong key or address in the cluster file, which no
//! retry fixes), and at `info` when it is reachable again.

use std::time::{Duration, Instant};

use super::TransportError;
use crate::config::ReplicaId;

/// How long a replica may stay unreachable before a warning.
pub(crate) const GRACE: Duration = Duration::from_secs(2);

/// One connection's view of whether its replica can be reached.
#[derive(Debug)]
pub(crate) struct Reachability {
    /// Who keeps the connection, for the log: "replica 2" or "client".
    by: String,
    replica: ReplicaId,
    address: String,
    /// When the current outage began (`None`: connected, or never tried).
    failing_since: Option<Instant>,
    warned: bool,
}

/// What a connection attempt's outcome calls for in the log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Note {
    /// Nothing (yet) worth more than a debug line.
    Quiet,
    /// The replica is unreachable: warn, once per outage.
    Unreachable,
    /// It is reachable again after a warning.
    Back,
}

impl Reachability {
    pub(crate) fn new(by: String, replica: ReplicaId, address: String) -> Reachability {
        Reachability {
            by,
            replica,
            address,
            failing_since: None,
            warned: false,
        }
    }

    /// Notes a failed attempt at `now` and logs it as it deserves.
    pub(crate) fn failed(&mut self, error: &TransportError, now: Instant) {
        match self.on_failure(error, now) {
            Note::Unreachable => tracing::warn!(
                by = %self.by,
                replica = self.replica,
                address = %self.address,
                %error,
                "cannot reach replica {}; retrying",
                self.replica
            ),
            _ => tracing::debug!(
                by = %self.by,
                replica = self.replica,
                %error,
                "cannot reach replica; retrying"
            ),
        }
    }

    /// Notes a connection made and logs it if it ends an outage.
    pub(crate) fn connected(&mut self) {
        if self.on_connected() == Note::Back {
            tracing::info!(
                by = %self.by,
                replica = self.replica,
                address = %self.address,
                "replica {} is reachable again",
                self.replica
            );
        }
    }

    fn on_failure(&mut self, error: &TransportError, now: Instant) -> Note {
        let since = *self.failing_since.get_or_insert(now);
        let refused = matches!(
            error,
            TransportError::Handshake(_)
                | TransportError::BadSignature
                | TransportError::WrongPeer { .. }
                | TransportError::UnknownReplica(_)
                | TransportError::SettingsMismatch { .. }
        );
        if self.warned || !(refused || now.duration_since(since) >= GRACE) {
            return Note::Quiet;
        }
        self.warned = true;
        Note::Unreachable
    }

    fn on_connected(&mut self) -> Note {
        self.failing_since = None;
        if std::mem::take(&mut self.warned) {
            Note::Back
        } else {
            Note::Quiet
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> TransportError {
        TransportError::BadSignature
    }

    fn down() -> TransportError {
        TransportError::Io(std::io::ErrorKind::ConnectionRefused.into())
    }

    #[test]
    fn an_outage_is_noted_once_after_the_grace_and_its_end_once() {
        let mut r = Reachability::new("client".into(), 2, "127.0.0.1:7002".into());
        let start = Instant::now();
        // Starting up: the peer is not listening yet.
        assert_eq!(r.on_failure(&down(), start), Note::Quiet);
        assert_eq!(r.on_failure(&down(), start + GRACE / 2), Note::Quiet);
        assert_eq!(r.on_failure(&down(), start + GRACE), Note::Unreachable);
        assert_eq!(r.on_failure(&down(), start + 3 * GRACE), Note::Quiet);
        assert_eq!(r.on_connected(), Note::Back);
        assert_eq!(r.on_connected(), Note::Quiet);
        // A new outage starts its own grace.
        let later = start + 10 * GRACE;
        assert_eq!(r.on_failure(&down(), later), Note::Quiet);
        assert_eq!(r.on_failure(&down(), later + GRACE), Note::Unreachable);
    }

    #[test]
    fn a_replica_that_fails_authentication_is_noted_at_once() {
        let mut r = Reachability::new("replica 1".into(), 2, "127.0.0.1:7002".into());
        let start = Instant::now();
        assert_eq!(r.on_failure(&refused(), start), Note::Unreachable);
        assert_eq!(r.on_failure(&refused(), start), Note::Quiet);
        // A short blip that ends within the grace is not noted at all.
        assert_eq!(r.on_connected(), Note::Back);
        assert_eq!(r.on_failure(&down(), start + GRACE), Note::Quiet);
        assert_eq!(r.on_connected(), Note::Quiet);
    }
}

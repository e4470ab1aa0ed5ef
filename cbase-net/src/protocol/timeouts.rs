//! How long a replica waits before it suspects the primary, and before it
//! gives up on a view change: timeouts that grow while views fail.
//!
//! PBFT is live under weak synchrony: message delays may exceed any fixed
//! timeout for a while, but not forever. A fixed timeout below the real
//! delay suspects every primary in turn and the cluster changes views
//! forever. So a suspicion that follows another one closely (within
//! [`CALM_PERIODS`] timeouts) doubles both timeouts, up to [`MAX_DOUBLINGS`]
//! times, until they exceed what requests really take and a view holds. A
//! lone suspicion after a calm stretch (a primary that crashed) does not.
//!
//! The request timeout comes back down only when the network is fast again:
//! after a calm stretch of [`CALM_PERIODS`] timeouts with requests executing,
//! and only if the slowest request seen in that stretch took less than a
//! quarter of the current timeout. Halving on progress alone would bring it
//! back below a slow network's delay, and the cluster would change views
//! every calm stretch.
//!
//! The view-change timeout follows PBFT: it doubles with every attempt that
//! fails within one view change (the next primary may be faulty too) and
//! starts over when a view is entered, from twice what the last successful
//! attempt took (at least the configured base). So a slow network does not
//! make every view change fail once first, and a storm of failed views while
//! the network was partitioned does not leave the next view change waiting
//! for minutes once it healed.

use super::ProtocolConfig;

/// The most times the base timeouts are doubled (1024 times the base).
pub(super) const MAX_DOUBLINGS: u32 = 10;

/// How many current request timeouts make a calm stretch.
pub(super) const CALM_PERIODS: u64 = 8;

/// The timeouts' current scale.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Backoff {
    /// The base timeouts are multiplied by `2^doublings`.
    doublings: u32,
    /// When the scale last changed, or the last suspicion (`None`: never).
    since: Option<u64>,
    /// The longest a request waited to be executed since then.
    slowest: u64,
    /// When the current attempt to change views started, if changing.
    attempt_since: Option<u64>,
    /// Attempts that failed in the current view change.
    failed_attempts: u32,
    /// Twice what the last successful view change took.
    last_change: u64,
}

impl Backoff {
    /// How long a backup waits for a request it knows of to be executed.
    pub fn request_timeout(&self, config: &ProtocolConfig) -> u64 {
        config
            .request_timeout_ns()
            .saturating_mul(1 << self.doublings)
    }

    /// How far behind this replica's clock a proposal may be stamped and
    /// still be prepared on the primary's word: twice the clock skew, plus
    /// what the request timeout has grown by. A correct primary's
    /// pre-prepare may take longer than any fixed bound to arrive (weak
    /// synchrony); views then fail in quick succession and the timeouts
    /// double until they outlast the delay, and the allowed lag grows with
    /// them, or the cluster would depose every correct primary for good.
    /// While views hold, the timeouts come back down and so does the lag.
    pub fn clock_lag(&self, config: &ProtocolConfig) -> u64 {
        let growth = self
            .request_timeout(config)
            .saturating_sub(config.request_timeout_ns());
        config.max_clock_lag_ns().saturating_add(growth)
    }

    /// How long a view change may take before the replica moves on.
    pub fn view_change_timeout(&self, config: &ProtocolConfig) -> u64 {
        config
            .view_change_timeout_ns()
            .max(self.last_change)
            .saturating_mul(1 << self.failed_attempts)
    }

    /// The replica votes for a view at `now`: a new view change, or the
    /// next attempt of the current one.
    pub fn vote(&mut self, now: u64) {
        if self.attempt_since.is_some() {
            self.failed_attempts = (self.failed_attempts + 1).min(MAX_DOUBLINGS);
        }
        self.attempt_since = Some(now);
    }

    /// The replica entered a view at `now`.
    pub fn entered_view(&mut self, now: u64) {
        if let Some(since) = self.attempt_since.take() {
            self.last_change = now.saturating_sub(since).saturating_mul(2);
        }
        self.failed_attempts = 0;
    }

    fn calm(&self, now: u64, config: &ProtocolConfig) -> bool {
        let stretch = self.request_timeout(config).saturating_mul(CALM_PERIODS);
        self.since
            .is_none_or(|since| now.saturating_sub(since) >= stretch)
    }

    /// The replica suspects a primary (starts a view change) at `now`.
    pub fn suspect(&mut self, now: u64, config: &ProtocolConfig) {
        if !self.calm(now, config) {
            self.doublings = (self.doublings + 1).min(MAX_DOUBLINGS);
        }
        self.since = Some(now);
        self.slowest = 0;
    }

    /// A request this replica waited `waited` nanoseconds for was executed
    /// at `now`: after a calm stretch in which every request took less than
    /// a quarter of the timeout, the timeouts halve.
    pub fn executed(&mut self, now: u64, waited: u64, config: &ProtocolConfig) {
        self.slowest = self.slowest.max(waited);
        if self.doublings == 0 || !self.calm(now, config) {
            return;
        }
        if self.slowest.saturating_mul(4) < self.request_timeout(config) {
            self.doublings -= 1;
        }
        self.since = Some(now);
        self.slowest = 0;
    }

    /// The current multiple of the base timeouts, for tests and metrics.
    pub fn scale(&self) -> u64 {
        1 << self.doublings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspicions_in_a_row_double_the_timeouts() {
        let config = ProtocolConfig::default();
        let base = config.request_timeout_ns();
        let mut backoff = Backoff::default();
        backoff.suspect(base, &config);
        assert_eq!(backoff.scale(), 1, "a lone suspicion is free");
        backoff.suspect(2 * base, &config);
        backoff.suspect(3 * base, &config);
        assert_eq!(backoff.request_timeout(&config), 4 * base);
        for i in 0..100 {
            backoff.suspect(4 * base + i, &config);
        }
        assert_eq!(backoff.scale(), 1 << MAX_DOUBLINGS);
        // Long after, a suspicion alone does not double.
        let mut backoff = Backoff::default();
        backoff.suspect(0, &config);
        backoff.suspect(2 * base, &config);
        backoff.suspect(100 * base, &config);
        assert_eq!(backoff.scale(), 2);
    }

    #[test]
    fn the_clock_lag_a_backup_allows_grows_and_shrinks_with_the_request_timeout() {
        let config = ProtocolConfig::default();
        let (base, skew) = (config.request_timeout_ns(), config.max_clock_skew_ns());
        let mut backoff = Backoff::default();
        assert_eq!(backoff.clock_lag(&config), 2 * skew);
        for i in 0..3 {
            backoff.suspect(i, &config);
        }
        assert_eq!(backoff.scale(), 4);
        assert_eq!(backoff.clock_lag(&config), 2 * skew + 3 * base);
        // Fast again for a calm stretch: the timeout halves, and the lag
        // comes down with it.
        backoff.executed(4 * base * CALM_PERIODS + 2, base / 10, &config);
        assert_eq!(backoff.scale(), 2);
        assert_eq!(backoff.clock_lag(&config), 2 * skew + base);
    }

    #[test]
    fn timeouts_halve_only_when_requests_are_fast_again() {
        let config = ProtocolConfig::default();
        let base = config.request_timeout_ns();
        let mut backoff = Backoff::default();
        for i in 0..3 {
            backoff.suspect(i, &config);
        }
        assert_eq!(backoff.scale(), 4);
        let stretch = 4 * base * CALM_PERIODS;
        // Slow but steady: requests take 3 base timeouts, no halving.
        let mut now = 2;
        for _ in 0..5 {
            now += stretch;
            backoff.executed(now, 3 * base, &config);
        }
        assert_eq!(backoff.scale(), 4);
        // A stretch with a slow request among fast ones: no halving.
        backoff.executed(now + 1, 3 * base, &config);
        now += stretch;
        backoff.executed(now, base / 10, &config);
        assert_eq!(backoff.scale(), 4, "the stretch had a slow request");
        // Fast again: one step per calm stretch.
        now += stretch;
        backoff.executed(now, base / 10, &config);
        assert_eq!(backoff.scale(), 2);
    }
}

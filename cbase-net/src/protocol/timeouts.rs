//! How long a replica waits before it suspects the primary, and before it
//! gives up on a view change: timeouts that grow while views fail.
//!
//! PBFT is live under weak synchrony: message delays may exceed any fixed
//! timeout for a while, but not forever. A fixed timeout below the real
//! delay suspects every primary in turn and the cluster changes views
//! forever without executing anything. So each view change that starts with
//! no request executed since the previous one doubles both timeouts (up to
//! [`MAX_DOUBLINGS`]), until they exceed the delay and a view holds. After
//! that, a stretch of [`CALM_PERIODS`] timeouts with requests executing and
//! no suspicion halves them again, so a transient slowdown does not leave
//! the cluster slow to replace a crashed primary for good.

use super::ProtocolConfig;

/// The most times the base timeouts are doubled (1024 times the base).
pub(super) const MAX_DOUBLINGS: u32 = 10;

/// How many current request timeouts of progress bring the timeouts down a step.
pub(super) const CALM_PERIODS: u64 = 8;

/// The timeouts' current scale.
#[derive(Clone, Copy, Debug)]
pub(super) struct Backoff {
    /// The base timeouts are multiplied by `2^doublings`.
    doublings: u32,
    /// A request was executed since the last suspicion.
    progress: bool,
    /// When the scale last changed, or the last suspicion.
    since: u64,
}

impl Default for Backoff {
    /// The base timeouts. The first suspicion does not double them: there
    /// was no earlier view change that failed.
    fn default() -> Self {
        Backoff {
            doublings: 0,
            progress: true,
            since: 0,
        }
    }
}

impl Backoff {
    /// How long a backup waits for a request it knows of to be executed.
    pub fn request_timeout(&self, config: &ProtocolConfig) -> u64 {
        config.request_timeout.saturating_mul(1 << self.doublings)
    }

    /// How long a view change may take before the replica moves on.
    pub fn view_change_timeout(&self, config: &ProtocolConfig) -> u64 {
        config
            .view_change_timeout
            .saturating_mul(1 << self.doublings)
    }

    /// The replica suspects a primary (starts a view change) at `now`: if
    /// nothing was executed since the last suspicion, the timeouts were too
    /// short for this network, so they double.
    pub fn suspect(&mut self, now: u64) {
        if !self.progress {
            self.doublings = (self.doublings + 1).min(MAX_DOUBLINGS);
        }
        self.progress = false;
        self.since = now;
    }

    /// Requests were executed at `now`: after a calm stretch, the timeouts halve.
    pub fn progress(&mut self, now: u64, config: &ProtocolConfig) {
        self.progress = true;
        let calm = self.request_timeout(config).saturating_mul(CALM_PERIODS);
        if self.doublings > 0 && now.saturating_sub(self.since) >= calm {
            self.doublings -= 1;
            self.since = now;
        }
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
    fn failed_views_double_the_timeouts_and_calm_progress_halves_them() {
        let config = ProtocolConfig::default();
        let base = config.request_timeout;
        let mut backoff = Backoff::default();
        backoff.suspect(0);
        assert_eq!(backoff.request_timeout(&config), base, "the first is free");
        backoff.suspect(1);
        backoff.suspect(1);
        assert_eq!(backoff.request_timeout(&config), 4 * base);
        // Progress, then a suspicion: the view worked, no doubling.
        backoff.progress(2, &config);
        backoff.suspect(3);
        assert_eq!(backoff.scale(), 4);
        // Progress soon after does not lower them; a calm stretch does.
        backoff.progress(4, &config);
        assert_eq!(backoff.scale(), 4);
        backoff.progress(3 + 4 * base * CALM_PERIODS, &config);
        assert_eq!(backoff.scale(), 2);
        for i in 0..100 {
            backoff.suspect(10 * base * CALM_PERIODS + i);
        }
        assert_eq!(backoff.scale(), 1 << MAX_DOUBLINGS);
    }
}

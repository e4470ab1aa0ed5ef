//! The client table: exactly-once bookkeeping with bounded sessions.
//!
//! A *session* is what the replicas remember of one client key: per lane,
//! the last request number executed and its reply, so a retransmission is
//! answered from the cache and never executed twice. The table is part of
//! every checkpoint, so it must not grow with what clients do: it holds at
//! most [`SessionLimits::max_sessions`] sessions and
//! [`SessionLimits::max_lanes`] lane records, sessions idle for
//! [`SessionLimits::idle`] on the agreed clock expire, and cached replies
//! are bounded in bytes. When a bound is reached the least recently used
//! session is evicted. Every decision is taken in sequence order, on agreed
//! inputs only (the agreed clock, the requests' keys and numbers), so every
//! correct replica evicts the same sessions at the same point.
//!
//! An evicted session leaves one number behind: the table's *floor*, the
//! highest request number any evicted session had used. A request from a
//! client the table has no session for is executed only if its number is
//! above the floor; anything at or below it may be a retransmission (or a
//! replay by a faulty primary) of a request an evicted session executed,
//! so it is refused with [`ExecError::SessionExpired`], never executed
//! twice. A new session remembers the floor it started above (its *base*),
//! and a lane it has not used yet must start above that too, so an old
//! request on another lane of an evicted session cannot slip in behind a
//! new one. A request refused because its session uses as many lanes as it
//! may raises its session's base to its number, so it is never executed
//! later either, before or after the session is evicted. Clients number
//! their requests from the wall clock (in nanoseconds) and move above the
//! floor an expiry error reports, so an honest client meets the floor at
//! most once after its session expired. Numbers further ahead of the
//! agreed clock than [`SessionLimits::max_number_ahead`] are refused, so a
//! faulty client cannot push the floor to the end of the number space; that
//! refusal alone leaves no trace, so it is not final (see
//! [`ExecError::NumberAhead`]).
//!
//! [`ExecError::SessionExpired`]: cbase_core::ExecError::SessionExpired
//! [`ExecError::NumberAhead`]: cbase_core::ExecError::NumberAhead

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::crypto::PublicKey;

/// The last executed request of one client lane and its reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneRecord {
    /// The highest request number executed on this lane.
    pub number: u64,
    /// The encoded reply to it, once it has finished.
    #[serde(with = "cbase_core::codec::bytes")]
    pub reply: Option<Vec<u8>>,
}

/// What the replicas remember of one client key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The table's floor when the session started, or the highest number
    /// it refused for its lane count if higher: every lane's first number
    /// must be above it.
    pub base: u64,
    /// The agreed clock when a request of this session was last executed.
    pub last_used: u64,
    /// One record per lane used.
    pub lanes: BTreeMap<u32, LaneRecord>,
}

impl Session {
    fn reply_bytes(&self) -> u64 {
        self.lanes
            .values()
            .map(|record| record.reply.as_ref().map_or(0, |reply| reply.len() as u64))
            .sum()
    }

    fn highest_number(&self) -> u64 {
        self.lanes
            .values()
            .map(|record| record.number)
            .max()
            .unwrap_or(0)
            .max(self.base)
    }
}

/// The bounds of a client table. Part of the replicated state's rules:
/// every replica of a cluster must use the same (they are covered by
/// `ProtocolConfig::agreement_digest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// The most sessions (client keys) remembered at once.
    pub max_sessions: usize,
    /// The most lane records, over all sessions.
    pub max_lanes: usize,
    /// The most lanes one session may use.
    pub max_lanes_per_session: usize,
    /// The most bytes of cached replies, over all sessions. Enforced at
    /// every checkpoint (the one point where every request before it has
    /// finished on every replica): between two checkpoints the cache may
    /// exceed it by the replies of one checkpoint interval.
    pub max_reply_bytes: u64,
    /// A session not used for this long on the agreed clock expires.
    pub idle: Duration,
    /// How far ahead of the agreed clock a request number may be, read as
    /// nanoseconds (clients number requests from their wall clock).
    pub max_number_ahead: Duration,
}

/// A duration in nanoseconds, saturating.
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_sessions: 65_536,
            max_lanes: 1 << 20,
            max_lanes_per_session: 1024,
            max_reply_bytes: 256 << 20,
            idle: Duration::from_secs(3_600),
            max_number_ahead: Duration::from_secs(86_400),
        }
    }
}

/// What the table decided about a request, in sequence order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A new request: execute it (the lane's record now has its number).
    Execute,
    /// The lane's last executed request, ordered again: answer from the
    /// cached reply, if it has finished.
    Again(Option<Vec<u8>>),
    /// Below the lane's last number: an old duplicate, not executed and
    /// not answered (see `Execution`).
    Old,
    /// No session remembers this request's client and the number is at or
    /// below the floor (or the lane's first number is at or below the
    /// session's base): it may have been executed by an evicted session.
    Expired {
        /// The number the client's next requests must be above.
        floor: u64,
    },
    /// The number is further ahead of the agreed clock than allowed.
    Ahead {
        /// The highest number allowed now.
        limit: u64,
    },
    /// The session already uses as many lanes as it may.
    TooManyLanes {
        /// The most lanes a session may use.
        limit: usize,
    },
}

/// Exactly-once bookkeeping: one session per client key. Part of every
/// checkpoint, so a replica restored from one keeps refusing old requests.
/// See the [module documentation](self).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "TableData", into = "TableData")]
pub struct ClientTable {
    sessions: BTreeMap<PublicKey, Session>,
    floor: u64,
    /// `(last_used, key)` of every session: the least recently used first.
    /// Derived from `sessions`, never encoded.
    by_use: BTreeSet<(u64, PublicKey)>,
    /// Lane records over all sessions. Derived.
    lanes: usize,
}

/// The encoded form of a [`ClientTable`]: what its digest covers.
#[derive(Clone, Serialize, Deserialize)]
struct TableData {
    sessions: BTreeMap<PublicKey, Session>,
    floor: u64,
}

impl From<TableData> for ClientTable {
    fn from(data: TableData) -> ClientTable {
        let by_use = data
            .sessions
            .iter()
            .map(|(key, session)| (session.last_used, *key))
            .collect();
        let lanes = data.sessions.values().map(|s| s.lanes.len()).sum();
        ClientTable {
            sessions: data.sessions,
            floor: data.floor,
            by_use,
            lanes,
        }
    }
}

impl From<ClientTable> for TableData {
    fn from(table: ClientTable) -> TableData {
        TableData {
            sessions: table.sessions,
            floor: table.floor,
        }
    }
}

/// A table of the given lane records, each session last used at time 0
/// and with no floor: for tests and tools that build a state by hand.
impl FromIterator<((PublicKey, u32), LaneRecord)> for ClientTable {
    fn from_iter<I: IntoIterator<Item = ((PublicKey, u32), LaneRecord)>>(records: I) -> Self {
        let mut sessions: BTreeMap<PublicKey, Session> = BTreeMap::new();
        for ((client, lane), record) in records {
            sessions
                .entry(client)
                .or_default()
                .lanes
                .insert(lane, record);
        }
        ClientTable::from(TableData { sessions, floor: 0 })
    }
}

impl PartialEq for ClientTable {
    fn eq(&self, other: &ClientTable) -> bool {
        self.sessions == other.sessions && self.floor == other.floor
    }
}

impl Eq for ClientTable {}

impl ClientTable {
    /// An empty table.
    pub fn new() -> ClientTable {
        ClientTable::default()
    }

    /// How many sessions it holds.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// How many lane records it holds, over all sessions.
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// The highest number any evicted session used.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// The bytes of cached replies it holds (a pass over every record).
    pub fn reply_bytes(&self) -> u64 {
        self.sessions.values().map(Session::reply_bytes).sum()
    }

    /// The session of `client`, if the table remembers it.
    pub fn session(&self, client: &PublicKey) -> Option<&Session> {
        self.sessions.get(client)
    }

    /// The record of one lane of `client`.
    pub fn lane(&self, client: &PublicKey, lane: u32) -> Option<&LaneRecord> {
        self.sessions.get(client)?.lanes.get(&lane)
    }

    /// The record of one lane of `client`, to store a finished request's
    /// reply in.
    pub fn lane_mut(&mut self, client: &PublicKey, lane: u32) -> Option<&mut LaneRecord> {
        self.sessions.get_mut(client)?.lanes.get_mut(&lane)
    }

    /// Whether request `number` of `client` on `lane` needs no more
    /// execution here: executed already (its lane is at or past it), or
    /// never to be (its session expired, see [`expired`](Self::expired)).
    /// A backup stops timing a batch whose requests all are.
    pub fn settled(&self, client: &PublicKey, lane: u32, number: u64) -> bool {
        self.lane(client, lane)
            .map_or(self.expired(client, lane, number).is_some(), |record| {
                record.number >= number
            })
    }

    /// The floor request `number` of `client` on `lane` must be above, if
    /// it is refused as expired: its lane has no record and the number is
    /// at or below the floor (of the table, or the base of the client's
    /// session), so an evicted session may have run it.
    pub fn expired(&self, client: &PublicKey, lane: u32, number: u64) -> Option<u64> {
        let floor = match self.sessions.get(client) {
            None => self.floor,
            Some(session) if session.lanes.contains_key(&lane) => return None,
            Some(session) => session.base,
        };
        (number <= floor).then_some(floor)
    }

    /// Decides, in sequence order, what becomes of request `number` of
    /// `client` on `lane`, executed at agreed time `clock`; records it if
    /// it is to be executed, evicting the least recently used sessions
    /// that a bound requires.
    pub fn admit(
        &mut self,
        client: &PublicKey,
        lane: u32,
        number: u64,
        clock: u64,
        limits: &SessionLimits,
    ) -> Admission {
        let limit = clock.saturating_add(nanos(limits.max_number_ahead));
        if number > limit {
            return Admission::Ahead { limit };
        }
        if let Some(floor) = self.expired(client, lane, number) {
            return Admission::Expired { floor };
        }
        let new_lane = match self.sessions.get_mut(client) {
            Some(session) => {
                let used = session.lanes.len();
                match session.lanes.get_mut(&lane) {
                    Some(record) if number < record.number => return Admission::Old,
                    Some(record) if number == record.number => {
                        return Admission::Again(record.reply.clone());
                    }
                    Some(record) => {
                        record.number = number;
                        record.reply = None;
                        false
                    }
                    None if used >= limits.max_lanes_per_session => {
                        // Refused for good: the session's new lanes must
                        // start above it, and so, once the session is
                        // evicted, must the key's next session (the floor
                        // covers the base). Bounded: the number is not
                        // ahead of the clock.
                        session.base = session.base.max(number);
                        return Admission::TooManyLanes {
                            limit: limits.max_lanes_per_session,
                        };
                    }
                    None => {
                        session.lanes.insert(
                            lane,
                            LaneRecord {
                                number,
                                reply: None,
                            },
                        );
                        true
                    }
                }
            }
            None => {
                // The floor before this request's evictions: what the key's
                // own evicted sessions could have used is below it. (The
                // sessions evicted now belong to other keys.)
                let base = self.floor;
                while self.sessions.len() >= limits.max_sessions.max(1) {
                    self.evict_least_recent(None);
                }
                let mut session = Session {
                    base,
                    last_used: clock,
                    lanes: BTreeMap::new(),
                };
                session.lanes.insert(
                    lane,
                    LaneRecord {
                        number,
                        reply: None,
                    },
                );
                self.sessions.insert(*client, session);
                self.by_use.insert((clock, *client));
                true
            }
        };
        if new_lane {
            self.lanes += 1;
            while self.lanes > limits.max_lanes && self.evict_least_recent(Some(client)) {}
        }
        self.touch(client, clock);
        Admission::Execute
    }

    /// Expires the sessions idle for longer than `limits.idle` at agreed
    /// time `clock`.
    pub fn expire_idle(&mut self, clock: u64, limits: &SessionLimits) {
        while let Some(&(last_used, key)) = self.by_use.first() {
            if clock.saturating_sub(last_used) <= nanos(limits.idle) {
                break;
            }
            self.evict(&key);
        }
    }

    /// Evicts least recently used sessions until the cached replies fit
    /// `limits.max_reply_bytes`. Called at checkpoints only: there every
    /// request before has finished on every replica, so every replica
    /// counts the same bytes.
    pub fn trim_replies(&mut self, limits: &SessionLimits) {
        let mut bytes = self.reply_bytes();
        while bytes > limits.max_reply_bytes {
            let Some(&(_, key)) = self.by_use.first() else {
                break;
            };
            bytes -= self.sessions.get(&key).map_or(0, Session::reply_bytes);
            self.evict(&key);
        }
    }

    fn touch(&mut self, client: &PublicKey, clock: u64) {
        let Some(session) = self.sessions.get_mut(client) else {
            return;
        };
        if session.last_used != clock {
            self.by_use.remove(&(session.last_used, *client));
            session.last_used = clock;
            self.by_use.insert((clock, *client));
        }
    }

    /// Evicts the least recently used session other than `keep`; returns
    /// whether there was one.
    fn evict_least_recent(&mut self, keep: Option<&PublicKey>) -> bool {
        let victim = self
            .by_use
            .iter()
            .map(|(_, key)| *key)
            .find(|key| Some(key) != keep);
        match victim {
            Some(key) => {
                self.evict(&key);
                true
            }
            None => false,
        }
    }

    fn evict(&mut self, key: &PublicKey) {
        if let Some(session) = self.sessions.remove(key) {
            self.by_use.remove(&(session.last_used, *key));
            self.lanes -= session.lanes.len();
            self.floor = self.floor.max(session.highest_number());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    fn key(seed: u8) -> PublicKey {
        SecretKey::from_seed([seed; 32]).public()
    }

    fn limits(max_sessions: usize) -> SessionLimits {
        SessionLimits {
            max_sessions,
            ..SessionLimits::default()
        }
    }

    #[test]
    fn a_request_is_executed_once_and_answered_again_from_the_cache() {
        let mut table = ClientTable::new();
        let limits = limits(4);
        assert_eq!(table.admit(&key(1), 0, 5, 100, &limits), Admission::Execute);
        assert_eq!(
            table.admit(&key(1), 0, 5, 100, &limits),
            Admission::Again(None)
        );
        table.lane_mut(&key(1), 0).unwrap().reply = Some(vec![7]);
        assert_eq!(
            table.admit(&key(1), 0, 5, 100, &limits),
            Admission::Again(Some(vec![7]))
        );
        assert_eq!(table.admit(&key(1), 0, 4, 100, &limits), Admission::Old);
        assert_eq!(table.admit(&key(1), 0, 6, 100, &limits), Admission::Execute);
    }

    #[test]
    fn the_least_recently_used_session_is_evicted_and_its_requests_never_run_again() {
        let mut table = ClientTable::new();
        let limits = limits(2);
        assert_eq!(
            table.admit(&key(1), 0, 10, 100, &limits),
            Admission::Execute
        );
        assert_eq!(
            table.admit(&key(2), 0, 20, 200, &limits),
            Admission::Execute
        );
        // Key 1 used again, so key 2 is now the least recently used.
        assert_eq!(
            table.admit(&key(1), 0, 11, 300, &limits),
            Admission::Execute
        );
        assert_eq!(
            table.admit(&key(3), 0, 30, 400, &limits),
            Admission::Execute
        );
        assert_eq!(table.sessions(), 2);
        assert!(table.session(&key(2)).is_none());
        assert_eq!(table.floor(), 20);
        // Key 2's request, retransmitted or replayed: refused, not executed.
        assert_eq!(
            table.admit(&key(2), 0, 20, 500, &limits),
            Admission::Expired { floor: 20 }
        );
        assert!(table.settled(&key(2), 0, 20));
        // Above the floor, key 2 starts a new session (evicting key 1).
        assert_eq!(
            table.admit(&key(2), 0, 21, 600, &limits),
            Admission::Execute
        );
        assert!(table.session(&key(1)).is_none());
        assert_eq!(table.floor(), 20);
    }

    #[test]
    fn a_new_lane_of_a_new_session_must_start_above_the_floor_it_began_with() {
        let mut table = ClientTable::new();
        let limits = limits(1);
        // Key 1 ran lane 0 up to 10 and lane 1 up to 50, then was evicted.
        table.admit(&key(1), 0, 10, 1, &limits);
        table.admit(&key(1), 1, 50, 1, &limits);
        table.admit(&key(2), 0, 100, 2, &limits);
        assert_eq!(table.floor(), 50);
        // Key 1 comes back on lane 0 above the floor...
        assert_eq!(table.admit(&key(1), 0, 51, 3, &limits), Admission::Execute);
        // ...and its old lane-1 request, replayed, must not run again.
        assert_eq!(
            table.admit(&key(1), 1, 50, 3, &limits),
            Admission::Expired { floor: 50 }
        );
        assert_eq!(table.admit(&key(1), 1, 52, 3, &limits), Admission::Execute);
    }

    #[test]
    fn idle_sessions_expire_on_the_agreed_clock() {
        let mut table = ClientTable::new();
        let limits = SessionLimits {
            idle: Duration::from_nanos(1_000),
            ..SessionLimits::default()
        };
        table.admit(&key(1), 0, 10, 100, &limits);
        table.admit(&key(2), 0, 20, 900, &limits);
        table.expire_idle(1_100, &limits);
        assert_eq!(table.sessions(), 2, "exactly the idle time is not past it");
        table.expire_idle(1_101, &limits);
        assert!(table.session(&key(1)).is_none());
        assert!(table.session(&key(2)).is_some());
        assert_eq!(table.floor(), 10);
    }

    #[test]
    fn lanes_and_numbers_are_bounded() {
        let mut table = ClientTable::new();
        let limits = SessionLimits {
            max_lanes_per_session: 2,
            max_lanes: 3,
            max_number_ahead: Duration::from_nanos(1_000),
            ..SessionLimits::default()
        };
        assert_eq!(
            table.admit(&key(1), 0, 2_001, 1_000, &limits),
            Admission::Ahead { limit: 2_000 }
        );
        assert_eq!(table.sessions(), 0, "a refused request starts no session");
        table.admit(&key(1), 0, 1, 1_000, &limits);
        table.admit(&key(1), 1, 1, 1_000, &limits);
        assert_eq!(
            table.admit(&key(1), 2, 1, 1_000, &limits),
            Admission::TooManyLanes { limit: 2 }
        );
        table.admit(&key(2), 0, 5, 1_001, &limits);
        // A fourth lane record evicts the least recently used session.
        table.admit(&key(2), 1, 5, 1_002, &limits);
        assert_eq!(table.lanes(), 2);
        assert!(table.session(&key(1)).is_none());
    }

    /// A request refused for its lane count is told it was not executed;
    /// it must not execute later either. Schedule: key 1 uses its one
    /// lane, its request on a second lane is refused, key 1's session is
    /// evicted, and the refused request is ordered again (a client's late
    /// retransmission, or a faulty primary replaying its signed batch).
    #[test]
    fn a_request_refused_for_its_lane_count_never_executes_later() {
        let mut table = ClientTable::new();
        let limits = SessionLimits {
            max_sessions: 1,
            max_lanes_per_session: 1,
            ..SessionLimits::default()
        };
        assert_eq!(table.admit(&key(1), 0, 10, 1, &limits), Admission::Execute);
        assert_eq!(
            table.admit(&key(1), 1, 20, 2, &limits),
            Admission::TooManyLanes { limit: 1 }
        );
        assert!(table.settled(&key(1), 1, 20), "never to be executed");
        // Key 2 takes the only session; key 1's is evicted.
        assert_eq!(table.admit(&key(2), 0, 30, 4, &limits), Admission::Execute);
        assert!(table.session(&key(1)).is_none());
        assert_eq!(
            table.admit(&key(1), 1, 20, 5, &limits),
            Admission::Expired { floor: 20 }
        );
        assert!(table.settled(&key(1), 1, 20));
    }

    #[test]
    fn cached_replies_are_trimmed_to_their_bound_least_recent_first() {
        let mut table = ClientTable::new();
        let limits = SessionLimits {
            max_reply_bytes: 150,
            ..SessionLimits::default()
        };
        for (seed, clock) in [(1, 10), (2, 20), (3, 30)] {
            table.admit(&key(seed), 0, 1, clock, &limits);
            table.lane_mut(&key(seed), 0).unwrap().reply = Some(vec![0; 60]);
        }
        table.trim_replies(&limits);
        assert_eq!(table.reply_bytes(), 120);
        assert!(table.session(&key(1)).is_none());
    }

    #[test]
    fn the_encoding_round_trips_and_rebuilds_the_use_order() {
        let mut table = ClientTable::new();
        let limits = limits(2);
        table.admit(&key(1), 0, 10, 300, &limits);
        table.admit(&key(2), 0, 20, 200, &limits);
        let bytes = cbase_core::codec::encode(&table).unwrap();
        let mut decoded: ClientTable = cbase_core::codec::decode(&bytes).unwrap();
        assert_eq!(decoded, table);
        assert_eq!(decoded.lanes(), 2);
        decoded.admit(&key(3), 0, 30, 400, &limits);
        assert!(
            decoded.session(&key(2)).is_none(),
            "key 2 was least recently used"
        );
    }
}

//! The simulated network: a link model per directed pair of replica
//! instances, changed every round (a slice of simulated time) until the
//! heal time, reliable and timely (or just slow) after it.
//!
//! Per round, a link can be cut by a partition of the instances into sides
//! (any sets of replicas, not only the primary), cut one way only, or be
//! slow in one direction (delays above the request and view-change
//! timeouts). Every message may also be lost, duplicated, delayed within
//! the round's normal range or, with some probability, far above it.
//! Whatever its round, a message whose encoding is larger than the frame
//! limit is dropped, as the real transport does.

use std::collections::BTreeSet;

use cbase_core::codec;
use cbase_net::config::ReplicaId;
use cbase_net::message::{ClientBatch, ReplicaMessage};
use rand::Rng;
use rand::rngs::StdRng;

use crate::scenarios::NetSpec;

/// The network during one round.
#[derive(Clone, Debug, Default)]
pub struct Round {
    /// The side of the partition each instance is on (all 0: no partition).
    pub side: Vec<u8>,
    /// Directed links (from instance, to instance) that lose everything.
    pub cut: BTreeSet<(usize, usize)>,
    /// Directed links whose messages are delayed above the timeouts.
    pub slow: BTreeSet<(usize, usize)>,
}

impl Round {
    fn connected(instances: usize) -> Round {
        Round {
            side: vec![0; instances],
            ..Round::default()
        }
    }

    /// A short description, for failure reports.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.side.iter().any(|s| *s != 0) {
            parts.push(format!("sides {:?}", self.side));
        }
        if !self.cut.is_empty() {
            parts.push(format!("cut {:?}", self.cut));
        }
        if !self.slow.is_empty() {
            parts.push(format!("slow {:?}", self.slow));
        }
        if parts.is_empty() {
            "connected".into()
        } else {
            parts.join(", ")
        }
    }
}

pub struct Network {
    pub spec: NetSpec,
    pub rounds: Vec<Round>,
    pub heal: u64,
    /// The replica id of every instance.
    ids: Vec<ReplicaId>,
}

impl Network {
    /// Draws every round's links from `rng`. `sides`, if given, fixes the
    /// partition of each round (the Twins schedule); otherwise partitions
    /// are drawn at random with the spec's probability.
    pub fn plan(
        spec: NetSpec,
        ids: Vec<ReplicaId>,
        heal: u64,
        sides: Option<Vec<Vec<u8>>>,
        rng: &mut StdRng,
    ) -> Network {
        let instances = ids.len();
        let count = heal.div_ceil(spec.round) as usize;
        let rounds = (0..count)
            .map(|r| {
                let mut round = Round::connected(instances);
                match &sides {
                    Some(sides) => round.side = sides[r].clone(),
                    None => {
                        if rng.gen_bool(spec.partition) {
                            let blocks = rng.gen_range(2..=3u8);
                            round.side = (0..instances).map(|_| rng.gen_range(0..blocks)).collect();
                        }
                    }
                }
                if rng.gen_bool(spec.cuts) {
                    for _ in 0..rng.gen_range(1..=instances) {
                        let (a, b) = (rng.gen_range(0..instances), rng.gen_range(0..instances));
                        if ids[a] != ids[b] {
                            round.cut.insert((a, b));
                        }
                    }
                }
                if rng.gen_bool(spec.slow_links) {
                    for _ in 0..rng.gen_range(1..=instances) {
                        let (a, b) = (rng.gen_range(0..instances), rng.gen_range(0..instances));
                        if ids[a] != ids[b] {
                            round.slow.insert((a, b));
                        }
                    }
                }
                round
            })
            .collect();
        Network {
            spec,
            rounds,
            heal,
            ids,
        }
    }

    fn round(&self, now: u64) -> Option<&Round> {
        if now >= self.heal {
            return None;
        }
        self.rounds.get((now / self.spec.round) as usize)
    }

    /// The delays of the copies of a message from instance `from` to
    /// instance `to` of `size` encoded bytes sent at `now`; empty if lost.
    pub fn replica_link(
        &self,
        now: u64,
        from: usize,
        to: usize,
        size: usize,
        rng: &mut StdRng,
    ) -> Vec<u64> {
        if size > self.spec.frame_limit {
            return Vec::new();
        }
        if let Some((group, start, end)) = &self.spec.fixed_partition {
            let inside = |i: usize| group.contains(&self.ids[i]);
            if now >= *start && now < *end && inside(from) != inside(to) {
                return Vec::new();
            }
        }
        let Some(round) = self.round(now) else {
            return vec![rng.gen_range(self.spec.stable_delay.0..=self.spec.stable_delay.1)];
        };
        if round.side[from] != round.side[to] || round.cut.contains(&(from, to)) {
            return Vec::new();
        }
        let slow = round.slow.contains(&(from, to));
        self.faulty_link(slow, rng)
    }

    /// Whether the outage loses `message` to replica `to`: backups suspect
    /// their primary, and then every view change fails for want of votes
    /// at the new primary, one after the other while the outage lasts.
    pub fn outage_loses(&self, now: u64, to: ReplicaId, message: &ReplicaMessage) -> bool {
        if !self
            .spec
            .outage
            .is_some_and(|(start, end)| now >= start && now < end)
        {
            return false;
        }
        let n = self.ids.iter().max().map_or(1, |max| *max as u64 + 1);
        match message {
            ReplicaMessage::PrePrepare(_) | ReplicaMessage::NewView(_) => true,
            ReplicaMessage::ViewChange(vote) => vote.body.new_view % n == to as u64,
            _ => false,
        }
    }

    /// The same for a message between a client and a replica instance
    /// (clients are never partitioned, but share the round's losses and
    /// delays).
    pub fn client_link(&self, now: u64, size: usize, rng: &mut StdRng) -> Vec<u64> {
        if size > self.spec.frame_limit {
            return Vec::new();
        }
        if self.round(now).is_none() {
            return vec![rng.gen_range(self.spec.stable_delay.0..=self.spec.stable_delay.1)];
        }
        self.faulty_link(false, rng)
    }

    fn faulty_link(&self, slow: bool, rng: &mut StdRng) -> Vec<u64> {
        let spec = &self.spec;
        if rng.gen_bool(spec.drop) {
            return Vec::new();
        }
        let copies = if rng.gen_bool(spec.duplicate) { 2 } else { 1 };
        (0..copies)
            .map(|_| {
                if slow || rng.gen_bool(spec.long_delay) {
                    rng.gen_range(spec.long_range.0..=spec.long_range.1)
                } else {
                    rng.gen_range(spec.delay.0..=spec.delay.1)
                }
            })
            .collect()
    }
}

/// Bytes of framing the transport adds around an encoded message.
const FRAME_OVERHEAD: usize = 32;

/// The size of the frame carrying `message`. Messages that carry no client
/// payload are small, so only the others are encoded to be measured.
pub fn frame_size(message: &ReplicaMessage) -> usize {
    match message {
        ReplicaMessage::Prepare(_)
        | ReplicaMessage::Commit(_)
        | ReplicaMessage::Checkpoint(_)
        | ReplicaMessage::Status(_)
        | ReplicaMessage::StateRequest { .. } => 256,
        other => codec::encode(other).map_or(usize::MAX, |b| b.len()) + FRAME_OVERHEAD,
    }
}

/// The size of the frame carrying a client's batch.
pub fn batch_frame_size(batch: &ClientBatch) -> usize {
    codec::encode(batch).map_or(usize::MAX, |b| b.len()) + FRAME_OVERHEAD
}

//! Twins (Bano et al., "Twins: BFT Systems Made Robust"): a Byzantine
//! replica is run as two instances of the correct `Replica` with the same id
//! and keys. Put in different partitions, each twin follows the protocol
//! with what its side tells it, so equivocation (two proposals, two votes
//! for one slot) comes out of correct code rather than a hand-written attack.
//!
//! The schedule is systematic: simulated time until the heal is cut into
//! rounds, and every round gets one partition of the instances from a fixed
//! list of candidates (see [`candidates`]). Leaders are not chosen: the
//! protocol's own rotation decides who is primary when. A schedule is a
//! number in base P (P candidates) with one digit per round; seed `s` runs
//! schedule `mix(s) mod P^rounds`, a scrambled but deterministic walk
//! through the space, or with `TWINS_ENUMERATE=1` schedule `s` itself, so
//! seeds 0, 1, 2, ... enumerate the schedules in order (round 0's partition
//! changing fastest).

use cbase_net::config::ReplicaId;

/// The instances of a cluster with twins: one per replica id, then a
/// second instance of every twinned id.
pub fn instance_ids(n: usize, twinned: &[ReplicaId]) -> Vec<ReplicaId> {
    (0..n as ReplicaId).chain(twinned.iter().copied()).collect()
}

/// Every partition of the instances into at most `max_sides` non-empty
/// sides that separates the two instances of each twinned id, preceded by
/// the partition with everyone together. As sides: the side of each instance,
/// in canonical form (restricted growth: instance 0 is on side 0, and each
/// instance is on a side already used or the next new one), so no partition
/// appears twice.
pub fn candidates(ids: &[ReplicaId], max_sides: u8) -> Vec<Vec<u8>> {
    let instances = ids.len();
    let mut found = vec![vec![0; instances]];
    let mut sides = vec![0u8; instances];
    fn walk(
        index: usize,
        used: u8,
        max_sides: u8,
        ids: &[ReplicaId],
        sides: &mut Vec<u8>,
        found: &mut Vec<Vec<u8>>,
    ) {
        if index == ids.len() {
            let split = (0..ids.len())
                .all(|a| (a + 1..ids.len()).all(|b| ids[a] != ids[b] || sides[a] != sides[b]));
            if used > 1 && split {
                found.push(sides.clone());
            }
            return;
        }
        for side in 0..(used + 1).min(max_sides) {
            sides[index] = side;
            walk(index + 1, used.max(side + 1), max_sides, ids, sides, found);
        }
    }
    walk(1, 1, max_sides, ids, &mut sides, &mut found);
    found
}

/// A bijective scramble of 64-bit numbers (splitmix64's finalizer).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The index into the candidates of every round's partition for `seed`.
pub fn schedule(seed: u64, candidates: usize, rounds: usize, enumerate: bool) -> Vec<usize> {
    let base = candidates as u128;
    let mut number = if enumerate {
        seed as u128
    } else {
        mix(seed) as u128
    };
    let mut refill = 0u64;
    (0..rounds)
        .map(|_| {
            if number == 0 && !enumerate {
                // 64 bits of schedule used up: more from the same seed.
                refill += 1;
                number = mix(seed ^ mix(refill)) as u128;
            }
            let digit = (number % base) as usize;
            number /= base;
            digit
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_split_every_twin_and_are_distinct() {
        let ids = instance_ids(4, &[0]);
        let all = candidates(&ids, 2);
        // Together, or two sides: twin 0 on one, twin 0' on the other, and
        // each of replicas 1..3 on either.
        assert_eq!(all.len(), 1 + 8);
        let unique: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
        for sides in &all[1..] {
            assert_ne!(sides[0], sides[4]);
        }
    }

    #[test]
    fn enumeration_walks_every_schedule_once() {
        let seen: std::collections::BTreeSet<Vec<usize>> =
            (0..27).map(|s| schedule(s, 3, 3, true)).collect();
        assert_eq!(seen.len(), 27);
    }
}

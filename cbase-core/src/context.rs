//! Agreed, deterministic inputs for one request.
//!
//! Replicated code must not read the wall clock or an OS random source: each
//! replica would see something different and their states would diverge. A
//! method that needs time or randomness takes `ctx: &Context` instead. The
//! timestamp is the one the primary proposed for the batch (agreed by every
//! replica) and the random streams are derived from an agreed seed, so every
//! correct replica sees the same values.

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Who sent a request ([`Context::client`]): the 32 bytes of the ed25519
/// public key that signed it. Ordered and serializable, so a table can be
/// keyed by it or store it (an account's owner). Prints as its first 16 hex
/// digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId(pub [u8; 32]);

impl ClientId {
    /// The caller of requests run in process, with no client behind them
    /// (all zeros, which no ed25519 key pair has as its public key).
    pub const LOCAL: ClientId = ClientId([0; 32]);

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({self})")
    }
}

/// Per-request agreed inputs: a timestamp and a seeded random source.
#[derive(Clone, Debug)]
pub struct Context {
    timestamp_nanos: u64,
    seed: [u8; 32],
    client: ClientId,
    // How many random streams this request has drawn, so each `rng()` call
    // gives a fresh stream yet the sequence of calls is the same everywhere.
    streams_drawn: Cell<u64>,
}

impl Context {
    /// A context with the agreed timestamp (nanoseconds since the Unix epoch)
    /// and the agreed per-request seed.
    pub fn new(timestamp_nanos: u64, seed: [u8; 32]) -> Context {
        Context {
            timestamp_nanos,
            seed,
            client: ClientId::LOCAL,
            streams_drawn: Cell::new(0),
        }
    }

    /// This context, for a request from `client`.
    pub fn with_client(mut self, client: ClientId) -> Context {
        self.client = client;
        self
    }

    /// Who sent the request: the public key of the client that signed it,
    /// authenticated and the same on every replica, so a service may decide
    /// by it (an account's owner, an admin). [`ClientId::LOCAL`] for a
    /// request run in process (`LocalInvoker`, unless the test set a
    /// caller with `set_client`).
    pub fn client(&self) -> ClientId {
        self.client
    }

    /// The agreed timestamp, in nanoseconds since the Unix epoch.
    pub fn timestamp_nanos(&self) -> u64 {
        self.timestamp_nanos
    }

    /// The agreed timestamp as a [`SystemTime`].
    pub fn timestamp(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(self.timestamp_nanos)
    }

    /// The agreed seed of this request.
    pub fn seed(&self) -> [u8; 32] {
        self.seed
    }

    /// A new deterministic random stream. Successive calls return different
    /// streams, in the same order on every replica.
    pub fn rng(&self) -> DeterministicRng {
        let stream = self.streams_drawn.get();
        self.streams_drawn.set(stream + 1);
        let mut hasher = blake3::Hasher::new_keyed(&self.seed);
        hasher.update(b"cbase context rng");
        hasher.update(&stream.to_le_bytes());
        DeterministicRng::from_seed(*hasher.finalize().as_bytes())
    }
}

/// A small, fast, deterministic pseudo-random generator (xoshiro256++).
///
/// Not for cryptography: it exists so replicated code gets the same "random"
/// numbers on every replica.
#[derive(Clone, Debug)]
pub struct DeterministicRng {
    state: [u64; 4],
}

impl DeterministicRng {
    /// A generator seeded with 32 bytes.
    pub fn from_seed(seed: [u8; 32]) -> DeterministicRng {
        let mut state = [0u64; 4];
        for (word, chunk) in state.iter_mut().zip(seed.chunks_exact(8)) {
            *word = u64::from_le_bytes(chunk.try_into().expect("chunks of eight bytes"));
        }
        if state == [0; 4] {
            // The all-zero state is a fixed point of xoshiro; any other is fine.
            state = [
                0x9e37_79b9_7f4a_7c15,
                0xbf58_476d_1ce4_e5b9,
                0x94d0_49bb_1331_11eb,
                1,
            ];
        }
        DeterministicRng { state }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = self.state;
        let result = s0.wrapping_add(s3).rotate_left(23).wrapping_add(s0);
        let t = s1 << 17;
        let mut s = [s0, s1, s2 ^ s0, s3 ^ s1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        self.state = s;
        result
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A uniform value in `range` (half-open), without modulo bias.
    ///
    /// # Panics
    /// If the range is empty.
    pub fn gen_range(&mut self, range: std::ops::Range<u64>) -> u64 {
        assert!(range.start < range.end, "gen_range needs a non-empty range");
        let span = range.end - range.start;
        // Lemire's multiply-and-reject method.
        let threshold = span.wrapping_neg() % span;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(span);
            if (product as u64) >= threshold {
                return range.start + (product >> 64) as u64;
            }
        }
    }

    /// Fills `bytes` with random bytes.
    pub fn fill_bytes(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    /// Shuffles `items` uniformly (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.gen_range(0..i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_and_streams_differ() {
        let a = Context::new(5, [7; 32]);
        let b = Context::new(5, [7; 32]);
        let (mut a1, mut b1) = (a.rng(), b.rng());
        let (mut a2, mut b2) = (a.rng(), b.rng());
        let first: Vec<u64> = (0..4).map(|_| a1.next_u64()).collect();
        assert_eq!(first, (0..4).map(|_| b1.next_u64()).collect::<Vec<_>>());
        let second: Vec<u64> = (0..4).map(|_| a2.next_u64()).collect();
        assert_eq!(second, (0..4).map(|_| b2.next_u64()).collect::<Vec<_>>());
        assert_ne!(first, second);
        assert_eq!(
            a.timestamp(),
            SystemTime::UNIX_EPOCH + Duration::from_nanos(5)
        );
    }

    #[test]
    fn gen_range_stays_in_range_and_covers_it() {
        let mut rng = DeterministicRng::from_seed([1; 32]);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let x = rng.gen_range(10..20);
            assert!((10..20).contains(&x));
            seen[(x - 10) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn zero_seed_still_produces_output() {
        let mut rng = DeterministicRng::from_seed([0; 32]);
        assert_ne!(rng.next_u64(), rng.next_u64());
    }
}

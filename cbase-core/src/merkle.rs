//! Incremental digests of a container's contents: a Merkle tree over key hashes.
//!
//! Every container is, for digests, a set of entries: an encoded key and an
//! encoded value. An entry's digest binds both. Entries fall into one of
//! 65,536 *buckets* by the top 16 bits of their key's [`ValueHash`], and the
//! buckets are the leaves of a 16-ary tree of depth 4:
//!
//! ```text
//! root ── 16 shards ── 16 nodes each ── 16 nodes each ── 16 buckets each
//! ```
//!
//! A bucket's digest covers its entry digests in sorted order; a node's
//! covers its 16 children. So the root depends only on the *set* of entries,
//! never on the order in which they were written or on which thread wrote
//! them: equal contents have equal roots on every replica.
//!
//! A write changes one entry digest in one bucket; the tree rehashes that
//! bucket at once (a few dozen bytes) and marks the node above it. When the
//! root is asked for, only marked nodes and their ancestors are hashed: at
//! most 4,369 node hashes, whatever changed, and none if nothing did. So a
//! checkpoint costs what changed since the last one, never O(state). The
//! shards are locked separately, so requests committing on different keys
//! rarely meet.
//! The same tree is built from scratch from a snapshot's entries
//! ([`DigestTree::from_entries`]), which is how a transferred state is checked
//! before it is installed; a property test holds the two ways to the same root.
//!
//! [`ValueHash`]: crate::ValueHash

use std::collections::BTreeMap;
use std::sync::OnceLock;

use parking_lot::Mutex;

/// A 32-byte blake3 digest.
pub type Hash = [u8; 32];

/// Children per node.
const FANOUT: usize = 16;
/// Buckets per shard: three levels of 16 below each shard node.
const BUCKETS_PER_SHARD: usize = FANOUT * FANOUT * FANOUT;
/// Buckets in all (2^16).
pub const BUCKETS: usize = FANOUT * BUCKETS_PER_SHARD;

/// The bucket of an entry whose key has value hash `key_hash`
/// ([`ValueHash::of`](crate::ValueHash::of) of the key).
pub fn bucket_of(key_hash: u64) -> u16 {
    (key_hash >> 48) as u16
}

/// The value hash of an already encoded key: the same number as
/// [`ValueHash::of`](crate::ValueHash::of) gives for the key itself.
pub fn key_hash(key: &[u8]) -> u64 {
    let digest = blake3::hash(key);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// The digest of one entry: its encoded key and encoded value.
pub fn entry_digest(key: &[u8], value: &[u8]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cbase/entry/v1");
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key);
    hasher.update(value);
    *hasher.finalize().as_bytes()
}

fn leaf_digest(entries: &[Hash]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cbase/bucket/v1");
    hasher.update(&(entries.len() as u64).to_le_bytes());
    for entry in entries {
        hasher.update(entry);
    }
    *hasher.finalize().as_bytes()
}

fn node_digest(children: &[Hash]) -> Hash {
    debug_assert_eq!(children.len(), FANOUT);
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cbase/node/v1");
    for child in children {
        hasher.update(child);
    }
    *hasher.finalize().as_bytes()
}

/// The digest of an empty subtree whose top is `height` levels above the
/// buckets (0: an empty bucket).
fn empty(height: usize) -> Hash {
    static EMPTY: OnceLock<[Hash; 5]> = OnceLock::new();
    EMPTY.get_or_init(|| {
        let mut levels = [leaf_digest(&[]); 5];
        for h in 1..5 {
            levels[h] = node_digest(&[levels[h - 1]; FANOUT]);
        }
        levels
    })[height]
}

/// Low nodes (just above the buckets) per shard.
const LOW_PER_SHARD: usize = FANOUT * FANOUT;

/// The digests of empty subtrees `height` levels above the buckets, as many
/// as a shard has at that level (buckets, low nodes, high nodes), as a fresh
/// vector. Copied from one kept filled, rather than cloned one by one:
/// every tree starts with 16 × 256 of them and a shard's buckets are 4,096,
/// and unoptimized builds (the tests) clone element by element.
fn empties(height: usize) -> Vec<Hash> {
    static FILLED: OnceLock<[Vec<Hash>; 3]> = OnceLock::new();
    let filled = FILLED.get_or_init(|| {
        [
            vec![empty(0); BUCKETS_PER_SHARD],
            vec![empty(1); LOW_PER_SHARD],
            vec![empty(2); FANOUT],
        ]
    });
    filled[height].clone()
}

/// A sixteenth of the tree: the buckets under one child of the root.
///
/// A bucket's digest is recomputed as soon as its entries change (that costs
/// the bucket's size, a few dozen bytes of hashing), so folding at a
/// checkpoint only hashes the nodes above changed buckets: at most 256 + 16 + 1
/// per shard, however many entries changed. A tree built whole
/// ([`DigestTree::from_entries`]) only marks its buckets and hashes each once
/// at the first fold, not a bucket's worth per entry inserted.
#[derive(Clone, Debug)]
struct Shard {
    /// The entry digests of each non-empty bucket, sorted (a multiset: equal
    /// digests would mean equal entries, which a container never holds twice).
    buckets: BTreeMap<u16, Vec<Hash>>,
    /// Every bucket's digest as of the last fold; allocated when the shard
    /// gets its first entry.
    leaves: Vec<Hash>,
    /// Buckets changed since the last fold, one bit each.
    stale: [u64; BUCKETS_PER_SHARD / 64],
    /// Low nodes with a bucket changed since the last fold, one bit each.
    dirty: [u64; LOW_PER_SHARD / 64],
    /// Digests of the 16 × 16 nodes just above the buckets.
    low: Vec<Hash>,
    /// Digests of the 16 nodes below the shard node.
    high: Vec<Hash>,
    /// The shard node's digest.
    top: Hash,
    /// Entries in this shard.
    len: u64,
}

impl Default for Shard {
    fn default() -> Shard {
        Shard {
            buckets: BTreeMap::new(),
            leaves: Vec::new(),
            stale: [0; BUCKETS_PER_SHARD / 64],
            dirty: [0; LOW_PER_SHARD / 64],
            low: empties(1),
            high: empties(2),
            top: empty(3),
            len: 0,
        }
    }
}

impl Shard {
    /// Inserts without hashing the bucket yet: it is marked stale and hashed
    /// at the next fold.
    fn insert_unhashed(&mut self, bucket: u16, entry: Hash) {
        let entries = self.buckets.entry(bucket).or_default();
        if entries.len() == entries.capacity() {
            // Grow by an eighth, not double: the tree keeps a digest per
            // entry of the state, and doubling would leave a third of that
            // unused on average.
            entries.reserve_exact((entries.len() / 8).max(2));
        }
        let at = entries.partition_point(|e| *e < entry);
        entries.insert(at, entry);
        self.len += 1;
        self.mark(bucket);
    }

    /// Adds the sorted entry digests of a bucket that holds none yet, for a
    /// tree being built whole; hashed at the next fold like
    /// [`insert_unhashed`](Self::insert_unhashed).
    fn fill(&mut self, bucket: u16, entries: Vec<Hash>) {
        debug_assert!(entries.is_sorted());
        self.len += entries.len() as u64;
        let old = self.buckets.insert(bucket, entries);
        debug_assert!(old.is_none(), "each bucket is filled once");
        self.mark(bucket);
    }

    /// Removes one copy of `entry`, leaving the bucket's digest for the
    /// caller to recompute ([`touch`](Self::touch)); false if the bucket
    /// does not hold it.
    fn remove(&mut self, bucket: u16, entry: &Hash) -> bool {
        let Some(entries) = self.buckets.get_mut(&bucket) else {
            return false;
        };
        let Ok(at) = entries.binary_search(entry) else {
            return false;
        };
        entries.remove(at);
        if entries.is_empty() {
            self.buckets.remove(&bucket);
        }
        self.len -= 1;
        true
    }

    /// Replaces one copy of `old` with `new` in place, moving it to keep
    /// the bucket sorted (one shift of the entries between the two places,
    /// rather than a removal and an insertion that each shift half the
    /// bucket); false if the bucket does not hold `old`. Leaves the
    /// bucket's digest for the caller to recompute, as
    /// [`remove`](Self::remove) does.
    fn swap(&mut self, bucket: u16, old: &Hash, new: Hash) -> bool {
        let Some(entries) = self.buckets.get_mut(&bucket) else {
            return false;
        };
        let Ok(at) = entries.binary_search(old) else {
            return false;
        };
        let to = entries.partition_point(|e| *e < new);
        if to > at {
            // `new` goes after the entries that sort below it, `old` gone.
            entries[at..to].rotate_left(1);
            entries[to - 1] = new;
        } else {
            entries[to..=at].rotate_right(1);
            entries[to] = new;
        }
        true
    }

    /// Recomputes a changed bucket's digest and marks the node above it.
    fn touch(&mut self, bucket: u16) {
        self.rehash(bucket);
        let at = bucket as usize;
        self.stale[at / 64] &= !(1 << (at % 64));
        let low = at / FANOUT;
        self.dirty[low / 64] |= 1 << (low % 64);
    }

    /// Marks a changed bucket stale and the node above it, for the next fold.
    fn mark(&mut self, bucket: u16) {
        let at = bucket as usize;
        self.stale[at / 64] |= 1 << (at % 64);
        let low = at / FANOUT;
        self.dirty[low / 64] |= 1 << (low % 64);
    }

    /// Recomputes one bucket's digest from its entries.
    fn rehash(&mut self, bucket: u16) {
        if self.leaves.is_empty() {
            self.leaves = empties(0);
        }
        self.leaves[bucket as usize] = match self.buckets.get(&bucket) {
            Some(entries) => leaf_digest(entries),
            None => empty(0),
        };
    }

    /// Recomputes the digests of the nodes above changed buckets; returns
    /// the shard's.
    fn fold(&mut self) -> Hash {
        if self.dirty.iter().all(|word| *word == 0) {
            return self.top;
        }
        let stale = std::mem::replace(&mut self.stale, [0; BUCKETS_PER_SHARD / 64]);
        for (word_at, mut word) in stale.into_iter().enumerate() {
            while word != 0 {
                self.rehash((word_at * 64) as u16 + word.trailing_zeros() as u16);
                word &= word - 1;
            }
        }
        let dirty = std::mem::take(&mut self.dirty);
        let mut high_dirty = 0u16;
        for low in (0..LOW_PER_SHARD).filter(|l| dirty[l / 64] & (1 << (l % 64)) != 0) {
            let first = low * FANOUT;
            self.low[low] = node_digest(&self.leaves[first..first + FANOUT]);
            high_dirty |= 1 << (low / FANOUT);
        }
        for high in (0..FANOUT).filter(|h| high_dirty & (1 << h) != 0) {
            let first = high * FANOUT;
            self.high[high] = node_digest(&self.low[first..first + FANOUT]);
        }
        self.top = node_digest(&self.high);
        self.top
    }
}

/// A Merkle tree over a container's entries, updated one entry at a time.
/// See the [module documentation](self).
#[derive(Debug)]
pub struct DigestTree {
    shards: Vec<Mutex<Shard>>,
}

impl Default for DigestTree {
    fn default() -> DigestTree {
        DigestTree {
            shards: (0..FANOUT).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }
}

/// The tree had to remove an entry digest it did not hold: the container and
/// its digest no longer describe the same contents (a bug, never input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the digest tree does not hold the entry being replaced in bucket {bucket}")]
pub struct MissingEntry {
    /// The bucket.
    pub bucket: u16,
}

impl DigestTree {
    /// An empty tree.
    pub fn new() -> DigestTree {
        DigestTree::default()
    }

    /// The tree of a set of entries, each given as (key hash, entry digest).
    ///
    /// Built in bulk: the entries are sorted by bucket once and each bucket
    /// filled to its exact size, rather than inserted one by one into
    /// growing sorted lists (a restart or a state transfer builds trees of
    /// millions of entries).
    pub fn from_entries(entries: impl IntoIterator<Item = (u64, Hash)>) -> DigestTree {
        let mut all: Vec<(u16, Hash)> = entries
            .into_iter()
            .map(|(key_hash, entry)| (bucket_of(key_hash), entry))
            .collect();
        all.sort_unstable();
        let mut tree = DigestTree::new();
        for run in all.chunk_by(|a, b| a.0 == b.0) {
            let bucket = run[0].0;
            let (shard, within) = (
                bucket as usize / BUCKETS_PER_SHARD,
                (bucket as usize % BUCKETS_PER_SHARD) as u16,
            );
            let digests: Vec<Hash> = run.iter().map(|(_, entry)| *entry).collect();
            tree.shards[shard].get_mut().fill(within, digests);
        }
        tree
    }

    /// Records that the entry of a key with hash `key_hash` changed from
    /// `old` to `new` (either may be absent). Costs O(log bucket).
    pub fn replace(
        &self,
        key_hash: u64,
        old: Option<Hash>,
        new: Option<Hash>,
    ) -> Result<(), MissingEntry> {
        if old == new {
            return Ok(());
        }
        let bucket = bucket_of(key_hash);
        let (shard, within) = (
            bucket as usize / BUCKETS_PER_SHARD,
            (bucket as usize % BUCKETS_PER_SHARD) as u16,
        );
        let mut shard = self.shards[shard].lock();
        match (old, new) {
            (Some(old), Some(new)) => {
                if !shard.swap(within, &old, new) {
                    return Err(MissingEntry { bucket });
                }
            }
            (Some(old), None) => {
                if !shard.remove(within, &old) {
                    return Err(MissingEntry { bucket });
                }
            }
            (None, Some(new)) => shard.insert_unhashed(within, new),
            (None, None) => {}
        }
        // Once for both halves of the change.
        shard.touch(within);
        Ok(())
    }

    /// The root: folds every change since the last call (O(changed buckets)).
    pub fn root(&self) -> Hash {
        let tops: Vec<Hash> = self.shards.iter().map(|s| s.lock().fold()).collect();
        node_digest(&tops)
    }

    /// The number of entries.
    pub fn len(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().len).sum()
    }

    /// Whether the tree has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties the tree.
    pub fn clear(&self) {
        for shard in &self.shards {
            *shard.lock() = Shard::default();
        }
    }

    /// Replaces this tree's contents with `other`'s.
    pub fn replace_with(&self, other: DigestTree) {
        for (mine, theirs) in self.shards.iter().zip(other.shards) {
            *mine.lock() = theirs.into_inner();
        }
    }
}

/// Levels of inner nodes, from the root (level 0) to the nodes just above
/// the buckets (level 3). A node at level `l` has an index below `16^l`; its
/// children are the nodes `16 * index .. 16 * index + 16` of level `l + 1`,
/// and below level 3 the children are buckets.
pub const NODE_LEVELS: u8 = 4;

/// A node of the tree, as a replica fetching a state names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Node {
    /// 0 (the root) to 3 (just above the buckets).
    pub level: u8,
    /// Its position within the level, below `16^level`.
    pub index: u32,
}

impl Node {
    /// The root.
    pub const ROOT: Node = Node { level: 0, index: 0 };

    /// Whether `level` and `index` name a node of the tree.
    pub fn is_valid(self) -> bool {
        self.level < NODE_LEVELS && u64::from(self.index) < (FANOUT as u64).pow(self.level.into())
    }

    /// Its `child`-th child, if that is a node (not a bucket).
    pub fn child(self, child: usize) -> Option<Node> {
        (self.level + 1 < NODE_LEVELS).then(|| Node {
            level: self.level + 1,
            index: self.index * FANOUT as u32 + child as u32,
        })
    }

    /// The bucket that is its `child`-th child, if its children are buckets.
    pub fn child_bucket(self, child: usize) -> Option<u16> {
        (self.level + 1 == NODE_LEVELS).then(|| (self.index as usize * FANOUT + child) as u16)
    }
}

/// Whether 16 child digests make up a node with digest `node`: how a fetched
/// part of a tree is checked against a digest already trusted.
pub fn children_match(node: &Hash, children: &[Hash]) -> bool {
    children.len() == FANOUT && node_digest(children) == *node
}

/// The digest of a bucket holding these entry digests (in any order).
pub fn bucket_digest(mut entries: Vec<Hash>) -> Hash {
    entries.sort_unstable();
    leaf_digest(&entries)
}

impl DigestTree {
    /// The 16 child digests of `node` (folding pending changes first), or
    /// `None` if `node` is not a node of the tree.
    pub fn children(&self, node: Node) -> Option<[Hash; FANOUT]> {
        if !node.is_valid() {
            return None;
        }
        let mut children = [empty(0); FANOUT];
        if node.level == 0 {
            for (child, shard) in children.iter_mut().zip(&self.shards) {
                *child = shard.lock().fold();
            }
            return Some(children);
        }
        // Below the root, a node lies within one shard.
        let per_shard = FANOUT.pow(u32::from(node.level) - 1);
        let (shard, within) = (
            node.index as usize / per_shard,
            node.index as usize % per_shard,
        );
        let mut shard = self.shards[shard].lock();
        shard.fold();
        let first = within * FANOUT;
        match node.level {
            1 => children.copy_from_slice(&shard.high),
            2 => children.copy_from_slice(&shard.low[first..first + FANOUT]),
            _ => {
                if !shard.leaves.is_empty() {
                    children.copy_from_slice(&shard.leaves[first..first + FANOUT]);
                }
            }
        }
        Some(children)
    }

    /// The entry digests in `bucket`, sorted.
    pub fn bucket_entries(&self, bucket: u16) -> Vec<Hash> {
        let (shard, within) = (
            bucket as usize / BUCKETS_PER_SHARD,
            (bucket as usize % BUCKETS_PER_SHARD) as u16,
        );
        self.shards[shard]
            .lock()
            .buckets
            .get(&within)
            .cloned()
            .unwrap_or_default()
    }
}

/// The root of a set of encoded entries, computed from scratch.
pub fn root_of<'a>(entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Hash {
    DigestTree::from_entries(
        entries
            .into_iter()
            .map(|(key, value)| (key_hash(key), entry_digest(key, value))),
    )
    .root()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn encoded(key: u32) -> Vec<u8> {
        crate::codec::encode(&key).unwrap()
    }

    #[test]
    fn key_hash_is_the_value_hash_of_the_key() {
        for key in [0u64, 7, 1 << 40] {
            let bytes = crate::codec::encode(&key).unwrap();
            assert_eq!(key_hash(&bytes), crate::ValueHash::of(&key).0);
        }
    }

    #[test]
    fn empty_trees_agree_and_differ_from_non_empty_ones() {
        let a = DigestTree::new();
        assert_eq!(a.root(), root_of(std::iter::empty()));
        a.replace(key_hash(b"k"), None, Some(entry_digest(b"k", b"v")))
            .unwrap();
        assert_ne!(a.root(), DigestTree::new().root());
        assert_eq!(a.len(), 1);
        a.replace(key_hash(b"k"), Some(entry_digest(b"k", b"v")), None)
            .unwrap();
        assert_eq!(a.root(), DigestTree::new().root());
        assert!(a.is_empty());
    }

    #[test]
    fn removing_what_is_not_there_is_reported() {
        let tree = DigestTree::new();
        let err = tree
            .replace(key_hash(b"k"), Some(entry_digest(b"k", b"v")), None)
            .unwrap_err();
        assert_eq!(err.bucket, bucket_of(key_hash(b"k")));
    }

    #[test]
    fn key_and_value_boundaries_are_bound() {
        assert_ne!(entry_digest(b"ab", b"c"), entry_digest(b"a", b"bc"));
    }

    #[test]
    fn children_chain_up_to_the_root() {
        let tree = DigestTree::new();
        let mut contents = Vec::new();
        for key in 0u32..300 {
            let (k, v) = (encoded(key), encoded(key * 7));
            tree.replace(key_hash(&k), None, Some(entry_digest(&k, &v)))
                .unwrap();
            contents.push((k, v));
        }
        let root = tree.root();
        assert!(children_match(&root, &tree.children(Node::ROOT).unwrap()));
        // Follow one key down to its bucket.
        let (k, v) = &contents[17];
        let bucket = bucket_of(key_hash(k));
        let mut node = Node::ROOT;
        let mut digest = root;
        for level in 0..NODE_LEVELS {
            let children = tree.children(node).unwrap();
            assert!(children_match(&digest, &children), "level {level}");
            let shift = 4 * (NODE_LEVELS - 1 - level);
            let child = (bucket as usize >> shift) % FANOUT;
            digest = children[child];
            match node.child(child) {
                Some(next) => node = next,
                None => assert_eq!(node.child_bucket(child), Some(bucket)),
            }
        }
        let entries = tree.bucket_entries(bucket);
        assert!(entries.contains(&entry_digest(k, v)));
        assert_eq!(bucket_digest(entries), digest);
        assert!(tree.children(Node { level: 4, index: 0 }).is_none());
        assert!(
            tree.children(Node {
                level: 1,
                index: 16
            })
            .is_none()
        );
        assert!(
            DigestTree::new()
                .children(Node {
                    level: 3,
                    index: 4095
                })
                .is_some()
        );
    }

    /// Sets (or, with `None`, removes) `key` in `contents` and tells `tree`.
    fn write(tree: &DigestTree, contents: &mut BTreeMap<u32, u32>, key: u32, value: Option<u32>) {
        let k = encoded(key);
        let old = contents.get(&key).map(|v| entry_digest(&k, &encoded(*v)));
        let new = value.map(|v| entry_digest(&k, &encoded(v)));
        tree.replace(key_hash(&k), old, new).unwrap();
        match value {
            Some(v) => contents.insert(key, v),
            None => contents.remove(&key),
        };
    }

    proptest! {
        /// Whatever order writes come in, the incremental root equals the
        /// root computed from scratch over the final contents.
        #[test]
        fn incremental_root_equals_the_root_of_the_contents(
            writes in proptest::collection::vec((0u32..200, proptest::option::of(0u32..5)), 0..300),
            fold_every in 1usize..50,
        ) {
            let tree = DigestTree::new();
            let mut contents: BTreeMap<u32, u32> = BTreeMap::new();
            for (i, (key, value)) in writes.iter().enumerate() {
                write(&tree, &mut contents, *key, *value);
                if i % fold_every == 0 {
                    tree.root();
                }
            }
            let pairs: Vec<(Vec<u8>, Vec<u8>)> =
                contents.iter().map(|(k, v)| (encoded(*k), encoded(*v))).collect();
            let scratch = root_of(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
            prop_assert_eq!(tree.root(), scratch);
            prop_assert_eq!(tree.len(), contents.len() as u64);
        }

        /// A tree built whole (its buckets hashed only at the first fold)
        /// and then written to entry by entry has the root and the bucket
        /// digests of one built from scratch over the final contents.
        #[test]
        fn a_tree_built_whole_then_changed_matches_one_built_from_scratch(
            initial in proptest::collection::btree_map(0u32..200, 0u32..5, 0..150),
            writes in proptest::collection::vec((0u32..200, proptest::option::of(0u32..5)), 0..100),
            fold_first in proptest::bool::ANY,
        ) {
            let mut contents = initial.clone();
            let tree = DigestTree::from_entries(initial.iter().map(|(k, v)| {
                let k = encoded(*k);
                (key_hash(&k), entry_digest(&k, &encoded(*v)))
            }));
            if fold_first {
                tree.root();
            }
            for (key, value) in &writes {
                write(&tree, &mut contents, *key, *value);
            }
            let pairs: Vec<(Vec<u8>, Vec<u8>)> =
                contents.iter().map(|(k, v)| (encoded(*k), encoded(*v))).collect();
            let scratch = DigestTree::from_entries(
                pairs.iter().map(|(k, v)| (key_hash(k), entry_digest(k, v))),
            );
            // The nodes just above every bucket written to, old or new.
            for key in initial.keys().chain(writes.iter().map(|(k, _)| k)) {
                let bucket = bucket_of(key_hash(&encoded(*key)));
                let node = Node { level: 3, index: u32::from(bucket) / FANOUT as u32 };
                prop_assert_eq!(tree.children(node), scratch.children(node));
            }
            prop_assert_eq!(tree.root(), scratch.root());
            prop_assert_eq!(tree.len(), contents.len() as u64);
        }

        /// Different contents have different roots.
        #[test]
        fn different_contents_have_different_roots(
            a in proptest::collection::btree_map(0u32..50, 0u32..3, 0..40),
            b in proptest::collection::btree_map(0u32..50, 0u32..3, 0..40),
        ) {
            let root = |m: &BTreeMap<u32, u32>| {
                let pairs: Vec<(Vec<u8>, Vec<u8>)> =
                    m.iter().map(|(k, v)| (encoded(*k), encoded(*v))).collect();
                root_of(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
            };
            prop_assert_eq!(root(&a) == root(&b), a == b);
        }
    }
}

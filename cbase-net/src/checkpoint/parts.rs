//! A checkpoint in parts, so a replica that fell behind fetches only what
//! differs from what it has.
//!
//! Every container's entries hang off a [digest tree](cbase_core::merkle):
//! 65,536 buckets under four levels of 16-ary nodes, whose root is part of
//! the checkpoint digest. A replica fetching checkpoint `seq` first gets its
//! [`Manifest`] (the containers' roots, the client table and the clock) and
//! checks it against the digest 2f+1 replicas signed. Then, per container
//! whose root differs from its own, it walks down the tree: it asks for a
//! node's 16 children ([`PartRequest::Node`]), checks them against the
//! node's digest, and descends only where a child differs from its own. At a
//! differing bucket it asks for the entries it lacks ([`PartRequest::Bucket`]):
//! it lists short digests of the entries it has there, and the peer answers
//! with which of those the bucket keeps and the entries it does not have.
//! The bucket is then rebuilt and checked against the bucket's digest. So
//! every part is checked against the certified root before it is used, and
//! a replica that missed 1% of the updates moves about 1% of the entries.
//!
//! Short digests are 8 bytes of a keyed hash of the entry digest, keyed by a
//! salt the asking replica picks: nobody can make two entries collide in
//! them without knowing the salt (a client could otherwise write two values
//! whose short digests match and make every transfer of that bucket fail).
//!
//! [`CheckpointIndex`] is a checkpoint arranged for this walk: its trees and
//! its keys by bucket. The serving replica builds one for the checkpoint it
//! serves; the fetching one for the checkpoint it already has.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cbase_core::merkle::{self, DigestTree, Node};
use cbase_core::{Digest, Entries, Snapshot};
use serde::{Deserialize, Serialize};

use super::{CheckpointState, ClientTable, checkpoint_digest};
use crate::message::Hash;

/// An entry as it travels: encoded key and encoded value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A bucket of one container: (container, bucket).
pub type BucketId = (u16, u16);

/// An entry held in a checkpoint: key, value and entry digest.
pub type EntryRef<'a> = (&'a [u8], &'a [u8], Hash);

/// What a checkpoint is, less its entries: each container's name and
/// digest-tree root, the client table and the agreed clock. Small, and
/// checked whole against the agreed digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Each container's name and root, in declaration order.
    pub roots: Vec<(String, Hash)>,
    /// The client table.
    pub clients: ClientTable,
    /// The agreed clock.
    pub clock: u64,
}

impl Manifest {
    /// The checkpoint digest this manifest stands for.
    pub fn digest(&self) -> Hash {
        let state = Digest::of_roots(self.roots.iter().map(|(name, root)| (name.as_str(), *root)));
        checkpoint_digest(&state, &self.clients, self.clock)
    }
}

/// One part of a checkpoint asked for; containers are numbered in the
/// manifest's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartRequest {
    /// The 16 child digests of a node.
    Node {
        /// The container.
        container: u16,
        /// The node's level (0 to 3).
        level: u8,
        /// The node's index within its level.
        index: u32,
    },
    /// A bucket's entries, less those the asker has: `have` lists the short
    /// digests ([`short_digest`]) of entries it holds in that bucket.
    Bucket {
        /// The container.
        container: u16,
        /// The bucket.
        bucket: u16,
        /// Short digests of entries the asker has.
        have: Vec<u64>,
    },
}

/// One part of a checkpoint, answering a [`PartRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartReply {
    /// A node's 16 child digests.
    Node {
        /// The container.
        container: u16,
        /// The node's level.
        level: u8,
        /// The node's index within its level.
        index: u32,
        /// The children's digests.
        children: Vec<Hash>,
    },
    /// A bucket's entries the asker lacks.
    Bucket {
        /// The container.
        container: u16,
        /// The bucket.
        bucket: u16,
        /// One bit per entry of `have`, in order (least significant bit
        /// first): set if the bucket holds that entry.
        #[serde(with = "cbase_core::codec::bytes")]
        keep: Vec<u8>,
        /// Entries of the bucket not in `have`, as encoded key and value.
        #[serde(with = "cbase_core::codec::bytes::pairs")]
        entries: Vec<Entry>,
        /// False if more entries did not fit in this reply: ask again,
        /// listing the ones received as had.
        complete: bool,
    },
    /// The bucket holds an entry too large for any reply: fetch the
    /// checkpoint whole instead.
    Oversized {
        /// The container.
        container: u16,
        /// The bucket.
        bucket: u16,
    },
}

/// Most short digests listed for one bucket. A bucket holds about
/// `entries / 65,536` entries; past this many, entries not listed are sent
/// again, and a bucket that is also cut over several replies is fetched
/// with the whole state instead.
pub const MAX_HAVE: usize = 4096;

/// Most parts asked for in one request.
pub const MAX_PARTS_PER_REQUEST: usize = 4096;

/// The short digest of an entry, keyed by `salt`.
pub fn short_digest(salt: &Hash, entry: &Hash) -> u64 {
    let hash = blake3::keyed_hash(salt, entry);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Bytes a reply's encoding adds per part and per entry, beyond the keys,
/// values and digests themselves (tags, lengths): an upper bound.
const PART_OVERHEAD: usize = 24;
const ENTRY_OVERHEAD: usize = 20;

/// A checkpoint arranged for transfer in parts: its state, each container's
/// digest tree, and each container's keys by bucket.
#[derive(Debug)]
pub struct CheckpointIndex {
    state: Arc<CheckpointState>,
    containers: Vec<IndexedContainer>,
}

#[derive(Debug)]
struct IndexedContainer {
    tree: DigestTree,
    /// The keys in each non-empty bucket, in key order.
    buckets: BTreeMap<u16, Vec<Vec<u8>>>,
}

impl IndexedContainer {
    fn build(entries: &Entries) -> IndexedContainer {
        let mut digests = Vec::with_capacity(entries.len());
        let mut buckets: BTreeMap<u16, Vec<Vec<u8>>> = BTreeMap::new();
        for (key, value) in entries {
            let key_hash = merkle::key_hash(key);
            digests.push((key_hash, merkle::entry_digest(key, value)));
            buckets
                .entry(merkle::bucket_of(key_hash))
                .or_default()
                .push(key.clone());
        }
        let tree = DigestTree::from_entries(digests);
        tree.root();
        IndexedContainer { tree, buckets }
    }
}

impl CheckpointIndex {
    /// Indexes `state`: hashes every entry once (O(state)).
    pub fn build(state: Arc<CheckpointState>) -> CheckpointIndex {
        let containers = state
            .snapshot
            .parts()
            .iter()
            .map(|(_, entries)| IndexedContainer::build(entries))
            .collect();
        CheckpointIndex { state, containers }
    }

    /// The state indexed.
    pub fn state(&self) -> &Arc<CheckpointState> {
        &self.state
    }

    /// The checkpoint's manifest.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            roots: self
                .state
                .snapshot
                .parts()
                .iter()
                .zip(&self.containers)
                .map(|((name, _), container)| (name.clone(), container.tree.root()))
                .collect(),
            clients: self.state.clients.clone(),
            clock: self.state.clock,
        }
    }

    /// The number of the container called `name`.
    pub fn container_named(&self, name: &str) -> Option<usize> {
        self.state
            .snapshot
            .parts()
            .iter()
            .position(|(n, _)| n == name)
    }

    /// The root of container `container`.
    pub fn root(&self, container: usize) -> Hash {
        self.containers[container].tree.root()
    }

    /// The 16 child digests of `node` in container `container`.
    pub fn children(&self, container: usize, node: Node) -> Option<[Hash; 16]> {
        self.containers.get(container)?.tree.children(node)
    }

    /// The entries of `bucket` in container `container`: key, value and
    /// entry digest, in key order.
    pub fn bucket(&self, container: usize, bucket: u16) -> Vec<EntryRef<'_>> {
        let (Some(indexed), Some((_, entries))) = (
            self.containers.get(container),
            self.state.snapshot.parts().get(container),
        ) else {
            return Vec::new();
        };
        indexed
            .buckets
            .get(&bucket)
            .into_iter()
            .flatten()
            .filter_map(|key| {
                let (key, value) = entries.get_key_value(key)?;
                Some((
                    key.as_slice(),
                    value.as_slice(),
                    merkle::entry_digest(key, value),
                ))
            })
            .collect()
    }

    /// Answers as many of `parts` as fit in `room` bytes, in order (at least
    /// part of the first). Parts that name nothing in this checkpoint are
    /// skipped: the asker is confused or lying, and gets nothing for them.
    pub fn answer(&self, salt: &Hash, parts: &[PartRequest], room: usize) -> Vec<PartReply> {
        let mut replies = Vec::new();
        let mut left = room;
        for part in parts.iter().take(MAX_PARTS_PER_REQUEST) {
            let first = replies.is_empty();
            match part {
                PartRequest::Node {
                    container,
                    level,
                    index,
                } => {
                    let node = Node {
                        level: *level,
                        index: *index,
                    };
                    let Some(children) = self.children(usize::from(*container), node) else {
                        continue;
                    };
                    let size = 16 * 32 + PART_OVERHEAD;
                    if size > left && !first {
                        break;
                    }
                    left = left.saturating_sub(size);
                    replies.push(PartReply::Node {
                        container: *container,
                        level: *level,
                        index: *index,
                        children: children.to_vec(),
                    });
                }
                PartRequest::Bucket {
                    container,
                    bucket,
                    have,
                } => {
                    if usize::from(*container) >= self.containers.len() || have.len() > MAX_HAVE {
                        continue;
                    }
                    let reply = self.answer_bucket(salt, *container, *bucket, have, left, first);
                    match reply {
                        Some((reply, size)) => {
                            left = left.saturating_sub(size);
                            let complete =
                                matches!(reply, PartReply::Bucket { complete: true, .. });
                            replies.push(reply);
                            if !complete {
                                break;
                            }
                        }
                        None => break,
                    }
                }
            }
        }
        replies
    }

    /// One bucket's reply and its size, if it fits in `room` (or, for the
    /// first part of a reply, as much of it as fits).
    fn answer_bucket(
        &self,
        salt: &Hash,
        container: u16,
        bucket: u16,
        have: &[u64],
        room: usize,
        first: bool,
    ) -> Option<(PartReply, usize)> {
        let mut position: BTreeMap<u64, usize> = BTreeMap::new();
        for (at, short) in have.iter().enumerate() {
            position.entry(*short).or_insert(at);
        }
        let mut keep = vec![0u8; have.len().div_ceil(8)];
        let mut size = PART_OVERHEAD + keep.len();
        let mut entries = Vec::new();
        let mut complete = true;
        for (key, value, digest) in self.bucket(usize::from(container), bucket) {
            if let Some(&at) = position.get(&short_digest(salt, &digest)) {
                keep[at / 8] |= 1 << (at % 8);
                continue;
            }
            let entry = key.len() + value.len() + ENTRY_OVERHEAD;
            if size + entry > room {
                complete = false;
                if entries.is_empty() && first {
                    // Not even one entry fits in a whole reply.
                    return Some((PartReply::Oversized { container, bucket }, PART_OVERHEAD));
                }
                continue;
            }
            size += entry;
            entries.push((key.to_vec(), value.to_vec()));
        }
        if !complete && !first && entries.is_empty() {
            return None;
        }
        Some((
            PartReply::Bucket {
                container,
                bucket,
                keep,
                entries,
                complete,
            },
            size,
        ))
    }
}

/// The short digests a replica lists for one bucket it has: each entry's,
/// except where two collide (both are then fetched in full), at most `max`
/// (at most [`MAX_HAVE`] for a peer to answer). Returns the list and, for
/// each listed digest, the entry it stands for.
pub fn have_list<'a>(
    salt: &Hash,
    entries: impl IntoIterator<Item = EntryRef<'a>>,
    max: usize,
) -> (Vec<u64>, Vec<EntryRef<'a>>) {
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    let mut listed: Vec<(u64, EntryRef<'a>)> = Vec::new();
    let mut collided = BTreeSet::new();
    for entry in entries {
        let short = short_digest(salt, &entry.2);
        if seen.insert(short, listed.len()).is_some() {
            collided.insert(short);
        }
        listed.push((short, entry));
    }
    listed.retain(|(short, _)| !collided.contains(short));
    listed.truncate(max.min(MAX_HAVE));
    listed.into_iter().unzip()
}

/// Where a replica finds the checkpoint it has, to compare a checkpoint it
/// fetches with. The runtime's checkpoint store is one; without one, every
/// part is fetched.
pub trait LocalCheckpoint: Send + Sync {
    /// The latest checkpoint this replica has, indexed (built on demand).
    fn index(&self) -> Option<Arc<CheckpointIndex>>;
}

/// A checkpoint fetched from peers and checked, ready to install.
#[derive(Debug)]
pub enum Transferred {
    /// Fetched whole.
    Whole(CheckpointState),
    /// Fetched in parts, to be put together with what the replica had.
    Parts(Fetched),
}

impl Transferred {
    /// The client table of the fetched checkpoint.
    pub fn clients(&self) -> &ClientTable {
        match self {
            Transferred::Whole(state) => &state.clients,
            Transferred::Parts(fetched) => &fetched.manifest.clients,
        }
    }

    /// The whole state and, for parts, what turns the base into it
    /// ([`Fetched::assemble`]).
    pub fn assemble(self) -> (CheckpointState, Option<Patch>) {
        match self {
            Transferred::Whole(state) => (state, None),
            Transferred::Parts(fetched) => fetched.assemble(),
        }
    }

    /// The whole state (for parts, the base's entries with the differing
    /// buckets replaced).
    pub fn build(self) -> CheckpointState {
        self.assemble().0
    }
}

impl PartialEq for Transferred {
    /// Two transfers are equal if they carry the same state (tests compare
    /// outputs): parts are compared by what they would build.
    fn eq(&self, other: &Transferred) -> bool {
        match (self, other) {
            (Transferred::Whole(a), Transferred::Whole(b)) => a == b,
            (Transferred::Parts(a), Transferred::Parts(b)) => {
                a.manifest == b.manifest && a.buckets == b.buckets
            }
            _ => false,
        }
    }
}

/// A state fetched in parts: the checkpoint the fetching replica had, and
/// the buckets that differ, with their whole new contents.
#[derive(Debug)]
pub struct Fetched {
    /// The checkpoint the parts were compared with (`None`: nothing).
    pub base: Option<Arc<CheckpointIndex>>,
    /// The fetched checkpoint's manifest.
    pub manifest: Manifest,
    /// The new contents of each bucket that differs, by container (in the
    /// manifest's order) and bucket.
    pub buckets: BTreeMap<BucketId, Vec<Entry>>,
}

/// Up to this many changed entries a fetched state comes with a [`Patch`]
/// whatever its size (a restore of a small state costs little either way).
pub const PATCH_ALWAYS: usize = 1024;

/// The entries in which a fetched checkpoint differs from the base it was
/// compared with: applied to the base ([`cbase_core::State::patch`]), they
/// give the fetched checkpoint's containers, whose digest is `to`.
#[derive(Debug)]
pub struct Patch {
    /// The digest of the fetched checkpoint's containers.
    pub to: Digest,
    /// The entries that differ, per container in declaration order.
    pub changes: cbase_core::StateChanges,
}

impl Fetched {
    /// The fetched checkpoint's whole state (the base's entries with the
    /// differing buckets replaced).
    pub fn build(self) -> CheckpointState {
        self.assemble().0
    }

    /// The fetched checkpoint's whole state, and the [`Patch`] that turns
    /// the base's containers into it. No patch when it would change much of
    /// the state (more than an eighth, beyond [`PATCH_ALWAYS`] entries: a
    /// restore costs less), without a base, or when the base's containers
    /// are not the fetched checkpoint's (another layout).
    ///
    /// Both cost what differs, not the state: in each fetched bucket, an
    /// entry whose digest the base's bucket holds is the base's own (same
    /// key, same value), the base's keys the fetched bucket lacks are gone,
    /// and the rest is new or changed. The base's entries are taken over if
    /// nothing else holds them (a base read back or indexed for this
    /// transfer alone), and copied otherwise.
    pub fn assemble(self) -> (CheckpointState, Option<Patch>) {
        let Fetched {
            base,
            manifest,
            buckets,
        } = self;
        // The base's entries, and its index (owned or shared) for the
        // differing buckets' keys and digests.
        let (mut own, owned, shared) = match base.map(Arc::try_unwrap) {
            Some(Ok(CheckpointIndex { state, containers })) => {
                let parts = match Arc::try_unwrap(state) {
                    Ok(state) => state.snapshot.into_parts(),
                    Err(shared) => shared.snapshot.parts().to_vec(),
                };
                (parts, containers, None)
            }
            Some(Err(shared)) => (
                shared.state.snapshot.parts().to_vec(),
                Vec::new(),
                Some(shared),
            ),
            None => (Vec::new(), Vec::new(), None),
        };
        let indexed: &[IndexedContainer] = shared.as_ref().map_or(&owned, |s| &s.containers);
        let same_layout = own.len() == manifest.roots.len()
            && own
                .iter()
                .zip(&manifest.roots)
                .all(|((mine, _), (theirs, _))| mine == theirs);
        // Each container's entries, and what changed in it.
        let mut parts = Vec::with_capacity(manifest.roots.len());
        for (number, (name, _)) in manifest.roots.iter().enumerate() {
            let number = number as u16;
            let at = own.iter().position(|(n, _)| n == name);
            let entries = at.map_or_else(Entries::new, |at| std::mem::take(&mut own[at].1));
            let mut changes = Vec::new();
            for ((_, bucket), contents) in buckets.range((number, 0)..=(number, u16::MAX)) {
                let held = at.and_then(|at| indexed.get(at));
                bucket_changes(held, *bucket, contents, &mut changes);
            }
            parts.push((name.clone(), entries, changes));
        }
        // Written entry by entry, a patch costs a few times per entry what
        // a bulk restore does: worth it for a small part of a large state.
        let size: usize = parts.iter().map(|(_, entries, _)| entries.len()).sum();
        let changed: usize = parts.iter().map(|(_, _, changes)| changes.len()).sum();
        let worth_patching = same_layout && changed <= (size / 8).max(PATCH_ALWAYS);
        let mut patched = Vec::new();
        let parts: Vec<(String, Entries)> = parts
            .into_iter()
            .map(|(name, mut entries, changes)| {
                if worth_patching {
                    patched.push((name.clone(), changes.iter().cloned().collect()));
                }
                for (key, value) in changes {
                    match value {
                        Some(value) => entries.insert(key, value),
                        None => entries.remove(&key),
                    };
                }
                (name, entries)
            })
            .collect();
        // Freeing a million small allocations takes a good part of a
        // second: the index's key lists go on a thread of their own.
        if !owned.is_empty() {
            let _ = std::thread::Builder::new()
                .name("cbase-drop".to_owned())
                .spawn(move || drop(owned));
        }
        let patch = worth_patching.then(|| Patch {
            to: Digest::of_roots(
                manifest
                    .roots
                    .iter()
                    .map(|(name, root)| (name.as_str(), *root)),
            ),
            changes: cbase_core::StateChanges::from_parts(patched),
        });
        let state = CheckpointState::new(
            Snapshot::from_parts(parts),
            manifest.clients,
            manifest.clock,
        );
        (state, patch)
    }
}

/// The changes that turn the base's `bucket` (in `held`, the base's indexed
/// container; `None`: the base has no such container) into `contents`.
fn bucket_changes(
    held: Option<&IndexedContainer>,
    bucket: u16,
    contents: &[Entry],
    changes: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>,
) {
    let (keys, digests) = match held {
        Some(held) => (
            held.buckets.get(&bucket).map_or(&[][..], Vec::as_slice),
            held.tree.bucket_entries(bucket),
        ),
        None => (&[][..], Vec::new()),
    };
    for key in keys {
        if !contents.iter().any(|(fetched, _)| fetched == key) {
            changes.push((key.clone(), None));
        }
    }
    for (key, value) in contents {
        if !digests.contains(&merkle::entry_digest(key, value)) {
            changes.push((key.clone(), Some(value.clone())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(keys: std::ops::Range<u32>, tweak: u32) -> Arc<CheckpointState> {
        let entries: Entries = keys
            .map(|k| {
                let value = if k % 100 == 0 { k + tweak } else { k };
                (
                    cbase_core::codec::encode(&k).unwrap(),
                    cbase_core::codec::encode(&value).unwrap(),
                )
            })
            .collect();
        Arc::new(CheckpointState::new(
            Snapshot::from_parts(vec![("t".to_owned(), entries)]),
            Default::default(),
            7,
        ))
    }

    #[test]
    fn the_manifest_stands_for_the_checkpoint_digest() {
        let state = state(0..500, 0);
        let index = CheckpointIndex::build(Arc::clone(&state));
        assert_eq!(index.manifest().digest(), state.digest());
    }

    #[test]
    fn a_bucket_reply_keeps_what_the_asker_has_and_sends_the_rest() {
        let salt = [3; 32];
        let server = CheckpointIndex::build(state(0..20_000, 1));
        let asker = CheckpointIndex::build(state(0..20_000, 0));
        // A bucket where the two differ.
        let bucket = (0..=u16::MAX)
            .find(|b| {
                let theirs: Vec<Hash> = server.bucket(0, *b).iter().map(|e| e.2).collect();
                let mine: Vec<Hash> = asker.bucket(0, *b).iter().map(|e| e.2).collect();
                theirs != mine
            })
            .expect("some bucket differs");
        let (have, listed) = have_list(&salt, asker.bucket(0, bucket), MAX_HAVE);
        let request = PartRequest::Bucket {
            container: 0,
            bucket,
            have,
        };
        let replies = server.answer(&salt, &[request], 1 << 20);
        let [
            PartReply::Bucket {
                keep,
                entries,
                complete: true,
                ..
            },
        ] = replies.as_slice()
        else {
            panic!("one complete bucket: {replies:?}");
        };
        let mut digests: Vec<Hash> = listed
            .iter()
            .enumerate()
            .filter(|(at, _)| keep[at / 8] & (1 << (at % 8)) != 0)
            .map(|(_, entry)| entry.2)
            .collect();
        assert!(!entries.is_empty() && entries.len() < 3, "{entries:?}");
        digests.extend(entries.iter().map(|(k, v)| merkle::entry_digest(k, v)));
        let node = Node {
            level: 3,
            index: u32::from(bucket) / 16,
        };
        let expected = server.children(0, node).unwrap()[usize::from(bucket) % 16];
        assert_eq!(merkle::bucket_digest(digests), expected);
    }

    #[test]
    fn replies_fit_the_room_and_say_when_a_bucket_is_cut() {
        let salt = [5; 32];
        let server = CheckpointIndex::build(state(0..200_000, 0));
        let bucket = 9;
        let all = server.bucket(0, bucket).len();
        assert!(all > 2);
        let request = PartRequest::Bucket {
            container: 0,
            bucket,
            have: Vec::new(),
        };
        let room = PART_OVERHEAD + 2 * (4 + 4 + ENTRY_OVERHEAD);
        let replies = server.answer(&salt, &[request], room);
        let [
            PartReply::Bucket {
                entries, complete, ..
            },
        ] = replies.as_slice()
        else {
            panic!("one bucket");
        };
        assert!(!complete);
        assert!(entries.len() < all);
        // Not even one entry fits: the bucket must come whole.
        let request = PartRequest::Bucket {
            container: 0,
            bucket,
            have: Vec::new(),
        };
        assert!(matches!(
            server.answer(&salt, &[request], 4).as_slice(),
            [PartReply::Oversized { .. }]
        ));
    }

    #[test]
    fn nonsense_requests_get_nothing() {
        let server = CheckpointIndex::build(state(0..100, 0));
        let parts = [
            PartRequest::Node {
                container: 3,
                level: 0,
                index: 0,
            },
            PartRequest::Node {
                container: 0,
                level: 9,
                index: 0,
            },
            PartRequest::Bucket {
                container: 0,
                bucket: 1,
                have: vec![0; MAX_HAVE + 1],
            },
        ];
        assert!(server.answer(&[0; 32], &parts, 1 << 20).is_empty());
    }

    /// The buckets of container 0 in which `target` differs from `base`,
    /// with `target`'s contents: what a transfer fetches.
    fn differing_buckets(
        base: &CheckpointIndex,
        target: &CheckpointIndex,
    ) -> BTreeMap<BucketId, Vec<Entry>> {
        let mut buckets = BTreeMap::new();
        for bucket in 0..=u16::MAX {
            let theirs = target.bucket(0, bucket);
            if theirs
                .iter()
                .map(|e| e.2)
                .ne(base.bucket(0, bucket).iter().map(|e| e.2))
            {
                buckets.insert(
                    (0, bucket),
                    theirs
                        .iter()
                        .map(|(k, v, _)| (k.to_vec(), v.to_vec()))
                        .collect(),
                );
            }
        }
        buckets
    }

    #[test]
    fn a_patch_holds_exactly_the_entries_that_differ() {
        let base = Arc::new(CheckpointIndex::build(state(0..3_000, 0)));
        // Some values changed (every hundredth), some keys gone, some new.
        let mut entries = state(0..3_020, 1).snapshot.parts()[0].1.clone();
        for k in (0..3_000u32).step_by(97) {
            entries.remove(&cbase_core::codec::encode(&k).unwrap());
        }
        let target = CheckpointIndex::build(Arc::new(CheckpointState::new(
            Snapshot::from_parts(vec![("t".to_owned(), entries.clone())]),
            Default::default(),
            7,
        )));
        let fetched = Fetched {
            base: Some(Arc::clone(&base)),
            manifest: target.manifest(),
            buckets: differing_buckets(&base, &target),
        };
        let (built, patch) = fetched.assemble();
        assert_eq!(built, **target.state());
        let patch = patch.expect("same containers");
        assert_eq!(patch.to, target.state().snapshot.digest());
        let own = &base.state().snapshot.parts()[0].1;
        let differing = own
            .keys()
            .chain(entries.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|key| own.get(*key) != entries.get(*key))
            .count();
        assert_eq!(patch.changes.len(), differing);
        let mut patched = base.state().snapshot.clone();
        patched.apply(&patch.changes);
        assert_eq!(patched, target.state().snapshot);

        // Another layout: nothing to patch, the state is installed whole.
        let renamed = Fetched {
            base: Some(base),
            manifest: Manifest {
                roots: vec![("u".to_owned(), target.root(0))],
                ..target.manifest()
            },
            buckets: BTreeMap::new(),
        };
        assert!(renamed.assemble().1.is_none());
    }

    #[test]
    fn fetched_buckets_replace_the_base_ones() {
        let base = Arc::new(CheckpointIndex::build(state(0..3_000, 0)));
        let target = CheckpointIndex::build(state(0..3_000, 1));
        let buckets = differing_buckets(&base, &target);
        assert!(!buckets.is_empty() && buckets.len() <= 30);
        // With a base held elsewhere too (copied), and with one held by
        // nothing else (taken over): the same state.
        let shared = Fetched {
            base: Some(Arc::clone(&base)),
            manifest: target.manifest(),
            buckets: buckets.clone(),
        };
        assert_eq!(shared.build(), **target.state());
        assert_eq!(
            **base.state(),
            *state(0..3_000, 0),
            "the shared base is untouched"
        );
        let own = Fetched {
            base: Some(base),
            manifest: target.manifest(),
            buckets,
        };
        assert_eq!(own.build(), **target.state());
    }
}

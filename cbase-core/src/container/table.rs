//! `Table<K, V>`: a sharded, ordered map whose every access is checked and
//! whose writes inside a request are staged until the request finishes.

use std::any::Any;
use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::ops::RangeBounds;
use std::rc::Rc;

use parking_lot::RwLock;
use serde::de::DeserializeOwned;

use super::prefix::{KeyPrefix, PrefixBounds, range_under};
use super::{BindError, Binding, Changes, Container, Entries, EntryLog};
use crate::codec::{self, CodecError};
use crate::key::{self, Key, PrefixPath, TableId, ValueHash};
use crate::merkle::{self, DigestTree};
use crate::scope::{self, AccessKind};
use crate::txn;

/// Shards per table: enough that requests on disjoint keys rarely meet on a
/// lock even with dozens of workers, few enough that whole-table reads stay cheap.
const SHARDS: usize = 64;

thread_local! {
    // Tables this thread is iterating under read locks; writing one of them
    // from inside the iteration would deadlock, so it is refused instead.
    static ITERATING: RefCell<Vec<TableId>> = const { RefCell::new(Vec::new()) };
}

/// A replicated map from `K` to `V`, safe to use from concurrent requests.
///
/// Its table name is the name of the field that holds it. Reads and writes of
/// one key are checked against the running request's rule for `table[key]`
/// (or a prefix it starts with, `table[(a, *)]`, for a tuple key);
/// whole-table operations ([`len`](Table::len), [`fold`](Table::fold),
/// [`entries`](Table::entries), [`range`](Table::range), ...) need `table[*]`,
/// and the operations over the keys under one prefix
/// ([`prefix`](Table::prefix)) need that prefix (or `table[*]`).
/// Iteration is always in key order, so it is the same on every replica.
///
/// Inside a request, writes are staged and applied when the request returns
/// (see [`crate::txn`]); the request itself reads its own writes. Keys are
/// sharded by their [`ValueHash`] over independent locks, so requests on
/// different keys do not contend; a tuple key is sharded by its first
/// element instead, so the keys under a prefix are in one shard, next to each
/// other, and visiting them costs O(log n) plus the entries visited.
pub struct Table<K, V> {
    binding: Binding,
    shards: Box<[RwLock<BTreeMap<K, V>>]>,
    log: EntryLog,
}

/// What a table's key and value types must offer: an order (for deterministic
/// iteration), a canonical encoding (for key hashes and snapshots) and a
/// readable form for error messages.
///
/// The order must agree with the encoding: two keys compare equal exactly
/// when they encode to the same bytes. Rules, conflicts and digests know a
/// key by its encoding, the table's map by its order. Integers, strings,
/// byte vectors, tuples and derived `Ord`s agree; `PathBuf` does not
/// (`home/u2` and `home/u2/` compare equal), nor does an `Ord` written to
/// ignore case. A request that meets a stored key equal to its own but
/// encoded differently is refused, but two requests that create such keys
/// at once are not ordered by their rules, so which one a replica sees first
/// could differ: keep to keys whose order agrees with their encoding.
pub trait TableKey:
    Ord + Clone + fmt::Debug + serde::Serialize + DeserializeOwned + Send + Sync + 'static
{
}
impl<T> TableKey for T where
    T: Ord + Clone + fmt::Debug + serde::Serialize + DeserializeOwned + Send + Sync + 'static
{
}

/// A request's staged writes to one table.
struct Overlay<K, V> {
    /// The request cleared the table before the writes below.
    cleared: bool,
    /// Each written key's new value, `None` where it was removed.
    writes: BTreeMap<K, Option<V>>,
}

impl<K, V> Default for Overlay<K, V> {
    fn default() -> Self {
        Overlay {
            cleared: false,
            writes: BTreeMap::new(),
        }
    }
}

type Staged<K, V> = RefCell<Overlay<K, V>>;

/// A committed request's writes, encoded and ready to apply.
struct Prepared<K, V> {
    cleared: bool,
    writes: Vec<PreparedWrite<K, V>>,
}

struct PreparedWrite<K, V> {
    shard: usize,
    key: K,
    value: Option<V>,
    key_bytes: Vec<u8>,
    value_bytes: Option<Vec<u8>>,
}

impl<K, V> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            binding: Binding::default(),
            shards: (0..SHARDS).map(|_| RwLock::new(BTreeMap::new())).collect(),
            log: EntryLog::new(),
        }
    }
}

impl<K, V> fmt::Debug for Table<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("name", &self.binding.name())
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// The encoding of the key a lookup probes with (see `Table::stored`).
    static PROBE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn shard_of<K: serde::Serialize>(key: &K) -> usize {
    let (hash, path) = key::hash_key(key);
    shard_for(hash, path.as_ref())
}

/// The shard of a key with this hash and, for a tuple, these prefixes: the
/// first element's, so that the keys under a prefix share a shard.
fn shard_for(hash: ValueHash, path: Option<&PrefixPath>) -> usize {
    let spread = match path.and_then(|path| path.hashes().first()) {
        Some(first) => first.0,
        None => hash.0,
    };
    (spread % SHARDS as u64) as usize
}

impl<K, V> Table<K, V>
where
    K: TableKey,
    V: Clone + serde::Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// An empty, unnamed table (named later by `#[derive(State)]`).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table with the given name, for state written by hand.
    pub fn named(name: &'static str) -> Self {
        Table {
            binding: Binding::named(name),
            ..Self::default()
        }
    }

    /// A table with the given name holding `entries`, for state written by
    /// hand; see the [`FromIterator`] implementation (`collect()`), which
    /// builds the same table unnamed.
    pub fn named_from(name: &'static str, entries: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut table = Self::from_iter(entries);
        table.binding = Binding::named(name);
        table
    }

    /// Builds a table's shards and digest tree from entries grouped by
    /// shard, each group sorted by key with no key twice, and the key hash
    /// and entry digest of every entry.
    ///
    /// In bulk: a sorted run builds a `BTreeMap` several times faster than
    /// inserting one key at a time, into full nodes rather than the
    /// half-full ones that inserting keys in order leaves (at 10^6 entries
    /// of 100-byte values, 148 bytes an entry against 177), and the digest
    /// tree's buckets are filled to their exact size.
    fn bulk(
        shards: Vec<Vec<(K, V)>>,
        digests: Vec<(u64, merkle::Hash)>,
    ) -> (Vec<BTreeMap<K, V>>, DigestTree) {
        debug_assert_eq!(shards.len(), SHARDS);
        let maps = shards.into_iter().map(BTreeMap::from_iter).collect();
        (maps, DigestTree::from_entries(digests))
    }

    /// Checks an access to one key; returns its shard and the table's identity.
    fn check_key(&self, kind: AccessKind, key: &K) -> (usize, TableId) {
        let (hash, path) = key::hash_key(key);
        let (name, id) = self.binding.for_access();
        let access = match path {
            Some(path) => Key::TupleEntry(id, hash, path),
            None => Key::Entry(id, hash),
        };
        scope::check(kind, name, &access, || format!("{key:?}"));
        if kind == AccessKind::Write {
            self.refuse_write_while_iterating(name, id);
        }
        (shard_for(hash, path.as_ref()), id)
    }

    fn check_whole(&self, kind: AccessKind) -> TableId {
        let (name, id) = self.binding.for_access();
        scope::check(kind, name, &Key::Table(id), || "*".to_owned());
        if kind == AccessKind::Write {
            self.refuse_write_while_iterating(name, id);
        }
        id
    }

    fn refuse_write_while_iterating(&self, name: &str, id: TableId) {
        if ITERATING.with_borrow(|tables| tables.contains(&id)) {
            panic!(
                "table `{name}` was written while being iterated by `fold`; collect what to change first"
            );
        }
    }

    /// The running request's staged writes to this table, if it made any.
    fn overlay(&self, id: TableId) -> Option<Rc<Staged<K, V>>> {
        txn::staged::<Staged<K, V>>(id)
    }

    /// The value at `key` as the running request sees it: its own write if
    /// it made one, else the committed value.
    fn current(&self, shard: usize, overlay: Option<&Staged<K, V>>, key: &K) -> Option<V> {
        if let Some(overlay) = overlay {
            let overlay = overlay.borrow();
            if let Some(write) = overlay.writes.get(key) {
                return write.clone();
            }
            if overlay.cleared {
                return None;
            }
        }
        self.stored(&self.shards[shard].read_recursive(), key)
            .cloned()
    }

    /// A copy of the value at `key`. Needs read access to `table[key]`.
    pub fn get(&self, key: &K) -> Option<V> {
        let (shard, id) = self.check_key(AccessKind::Read, key);
        self.current(shard, self.overlay(id).as_deref(), key)
    }

    /// Calls `f` with a reference to the value at `key`, without copying it
    /// (unless the running request wrote it: then `f` sees a copy of that write).
    pub fn with<R>(&self, key: &K, f: impl FnOnce(Option<&V>) -> R) -> R {
        let (shard, id) = self.check_key(AccessKind::Read, key);
        if let Some(overlay) = self.overlay(id) {
            let own = {
                let overlay = overlay.borrow();
                match overlay.writes.get(key) {
                    Some(write) => Some(write.clone()),
                    None if overlay.cleared => Some(None),
                    None => None,
                }
            };
            if let Some(value) = own {
                return f(value.as_ref());
            }
        }
        f(self.stored(&self.shards[shard].read_recursive(), key))
    }

    /// Whether `key` has a value. Needs read access to `table[key]`.
    pub fn contains_key(&self, key: &K) -> bool {
        let (shard, id) = self.check_key(AccessKind::Read, key);
        if let Some(overlay) = self.overlay(id) {
            let overlay = overlay.borrow();
            if let Some(write) = overlay.writes.get(key) {
                return write.is_some();
            }
            if overlay.cleared {
                return false;
            }
        }
        self.stored(&self.shards[shard].read_recursive(), key)
            .is_some()
    }

    /// Sets `key` to `value` (or removes it, for `None`): staged in the
    /// running request, else written through. Returns the previous value.
    fn write(&self, shard: usize, id: TableId, key: K, value: Option<V>) -> Option<V> {
        match txn::stage::<Staged<K, V>>(id) {
            Some(overlay) => {
                let previous = self.current(shard, Some(&overlay), &key);
                overlay.borrow_mut().writes.insert(key, value);
                previous
            }
            None => self.write_through(shard, key, value),
        }
    }

    fn write_through(&self, shard: usize, key: K, value: Option<V>) -> Option<V> {
        let key_bytes = self.encode_or_panic(&key);
        let value_bytes = value.as_ref().map(|v| self.encode_or_panic(v));
        let mut map = self.shards[shard].write();
        self.stored(&map, &key);
        let previous = match value {
            Some(value) => map.insert(key, value),
            None => map.remove(&key),
        };
        let old_bytes = previous.as_ref().map(|v| self.encode_or_panic(v));
        self.log
            .change(&key_bytes, old_bytes.as_deref(), value_bytes.as_deref());
        previous
    }

    /// Writes one encoded change and reports it to the digest log.
    fn apply(&self, write: PreparedWrite<K, V>) {
        let mut map = self.shards[write.shard].write();
        let previous = match write.value {
            Some(value) => map.insert(write.key, value),
            None => map.remove(&write.key),
        };
        let old_bytes = previous.as_ref().map(|v| self.encode_or_panic(v));
        self.log.change(
            &write.key_bytes,
            old_bytes.as_deref(),
            write.value_bytes.as_deref(),
        );
    }

    /// The value stored under `key` in `map` (one shard).
    ///
    /// # Panics
    /// If the stored key compares equal to `key` but encodes differently
    /// (`home/u2` and `home/u2/` as `PathBuf`s): rules, conflicts and
    /// digests know a key by its encoding, so the two are different keys
    /// to them, and the entry is not the one the request declared. Refused
    /// before anything is read or written, so every replica refuses alike
    /// (see [`TableKey`]).
    fn stored<'m>(&self, map: &'m BTreeMap<K, V>, key: &K) -> Option<&'m V> {
        let (found, value) = map.get_key_value(key)?;
        // Without allocating: `key` into this thread's buffer, `found`
        // compared with it as it is encoded.
        let same = PROBE.with_borrow_mut(|probe| {
            probe.clear();
            codec::encode_into(key, probe)
                .and_then(|()| codec::encodes_to(found, probe))
                .unwrap_or_else(|error| {
                    panic!(
                        "table `{}` holds a key that cannot be encoded: {error}",
                        self.binding.name().unwrap_or("<unnamed>")
                    )
                })
        });
        if !same {
            panic!(
                "table `{}`: the key {key:?} compares equal to the stored key {found:?} but \
                 encodes differently, so it is another key to rules and digests; a table key's \
                 `Ord` must agree with its encoding (`PathBuf` does not: use `String`)",
                self.binding.name().unwrap_or("<unnamed>")
            );
        }
        Some(value)
    }

    fn encode_or_panic<T: serde::Serialize>(&self, value: &T) -> Vec<u8> {
        codec::encode(value).unwrap_or_else(|error| {
            panic!(
                "table `{}` holds a value that cannot be encoded: {error}",
                self.binding.name().unwrap_or("<unnamed>")
            )
        })
    }

    /// Sets the value at `key`, returning the previous one. Needs write access.
    pub fn insert(&self, key: K, value: V) -> Option<V> {
        let (shard, id) = self.check_key(AccessKind::Write, &key);
        self.write(shard, id, key, Some(value))
    }

    /// Changes the value at `key` in place, if there is one.
    pub fn update<R>(&self, key: &K, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let (shard, id) = self.check_key(AccessKind::Write, key);
        if txn::is_open() {
            let mut value = self.current(shard, self.overlay(id).as_deref(), key)?;
            let result = f(&mut value);
            self.write(shard, id, key.clone(), Some(value));
            return Some(result);
        }
        let mut value = self
            .stored(&self.shards[shard].read_recursive(), key)
            .cloned()?;
        let result = f(&mut value);
        self.write_through(shard, key.clone(), Some(value));
        Some(result)
    }

    /// Changes the value at `key` in place, first inserting `default()` if
    /// there is none.
    pub fn upsert<R>(&self, key: K, default: impl FnOnce() -> V, f: impl FnOnce(&mut V) -> R) -> R {
        let (shard, id) = self.check_key(AccessKind::Write, &key);
        let overlay = self.overlay(id);
        let mut value = self
            .current(shard, overlay.as_deref(), &key)
            .unwrap_or_else(default);
        let result = f(&mut value);
        self.write(shard, id, key, Some(value));
        result
    }

    /// Removes and returns the value at `key`. Needs write access.
    pub fn remove(&self, key: &K) -> Option<V> {
        let (shard, id) = self.check_key(AccessKind::Write, key);
        self.write(shard, id, key.clone(), None)
    }

    /// The number of entries. Needs read access to `table[*]`.
    pub fn len(&self) -> usize {
        let id = self.check_whole(AccessKind::Read);
        let Some(overlay) = self.overlay(id) else {
            return self.stored_len();
        };
        let overlay = overlay.borrow();
        let mut len = if overlay.cleared {
            0
        } else {
            self.stored_len()
        };
        for (key, write) in &overlay.writes {
            let stored = !overlay.cleared
                && self.shards[shard_of(key)]
                    .read_recursive()
                    .contains_key(key);
            match (stored, write.is_some()) {
                (false, true) => len += 1,
                (true, false) => len -= 1,
                _ => {}
            }
        }
        len
    }

    fn stored_len(&self) -> usize {
        self.shards.iter().map(|s| s.read_recursive().len()).sum()
    }

    /// Whether the table is empty. Needs read access to `table[*]`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Folds over every entry in key order without copying. Needs read access
    /// to `table[*]`. Writing this table from inside `f` is refused (it would
    /// deadlock); collect what to change and write after the fold.
    pub fn fold<A>(&self, init: A, mut f: impl FnMut(A, &K, &V) -> A) -> A {
        let id = self.check_whole(AccessKind::Read);
        let overlay = self.overlay(id);
        let overlay = overlay.as_ref().map(|o| o.borrow());
        let guards: Vec<_> = self.shards.iter().map(|s| s.read_recursive()).collect();
        ITERATING.with_borrow_mut(|tables| tables.push(id));
        let _pop = PopIterating;
        let mut acc = init;
        let cleared = overlay.as_ref().is_some_and(|o| o.cleared);
        let stored = merge_sorted(guards.iter().filter(|_| !cleared).map(|g| g.iter()));
        let own = overlay.iter().flat_map(|o| o.writes.iter());
        for (k, v) in with_own_writes(stored, own) {
            acc = f(acc, k, v);
        }
        acc
    }

    /// Copies of every entry, in key order. Needs read access to `table[*]`.
    pub fn entries(&self) -> Vec<(K, V)> {
        self.fold(Vec::new(), |mut out, k, v| {
            out.push((k.clone(), v.clone()));
            out
        })
    }

    /// Copies of every key, in order. Needs read access to `table[*]`.
    pub fn keys(&self) -> Vec<K> {
        self.fold(Vec::new(), |mut out, k, _| {
            out.push(k.clone());
            out
        })
    }

    /// Copies of the entries whose keys fall in `range`, in key order.
    ///
    /// A range may contain keys no request has named yet, so it needs read
    /// access to the whole table (`table[*]`).
    pub fn range<R: RangeBounds<K> + Clone>(&self, range: R) -> Vec<(K, V)> {
        let id = self.check_whole(AccessKind::Read);
        let overlay = self.overlay(id);
        let overlay = overlay.as_ref().map(|o| o.borrow());
        let cleared = overlay.as_ref().is_some_and(|o| o.cleared);
        let guards: Vec<_> = self.shards.iter().map(|s| s.read_recursive()).collect();
        let stored = merge_sorted(
            guards
                .iter()
                .filter(|_| !cleared)
                .map(|g| g.range(range.clone())),
        );
        let own = overlay.iter().flat_map(|o| o.writes.range(range.clone()));
        with_own_writes(stored, own)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The entries whose keys start with `prefix`, a tuple of the key's
    /// leading elements: `(show,)` for a key `(show, seat)`.
    ///
    /// The view's operations need read access to that prefix
    /// (`#[reads(seats[(show, *)])]`), a shorter prefix it starts with, or the
    /// whole table; each checks when it is called. They visit only the keys
    /// under the prefix: O(log n) plus what they visit. The keys themselves
    /// are read and written with [`get`](Table::get), [`insert`](Table::insert)
    /// and the other single-key operations, which a declared prefix allows
    /// for every key under it.
    pub fn prefix<P>(&self, prefix: P) -> PrefixView<'_, K, V, P>
    where
        K: KeyPrefix<P>,
        P: Clone + serde::Serialize + 'static,
    {
        PrefixView {
            table: self,
            prefix,
        }
    }

    /// Checks a read of the keys under `prefix`; returns their shard and the
    /// table's identity.
    fn check_prefix<P>(&self, prefix: &P) -> (usize, TableId)
    where
        K: KeyPrefix<P>,
        P: serde::Serialize,
    {
        let (name, id) = self.binding.for_access();
        let access = Key::prefix_of(id, prefix);
        scope::check(AccessKind::Read, name, &access, || K::describe(prefix));
        let Key::Prefix(_, path) = access else {
            unreachable!("Key::prefix_of makes a prefix");
        };
        let first = path.hashes()[0];
        ((first.0 % SHARDS as u64) as usize, id)
    }

    /// Folds over the entries under `prefix`, in key order.
    fn fold_prefix<P, A>(&self, prefix: &P, init: A, mut f: impl FnMut(A, &K, &V) -> A) -> A
    where
        K: KeyPrefix<P>,
        P: Clone + serde::Serialize + 'static,
    {
        let (shard, id) = self.check_prefix(prefix);
        let overlay = self.overlay(id);
        let overlay = overlay.as_ref().map(|o| o.borrow());
        let guard = self.shards[shard].read_recursive();
        ITERATING.with_borrow_mut(|tables| tables.push(id));
        let _pop = PopIterating;
        let bounds = PrefixBounds::new(prefix);
        let cleared = overlay.as_ref().is_some_and(|o| o.cleared);
        let stored = (!cleared)
            .then(|| range_under(&guard, &bounds))
            .into_iter()
            .flatten();
        let own = overlay.iter().flat_map(|o| range_under(&o.writes, &bounds));
        let mut acc = init;
        for (k, v) in with_own_writes(stored, own) {
            acc = f(acc, k, v);
        }
        acc
    }

    /// Removes every entry. Needs write access to `table[*]`.
    pub fn clear(&self) {
        let id = self.check_whole(AccessKind::Write);
        if let Some(overlay) = txn::stage::<Staged<K, V>>(id) {
            let mut overlay = overlay.borrow_mut();
            overlay.cleared = true;
            overlay.writes.clear();
            return;
        }
        for shard in self.shards.iter() {
            let mut map = shard.write();
            for (key, value) in std::mem::take(&mut *map) {
                let (key, value) = (self.encode_or_panic(&key), self.encode_or_panic(&value));
                self.log.change(&key, Some(&value), None);
            }
        }
    }
}

/// Pops this thread's innermost iterated table when dropped: even if the
/// fold's function panics, so a refused access inside a fold does not leave
/// the thread believing it still iterates.
struct PopIterating;

impl Drop for PopIterating {
    fn drop(&mut self) {
        ITERATING.with_borrow_mut(|tables| tables.pop());
    }
}

/// The entries of a [`Table`] whose keys start with one prefix: see
/// [`Table::prefix`].
///
/// Each operation checks the running request's rule when it is called, as
/// the table's own operations do, and sees the request's own writes.
pub struct PrefixView<'t, K, V, P> {
    table: &'t Table<K, V>,
    prefix: P,
}

impl<K, V, P> PrefixView<'_, K, V, P>
where
    K: TableKey + KeyPrefix<P>,
    V: Clone + serde::Serialize + DeserializeOwned + Send + Sync + 'static,
    P: Clone + serde::Serialize + 'static,
{
    /// Folds over the entries in key order without copying. Writing the
    /// table from inside `f` is refused (it would deadlock); collect what to
    /// change and write after the fold.
    pub fn fold<A>(&self, init: A, f: impl FnMut(A, &K, &V) -> A) -> A {
        self.table.fold_prefix(&self.prefix, init, f)
    }

    /// Copies of the entries, in key order.
    pub fn entries(&self) -> Vec<(K, V)> {
        self.fold(Vec::new(), |mut out, k, v| {
            out.push((k.clone(), v.clone()));
            out
        })
    }

    /// Copies of the keys, in order.
    pub fn keys(&self) -> Vec<K> {
        self.fold(Vec::new(), |mut out, k, _| {
            out.push(k.clone());
            out
        })
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.fold(0, |n, _, _| n + 1)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K, V, P: fmt::Debug> fmt::Debug for PrefixView<'_, K, V, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefixView")
            .field("table", &self.table.binding.name())
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Merges per-shard iterators, each sorted by key, into one sorted iterator.
fn merge_sorted<'a, K: Ord + 'a, V: 'a, I>(
    iters: impl Iterator<Item = I>,
) -> impl Iterator<Item = (&'a K, &'a V)>
where
    I: Iterator<Item = (&'a K, &'a V)>,
{
    let mut iters: Vec<I> = iters.collect();
    let mut heads: BinaryHeap<Reverse<(&'a K, usize)>> = BinaryHeap::new();
    let mut values: Vec<Option<&'a V>> = vec![None; iters.len()];
    for (i, iter) in iters.iter_mut().enumerate() {
        if let Some((k, v)) = iter.next() {
            values[i] = Some(v);
            heads.push(Reverse((k, i)));
        }
    }
    std::iter::from_fn(move || {
        let Reverse((k, i)) = heads.pop()?;
        let v = values[i].take().expect("every queued head has its value");
        if let Some((next_k, next_v)) = iters[i].next() {
            values[i] = Some(next_v);
            heads.push(Reverse((next_k, i)));
        }
        Some((k, v))
    })
}

/// The committed entries (sorted) as a request sees them with its own
/// writes (sorted): a write replaces the committed entry, a removal hides it.
fn with_own_writes<'a, K: Ord + 'a, V: 'a>(
    stored: impl Iterator<Item = (&'a K, &'a V)>,
    own: impl Iterator<Item = (&'a K, &'a Option<V>)>,
) -> impl Iterator<Item = (&'a K, &'a V)> {
    let mut stored = stored.peekable();
    let mut own = own.peekable();
    std::iter::from_fn(move || {
        loop {
            let order = match (stored.peek(), own.peek()) {
                (None, None) => return None,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((s, _)), Some((o, _))) => s.cmp(o),
            };
            match order {
                Ordering::Less => return stored.next(),
                Ordering::Equal | Ordering::Greater => {
                    if order == Ordering::Equal {
                        stored.next();
                    }
                    let (k, write) = own.next().expect("peeked");
                    if let Some(v) = write {
                        return Some((k, v));
                    }
                }
            }
        }
    })
}

/// Builds a table holding `entries`, in bulk: faster than inserting them
/// one at a time, and into fuller B-tree nodes, so the table takes less
/// memory (see the book's chapter on durability, Sizing). Where a key comes
/// more than once, the last of its entries stays, as with repeated
/// [`insert`](Table::insert)s. The state's initial contents are the usual
/// use: `values: (0..n).map(|k| (k, initial(k))).collect()`.
///
/// # Panics
/// If a key or value cannot be encoded, as [`insert`](Table::insert) does.
impl<K, V> FromIterator<(K, V)> for Table<K, V>
where
    K: TableKey,
    V: Clone + serde::Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let mut shards: Vec<Vec<(K, V)>> = (0..SHARDS).map(|_| Vec::new()).collect();
        for (key, value) in entries {
            shards[shard_of(&key)].push((key, value));
        }
        fn encode<T: serde::Serialize>(what: &T) -> Vec<u8> {
            codec::encode(what).unwrap_or_else(|error| {
                panic!("a table built from entries holds one that cannot be encoded: {error}")
            })
        }
        let mut digests = Vec::new();
        for shard in &mut shards {
            // Stable, so that of equal keys the last given is the last here;
            // each run of equal keys then keeps its last entry.
            shard.sort_by(|a, b| a.0.cmp(&b.0));
            shard.dedup_by(|later, kept| {
                let equal = later.0 == kept.0;
                if equal {
                    std::mem::swap(later, kept);
                }
                equal
            });
            digests.reserve(shard.len());
            for (key, value) in shard.iter() {
                let key_bytes = encode(key);
                digests.push((
                    merkle::key_hash(&key_bytes),
                    merkle::entry_digest(&key_bytes, &encode(value)),
                ));
            }
        }
        let (maps, tree) = Table::bulk(shards, digests);
        let table = Table {
            binding: Binding::default(),
            shards: maps.into_iter().map(RwLock::new).collect(),
            log: EntryLog::new(),
        };
        table.log.install(tree);
        table
    }
}

impl<K, V> Container for Table<K, V>
where
    K: TableKey,
    V: Clone + serde::Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn bind(&self, name: &'static str) -> Result<(), BindError> {
        self.binding.bind(name)
    }

    fn name(&self) -> Option<&'static str> {
        self.binding.name()
    }

    fn prepare(&self, staged: &txn::Staged) -> Result<Box<dyn Any>, CodecError> {
        let overlay = staged
            .downcast_ref::<Staged<K, V>>()
            .expect("a table stages an overlay of its own type");
        let overlay = std::mem::take(&mut *overlay.borrow_mut());
        let mut writes = Vec::with_capacity(overlay.writes.len());
        for (key, value) in overlay.writes {
            let key_bytes = codec::encode(&key)?;
            let value_bytes = value.as_ref().map(codec::encode).transpose()?;
            writes.push(PreparedWrite {
                shard: shard_of(&key),
                key,
                value,
                key_bytes,
                value_bytes,
            });
        }
        Ok(Box::new(Prepared {
            cleared: overlay.cleared,
            writes,
        }))
    }

    /// Everything that can fail (encoding) happened in `prepare`.
    fn commit_never_fails(&self) -> bool {
        true
    }

    fn commit(&self, prepared: Box<dyn Any>) {
        let prepared = prepared
            .downcast::<Prepared<K, V>>()
            .expect("commit takes what this table's prepare returned");
        if prepared.cleared {
            for shard in self.shards.iter() {
                let mut map = shard.write();
                for (key, value) in std::mem::take(&mut *map) {
                    let (key, value) = (self.encode_or_panic(&key), self.encode_or_panic(&value));
                    self.log.change(&key, Some(&value), None);
                }
            }
        }
        for write in prepared.writes {
            self.apply(write);
        }
    }

    fn entry_log(&self) -> &EntryLog {
        &self.log
    }

    fn encode_entries(&self) -> Result<Entries, CodecError> {
        let guards: Vec<_> = self.shards.iter().map(|s| s.read_recursive()).collect();
        let mut entries = Entries::new();
        for guard in &guards {
            entries.extend(encode_shard(guard)?);
        }
        Ok(entries)
    }

    /// One shard at a time, each encoded under its read lock and sorted in
    /// after it is released: a write waits for one shard's encoding at
    /// most (3-4 ms at 10^6 entries), not for the whole table's (seconds).
    fn encode_entries_while_running(&self) -> Result<Entries, CodecError> {
        let mut entries = Entries::new();
        for shard in self.shards.iter() {
            let encoded = encode_shard(&shard.read_recursive())?;
            entries.extend(encoded);
        }
        Ok(entries)
    }

    fn decode_entries(&self, entries: &Entries) -> Result<Box<dyn Any + Send>, CodecError> {
        // Gathered per shard and built in bulk (see `Table::bulk`): a
        // restart or state transfer restores millions of entries.
        let mut shards: Vec<Vec<(K, V)>> = (0..SHARDS).map(|_| Vec::new()).collect();
        let mut digests = Vec::with_capacity(entries.len());
        for (key_bytes, value_bytes) in entries {
            let key: K = decode_canonical(key_bytes, || "table entry key".to_owned())?;
            let value: V =
                decode_canonical(value_bytes, || format!("the value of table entry {key:?}"))?;
            digests.push((
                merkle::key_hash(key_bytes),
                merkle::entry_digest(key_bytes, value_bytes),
            ));
            shards[shard_of(&key)].push((key, value));
        }
        for shard in &mut shards {
            shard.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        Ok(Box::new(Table::bulk(shards, digests)))
    }

    fn install(&self, staged: Box<dyn Any + Send>) {
        let (shards, tree) = *staged
            .downcast::<(Vec<BTreeMap<K, V>>, DigestTree)>()
            .expect("install takes what this table's decode_entries returned");
        // Before any shard is replaced: a checkpoint read that sees one
        // must not find the old contents' versions to put back into it.
        self.log.drop_versions();
        for (lock, contents) in self.shards.iter().zip(shards) {
            *lock.write() = contents;
        }
        self.log.install(tree);
    }

    fn decode_changes(&self, changes: &Changes) -> Result<Box<dyn Any + Send>, CodecError> {
        let mut writes = Vec::with_capacity(changes.len());
        for (key_bytes, value_bytes) in changes {
            let key: K = decode_canonical(key_bytes, || "changed table key".to_owned())?;
            let value: Option<V> = value_bytes
                .as_ref()
                .map(|bytes| decode_canonical(bytes, || format!("the new value of {key:?}")))
                .transpose()?;
            writes.push(PreparedWrite {
                shard: shard_of(&key),
                key,
                value,
                key_bytes: key_bytes.clone(),
                value_bytes: value_bytes.clone(),
            });
        }
        Ok(Box::new(writes))
    }

    fn apply_changes(&self, staged: Box<dyn Any + Send>) {
        let writes = staged
            .downcast::<Vec<PreparedWrite<K, V>>>()
            .expect("apply_changes takes what this table's decode_changes returned");
        // As in `install`: the patched contents are not the ones the
        // versions were kept for, and a checkpoint read may see any part.
        self.log.drop_versions();
        for write in *writes {
            self.apply(write);
        }
        self.log.forget_changes();
    }
}

/// An encoded key and its encoded value.
type EncodedEntry = (Vec<u8>, Vec<u8>);

/// One shard's entries, encoded, in key order.
fn encode_shard<K, V>(shard: &BTreeMap<K, V>) -> Result<Vec<EncodedEntry>, CodecError>
where
    K: serde::Serialize,
    V: serde::Serialize,
{
    shard
        .iter()
        .map(|(key, value)| Ok((codec::encode(key)?, codec::encode(value)?)))
        .collect()
}

/// Decodes `bytes`, refusing anything but the canonical encoding: it would
/// digest differently from what the table computes as it runs. `what` names
/// the value in the error.
fn decode_canonical<T>(bytes: &[u8], what: impl FnOnce() -> String) -> Result<T, CodecError>
where
    T: serde::Serialize + DeserializeOwned,
{
    let value: T = codec::decode(bytes)?;
    if !codec::encodes_to(&value, bytes)? {
        return Err(CodecError::Decode(format!(
            "{} is not in canonical form",
            what()
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_iteration_across_shards() {
        let table: Table<u64, String> = Table::named("t");
        for k in (0..500u64).rev() {
            table.insert(k, k.to_string());
        }
        let keys = table.keys();
        assert_eq!(keys, (0..500).collect::<Vec<_>>());
        assert_eq!(table.len(), 500);
        assert_eq!(table.range(10..13).len(), 3);
        assert_eq!(table.fold(0, |acc, k, _| acc + k), (0..500).sum::<u64>());
    }

    #[test]
    fn map_operations() {
        let table: Table<String, u64> = Table::named("t");
        assert_eq!(table.insert("a".into(), 1), None);
        assert_eq!(table.insert("a".into(), 2), Some(1));
        assert_eq!(
            table.update(&"a".into(), |v| {
                *v += 1;
                *v
            }),
            Some(3)
        );
        assert_eq!(table.update(&"b".into(), |v| *v), None);
        assert_eq!(
            table.upsert(
                "b".into(),
                || 10,
                |v| {
                    *v += 1;
                    *v
                }
            ),
            11
        );
        assert_eq!(table.with(&"b".into(), |v| v.copied()), Some(11));
        assert!(table.contains_key(&"a".into()));
        assert_eq!(table.remove(&"a".into()), Some(3));
        assert_eq!(table.get(&"a".into()), None);
        table.clear();
        assert!(table.is_empty());
    }

    #[test]
    fn entries_round_trip_and_are_canonical() {
        let a: Table<u64, u64> = Table::named("t");
        let b: Table<u64, u64> = Table::named("t");
        for k in 0..100 {
            a.insert(k, k * 2);
        }
        for k in (0..100).rev() {
            b.insert(k, k * 2);
        }
        let entries = a.encode_entries().unwrap();
        assert_eq!(
            entries,
            b.encode_entries().unwrap(),
            "insertion order does not matter"
        );
        assert_eq!(a.root(), b.root());
        let c: Table<u64, u64> = Table::named("t");
        c.insert(1000, 1);
        c.install(c.decode_entries(&entries).unwrap());
        assert_eq!(c.entries(), a.entries());
        assert_eq!(c.root(), a.root());
        // The installed digest tree keeps following writes.
        c.insert(5, 5);
        a.insert(5, 5);
        assert_eq!(c.root(), a.root());
    }

    proptest::proptest! {
        /// Collecting entries builds the table that inserting them one at a
        /// time in the same order builds: the same contents (the last of a
        /// repeated key's entries stays), the same root, and a digest tree
        /// that keeps following writes after it.
        #[test]
        fn a_table_collected_from_entries_is_the_one_their_inserts_build(
            entries in proptest::collection::vec((0u32..300, 0u32..5), 0..400),
            writes in proptest::collection::vec((0u32..300, proptest::option::of(0u32..5)), 0..50),
        ) {
            let inserted: Table<u32, u32> = Table::named("t");
            for (key, value) in &entries {
                inserted.insert(*key, *value);
            }
            let collected: Table<u32, u32> = Table::named_from("t", entries.iter().copied());
            proptest::prop_assert_eq!(collected.entries(), inserted.entries());
            proptest::prop_assert_eq!(collected.root(), inserted.root());
            for (key, value) in writes {
                for table in [&inserted, &collected] {
                    match value {
                        Some(value) => table.insert(key, value),
                        None => table.remove(&key),
                    };
                }
            }
            proptest::prop_assert_eq!(collected.entries(), inserted.entries());
            proptest::prop_assert_eq!(collected.root(), inserted.root());
        }
    }

    #[test]
    fn of_two_equal_keys_given_to_collect_the_last_stays() {
        let table: Table<u64, String> = [(1, "first"), (2, "only"), (1, "second"), (1, "third")]
            .into_iter()
            .map(|(key, value)| (key, value.to_owned()))
            .collect();
        assert_eq!(
            table.entries(),
            vec![(1, "third".to_owned()), (2, "only".to_owned())]
        );
    }

    #[test]
    fn entries_that_are_not_canonical_are_refused() {
        let table: Table<u64, u64> = Table::named("t");
        let value = codec::encode(&0u64).unwrap();
        // 300 written as a 9-byte varint instead of 3 bytes.
        let long_key = [vec![253], 300u64.to_le_bytes().to_vec()].concat();
        let entries: Entries = [(long_key, value.clone())].into();
        assert!(table.decode_entries(&entries).is_err());
        let entries: Entries = [(vec![0xff; 3], value)].into();
        assert!(table.decode_entries(&entries).is_err());
    }

    /// Runs `f` as a request with access to everything, the way the
    /// executor does: writes staged, then committed unless `f` panics.
    fn request<R>(table: &Table<u64, u64>, f: impl FnOnce() -> R) -> Option<R> {
        let _scope = scope::enter("test", crate::AccessSet::exclusive());
        let transaction = txn::begin();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()?;
        for (_, staged) in transaction.take() {
            table.commit(table.prepare(&staged).unwrap());
        }
        Some(result)
    }

    #[test]
    fn a_request_sees_its_own_writes_and_others_see_them_only_after() {
        let table: Table<u64, u64> = Table::named("t");
        for k in 0..10 {
            table.insert(k, k);
        }
        let seen = request(&table, || {
            table.insert(3, 30);
            table.remove(&4);
            table.insert(20, 200);
            table.update(&5, |v| *v += 50);
            table.upsert(21, || 0, |v| *v += 1);
            // Nothing is committed while the request runs.
            let committed = table.shards[shard_of(&3u64)].read().get(&3).copied();
            (
                table.get(&3),
                table.get(&4),
                table.contains_key(&20),
                table.with(&5, |v| v.copied()),
                table.len(),
                table.keys(),
                table.range(3..6),
                committed,
            )
        })
        .unwrap();
        assert_eq!(seen.0, Some(30));
        assert_eq!(seen.1, None);
        assert!(seen.2);
        assert_eq!(seen.3, Some(55));
        assert_eq!(seen.4, 11);
        assert_eq!(seen.5, vec![0, 1, 2, 3, 5, 6, 7, 8, 9, 20, 21]);
        assert_eq!(seen.6, vec![(3, 30), (5, 55)]);
        assert_eq!(seen.7, Some(3), "the write was staged, not applied");
        assert_eq!(table.get(&3), Some(30));
        assert_eq!(table.get(&4), None);
        assert_eq!(table.len(), 11);
        let fresh: Table<u64, u64> = Table::named("t");
        fresh.install(
            fresh
                .decode_entries(&table.encode_entries().unwrap())
                .unwrap(),
        );
        assert_eq!(fresh.root(), table.root(), "the digest followed the commit");
    }

    #[test]
    fn a_request_that_panics_leaves_no_trace() {
        let table: Table<u64, u64> = Table::named("t");
        table.insert(1, 1);
        let root = table.root();
        let outcome = request(&table, || {
            table.insert(1, 100);
            table.clear();
            table.insert(2, 2);
            panic!("refused halfway");
        });
        assert!(outcome.is_none());
        assert_eq!(table.entries(), vec![(1, 1)]);
        assert_eq!(table.root(), root);
    }

    /// Runs `f` as a request with access to everything; the panic message
    /// if it panicked (then nothing it wrote is committed).
    fn request_panic(table: &Table<u64, u64>, f: impl FnOnce()) -> Option<String> {
        let _scope = scope::enter("test", crate::AccessSet::exclusive());
        let transaction = txn::begin();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(()) => {
                for (_, staged) in transaction.take() {
                    table.commit(table.prepare(&staged).unwrap());
                }
                None
            }
            Err(payload) => Some(
                payload
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_default(),
            ),
        }
    }

    #[test]
    fn writing_a_table_inside_its_own_fold_is_refused_whatever_was_staged_before() {
        let table: Table<u64, u64> = Table::named("t");
        for k in 0..4 {
            table.insert(k, k);
        }
        let root = table.root();
        // Refused the same way whether or not the request had written the
        // table before the fold (it then holds staged writes the fold reads).
        for write_first in [false, true] {
            let message = request_panic(&table, || {
                if write_first {
                    table.insert(10, 10);
                }
                table.fold((), |(), k, _| {
                    table.insert(k + 100, 0);
                });
            });
            assert_eq!(
                message.as_deref(),
                Some(
                    "table `t` was written while being iterated by `fold`; collect what to \
                     change first"
                ),
                "write first: {write_first}"
            );
            assert_eq!(table.entries(), (0..4).map(|k| (k, k)).collect::<Vec<_>>());
            assert_eq!(table.root(), root);
        }
        // The refusal did not leave the thread iterating: writing after a
        // fold is fine.
        assert_eq!(
            request_panic(&table, || {
                let sum = table.fold(0, |sum, _, v| sum + v);
                table.insert(sum, sum);
            }),
            None
        );
        assert_eq!(table.get(&6), Some(6));
    }

    #[test]
    fn clearing_inside_a_request_then_writing() {
        let table: Table<u64, u64> = Table::named("t");
        for k in 0..5 {
            table.insert(k, k);
        }
        let seen = request(&table, || {
            table.clear();
            table.insert(9, 9);
            (table.len(), table.entries(), table.get(&1))
        })
        .unwrap();
        assert_eq!(seen, (1, vec![(9, 9)], None));
        assert_eq!(table.entries(), vec![(9, 9)]);
        let fresh: Table<u64, u64> = Table::named("t");
        fresh.insert(9, 9);
        assert_eq!(fresh.root(), table.root());
    }

    #[test]
    fn renaming_is_refused() {
        let table: Table<u64, u64> = Table::named("accounts");
        assert!(table.bind("accounts").is_ok());
        assert_eq!(
            table.bind("acounts"),
            Err(BindError {
                existing: "accounts",
                requested: "acounts"
            })
        );
    }

    /// Runs `f` as the request `method` with the declared `access`, staging
    /// its writes and committing them; the refusal if one was raised.
    fn as_request<K: TableKey, R>(
        table: &Table<K, u64>,
        access: crate::AccessSet,
        f: impl FnOnce() -> R,
    ) -> Result<R, scope::UndeclaredAccess> {
        let _scope = scope::enter("book", access);
        let transaction = txn::begin();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .map_err(|payload| *payload.downcast::<scope::UndeclaredAccess>().unwrap())?;
        for (_, staged) in transaction.take() {
            table.commit(table.prepare(&staged).unwrap());
        }
        Ok(result)
    }

    fn theatre() -> Table<(u64, u32), u64> {
        let seats: Table<(u64, u32), u64> = Table::named("seats");
        for show in 0..40u64 {
            for seat in (0..10u32).rev() {
                seats.insert((show, seat), show * 100 + u64::from(seat));
            }
        }
        seats
    }

    #[test]
    fn a_prefix_holds_exactly_its_keys_in_order_in_one_shard() {
        let seats = theatre();
        let show: Vec<_> = seats.prefix((7u64,)).entries();
        assert_eq!(
            show,
            (0..10u32)
                .map(|s| ((7, s), 700 + u64::from(s)))
                .collect::<Vec<_>>()
        );
        assert_eq!(seats.prefix((7u64,)).len(), 10);
        assert!(seats.prefix((99u64,)).is_empty());
        // Every key of a show lives in its show's shard.
        let shard = shard_of(&(7u64, 0u32));
        assert!((0..10u32).all(|s| shard_of(&(7u64, s)) == shard));
        assert_eq!(
            seats.shards[shard]
                .read()
                .keys()
                .filter(|k| k.0 == 7)
                .count(),
            10
        );
        // Three-element keys, prefixes of one and two elements.
        let t: Table<(u8, String, u8), u64> = Table::named("t");
        for a in 0..3u8 {
            for b in ["x", "y"] {
                for c in 0..3u8 {
                    t.insert((a, b.to_owned(), c), u64::from(c));
                }
            }
        }
        assert_eq!(t.prefix((1u8,)).len(), 6);
        assert_eq!(
            t.prefix((1u8, "y".to_owned())).keys(),
            (0..3u8).map(|c| (1, "y".to_owned(), c)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_declared_prefix_allows_its_keys_and_nothing_else() {
        let seats = theatre();
        let show = |s: u64| Key::prefix("seats", &(s,));
        let reads = |k: Key| crate::AccessSet::none().read(k);
        // Reading the show, and any seat of it.
        let seen = as_request(&seats, reads(show(3)), || {
            (seats.prefix((3u64,)).len(), seats.get(&(3, 4)))
        });
        assert_eq!(seen, Ok((10, Some(304))));
        // Another show, a seat of another show, the whole table: refused,
        // saying what to declare.
        let refused = as_request(&seats, reads(show(3)), || seats.prefix((4u64,)).len());
        let refusal = refused.unwrap_err();
        assert_eq!(
            (refusal.table.as_str(), refusal.key.as_str()),
            ("seats", "(4, *)")
        );
        assert!(
            refusal.to_string().contains("`#[reads(seats[(4, *)])]`"),
            "{refusal}"
        );
        let refused = as_request(&seats, reads(show(3)), || seats.get(&(4, 0)));
        assert_eq!(refused.unwrap_err().key, "(4, 0)");
        let refused = as_request(&seats, reads(show(3)), || seats.len());
        assert_eq!(refused.unwrap_err().key, "*");
        // A read prefix does not allow writes under it.
        let refused = as_request(&seats, reads(show(3)), || seats.insert((3, 0), 0));
        assert!(
            refused
                .unwrap_err()
                .to_string()
                .contains("`#[writes(seats[(3, 0)])]`")
        );
        // A single seat does not allow its show.
        let refused = as_request(&seats, reads(Key::entry("seats", &(3u64, 0u32))), || {
            seats.prefix((3u64,)).len()
        });
        assert!(refused.is_err());
        // The whole table allows every show.
        let whole = as_request(&seats, reads(Key::table("seats")), || {
            seats.prefix((39u64,)).len()
        });
        assert_eq!(whole, Ok(10));
    }

    #[test]
    fn a_prefix_sees_the_requests_own_writes() {
        let seats = theatre();
        let access = crate::AccessSet::none().write(Key::prefix("seats", &(5u64,)));
        let seen = as_request(&seats, access, || {
            seats.remove(&(5, 0));
            seats.insert((5, 3), 0);
            seats.insert((5, 42), 42);
            seats.prefix((5u64,)).entries()
        })
        .unwrap();
        let mut expected: Vec<_> = (1..10u32).map(|s| ((5, s), 500 + u64::from(s))).collect();
        expected[2].1 = 0;
        expected.push(((5, 42), 42));
        assert_eq!(seen, expected);
        assert_eq!(seats.prefix((5u64,)).entries(), expected, "committed");
        // A tuple table's digest does not depend on how it is sharded or
        // filled: the same entries give the same root.
        let again: Table<(u64, u32), u64> = Table::named("seats");
        for ((show, seat), v) in seats.entries().into_iter().rev() {
            again.insert((show, seat), v);
        }
        assert_eq!(again.root(), seats.root());
    }
}

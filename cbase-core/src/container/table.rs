//! `Table<K, V>`: a sharded, ordered map whose every access is checked.

use std::any::Any;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::ops::RangeBounds;

use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::ser::{Serialize, Serializer};

use super::{BindError, Binding, Container};
use crate::codec::{self, CodecError};
use crate::key::{Key, TableId, ValueHash};
use crate::scope::{self, AccessKind};

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
/// one key are checked against the running request's rule for `table[key]`;
/// whole-table operations ([`len`](Table::len), [`fold`](Table::fold),
/// [`entries`](Table::entries), [`range`](Table::range), ...) need `table[*]`.
/// Iteration is always in key order, so it is the same on every replica.
///
/// Keys are sharded by their [`ValueHash`] over independent locks, so requests
/// on different keys do not contend.
pub struct Table<K, V> {
    binding: Binding,
    shards: Box<[RwLock<BTreeMap<K, V>>]>,
}

/// What a table's key and value types must offer: an order (for deterministic
/// iteration), a canonical encoding (for key hashes and snapshots) and a
/// readable form for error messages.
pub trait TableKey:
    Ord + Clone + fmt::Debug + serde::Serialize + DeserializeOwned + Send + Sync + 'static
{
}
impl<T> TableKey for T where
    T: Ord + Clone + fmt::Debug + serde::Serialize + DeserializeOwned + Send + Sync + 'static
{
}

impl<K, V> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            binding: Binding::default(),
            shards: (0..SHARDS).map(|_| RwLock::new(BTreeMap::new())).collect(),
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

    fn check_key(&self, kind: AccessKind, key: &K) -> usize {
        let hash = ValueHash::of(key);
        let (name, id) = self.binding.for_access();
        scope::check(kind, name, &Key::Entry(id, hash), || format!("{key:?}"));
        if kind == AccessKind::Write {
            self.refuse_write_while_iterating(name, id);
        }
        (hash.0 % SHARDS as u64) as usize
    }

    fn check_whole(&self, kind: AccessKind) {
        let (name, id) = self.binding.for_access();
        scope::check(kind, name, &Key::Table(id), || "*".to_owned());
        if kind == AccessKind::Write {
            self.refuse_write_while_iterating(name, id);
        }
    }

    fn refuse_write_while_iterating(&self, name: &str, id: TableId) {
        if ITERATING.with_borrow(|tables| tables.contains(&id)) {
            panic!(
                "table `{name}` was written while being iterated by `fold`; collect what to change first"
            );
        }
    }

    /// A copy of the value at `key`. Needs read access to `table[key]`.
    pub fn get(&self, key: &K) -> Option<V> {
        let shard = self.check_key(AccessKind::Read, key);
        self.shards[shard].read_recursive().get(key).cloned()
    }

    /// Calls `f` with a reference to the value at `key`, without copying it.
    pub fn with<R>(&self, key: &K, f: impl FnOnce(Option<&V>) -> R) -> R {
        let shard = self.check_key(AccessKind::Read, key);
        f(self.shards[shard].read_recursive().get(key))
    }

    /// Whether `key` has a value. Needs read access to `table[key]`.
    pub fn contains_key(&self, key: &K) -> bool {
        let shard = self.check_key(AccessKind::Read, key);
        self.shards[shard].read_recursive().contains_key(key)
    }

    /// Sets the value at `key`, returning the previous one. Needs write access.
    pub fn insert(&self, key: K, value: V) -> Option<V> {
        let shard = self.check_key(AccessKind::Write, &key);
        self.shards[shard].write().insert(key, value)
    }

    /// Changes the value at `key` in place, if there is one.
    pub fn update<R>(&self, key: &K, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let shard = self.check_key(AccessKind::Write, key);
        self.shards[shard].write().get_mut(key).map(f)
    }

    /// Changes the value at `key` in place, first inserting `default()` if
    /// there is none.
    pub fn upsert<R>(&self, key: K, default: impl FnOnce() -> V, f: impl FnOnce(&mut V) -> R) -> R {
        let shard = self.check_key(AccessKind::Write, &key);
        f(self.shards[shard]
            .write()
            .entry(key)
            .or_insert_with(default))
    }

    /// Removes and returns the value at `key`. Needs write access.
    pub fn remove(&self, key: &K) -> Option<V> {
        let shard = self.check_key(AccessKind::Write, key);
        self.shards[shard].write().remove(key)
    }

    /// The number of entries. Needs read access to `table[*]`.
    pub fn len(&self) -> usize {
        self.check_whole(AccessKind::Read);
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
        self.check_whole(AccessKind::Read);
        let (_, id) = self.binding.for_access();
        let guards: Vec<_> = self.shards.iter().map(|s| s.read_recursive()).collect();
        ITERATING.with_borrow_mut(|tables| tables.push(id));
        // Popped even if `f` panics, so a refused access inside the fold does
        // not leave this thread believing it still iterates.
        struct Pop;
        impl Drop for Pop {
            fn drop(&mut self) {
                ITERATING.with_borrow_mut(|tables| tables.pop());
            }
        }
        let _pop = Pop;
        let mut acc = init;
        for (k, v) in merge_sorted(guards.iter().map(|g| g.iter())) {
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
        self.check_whole(AccessKind::Read);
        let guards: Vec<_> = self.shards.iter().map(|s| s.read_recursive()).collect();
        merge_sorted(guards.iter().map(|g| g.range(range.clone())))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Removes every entry. Needs write access to `table[*]`.
    pub fn clear(&self) {
        self.check_whole(AccessKind::Write);
        for shard in self.shards.iter() {
            shard.write().clear();
        }
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

/// Serializes a table's entries in key order without copying them.
struct SortedEntries<'a, K, V>(&'a [parking_lot::RwLockReadGuard<'a, BTreeMap<K, V>>]);

impl<K: Ord + serde::Serialize, V: serde::Serialize> Serialize for SortedEntries<'_, K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = self.0.iter().map(|g| g.len()).sum();
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(len))?;
        for entry in merge_sorted(self.0.iter().map(|g| g.iter())) {
            seq.serialize_element(&entry)?;
        }
        seq.end()
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

    fn encode_snapshot(&self) -> Result<Vec<u8>, CodecError> {
        let guards: Vec<_> = self.shards.iter().map(|s| s.read_recursive()).collect();
        codec::encode(&SortedEntries(&guards))
    }

    fn decode_snapshot(&self, bytes: &[u8]) -> Result<Box<dyn Any + Send>, CodecError> {
        let entries: Vec<(K, V)> = codec::decode(bytes)?;
        let mut shards: Vec<BTreeMap<K, V>> = (0..SHARDS).map(|_| BTreeMap::new()).collect();
        let mut previous: Option<&K> = None;
        for (k, _) in &entries {
            // The canonical form is strictly increasing; anything else is not
            // a snapshot this code wrote, and would digest differently.
            if previous.is_some_and(|p| p >= k) {
                return Err(CodecError::Decode(format!(
                    "table snapshot keys are not strictly increasing at {k:?}"
                )));
            }
            previous = Some(k);
        }
        for (k, v) in entries {
            let shard = (ValueHash::of(&k).0 % SHARDS as u64) as usize;
            shards[shard].insert(k, v);
        }
        Ok(Box::new(shards))
    }

    fn install_snapshot(&self, staged: Box<dyn Any + Send>) {
        let shards = staged
            .downcast::<Vec<BTreeMap<K, V>>>()
            .expect("install_snapshot takes what this table's decode_snapshot returned");
        for (lock, contents) in self.shards.iter().zip(*shards) {
            *lock.write() = contents;
        }
    }
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
    fn snapshot_round_trip_is_canonical() {
        let a: Table<u64, u64> = Table::named("t");
        let b: Table<u64, u64> = Table::named("t");
        for k in 0..100 {
            a.insert(k, k * 2);
        }
        for k in (0..100).rev() {
            b.insert(k, k * 2);
        }
        let bytes = a.encode_snapshot().unwrap();
        assert_eq!(
            bytes,
            b.encode_snapshot().unwrap(),
            "insertion order does not matter"
        );
        let c: Table<u64, u64> = Table::named("t");
        c.insert(1000, 1);
        c.install_snapshot(c.decode_snapshot(&bytes).unwrap());
        assert_eq!(c.entries(), a.entries());
    }

    #[test]
    fn snapshot_with_unsorted_keys_is_refused() {
        let table: Table<u64, u64> = Table::named("t");
        let bytes = codec::encode(&vec![(2u64, 0u64), (1, 0)]).unwrap();
        assert!(table.decode_snapshot(&bytes).is_err());
        let bytes = codec::encode(&vec![(1u64, 0u64), (1, 0)]).unwrap();
        assert!(table.decode_snapshot(&bytes).is_err());
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
}

//! Keys: what a request declares it reads or writes.
//!
//! A key names a region of the replicated state on two axes, the table and the
//! value within it, either of which may be a wildcard:
//!
//! | key                    | rule syntax        | covers                          |
//! |------------------------|--------------------|---------------------------------|
//! | [`Key::All`]           | `*`                | everything                      |
//! | [`Key::Table`]         | `accounts[*]`      | every value of one table        |
//! | [`Key::Value`]         | `id`               | one value, in every table       |
//! | [`Key::Entry`]         | `accounts[id]`     | one value of one table          |
//! | [`Key::Prefix`]        | `seats[(show, *)]` | the values under a tuple prefix |
//! | [`Key::TupleEntry`]    | `seats[(show, n)]` | one tuple value of one table    |
//! | [`Key::TupleValue`]    | `pair` (a tuple)   | one tuple value, in every table |
//!
//! Values are reduced to a fixed-width [`ValueHash`] computed with a fixed
//! algorithm (blake3) over the canonical encoding of [`crate::codec`], so every
//! replica derives the same key from the same argument. Two different values
//! that collide only make two requests look dependent (a false conflict), which
//! costs concurrency, never correctness.
//!
//! # Prefixes
//!
//! A table keyed by a tuple of 2 to 4 elements, such as `Table<(u64, u32), Seat>`,
//! can be declared over part of its keys: `seats[(show, *)]` covers every key
//! whose first element is `show`, and with a 3-tuple key `t[(a, b, *)]` every key
//! starting with `a, b`. A prefix is the hash of the canonical encoding of its
//! leading elements (a [`PrefixHash`], which also encodes how many there are),
//! and a tuple value carries the hashes of all its shorter prefixes (a
//! [`PrefixPath`]), so that an entry `seats[(show, seat)]` knows, without any
//! type information, which prefix it lies under. That is why a tuple key is its
//! own variant ([`Key::TupleEntry`], [`Key::TupleValue`]): [`Key::entry`] and
//! [`Key::value`] pick it whenever the value is a tuple. As for values, two
//! prefixes whose hashes collide only look like one, which costs a false
//! conflict.
//!
//! A plain [`Key::Entry`] or [`Key::Value`] never covers a tuple entry (the
//! lock of a prefix would not see it), so a rule must name a tuple key by a
//! tuple, as the table's key type does.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A table, identified by a 64-bit FNV-1a hash of its name.
///
/// The hash is computable in `const` context, so generated code can embed table
/// identities as constants.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TableId(pub u64);

impl TableId {
    /// The identity of the table called `name` (the field name in a
    /// `#[derive(State)]` struct).
    pub const fn of(name: &str) -> TableId {
        let bytes = name.as_bytes();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut i = 0;
        while i < bytes.len() {
            hash ^= bytes[i] as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            i += 1;
        }
        TableId(hash)
    }
}

impl fmt::Debug for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TableId({:016x})", self.0)
    }
}

/// The fixed-width hash of one key value.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ValueHash(pub u64);

impl ValueHash {
    /// Hashes `value` through its canonical encoding.
    ///
    /// Values that encode alike hash alike: `7u64` and `&7u64`, `String` and
    /// `&str` with the same text. Integers are encoded as varints, so unsigned
    /// integers of different widths with the same value hash alike (and so do
    /// signed ones), but a signed and an unsigned integer do not, nor does a
    /// `u8` above 250 and the same value in a wider type. So a rule's key
    /// expression should have the key type of the table it names.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> ValueHash {
        // Keys are hashed for every access set and every table access, and
        // most encode in a few bytes: encoded on the stack and hashed in one
        // call, one costs a third of feeding a hasher field by field.
        let mut encoded = KeyBytes::default();
        // A serializer that fails (e.g. a map of unknown length) still
        // hashes deterministically: whatever it wrote before failing, plus
        // a marker.
        if crate::codec::encode_to_writer(value, &mut encoded).is_err() {
            encoded.extend(b"\xffcbase:unencodable-key");
        }
        ValueHash::of_encoded(encoded.as_slice())
    }
}

impl ValueHash {
    /// Hashes a canonical encoding: `ValueHash::of(v)` is
    /// `ValueHash::of_encoded(&codec::encode(v)?)`.
    pub fn of_encoded(encoded: &[u8]) -> ValueHash {
        let digest = blake3::hash(encoded);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_bytes()[..8]);
        ValueHash(u64::from_le_bytes(first))
    }
}

/// A key's encoding: on the stack up to 64 bytes, on the heap beyond.
struct KeyBytes {
    inline: [u8; 64],
    len: usize,
    spilled: Vec<u8>,
}

impl Default for KeyBytes {
    fn default() -> KeyBytes {
        KeyBytes {
            inline: [0; 64],
            len: 0,
            spilled: Vec::new(),
        }
    }
}

impl KeyBytes {
    fn extend(&mut self, bytes: &[u8]) {
        if self.spilled.is_empty() && self.len + bytes.len() <= self.inline.len() {
            self.inline[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        } else {
            if self.spilled.is_empty() {
                self.spilled.extend_from_slice(&self.inline[..self.len]);
            }
            self.spilled.extend_from_slice(bytes);
        }
    }

    fn as_slice(&self) -> &[u8] {
        if self.spilled.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spilled
        }
    }
}

impl std::io::Write for KeyBytes {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.extend(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for ValueHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ValueHash({:016x})", self.0)
    }
}

/// The most elements a prefix has: tuple keys have 2 to 4 elements, and a
/// prefix is shorter than its key.
pub const MAX_PREFIX_LEN: usize = 3;

/// The fixed-width hash of a key prefix: the first `len` elements of a tuple.
///
/// It is the blake3 hash, in its key-derivation mode (so it never equals a
/// [`ValueHash`] by construction), of the canonical encoding of those
/// elements followed by `len`: prefixes of different lengths differ even when
/// their elements encode alike.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PrefixHash(pub u64);

impl PrefixHash {
    /// The hash of the prefix of `len` elements whose canonical encoding is
    /// `encoded` (the elements' encodings one after the other).
    pub fn of_encoded(encoded: &[u8], len: usize) -> PrefixHash {
        let mut hasher = blake3::Hasher::new_derive_key("cbase key prefix v1");
        hasher.update(encoded);
        hasher.update(&(len as u64).to_le_bytes());
        let digest = hasher.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_bytes()[..8]);
        PrefixHash(u64::from_le_bytes(first))
    }
}

impl fmt::Debug for PrefixHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrefixHash({:016x})", self.0)
    }
}

/// The hashes of the prefixes of a tuple, shortest first: of its first
/// element, of its first two, ... up to [`MAX_PREFIX_LEN`].
///
/// For an entry it lists the prefixes the entry lies under; for a
/// [`Key::Prefix`] it lists the prefix itself last, after the shorter
/// prefixes it lies under.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PrefixPath {
    hashes: [PrefixHash; MAX_PREFIX_LEN],
    len: u8,
}

impl PrefixPath {
    /// The prefixes of lengths `1..=len` of the tuple whose elements'
    /// encodings end at `ends` in `encoded` (at most [`MAX_PREFIX_LEN`]).
    fn of_elements(encoded: &[u8], ends: &[usize], len: usize) -> PrefixPath {
        let len = len.min(MAX_PREFIX_LEN);
        let mut hashes = [PrefixHash(0); MAX_PREFIX_LEN];
        for (i, hash) in hashes.iter_mut().enumerate().take(len) {
            *hash = PrefixHash::of_encoded(&encoded[..ends[i]], i + 1);
        }
        PrefixPath {
            hashes,
            len: len as u8,
        }
    }

    /// The hashes, shortest prefix first.
    pub fn hashes(&self) -> &[PrefixHash] {
        &self.hashes[..usize::from(self.len).min(MAX_PREFIX_LEN)]
    }

    /// How many prefixes there are.
    pub fn len(&self) -> usize {
        self.hashes().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.hashes().is_empty()
    }

    /// The longest prefix.
    pub fn last(&self) -> Option<PrefixHash> {
        self.hashes().last().copied()
    }

    /// Whether the prefix `prefix` (a [`Key::Prefix`]'s path) is one of these:
    /// its last hash is ours at its length.
    pub fn lies_under(&self, prefix: &PrefixPath) -> bool {
        match prefix.last() {
            Some(last) => self.hashes().get(prefix.len() - 1) == Some(&last),
            None => false,
        }
    }
}

impl fmt::Debug for PrefixPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.hashes().iter().map(|h| format!("{:016x}", h.0)))
            .finish()
    }
}

/// What hashing a key value finds: its [`ValueHash`] and, for a tuple of at
/// least two elements, the [`PrefixPath`] of its shorter prefixes.
pub(crate) fn hash_key<T: Serialize + ?Sized>(value: &T) -> (ValueHash, Option<PrefixPath>) {
    let mut encoded = Vec::new();
    match crate::codec::encode_tuple_elements(value, &mut encoded) {
        Some(ends) if ends.len() >= 2 => {
            let hash = ValueHash::of_encoded(&encoded);
            let path = PrefixPath::of_elements(&encoded, &ends, ends.len() - 1);
            (hash, Some(path))
        }
        _ => (ValueHash::of(value), None),
    }
}

/// One declared region of state. See the [module documentation](self).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Key {
    /// Everything (`*`).
    All,
    /// Every value of one table (`table[*]`).
    Table(TableId),
    /// One value in every table (a bare argument, `id`).
    Value(ValueHash),
    /// One value of one table (`table[expr]`) whose key is not a tuple.
    Entry(TableId, ValueHash),
    /// The values of one table whose tuple keys start with a prefix
    /// (`table[(a, *)]`): the path lists the prefix last, after the shorter
    /// prefixes it lies under.
    Prefix(TableId, PrefixPath),
    /// One value of one table whose key is a tuple (`table[(a, b)]`), with
    /// the prefixes it lies under.
    TupleEntry(TableId, ValueHash, PrefixPath),
    /// One tuple value in every table (a bare tuple argument), with the
    /// prefixes it lies under.
    TupleValue(ValueHash, PrefixPath),
}

impl Key {
    /// The key `table[value]`: a [`Key::TupleEntry`] if `value` is a tuple
    /// of two or more elements, else a [`Key::Entry`].
    pub fn entry<T: Serialize + ?Sized>(table: &str, value: &T) -> Key {
        Key::entry_of(TableId::of(table), value)
    }

    /// The key of `value` in the table `table`, as [`Key::entry`].
    pub fn entry_of<T: Serialize + ?Sized>(table: TableId, value: &T) -> Key {
        match hash_key(value) {
            (hash, Some(path)) => Key::TupleEntry(table, hash, path),
            (hash, None) => Key::Entry(table, hash),
        }
    }

    /// The key `table[(prefix.0, .., *)]`: the values of `table` whose tuple
    /// keys start with the elements of the tuple `prefix` (a value that is not
    /// a tuple is a prefix of one element, like a 1-tuple of it). Prefixes
    /// longer than [`MAX_PREFIX_LEN`] are cut to that length, which covers more.
    pub fn prefix<T: Serialize + ?Sized>(table: &str, prefix: &T) -> Key {
        Key::prefix_of(TableId::of(table), prefix)
    }

    /// The key `prefix` in the table `table`, as [`Key::prefix`].
    pub fn prefix_of<T: Serialize + ?Sized>(table: TableId, prefix: &T) -> Key {
        let mut encoded = Vec::new();
        let path = match crate::codec::encode_tuple_elements(prefix, &mut encoded) {
            Some(ends) if !ends.is_empty() => PrefixPath::of_elements(&encoded, &ends, ends.len()),
            _ => {
                let encoded = crate::codec::encode(prefix).unwrap_or_default();
                PrefixPath::of_elements(&encoded, &[encoded.len()], 1)
            }
        };
        Key::Prefix(table, path)
    }

    /// The key `table[*]`.
    pub const fn table(table: &str) -> Key {
        Key::Table(TableId::of(table))
    }

    /// The bare key `value`: that value in every table.
    /// A [`Key::TupleValue`] if `value` is a tuple of two or more elements.
    pub fn value<T: Serialize + ?Sized>(value: &T) -> Key {
        match hash_key(value) {
            (hash, Some(path)) => Key::TupleValue(hash, path),
            (hash, None) => Key::Value(hash),
        }
    }

    /// The table this key names, if it names exactly one.
    pub fn table_id(&self) -> Option<TableId> {
        match *self {
            Key::Table(t) | Key::Entry(t, _) | Key::Prefix(t, _) | Key::TupleEntry(t, _, _) => {
                Some(t)
            }
            Key::All | Key::Value(_) | Key::TupleValue(..) => None,
        }
    }

    /// Whether the two regions share at least one cell.
    ///
    /// A prefix meets the entries, values and prefixes that lie under it,
    /// and the prefixes it lies under; nothing that is not a tuple lies under
    /// a prefix (see the [module documentation](self)).
    pub fn overlaps(&self, other: &Key) -> bool {
        use Key::*;
        match (*self, *other) {
            (All, _) | (_, All) => true,
            (Table(a), b) | (b, Table(a)) => match b {
                Table(t) | Entry(t, _) | Prefix(t, _) | TupleEntry(t, _, _) => a == t,
                Value(_) | TupleValue(..) => true,
                All => unreachable!("matched above"),
            },
            (Prefix(a, p), b) | (b, Prefix(a, p)) => match b {
                Prefix(t, q) => a == t && (p.lies_under(&q) || q.lies_under(&p)),
                TupleEntry(t, _, q) => a == t && q.lies_under(&p),
                TupleValue(_, q) => q.lies_under(&p),
                Entry(..) | Value(_) => false,
                All | Table(_) => unreachable!("matched above"),
            },
            (Value(a) | TupleValue(a, _), Value(b) | TupleValue(b, _)) => a == b,
            (Value(a) | TupleValue(a, _), Entry(_, b) | TupleEntry(_, b, _))
            | (Entry(_, b) | TupleEntry(_, b, _), Value(a) | TupleValue(a, _)) => a == b,
            (Entry(t1, v1) | TupleEntry(t1, v1, _), Entry(t2, v2) | TupleEntry(t2, v2, _)) => {
                t1 == t2 && v1 == v2
            }
        }
    }

    /// Whether this key includes every cell of `other`: whether a request
    /// that declared this key may access `other`.
    ///
    /// A tuple key is covered only by keys that lock its prefixes: a tuple
    /// key with the same prefixes, a prefix it lies under, its table, or `*`.
    pub fn covers(&self, other: &Key) -> bool {
        use Key::*;
        match (*self, *other) {
            (All, _) => true,
            (_, All) => false,
            (Table(a), Table(b) | Entry(b, _) | Prefix(b, _) | TupleEntry(b, _, _)) => a == b,
            (Table(_), Value(_) | TupleValue(..)) => false,
            (Prefix(a, p), Prefix(b, q) | TupleEntry(b, _, q)) => a == b && q.lies_under(&p),
            // A bare value is in every table, a prefix in one.
            (Prefix(..), Table(_) | Entry(..) | Value(_) | TupleValue(..)) => false,
            (Value(a), Value(b) | Entry(_, b)) => a == b,
            (Value(_), Table(_) | Prefix(..) | TupleEntry(..) | TupleValue(..)) => false,
            (TupleValue(a, _), Value(b) | Entry(_, b)) => a == b,
            (TupleValue(a, p), TupleValue(b, q) | TupleEntry(_, b, q)) => a == b && p == q,
            (TupleValue(..), Table(_) | Prefix(..)) => false,
            (Entry(t1, v1), Entry(t2, v2)) => t1 == t2 && v1 == v2,
            (TupleEntry(t1, v1, _), Entry(t2, v2)) => t1 == t2 && v1 == v2,
            (TupleEntry(t1, v1, p), TupleEntry(t2, v2, q)) => t1 == t2 && v1 == v2 && p == q,
            (Entry(..) | TupleEntry(..), Table(_) | Value(_) | Prefix(..) | TupleValue(..)) => {
                false
            }
            (Entry(..), TupleEntry(..)) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_ids_are_stable_constants() {
        const ACCOUNTS: TableId = TableId::of("accounts");
        assert_eq!(ACCOUNTS, TableId::of("accounts"));
        assert_ne!(ACCOUNTS, TableId::of("acounts"));
        // FNV-1a of the empty string is the offset basis: the algorithm is fixed.
        assert_eq!(TableId::of("").0, 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn value_hashes_follow_the_encoding_not_the_type_name() {
        assert_eq!(ValueHash::of(&7u64), ValueHash::of(&&7u64));
        assert_eq!(ValueHash::of("abc"), ValueHash::of(&String::from("abc")));
        assert_ne!(ValueHash::of(&7u64), ValueHash::of(&8u64));
    }

    #[test]
    fn value_hash_is_pinned_across_builds() {
        // If this changes, replicas built from different versions would derive
        // different keys for the same argument: treat it as a wire-format change.
        assert_eq!(ValueHash::of(&42u64), ValueHash::of(&42u64));
        let pinned = ValueHash::of(&42u64).0;
        let again = {
            let mut hasher = blake3::Hasher::new();
            hasher.update(&[42u8]); // varint encoding of 42
            let digest = hasher.finalize();
            u64::from_le_bytes(digest.as_bytes()[..8].try_into().unwrap())
        };
        assert_eq!(pinned, again);
    }

    #[test]
    fn a_value_hash_is_the_hash_of_the_encoding_however_long() {
        // Keys that fit the stack buffer, fill it exactly, and spill over.
        for len in [0, 1, 62, 63, 64, 65, 200, 5000] {
            let key = "k".repeat(len);
            let encoded = crate::codec::encode(&key).unwrap();
            assert_eq!(
                ValueHash::of(&key),
                ValueHash::of_encoded(&encoded),
                "{len}"
            );
        }
        let tuple = ("a".repeat(40), 7u64, "b".repeat(40));
        let encoded = crate::codec::encode(&tuple).unwrap();
        assert_eq!(ValueHash::of(&tuple), ValueHash::of_encoded(&encoded));
    }

    #[test]
    fn covers_implies_overlaps() {
        let t = TableId::of("t");
        let u = TableId::of("u");
        let v = ValueHash::of(&1u8);
        let w = ValueHash::of(&2u8);
        let keys = [
            Key::All,
            Key::Table(t),
            Key::Table(u),
            Key::Value(v),
            Key::Value(w),
            Key::Entry(t, v),
            Key::Entry(u, w),
            Key::Entry(t, w),
        ];
        for a in &keys {
            assert!(a.covers(a));
            for b in &keys {
                assert_eq!(a.overlaps(b), b.overlaps(a), "{a:?} {b:?}");
                if a.covers(b) {
                    assert!(a.overlaps(b), "{a:?} covers but does not overlap {b:?}");
                }
            }
        }
    }

    #[test]
    fn tuple_keys_carry_their_prefixes() {
        let seats = TableId::of("seats");
        let Key::TupleEntry(t, hash, path) = Key::entry("seats", &(7u64, 3u32)) else {
            panic!("a tuple key is a tuple entry");
        };
        assert_eq!(t, seats);
        assert_eq!(hash, ValueHash::of(&(7u64, 3u32)), "the same value hash");
        assert_eq!(path.len(), 1);
        let Key::Prefix(_, show) = Key::prefix("seats", &(7u64,)) else {
            panic!("a prefix");
        };
        assert_eq!(show.len(), 1);
        assert_eq!(path, show, "the entry lies under its show");
        assert_eq!(Key::prefix("seats", &7u64), Key::prefix("seats", &(7u64,)));
        assert_ne!(
            Key::prefix("seats", &(8u64,)),
            Key::prefix("seats", &(7u64,))
        );
        // Not tuples: plain keys.
        assert_eq!(
            Key::entry("seats", &7u64),
            Key::Entry(seats, ValueHash::of(&7u64))
        );
        assert_eq!(
            Key::entry("seats", &(7u64,)),
            Key::Entry(seats, ValueHash::of(&7u64))
        );
        assert_eq!(Key::value(&7u64), Key::Value(ValueHash::of(&7u64)));
        assert!(matches!(Key::value(&(1u8, 2u8)), Key::TupleValue(..)));
        // A 4-tuple lies under three prefixes, the prefix (a, b) under one.
        let Key::TupleEntry(_, _, four) = Key::entry("t", &(1u8, 2u8, 3u8, 4u8)) else {
            panic!("a tuple entry");
        };
        assert_eq!(four.len(), 3);
        let Key::Prefix(_, ab) = Key::prefix("t", &(1u8, 2u8)) else {
            panic!("a prefix");
        };
        assert_eq!(ab.hashes(), &four.hashes()[..2]);
        // The length is part of a prefix's hash: (1, 2) is not (1,) then (2,).
        assert_ne!(ab.hashes()[0], ab.hashes()[1]);
    }

    #[test]
    fn prefixes_meet_what_lies_under_them_and_nothing_else() {
        let seat = |show: u64, seat: u32| Key::entry("seats", &(show, seat));
        let show = |show: u64| Key::prefix("seats", &(show,));
        assert!(show(1).overlaps(&seat(1, 5)) && show(1).covers(&seat(1, 5)));
        assert!(!show(1).overlaps(&seat(2, 5)) && !show(1).covers(&seat(2, 5)));
        assert!(!show(1).overlaps(&show(2)));
        assert!(!show(1).overlaps(&Key::entry("other", &(1u64, 5u32))));
        assert!(Key::table("seats").covers(&show(1)) && !show(1).covers(&Key::table("seats")));
        assert!(Key::table("seats").overlaps(&show(1)));
        assert!(!Key::table("other").overlaps(&show(1)));
        assert!(Key::value(&(1u64, 5u32)).overlaps(&show(1)));
        assert!(!Key::value(&(2u64, 5u32)).overlaps(&show(1)));
        // Longer prefixes lie under shorter ones.
        let a = Key::prefix("t", &(1u8,));
        let ab = Key::prefix("t", &(1u8, 2u8));
        let ac = Key::prefix("t", &(1u8, 3u8));
        assert!(a.overlaps(&ab) && ab.overlaps(&a) && a.covers(&ab) && !ab.covers(&a));
        assert!(!ab.overlaps(&ac));
        assert!(ab.covers(&Key::entry("t", &(1u8, 2u8, 9u8))));
        assert!(!ab.covers(&Key::entry("t", &(1u8, 3u8, 9u8))));
        // A plain key of the same hash never covers a tuple entry: it would
        // not lock the entry's prefixes.
        let tuple = seat(1, 5);
        let Key::TupleEntry(t, hash, _) = tuple else {
            unreachable!()
        };
        assert!(!Key::Entry(t, hash).covers(&tuple));
        assert!(!Key::Value(hash).covers(&tuple));
        assert!(tuple.covers(&Key::Entry(t, hash)));
        assert!(Key::value(&(1u64, 5u32)).covers(&tuple));
    }

    #[test]
    fn covers_implies_overlaps_with_prefixes() {
        let mut keys = vec![Key::All, Key::table("t"), Key::table("u")];
        for a in 0..2u8 {
            keys.push(Key::prefix("t", &(a,)));
            keys.push(Key::prefix("u", &(a,)));
            keys.push(Key::value(&a));
            for b in 0..2u8 {
                keys.push(Key::prefix("t", &(a, b)));
                keys.push(Key::entry("t", &(a, b)));
                keys.push(Key::entry("t", &(a, b, 0u8)));
                keys.push(Key::value(&(a, b)));
            }
        }
        for a in &keys {
            assert!(a.covers(a), "{a:?}");
            for b in &keys {
                assert_eq!(a.overlaps(b), b.overlaps(a), "{a:?} {b:?}");
                if a.covers(b) {
                    assert!(a.overlaps(b), "{a:?} covers but does not overlap {b:?}");
                }
            }
        }
    }
}

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
//!
//! Values are reduced to a fixed-width [`ValueHash`] computed with a fixed
//! algorithm (blake3) over the canonical encoding of [`crate::codec`], so every
//! replica derives the same key from the same argument. Two different values
//! that collide only make two requests look dependent (a false conflict), which
//! costs concurrency, never correctness.

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
        let mut hasher = blake3::Hasher::new();
        // Encoding into a hasher cannot run out of space; a serializer that
        // fails (e.g. a map of unknown length) still hashes deterministically:
        // whatever it wrote before failing, plus a marker.
        if crate::codec::encode_to_writer(value, &mut crate::codec::HashWriter(&mut hasher))
            .is_err()
        {
            hasher.update(b"\xffcbase:unencodable-key");
        }
        let digest = hasher.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_bytes()[..8]);
        ValueHash(u64::from_le_bytes(first))
    }
}

impl fmt::Debug for ValueHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ValueHash({:016x})", self.0)
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
    /// One value of one table (`table[expr]`).
    Entry(TableId, ValueHash),
}

impl Key {
    /// The key `table[value]`.
    pub fn entry<T: Serialize + ?Sized>(table: &str, value: &T) -> Key {
        Key::Entry(TableId::of(table), ValueHash::of(value))
    }

    /// The key `table[*]`.
    pub const fn table(table: &str) -> Key {
        Key::Table(TableId::of(table))
    }

    /// The bare key `value`: that value in every table.
    pub fn value<T: Serialize + ?Sized>(value: &T) -> Key {
        Key::Value(ValueHash::of(value))
    }

    /// Whether the two regions share at least one cell.
    pub fn overlaps(&self, other: &Key) -> bool {
        use Key::*;
        match (*self, *other) {
            (All, _) | (_, All) => true,
            (Table(a), Table(b)) => a == b,
            (Table(a), Entry(b, _)) | (Entry(b, _), Table(a)) => a == b,
            (Table(_), Value(_)) | (Value(_), Table(_)) => true,
            (Value(a), Value(b)) => a == b,
            (Value(a), Entry(_, b)) | (Entry(_, b), Value(a)) => a == b,
            (Entry(t1, v1), Entry(t2, v2)) => t1 == t2 && v1 == v2,
        }
    }

    /// Whether this key includes every cell of `other`.
    pub fn covers(&self, other: &Key) -> bool {
        use Key::*;
        match (*self, *other) {
            (All, _) => true,
            (_, All) => false,
            (Table(a), Table(b)) => a == b,
            (Table(a), Entry(b, _)) => a == b,
            (Table(_), Value(_)) => false,
            (Value(a), Value(b)) => a == b,
            (Value(a), Entry(_, b)) => a == b,
            (Value(_), Table(_)) => false,
            (Entry(t1, v1), Entry(t2, v2)) => t1 == t2 && v1 == v2,
            (Entry(..), _) => false,
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
}

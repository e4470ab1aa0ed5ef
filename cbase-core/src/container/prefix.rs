//! Tuple keys and their prefixes, as types: which prefixes a table's key
//! has, and how a [`Table`](super::Table) finds the entries under one without
//! looking at the others.
//!
//! A table keyed by a tuple of 2 to 4 elements is ordered by its first element,
//! then its second, and so on, so the keys that start with a prefix are next
//! to each other. A [`BTreeMap`](std::collections::BTreeMap) can only be
//! searched with values of its key type (or a type the key borrows as), and a
//! bound such as "the first key starting with `show`" is not a key; so each
//! tuple key borrows as a [`PrefixProbe`] trait object, and a prefix makes two
//! probes that sort just before and just after its keys. A search costs
//! O(log n) plus the entries found.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, btree_map};
use std::fmt;

use serde::Serialize;

/// A key type with prefixes: a tuple of 2 to 4 elements.
///
/// Rules name a prefix as `table[(a, *)]` (or `table[(a, b, *)]` with a 3- or
/// 4-tuple key); `#[derive(State)]` records each table's key arity through this
/// trait, so a prefix rule on a table whose key is not a tuple, or that is not
/// shorter than its key, fails the build.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tuple key, so it has no prefixes",
    label = "not a tuple of 2 to 4 elements",
    note = "a prefix rule `table[(a, *)]` needs a table keyed by a tuple, such as `Table<(u64, u32), V>`"
)]
pub trait TupleKey {
    /// The number of elements: 2, 3 or 4.
    const ARITY: usize;
}

/// `P` is a prefix of this key type: a tuple of its leading elements, shorter
/// than the key (for `(u64, u32)` the one prefix is `(u64,)`; a 3-tuple key has
/// prefixes of one and two elements).
#[diagnostic::on_unimplemented(
    message = "`{P}` is not a prefix of the key `{Self}`",
    label = "not a prefix of `{Self}`",
    note = "a prefix is a tuple of the key's leading elements, shorter than the key: for `(A, B)` it is `(a,)`, for `(A, B, C)` it is `(a,)` or `(a, b)`"
)]
pub trait KeyPrefix<P>: Sized + Borrow<dyn PrefixProbe<Self>> {
    /// How this key's leading elements compare with `prefix`.
    fn cmp_prefix(&self, prefix: &P) -> Ordering;

    /// The prefix in rule syntax, `(a, *)`, for error messages.
    fn describe(prefix: &P) -> String;
}

/// A table key, or a search bound just before or just after the keys under
/// a prefix, seen as one type so that a tree of keys can be searched by
/// prefix (see [`Table::prefix`](super::Table::prefix)).
///
/// Implemented by tuple keys (as themselves) and by the bounds of a
/// prefix; tuple keys borrow as `dyn PrefixProbe<K>`.
pub trait PrefixProbe<K> {
    /// The key, if this is a key rather than a bound.
    fn key(&self) -> Option<&K>;

    /// Where this bound sorts relative to `key` (never `Equal`); only called
    /// on bounds.
    fn cmp_key(&self, key: &K) -> Ordering;

    /// -1 for a lower bound, 0 for a key, 1 for an upper bound: how two bounds
    /// of the same prefix sort (bounds of different prefixes are never
    /// compared).
    fn rank(&self) -> i8;
}

impl<K: Ord> PartialEq for dyn PrefixProbe<K> + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<K: Ord> Eq for dyn PrefixProbe<K> + '_ {}

impl<K: Ord> PartialOrd for dyn PrefixProbe<K> + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K: Ord> Ord for dyn PrefixProbe<K> + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.key(), other.key()) {
            (Some(a), Some(b)) => a.cmp(b),
            (None, Some(b)) => self.cmp_key(b),
            (Some(a), None) => other.cmp_key(a).reverse(),
            (None, None) => self.rank().cmp(&other.rank()),
        }
    }
}

/// One end of the keys under a prefix (a copy of it, so that the bound is a
/// `'static` probe, as the keys are).
pub(crate) struct PrefixBound<P> {
    prefix: P,
    upper: bool,
}

impl<K: KeyPrefix<P>, P> PrefixProbe<K> for PrefixBound<P> {
    fn key(&self) -> Option<&K> {
        None
    }

    fn cmp_key(&self, key: &K) -> Ordering {
        match key.cmp_prefix(&self.prefix).reverse() {
            Ordering::Equal if self.upper => Ordering::Greater,
            Ordering::Equal => Ordering::Less,
            unequal => unequal,
        }
    }

    fn rank(&self) -> i8 {
        if self.upper { 1 } else { -1 }
    }
}

/// The two bounds of the keys under a prefix, for `BTreeMap::range`.
pub(crate) struct PrefixBounds<P> {
    lower: PrefixBound<P>,
    upper: PrefixBound<P>,
}

impl<P: Clone + 'static> PrefixBounds<P> {
    pub(crate) fn new(prefix: &P) -> Self {
        PrefixBounds {
            lower: PrefixBound {
                prefix: prefix.clone(),
                upper: false,
            },
            upper: PrefixBound {
                prefix: prefix.clone(),
                upper: true,
            },
        }
    }

    /// The range to search, as a pair of bounds over `dyn PrefixProbe<K>`.
    #[allow(clippy::type_complexity)]
    pub(crate) fn range<K: KeyPrefix<P>>(
        &self,
    ) -> (
        std::ops::Bound<&(dyn PrefixProbe<K> + 'static)>,
        std::ops::Bound<&(dyn PrefixProbe<K> + 'static)>,
    )
    where
        P: 'static,
    {
        (
            std::ops::Bound::Excluded(&self.lower as &(dyn PrefixProbe<K> + 'static)),
            std::ops::Bound::Excluded(&self.upper as &(dyn PrefixProbe<K> + 'static)),
        )
    }
}

/// The entries of `map` whose keys lie under the prefix of `bounds`.
pub(crate) fn range_under<'m, K, V, P>(
    map: &'m BTreeMap<K, V>,
    bounds: &PrefixBounds<P>,
) -> btree_map::Range<'m, K, V>
where
    K: KeyPrefix<P> + Ord,
    P: Clone + 'static,
{
    map.range::<dyn PrefixProbe<K>, _>(bounds.range::<K>())
}

/// Implements [`TupleKey`] and the probe borrow for a tuple.
macro_rules! tuple_key {
    ($arity:literal: $($all:ident),+) => {
        impl<$($all),+> TupleKey for ($($all,)+) {
            const ARITY: usize = $arity;
        }

        impl<$($all),+> PrefixProbe<($($all,)+)> for ($($all,)+) {
            fn key(&self) -> Option<&Self> {
                Some(self)
            }

            fn cmp_key(&self, _: &Self) -> Ordering {
                unreachable!("a key is compared as a key, not as a bound")
            }

            fn rank(&self) -> i8 {
                0
            }
        }

        impl<$($all: 'static),+> Borrow<dyn PrefixProbe<($($all,)+)>> for ($($all,)+) {
            fn borrow(&self) -> &(dyn PrefixProbe<($($all,)+)> + 'static) {
                self
            }
        }
    };
}

/// Implements [`KeyPrefix`] for the tuple `($all)` and its prefix `($lead)`
/// (each with its index).
macro_rules! key_prefix {
    (($($all:ident),+): $($lead:ident $index:tt),+) => {
        impl<$($all: 'static),+> KeyPrefix<($($lead,)+)> for ($($all,)+)
        where
            $($lead: Ord + fmt::Debug + Serialize,)+
        {
            fn cmp_prefix(&self, prefix: &($($lead,)+)) -> Ordering {
                Ordering::Equal
                    $(.then_with(|| self.$index.cmp(&prefix.$index)))+
            }

            fn describe(prefix: &($($lead,)+)) -> String {
                let mut out = String::from("(");
                $(
                    out.push_str(&format!("{:?}, ", prefix.$index));
                )+
                out.push_str("*)");
                out
            }
        }
    };
}

tuple_key!(2: A, B);
tuple_key!(3: A, B, C);
tuple_key!(4: A, B, C, D);
key_prefix!((A, B): A 0);
key_prefix!((A, B, C): A 0);
key_prefix!((A, B, C): A 0, B 1);
key_prefix!((A, B, C, D): A 0);
key_prefix!((A, B, C, D): A 0, B 1);
key_prefix!((A, B, C, D): A 0, B 1, C 2);

/// The key arity of a container type, while compiling: `#[derive(State)]`
/// reads `<ArityOf<FieldType>>::KEY_ARITY` for each field, which is the
/// arity for a `Table` whose key is a [`TupleKey`] and, through
/// [`NoTupleKey`], 0 for anything else.
#[doc(hidden)]
pub struct ArityOf<T: ?Sized>(std::marker::PhantomData<T>);

impl<K: TupleKey, V> ArityOf<super::Table<K, V>> {
    /// The arity of the table's tuple key.
    pub const KEY_ARITY: usize = K::ARITY;
}

/// The fallback of [`ArityOf`]: a container without a tuple key.
#[doc(hidden)]
pub trait NoTupleKey {
    /// No tuple key: no prefixes.
    const KEY_ARITY: usize = 0;
}

impl<T: ?Sized> NoTupleKey for ArityOf<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_holds_exactly_its_keys() {
        let mut map: BTreeMap<(u64, u32, u8), ()> = BTreeMap::new();
        for a in 0..5 {
            for b in 0..5 {
                for c in 0..3 {
                    map.insert((a, b, c), ());
                }
            }
        }
        let one = (2u64,);
        let bounds = PrefixBounds::new(&one);
        let under: Vec<_> = range_under(&map, &bounds).map(|(k, _)| *k).collect();
        assert_eq!(under.len(), 15);
        assert!(under.iter().all(|k| k.0 == 2));
        assert!(under.is_sorted());
        let two = (4u64, 1u32);
        let bounds = PrefixBounds::new(&two);
        let under: Vec<_> = range_under(&map, &bounds).map(|(k, _)| *k).collect();
        assert_eq!(under, vec![(4, 1, 0), (4, 1, 1), (4, 1, 2)]);
        let none = (9u64,);
        let bounds = PrefixBounds::new(&none);
        assert_eq!(range_under(&map, &bounds).count(), 0);
    }

    #[test]
    fn arities_and_descriptions() {
        use super::super::{Cell, Table};
        assert_eq!(<ArityOf<Table<(u64, u32), u8>>>::KEY_ARITY, 2);
        assert_eq!(<ArityOf<Table<(u8, u8, String, u8), u8>>>::KEY_ARITY, 4);
        assert_eq!(<ArityOf<Table<u64, u8>>>::KEY_ARITY, 0);
        assert_eq!(<ArityOf<Cell<(u64, u32)>>>::KEY_ARITY, 0);
        assert_eq!(
            <(u64, String) as KeyPrefix<(u64,)>>::describe(&(7,)),
            "(7, *)"
        );
        assert_eq!(
            <(u8, String, u8) as KeyPrefix<(u8, String)>>::describe(&(1, "a".into())),
            "(1, \"a\", *)"
        );
    }
}

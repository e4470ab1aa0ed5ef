//! Byte strings written in one piece.
//!
//! Serde writes a `Vec<u8>` as a sequence of `u8`s, one call per byte: a
//! request of 100 KiB costs a hundred thousand calls to encode, and as many
//! to decode, in every frame it travels in. Written as a byte string it is
//! one copy. In this codec's configuration both come out as the same bytes
//! (a varint length, then the bytes), so a field switches from one to the
//! other without changing what is on the wire or on disk; the tests below
//! hold the two encodings equal.
//!
//! ```
//! # use serde::{Deserialize, Serialize};
//! #[derive(Serialize, Deserialize)]
//! struct Frame {
//!     #[serde(with = "cbase_core::codec::bytes")]
//!     payload: Vec<u8>,
//!     #[serde(with = "cbase_core::codec::bytes")]
//!     reply: Option<Vec<u8>>,
//! }
//! ```
//!
//! [`map`], [`pairs`] and [`named_maps`] do the same for the shapes a
//! container's encoded entries and changes come in.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, Serializer};

/// A list of (key, value) byte-string pairs.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A list of named maps of byte strings.
type NamedMaps<V> = Vec<(String, BTreeMap<Vec<u8>, V>)>;

/// What [`serialize`] and [`deserialize`] take: a byte string, or an
/// optional one.
pub trait ByteString: Sized {
    /// Writes it, the bytes in one piece.
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error>;
    /// Reads what [`write`](Self::write) wrote.
    fn read<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error>;
}

impl ByteString for Vec<u8> {
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self)
    }

    fn read<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(BytesVisitor)
    }
}

impl ByteString for Option<Vec<u8>> {
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Some(bytes) => serializer.serialize_some(&AsBytes(bytes)),
            None => serializer.serialize_none(),
        }
    }

    fn read<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_option(OptionVisitor)
    }
}

/// Writes a byte string (or an optional one) in one piece.
pub fn serialize<T: ByteString, S: Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    value.write(serializer)
}

/// Reads what [`serialize`] wrote, or the same bytes written per byte.
///
/// The bytes are copied out of the input once their length is checked
/// against it ([`codec::decode`](super::decode) lends the input to the
/// decoder), so a length prefix that claims more than the input holds
/// allocates nothing: a decoder of untrusted frames must never let a few
/// bytes make it reserve megabytes.
pub fn deserialize<'de, T: ByteString, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    T::read(deserializer)
}

/// Reads a byte string however the format offers it.
struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
        Ok(bytes.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(bytes)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // Formats that write bytes as a sequence: reserve no more than a
        // little ahead of what actually arrives.
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(byte) = seq.next_element()? {
            bytes.push(byte);
        }
        Ok(bytes)
    }
}

/// Reads an optional byte string.
struct OptionVisitor;

impl<'de> Visitor<'de> for OptionVisitor {
    type Value = Option<Vec<u8>>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an optional byte string")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        Vec::<u8>::read(deserializer).map(Some)
    }
}

/// Serializes the byte string (or optional byte string) it borrows in one
/// piece.
struct AsBytes<'a, T>(&'a T);

impl<T: ByteString> Serialize for AsBytes<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.write(serializer)
    }
}

/// Deserializes a byte string (or optional byte string) written in one piece
/// or as a sequence of bytes.
struct FromBytes<T>(T);

impl<'de, T: ByteString> Deserialize<'de> for FromBytes<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::read(deserializer).map(FromBytes)
    }
}

/// A map from byte strings to byte strings (or optional ones), keys and
/// values written in one piece: `#[serde(with = "cbase_core::codec::bytes::map")]`
/// on a [`BTreeMap<Vec<u8>, Vec<u8>>`](crate::Entries) or
/// [`BTreeMap<Vec<u8>, Option<Vec<u8>>>`](crate::Changes).
pub mod map {
    use super::*;

    /// Writes `map` as serde writes a map, with keys and values in one piece.
    pub fn serialize<V, S>(map: &BTreeMap<Vec<u8>, V>, serializer: S) -> Result<S::Ok, S::Error>
    where
        V: ByteString,
        S: Serializer,
    {
        serializer.collect_map(
            map.iter()
                .map(|(key, value)| (AsBytes(key), AsBytes(value))),
        )
    }

    /// Reads what [`serialize`] wrote. As for serde's own map, a key that
    /// comes twice keeps its last value.
    pub fn deserialize<'de, V, D>(deserializer: D) -> Result<BTreeMap<Vec<u8>, V>, D::Error>
    where
        V: ByteString,
        D: Deserializer<'de>,
    {
        struct MapVisitor<V>(PhantomData<V>);

        impl<'de, V: ByteString> Visitor<'de> for MapVisitor<V> {
            type Value = BTreeMap<Vec<u8>, V>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a map of byte strings")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut map = BTreeMap::new();
                while let Some((FromBytes(key), FromBytes(value))) =
                    access.next_entry::<FromBytes<Vec<u8>>, FromBytes<V>>()?
                {
                    map.insert(key, value);
                }
                Ok(map)
            }
        }

        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

/// A list of (key, value) byte-string pairs, each written in one piece:
/// `#[serde(with = "cbase_core::codec::bytes::pairs")]` on a
/// `Vec<(Vec<u8>, Vec<u8>)>`.
pub mod pairs {
    use super::*;

    /// Writes `pairs` as serde writes a sequence of 2-tuples.
    pub fn serialize<S: Serializer>(
        pairs: &[(Vec<u8>, Vec<u8>)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            pairs
                .iter()
                .map(|(key, value)| (AsBytes(key), AsBytes(value))),
        )
    }

    /// Reads what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Pairs, D::Error> {
        let pairs = Vec::<(FromBytes<Vec<u8>>, FromBytes<Vec<u8>>)>::deserialize(deserializer)?;
        Ok(pairs
            .into_iter()
            .map(|(FromBytes(key), FromBytes(value))| (key, value))
            .collect())
    }
}

/// A list of named maps of byte strings, as a state's containers hold their
/// entries or changes: `#[serde(with = "cbase_core::codec::bytes::named_maps")]`
/// on a `Vec<(String, BTreeMap<Vec<u8>, V>)>`.
pub mod named_maps {
    use super::*;

    /// One map, borrowed for writing.
    struct AsMap<'a, V>(&'a BTreeMap<Vec<u8>, V>);

    impl<V: ByteString> Serialize for AsMap<'_, V> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            super::map::serialize(self.0, serializer)
        }
    }

    struct FromMap<V>(BTreeMap<Vec<u8>, V>);

    impl<'de, V: ByteString> Deserialize<'de> for FromMap<V> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            super::map::deserialize(deserializer).map(FromMap)
        }
    }

    /// Writes `maps` as serde writes a sequence of (name, map) tuples.
    pub fn serialize<V, S>(
        maps: &[(String, BTreeMap<Vec<u8>, V>)],
        serializer: S,
    ) -> Result<S::Ok, S::Error>
    where
        V: ByteString,
        S: Serializer,
    {
        serializer.collect_seq(maps.iter().map(|(name, map)| (name, AsMap(map))))
    }

    /// Reads what [`serialize`] wrote.
    pub fn deserialize<'de, V, D>(deserializer: D) -> Result<NamedMaps<V>, D::Error>
    where
        V: ByteString,
        D: Deserializer<'de>,
    {
        let maps = Vec::<(String, FromMap<V>)>::deserialize(deserializer)?;
        Ok(maps
            .into_iter()
            .map(|(name, FromMap(map))| (name, map))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct PerByte {
        plain: Vec<u8>,
        optional: Option<Vec<u8>>,
        map: BTreeMap<Vec<u8>, Vec<u8>>,
        changes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        named: NamedMaps<Option<Vec<u8>>>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct InOnePiece {
        #[serde(with = "crate::codec::bytes")]
        plain: Vec<u8>,
        #[serde(with = "crate::codec::bytes")]
        optional: Option<Vec<u8>>,
        #[serde(with = "crate::codec::bytes::map")]
        map: BTreeMap<Vec<u8>, Vec<u8>>,
        #[serde(with = "crate::codec::bytes::map")]
        changes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        #[serde(with = "crate::codec::bytes::pairs")]
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        #[serde(with = "crate::codec::bytes::named_maps")]
        named: NamedMaps<Option<Vec<u8>>>,
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        // Past 127 and 250 bytes the varint length takes more bytes.
        prop::collection::vec(any::<u8>(), 0..300)
    }

    prop_compose! {
        fn per_byte()(
            plain in bytes(),
            optional in prop::option::of(bytes()),
            map in prop::collection::btree_map(bytes(), bytes(), 0..4),
            changes in prop::collection::btree_map(bytes(), prop::option::of(bytes()), 0..4),
            pairs in prop::collection::vec((bytes(), bytes()), 0..4),
            named in prop::collection::vec(
                (".{0,8}", prop::collection::btree_map(bytes(), prop::option::of(bytes()), 0..3)),
                0..3,
            ),
        ) -> PerByte {
            PerByte { plain, optional, map, changes, pairs, named }
        }
    }

    proptest! {
        /// The point of the module: switching a field to it changes no byte
        /// of the encoding, either way.
        #[test]
        fn one_piece_encodes_exactly_as_per_byte(value in per_byte()) {
            let per_byte = codec::encode(&value).unwrap();
            let one_piece = InOnePiece {
                plain: value.plain.clone(),
                optional: value.optional.clone(),
                map: value.map.clone(),
                changes: value.changes.clone(),
                pairs: value.pairs.clone(),
                named: value.named.clone(),
            };
            prop_assert_eq!(&codec::encode(&one_piece).unwrap(), &per_byte);
            let decoded: InOnePiece = codec::decode(&per_byte).unwrap();
            prop_assert_eq!(decoded, one_piece);
            let back: PerByte = codec::decode(&codec::encode(&value).unwrap()).unwrap();
            prop_assert_eq!(back, value);
        }
    }

    #[test]
    fn a_length_beyond_the_input_is_refused() {
        // Varint lengths of 100 MiB (under the decode limit) and 2^40 (over
        // it), tag 253 then a u64, with three bytes after them. (That
        // nothing is allocated for them is what the network decoders' fuzz
        // test measures, with a counting allocator.)
        for claim in [100u64 << 20, 1 << 40] {
            let mut input = vec![253u8];
            input.extend_from_slice(&claim.to_le_bytes());
            input.extend_from_slice(b"abc");
            assert!(codec::decode::<InOneField>(&input).is_err(), "{claim}");
        }
        let whole = codec::encode(&InOneField(b"abc".to_vec())).unwrap();
        assert_eq!(codec::decode::<InOneField>(&whole).unwrap().0, b"abc");
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct InOneField(#[serde(with = "crate::codec::bytes")] Vec<u8>);
}

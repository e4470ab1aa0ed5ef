//! The one place where cbase turns values into bytes and back.
//!
//! Everything that is hashed, digested, snapshotted or sent over the network is
//! encoded here, with one fixed configuration, so that two replicas (on any
//! machine, in any process) produce the same bytes for the same value. Keeping
//! the encoder behind this module also confines the pinned `bincode` version to
//! a single file.

pub mod bounded;
pub mod bytes;
mod guarded;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest value [`decode`] accepts, in bytes of declared length. Inputs that
/// claim more are refused before anything is allocated.
pub const DEFAULT_DECODE_LIMIT: usize = 256 * 1024 * 1024;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be encoded (for example a map serializer that does
    /// not know its length).
    #[error("cannot encode value: {0}")]
    Encode(String),
    /// The bytes are not a valid encoding of the expected type.
    #[error("cannot decode value: {0}")]
    Decode(String),
    /// Decoding succeeded but left bytes unread: the input is not exactly one value.
    #[error("{0} trailing bytes after the encoded value")]
    TrailingBytes(usize),
}

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DEFAULT_DECODE_LIMIT>,
>;

fn config() -> Config {
    bincode::config::standard().with_limit::<DEFAULT_DECODE_LIMIT>()
}

/// Encodes `value` into a fresh buffer.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Encodes `value` at the end of `buffer`.
pub fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    buffer: &mut Vec<u8>,
) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, buffer, config())
        .map(|_| ())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Encodes `value` straight into a [`std::io::Write`] sink without buffering.
pub fn encode_to_writer<T: Serialize + ?Sized, W: std::io::Write>(
    value: &T,
    writer: &mut W,
) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, writer, config())
        .map(|_| ())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Whether `value` encodes to exactly `bytes`: a decoded value's canonical
/// check, without allocating its encoding.
pub fn encodes_to<T: Serialize + ?Sized>(value: &T, bytes: &[u8]) -> Result<bool, CodecError> {
    /// Compares what is written with `expected`, byte run by byte run.
    struct Compare<'a> {
        expected: &'a [u8],
        same: bool,
    }
    impl std::io::Write for Compare<'_> {
        fn write(&mut self, written: &[u8]) -> std::io::Result<usize> {
            match self.expected.split_at_checked(written.len()) {
                Some((head, rest)) if self.same && head == written => self.expected = rest,
                _ => self.same = false,
            }
            Ok(written.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut compare = Compare {
        expected: bytes,
        same: true,
    };
    encode_to_writer(value, &mut compare)?;
    Ok(compare.same && compare.expected.is_empty())
}

/// Decodes exactly one value from `bytes`; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    // Decoded from the borrowed input, owned strings and byte buffers read
    // in their borrowed form, so that a length is checked against what the
    // input holds before anything is allocated for it (see [`guarded`] and
    // [`bytes`]).
    let seed = guarded::GuardedSeed(std::marker::PhantomData::<T>);
    let (value, read) = bincode::serde::seed_decode_from_slice(seed, bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if read != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - read));
    }
    Ok(value)
}

/// Encodes `value` into `out` element by element if it is a tuple, returning
/// the offset in `out` where each element's encoding ends; `None` (and `out`
/// in an unspecified state) if `value` is not a tuple (a tuple struct is not
/// one) or cannot be encoded.
///
/// A tuple's encoding is its elements' encodings one after the other, so the
/// bytes written are exactly [`encode`]'s, and the encoding of the first `i`
/// elements is `out[..ends[i - 1]]`: what key prefixes are hashed over.
pub(crate) fn encode_tuple_elements<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Option<Vec<usize>> {
    let mut ends = Vec::new();
    value
        .serialize(TupleSplitter {
            out,
            ends: &mut ends,
        })
        .ok()?;
    Some(ends)
}

/// A serializer that accepts only a tuple, and encodes its elements one by one.
struct TupleSplitter<'a> {
    out: &'a mut Vec<u8>,
    ends: &'a mut Vec<usize>,
}

/// Why [`TupleSplitter`] stopped: the value is not a tuple, or an element
/// could not be encoded.
#[derive(Debug)]
struct NotATuple;

impl std::fmt::Display for NotATuple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a tuple")
    }
}

impl std::error::Error for NotATuple {}

impl serde::ser::Error for NotATuple {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        NotATuple
    }
}

impl serde::ser::SerializeTuple for TupleSplitter<'_> {
    type Ok = ();
    type Error = NotATuple;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), NotATuple> {
        encode_into(value, self.out).map_err(|_| NotATuple)?;
        self.ends.push(self.out.len());
        Ok(())
    }

    fn end(self) -> Result<(), NotATuple> {
        Ok(())
    }
}

/// Every form but `serialize_tuple` is refused: only a tuple has prefixes.
macro_rules! not_a_tuple {
    ($($method:ident($($arg:ty),*);)*) => {
        $(
            fn $method(self, $(_: $arg),*) -> Result<(), NotATuple> {
                Err(NotATuple)
            }
        )*
    };
}

impl<'a> serde::Serializer for TupleSplitter<'a> {
    type Ok = ();
    type Error = NotATuple;
    type SerializeSeq = serde::ser::Impossible<(), NotATuple>;
    type SerializeTuple = TupleSplitter<'a>;
    type SerializeTupleStruct = serde::ser::Impossible<(), NotATuple>;
    type SerializeTupleVariant = serde::ser::Impossible<(), NotATuple>;
    type SerializeMap = serde::ser::Impossible<(), NotATuple>;
    type SerializeStruct = serde::ser::Impossible<(), NotATuple>;
    type SerializeStructVariant = serde::ser::Impossible<(), NotATuple>;

    fn is_human_readable(&self) -> bool {
        false
    }

    not_a_tuple! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_i128(i128);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_u128(u128);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_str(&str);
        serialize_bytes(&[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), NotATuple> {
        Err(NotATuple)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), NotATuple> {
        Err(NotATuple)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), NotATuple> {
        Err(NotATuple)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotATuple> {
        Err(NotATuple)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotATuple> {
        Ok(self)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, NotATuple> {
        Err(NotATuple)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotATuple> {
        Err(NotATuple)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotATuple> {
        Err(NotATuple)
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, NotATuple> {
        Err(NotATuple)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotATuple> {
        Err(NotATuple)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_encodes_to_its_own_bytes_and_to_no_others() {
        let value = (300u64, String::from("three hundred"));
        let bytes = encode(&value).unwrap();
        assert!(encodes_to(&value, &bytes).unwrap());
        assert!(
            !encodes_to(&value, &bytes[..bytes.len() - 1]).unwrap(),
            "shorter"
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(!encodes_to(&value, &longer).unwrap(), "longer");
        let mut changed = bytes.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert!(!encodes_to(&value, &changed).unwrap(), "one byte off");
        // 300 as a varint takes 3 bytes; a 9-byte form decodes to the same
        // number and is not canonical.
        let padded = [253u8, 44, 1, 0, 0, 0, 0, 0, 0];
        let number: u64 = decode(&padded).unwrap();
        assert_eq!(number, 300);
        assert!(!encodes_to(&number, &padded).unwrap());
    }

    #[test]
    fn round_trips_and_rejects_trailing_bytes() {
        let value = (7u64, String::from("seven"), vec![1u8, 2, 3]);
        let mut bytes = encode(&value).unwrap();
        let back: (u64, String, Vec<u8>) = decode(&bytes).unwrap();
        assert_eq!(back, value);
        bytes.push(0);
        let err = decode::<(u64, String, Vec<u8>)>(&bytes).unwrap_err();
        assert!(matches!(err, CodecError::TrailingBytes(1)), "{err}");
    }

    #[test]
    fn refuses_absurd_lengths_without_allocating() {
        // A Vec<u8> claiming u64::MAX elements: varint 0xFF followed by 8 bytes.
        let mut bytes = vec![0xFFu8];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode::<Vec<u8>>(&bytes).is_err());
    }

    #[test]
    fn encode_into_appends() {
        let mut buffer = vec![9u8];
        encode_into(&1u8, &mut buffer).unwrap();
        assert_eq!(buffer, vec![9, 1]);
    }

    #[test]
    fn tuples_split_into_their_elements_and_nothing_else_does() {
        let value = (7u64, String::from("seven"), -3i32);
        let mut bytes = Vec::new();
        let ends = encode_tuple_elements(&value, &mut bytes).unwrap();
        assert_eq!(bytes, encode(&value).unwrap(), "the same bytes as a whole");
        assert_eq!(ends.len(), 3);
        assert_eq!(bytes[..ends[0]], encode(&7u64).unwrap()[..]);
        assert_eq!(bytes[..ends[1]], encode(&(7u64, "seven")).unwrap()[..]);
        assert_eq!(*ends.last().unwrap(), bytes.len());
        // Through a reference, too.
        let mut again = Vec::new();
        assert_eq!(encode_tuple_elements(&&value, &mut again), Some(ends));

        #[derive(Serialize)]
        struct Pair(u64, u64);
        for not_tuple in [
            encode_tuple_elements(&7u64, &mut Vec::new()),
            encode_tuple_elements("seven", &mut Vec::new()),
            encode_tuple_elements(&Pair(1, 2), &mut Vec::new()),
            encode_tuple_elements(&vec![1u8, 2], &mut Vec::new()),
            encode_tuple_elements(&Some((1u8, 2u8)), &mut Vec::new()),
        ] {
            assert_eq!(not_tuple, None);
        }
    }
}

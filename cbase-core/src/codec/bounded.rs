//! Sequences decoded with a bound on their length, for fields a remote
//! party fills.
//!
//! A decoded element can take far more memory than its encoding: a request
//! with an empty operation is 3 bytes on the wire and 40 in memory, so one
//! frame of 16 MiB could make a replica allocate over 200 MiB before any
//! check on the decoded value runs. A field read through [`vec()`] refuses a
//! sequence longer than its bound as soon as the length prefix says so,
//! before decoding any element. The bytes accepted are otherwise the same as
//! a plain `Vec`'s; encoding is unchanged.
//!
//! ```
//! # use serde::{Deserialize, Serialize};
//! #[derive(Serialize, Deserialize)]
//! struct Batch {
//!     #[serde(deserialize_with = "cbase_core::codec::bounded::vec::<_, _, 4>")]
//!     items: Vec<u32>,
//! }
//! let four = cbase_core::codec::encode(&Batch { items: vec![1; 4] }).unwrap();
//! assert!(cbase_core::codec::decode::<Batch>(&four).is_ok());
//! let five = cbase_core::codec::encode(&Batch { items: vec![1; 5] }).unwrap();
//! assert!(cbase_core::codec::decode::<Batch>(&five).is_err());
//! ```

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};

/// Deserializes a `Vec<T>` of at most `MAX` elements; a longer one is an
/// error, raised before its elements are read when the format states the
/// length first (as cbase's codec does).
pub fn vec<'de, D, T, const MAX: usize>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserializer.deserialize_seq(Bounded::<T, MAX>(PhantomData))
}

struct Bounded<T, const MAX: usize>(PhantomData<T>);

impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for Bounded<T, MAX> {
    type Value = Vec<T>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "a sequence of at most {MAX} elements")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        if let Some(len) = seq.size_hint()
            && len > MAX
        {
            return Err(A::Error::custom(format_args!(
                "a sequence of {len} elements, more than the {MAX} allowed"
            )));
        }
        // Reserved for what the input says, within the bound, and never
        // more than 1 MiB ahead of the elements that arrive.
        let ahead = (1 << 20) / std::mem::size_of::<T>().max(1);
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX).min(ahead));
        while let Some(item) = seq.next_element()? {
            if items.len() == MAX {
                return Err(A::Error::custom(format_args!(
                    "a sequence of more than the {MAX} elements allowed"
                )));
            }
            items.push(item);
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use crate::codec;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Bounded {
        #[serde(deserialize_with = "super::vec::<_, _, 3>")]
        items: Vec<Vec<u8>>,
    }

    #[test]
    fn a_sequence_up_to_its_bound_decodes_as_a_plain_vec_would() {
        for len in 0..=3 {
            let value = Bounded {
                items: vec![vec![7; len]; len],
            };
            let bytes = codec::encode(&value).unwrap();
            assert_eq!(bytes, codec::encode(&value.items).unwrap());
            assert_eq!(codec::decode::<Bounded>(&bytes).unwrap(), value);
        }
    }

    #[test]
    fn a_longer_sequence_is_refused_before_its_elements_are_read() {
        let bytes = codec::encode(&vec![Vec::<u8>::new(); 4]).unwrap();
        let error = codec::decode::<Bounded>(&bytes).unwrap_err().to_string();
        assert!(
            error.contains("4 elements, more than the 3 allowed"),
            "{error}"
        );
        // Only the length prefix is there: the refusal reads no element.
        let claim = codec::encode(&u64::MAX).unwrap();
        let error = codec::decode::<Bounded>(&claim).unwrap_err().to_string();
        assert!(error.contains("more than the 3 allowed"), "{error}");
    }
}

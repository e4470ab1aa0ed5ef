//! The one place where cbase turns values into bytes and back.
//!
//! Everything that is hashed, digested, snapshotted or sent over the network is
//! encoded here, with one fixed configuration, so that two replicas (on any
//! machine, in any process) produce the same bytes for the same value. Keeping
//! the encoder behind this module also confines the pinned `bincode` version to
//! a single file.

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

/// Decodes exactly one value from `bytes`; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if read != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - read));
    }
    Ok(value)
}

/// Feeds an encoding into a blake3 hasher without materializing it.
pub(crate) struct HashWriter<'a>(pub(crate) &'a mut blake3::Hasher);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

//! Long-term ed25519 identities: secret keys, public keys and signatures.
//!
//! Every replica and every client owns an ed25519 key pair. Replicas' public
//! keys are listed in the cluster file ([`crate::config`]); a client's public key
//! is its identity. Keys are used in two places: the transport handshake, where
//! each side signs the handshake transcript to prove who it is, and agreement
//! messages that must convince a third party (view-change, checkpoint and
//! prepared certificates).
//!
//! Threat model: the network and up to f replicas are controlled by an
//! adversary who may forge, replay and reorder messages, and feed us arbitrary
//! bytes as keys and signatures. Therefore:
//! - every signature is *domain separated*: the signed bytes are
//!   `blake3::derive_key`-style hashes keyed by a context string, so a signature
//!   made for one purpose (say a handshake) never verifies for another (say a
//!   checkpoint);
//! - verification is RFC 8032's cofactorless check, which rejects
//!   non-canonical signatures, and small-order (weak) public keys never
//!   verify, so a signature cannot be mauled into a second valid one and a
//!   faulty replica cannot publish a key that "verifies" many messages
//!   (see [`PublicKey::verify`] for why the small-order `R` check is left
//!   out);
//! - public keys are validated when they are parsed, so a malformed key in a
//!   cluster file is an error at load time rather than a silent refusal later;
//! - secret keys never appear in `Debug` output and are zeroized on drop (by
//!   ed25519-dalek); key files are written with owner-only permissions.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// An ed25519 secret (signing) key.
///
/// The secret never appears in `Debug` output; only the public key does. The
/// key material is zeroized when the value is dropped.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// Generates a fresh key from the operating system's random number generator.
    ///
    /// # Panics
    ///
    /// Panics if the operating system cannot provide randomness, which leaves no
    /// safe way to make a key.
    pub fn generate() -> SecretKey {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("the operating system's random number generator failed");
        let key = SecretKey::from_seed(seed);
        seed.fill(0);
        key
    }

    /// Derives a key deterministically from a 32-byte seed (for tests and
    /// simulations; never use a guessable seed for a real deployment).
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    /// The public key that verifies this key's signatures.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `message` for the purpose named by `domain`.
    ///
    /// The signature covers `blake3::derive_key`-style hash of the message with
    /// `domain` as the context string, so it only verifies with the same domain.
    /// Domains should be fixed, globally unique strings such as
    /// `"cbase handshake v1"`.
    pub fn sign(&self, domain: &'static str, message: &[u8]) -> Signature {
        let digest = signing_digest(domain, message);
        Signature(self.0.sign(&digest).to_bytes())
    }

    /// Writes the key to `path` as a small text file holding the hex-encoded
    /// seed (with a comment line naming the public key). On unix the file is
    /// created with mode `0600`. An existing file is replaced.
    pub fn write_file(&self, path: &Path) -> Result<(), KeyFileError> {
        let write_error = |source| KeyFileError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(write_error)?;
        #[cfg(unix)]
        {
            // The mode above only applies to newly created files.
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(write_error)?;
        }
        let text = format!(
            "# cbase secret key (ed25519 seed, hex). Keep this file private.\n\
             # public key: {}\n{}\n",
            self.public().to_hex(),
            hex_encode(self.0.as_bytes()),
        );
        file.write_all(text.as_bytes()).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        Ok(())
    }

    /// Reads a key written by [`SecretKey::write_file`].
    ///
    /// Blank lines and lines starting with `#` are ignored; exactly one line of
    /// 64 hex digits must remain.
    pub fn read_file(path: &Path) -> Result<SecretKey, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                KeyFileError::Missing {
                    path: path.to_path_buf(),
                }
            } else {
                KeyFileError::Read {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        #[cfg(unix)]
        {
            // As ssh does: a secret others can read is no longer a secret,
            // and the mistake is cheap to fix now and costly to find later.
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path)
                .map_err(|source| KeyFileError::Read {
                    path: path.to_path_buf(),
                    source,
                })?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(KeyFileError::Exposed {
                    path: path.to_path_buf(),
                    mode: mode & 0o777,
                });
            }
        }
        let malformed = |reason: String| KeyFileError::Malformed {
            path: path.to_path_buf(),
            reason,
        };
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'));
        let Some(line) = lines.next() else {
            return Err(malformed("the file holds no key".into()));
        };
        if lines.next().is_some() {
            return Err(malformed(
                "the file holds more than one non-comment line".into(),
            ));
        }
        let seed = hex_decode::<32>(line).map_err(|e| malformed(e.to_string()))?;
        Ok(SecretKey::from_seed(seed))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public: {})", self.public())
    }
}

/// Why a secret key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file does not exist.
    #[error("secret key file {} does not exist", path.display())]
    Missing {
        /// The file that was looked for.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("cannot read secret key file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file could not be created or written.
    #[error("cannot write secret key file {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Users other than the owner may read or write the file.
    #[error(
        "secret key file {path} can be read or written by other users (mode {mode:o}); \
         make it private: chmod 600 {path}",
        path = path.display()
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file's contents are not a key.
    #[error(
        "secret key file {} is malformed: {reason} (expected one line of 64 hex digits)",
        path.display()
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// An ed25519 public (verifying) key, 32 bytes.
///
/// Every value of this type is a valid, non-weak curve point: the
/// constructors check. In human-readable formats (TOML, JSON) it is written as
/// a 64-digit hex string; in binary formats as 32 raw bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; 32]);

/// Decompressing a point costs about a quarter of a replica's CPU under load
/// if done on every verification, and as much again if done on every
/// decoded message that names a key (each client batch names its client);
/// the same few keys (replicas, active clients) come back all the time, so
/// each thread keeps the keys it checked decompressed. Only valid, non-weak
/// keys enter. Bounded: cleared when it grows past `KEY_CACHE_LIMIT` entries.
const KEY_CACHE_LIMIT: usize = 4096;

thread_local! {
    static DECOMPRESSED: std::cell::RefCell<std::collections::HashMap<[u8; 32], VerifyingKey>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn verifying_key(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    DECOMPRESSED.with_borrow_mut(|cache| {
        if let Some(key) = cache.get(bytes) {
            return Some(*key);
        }
        let key = VerifyingKey::from_bytes(bytes)
            .ok()
            .filter(|key| !key.is_weak())?;
        if cache.len() >= KEY_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(*bytes, key);
        Some(key)
    })
}

impl PublicKey {
    /// Checks and wraps 32 bytes of a compressed ed25519 point.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<PublicKey, KeyParseError> {
        match verifying_key(&bytes) {
            Some(_) => Ok(PublicKey(bytes)),
            None => Err(KeyParseError::InvalidKey),
        }
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(text: &str) -> Result<PublicKey, KeyParseError> {
        PublicKey::from_bytes(hex_decode::<32>(text)?)
    }

    /// The key as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex_encode(&self.0)
    }

    /// The key as a service sees its holder ([`cbase_core::Context::client`]).
    pub fn client_id(&self) -> cbase_core::ClientId {
        cbase_core::ClientId(self.0)
    }

    /// The 32 bytes of the compressed point.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `sig` is this key's signature of `message` in `domain` (see
    /// [`SecretKey::sign`]).
    ///
    /// Weak (small-order) keys never verify: they are refused when parsed.
    /// The check itself is RFC 8032's cofactorless one, which also refuses
    /// a non-canonical `s` or `R`. The stricter check also refuses an `R`
    /// of small order, which takes decompressing `R`, a fifth of the cost;
    /// such an `R` can only come from the key's holder, who can sign
    /// whatever it likes anyway, and every replica runs this same check, so
    /// no signature verifies for one correct replica and not another.
    pub fn verify(&self, domain: &'static str, message: &[u8], sig: &Signature) -> bool {
        let Some(key) = verifying_key(&self.0) else {
            return false;
        };
        let digest = signing_digest(domain, message);
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        ed25519_dalek::Verifier::verify(&key, &digest, &sig).is_ok()
    }
}

impl fmt::Display for PublicKey {
    /// The first 16 hex digits: enough to tell keys apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_encode(&self.0[..8]))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_fixed(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = deserialize_fixed::<32, D>(deserializer, "an ed25519 public key")?;
        PublicKey::from_bytes(bytes).map_err(de::Error::custom)
    }
}

/// Why text or bytes are not a public key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    /// The hex string has the wrong length.
    #[error("expected {expected} hex digits, found {found}")]
    Length {
        /// Hex digits required.
        expected: usize,
        /// Characters given.
        found: usize,
    },
    /// A character is not a hex digit.
    #[error("{found:?} at position {position} is not a hex digit")]
    Digit {
        /// The offending character.
        found: char,
        /// Its character index.
        position: usize,
    },
    /// The bytes are not a valid ed25519 public key (not a curve point, or a
    /// point of small order).
    #[error("not a valid ed25519 public key")]
    InvalidKey,
}

/// An ed25519 signature, 64 bytes.
///
/// Serialized as 64 raw bytes in binary formats and as 128 hex digits in
/// human-readable ones.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 64]);

impl Signature {
    /// Wraps 64 bytes (no check: verification decides validity).
    pub fn from_bytes(bytes: [u8; 64]) -> Signature {
        Signature(bytes)
    }

    /// The 64 bytes of the signature.
    pub fn to_bytes(&self) -> [u8; 64] {
        self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex_encode(&self.0[..8]))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_fixed(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_fixed::<64, D>(deserializer, "an ed25519 signature").map(Signature)
    }
}

/// The 32 bytes actually signed for `message` in `domain`.
fn signing_digest(domain: &'static str, message: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(domain);
    hasher.update(message);
    *hasher.finalize().as_bytes()
}

/// The first 8 bytes of a digest (or any bytes) as 16 hex digits, as keys
/// print: enough to tell digests apart in logs and reports.
///
/// ```
/// let digest = [0xab; 32];
/// assert_eq!(cbase_net::crypto::short_hex(&digest).to_string(), "abababababababab");
/// ```
pub fn short_hex(bytes: &[u8]) -> ShortHex<'_> {
    ShortHex(bytes)
}

/// Displays as [`short_hex`] says.
#[derive(Clone, Copy)]
pub struct ShortHex<'a>(&'a [u8]);

impl fmt::Display for ShortHex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_encode(&self.0[..self.0.len().min(8)]))
    }
}

impl fmt::Debug for ShortHex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Exactly `N` bytes from `2 * N` hex digits.
pub(crate) fn hex_decode<const N: usize>(text: &str) -> Result<[u8; N], KeyParseError> {
    let found = text.chars().count();
    if found != 2 * N || text.len() != 2 * N {
        return Err(KeyParseError::Length {
            expected: 2 * N,
            found,
        });
    }
    let digit = |position: usize, c: u8| -> Result<u8, KeyParseError> {
        char::from(c)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or(KeyParseError::Digit {
                found: char::from(c),
                position,
            })
    };
    let bytes = text.as_bytes();
    let mut out = [0u8; N];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = (digit(2 * i, bytes[2 * i])? << 4) | digit(2 * i + 1, bytes[2 * i + 1])?;
    }
    Ok(out)
}

fn serialize_fixed<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        serializer.serialize_str(&hex_encode(bytes))
    } else {
        serializer.serialize_bytes(bytes)
    }
}

fn deserialize_fixed<'de, const N: usize, D: Deserializer<'de>>(
    deserializer: D,
    what: &'static str,
) -> Result<[u8; N], D::Error> {
    let visitor = FixedBytes::<N> { what };
    if deserializer.is_human_readable() {
        deserializer.deserialize_str(visitor)
    } else {
        deserializer.deserialize_bytes(visitor)
    }
}

/// Accepts `N` bytes as a byte string, a hex string or a sequence of bytes.
struct FixedBytes<const N: usize> {
    what: &'static str,
}

impl<'de, const N: usize> Visitor<'de> for FixedBytes<N> {
    type Value = [u8; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({N} bytes or {} hex digits)", self.what, 2 * N)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        <[u8; N]>::try_from(v).map_err(|_| E::invalid_length(v.len(), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        hex_decode::<N>(v).map_err(|e| E::custom(format_args!("not {}: {e}", self.what)))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = [0u8; N];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(i, &self))?;
        }
        if seq.next_element::<u8>()?.is_some() {
            return Err(de::Error::invalid_length(N + 1, &self));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbase_core::codec::{decode, encode};

    #[test]
    fn signatures_verify_only_in_their_domain() {
        let key = SecretKey::from_seed([7; 32]);
        let public = key.public();
        let sig = key.sign("cbase test domain A", b"hello");
        assert!(public.verify("cbase test domain A", b"hello", &sig));
        assert!(!public.verify("cbase test domain B", b"hello", &sig));
        assert!(!public.verify("cbase test domain A", b"hellO", &sig));
        let other = SecretKey::from_seed([8; 32]).public();
        assert!(!other.verify("cbase test domain A", b"hello", &sig));
        let mut bent = sig.to_bytes();
        bent[10] ^= 1;
        assert!(!public.verify(
            "cbase test domain A",
            b"hello",
            &Signature::from_bytes(bent)
        ));
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(
            SecretKey::generate().public(),
            SecretKey::generate().public()
        );
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let key = SecretKey::from_seed([0xab; 32]);
        let text = format!("{key:?}");
        assert!(!text.contains("abababab"), "{text}");
        assert!(text.contains(&key.public().to_string()), "{text}");
    }

    #[test]
    fn public_key_hex_round_trip_and_errors() {
        let public = SecretKey::from_seed([1; 32]).public();
        assert_eq!(PublicKey::from_hex(&public.to_hex()), Ok(public));
        assert_eq!(
            PublicKey::from_hex(&public.to_hex().to_uppercase()),
            Ok(public)
        );
        assert_eq!(
            PublicKey::from_hex("abcd"),
            Err(KeyParseError::Length {
                expected: 64,
                found: 4
            })
        );
        let mut bad = public.to_hex();
        bad.replace_range(3..4, "g");
        assert_eq!(
            PublicKey::from_hex(&bad),
            Err(KeyParseError::Digit {
                found: 'g',
                position: 3
            })
        );
        // The identity point is of small order: refused.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            PublicKey::from_bytes(identity),
            Err(KeyParseError::InvalidKey)
        );
        assert_eq!(public.to_string().len(), 16);
        assert!(public.to_hex().starts_with(&public.to_string()));
    }

    #[test]
    fn binary_codec_round_trip() {
        let key = SecretKey::from_seed([3; 32]);
        let public = key.public();
        let sig = key.sign("cbase test", b"m");
        let bytes = encode(&(public, sig)).expect("encode");
        let back: (PublicKey, Signature) = decode(&bytes).expect("decode");
        assert_eq!(back, (public, sig));
        // A wrong length is refused.
        let short = encode(&vec![0u8; 31]).expect("encode");
        assert!(decode::<PublicKey>(&short).is_err());
    }

    #[test]
    fn key_file_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("replica-0.key");
        let key = SecretKey::from_seed([9; 32]);
        key.write_file(&path).expect("write");
        let back = SecretKey::read_file(&path).expect("read");
        assert_eq!(back.public(), key.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    /// Makes `path` readable by its owner only, as key files must be.
    fn private(path: &std::path::Path) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        #[cfg(not(unix))]
        let _ = path;
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_refused_with_the_chmod_to_run() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("replica-0.key");
        SecretKey::from_seed([9; 32])
            .write_file(&path)
            .expect("write");
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = SecretKey::read_file(&path).unwrap_err();
            assert!(
                matches!(err, KeyFileError::Exposed { .. }),
                "{mode:o}: {err}"
            );
            let text = err.to_string();
            assert!(text.contains(&format!("mode {mode:o}")), "{text}");
            assert!(
                text.contains(&format!("chmod 600 {}", path.display())),
                "{text}"
            );
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            SecretKey::read_file(&path).unwrap_or_else(|e| panic!("{mode:o}: {e}"));
        }
    }

    #[test]
    fn key_file_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.key");
        let err = SecretKey::read_file(&missing).unwrap_err();
        assert!(matches!(err, KeyFileError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("nope.key"), "{err}");
        assert!(err.to_string().contains("does not exist"), "{err}");

        let path = dir.path().join("bad.key");
        for (contents, expect) in [
            ("", "holds no key"),
            ("# only a comment\n", "holds no key"),
            ("abcd\n", "expected 64 hex digits, found 4"),
            (&"zz".repeat(32), "is not a hex digit"),
            (&format!("{0}\n{0}\n", "00".repeat(32)), "more than one"),
        ] {
            std::fs::write(&path, contents).expect("write");
            private(&path);
            let err = SecretKey::read_file(&path).unwrap_err();
            assert!(matches!(err, KeyFileError::Malformed { .. }), "{err}");
            let text = err.to_string();
            assert!(text.contains(expect), "{text} should contain {expect}");
            assert!(text.contains("bad.key"), "{text}");
        }
    }
}

//! A service's replicated state as a whole: naming, snapshots, digests.
//!
//! A state is a struct of [containers](crate::container). `#[derive(State)]`
//! implements [`State`] by listing its container fields; everything else
//! (binding names, snapshot, restore, digest) is provided here, so every state
//! snapshots in the same canonical form: containers in declaration order, each
//! in key order. Equal states therefore have equal [`Digest`]s on every
//! replica, which is what checkpoints compare.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::container::{BindError, Container};
use crate::key::TableId;

/// The replicated state of a service.
pub trait State: Send + Sync + 'static {
    /// Every container with its name (the field name), in declaration order.
    fn containers(&self) -> Vec<(&'static str, &dyn Container)>;

    /// Names every container after its field. Called when a service starts;
    /// fails if a container already carries another name, or if two names
    /// share a table identity.
    fn bind_names(&self) -> Result<(), StateError> {
        let mut ids: BTreeMap<TableId, &'static str> = BTreeMap::new();
        for (name, container) in self.containers() {
            container.bind(name)?;
            if let Some(other) = ids.insert(TableId::of(name), name) {
                return Err(StateError::DuplicateTable {
                    first: other,
                    second: name,
                });
            }
        }
        Ok(())
    }

    /// The names of the containers, in declaration order.
    fn table_names(&self) -> Vec<&'static str> {
        self.containers()
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    /// A canonical copy of the whole state.
    fn snapshot(&self) -> Result<Snapshot, CodecError> {
        let mut parts = Vec::new();
        for (name, container) in self.containers() {
            parts.push((name.to_owned(), container.encode_snapshot()?));
        }
        Ok(Snapshot { parts })
    }

    /// Replaces the whole state with `snapshot`: every container, or (on any
    /// error) none of them.
    fn restore(&self, snapshot: &Snapshot) -> Result<(), RestoreError> {
        let containers = self.containers();
        let expected: Vec<&str> = containers.iter().map(|(name, _)| *name).collect();
        let found: Vec<&str> = snapshot
            .parts
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        if expected != found {
            return Err(RestoreError::Layout {
                expected: expected.join(", "),
                found: found.join(", "),
            });
        }
        let mut staged = Vec::with_capacity(containers.len());
        for ((name, container), (_, bytes)) in containers.iter().zip(&snapshot.parts) {
            let value = container
                .decode_snapshot(bytes)
                .map_err(|source| RestoreError::Container { name, source })?;
            staged.push(value);
        }
        for ((_, container), value) in containers.iter().zip(staged) {
            container.install_snapshot(value);
        }
        Ok(())
    }

    /// The digest of [`State::snapshot`].
    fn digest(&self) -> Result<Digest, CodecError> {
        Ok(self.snapshot()?.digest())
    }
}

/// A service's state could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// A container was already named differently.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Two containers have the same table identity.
    #[error("containers `{first}` and `{second}` have the same table identity; rename one")]
    DuplicateTable {
        /// The first container.
        first: &'static str,
        /// The second container.
        second: &'static str,
    },
    /// A rule names a table the state does not have.
    #[error(
        "rule of `{method}` names table `{table}`, which the state does not have (its tables: {known})"
    )]
    UnknownTable {
        /// The method whose rule names it.
        method: &'static str,
        /// The table it names.
        table: &'static str,
        /// The tables the state has, comma-separated.
        known: String,
    },
}

/// A snapshot could not be restored; the state was left unchanged.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The snapshot's containers are not the state's.
    #[error("snapshot holds containers [{found}] but the state has [{expected}]")]
    Layout {
        /// The state's containers.
        expected: String,
        /// The snapshot's containers.
        found: String,
    },
    /// One container's part could not be decoded.
    #[error("snapshot of container `{name}` is invalid: {source}")]
    Container {
        /// The container.
        name: &'static str,
        /// Why.
        #[source]
        source: CodecError,
    },
}

/// A canonical copy of a state: each container's name and encoded contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    parts: Vec<(String, Vec<u8>)>,
}

impl Snapshot {
    /// The snapshot as bytes, for storage or transfer.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self).expect("names and byte strings always encode")
    }

    /// Reads a snapshot written by [`Snapshot::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Snapshot, CodecError> {
        codec::decode(bytes)
    }

    /// The blake3 digest of [`Snapshot::to_bytes`].
    pub fn digest(&self) -> Digest {
        Digest(*blake3::hash(&self.to_bytes()).as_bytes())
    }

    /// The container names and their encoded contents.
    pub fn parts(&self) -> &[(String, Vec<u8>)] {
        &self.parts
    }
}

/// A 32-byte blake3 digest of a state.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{Cell, Table};

    struct Bank {
        accounts: Table<u64, u64>,
        fees: Cell<u64>,
    }

    impl State for Bank {
        fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
            vec![("accounts", &self.accounts), ("fees", &self.fees)]
        }
    }

    fn bank() -> Bank {
        let bank = Bank {
            accounts: Table::new(),
            fees: Cell::new(0),
        };
        bank.bind_names().unwrap();
        bank
    }

    #[test]
    fn equal_states_have_equal_digests() {
        let (a, b) = (bank(), bank());
        a.accounts.insert(1, 10);
        a.accounts.insert(2, 20);
        b.accounts.insert(2, 20);
        b.accounts.insert(1, 10);
        assert_eq!(a.digest().unwrap(), b.digest().unwrap());
        b.fees.set(1);
        assert_ne!(a.digest().unwrap(), b.digest().unwrap());
        assert_eq!(a.table_names(), vec!["accounts", "fees"]);
    }

    #[test]
    fn restore_installs_all_or_nothing() {
        let (a, b) = (bank(), bank());
        a.accounts.insert(1, 10);
        a.fees.set(3);
        let snapshot = Snapshot::from_bytes(&a.snapshot().unwrap().to_bytes()).unwrap();
        b.restore(&snapshot).unwrap();
        assert_eq!(b.digest().unwrap(), a.digest().unwrap());

        // A snapshot whose second part is corrupt leaves the first untouched.
        let mut bad = snapshot.clone();
        bad.parts[0].1 = codec::encode(&vec![(5u64, 5u64)]).unwrap();
        bad.parts[1].1 = vec![0xff; 3];
        let before = b.digest().unwrap();
        assert!(matches!(
            b.restore(&bad),
            Err(RestoreError::Container { name: "fees", .. })
        ));
        assert_eq!(b.digest().unwrap(), before);

        let mut renamed = snapshot;
        renamed.parts[0].0 = "acounts".into();
        let err = b.restore(&renamed).unwrap_err();
        assert_eq!(
            err.to_string(),
            "snapshot holds containers [acounts, fees] but the state has [accounts, fees]"
        );
    }
}

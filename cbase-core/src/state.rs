//! A service's replicated state as a whole: naming, digests, snapshots.
//!
//! A state is a struct of [containers](crate::container). `#[derive(State)]`
//! implements [`State`] by listing its container fields; everything else
//! (binding names, digest, changes, snapshot, restore) is provided here.
//!
//! The [`Digest`] of a state combines, in declaration order, each container's
//! name and the root of its [digest tree](crate::merkle): it costs what
//! changed since the last digest, not what is stored, and equal states have
//! equal digests on every replica whatever order and parallelism produced
//! them. A [`Snapshot`] is the same state in canonical form (each container's
//! encoded entries, sorted), and [`Snapshot::digest`] computes the same digest
//! from scratch, which is how a transferred state is checked.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::container::{BindError, Changes, Container, Entries};
use crate::key::TableId;
use crate::merkle::{self, Hash};

/// The container names of a state type, known while compiling:
/// `#[derive(State)]` writes them, and a `#[cbase::service]` adapter checks
/// its rules against them when it is built, so a rule naming a table the
/// state lacks fails `cargo build` and `cargo test`, not only the start.
///
/// A hand-written [`State`] used with a `#[cbase::service]` adapter says
/// `impl StateTables for MyState {}`: its names are then checked at start
/// only.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a cbase state",
    label = "not a state",
    note = "add `#[derive(cbase::State)]` to `{Self}`: its fields (`Table`s and `Cell`s) are the tables the rules name"
)]
pub trait StateTables: State {
    /// The containers' names; `None`: not known while compiling.
    const TABLES: Option<&'static [&'static str]> = None;

    /// The arity of each container's key, in the order of
    /// [`TABLES`](StateTables::TABLES): that of its tuple key for a `Table`
    /// keyed by a [`TupleKey`](crate::container::TupleKey), 0 for any other
    /// container. A prefix rule `table[(a, *)]` is checked against it, so a
    /// prefix of a table whose key is not a longer tuple fails the build.
    /// `None`: not known while compiling (a generic state).
    const KEY_ARITIES: Option<&'static [usize]> = None;
}

/// The key arity of the table `name` (see [`StateTables::KEY_ARITIES`]), or
/// `usize::MAX` if there is no such table (which [`has_table`] reports).
#[doc(hidden)]
pub const fn key_arity(tables: &[&str], arities: &[usize], name: &str) -> usize {
    let mut at = 0;
    while at < tables.len() && at < arities.len() {
        if has_table(std::slice::from_ref(&tables[at]), name) {
            return arities[at];
        }
        at += 1;
    }
    usize::MAX
}

/// Whether `tables` holds `name`, while compiling (the check of
/// [`StateTables`]).
#[doc(hidden)]
pub const fn has_table(tables: &[&str], name: &str) -> bool {
    let mut at = 0;
    while at < tables.len() {
        let candidate = tables[at].as_bytes();
        let wanted = name.as_bytes();
        if candidate.len() == wanted.len() {
            let mut byte = 0;
            while byte < wanted.len() && candidate[byte] == wanted[byte] {
                byte += 1;
            }
            if byte == wanted.len() {
                return true;
            }
        }
        at += 1;
    }
    false
}

/// The replicated state of a service.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a cbase state",
    label = "not a state",
    note = "add `#[derive(cbase::State)]` to `{Self}`: its fields (`Table`s and `Cell`s) are the tables the rules name"
)]
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

    /// The digest of the state: each container's name and digest-tree root.
    /// Costs O(entries changed since the last digest).
    fn digest(&self) -> Digest {
        digest_of_roots(
            self.containers()
                .into_iter()
                .map(|(name, container)| (name, container.root())),
        )
    }

    /// From now on, records every committed change for
    /// [`State::take_changes`]. A replica does, to keep its checkpoints.
    fn record_changes(&self) {
        for (_, container) in self.containers() {
            container.record_changes();
        }
    }

    /// Each container's changes since the last call, in declaration order.
    fn take_changes(&self) -> StateChanges {
        StateChanges {
            parts: self
                .containers()
                .into_iter()
                .map(|(name, container)| (name.to_owned(), container.take_changes()))
                .collect(),
        }
    }

    /// From now on, keeps in each container what it takes to read
    /// checkpoint `seq` (the state as it is now) and the checkpoints after
    /// it with [`snapshot_at`](State::snapshot_at), while requests go on
    /// changing the state: the earlier values of the entries changed since
    /// (see [`EntryLog::keep_versions`](crate::EntryLog::keep_versions)).
    /// A replica without a data directory does, instead of keeping a copy of
    /// its stable checkpoint; the versions replace the changes
    /// [`record_changes`](State::record_changes) would record
    /// ([`take_changes`](State::take_changes) is empty from now on).
    fn keep_versions(&self, seq: u64) {
        for (_, container) in self.containers() {
            container.entry_log().keep_versions(seq);
        }
    }

    /// Checkpoint `seq` is taken now (where no request runs: a barrier).
    fn checkpoint_taken(&self, seq: u64) {
        for (_, container) in self.containers() {
            container.entry_log().checkpoint(seq);
        }
    }

    /// Checkpoints before `seq` will not be read with
    /// [`snapshot_at`](State::snapshot_at) again.
    fn forget_versions_before(&self, seq: u64) {
        for (_, container) in self.containers() {
            container.entry_log().forget_versions_before(seq);
        }
    }

    /// The state at checkpoint `seq`, read from the live state and the
    /// versions kept ([`keep_versions`](State::keep_versions)) while
    /// requests may run: O(state) to encode, and no request waits for it
    /// longer than a container's
    /// [`encode_entries_while_running`](Container::encode_entries_while_running)
    /// holds a lock (a table: one shard's). `Ok(None)` if versions for `seq`
    /// are not kept (let go, not taken yet, or the state was replaced since),
    /// or if any container was replaced, or its versions kept anew, while
    /// the read ran: what it read may not be checkpoint `seq`.
    fn snapshot_at(&self, seq: u64) -> Result<Option<Snapshot>, CodecError> {
        let containers = self.containers();
        // Every container's generation, taken before any live read: if a
        // container's versions are dropped or started anew after this (the
        // state replaced, even by the same checkpoint), its contents read
        // may not be the ones they put back, and the read gives nothing.
        // Taken all at once, not one container at a time, so that a read
        // cannot take one container from before a restore and the next
        // from after it.
        let generations: Vec<u64> = containers
            .iter()
            .map(|(_, container)| container.entry_log().generation())
            .collect();
        let mut parts = Vec::new();
        for ((name, container), generation) in containers.into_iter().zip(generations) {
            let live = container.encode_entries_while_running()?;
            match container.entry_log().contents_at(seq, generation, live) {
                Some(entries) => parts.push((name.to_owned(), entries)),
                None => return Ok(None),
            }
        }
        Ok(Some(Snapshot { parts }))
    }

    /// A canonical copy of the whole state. Costs O(state).
    fn snapshot(&self) -> Result<Snapshot, CodecError> {
        let mut parts = Vec::new();
        for (name, container) in self.containers() {
            parts.push((name.to_owned(), container.encode_entries()?));
        }
        Ok(Snapshot { parts })
    }

    /// Replaces the whole state with `snapshot`: every container, or (on any
    /// error) none of them.
    fn restore(&self, snapshot: &Snapshot) -> Result<(), RestoreError> {
        in_every_container(
            &self.containers(),
            &snapshot.parts,
            |container, entries| container.decode_entries(entries),
            |container, staged| container.install(staged),
        )
    }

    /// Applies `changes` to every container, or to none if any refuses its
    /// part: what [`restore`](State::restore) does for a whole snapshot, at
    /// the cost of what changed (for containers that override
    /// [`Container::decode_changes`]). `changes` must name the containers
    /// in declaration order, as [`State::take_changes`] gives them.
    fn patch(&self, changes: &StateChanges) -> Result<(), RestoreError> {
        in_every_container(
            &self.containers(),
            &changes.parts,
            |container, part| container.decode_changes(part),
            |container, staged| container.apply_changes(staged),
        )
    }
}

/// Hands each container its part, in two steps so that all of them change
/// or none: `decode` every part (any refusal ends it there, nothing
/// changed), then `apply` what each decoded. `parts` must name the
/// containers in declaration order.
fn in_every_container<T>(
    containers: &[(&'static str, &dyn Container)],
    parts: &[(String, T)],
    decode: impl Fn(&dyn Container, &T) -> Result<Box<dyn std::any::Any + Send>, CodecError>,
    apply: impl Fn(&dyn Container, Box<dyn std::any::Any + Send>),
) -> Result<(), RestoreError> {
    let expected: Vec<&str> = containers.iter().map(|(name, _)| *name).collect();
    let found: Vec<&str> = parts.iter().map(|(name, _)| name.as_str()).collect();
    if expected != found {
        return Err(RestoreError::Layout {
            expected: expected.join(", "),
            found: found.join(", "),
        });
    }
    let mut staged = Vec::with_capacity(containers.len());
    for ((name, container), (_, part)) in containers.iter().zip(parts) {
        let value =
            decode(*container, part).map_err(|source| RestoreError::Container { name, source })?;
        staged.push(value);
    }
    for ((_, container), value) in containers.iter().zip(staged) {
        apply(*container, value);
    }
    Ok(())
}

/// The state digest of containers given by name and root, in declaration order.
fn digest_of_roots<'a>(roots: impl IntoIterator<Item = (&'a str, Hash)>) -> Digest {
    Digest::of_roots(roots)
}

impl Digest {
    /// The digest of a state whose containers, in declaration order, have
    /// these names and digest-tree roots: what [`State::digest`] and
    /// [`Snapshot::digest`] compute, from the roots alone.
    pub fn of_roots<'a>(roots: impl IntoIterator<Item = (&'a str, Hash)>) -> Digest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"cbase/state/v1");
        for (name, root) in roots {
            hasher.update(&(name.len() as u64).to_le_bytes());
            hasher.update(name.as_bytes());
            hasher.update(&root);
        }
        Digest(*hasher.finalize().as_bytes())
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
    /// The state holds a value that cannot be encoded, so it cannot be
    /// digested or checkpointed.
    #[error("the service state cannot be encoded: {0}")]
    Unencodable(String),
    /// A rule names a table the state does not have.
    #[error(
        "rule of `{method}` names table `{table}`, which the state does not have (its tables: \
         {known}){}",
        suggestion.map(|s| format!("; did you mean `{s}`?")).unwrap_or_default()
    )]
    UnknownTable {
        /// The method whose rule names it.
        method: &'static str,
        /// The table it names.
        table: &'static str,
        /// The tables the state has, comma-separated.
        known: String,
        /// The state's table whose name is closest to `table`, if one is
        /// close (a typo).
        suggestion: Option<&'static str>,
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

/// A canonical copy of a state: each container's name and encoded entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    #[serde(with = "crate::codec::bytes::named_maps")]
    parts: Vec<(String, Entries)>,
}

impl Snapshot {
    /// A snapshot of the given containers' entries, in declaration order.
    pub fn from_parts(parts: Vec<(String, Entries)>) -> Snapshot {
        Snapshot { parts }
    }

    /// The snapshot as bytes, for storage or transfer.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self).expect("names and byte strings always encode")
    }

    /// Reads a snapshot written by [`Snapshot::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Snapshot, CodecError> {
        codec::decode(bytes)
    }

    /// The digest of the state this snapshot holds, computed from scratch:
    /// the same as [`State::digest`] of that state. Costs O(snapshot).
    pub fn digest(&self) -> Digest {
        digest_of_roots(self.parts.iter().map(|(name, entries)| {
            (
                name.as_str(),
                merkle::root_of(entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))),
            )
        }))
    }

    /// The container names and their encoded entries.
    pub fn parts(&self) -> &[(String, Entries)] {
        &self.parts
    }

    /// The container names and their encoded entries, taken apart.
    pub fn into_parts(self) -> Vec<(String, Entries)> {
        self.parts
    }

    /// Applies changes taken from the same state (by [`State::take_changes`]),
    /// so the snapshot follows the state. Costs O(changes).
    ///
    /// # Panics
    /// If `changes` name other containers than the snapshot holds.
    pub fn apply(&mut self, changes: &StateChanges) {
        assert_eq!(
            self.parts.len(),
            changes.parts.len(),
            "changes come from the state the snapshot was taken of"
        );
        for ((name, entries), (changed, writes)) in self.parts.iter_mut().zip(&changes.parts) {
            assert_eq!(name, changed, "changes come from the same containers");
            for (key, value) in writes {
                match (value, entries.get_mut(key)) {
                    // An entry that stays is overwritten in place: its key
                    // and, when the new value fits, its value allocation are
                    // kept (a snapshot follows millions of updates).
                    (Some(value), Some(held)) => held.clone_from(value),
                    (Some(value), None) => {
                        entries.insert(key.clone(), value.clone());
                    }
                    (None, _) => {
                        entries.remove(key);
                    }
                }
            }
        }
    }

    /// The number of entries in all containers.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|(_, entries)| entries.len()).sum()
    }

    /// Whether no container has an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What changed in a state between two calls of [`State::take_changes`]:
/// each container's changed entries, in declaration order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChanges {
    #[serde(with = "crate::codec::bytes::named_maps")]
    parts: Vec<(String, Changes)>,
}

impl StateChanges {
    /// Changes of the given containers, in declaration order.
    pub fn from_parts(parts: Vec<(String, Changes)>) -> StateChanges {
        StateChanges { parts }
    }

    /// The containers' names and changes.
    pub fn parts(&self) -> &[(String, Changes)] {
        &self.parts
    }

    /// The number of changed entries in all containers.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|(_, changes)| changes.len()).sum()
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        assert_eq!(a.digest(), b.digest());
        b.fees.set(1);
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.table_names(), vec!["accounts", "fees"]);
    }

    /// `changes` encoded for the `accounts` table, with the `fees` cell set
    /// to `fee`.
    fn bank_changes(changes: &[(u64, Option<u64>)], fee: Option<u64>) -> StateChanges {
        let accounts: Changes = changes
            .iter()
            .map(|(k, v)| {
                (
                    codec::encode(k).unwrap(),
                    v.map(|v| codec::encode(&v).unwrap()),
                )
            })
            .collect();
        let fees: Changes = fee
            .map(|fee| (Vec::new(), Some(codec::encode(&fee).unwrap())))
            .into_iter()
            .collect();
        StateChanges::from_parts(vec![("accounts".into(), accounts), ("fees".into(), fees)])
    }

    proptest::proptest! {
        /// Patching a state with changes leaves it exactly as restoring the
        /// whole changed snapshot does: same digest, same contents, and no
        /// changes left recorded against the old base.
        #[test]
        fn a_patch_is_a_restore_of_what_changed(
            initial in proptest::collection::btree_map(0u64..300, 0u64..5, 0..200),
            changes in proptest::collection::btree_map(0u64..300, proptest::option::of(0u64..5), 0..100),
            fee in proptest::option::of(0u64..3),
        ) {
            let (patched, restored) = (bank(), bank());
            for (k, v) in &initial {
                patched.accounts.insert(*k, *v);
            }
            patched.record_changes();
            patched.accounts.insert(999, 1);
            patched.accounts.remove(&999);
            let changes: Vec<(u64, Option<u64>)> = changes.into_iter().collect();
            let mut expected = patched.snapshot().unwrap();
            let encoded = bank_changes(&changes, fee);
            expected.apply(&encoded);
            restored.restore(&expected).unwrap();

            patched.patch(&encoded).unwrap();
            proptest::prop_assert_eq!(patched.digest(), restored.digest());
            proptest::prop_assert_eq!(patched.digest(), expected.digest());
            proptest::prop_assert_eq!(patched.accounts.entries(), restored.accounts.entries());
            proptest::prop_assert_eq!(patched.fees.get(), restored.fees.get());
            proptest::prop_assert!(patched.take_changes().is_empty());
        }
    }

    #[test]
    fn a_patch_applies_to_every_container_or_to_none() {
        let state = bank();
        state.accounts.insert(1, 10);
        let before = state.digest();
        // The table's part is fine, the cell's is not its encoding.
        let mut bad = bank_changes(&[(1, None), (2, Some(20))], None);
        bad.parts[1].1.insert(Vec::new(), Some(vec![0xff; 3]));
        assert!(matches!(
            state.patch(&bad),
            Err(RestoreError::Container { name: "fees", .. })
        ));
        assert_eq!(state.digest(), before);
        assert_eq!(state.accounts.get(&1), Some(10));

        // A key written long (not canonical) would digest differently.
        let mut long = bank_changes(&[], None);
        long.parts[0]
            .1
            .insert(vec![251, 1, 0], Some(codec::encode(&5u64).unwrap()));
        assert!(matches!(
            state.patch(&long),
            Err(RestoreError::Container {
                name: "accounts",
                ..
            })
        ));
        assert_eq!(state.digest(), before);

        let mut renamed = bank_changes(&[], None);
        renamed.parts.swap(0, 1);
        assert!(matches!(
            state.patch(&renamed),
            Err(RestoreError::Layout { .. })
        ));
    }

    #[test]
    fn the_incremental_digest_is_the_snapshot_digest() {
        let state = bank();
        assert_eq!(state.digest(), state.snapshot().unwrap().digest());
        for k in 0..100u64 {
            state.accounts.insert(k, k);
        }
        state.accounts.remove(&7);
        state.fees.set(9);
        assert_eq!(state.digest(), state.snapshot().unwrap().digest());
    }

    #[test]
    fn a_snapshot_follows_the_state_by_its_changes() {
        let state = bank();
        state.accounts.insert(1, 1);
        let mut copy = state.snapshot().unwrap();
        state.record_changes();
        state.accounts.insert(2, 2);
        state.accounts.remove(&1);
        state.fees.set(4);
        let changes = state.take_changes();
        assert_eq!(changes.len(), 3);
        copy.apply(&changes);
        assert_eq!(copy, state.snapshot().unwrap());
        assert!(state.take_changes().is_empty());
    }

    #[test]
    fn restore_installs_all_or_nothing() {
        let (a, b) = (bank(), bank());
        a.accounts.insert(1, 10);
        a.fees.set(3);
        let snapshot = Snapshot::from_bytes(&a.snapshot().unwrap().to_bytes()).unwrap();
        b.restore(&snapshot).unwrap();
        assert_eq!(b.digest(), a.digest());
        assert_eq!(b.accounts.get(&1), Some(10));

        // A snapshot whose second part is corrupt leaves the first untouched.
        let mut bad = snapshot.clone();
        bad.parts[0].1 = [(codec::encode(&5u64).unwrap(), codec::encode(&5u64).unwrap())].into();
        bad.parts[1].1 = [(vec![], vec![0xff; 3])].into();
        let before = b.digest();
        assert!(matches!(
            b.restore(&bad),
            Err(RestoreError::Container { name: "fees", .. })
        ));
        assert_eq!(b.digest(), before);

        // A key that is not in canonical form (a varint written long) would
        // digest differently from what the table computes: refused.
        let mut long = snapshot.clone();
        long.parts[0].1 = [(vec![251, 1, 0], codec::encode(&5u64).unwrap())].into();
        assert!(b.restore(&long).is_err());

        let mut renamed = snapshot;
        renamed.parts[0].0 = "acounts".into();
        let err = b.restore(&renamed).unwrap_err();
        assert_eq!(
            err.to_string(),
            "snapshot holds containers [acounts, fees] but the state has [accounts, fees]"
        );
    }
}

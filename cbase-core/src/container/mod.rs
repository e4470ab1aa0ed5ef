//! Replicated state containers: [`Table`] and [`Cell`].
//!
//! Requests run concurrently and take `&self`, so replicated state lives in
//! containers that are safe to share. Every access is first checked against the
//! running request's declared access set (see [`crate::scope`]); only then is
//! data touched. Containers are named after the field that holds them (by
//! `#[derive(State)]`, or [`Table::named`] by hand); the name is the table in
//! rules such as `#[reads(accounts[id])]`.

mod cell;
mod log;
mod prefix;
mod table;
mod versions;

use std::any::Any;
use std::sync::OnceLock;

pub use cell::Cell;
pub use log::EntryLog;
#[doc(hidden)]
pub use prefix::{ArityOf, NoTupleKey};
pub use prefix::{KeyPrefix, PrefixProbe, TupleKey};
pub use table::{PrefixView, Table};

use crate::codec::CodecError;
use crate::key::TableId;

/// The encoded contents of a container: each entry's encoded key and encoded
/// value, sorted by the key's bytes. This is the canonical form that
/// snapshots carry and that digests are computed over.
pub type Entries = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

/// The entries a container changed: each key's new encoded value, or `None`
/// where the entry was removed.
pub type Changes = std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A piece of replicated state: named, written atomically by requests, and
/// digested, snapshotted and restored as a set of encoded entries.
///
/// Implemented by [`Table`] and [`Cell`]; `#[derive(State)]` lists the
/// containers of a struct through this trait. A container of your own (the
/// `fs` example keeps files on disk) implements it with the same parts:
///
/// - **Atomic writes.** Inside a request, stage writes with
///   [`txn::stage`](crate::txn::stage) under the container's
///   [`TableId`]; reads look at them first. The executor calls
///   [`prepare`](Container::prepare) and then [`commit`](Container::commit)
///   when the request returns, and drops them if it panics. Outside a request
///   ([`txn::is_open`](crate::txn::is_open) is false), write through.
/// - **Digests.** Report every entry committed to the container's
///   [`EntryLog`] ([`entry_log`](Container::entry_log)): it keeps the
///   [`DigestTree`](crate::merkle::DigestTree) up to date and records the
///   changes, so [`root`](Container::root) costs what changed, not what is
///   stored.
/// - **Snapshots.** [`encode_entries`](Container::encode_entries) encodes the whole contents;
///   [`decode_entries`](Container::decode_entries) and
///   [`install`](Container::install) restore them in two steps, so a whole
///   state installs in every container or none. `install` drops the
///   [`EntryLog`]'s versions before any new contents can be read (see
///   there).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a cbase container, so it cannot be a field of a `#[derive(State)]` struct",
    label = "not a `Table` or a `Cell`",
    note = "replicated data lives in `Table<K, V>` or `Cell<T>`: every access is checked against the request's rule",
    note = "a field that is not replicated state (configuration that never changes while requests run) takes `#[state(skip)]`"
)]
pub trait Container: Send + Sync {
    /// Gives the container its name (the field name). Naming twice with the
    /// same name is fine; with a different name it is an error.
    fn bind(&self, name: &'static str) -> Result<(), BindError>;

    /// The name, once bound.
    fn name(&self) -> Option<&'static str>;

    /// Gets what a finished request staged in this container ready to
    /// commit: encodes and digests it. Nothing visible changes; an error
    /// aborts the whole request, in every container.
    fn prepare(&self, staged: &crate::txn::Staged) -> Result<Box<dyn Any>, CodecError>;

    /// Applies what [`prepare`](Container::prepare) returned. Runs while the
    /// request still holds its keys.
    ///
    /// Everything that can fail belongs in `prepare`: a request's writes are
    /// applied in every container or none only if no commit fails. Should
    /// one panic anyway (a disk write that fails), the request fails with
    /// [`ExecError::NotCommitted`](crate::ExecError::NotCommitted) and the
    /// worker goes on; containers that cannot fail
    /// ([`commit_never_fails`](Container::commit_never_fails)) are committed
    /// after the others, so they keep none of its writes, but a container
    /// that may fail and was committed before the one that did keeps its
    /// part. A panic that is not the same on every replica leaves this one
    /// with another state, which its next checkpoint's digest shows.
    ///
    /// # Panics
    /// If `prepared` did not come from this container's `prepare`.
    fn commit(&self, prepared: Box<dyn Any>);

    /// Whether [`commit`](Container::commit) cannot fail once `prepare`
    /// succeeded: true for [`Table`] and [`Cell`], false by default. Containers that may fail are
    /// committed first.
    fn commit_never_fails(&self) -> bool {
        false
    }

    /// The log that keeps the digest tree of the entries and, on a replica,
    /// the changes since the last checkpoint. The container reports every
    /// entry it commits to it; the three methods below read it.
    fn entry_log(&self) -> &EntryLog;

    /// The root of the digest tree over the entries: equal contents have
    /// equal roots. Costs O(entries changed since the last call).
    fn root(&self) -> crate::merkle::Hash {
        self.entry_log().root()
    }

    /// From now on, records every committed change for
    /// [`take_changes`](Container::take_changes) (a replica does; a container
    /// used on its own need not pay for it).
    fn record_changes(&self) {
        self.entry_log().record_changes();
    }

    /// The changes committed since the last call (or since
    /// [`record_changes`](Container::record_changes)), each key once with its
    /// latest value.
    fn take_changes(&self) -> Changes {
        self.entry_log().take_changes()
    }

    /// The whole contents, encoded. Costs O(contents).
    fn encode_entries(&self) -> Result<Entries, CodecError>;

    /// The whole contents, encoded, for reading a checkpoint while requests
    /// run ([`State::snapshot_at`](crate::State::snapshot_at)): each entry
    /// as it was at some moment during the call, not necessarily all at
    /// the same one, since the versions the [`EntryLog`] keeps put right
    /// every entry changed meanwhile. A container that can encode a part
    /// at a time overrides it, so that requests never wait for the whole
    /// contents to be encoded (`Table` holds one shard's lock at a time).
    /// Defaults to [`encode_entries`](Container::encode_entries).
    fn encode_entries_while_running(&self) -> Result<Entries, CodecError> {
        self.encode_entries()
    }

    /// Decodes entries into a value that [`Container::install`] accepts,
    /// without changing the container. Refuses entries this container would
    /// not have written (an encoding that is not canonical), since their
    /// digest would not be the one it maintains.
    fn decode_entries(&self, entries: &Entries) -> Result<Box<dyn Any + Send>, CodecError>;

    /// Replaces the contents with a value from
    /// [`Container::decode_entries`], and the digest tree with theirs.
    /// Changes recorded so far are dropped: the new contents are the base.
    ///
    /// The versions the [`EntryLog`] keeps for checkpoint reads are of the
    /// old contents, and must be dropped before
    /// [`encode_entries_while_running`](Container::encode_entries_while_running)
    /// can see any of the new ones, or a checkpoint read would put old
    /// values back into new contents: call
    /// [`EntryLog::drop_versions`] before replacing anything (as [`Table`]
    /// and [`Cell`] do), or [`EntryLog::install`] while holding the lock
    /// that keeps the new contents from being read.
    ///
    /// # Panics
    /// If `staged` did not come from this container type's `decode_entries`.
    fn install(&self, staged: Box<dyn Any + Send>);

    /// Decodes `changes` (each changed key's new encoded value, `None` to
    /// remove it) into a value that [`Container::apply_changes`] accepts,
    /// without changing the container; refuses what
    /// [`decode_entries`](Container::decode_entries) refuses. A replica that
    /// fetched only the parts of a checkpoint that differ from the state it
    /// has patches it with these two instead of restoring it whole.
    ///
    /// The default goes through the whole contents
    /// ([`encode_entries`](Container::encode_entries), the changes applied,
    /// [`decode_entries`](Container::decode_entries)), so any container
    /// supports it; override both methods to make it cost what changed, as
    /// [`Table`] does.
    fn decode_changes(&self, changes: &Changes) -> Result<Box<dyn Any + Send>, CodecError> {
        let mut entries = self.encode_entries()?;
        for (key, value) in changes {
            match value {
                Some(value) => entries.insert(key.clone(), value.clone()),
                None => entries.remove(key),
            };
        }
        self.decode_entries(&entries)
    }

    /// Applies a value from [`Container::decode_changes`]. As after
    /// [`install`](Container::install), changes recorded so far are dropped:
    /// the patched contents are the new base. An override drops the
    /// versions as `install` does: [`EntryLog::drop_versions`] before the
    /// first change is applied, and [`EntryLog::forget_changes`] after the
    /// last.
    ///
    /// # Panics
    /// If `staged` did not come from this container's `decode_changes`.
    fn apply_changes(&self, staged: Box<dyn Any + Send>) {
        self.install(staged);
    }
}

/// A container was given two different names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("container is named `{existing}` and cannot be renamed `{requested}`")]
pub struct BindError {
    /// The name it already has.
    pub existing: &'static str,
    /// The name it was asked to take.
    pub requested: &'static str,
}

/// A container's name and table identity, set once.
#[derive(Default)]
pub(crate) struct Binding(OnceLock<(&'static str, TableId)>);

impl Binding {
    pub(crate) fn named(name: &'static str) -> Binding {
        let binding = Binding::default();
        binding.bind(name).expect("a fresh binding takes any name");
        binding
    }

    pub(crate) fn bind(&self, name: &'static str) -> Result<(), BindError> {
        let (existing, _) = *self.0.get_or_init(|| (name, TableId::of(name)));
        if existing == name {
            Ok(())
        } else {
            Err(BindError {
                existing,
                requested: name,
            })
        }
    }

    pub(crate) fn name(&self) -> Option<&'static str> {
        self.0.get().map(|(name, _)| *name)
    }

    /// Name and id for an access check. An unnamed container can only be
    /// used outside requests; inside one it is a setup bug reported loudly.
    pub(crate) fn for_access(&self) -> (&'static str, TableId) {
        match self.0.get() {
            Some(binding) => *binding,
            None => {
                if let Some(method) = crate::scope::current_method() {
                    panic!(
                        "request `{method}` used a container that has no name; \
                         derive `State` for the struct that holds it, or build it with `named(..)`"
                    );
                }
                ("<unnamed>", TableId::of(""))
            }
        }
    }
}

//! `EntryLog`: a container's digest tree and, on a replica, its record of
//! changes since the last checkpoint.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use super::{Changes, Entries};
use crate::merkle::{self, DigestTree, Hash};

/// Keeps a container's [`DigestTree`] in step with its committed writes and,
/// once [`record_changes`](EntryLog::record_changes) is called, remembers the
/// changed entries for the next checkpoint.
///
/// [`Table`](crate::Table) and [`Cell`](crate::Cell) use one; a custom
/// [`Container`](super::Container) calls [`change`](EntryLog::change) for
/// every entry it commits and gets the rest of the trait from here.
#[derive(Debug, Default)]
pub struct EntryLog {
    tree: DigestTree,
    recording: AtomicBool,
    changes: Mutex<Changes>,
}

impl EntryLog {
    /// An empty log: no entries, not recording.
    pub fn new() -> EntryLog {
        EntryLog::default()
    }

    /// Records that the entry at encoded `key` changed from `old` to `new`
    /// (encoded values; `None` where there is no entry).
    ///
    /// # Panics
    /// If `old` is not the value the log last saw for `key`: the container
    /// and its digest disagree, which is a bug in the container.
    pub fn change(&self, key: &[u8], old: Option<&[u8]>, new: Option<&[u8]>) {
        let key_hash = merkle::key_hash(key);
        let old_digest = old.map(|value| merkle::entry_digest(key, value));
        let new_digest = new.map(|value| merkle::entry_digest(key, value));
        if let Err(missing) = self.tree.replace(key_hash, old_digest, new_digest) {
            panic!("container contents and digest disagree: {missing}");
        }
        if self.recording.load(Ordering::Relaxed) {
            self.changes
                .lock()
                .insert(key.to_vec(), new.map(<[u8]>::to_vec));
        }
    }

    /// The root of the entries' digest tree.
    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    /// The number of entries.
    pub fn len(&self) -> u64 {
        self.tree.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Starts recording changes for [`take_changes`](EntryLog::take_changes).
    pub fn record_changes(&self) {
        self.recording.store(true, Ordering::Relaxed);
    }

    /// The changes recorded since the last call.
    pub fn take_changes(&self) -> Changes {
        std::mem::take(&mut *self.changes.lock())
    }

    /// The digest tree of `entries`, for [`install`](EntryLog::install).
    pub fn tree_of(entries: &Entries) -> DigestTree {
        DigestTree::from_entries(
            entries
                .iter()
                .map(|(key, value)| (merkle::key_hash(key), merkle::entry_digest(key, value))),
        )
    }

    /// Drops the changes recorded so far: the contents as they are become
    /// the base the next changes are counted from (a container patched in
    /// [`Container::apply_changes`](super::Container::apply_changes)).
    pub fn forget_changes(&self) {
        self.changes.lock().clear();
    }

    /// Replaces the digest tree with `tree` (the new contents' tree) and
    /// drops the changes recorded so far.
    pub fn install(&self, tree: DigestTree) {
        self.tree.replace_with(tree);
        self.changes.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_recorded_once_asked_for() {
        let log = EntryLog::new();
        log.change(b"a", None, Some(b"1"));
        assert!(log.take_changes().is_empty());
        log.record_changes();
        log.change(b"a", Some(b"1"), Some(b"2"));
        log.change(b"b", None, Some(b"3"));
        log.change(b"b", Some(b"3"), None);
        let changes = log.take_changes();
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[&b"a".to_vec()], Some(b"2".to_vec()));
        assert_eq!(changes[&b"b".to_vec()], None);
        assert!(log.take_changes().is_empty());
        let entries: Entries = [(b"a".to_vec(), b"2".to_vec())].into();
        assert_eq!(log.root(), EntryLog::tree_of(&entries).root());
    }

    #[test]
    #[should_panic(expected = "container contents and digest disagree")]
    fn a_wrong_old_value_is_a_bug() {
        let log = EntryLog::new();
        log.change(b"a", None, Some(b"1"));
        log.change(b"a", Some(b"2"), None);
    }
}

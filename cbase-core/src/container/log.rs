//! `EntryLog`: a container's digest tree and, on a replica, its record of
//! changes since the last checkpoint and of the values the checkpoints
//! still wanted had.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::versions::Versions;
use super::{Changes, Entries};
use crate::merkle::{self, DigestTree, Hash};

/// Keeps a container's [`DigestTree`] in step with its committed writes and,
/// once [`record_changes`](EntryLog::record_changes) is called, remembers the
/// changed entries for the next checkpoint.
///
/// Once [`keep_versions`](EntryLog::keep_versions) is called, it also keeps
/// the earlier values of the entries changed since the oldest checkpoint
/// still wanted, so that [`contents_at`](EntryLog::contents_at) reads a
/// recent checkpoint from the live contents, with no copy of them.
///
/// The versions are only good for the contents they were kept for. Each
/// set of versions belongs to a [`generation`](EntryLog::generation), which
/// moves on whenever they are dropped or started anew; a checkpoint read
/// takes the generation before it reads the live contents and hands it to
/// [`contents_at`](EntryLog::contents_at), which gives nothing if it moved
/// on meanwhile. For that to hold, the versions must be dropped before any
/// of a container's new contents can be read: see
/// [`drop_versions`](EntryLog::drop_versions).
///
/// [`Table`](crate::Table) and [`Cell`](crate::Cell) use one; a custom
/// [`Container`](super::Container) calls [`change`](EntryLog::change) for
/// every entry it commits and gets the rest of the trait from here.
#[derive(Debug, Default)]
pub struct EntryLog {
    tree: DigestTree,
    /// Whether `recorded` records anything: changes, versions or both.
    recording: AtomicBool,
    recorded: Mutex<Recorded>,
    /// Moves on (only while `recorded` is locked) each time the versions
    /// are dropped or started anew. An atomic, so that a checkpoint read
    /// takes it without the lock every write takes; never read on the
    /// write path.
    generation: AtomicU64,
}

#[derive(Debug, Default)]
struct Recorded {
    /// Whether changes are recorded for [`EntryLog::take_changes`].
    changes_on: bool,
    changes: Changes,
    /// Earlier values, once asked to keep them and until the contents are
    /// replaced.
    versions: Option<Versions>,
}

impl EntryLog {
    /// An empty log: no entries, not recording.
    pub fn new() -> EntryLog {
        EntryLog::default()
    }

    /// Records that the entry at encoded `key` changed from `old` to `new`
    /// (encoded values; `None` where there is no entry).
    ///
    /// Call it before the change can be seen by
    /// [`encode_entries`](super::Container::encode_entries), or while
    /// holding the lock that keeps it from being seen: a checkpoint is read
    /// from the live contents, then from the values kept here, and a change
    /// seen in the first but not yet recorded here would be read as part
    /// of the checkpoint.
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
            let mut recorded = self.recorded.lock();
            if recorded.changes_on {
                recorded
                    .changes
                    .insert(key.to_vec(), new.map(<[u8]>::to_vec));
            }
            if let Some(versions) = &mut recorded.versions {
                versions.change(key, old);
            }
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
        self.recorded.lock().changes_on = true;
        self.recording.store(true, Ordering::Relaxed);
    }

    /// The changes recorded since the last call.
    pub fn take_changes(&self) -> Changes {
        std::mem::take(&mut self.recorded.lock().changes)
    }

    /// From now on, keeps what [`contents_at`](EntryLog::contents_at)
    /// needs to read checkpoint `seq` (the contents as they are now) and
    /// the ones taken after it, *instead of* recording changes: a replica
    /// that reads its checkpoints from the live state has no use for them,
    /// and recording both would cost every write twice. Forgets any versions
    /// kept before and any changes recorded.
    ///
    /// A checkpoint read under way gets nothing: the live contents it read
    /// may be older than `seq` (the contents were replaced meanwhile with
    /// checkpoint `seq` itself, say), and the new versions could not put
    /// them back.
    pub fn keep_versions(&self, seq: u64) {
        let mut recorded = self.recorded.lock();
        self.set_versions(&mut recorded, Some(Versions::starting_at(seq)));
        recorded.changes_on = false;
        recorded.changes.clear();
        self.recording.store(true, Ordering::Relaxed);
    }

    /// Drops the versions kept (until [`keep_versions`](EntryLog::keep_versions)
    /// is called again). A container calls it *before* it starts replacing
    /// its contents wholesale ([`install`](super::Container::install),
    /// [`apply_changes`](super::Container::apply_changes)): a checkpoint
    /// read that sees any of the new contents must not find the versions of
    /// the old ones, which would put old values back into new contents.
    /// [`install`](EntryLog::install) and
    /// [`forget_changes`](EntryLog::forget_changes) drop them too, which is
    /// enough for a container that calls them while holding the lock that
    /// keeps the new contents from being read (as the `fs` example's
    /// `DiskFiles` does).
    pub fn drop_versions(&self) {
        self.set_versions(&mut self.recorded.lock(), None);
    }

    /// Replaces the versions kept, and moves the generation on so that no
    /// checkpoint read that began before reads the new ones.
    fn set_versions(&self, recorded: &mut Recorded, versions: Option<Versions>) {
        recorded.versions = versions;
        // Release: a read that takes the new generation sees every change
        // to the contents made before it moved on (an install finished
        // before `keep_versions`).
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The generation of the versions kept now, taken by a checkpoint read
    /// before it reads the live contents and handed to
    /// [`contents_at`](EntryLog::contents_at).
    pub fn generation(&self) -> u64 {
        // Acquire: pairs with `set_versions`, and keeps the live read that
        // follows from being done before it.
        self.generation.load(Ordering::Acquire)
    }

    /// Checkpoint `seq` is taken now: the changes from here on come after
    /// it. Called where no change is under way (a barrier).
    pub fn checkpoint(&self, seq: u64) {
        if let Some(versions) = &mut self.recorded.lock().versions {
            versions.checkpoint(seq);
        }
    }

    /// Checkpoints before `seq` will not be read again: lets go of what
    /// only they needed.
    pub fn forget_versions_before(&self, seq: u64) {
        if let Some(versions) = &mut self.recorded.lock().versions {
            versions.forget_before(seq);
        }
    }

    /// The contents at checkpoint `seq`, given `live`, the contents read
    /// (by [`encode_entries_while_running`](super::Container::encode_entries_while_running))
    /// just before this call, while requests may have gone on changing
    /// them, and `generation`, what [`generation`](EntryLog::generation)
    /// was before that read. `None` if versions are not kept, or not for
    /// `seq` (let go, or not taken yet), or if they were dropped or started
    /// anew since `generation` (the contents read may not be the ones they
    /// were kept for).
    pub fn contents_at(&self, seq: u64, generation: u64, live: Entries) -> Option<Entries> {
        let recorded = self.recorded.lock();
        // Relaxed: it only moves on under the lock held here.
        if self.generation.load(Ordering::Relaxed) != generation {
            return None;
        }
        recorded.versions.as_ref()?.contents_at(seq, live)
    }

    /// How many earlier values are kept (0 if versions are not).
    pub fn versions_kept(&self) -> usize {
        self.recorded
            .lock()
            .versions
            .as_ref()
            .map_or(0, Versions::kept)
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
    /// Versions kept are dropped too: they were of contents now gone (until
    /// [`keep_versions`](EntryLog::keep_versions) is called again).
    pub fn forget_changes(&self) {
        let mut recorded = self.recorded.lock();
        recorded.changes.clear();
        self.set_versions(&mut recorded, None);
    }

    /// Replaces the digest tree with `tree` (the new contents' tree) and
    /// drops the changes and versions recorded so far.
    pub fn install(&self, tree: DigestTree) {
        self.tree.replace_with(tree);
        self.forget_changes();
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
    fn a_read_gets_nothing_once_the_versions_it_began_with_are_dropped_or_started_anew() {
        let log = EntryLog::new();
        log.change(b"a", None, Some(b"1"));
        let live: Entries = [(b"a".to_vec(), b"1".to_vec())].into();
        log.keep_versions(4);
        let before = log.generation();
        assert_eq!(log.contents_at(4, before, live.clone()), Some(live.clone()));

        // Contents replaced, then checkpoint 4 kept again: a read that began
        // before cannot tell which contents it read.
        log.drop_versions();
        assert_eq!(log.contents_at(4, before, live.clone()), None);
        log.keep_versions(4);
        assert_eq!(log.contents_at(4, before, live.clone()), None);
        let after = log.generation();
        assert_eq!(log.contents_at(4, after, live.clone()), Some(live.clone()));

        // A read that began while the versions were dropped gets nothing,
        // even once they are kept again.
        log.drop_versions();
        let while_dropped = log.generation();
        assert_eq!(log.contents_at(4, while_dropped, live.clone()), None);
        log.keep_versions(4);
        assert_eq!(log.contents_at(4, while_dropped, live), None);
    }

    #[test]
    #[should_panic(expected = "container contents and digest disagree")]
    fn a_wrong_old_value_is_a_bug() {
        let log = EntryLog::new();
        log.change(b"a", None, Some(b"1"));
        log.change(b"a", Some(b"2"), None);
    }
}

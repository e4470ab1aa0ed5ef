//! Earlier values of changed entries, so that a recent checkpoint can be
//! read from the live contents without a copy of the state.
//!
//! A replica must be able to serve its stable checkpoint (and the few taken
//! after it) to a peer that fell behind, while its requests go on changing
//! the state. Rather than keep a second copy of every entry, a container's
//! [`EntryLog`](super::EntryLog) keeps, for each entry changed since the
//! oldest checkpoint still wanted, the value it had before its first change
//! after each checkpoint (BASE's copy-on-write, at the granularity of
//! entries). The contents at checkpoint `c` are then the live contents with
//! each changed entry put back to its value before its first change after
//! `c`: what that costs in memory is what changed in the window of
//! checkpoints held, not the state.
//!
//! Checkpoints are numbered by their sequence numbers; the *epoch* of a
//! change is the checkpoint it came after. A barrier separates epochs: no
//! change is under way when a checkpoint is taken.

use std::collections::HashMap;

use super::Entries;

/// An entry's value before its first change in each epoch it changed in,
/// oldest epoch first (`None`: there was no entry).
type Earlier = Vec<(u64, Option<Vec<u8>>)>;

/// The values entries had before their first change in each epoch, from
/// the oldest checkpoint still wanted on.
#[derive(Debug, Default)]
pub(super) struct Versions {
    /// The checkpoint the changes committed now come after.
    epoch: u64,
    /// The oldest checkpoint that can still be read: earlier values were
    /// let go.
    floor: u64,
    /// The earlier values of each entry changed since `floor`, by encoded
    /// key. A hash map: it is looked up on every write, and nothing depends
    /// on its order (each entry's value is put back on its own, into a
    /// sorted map).
    before: HashMap<Vec<u8>, Earlier>,
}

impl Versions {
    /// Versions from checkpoint `epoch` on: the contents now are that
    /// checkpoint, and nothing earlier can be read.
    pub(super) fn starting_at(epoch: u64) -> Versions {
        Versions {
            epoch,
            floor: epoch,
            before: HashMap::new(),
        }
    }

    /// The entry at `key` changes now, from `old`.
    pub(super) fn change(&mut self, key: &[u8], old: Option<&[u8]>) {
        let epoch = self.epoch;
        if let Some(earlier) = self.before.get_mut(key) {
            if earlier.last().is_some_and(|(at, _)| *at == epoch) {
                // Changed already in this epoch: its value before it is kept.
                return;
            }
            earlier.push((epoch, old.map(<[u8]>::to_vec)));
            return;
        }
        self.before
            .insert(key.to_vec(), vec![(epoch, old.map(<[u8]>::to_vec))]);
    }

    /// Checkpoint `seq` was taken: the changes from now on come after it.
    pub(super) fn checkpoint(&mut self, seq: u64) {
        self.epoch = self.epoch.max(seq);
    }

    /// Checkpoints before `seq` will not be read again: lets go of the
    /// values only they needed.
    pub(super) fn forget_before(&mut self, seq: u64) {
        if seq <= self.floor {
            return;
        }
        self.floor = seq;
        self.before.retain(|_, earlier| {
            // The values before changes in epochs from `seq` on are what
            // checkpoints from `seq` on are read with.
            let keep_from = earlier.partition_point(|(at, _)| *at < seq);
            earlier.drain(..keep_from);
            !earlier.is_empty()
        });
    }

    /// The contents at checkpoint `seq`, from the contents `live` read
    /// before this call (under no lock the changes take: they may include
    /// changes made while reading, which this puts back). `None` if `seq`
    /// is before the oldest checkpoint kept, or after the newest taken.
    pub(super) fn contents_at(&self, seq: u64, mut live: Entries) -> Option<Entries> {
        if seq < self.floor || seq > self.epoch {
            return None;
        }
        for (key, earlier) in &self.before {
            // The first change after `seq` found the value it had at `seq`.
            let first_after = earlier.partition_point(|(at, _)| *at < seq);
            if let Some((_, value)) = earlier.get(first_after) {
                match value {
                    Some(value) => live.insert(key.clone(), value.clone()),
                    None => live.remove(key),
                };
            }
        }
        Some(live)
    }

    /// How many earlier values are kept, for tests and metrics.
    pub(super) fn kept(&self) -> usize {
        self.before.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(pairs: &[(&[u8], &[u8])]) -> Entries {
        pairs
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }

    /// Applies a change to `live` the way a container does, reporting it first.
    fn write(versions: &mut Versions, live: &mut Entries, key: &[u8], new: Option<&[u8]>) {
        versions.change(key, live.get(key).map(Vec::as_slice));
        match new {
            Some(value) => live.insert(key.to_vec(), value.to_vec()),
            None => live.remove(key),
        };
    }

    #[test]
    fn each_checkpoint_reads_as_it_was_taken() {
        let mut versions = Versions::starting_at(0);
        let mut live = contents(&[(b"a", b"0"), (b"b", b"0")]);
        let at_0 = live.clone();
        write(&mut versions, &mut live, b"a", Some(b"1"));
        write(&mut versions, &mut live, b"a", Some(b"2"));
        write(&mut versions, &mut live, b"c", Some(b"1"));
        versions.checkpoint(4);
        let at_4 = live.clone();
        write(&mut versions, &mut live, b"b", None);
        write(&mut versions, &mut live, b"a", Some(b"3"));
        write(&mut versions, &mut live, b"c", None);
        versions.checkpoint(8);
        let at_8 = live.clone();
        write(&mut versions, &mut live, b"c", Some(b"9"));

        assert_eq!(versions.contents_at(0, live.clone()), Some(at_0));
        assert_eq!(versions.contents_at(4, live.clone()), Some(at_4.clone()));
        assert_eq!(versions.contents_at(8, live.clone()), Some(at_8));
        assert_eq!(versions.contents_at(9, live.clone()), None, "not taken yet");

        versions.forget_before(4);
        assert_eq!(versions.contents_at(0, live.clone()), None, "let go");
        assert_eq!(versions.contents_at(4, live.clone()), Some(at_4));
        assert_eq!(versions.kept(), 4, "a and b and c after 4, c after 8");
    }

    #[test]
    fn letting_go_of_every_checkpoint_but_the_newest_keeps_only_its_changes() {
        let mut versions = Versions::starting_at(0);
        let mut live = Entries::new();
        for round in 0..3u8 {
            for key in 0..100u8 {
                write(&mut versions, &mut live, &[key], Some(&[round]));
            }
            versions.checkpoint(u64::from(round + 1) * 10);
        }
        assert_eq!(versions.kept(), 300);
        versions.forget_before(30);
        assert_eq!(versions.kept(), 0, "nothing changed after 30");
        assert_eq!(versions.contents_at(30, live.clone()), Some(live));
    }
}

//! Access sets: the keys one request reads and writes, and the conflict test.
//!
//! Two requests are *dependent* (the paper's definition) when the write set of
//! one overlaps the read or write set of the other. [`conflicts`] is exactly that
//! relation over [`Key`]s, wildcards included; the parallelizer never orders two
//! requests for which it is false, and always orders those for which it is true.

use crate::key::Key;

/// The keys one request declares it reads and writes.
///
/// A key that is both read and written is a write: writing implies the right to
/// read. The set a method gets when it has no rule is [`AccessSet::exclusive`],
/// which conflicts with every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessSet {
    reads: Vec<Key>,
    writes: Vec<Key>,
}

impl AccessSet {
    /// A set that touches nothing and so conflicts with nothing.
    pub const fn none() -> AccessSet {
        AccessSet {
            reads: Vec::new(),
            writes: Vec::new(),
        }
    }

    /// The default rule: writes everything, so conflicts with every request.
    pub fn exclusive() -> AccessSet {
        AccessSet {
            reads: Vec::new(),
            writes: vec![Key::All],
        }
    }

    /// Builds a set from explicit read and write keys.
    pub fn new(reads: Vec<Key>, writes: Vec<Key>) -> AccessSet {
        AccessSet { reads, writes }
    }

    /// Adds a read key.
    pub fn read(mut self, key: Key) -> AccessSet {
        self.reads.push(key);
        self
    }

    /// Adds a write key.
    pub fn write(mut self, key: Key) -> AccessSet {
        self.writes.push(key);
        self
    }

    /// Adds a read key in place.
    pub fn push_read(&mut self, key: Key) {
        self.reads.push(key);
    }

    /// Adds a write key in place.
    pub fn push_write(&mut self, key: Key) {
        self.writes.push(key);
    }

    /// The declared read keys, in declaration order (duplicates kept).
    pub fn reads(&self) -> &[Key] {
        &self.reads
    }

    /// The declared write keys, in declaration order (duplicates kept).
    pub fn writes(&self) -> &[Key] {
        &self.writes
    }

    /// Whether the set touches nothing.
    pub fn is_empty(&self) -> bool {
        self.reads.is_empty() && self.writes.is_empty()
    }

    /// Whether this set writes everything (the default rule).
    pub fn is_exclusive(&self) -> bool {
        self.writes.contains(&Key::All)
    }

    /// Whether a request holding this set may read `key`: some read or write
    /// key covers it.
    pub fn permits_read(&self, key: &Key) -> bool {
        self.writes.iter().chain(&self.reads).any(|k| k.covers(key))
    }

    /// Whether a request holding this set may write `key`: some write key covers it.
    pub fn permits_write(&self, key: &Key) -> bool {
        self.writes.iter().any(|k| k.covers(key))
    }
}

/// Whether two requests are dependent: a write of one overlaps a read or a
/// write of the other. Symmetric; wildcards overlap what they cover.
pub fn conflicts(a: &AccessSet, b: &AccessSet) -> bool {
    let overlap = |xs: &[Key], ys: &[Key]| xs.iter().any(|x| ys.iter().any(|y| x.overlaps(y)));
    overlap(&a.writes, &b.writes) || overlap(&a.writes, &b.reads) || overlap(&a.reads, &b.writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rule_conflicts_with_everything_but_the_empty_set() {
        let exclusive = AccessSet::exclusive();
        let reader = AccessSet::none().read(Key::entry("accounts", &1u64));
        assert!(conflicts(&exclusive, &reader));
        assert!(conflicts(&exclusive, &exclusive));
        assert!(!conflicts(&exclusive, &AccessSet::none()));
    }

    #[test]
    fn readers_do_not_conflict() {
        let a = AccessSet::none().read(Key::table("accounts"));
        let b = AccessSet::none().read(Key::All);
        assert!(!conflicts(&a, &b));
    }

    #[test]
    fn writes_permit_reads_but_not_the_reverse() {
        let k = Key::entry("accounts", &1u64);
        let set = AccessSet::none().write(Key::table("accounts"));
        assert!(set.permits_read(&k) && set.permits_write(&k));
        let set = AccessSet::none().read(Key::table("accounts"));
        assert!(set.permits_read(&k) && !set.permits_write(&k));
        assert!(!set.permits_read(&Key::entry("other", &1u64)));
    }
}

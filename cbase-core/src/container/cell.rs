//! `Cell<T>`: one replicated value whose every access is checked.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;

use parking_lot::RwLock;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{BindError, Binding, Container, Entries, EntryLog};
use crate::codec::{self, CodecError};
use crate::key::{Key, TableId};
use crate::merkle::DigestTree;
use crate::scope::{self, AccessKind};
use crate::txn;

/// A single replicated value, safe to use from concurrent requests.
///
/// A cell behaves like a table with one entry: its name is the field name and
/// rules name it as a whole, `#[reads(counter[*])]` / `#[writes(counter[*])]`
/// (or `*`). Inside a request a write is staged and applied when the request
/// returns, like a table's.
pub struct Cell<T> {
    binding: Binding,
    value: RwLock<T>,
    log: EntryLog,
}

/// The key of a cell's one entry: the encoding of `()`, no bytes.
const CELL_KEY: &[u8] = &[];

/// A request's staged value.
type Staged<T> = RefCell<Option<T>>;

impl<T: Default + Serialize> Default for Cell<T> {
    fn default() -> Self {
        Cell::with_binding(Binding::default(), T::default())
    }
}

impl<T> fmt::Debug for Cell<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cell")
            .field("name", &self.binding.name())
            .finish_non_exhaustive()
    }
}

impl<T: Serialize> Cell<T> {
    fn with_binding(binding: Binding, value: T) -> Self {
        let log = EntryLog::new();
        log.change(CELL_KEY, None, Some(&encode_or_panic(&value)));
        Cell {
            binding,
            value: RwLock::new(value),
            log,
        }
    }
}

fn encode_or_panic<T: Serialize>(value: &T) -> Vec<u8> {
    codec::encode(value)
        .unwrap_or_else(|error| panic!("a cell holds a value that cannot be encoded: {error}"))
}

impl<T> Cell<T>
where
    T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// An unnamed cell holding `value` (named later by `#[derive(State)]`).
    pub fn new(value: T) -> Self {
        Cell::with_binding(Binding::default(), value)
    }

    /// A named cell holding `value`, for state written by hand.
    pub fn named(name: &'static str, value: T) -> Self {
        Cell::with_binding(Binding::named(name), value)
    }

    fn check(&self, kind: AccessKind) -> TableId {
        let (name, id) = self.binding.for_access();
        scope::check(kind, name, &Key::Table(id), || "*".to_owned());
        id
    }

    /// The running request's staged value, if it wrote one.
    fn own(&self, id: TableId) -> Option<T> {
        txn::staged::<Staged<T>>(id).and_then(|staged| staged.borrow().clone())
    }

    /// A copy of the value. Needs read access to `name[*]`.
    pub fn get(&self) -> T {
        let id = self.check(AccessKind::Read);
        self.own(id)
            .unwrap_or_else(|| self.value.read_recursive().clone())
    }

    /// Calls `f` with a reference to the value, without copying it (unless
    /// the running request wrote it: then `f` sees a copy of that write).
    pub fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        let id = self.check(AccessKind::Read);
        match self.own(id) {
            Some(value) => f(&value),
            None => f(&self.value.read_recursive()),
        }
    }

    /// Replaces the value, returning the previous one. Needs write access.
    pub fn set(&self, value: T) -> T {
        let id = self.check(AccessKind::Write);
        match txn::stage::<Staged<T>>(id) {
            Some(staged) => {
                let previous = staged.borrow_mut().replace(value);
                previous.unwrap_or_else(|| self.value.read_recursive().clone())
            }
            None => {
                let new = encode_or_panic(&value);
                let mut current = self.value.write();
                let previous = std::mem::replace(&mut *current, value);
                self.log
                    .change(CELL_KEY, Some(&encode_or_panic(&previous)), Some(&new));
                previous
            }
        }
    }

    /// Changes the value in place. Needs write access to `name[*]`.
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let id = self.check(AccessKind::Write);
        let mut value = self
            .own(id)
            .unwrap_or_else(|| self.value.read_recursive().clone());
        let result = f(&mut value);
        match txn::stage::<Staged<T>>(id) {
            Some(staged) => *staged.borrow_mut() = Some(value),
            None => {
                let new = encode_or_panic(&value);
                let mut current = self.value.write();
                let previous = std::mem::replace(&mut *current, value);
                self.log
                    .change(CELL_KEY, Some(&encode_or_panic(&previous)), Some(&new));
            }
        }
        result
    }
}

impl<T> Container for Cell<T>
where
    T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn bind(&self, name: &'static str) -> Result<(), BindError> {
        self.binding.bind(name)
    }

    fn name(&self) -> Option<&'static str> {
        self.binding.name()
    }

    fn prepare(&self, staged: &txn::Staged) -> Result<Box<dyn Any>, CodecError> {
        let staged = staged
            .downcast_ref::<Staged<T>>()
            .expect("a cell stages a value of its own type");
        let prepared = match staged.borrow_mut().take() {
            Some(value) => {
                let bytes = codec::encode(&value)?;
                Some((value, bytes))
            }
            None => None,
        };
        Ok(Box::new(prepared))
    }

    /// Everything that can fail (encoding) happened in `prepare`.
    fn commit_never_fails(&self) -> bool {
        true
    }

    fn commit(&self, prepared: Box<dyn Any>) {
        let prepared = prepared
            .downcast::<Option<(T, Vec<u8>)>>()
            .expect("commit takes what this cell's prepare returned");
        if let Some((value, bytes)) = *prepared {
            // Reported while the lock keeps the new value from being read:
            // a checkpoint read from the live value then from the log must
            // not see one without the other.
            let mut current = self.value.write();
            let previous = std::mem::replace(&mut *current, value);
            self.log
                .change(CELL_KEY, Some(&encode_or_panic(&previous)), Some(&bytes));
        }
    }

    fn entry_log(&self) -> &EntryLog {
        &self.log
    }

    fn encode_entries(&self) -> Result<Entries, CodecError> {
        let value = codec::encode(&*self.value.read_recursive())?;
        Ok([(CELL_KEY.to_vec(), value)].into())
    }

    fn decode_entries(&self, entries: &Entries) -> Result<Box<dyn Any + Send>, CodecError> {
        let (key, bytes) = match entries.iter().next() {
            Some(entry) if entries.len() == 1 => entry,
            _ => {
                return Err(CodecError::Decode(format!(
                    "a cell has exactly one entry, not {}",
                    entries.len()
                )));
            }
        };
        if !key.is_empty() {
            return Err(CodecError::Decode("a cell's entry has an empty key".into()));
        }
        let value: T = codec::decode(bytes)?;
        if codec::encode(&value)? != *bytes {
            return Err(CodecError::Decode(
                "the cell's value is not in canonical form".into(),
            ));
        }
        Ok(Box::new((value, EntryLog::tree_of(entries))))
    }

    fn install(&self, staged: Box<dyn Any + Send>) {
        let (value, tree) = *staged
            .downcast::<(T, DigestTree)>()
            .expect("install takes what this cell's decode_entries returned");
        // Before the value is replaced, as in `Table::install`: a
        // checkpoint read that sees the new value must not put the old
        // contents' versions back into it.
        self.log.drop_versions();
        *self.value.write() = value;
        self.log.install(tree);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_set_update_and_snapshot() {
        let cell = Cell::named("counter", 1u64);
        assert_eq!(cell.set(5), 1);
        assert_eq!(
            cell.update(|v| {
                *v += 1;
                *v
            }),
            6
        );
        assert_eq!(cell.get(), 6);
        let entries = cell.encode_entries().unwrap();
        let other = Cell::named("counter", 0u64);
        other.install(other.decode_entries(&entries).unwrap());
        assert_eq!(other.with(|v| *v), 6);
        assert_eq!(other.root(), cell.root());
        let bad: Entries = [(vec![], vec![0xff; 20])].into();
        assert!(other.decode_entries(&bad).is_err());
        let two: Entries = [(vec![], vec![1]), (vec![1], vec![1])].into();
        assert!(other.decode_entries(&two).is_err());
    }
}

//! `Cell<T>`: one replicated value whose every access is checked.

use std::any::Any;
use std::fmt;

use parking_lot::RwLock;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{BindError, Binding, Container};
use crate::codec::{self, CodecError};
use crate::key::Key;
use crate::scope::{self, AccessKind};

/// A single replicated value, safe to use from concurrent requests.
///
/// A cell behaves like a table with one entry: its name is the field name and
/// rules name it as a whole, `#[reads(counter[*])]` / `#[writes(counter[*])]`
/// (or `*`).
pub struct Cell<T> {
    binding: Binding,
    value: RwLock<T>,
}

impl<T: Default> Default for Cell<T> {
    fn default() -> Self {
        Cell {
            binding: Binding::default(),
            value: RwLock::new(T::default()),
        }
    }
}

impl<T> fmt::Debug for Cell<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cell")
            .field("name", &self.binding.name())
            .finish_non_exhaustive()
    }
}

impl<T> Cell<T>
where
    T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// An unnamed cell holding `value` (named later by `#[derive(State)]`).
    pub fn new(value: T) -> Self {
        Cell {
            binding: Binding::default(),
            value: RwLock::new(value),
        }
    }

    /// A named cell holding `value`, for state written by hand.
    pub fn named(name: &'static str, value: T) -> Self {
        Cell {
            binding: Binding::named(name),
            value: RwLock::new(value),
        }
    }

    fn check(&self, kind: AccessKind) {
        let (name, id) = self.binding.for_access();
        scope::check(kind, name, &Key::Table(id), || "*".to_owned());
    }

    /// A copy of the value. Needs read access to `name[*]`.
    pub fn get(&self) -> T {
        self.check(AccessKind::Read);
        self.value.read_recursive().clone()
    }

    /// Calls `f` with a reference to the value, without copying it.
    pub fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        self.check(AccessKind::Read);
        f(&self.value.read_recursive())
    }

    /// Replaces the value, returning the previous one. Needs write access.
    pub fn set(&self, value: T) -> T {
        self.check(AccessKind::Write);
        std::mem::replace(&mut *self.value.write(), value)
    }

    /// Changes the value in place. Needs write access to `name[*]`.
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        self.check(AccessKind::Write);
        f(&mut self.value.write())
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

    fn encode_snapshot(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(&*self.value.read_recursive())
    }

    fn decode_snapshot(&self, bytes: &[u8]) -> Result<Box<dyn Any + Send>, CodecError> {
        Ok(Box::new(codec::decode::<T>(bytes)?))
    }

    fn install_snapshot(&self, staged: Box<dyn Any + Send>) {
        let value = staged
            .downcast::<T>()
            .expect("install_snapshot takes what this cell's decode_snapshot returned");
        *self.value.write() = *value;
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
        let bytes = cell.encode_snapshot().unwrap();
        let other = Cell::named("counter", 0u64);
        other.install_snapshot(other.decode_snapshot(&bytes).unwrap());
        assert_eq!(other.with(|v| *v), 6);
        assert!(other.decode_snapshot(&[0xff; 20]).is_err());
    }
}

//! Atomic requests: a request's writes are staged, and become visible only
//! when it finishes.
//!
//! While the executor runs a request, a *transaction* is open on the worker
//! thread. A container that is written stages the write here, under its table
//! identity, instead of changing its contents; its reads look at the staged
//! writes first, so a request sees its own writes. When the request returns
//! (whatever it returns, `Ok` or `Err`) the executor commits: every container
//! with staged writes first prepares them (encodes, digests; nothing visible
//! changes, and a failure here aborts them all), then applies them, while the
//! request still holds its keys, so no other request can see half of it. If
//! the request panics or is refused an undeclared access, the transaction is
//! dropped and the request leaves no trace.
//!
//! Outside a request (building the initial state, tests) no transaction is
//! open and containers write through at once.
//!
//! The staged writes never leave the worker thread, so they need not be
//! `Send`; a container keeps them behind a `RefCell` in its own type, shared
//! by `Rc` so that a read inside a [`fold`](crate::Table::fold) can look at
//! them while the fold holds them too.

use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;

use crate::key::TableId;

/// What one container staged in the open transaction.
pub type Staged = Rc<dyn Any>;

thread_local! {
    static OPEN: RefCell<Option<Vec<(TableId, Staged)>>> = const { RefCell::new(None) };
}

/// Whether a transaction is open on this thread (a request is running).
pub fn is_open() -> bool {
    OPEN.with_borrow(|open| open.is_some())
}

/// The staged writes of container `id` in the open transaction, created
/// empty (`T::default()`) if it has none yet; `None` outside a request.
///
/// # Panics
/// If the container staged a different type under the same identity.
pub fn stage<T: Default + 'static>(id: TableId) -> Option<Rc<T>> {
    OPEN.with_borrow_mut(|open| {
        let staged = open.as_mut()?;
        if let Some((_, found)) = staged.iter().find(|(table, _)| *table == id) {
            return Some(downcast(found));
        }
        let fresh = Rc::new(T::default());
        staged.push((id, fresh.clone() as Staged));
        Some(fresh)
    })
}

/// The staged writes of container `id`, if it has any in the open transaction.
pub fn staged<T: 'static>(id: TableId) -> Option<Rc<T>> {
    OPEN.with_borrow(|open| {
        let staged = open.as_ref()?;
        staged
            .iter()
            .find(|(table, _)| *table == id)
            .map(|(_, found)| downcast(found))
    })
}

fn downcast<T: 'static>(found: &Staged) -> Rc<T> {
    Rc::clone(found)
        .downcast::<T>()
        .unwrap_or_else(|_| panic!("a container staged writes of two different types"))
}

/// Opens a transaction on this thread until the guard is dropped (which
/// discards whatever was not [taken](Transaction::take)). Used by the executor.
pub(crate) fn begin() -> Transaction {
    OPEN.with_borrow_mut(|open| {
        debug_assert!(open.is_none(), "transactions do not nest");
        *open = Some(Vec::new());
    });
    Transaction {
        _not_send: std::marker::PhantomData,
    }
}

/// An open transaction; dropping it (also while unwinding) discards it.
pub(crate) struct Transaction {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Transaction {
    /// Closes the transaction and hands over what every container staged,
    /// in the order the containers first wrote.
    pub(crate) fn take(self) -> Vec<(TableId, Staged)> {
        OPEN.with_borrow_mut(|open| open.take().unwrap_or_default())
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        OPEN.with_borrow_mut(|open| *open = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_needs_an_open_transaction() {
        let id = TableId::of("t");
        assert!(!is_open());
        assert!(stage::<RefCell<Vec<u8>>>(id).is_none());
        let txn = begin();
        assert!(is_open());
        stage::<RefCell<Vec<u8>>>(id).unwrap().borrow_mut().push(1);
        stage::<RefCell<Vec<u8>>>(id).unwrap().borrow_mut().push(2);
        assert_eq!(*staged::<RefCell<Vec<u8>>>(id).unwrap().borrow(), [1, 2]);
        assert!(staged::<RefCell<Vec<u8>>>(TableId::of("u")).is_none());
        let taken = txn.take();
        assert_eq!(taken.len(), 1);
        assert!(!is_open());
    }

    #[test]
    fn dropping_discards() {
        let id = TableId::of("t");
        {
            let _txn = begin();
            stage::<RefCell<u8>>(id);
        }
        assert!(!is_open());
        let txn = begin();
        assert!(staged::<RefCell<u8>>(id).is_none());
        drop(txn);
    }
}

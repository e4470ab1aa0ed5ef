//! The running request's declared access set, and the check every container makes.
//!
//! While the executor runs a request on a worker thread, that request's method
//! name and [`AccessSet`] are installed in a thread-local *scope*. Every
//! [`Table`](crate::Table) and [`Cell`](crate::Cell) access asks this module
//! whether the key is covered before touching any data; if it is not, the access
//! is refused by unwinding with an [`UndeclaredAccess`] payload, which the
//! executor turns into an error reply. The decision depends only on the request
//! and its rule, so every correct replica refuses the same access in the same
//! way: an undeclared access can never become a race between replicas.
//!
//! Outside a request (building the initial state, tests, snapshots) accesses are
//! not checked.

use std::cell::RefCell;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::access::AccessSet;
use crate::key::Key;

/// Whether an access reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessKind {
    /// A read.
    Read,
    /// A write.
    Write,
}

impl fmt::Display for AccessKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccessKind::Read => "read",
            AccessKind::Write => "write",
        })
    }
}

/// A request touched state that its rule does not declare.
///
/// Raised before the access happens, so the refused access changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error(
    "undeclared access: method `{method}` tried to {kind} {table}[{key}], which its rule does not declare; {}",
    advice(.method, .table, .key, .hint)
)]
pub struct UndeclaredAccess {
    /// The method of the request that made the access.
    pub method: String,
    /// The table (or cell) it touched.
    pub table: String,
    /// The key it touched in rule syntax: as `Debug` prints it (`(3, 7)` for a
    /// tuple), `(3, *)` for the keys under a prefix, or `*` for the whole
    /// table.
    pub key: String,
    /// Whether it read or wrote.
    pub kind: AccessKind,
    hint: String,
}

impl UndeclaredAccess {
    /// Describes a refused access.
    pub fn new(method: &str, table: &str, key: String, kind: AccessKind) -> UndeclaredAccess {
        let hint = match kind {
            AccessKind::Read => "reads",
            AccessKind::Write => "writes",
        };
        UndeclaredAccess {
            method: method.to_owned(),
            table: table.to_owned(),
            key,
            kind,
            hint: hint.to_owned(),
        }
    }
}

/// What to add to the method: the rule for the refused key, in rule syntax.
fn advice(method: &str, table: &str, key: &str, hint: &str) -> String {
    if key == "*" {
        format!("add `#[{hint}({table}[*])]` to `{method}`")
    } else {
        format!(
            "add `#[{hint}({table}[{key}])]` to `{method}`, with the key written as the \
             arguments that give it, or a wider key (`{table}[*]`)"
        )
    }
}

struct ActiveRequest {
    method: &'static str,
    access: AccessSet,
    /// The first access refused, kept even if the request catches the
    /// unwinding: the request fails with it all the same.
    refused: Option<UndeclaredAccess>,
}

thread_local! {
    static ACTIVE: RefCell<Option<ActiveRequest>> = const { RefCell::new(None) };
}

/// Installs a request's scope on this thread until the guard is dropped.
/// Used by the executor.
pub(crate) fn enter(method: &'static str, access: AccessSet) -> ScopeGuard {
    ACTIVE.with_borrow_mut(|active| {
        debug_assert!(active.is_none(), "request scopes do not nest");
        *active = Some(ActiveRequest {
            method,
            access,
            refused: None,
        });
    });
    ScopeGuard {
        _not_send: std::marker::PhantomData,
    }
}

/// Removes the scope when dropped, also while unwinding from a panic.
pub(crate) struct ScopeGuard {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl ScopeGuard {
    /// Removes the scope; returns the first access it refused, if any, even
    /// one whose unwinding the request caught.
    pub(crate) fn finish(self) -> Option<UndeclaredAccess> {
        ACTIVE.with_borrow_mut(|active| active.take().and_then(|active| active.refused))
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        ACTIVE.with_borrow_mut(|active| *active = None);
    }
}

/// The method name of the request running on this thread, if any.
pub fn current_method() -> Option<&'static str> {
    ACTIVE.with_borrow(|active| active.as_ref().map(|a| a.method))
}

/// Checks an access against the running request's rule and refuses it by
/// unwinding with [`UndeclaredAccess`] if the rule does not cover it. The
/// first refusal is also kept in the scope: a request that catches the
/// unwinding still fails with it, and what it wrote is dropped.
///
/// `describe` is only called on refusal, to name the key in the error.
pub fn check(kind: AccessKind, table: &str, key: &Key, describe: impl FnOnce() -> String) {
    let refused = ACTIVE.with_borrow_mut(|active| {
        let active = active.as_mut()?;
        let permitted = match kind {
            AccessKind::Read => active.access.permits_read(key),
            AccessKind::Write => active.access.permits_write(key),
        };
        if permitted {
            return None;
        }
        let refusal = UndeclaredAccess::new(active.method, table, describe(), kind);
        active.refused.get_or_insert_with(|| refusal.clone());
        Some(refusal)
    });
    if let Some(refusal) = refused {
        std::panic::panic_any(refusal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_request_everything_is_allowed() {
        check(AccessKind::Write, "t", &Key::table("t"), || unreachable!());
        assert_eq!(current_method(), None);
    }

    #[test]
    fn undeclared_access_unwinds_with_a_descriptive_payload() {
        let guard = enter(
            "transfer",
            AccessSet::none().read(Key::entry("accounts", &1u64)),
        );
        check(
            AccessKind::Read,
            "accounts",
            &Key::entry("accounts", &1u64),
            || unreachable!(),
        );
        let payload = std::panic::catch_unwind(|| {
            check(
                AccessKind::Write,
                "accounts",
                &Key::entry("accounts", &1u64),
                || "1".into(),
            )
        })
        .unwrap_err();
        drop(guard);
        let refusal = payload.downcast::<UndeclaredAccess>().unwrap();
        assert_eq!(refusal.method, "transfer");
        assert_eq!(refusal.kind, AccessKind::Write);
        assert_eq!(
            refusal.to_string(),
            "undeclared access: method `transfer` tried to write accounts[1], which its rule does not declare; add `#[writes(accounts[1])]` to `transfer`, with the key written as the arguments that give it, or a wider key (`accounts[*]`)"
        );
        let whole = UndeclaredAccess::new("total", "accounts", "*".into(), AccessKind::Read);
        assert_eq!(
            whole.to_string(),
            "undeclared access: method `total` tried to read accounts[*], which its rule does not declare; add `#[reads(accounts[*])]` to `total`"
        );
        assert_eq!(current_method(), None, "the guard cleared the scope");
    }
}

//! The core of cbase: everything that happens on one replica after agreement.
//!
//! PBFT agreement (in `cbase-net`) hands this crate requests in one total order.
//! The [`parallelizer`] turns that order into a partial order using each
//! request's declared [`AccessSet`], the [`executor`] runs independent requests
//! on a worker pool, and the [`container`]s ([`Table`], [`Cell`]) hold the
//! replicated state, refusing any access a request did not declare.
//!
//! Most users never touch this crate directly: `#[cbase::service]` generates
//! the [`Request`] and [`Service`] implementations. The [`service`] module
//! shows them written by hand.

#![warn(missing_docs)]
// One exception, a cache prefetch hint in the parallelizer, says why.
#![deny(unsafe_code)]

pub mod access;
pub mod client;
pub mod codec;
pub mod container;
pub mod context;
pub mod executor;
pub mod key;
pub mod local;
pub mod merkle;
pub mod parallelizer;
pub mod scope;
pub mod service;
pub mod state;
pub mod txn;
pub mod work;

pub use access::{AccessSet, conflicts};
pub use client::{ClientError, Invoke};
pub use container::{Cell, Changes, Container, Entries, EntryLog, PrefixView, Table};
pub use context::{ClientId, Context, DeterministicRng};
pub use executor::{
    Closed, ExecError, Executor, ExecutorBuilder, ReadOnly, Reply, ServiceHandle, TrySubmitError,
};
pub use key::{Key, PrefixHash, PrefixPath, TableId, ValueHash};
pub use local::LocalInvoker;
pub use scope::{AccessKind, UndeclaredAccess};
pub use service::{Fingerprint, MethodInfo, Request, Service};
pub use state::{Digest, RestoreError, Snapshot, State, StateChanges, StateError, StateTables};
pub use work::{WorkHandle, WorkStats};

//! # cbase
//!
//! Byzantine-fault-tolerant replicated services that run independent requests
//! in parallel, after the CBASE architecture (Kotla and Dahlin, "High
//! Throughput Byzantine Fault Tolerance", DSN 2004).
//!
//! ```text
//! clients ──► agreement (PBFT, n = 3f+1) ──► parallelizer ──► executor ──► replies
//!              total order of batches        partial order     worker pool
//!                                            from read/write
//!                                            sets (local)
//! ```
//!
//! You write a service as a trait whose methods declare the keys they read and
//! write. Agreement fixes one total order of requests; each replica's
//! parallelizer releases a request once every earlier request it depends on
//! has finished, and a worker pool runs the others concurrently. State lives
//! in [`Table`]s and [`Cell`]s, which refuse any access a request did not
//! declare, so a wrong rule is an error reply, never a divergence between
//! replicas.
//!
//! ## A service in four steps
//!
//! ```
//! use cbase::prelude::*;
//!
//! // 1. The service: each method is one kind of request, and its rule names
//! //    the keys it touches, computed from its arguments.
//! #[cbase::service]
//! pub trait Counter {
//!     /// Adds `by` to the counter `name`; returns the new value.
//!     #[writes(counts[name])]
//!     fn add(&self, name: String, by: u64) -> u64;
//!
//!     /// Takes `by` from the counter `name`, if it holds that much.
//!     #[writes(counts[name])]
//!     fn take(&self, name: String, by: u64) -> Result<u64, String>;
//!
//!     /// The sum of every counter: reads the whole table.
//!     #[reads(counts[*])]
//!     fn sum(&self) -> u64;
//! }
//!
//! // 2. The replicated state: a struct of containers. The field `counts` is
//! //    the table `counts` of the rules.
//! #[derive(Default, cbase::State)]
//! pub struct Counters {
//!     counts: Table<String, u64>,
//! }
//!
//! // 3. The implementation: ordinary Rust over the containers. Methods take
//! //    `&self`, because independent requests run at the same time.
//! impl Counter for Counters {
//!     fn add(&self, name: String, by: u64) -> u64 {
//!         self.counts.upsert(name, || 0, |n| {
//!             *n += by;
//!             *n
//!         })
//!     }
//!
//!     fn take(&self, name: String, by: u64) -> Result<u64, String> {
//!         let held = self.counts.get(&name).unwrap_or(0);
//!         if held < by {
//!             return Err(format!("`{name}` holds {held}, not {by}"));
//!         }
//!         self.counts.insert(name, held - by);
//!         Ok(held - by)
//!     }
//!
//!     fn sum(&self) -> u64 {
//!         self.counts.fold(0, |sum, _, n| sum + n)
//!     }
//! }
//!
//! // 4. Calls through the generated typed client. `LocalInvoker` runs the
//! //    service on one in-process executor (the real parallelizer and worker
//! //    pool, no replication): the way to unit-test a service. A replicated
//! //    cluster is `LocalCluster` or, across hosts, a `NetClient`; the client
//! //    code stays the same.
//! let runtime = tokio::runtime::Builder::new_current_thread().build()?;
//! runtime.block_on(async {
//!     let service = CounterService(Counters::default());
//!     let counters = CounterClient::new(LocalInvoker::start(ExecutorBuilder::new().workers(4), service)?);
//!
//!     assert_eq!(counters.add("apples".into(), 5).await?, 5);
//!     counters.add("pears".into(), 2).await?;
//!     // The first `?` is the call (`ClientError`), the second the method's own `Result`.
//!     let left = counters.take("apples".into(), 3).await??;
//!     assert_eq!(left, 2);
//!     assert!(counters.take("pears".into(), 9).await?.is_err());
//!     assert_eq!(counters.sum().await?, 4);
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## What `#[cbase::service]` accepts
//!
//! A trait of methods that take `&self`, owned serde arguments and return an
//! owned serde type (arguments and results travel over the network; they also
//! need `Debug` and `Clone`). Each method may carry `#[reads(..)]` and
//! `#[writes(..)]`, each a comma-separated list of keys:
//!
//! | key | covers |
//! |---|---|
//! | `*` | everything |
//! | `table[*]` | every entry of one table (a [`Cell`] is always named this way) |
//! | `table[expr]` | one entry; `expr` uses the arguments and their fields, never `self` |
//! | `expr` (a bare argument) | that value in every table |
//! | `table[expr] for x in collection` | one entry per element of an argument |
//!
//! A method with no rule conflicts with every request: correct first, fast
//! later. A write already permits reading, so a key both read and written is
//! a compile error. An optional `ctx: &Context` parameter ([`Context`]) gives
//! the request's agreed timestamp and seeded randomness; it is not part of the
//! request. Mistakes in a trait are compile errors that point at the wrong
//! token and say what to write instead.
//!
//! ## What it generates
//!
//! For `trait Bank`: `BankRequest` (one serde variant per method, with its
//! arguments; it implements [`Request`], computing each request's
//! [`AccessSet`] from its arguments), `BankResponse` (one variant per method,
//! with its result), `BankService<T>` (the adapter that runs any
//! `T: Bank + State` as a [`Service`]), and `BankClient<I>` (a typed async
//! client with one method per trait method, over anything that implements
//! [`Invoke`]: a [`NetClient`] for a cluster, a [`LocalInvoker`] in-process).
//! Each client method returns `Result<Output, ClientError>`.
//!
//! ## Where to read more
//!
//! The book in the repository's `book/` directory (`mdbook build book`) is the
//! guide: writing rules, state and determinism, running a cluster from a
//! cluster file, how agreement and the parallelizer work, tuning, testing, and
//! every compile error with its fix. The less common items are in
//! [`core_crate`] (the parallelizer, the codec) and [`net`] (the protocol
//! state machine, the transport, the cluster file and keys).

#![warn(missing_docs)]

pub use cbase_macros::{State, service};

pub use cbase_core::{
    AccessKind, AccessSet, Cell, ClientError, ClientId, Closed, Container, Context,
    DeterministicRng, Digest, ExecError, Executor, ExecutorBuilder, Fingerprint, Invoke, Key,
    LocalInvoker, MethodInfo, PrefixView, Reply, Request, RestoreError, Service, Snapshot, State,
    StateError, StateTables, Table, TableId, TrySubmitError, UndeclaredAccess, ValueHash,
    conflicts,
};

pub use cbase_net::{
    ClientConfig, ClusterConfig, ClusterError, DataDirs, LocalCluster, LocalClusterBuilder,
    NetClient, NodeConfig, ProtocolConfig, ReplicaNode,
};

pub mod logging;

#[cfg(feature = "cli")]
pub mod app;

/// The core crate, for the less common items (the parallelizer, the codec).
pub use cbase_core as core_crate;
/// The networking crate, for the less common items (the protocol state
/// machine, the transport, the cluster file and keys).
pub use cbase_net as net;

/// What a service author needs, in one import: `use cbase::prelude::*;`.
pub mod prelude {
    pub use cbase_core::{
        AccessSet, Cell, ClientError, ClientId, Container, Context, Digest, ExecError, Executor,
        ExecutorBuilder, Key, LocalInvoker, Reply, Request, Service, State, Table,
    };
    pub use cbase_macros::{State, service};
    pub use cbase_net::{LocalCluster, NetClient};
}

/// Items the generated code refers to. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use cbase_core as core;
    pub use serde;
}

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
//! A service declares, per request, the keys it reads and writes. Agreement
//! fixes one total order; each replica's parallelizer releases a request only
//! after every earlier request it depends on has finished, and a worker pool
//! runs the rest concurrently. State lives in [`Table`]s and [`Cell`]s, which
//! refuse any access a request did not declare, so a wrong rule is an error
//! reply, never a divergence between replicas.
//!
//! ## The core, by hand
//!
//! Until `#[cbase::service]` writes this for you, a service implements
//! [`Request`] and [`Service`] directly; see [`cbase_core::service`] for a
//! complete example. Everything users need is in the [`prelude`].

pub use cbase_macros::{State, service};

pub use cbase_core::{
    AccessKind, AccessSet, Cell, ClientError, Closed, Container, Context, DeterministicRng, Digest,
    ExecError, Executor, ExecutorBuilder, Invoke, Key, LocalInvoker, Reply, Request, RestoreError,
    Service, Snapshot, State, StateError, Table, TableId, TrySubmitError, UndeclaredAccess,
    ValueHash, conflicts,
};

pub use cbase_net::{
    ClientConfig, ClusterConfig, ClusterError, LocalCluster, LocalClusterBuilder, NetClient,
    NodeConfig, ProtocolConfig, ReplicaNode,
};

/// The core crate, for the less common items (the parallelizer, the codec).
pub use cbase_core as core_crate;
/// The networking crate, for the less common items (the protocol state
/// machine, the transport, the cluster file and keys).
pub use cbase_net as net;

/// What a service author needs, in one import: `use cbase::prelude::*;`.
pub mod prelude {
    pub use cbase_core::{
        AccessSet, Cell, ClientError, Container, Context, Digest, ExecError, Executor,
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

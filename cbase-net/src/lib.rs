//! Agreement and networking for cbase.
//!
//! - [`protocol`]: PBFT as a pure state machine (events in, actions out).
//! - [`transport`]: authenticated, framed connections over TCP.
//! - [`runtime`]: one replica on tokio: connections, the protocol task, and
//!   execution through the core's parallel executor.
//! - [`client`]: [`NetClient`], which typed clients use to call a cluster.
//! - [`cluster`]: [`LocalCluster`], n replicas in one process.
//! - [`storage`]: a replica's data directory, so it restarts where it was.
//! - [`config`], [`crypto`], [`deploy`]: the cluster file, keys, and starting
//!   replicas and clients from them.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod client;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod deploy;
pub mod message;
pub mod protocol;
pub mod runtime;
pub mod status;
pub mod storage;
pub mod transport;

pub use client::{ClientConfig, NetClient};
pub use cluster::{ClusterError, DataDirs, LocalCluster, LocalClusterBuilder};
pub use config::{ClusterConfig, ReplicaId};
pub use protocol::ProtocolConfig;
pub use runtime::{CheckpointAgreement, NodeConfig, NodeError, NodeMetrics, ReplicaNode};

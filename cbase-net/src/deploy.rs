//! Running replicas and clients from files: the cluster file (TOML, every
//! replica's address and public key) and one secret key file per replica.
//!
//! ```text
//! generate_cluster(dir, 4, "127.0.0.1", 7000)   -> cluster.toml, replica-{0..3}.key
//! start_replica("cluster.toml", 2, "replica-2.key", service)   on each host
//! client_from_file("cluster.toml")               anywhere
//! ```

use std::path::Path;

use cbase_core::{ExecutorBuilder, Service};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

use crate::client::{ClientConfig, NetClient};
use crate::config::{ClusterConfig, ConfigError, ReplicaId};
use crate::crypto::{KeyFileError, SecretKey};
use crate::protocol::ProtocolConfig;
use crate::runtime::{NodeConfig, NodeError, ReplicaNode};
use crate::transport::TransportConfig;

/// Why a replica or client could not start from its files.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The cluster file is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The key file is missing or invalid.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// The id is not in the cluster file.
    #[error("replica {id} is not in the cluster file (it lists ids 0 to {last})")]
    UnknownReplica {
        /// The id asked for.
        id: ReplicaId,
        /// The highest id in the file.
        last: usize,
    },
    /// The key file holds another replica's key.
    #[error(
        "the key in {key_file} does not match replica {id}'s public key in the cluster file; \
         use replica-{id}.key from the same key generation"
    )]
    KeyMismatch {
        /// The replica.
        id: ReplicaId,
        /// The key file.
        key_file: String,
    },
    /// The metrics address could not be bound.
    #[error("cannot serve metrics on {address}: {source}")]
    MetricsBind {
        /// The address.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The replica's address is taken by another process.
    #[error(
        "address {address}, where replica {id} listens, is already in use; stop the process using it or change the port"
    )]
    AddressInUse {
        /// The replica.
        id: ReplicaId,
        /// Its address.
        address: String,
    },
    /// The replica's address cannot be listened on.
    #[error("cannot listen on {address} (replica {id}): {source}")]
    Bind {
        /// The replica.
        id: ReplicaId,
        /// Its address.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The replica failed to start.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The client could not be created.
    #[error(transparent)]
    Client(#[from] cbase_core::ClientError),
}

/// Tuning for a replica started from files.
#[derive(Clone, Debug, Default)]
pub struct ReplicaOptions {
    /// Worker pool and window.
    pub executor: ExecutorBuilder,
    /// Agreement settings.
    pub protocol: ProtocolConfig,
    /// Connection limits.
    pub transport: TransportConfig,
    /// The replica's data directory ([`crate::storage`]): it restarts from
    /// there, and a restart of every replica loses nothing a client saw
    /// complete. `None`: the replica keeps everything in memory, and gets
    /// the state back from its peers after a restart (a restart of every
    /// replica then loses it all).
    pub data_dir: Option<std::path::PathBuf>,
    /// The address to listen on, when it is not the one the cluster file
    /// lists (which is where the others reach this replica): behind NAT or
    /// port mapping, or in a container, for example `0.0.0.0:7000` while
    /// the cluster file says `replica0.example.com:7000`. `None`: the
    /// cluster file's address.
    pub listen: Option<String>,
    /// Where to serve Prometheus metrics (`GET /metrics`), for example
    /// `127.0.0.1:9100`; `None`: not served (they stay readable in
    /// process, through [`ReplicaNode::metrics`]).
    pub metrics: Option<String>,
    /// `data_dir` was put back from a copy (a backup) while the other
    /// replicas went on: start from its state, but as a replica that forgot
    /// the views it voted in since ([`NodeConfig::restored`]).
    pub restored: bool,
}

/// Starts replica `id` from the cluster file and its key file, listening on
/// the address the cluster file gives it.
pub async fn start_replica<S>(
    cluster_file: &Path,
    id: ReplicaId,
    key_file: &Path,
    options: ReplicaOptions,
    service: S,
) -> Result<ReplicaNode, DeployError>
where
    S: Service,
    S::Request: DeserializeOwned,
    S::Response: Serialize,
{
    let cluster = ClusterConfig::load(cluster_file)?;
    let entry = cluster.replica(id).ok_or(DeployError::UnknownReplica {
        id,
        last: cluster.n().saturating_sub(1),
    })?;
    let secret = SecretKey::read_file(key_file)?;
    if secret.public() != entry.public_key {
        return Err(DeployError::KeyMismatch {
            id,
            key_file: key_file.display().to_string(),
        });
    }
    let address = options
        .listen
        .clone()
        .unwrap_or_else(|| entry.address.clone());
    let listener = TcpListener::bind(&address).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            DeployError::AddressInUse {
                id,
                address: address.clone(),
            }
        } else {
            DeployError::Bind {
                id,
                address: address.clone(),
                source,
            }
        }
    })?;
    let config = NodeConfig {
        id,
        cluster,
        secret,
        protocol: options.protocol,
        transport: options.transport,
        executor: options.executor,
        recovering: true,
        restored: options.restored,
        data_dir: options.data_dir,
    };
    // Bound before the replica starts, so a taken port fails the start.
    let metrics =
        match &options.metrics {
            Some(address) => Some(TcpListener::bind(address).await.map_err(|source| {
                DeployError::MetricsBind {
                    address: address.clone(),
                    source,
                }
            })?),
            None => None,
        };
    let mut node = ReplicaNode::start(config, listener, service).await?;
    if let Some(listener) = metrics {
        node.serve_metrics(listener);
    }
    Ok(node)
}

/// A client of the cluster described by the cluster file.
pub fn client_from_file(
    cluster_file: &Path,
    config: ClientConfig,
) -> Result<NetClient, DeployError> {
    let cluster = ClusterConfig::load(cluster_file)?;
    Ok(NetClient::connect(cluster, config)?)
}

//! [`LocalCluster`]: n replicas in one process on 127.0.0.1, the embedded default.

use cbase_core::{ExecutorBuilder, Service};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

use crate::client::{ClientConfig, NetClient};
use crate::config::{ClusterConfig, ReplicaEntry, ReplicaId};
use crate::crypto::SecretKey;
use crate::protocol::ProtocolConfig;
use crate::runtime::{CheckpointAgreement, NodeConfig, NodeError, ReplicaNode};
use crate::transport::TransportConfig;
use cbase_core::ClientError;

/// Why a local cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// n must be at least 1; f = (n-1)/3 faults are tolerated.
    #[error("a cluster needs at least one replica")]
    NoReplicas,
    /// A loopback port could not be bound.
    #[error("cannot listen on 127.0.0.1: {0}")]
    Bind(#[source] std::io::Error),
    /// The data directory (a temporary one, or the root given with its
    /// keys) could not be created or read.
    #[error("cannot prepare the data directory: {0}")]
    DataDir(#[source] std::io::Error),
    /// The replica asked to restart is running.
    #[error("replica {0} is running; stop it before restarting it")]
    Running(ReplicaId),
    /// A replica could not start.
    #[error("replica {id} failed to start: {source}")]
    Replica {
        /// Which one.
        id: ReplicaId,
        /// Why.
        #[source]
        source: NodeError,
    },
}

/// Replica `id`'s key for a cluster under `root`: the one kept there as
/// `root/replica-<id>.key`, or a fresh one written there. A cluster started
/// again over its directories needs the same keys: its votes and checkpoint
/// proofs on disk are signed with them, and each directory records whose it
/// is.
fn kept_key(root: &std::path::Path, id: ReplicaId) -> Result<SecretKey, ClusterError> {
    let path = root.join(format!("replica-{id}.key"));
    let unusable = |error: &dyn std::fmt::Display| {
        ClusterError::DataDir(std::io::Error::other(format!(
            "replica {id}'s key file {}: {error}",
            path.display()
        )))
    };
    if path.exists() {
        return SecretKey::read_file(&path).map_err(|e| unusable(&e));
    }
    std::fs::create_dir_all(root).map_err(ClusterError::DataDir)?;
    let secret = SecretKey::generate();
    secret.write_file(&path).map_err(|e| unusable(&e))?;
    Ok(secret)
}

/// Where a [`LocalCluster`]'s replicas keep their data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DataDirs {
    /// A fresh temporary directory per replica, removed with the cluster
    /// (the default): replicas write to disk exactly as deployed ones do.
    #[default]
    Temporary,
    /// `root/replica-<id>` for each replica, created if needed and kept,
    /// with its key beside it (`root/replica-<id>.key`): a cluster started
    /// again over the same root continues where it was. (Replicas started
    /// from files keep their keys where [`crate::deploy`] says; a directory
    /// records whose it is, and refuses another replica or cluster.)
    Under(std::path::PathBuf),
    /// Nothing on disk: faster, and everything is lost when the cluster stops.
    InMemory,
}

/// Configures a [`LocalCluster`].
#[derive(Clone, Debug)]
pub struct LocalClusterBuilder {
    replicas: usize,
    executor: ExecutorBuilder,
    protocol: ProtocolConfig,
    transport: TransportConfig,
    data: DataDirs,
    clients: Option<Vec<crate::config::ClientEntry>>,
}

/// n replicas of one service in this process, talking over loopback TCP with
/// fresh keys: the same code as a multi-host deployment, without the setup.
///
/// ```no_run
/// # async fn demo<S>(make: impl Fn() -> S) -> Result<(), Box<dyn std::error::Error>>
/// # where S: cbase_core::Service, S::Request: serde::de::DeserializeOwned, S::Response: serde::Serialize {
/// use cbase_net::LocalCluster;
/// let cluster = LocalCluster::builder().replicas(4).workers(16).start(make).await?;
/// let client = cluster.client()?;
/// // BankClient::new(client).transfer(1, 2, 10).await??;
/// cluster.shutdown().await;
/// # Ok(()) }
/// ```
pub struct LocalCluster {
    config: ClusterConfig,
    nodes: Vec<Option<ReplicaNode>>,
    /// Each replica's key, to restart it.
    secrets: Vec<SecretKey>,
    settings: LocalClusterBuilder,
    /// Where the replicas' data directories are (none in memory).
    root: Option<std::path::PathBuf>,
    /// The replicas' temporary data directories, removed on drop.
    _temporary: Option<tempfile::TempDir>,
}

impl LocalCluster {
    /// A builder: 4 replicas (f = 1), 16 workers each.
    pub fn builder() -> LocalClusterBuilder {
        LocalClusterBuilder {
            replicas: 4,
            executor: ExecutorBuilder::new().workers(16),
            protocol: ProtocolConfig::default(),
            transport: TransportConfig::default(),
            data: DataDirs::default(),
            clients: None,
        }
    }

    /// The cluster file this cluster runs with (addresses and public keys).
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// A new client connected to every replica.
    pub fn client(&self) -> Result<NetClient, ClientError> {
        NetClient::connect(self.config.clone(), ClientConfig::default())
    }

    /// A new client with the given settings.
    pub fn client_with(&self, config: ClientConfig) -> Result<NetClient, ClientError> {
        NetClient::connect(self.config.clone(), config)
    }

    /// A running replica, or `None` if it was stopped.
    pub fn replica(&self, id: ReplicaId) -> Option<&ReplicaNode> {
        self.nodes.get(id as usize).and_then(Option::as_ref)
    }

    /// The running replicas.
    pub fn replicas(&self) -> impl Iterator<Item = &ReplicaNode> {
        self.nodes.iter().flatten()
    }

    /// How the running replicas' recorded checkpoints compare, by sequence
    /// number (see [`CheckpointAgreement`]).
    pub fn checkpoint_agreement(&self) -> CheckpointAgreement {
        let histories: Vec<_> = self
            .replicas()
            .map(|r| r.metrics().checkpoints.lock().clone())
            .collect();
        CheckpointAgreement::compare(histories)
    }

    /// Stops one replica (as a crash would).
    pub async fn stop_replica(&mut self, id: ReplicaId) {
        if let Some(node) = self.nodes.get_mut(id as usize).and_then(Option::take) {
            node.shutdown().await;
        }
    }

    /// Where replica `id` keeps its data (`None` in memory).
    pub fn data_dir(&self, id: ReplicaId) -> Option<std::path::PathBuf> {
        self.root
            .as_ref()
            .map(|root| root.join(format!("replica-{id}")))
    }

    /// Starts replica `id` again after [`stop_replica`](Self::stop_replica),
    /// at the same address with the same key, running `service`. With a
    /// data directory it recovers from it (or, if the directory was
    /// emptied, starts from `service`'s state); either way it catches up
    /// with its peers, by state transfer if they moved on. In memory it
    /// comes back as a replica that lost everything.
    ///
    /// # Errors
    /// If the replica is running, its address cannot be bound again, or it
    /// cannot start (for example, a damaged data directory).
    pub async fn restart_replica<S>(
        &mut self,
        id: ReplicaId,
        service: S,
    ) -> Result<(), ClusterError>
    where
        S: Service,
        S::Request: DeserializeOwned,
        S::Response: Serialize,
    {
        self.start_again(id, service, false).await
    }

    /// Starts replica `id` again, as [`restart_replica`](Self::restart_replica)
    /// does, over a data directory put back from a copy (a backup) taken
    /// while the others went on ([`NodeConfig::restored`]): from the copy's
    /// state, voting again only once its peers said where they are.
    ///
    /// # Errors
    /// As for [`restart_replica`](Self::restart_replica).
    pub async fn restore_replica<S>(
        &mut self,
        id: ReplicaId,
        service: S,
    ) -> Result<(), ClusterError>
    where
        S: Service,
        S::Request: DeserializeOwned,
        S::Response: Serialize,
    {
        self.start_again(id, service, true).await
    }

    async fn start_again<S>(
        &mut self,
        id: ReplicaId,
        service: S,
        restored: bool,
    ) -> Result<(), ClusterError>
    where
        S: Service,
        S::Request: DeserializeOwned,
        S::Response: Serialize,
    {
        let Some(slot) = self.nodes.get(id as usize) else {
            return Err(ClusterError::Replica {
                id,
                source: NodeError::UnknownReplica(id),
            });
        };
        if slot.is_some() {
            return Err(ClusterError::Running(id));
        }
        let address = &self.config.replicas[id as usize].address;
        let listener = TcpListener::bind(address)
            .await
            .map_err(ClusterError::Bind)?;
        let node_config = NodeConfig {
            id,
            cluster: self.config.clone(),
            secret: self.secrets[id as usize].clone(),
            protocol: self.settings.protocol.clone(),
            transport: self.settings.transport.clone(),
            executor: self.settings.executor.clone(),
            // It may have voted before: it takes part again only once it
            // learned where its peers are.
            recovering: true,
            restored,
            data_dir: self.data_dir(id),
        };
        let node = ReplicaNode::start(node_config, listener, service)
            .await
            .map_err(|source| ClusterError::Replica { id, source })?;
        self.nodes[id as usize] = Some(node);
        Ok(())
    }

    /// Stops every replica.
    pub async fn shutdown(mut self) {
        for node in self.nodes.iter_mut().filter_map(Option::take) {
            node.shutdown().await;
        }
    }
}

impl LocalClusterBuilder {
    /// The number of replicas, n; the cluster tolerates f = (n-1)/3 faults.
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Worker threads per replica; 1 is the sequential baseline.
    pub fn workers(mut self, workers: usize) -> Self {
        self.executor = self.executor.workers(workers);
        self
    }

    /// Executor settings per replica.
    pub fn executor(mut self, executor: ExecutorBuilder) -> Self {
        self.executor = executor;
        self
    }

    /// Agreement settings.
    pub fn protocol(mut self, protocol: ProtocolConfig) -> Self {
        self.protocol = protocol;
        self
    }

    /// Connection limits of every replica (the largest frame, the handshake
    /// timeout).
    pub fn transport(mut self, transport: TransportConfig) -> Self {
        self.transport = transport;
        self
    }

    /// Where the replicas keep their data (default: temporary directories).
    pub fn data(mut self, data: DataDirs) -> Self {
        self.data = data;
        self
    }

    /// Admits only these clients ([`ClusterConfig::clients`]); by default
    /// any client may submit.
    pub fn admit(mut self, clients: impl IntoIterator<Item = crate::crypto::PublicKey>) -> Self {
        let entries = clients
            .into_iter()
            .map(|public_key| crate::config::ClientEntry {
                public_key,
                name: None,
            })
            .collect();
        self.clients = Some(entries);
        self
    }

    /// Starts the replicas, each with its own service built by `make`.
    pub async fn start<S, F>(self, make: F) -> Result<LocalCluster, ClusterError>
    where
        S: Service,
        S::Request: DeserializeOwned,
        S::Response: Serialize,
        F: Fn() -> S,
    {
        if self.replicas == 0 {
            return Err(ClusterError::NoReplicas);
        }
        let mut listeners = Vec::new();
        let mut secrets = Vec::new();
        let mut entries = Vec::new();
        for id in 0..self.replicas as ReplicaId {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(ClusterError::Bind)?;
            let address = listener.local_addr().map_err(ClusterError::Bind)?;
            let secret = match &self.data {
                DataDirs::Under(root) => kept_key(root, id)?,
                DataDirs::Temporary | DataDirs::InMemory => SecretKey::generate(),
            };
            entries.push(ReplicaEntry {
                id,
                address: address.to_string(),
                public_key: secret.public(),
            });
            secrets.push(secret);
            listeners.push(listener);
        }
        let config = ClusterConfig {
            f: (self.replicas - 1) / 3,
            replicas: entries,
            clients: self.clients.clone(),
        };
        let (root, temporary) = match &self.data {
            DataDirs::Temporary => {
                let temporary = tempfile::Builder::new()
                    .prefix("cbase-cluster-")
                    .tempdir()
                    .map_err(ClusterError::DataDir)?;
                (Some(temporary.path().to_owned()), Some(temporary))
            }
            DataDirs::Under(root) => (Some(root.clone()), None),
            DataDirs::InMemory => (None, None),
        };
        let mut nodes = Vec::new();
        for (id, (listener, secret)) in listeners.into_iter().zip(secrets.clone()).enumerate() {
            let id = id as ReplicaId;
            let node_config = NodeConfig {
                id,
                cluster: config.clone(),
                secret,
                protocol: self.protocol.clone(),
                transport: self.transport.clone(),
                executor: self.executor.clone(),
                recovering: false,
                restored: false,
                data_dir: root.as_ref().map(|r| r.join(format!("replica-{id}"))),
            };
            let node = ReplicaNode::start(node_config, listener, make())
                .await
                .map_err(|source| ClusterError::Replica { id, source })?;
            nodes.push(Some(node));
        }
        Ok(LocalCluster {
            config,
            nodes,
            secrets,
            root,
            settings: self,
            _temporary: temporary,
        })
    }
}

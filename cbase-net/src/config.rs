//! The cluster file: which replicas exist, where they listen and which public
//! key each one holds.
//!
//! A deployment is described by one TOML file shared by every replica and
//! client:
//!
//! ```toml
//! f = 1
//!
//! [[replicas]]
//! id = 0
//! address = "127.0.0.1:7001"
//! public_key = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
//! # ... replicas 1, 2 and 3
//! ```
//!
//! The file is the root of trust: a replica accepts a peer as replica `j` only
//! if the peer proves it holds the secret key whose public half is listed for
//! `j` here (see [`crate::transport`]). It is therefore validated strictly when
//! loaded (n ≥ 3f+1, ids exactly `0..n`, unique addresses and keys, unknown
//! fields refused), so that a typo is an error naming the problem rather than a
//! cluster that silently cannot reach quorum. [`generate_cluster`] writes a
//! fresh cluster file and one secret key file per replica.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::crypto::{KeyFileError, PublicKey, SecretKey};

/// The quorum of a cluster of `n` replicas tolerating `f` faults:
/// `ceil((n + f + 1) / 2)` (see [`ClusterConfig::quorum`]).
pub fn quorum_size(n: usize, f: usize) -> usize {
    (n + f + 1).div_ceil(2)
}

/// Identifies a replica: its index in `0..n`.
pub type ReplicaId = u32;

/// The whole cluster: the fault threshold and every replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The number of Byzantine replicas tolerated; `n` must be at least `3f+1`.
    pub f: usize,
    /// Every replica, one entry each (in any order).
    pub replicas: Vec<ReplicaEntry>,
    /// The clients allowed to submit requests, if the cluster admits only
    /// some (`[[clients]]` entries in the file). `None` (no entry): any
    /// client may submit, as in local clusters and the examples. When listed,
    /// replicas refuse other clients at the connection, and backups refuse a
    /// proposal that carries a request from one, so a faulty primary cannot
    /// smuggle it in. Every replica's file should list the same clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<Vec<ClientEntry>>,
}

/// One client a cluster admits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// Its public key (what `cbase-keygen --clients` prints).
    pub public_key: PublicKey,
    /// A name for people (logs, the operator's notes); optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One replica of the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaEntry {
    /// Its id, in `0..n`.
    pub id: ReplicaId,
    /// Where it listens, as `host:port` (for example `"127.0.0.1:7001"`).
    pub address: String,
    /// The public key it proves itself with.
    pub public_key: PublicKey,
}

impl ClusterConfig {
    /// The number of replicas.
    pub fn n(&self) -> usize {
        self.replicas.len()
    }

    /// The size of a quorum: the fewest replicas such that any two quorums
    /// share at least f+1 replicas, so at least one correct one. That is
    /// `ceil((n + f + 1) / 2)`: `2f+1` when n = 3f+1, more when there are more
    /// replicas than 3f+1 (with n = 5 and f = 1, two sets of 2f+1 = 3 could
    /// share a single, faulty, replica; quorums of 4 share two).
    pub fn quorum(&self) -> usize {
        quorum_size(self.n(), self.f)
    }

    /// The size of a weak quorum, `f+1`: it always contains a correct replica.
    pub fn weak_quorum(&self) -> usize {
        self.f + 1
    }

    /// The entry of replica `id`, if there is one.
    pub fn replica(&self, id: ReplicaId) -> Option<&ReplicaEntry> {
        // Entries are usually sorted by id: try the direct index first.
        match usize::try_from(id).ok().and_then(|i| self.replicas.get(i)) {
            Some(entry) if entry.id == id => Some(entry),
            _ => self.replicas.iter().find(|entry| entry.id == id),
        }
    }

    /// Whether the client holding `key` may submit requests: every client
    /// when the file lists none, else the listed ones.
    pub fn admits(&self, key: &PublicKey) -> bool {
        self.clients
            .as_ref()
            .is_none_or(|clients| clients.iter().any(|client| client.public_key == *key))
    }

    /// The public key of replica `id`, if there is such a replica.
    pub fn public_key(&self, id: ReplicaId) -> Option<&PublicKey> {
        self.replica(id).map(|entry| &entry.public_key)
    }

    /// Parses a cluster file's text and [validates](ClusterConfig::validate) it.
    pub fn parse(toml_text: &str) -> Result<ClusterConfig, ConfigError> {
        let config: ClusterConfig =
            toml::from_str(toml_text).map_err(|e| syntax_error(toml_text, &e))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates the cluster file at `path`. Every error
    /// names the file.
    pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::Missing {
                    path: path.to_path_buf(),
                }
            } else {
                ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        ClusterConfig::parse(&text).map_err(|source| ConfigError::InFile {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// The configuration as the text of a cluster file ([`ClusterConfig::parse`]
    /// reads it back).
    pub fn to_toml(&self) -> String {
        // Integers, strings and hex keys always have a TOML form.
        toml::to_string(self).expect("a ClusterConfig always serializes to TOML")
    }

    /// Checks that the configuration describes a workable cluster: at least
    /// `3f+1` replicas, ids exactly `0..n` each once, non-empty `host:port`
    /// addresses and public keys that are all distinct.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = self.n();
        let required = self
            .f
            .checked_mul(3)
            .and_then(|x| x.checked_add(1))
            .unwrap_or(usize::MAX);
        if n < required {
            return Err(ConfigError::TooFewReplicas {
                n,
                f: self.f,
                required,
            });
        }

        let mut seen = vec![false; n];
        for entry in &self.replicas {
            let index = usize::try_from(entry.id).unwrap_or(usize::MAX);
            match seen.get_mut(index) {
                None => return Err(ConfigError::IdOutOfRange { id: entry.id, n }),
                Some(true) => return Err(ConfigError::DuplicateId { id: entry.id }),
                Some(slot) => *slot = true,
            }
        }
        // n distinct ids in 0..n leave none missing; kept as a safety net.
        if let Some(missing) = seen.iter().position(|s| !s) {
            return Err(ConfigError::MissingId {
                id: ReplicaId::try_from(missing).unwrap_or(ReplicaId::MAX),
                n,
            });
        }

        let mut addresses: HashMap<&str, ReplicaId> = HashMap::new();
        let mut keys: HashMap<&PublicKey, ReplicaId> = HashMap::new();
        for entry in &self.replicas {
            let address = entry.address.trim();
            if address.is_empty() {
                return Err(ConfigError::EmptyAddress { id: entry.id });
            }
            if !is_host_port(address) {
                return Err(ConfigError::InvalidAddress {
                    id: entry.id,
                    address: entry.address.clone(),
                });
            }
            if let Some(&first) = addresses.get(address) {
                return Err(ConfigError::DuplicateAddress {
                    address: entry.address.clone(),
                    first,
                    second: entry.id,
                });
            }
            addresses.insert(address, entry.id);
            if let Some(&first) = keys.get(&entry.public_key) {
                return Err(ConfigError::DuplicatePublicKey {
                    first,
                    second: entry.id,
                });
            }
            keys.insert(&entry.public_key, entry.id);
        }
        let mut clients = BTreeMap::new();
        for (at, client) in self.clients.iter().flatten().enumerate() {
            if let Some(&replica) = keys.get(&client.public_key) {
                return Err(ConfigError::ClientIsReplica {
                    client: describe_client(at, client),
                    replica,
                });
            }
            if let Some(first) = clients.insert(&client.public_key, at) {
                return Err(ConfigError::DuplicateClient {
                    first: describe_client(first, &self.clients.as_ref().expect("listed")[first]),
                    second: describe_client(at, client),
                });
            }
        }
        Ok(())
    }
}

/// A listed client, for messages: its name, or its place in the list.
fn describe_client(at: usize, client: &ClientEntry) -> String {
    match &client.name {
        Some(name) => format!("client `{name}`"),
        None => format!("client entry {}", at + 1),
    }
}

/// `host:port` with a non-empty host and a numeric port.
fn is_host_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

/// Checks that `host` is an IP address or a DNS name, with no port.
fn check_host(host: &str) -> Result<(), ConfigError> {
    let bad = |why| {
        Err(ConfigError::BadHost {
            host: host.to_owned(),
            why,
        })
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return bad("it is empty");
    }
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if host.contains(':') {
        return bad("give the host alone; ports come from the base port");
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if host.len() > 253 || !host.trim_end_matches('.').split('.').all(label_ok) {
        return bad("a host name is letters, digits and '-' in dot-separated labels");
    }
    Ok(())
}

/// Turns a toml error into [`ConfigError::Syntax`] with a 1-based line and column.
fn syntax_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let location = error.span().map(|span| {
        let start = span.start.min(text.len());
        let before = text.get(..start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        (line, column)
    });
    let line_text = location
        .and_then(|(line, _)| text.lines().nth(line - 1))
        .unwrap_or("");
    let message = match unquoted_hint(line_text) {
        Some(hint) => format!("{hint} (TOML says: {})", error.message().trim()),
        None => error.message().trim().to_string(),
    };
    ConfigError::Syntax {
        line: location.map(|(line, _)| line),
        column: location.map(|(_, column)| column),
        message,
    }
}

/// What a line that sets a string field without quotes should say, in the
/// cluster file's own terms (TOML's own message, about numbers or dates,
/// does not help).
fn unquoted_hint(line: &str) -> Option<&'static str> {
    let (key, value) = line.split_once('=')?;
    let value = value.trim_start();
    if value.starts_with('"') || value.starts_with('\'') {
        return None;
    }
    match key.trim() {
        "address" => Some("address must be a quoted string like \"10.0.0.1:7000\""),
        "public_key" => Some("public_key must be a quoted string of 64 hex digits"),
        _ => None,
    }
}

/// Why a cluster file could not be read, parsed, validated or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The cluster file does not exist.
    #[error("cluster file {} does not exist", path.display())]
    Missing {
        /// The file looked for.
        path: PathBuf,
    },
    /// The cluster file exists but could not be read.
    #[error("cannot read cluster file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file or directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An error in the cluster file at `path` (returned by [`ClusterConfig::load`]).
    #[error("in cluster file {}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: Box<ConfigError>,
    },
    /// The text is not valid TOML, or does not have the shape of a cluster file.
    #[error("{}{message}", Location(*line, *column))]
    Syntax {
        /// The 1-based line of the error, when known.
        line: Option<usize>,
        /// The 1-based column (in characters) of the error, when known.
        column: Option<usize>,
        /// What the TOML parser says.
        message: String,
    },
    /// Fewer than `3f+1` replicas.
    #[error(
        "the cluster has {n} replicas, but tolerating f = {f} faulty replicas needs at least \
         3f+1 = {required}; add replicas or lower f"
    )]
    TooFewReplicas {
        /// Replicas listed.
        n: usize,
        /// The configured f.
        f: usize,
        /// `3f+1`.
        required: usize,
    },
    /// Two entries have the same id.
    #[error("replica id {id} appears more than once; each id in 0..n must appear exactly once")]
    DuplicateId {
        /// The repeated id.
        id: ReplicaId,
    },
    /// An id is not in `0..n`.
    #[error("replica id {id} is out of range: with {n} replicas the ids must be 0..={}", n.saturating_sub(1))]
    IdOutOfRange {
        /// The offending id.
        id: ReplicaId,
        /// Replicas listed.
        n: usize,
    },
    /// An id in `0..n` has no entry.
    #[error("no replica has id {id}; with {n} replicas the ids must be exactly 0..={}", n.saturating_sub(1))]
    MissingId {
        /// The missing id.
        id: ReplicaId,
        /// Replicas listed.
        n: usize,
    },
    /// A replica's address is empty.
    #[error("replica {id} has an empty address; write it as \"host:port\"")]
    EmptyAddress {
        /// The replica.
        id: ReplicaId,
    },
    /// A replica's address is not `host:port`.
    #[error("replica {id} has address {address:?}, which is not \"host:port\" with a numeric port")]
    InvalidAddress {
        /// The replica.
        id: ReplicaId,
        /// Its address.
        address: String,
    },
    /// Two replicas share an address.
    #[error("replicas {first} and {second} have the same address {address:?}")]
    DuplicateAddress {
        /// The shared address.
        address: String,
        /// The first replica with it.
        first: ReplicaId,
        /// The second replica with it.
        second: ReplicaId,
    },
    /// Two replicas share a public key.
    #[error(
        "replicas {first} and {second} have the same public key; every replica needs its own key"
    )]
    DuplicatePublicKey {
        /// The first replica with it.
        first: ReplicaId,
        /// The second replica with it.
        second: ReplicaId,
    },
    /// A listed client has a replica's key.
    #[error("{client} has the public key of replica {replica}; clients need keys of their own")]
    ClientIsReplica {
        /// The client.
        client: String,
        /// The replica.
        replica: ReplicaId,
    },
    /// Two listed clients share a key.
    #[error("{first} and {second} have the same public key; list each client once")]
    DuplicateClient {
        /// The first entry.
        first: String,
        /// The second.
        second: String,
    },
    /// [`generate_cluster`] was asked for ports beyond 65535.
    #[error("{n} replicas starting at port {base_port} would need ports beyond 65535")]
    PortOverflow {
        /// The first port.
        base_port: u16,
        /// Replicas requested.
        n: usize,
    },
    /// A host given to [`generate_cluster`] is not a host name or address.
    #[error("{host:?} is not a host: {why}")]
    BadHost {
        /// The host as given.
        host: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// [`generate_cluster`] would replace an existing file.
    #[error(
        "{} already exists; refusing to overwrite it (remove it, or overwrite: cbase-keygen --force)",
        path.display()
    )]
    WouldOverwrite {
        /// The existing file.
        path: PathBuf,
    },
    /// A secret key file could not be written.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// A client name that cannot be part of a file name.
    #[error("client name `{name}` must be letters, digits, `-` and `_` (it names client-NAME.key)")]
    BadClientName {
        /// The name given.
        name: String,
    },
}

/// Formats an optional TOML location as a message prefix.
struct Location(Option<usize>, Option<usize>);

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(line), Some(column)) => write!(f, "TOML error at line {line}, column {column}: "),
            (Some(line), None) => write!(f, "TOML error at line {line}: "),
            _ => f.write_str("TOML error: "),
        }
    }
}

/// What [`generate_cluster`] wrote.
#[derive(Clone, Debug)]
pub struct GeneratedCluster {
    /// The new cluster's configuration.
    pub config: ClusterConfig,
    /// Where the cluster file was written (`dir/cluster.toml`).
    pub config_path: PathBuf,
    /// Where each replica's secret key was written (`dir/replica-{id}.key`),
    /// indexed by replica id.
    pub key_paths: Vec<PathBuf>,
}

/// Writes a fresh client key to `dir/client-{name}.key` (readable by its
/// owner only), creating `dir` if needed; returns the file and the key's
/// public half (what a cluster file's list of allowed clients names). A
/// client started with this key ([`crate::ClientConfig::key`]) is the same
/// caller across restarts. `name` is letters, digits, `-` and `_`. Refuses
/// to replace an existing file unless `overwrite` is set.
pub fn generate_client_key(
    dir: &Path,
    name: &str,
    overwrite: bool,
) -> Result<(PathBuf, PublicKey), ConfigError> {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if name.is_empty() || !name.chars().all(valid) {
        return Err(ConfigError::BadClientName {
            name: name.to_owned(),
        });
    }
    let path = dir.join(format!("client-{name}.key"));
    if !overwrite && path.exists() {
        return Err(ConfigError::WouldOverwrite { path });
    }
    std::fs::create_dir_all(dir).map_err(|source| ConfigError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let key = SecretKey::generate();
    key.write_file(&path)?;
    Ok((path, key.public()))
}

/// Generates a fresh cluster of `n` replicas (tolerating `f = (n-1)/3`) that
/// listen on `host` at ports `base_port..base_port+n`: writes `cluster.toml`
/// and one `replica-{id}.key` per replica into `dir`, creating `dir` if needed.
///
/// Refuses to replace any existing file unless `overwrite` is set; in that case
/// nothing is written.
pub fn generate_cluster(
    dir: &Path,
    n: usize,
    host: &str,
    base_port: u16,
    overwrite: bool,
) -> Result<GeneratedCluster, ConfigError> {
    let hosts = vec![host.to_owned(); n];
    generate_cluster_on(dir, &hosts, base_port, overwrite)
}

/// As [`generate_cluster`], with replica `i` on `hosts[i]`: replicas on the
/// same host get ports from `base_port` up, so replicas on different hosts
/// all listen on `base_port`.
pub fn generate_cluster_on(
    dir: &Path,
    hosts: &[String],
    base_port: u16,
    overwrite: bool,
) -> Result<GeneratedCluster, ConfigError> {
    let n = hosts.len();
    if n == 0 {
        return Err(ConfigError::TooFewReplicas {
            n: 0,
            f: 0,
            required: 1,
        });
    }
    let mut on_host: BTreeMap<&str, usize> = BTreeMap::new();
    let mut addresses = Vec::with_capacity(n);
    for host in hosts {
        check_host(host)?;
        let earlier = on_host.entry(host.as_str()).or_default();
        let port = usize::from(base_port) + *earlier;
        *earlier += 1;
        if port > usize::from(u16::MAX) {
            return Err(ConfigError::PortOverflow { base_port, n });
        }
        // Bare IPv6 addresses need brackets before a port can follow.
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        addresses.push(format!("{host}:{port}"));
    }

    let config_path = dir.join("cluster.toml");
    let key_paths: Vec<PathBuf> = (0..n)
        .map(|id| dir.join(format!("replica-{id}.key")))
        .collect();
    if !overwrite
        && let Some(existing) = std::iter::once(&config_path)
            .chain(&key_paths)
            .find(|path| path.exists())
    {
        return Err(ConfigError::WouldOverwrite {
            path: existing.clone(),
        });
    }

    let keys: Vec<SecretKey> = (0..n).map(|_| SecretKey::generate()).collect();
    let replicas = keys
        .iter()
        .enumerate()
        .zip(addresses)
        .map(|((index, key), address)| {
            Ok(ReplicaEntry {
                id: ReplicaId::try_from(index).map_err(|_| ConfigError::IdOutOfRange {
                    id: ReplicaId::MAX,
                    n,
                })?,
                address,
                public_key: key.public(),
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let config = ClusterConfig {
        f: (n - 1) / 3,
        replicas,
        clients: None,
    };
    config.validate()?;

    std::fs::create_dir_all(dir).map_err(|source| ConfigError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    for (key, path) in keys.iter().zip(&key_paths) {
        key.write_file(path)?;
    }
    let text = format!(
        "# cbase cluster file: n = {n} replicas, tolerating f = {} faulty ones.\n\
         # Share it with every replica and client; keep the replica-*.key files secret.\n\n{}",
        config.f,
        config.to_toml()
    );
    std::fs::write(&config_path, text).map_err(|source| ConfigError::Write {
        path: config_path.clone(),
        source,
    })?;
    Ok(GeneratedCluster {
        config,
        config_path,
        key_paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> PublicKey {
        SecretKey::from_seed([i; 32]).public()
    }

    fn cluster(n: usize, f: usize) -> ClusterConfig {
        ClusterConfig {
            f,
            replicas: (0..n)
                .map(|i| ReplicaEntry {
                    id: i as ReplicaId,
                    address: format!("127.0.0.1:{}", 7001 + i),
                    public_key: key(i as u8),
                })
                .collect(),
            clients: None,
        }
    }

    fn invalid(config: &ClusterConfig) -> String {
        let err = config.validate().expect_err("should be invalid");
        err.to_string()
    }

    #[test]
    fn a_cluster_file_may_list_the_clients_it_admits() {
        let open = cluster(4, 1);
        assert!(open.admits(&key(40)), "no list: every client");
        let mut text = open.to_toml();
        assert!(!text.contains("clients"), "no list, no entry:\n{text}");
        text.push_str(&format!(
            "\n[[clients]]\npublic_key = \"{}\"\nname = \"ann\"\n\n[[clients]]\npublic_key = \"{}\"\n",
            key(40).to_hex(),
            key(41).to_hex()
        ));
        let listed = ClusterConfig::parse(&text).unwrap();
        assert!(listed.admits(&key(40)) && listed.admits(&key(41)));
        assert!(!listed.admits(&key(42)));
        assert_eq!(ClusterConfig::parse(&listed.to_toml()).unwrap(), listed);

        let mut twice = listed.clone();
        twice.clients.as_mut().unwrap()[1].public_key = key(40);
        assert_eq!(
            invalid(&twice),
            "client `ann` and client entry 2 have the same public key; list each client once"
        );
        let mut replica = listed;
        replica.clients.as_mut().unwrap()[0].public_key = key(2);
        assert_eq!(
            invalid(&replica),
            "client `ann` has the public key of replica 2; clients need keys of their own"
        );
    }

    #[test]
    fn quorums() {
        let config = cluster(4, 1);
        assert_eq!(
            (config.n(), config.quorum(), config.weak_quorum()),
            (4, 3, 2)
        );
        let single = cluster(1, 0);
        single.validate().expect("n = 1, f = 0 is allowed");
        assert_eq!(
            (single.n(), single.quorum(), single.weak_quorum()),
            (1, 1, 1)
        );
        cluster(5, 1).validate().expect("n > 3f+1 is allowed");
    }

    #[test]
    fn lookups_work_in_any_order() {
        let mut config = cluster(4, 1);
        config.replicas.reverse();
        config.validate().expect("order does not matter");
        for id in 0..4 {
            assert_eq!(config.replica(id).map(|e| e.id), Some(id));
            assert_eq!(config.public_key(id), Some(&key(id as u8)));
        }
        assert!(config.replica(4).is_none());
        assert!(config.public_key(99).is_none());
    }

    #[test]
    fn toml_round_trip() {
        let config = cluster(4, 1);
        let text = config.to_toml();
        assert!(
            text.contains(&format!("public_key = \"{}\"", key(0).to_hex())),
            "{text}"
        );
        assert_eq!(ClusterConfig::parse(&text).expect("parse"), config);
    }

    #[test]
    fn validation_errors() {
        let err = invalid(&cluster(3, 1));
        assert!(
            err.contains("3 replicas") && err.contains("3f+1 = 4"),
            "{err}"
        );
        let err = invalid(&cluster(0, 0));
        assert!(
            err.contains("0 replicas") && err.contains("3f+1 = 1"),
            "{err}"
        );

        let mut config = cluster(4, 1);
        config.replicas[3].id = 1;
        let err = invalid(&config);
        assert!(err.contains("replica id 1 appears more than once"), "{err}");

        let mut config = cluster(4, 1);
        config.replicas[3].id = 7;
        let err = invalid(&config);
        assert!(
            err.contains("replica id 7 is out of range") && err.contains("0..=3"),
            "{err}"
        );

        let mut config = cluster(4, 1);
        config.replicas[2].address = " ".into();
        assert!(invalid(&config).contains("replica 2 has an empty address"));

        let mut config = cluster(4, 1);
        config.replicas[2].address = "localhost".into();
        assert!(invalid(&config).contains("not \"host:port\""));
        config.replicas[2].address = "localhost:http".into();
        assert!(invalid(&config).contains("not \"host:port\""));
        config.replicas[2].address = "[::1]:7003".into();
        config.validate().expect("bracketed IPv6 is fine");

        let mut config = cluster(4, 1);
        config.replicas[3].address = config.replicas[1].address.clone();
        let err = invalid(&config);
        assert!(
            err.contains("replicas 1 and 3 have the same address \"127.0.0.1:7002\""),
            "{err}"
        );

        let mut config = cluster(4, 1);
        config.replicas[2].public_key = key(0);
        let err = invalid(&config);
        assert!(
            err.contains("replicas 0 and 2 have the same public key"),
            "{err}"
        );
    }

    #[test]
    fn missing_id_is_reported() {
        let config = cluster(4, 1);
        let err = ConfigError::MissingId { id: 2, n: 4 }.to_string();
        assert!(err.contains("no replica has id 2"), "{err}");
        // With n entries, a missing id always shows up as a duplicate or an
        // out-of-range id first.
        let mut gap = config.clone();
        gap.replicas[2].id = 4;
        assert!(invalid(&gap).contains("replica id 4 is out of range"));
    }

    #[test]
    fn parse_errors_carry_location() {
        let good = cluster(4, 1).to_toml();

        let broken = good.replacen("id = 2", "id = = 2", 1);
        let line = broken
            .lines()
            .position(|l| l.contains("id = = 2"))
            .expect("line")
            + 1;
        let err = ClusterConfig::parse(&broken).unwrap_err();
        assert!(
            matches!(err, ConfigError::Syntax { line: Some(l), .. } if l == line),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("TOML error at line {line}, column ")),
            "{err}"
        );

        let err = ClusterConfig::parse(&good.replacen("f = 1", "", 1)).unwrap_err();
        assert!(err.to_string().contains("missing field `f`"), "{err}");

        // The newcomer's mistake: an address without quotes.
        let unquoted = good.replacen(
            "address = \"127.0.0.1:7001\"",
            "address = 127.0.0.1:7001",
            1,
        );
        assert_ne!(unquoted, good);
        let err = ClusterConfig::parse(&unquoted).unwrap_err().to_string();
        assert!(err.starts_with("TOML error at line "), "{err}");
        assert!(
            err.contains("address must be a quoted string like \"10.0.0.1:7000\""),
            "{err}"
        );
        let unquoted = good.replacen("public_key = \"", "public_key = ", 1);
        let err = ClusterConfig::parse(&unquoted).unwrap_err().to_string();
        assert!(err.contains("public_key must be a quoted string"), "{err}");
        // A quoted key that is not one says so in words that read.
        let short = good.replacen(&key(0).to_hex(), "abcd", 1);
        let err = ClusterConfig::parse(&short).unwrap_err().to_string();
        assert!(
            err.contains("not an ed25519 public key: expected 64 hex digits, found 4"),
            "{err}"
        );

        let err = ClusterConfig::parse(&good.replacen("address", "adress", 1)).unwrap_err();
        assert!(err.to_string().contains("adress"), "{err}");

        let bad_key = good.replacen(&key(1).to_hex(), "00ff", 1);
        let err = ClusterConfig::parse(&bad_key).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("expected 64 hex digits, found 4"), "{text}");
        assert!(
            matches!(err, ConfigError::Syntax { line: Some(_), .. }),
            "{err:?}"
        );

        let err = ClusterConfig::parse(&good.replacen("f = 1", "f = 2", 1)).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::TooFewReplicas {
                    n: 4,
                    f: 2,
                    required: 7
                }
            ),
            "{err}"
        );

        let err = ClusterConfig::parse(&good.replacen("f = 1", "f = -1", 1)).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cluster.toml");
        let err = ClusterConfig::load(&path).unwrap_err();
        assert!(matches!(err, ConfigError::Missing { .. }), "{err}");
        assert!(
            err.to_string().contains("cluster.toml") && err.to_string().contains("does not exist")
        );

        std::fs::write(&path, cluster(3, 1).to_toml()).expect("write");
        let err = ClusterConfig::load(&path).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("cluster.toml") && text.contains("3f+1 = 4"),
            "{text}"
        );
        let ConfigError::InFile { source, .. } = err else {
            panic!("expected InFile, got {err:?}");
        };
        assert!(matches!(*source, ConfigError::TooFewReplicas { .. }));
    }

    #[test]
    fn generate_writes_loadable_files_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("deploy");
        let generated = generate_cluster(&out, 4, "127.0.0.1", 7001, false).expect("generate");
        assert_eq!(generated.config.f, 1);
        assert_eq!(generated.config.n(), 4);
        assert_eq!(generated.config_path, out.join("cluster.toml"));
        let loaded = ClusterConfig::load(&generated.config_path).expect("load");
        assert_eq!(loaded, generated.config);
        assert_eq!(
            loaded.replica(3).map(|e| e.address.as_str()),
            Some("127.0.0.1:7004")
        );
        for (id, path) in generated.key_paths.iter().enumerate() {
            assert_eq!(path, &out.join(format!("replica-{id}.key")));
            let key = SecretKey::read_file(path).expect("key");
            assert_eq!(Some(&key.public()), loaded.public_key(id as ReplicaId));
        }

        let err = generate_cluster(&out, 4, "127.0.0.1", 7001, false).unwrap_err();
        assert!(matches!(err, ConfigError::WouldOverwrite { .. }), "{err}");
        assert!(err.to_string().contains("cluster.toml"), "{err}");
        // Nothing was replaced.
        assert_eq!(
            ClusterConfig::load(&generated.config_path).expect("load"),
            loaded
        );

        let again = generate_cluster(&out, 4, "127.0.0.1", 7001, true).expect("overwrite");
        assert_ne!(again.config, loaded);
        assert_eq!(
            ClusterConfig::load(&again.config_path).expect("load"),
            again.config
        );

        let single = generate_cluster(&dir.path().join("one"), 1, "::1", 9000, false).expect("n=1");
        assert_eq!(single.config.f, 0);
        assert_eq!(single.config.replicas[0].address, "[::1]:9000");

        let err = generate_cluster(&dir.path().join("x"), 3, "h", 65534, false).unwrap_err();
        assert!(matches!(err, ConfigError::PortOverflow { .. }), "{err}");
        let err = generate_cluster(&dir.path().join("y"), 0, "h", 1, false).unwrap_err();
        assert!(matches!(err, ConfigError::TooFewReplicas { .. }), "{err}");
        assert!(err.to_string().contains("needs at least"), "{err}");
        assert!(
            err.to_string().contains("3f+1"),
            "a cluster of nothing is not a cluster: {err}"
        );
    }

    #[test]
    fn replicas_on_their_own_hosts_share_the_base_port_and_hosts_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hosts: Vec<String> = ["10.0.0.1", "10.0.0.2", "db-3.example.com", "10.0.0.1"]
            .map(String::from)
            .to_vec();
        let generated =
            generate_cluster_on(&dir.path().join("a"), &hosts, 7000, false).expect("generate");
        let addresses: Vec<&str> = generated
            .config
            .replicas
            .iter()
            .map(|r| r.address.as_str())
            .collect();
        assert_eq!(
            addresses,
            [
                "10.0.0.1:7000",
                "10.0.0.2:7000",
                "db-3.example.com:7000",
                "10.0.0.1:7001"
            ]
        );
        for (host, why) in [
            ("", "empty"),
            ("10.0.0.1:7000", "ports come from the base port"),
            ("my host", "letters, digits"),
            ("-bad.example", "letters, digits"),
            ("under_score", "letters, digits"),
        ] {
            let hosts = vec![host.to_owned(); 4];
            let err = generate_cluster_on(&dir.path().join("b"), &hosts, 7000, false).unwrap_err();
            assert!(
                matches!(err, ConfigError::BadHost { .. }),
                "{host:?}: {err}"
            );
            assert!(err.to_string().contains(why), "{host:?}: {err}");
        }
        assert!(!dir.path().join("b").exists(), "nothing written");
        for host in ["::1", "[::1]", "fe80::1", "localhost", "a.b.c."] {
            let hosts = vec![host.to_owned(); 4];
            generate_cluster_on(
                &dir.path().join(host.replace([':', '[', ']', '.'], "_")),
                &hosts,
                7000,
                false,
            )
            .unwrap_or_else(|e| panic!("{host:?}: {e}"));
        }
    }
}

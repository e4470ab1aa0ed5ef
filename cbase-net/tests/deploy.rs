//! Starting replicas and clients from files: each mistake a user can make
//! gets an error that names the file, the replica or the address.

mod ports;

use cbase_core::{AccessSet, Container, Context, Request, Service, State, Table};
use cbase_net::config::generate_cluster;
use cbase_net::deploy::{DeployError, ReplicaOptions, client_from_file, start_replica};
use ports::free_ports;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Nop;

impl Request for Nop {
    fn access_set(&self) -> AccessSet {
        AccessSet::none()
    }
    fn method(&self) -> &'static str {
        "nop"
    }
}

struct Empty(Table<u64, u64>);

impl State for Empty {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("t", &self.0)]
    }
}

struct NopService(Empty);

impl Service for NopService {
    type Request = Nop;
    type Response = ();
    fn execute(&self, _: Nop, _: &Context) {}
    fn state(&self) -> &dyn State {
        &self.0
    }
}

fn service() -> NopService {
    NopService(Empty(Table::new()))
}

#[tokio::test]
async fn mistakes_in_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let error = start_replica(
        &missing,
        0,
        &dir.path().join("k"),
        ReplicaOptions::default(),
        service(),
    )
    .await
    .err()
    .unwrap();
    assert!(error.to_string().contains("nope.toml"), "{error}");
    assert!(client_from_file(&missing, Default::default()).is_err());

    let garbled = dir.path().join("garbled.toml");
    std::fs::write(&garbled, "f = 1\n[[replicas]\n").unwrap();
    let error = client_from_file(&garbled, Default::default())
        .err()
        .unwrap();
    assert!(matches!(error, DeployError::Config(_)), "{error}");
    assert!(error.to_string().contains("garbled.toml"), "{error}");

    let generated = generate_cluster(dir.path(), 4, "127.0.0.1", free_ports(4), false).unwrap();
    let config = &generated.config_path;
    let key = |id: usize| generated.key_paths[id].clone();

    let error = start_replica(config, 7, &key(0), ReplicaOptions::default(), service())
        .await
        .err()
        .unwrap();
    assert_eq!(
        error.to_string(),
        "replica 7 is not in the cluster file (it lists ids 0 to 3)"
    );

    let error = start_replica(config, 1, &key(2), ReplicaOptions::default(), service())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(error, DeployError::KeyMismatch { id: 1, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("replica-2.key"), "{error}");

    let error = start_replica(
        config,
        1,
        &dir.path().join("missing.key"),
        ReplicaOptions::default(),
        service(),
    )
    .await
    .err()
    .unwrap();
    assert!(error.to_string().contains("missing.key"), "{error}");

    // Replica 0's address is taken by someone else.
    let address = generated.config.replicas[0].address.clone();
    let _squatter = std::net::TcpListener::bind(&address).unwrap();
    let error = start_replica(config, 0, &key(0), ReplicaOptions::default(), service())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(error, DeployError::AddressInUse { id: 0, .. }),
        "{error}"
    );
    assert!(error.to_string().contains(&address), "{error}");

    // With everything right, it starts.
    let node = start_replica(config, 1, &key(1), ReplicaOptions::default(), service())
        .await
        .unwrap();
    node.shutdown().await;
}

#[tokio::test]
async fn a_replica_can_listen_on_another_address_than_the_one_it_is_reached_at() {
    // As behind NAT or in a container: the cluster file says where the
    // others reach each replica (here 127.0.0.1), the replica listens on
    // every interface.
    let dir = tempfile::tempdir().unwrap();
    let base = free_ports(4);
    let generated = generate_cluster(dir.path(), 4, "127.0.0.1", base, false).unwrap();
    let mut nodes = Vec::new();
    for id in 0..4u32 {
        let options = ReplicaOptions {
            listen: Some(format!("0.0.0.0:{}", base + id as u16)),
            ..ReplicaOptions::default()
        };
        let key = &generated.key_paths[id as usize];
        let node = start_replica(&generated.config_path, id, key, options, service())
            .await
            .unwrap();
        assert_eq!(
            node.address().to_string(),
            format!("0.0.0.0:{}", base + id as u16)
        );
        nodes.push(node);
    }
    let client = client_from_file(&generated.config_path, Default::default()).unwrap();
    let () = client.call(&Nop).await.unwrap();
    drop(client);
    for node in nodes {
        node.shutdown().await;
    }
}

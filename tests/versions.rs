//! Versioned services: a client built from another version of a service
//! trait is refused before anything it sends is ordered, with an error that
//! names the service and both fingerprints.

use cbase::prelude::*;
use cbase::{ClientConfig, LocalCluster};

/// The service as it was.
#[allow(dead_code)]
mod v1 {
    #[cbase::service]
    pub trait Tickets {
        #[writes(seats[show])]
        fn hold(&self, show: String) -> u32;

        #[writes(seats[show])]
        fn book(&self, show: String) -> u32;
    }
}

/// The same service, unchanged: another build of the same trait.
#[allow(dead_code)]
mod v1_again {
    #[cbase::service]
    pub trait Tickets {
        #[writes(seats[show])]
        fn hold(&self, show: String) -> u32;

        #[writes(seats[show])]
        fn book(&self, show: String) -> u32;
    }
}

/// The service as it is now: `book` before `hold` (the encoding of a
/// request is its position, so an old `hold` would decode as `book`).
mod v2 {
    use cbase::prelude::*;

    #[cbase::service]
    pub trait Tickets {
        #[writes(seats[show])]
        fn book(&self, show: String) -> u32;

        #[writes(seats[show])]
        fn hold(&self, show: String) -> u32;
    }

    #[derive(Default, cbase::State)]
    pub struct Office {
        pub seats: Table<String, u32>,
    }

    impl Tickets for Office {
        fn book(&self, show: String) -> u32 {
            self.seats.upsert(
                show,
                || 0,
                |n| {
                    *n += 10;
                    *n
                },
            )
        }

        fn hold(&self, show: String) -> u32 {
            self.seats.upsert(
                show,
                || 0,
                |n| {
                    *n += 1;
                    *n
                },
            )
        }
    }
}

#[test]
fn the_fingerprint_follows_the_interface() {
    let fingerprint = |f: Option<cbase::Fingerprint>| f.expect("the macro computes one");
    let v1 = fingerprint(v1::TicketsRequest::fingerprint());
    let again = fingerprint(v1_again::TicketsRequest::fingerprint());
    let v2 = fingerprint(v2::TicketsRequest::fingerprint());
    assert_eq!(v1, again, "the same trait, built twice");
    assert_eq!(v1.service, "Tickets");
    assert_ne!(v1.hash, v2.hash, "methods reordered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_another_version_is_refused_before_anything_is_ordered() {
    let cluster = LocalCluster::builder()
        .replicas(4)
        .workers(2)
        .start(|| v2::TicketsService(v2::Office::default()))
        .await
        .unwrap();
    // The current version works.
    let current = v2::TicketsClient::new(cluster.client().unwrap());
    assert_eq!(current.hold("hamlet".into()).await.unwrap(), 1);

    // An old client: refused with both fingerprints, not a `book` in disguise
    // (and not a timeout: it would wait an hour).
    let config = ClientConfig {
        timeout: std::time::Duration::from_secs(3600),
        ..ClientConfig::default()
    };
    let old = v1::TicketsClient::new(cluster.client_with(config).unwrap());
    let error = old.hold("hamlet".into()).await.unwrap_err();
    let ClientError::Refused(why) = &error else {
        panic!("{error}");
    };
    let ours = v2::TicketsRequest::fingerprint().unwrap().hash;
    let theirs = v1::TicketsRequest::fingerprint().unwrap().hash;
    assert!(why.contains("`Tickets`"), "{why}");
    assert!(why.contains(&format!("{ours:016x}")), "{why}");
    assert!(why.contains(&format!("{theirs:016x}")), "{why}");
    assert_eq!(
        current.hold("hamlet".into()).await.unwrap(),
        2,
        "nothing of the old client's was executed"
    );
    let refused: u64 = cluster
        .replicas()
        .map(|node| {
            node.metrics()
                .mismatched_clients
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    assert!(refused >= 3, "{refused}");
    cluster.shutdown().await;
}

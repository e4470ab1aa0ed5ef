//! What a client says when a call cannot complete.

mod support;

use std::time::Duration;

use support::{Put, Store};

#[tokio::test(flavor = "current_thread")]
async fn a_call_that_times_out_names_its_method_and_what_the_client_saw() {
    let mut cluster = cbase_net::LocalCluster::builder()
        .replicas(4)
        .start(Store::default)
        .await
        .unwrap();
    // Two of four replicas down: f = 1, so nothing commits.
    cluster.stop_replica(2).await;
    cluster.stop_replica(3).await;
    let client = cluster
        .client_with(cbase_net::ClientConfig {
            timeout: Duration::from_secs(2),
            ..cbase_net::ClientConfig::default()
        })
        .unwrap();
    let error = client.call::<Put, u64>(&Put(7)).await.unwrap_err();
    let cbase_core::ClientError::Timeout {
        method,
        after,
        seen,
    } = &error
    else {
        panic!("{error}");
    };
    assert_eq!(method, "put");
    assert_eq!(*after, Duration::from_secs(2));
    assert!(seen.contains("0 of 4 replicas replied"), "{seen}");
    assert!(seen.contains("not connected to replica(s) 2, 3"), "{seen}");
    let message = error.to_string();
    assert!(
        message.starts_with("put: no result within 2s; "),
        "{message}"
    );
    drop(client);
    cluster.shutdown().await;
}

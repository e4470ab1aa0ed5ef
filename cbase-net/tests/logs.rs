//! What a replica and a client tell the log, read back from a captured log:
//! a replica it needs being unreachable is said once per outage (not per
//! retry), and so is its return.
//!
//! One test per file: `tracing` caches whether a log line is wanted per
//! call site for the whole process, so a test without the capturing
//! subscriber running at the same time can make it miss lines.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;

use support::{Put, Store};

/// Log lines, as written.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn lines(&self, with: &[&str]) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|line| with.iter().all(|w| line.contains(w)))
            .map(str::to_owned)
            .collect()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Waits (up to a minute) until the log has a line with every one of
/// `with`.
async fn logged(log: &Captured, with: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while log.lines(with).is_empty() {
        assert!(Instant::now() < deadline, "never logged {with:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// One thread, so the connection tasks log to this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn a_client_warns_once_when_a_replica_is_unreachable_and_says_when_it_is_back() {
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut cluster = cbase_net::LocalCluster::builder()
        .replicas(4)
        .start(Store::default)
        .await
        .unwrap();
    logged(&log, &["replica started", "replica=3"]).await;
    cluster.stop_replica(3).await;
    let client = cluster.client().unwrap();
    let client_says = |what: &'static str| [what, "by=client"];
    // The others still answer.
    let _: u64 = client.call(&Put(1)).await.unwrap();
    logged(&log, &client_says("cannot reach replica 3")).await;
    // The client keeps retrying (about once a second): still one warning.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        log.lines(&client_says("cannot reach replica 3")).len(),
        1,
        "{:?}",
        log.lines(&["cannot reach"])
    );
    cluster.restart_replica(3, Store::default()).await.unwrap();
    logged(&log, &client_says("replica 3 is reachable again")).await;
    drop(client);
    cluster.shutdown().await;
}

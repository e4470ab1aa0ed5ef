//! A replica started from files serves its metrics in the Prometheus format
//! on the address given at start; scraped here as Prometheus would.

mod ports;
mod support;

use std::time::{Duration, Instant};

use cbase_net::config::generate_cluster;
use cbase_net::deploy::{ReplicaOptions, client_from_file, start_replica};
use ports::free_ports;
use support::{Put, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The response to `GET path`: status line and body.
async fn get(port: u16, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The value of the sample whose line starts with `series` (name and
/// labels, as the exposition writes them).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_serves_its_metrics_to_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let generated = generate_cluster(dir.path(), 4, "127.0.0.1", free_ports(4), false).unwrap();
    let metrics_port = free_ports(1);
    let mut nodes = Vec::new();
    for id in 0..4u32 {
        let options = ReplicaOptions {
            metrics: (id == 0).then(|| format!("127.0.0.1:{metrics_port}")),
            ..ReplicaOptions::default()
        };
        let key = &generated.key_paths[id as usize];
        let node = start_replica(&generated.config_path, id, key, options, Store::default())
            .await
            .unwrap();
        nodes.push(node);
    }
    let client = client_from_file(&generated.config_path, Default::default()).unwrap();
    for k in 0..20 {
        let _: u64 = client.call(&Put(k)).await.unwrap();
    }
    // Replica 0 may answer after the client has its f+1 replies.
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let (status, body) = get(metrics_port, "/metrics").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        if sample(&body, "cbase_requests_total{replica=\"0\"}") == Some(20.0) {
            break body;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (series, expected) in [
        ("cbase_requests_failed_total{replica=\"0\"}", Some(0.0)),
        (
            "cbase_request_duration_seconds_count{replica=\"0\"}",
            Some(20.0),
        ),
        (
            "cbase_request_duration_seconds_bucket{replica=\"0\",le=\"+Inf\"}",
            Some(20.0),
        ),
        (
            "cbase_refused_total{replica=\"0\",kind=\"bad_signature\"}",
            Some(0.0),
        ),
    ] {
        assert_eq!(sample(&body, series), expected, "{series} in\n{body}");
    }
    assert!(sample(&body, "cbase_executor_workers{replica=\"0\"}").unwrap() >= 1.0);
    // Replicas started from files start recovering, so their first start
    // costs a view change (see the book's Running a cluster).
    assert!(sample(&body, "cbase_view{replica=\"0\"}").is_some());
    // That view carried nothing, so entering it ends the recovery.
    loop {
        let (_, body) = get(metrics_port, "/metrics").await;
        if sample(&body, "cbase_recovering{replica=\"0\"}") == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(body.contains("# HELP cbase_view The view this replica is in.\n"));
    assert!(sample(&body, "cbase_delivered_seq{replica=\"0\"}").unwrap() >= 1.0);
    assert!(body.contains("# TYPE cbase_request_duration_seconds histogram"));
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    let (status, _) = get(metrics_port, "/elsewhere").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    drop(client);
    for node in nodes {
        node.shutdown().await;
    }
}

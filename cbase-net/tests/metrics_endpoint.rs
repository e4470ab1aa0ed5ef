//! What anyone who reaches a replica's metrics port can take of it.

use std::net::SocketAddr;

use cbase_net::transport::TransportConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

mod raw_cluster;

/// A connection to `to` from the loopback address `local` (each address of
/// 127.0.0.0/8 is a source of its own).
async fn connect_from(to: SocketAddr, local: [u8; 4]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((local, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// The whole response to one scrape from `local` ("" if the connection is
/// closed without one).
async fn scrape_from(to: SocketAddr, local: [u8; 4]) -> String {
    let mut stream = connect_from(to, local).await;
    let _ = stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: replica\r\n\r\n")
        .await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// The metrics endpoint answers at most 16 scrapes at once, and each
/// connection keeps its place until it sends a request or 5 s pass. One
/// party opens 16 connections from one address and sends nothing (again
/// every 5 s, to keep it so): every scrape from any other address is
/// closed at once, unanswered, for as long as it goes on. The replica port
/// bounds handshakes per source so that one party cannot take every
/// place alone; the metrics port has no such bound, so Prometheus, from
/// another address, is kept out by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_from_one_source_cannot_keep_other_scrapers_out() {
    let mut cluster = raw_cluster::start(&[0], TransportConfig::default()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    cluster.nodes[0].as_mut().unwrap().serve_metrics(listener);
    // Before: a scrape from 127.0.0.1 is answered.
    assert!(
        scrape_from(address, [127, 0, 0, 1])
            .await
            .starts_with("HTTP/1.1 200")
    );
    // 16 silent connections from 127.0.0.2, accepted before the scrape
    // below (the listener takes connections in the order they completed).
    let mut silent = Vec::new();
    for _ in 0..16 {
        silent.push(connect_from(address, [127, 0, 0, 2]).await);
    }
    let answer = scrape_from(address, [127, 0, 0, 1]).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "16 silent connections from 127.0.0.2 keep a scrape from 127.0.0.1 out: {answer:?}"
    );
    drop(silent);
    cluster.shutdown().await;
}

/// A request head that never ends (64 KiB of one header line, no blank
/// line), binary garbage, and several requests pipelined on one connection
/// each get at most one short answer and a closed connection, and the
/// endpoint goes on serving scrapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_garbage_and_pipelined_requests_get_one_answer_and_a_close() {
    let mut cluster = raw_cluster::start(&[0], TransportConfig::default()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    cluster.nodes[0].as_mut().unwrap().serve_metrics(listener);
    let endless = {
        let mut head = b"GET /metrics HTTP/1.1\r\nX-Long: ".to_vec();
        head.resize(64 << 10, b'a');
        head
    };
    let garbage: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let pipelined = b"GET /metrics HTTP/1.1\r\n\r\n".repeat(1000);
    for request in [endless, garbage, pipelined] {
        let mut stream = TcpStream::connect(address).await.unwrap();
        // The server may close before reading it all.
        let _ = stream.write_all(&request).await;
        let mut response = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            stream.read_to_end(&mut response),
        )
        .await
        .expect("the connection is closed");
        let text = String::from_utf8_lossy(&response);
        assert!(text.matches("HTTP/1.1 ").count() <= 1, "{text}");
        assert!(response.len() < 64 << 10, "{} bytes", response.len());
    }
    assert!(
        scrape_from(address, [127, 0, 0, 1])
            .await
            .starts_with("HTTP/1.1 200")
    );
    cluster.shutdown().await;
}

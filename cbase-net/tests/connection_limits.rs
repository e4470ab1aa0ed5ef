//! What anyone who reaches a replica's port can take of it: handshakes
//! under way and client places, in all and per source. Past each limit a
//! connection is closed or a client refused with a reply that says why,
//! and others still get in.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cbase_net::config::ReplicaId;
use cbase_net::crypto::SecretKey;
use cbase_net::message::{ClientMessage, ReplyMessage};
use cbase_net::transport::{
    self, FrameReader, FrameWriter, Identity, TransportConfig, TransportError,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

mod raw_cluster;

use raw_cluster::*;

/// A client session with `key`'s identity to replica `to` over `stream`.
async fn client_session(
    cluster: &Cluster,
    stream: TcpStream,
    to: ReplicaId,
    key: SecretKey,
) -> Result<(FrameReader, FrameWriter), TransportError> {
    let session = transport::connect(
        stream,
        &Identity::client(key),
        to,
        &cluster.config,
        &TransportConfig::default(),
    )
    .await?;
    Ok(session.split())
}

/// The next answer on a session.
async fn next_answer(reader: &mut FrameReader) -> ReplyMessage {
    tokio::time::timeout(Duration::from_secs(20), reader.recv_value())
        .await
        .expect("an answer in time")
        .expect("a frame")
}

/// Asks for the replica's status; its answer (or refusal).
async fn ask_status(reader: &mut FrameReader, writer: &mut FrameWriter) -> ReplyMessage {
    writer.send_value(&ClientMessage::Status).await.unwrap();
    writer.flush().await.unwrap();
    next_answer(reader).await
}

/// Asserts that the replica closes `stream` without a word, long before a
/// handshake could time out.
async fn assert_closed_on_accept(mut stream: TcpStream) {
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut sink))
        .await
        .expect("closed long before its handshake could time out");
    assert!(read.is_err() || sink.is_empty(), "{read:?} {sink:?}");
}

/// The first answer on a fresh client connection to replica `to`, without
/// asking anything.
async fn first_answer(cluster: &Cluster, to: ReplicaId, key: SecretKey) -> ReplyMessage {
    let stream = TcpStream::connect(cluster.address(to)).await.unwrap();
    let (mut reader, _writer) = client_session(cluster, stream, to, key).await.unwrap();
    next_answer(&mut reader).await
}

/// Anyone can be a client, so the clients a replica serves at once are
/// bounded: past `max_client_connections` a new client is told why and
/// closed. A client's new connection takes the place of its earlier one
/// (which is told so and closed), so a client that reconnects is never
/// refused for its own stale connection, and one client cannot hold many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_past_the_connection_limit_are_refused_and_a_reconnecting_client_replaces_itself() {
    let two = TransportConfig {
        max_client_connections: 2,
        ..TransportConfig::default()
    };
    let cluster = start(&[0, 1, 2, 3], two).await;
    let mut first = RawClient::connect(&cluster, &[0], SecretKey::from_seed([71; 32])).await;
    let _second = RawClient::connect(&cluster, &[0], SecretKey::from_seed([72; 32])).await;
    match first_answer(&cluster, 0, SecretKey::from_seed([73; 32])).await {
        ReplyMessage::Refused(why) => assert!(why.contains("max_client_connections"), "{why}"),
        other => panic!("a third client is refused, not answered {other:?}"),
    }
    assert_eq!(
        cluster
            .node(0)
            .metrics()
            .clients_over_limit
            .load(Ordering::Relaxed),
        1
    );
    // The first client connects again: its new connection is served, and
    // the old one is told it was replaced.
    let mut again = RawClient::connect(&cluster, &[0], SecretKey::from_seed([71; 32])).await;
    let (reader, _) = &mut first.sessions[0];
    loop {
        match next_answer(reader).await {
            ReplyMessage::Refused(why) => {
                assert!(why.contains("newer connection"), "{why}");
                break;
            }
            ReplyMessage::Status(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    let add = again.batch(vec![(0, 1, Op::Add { key: 1, by: 1 })]);
    again.send(0, &add).await;
    assert_eq!(again.reply(0, 0, 1).await, Ok(1));
    cluster.shutdown().await;
}

/// Anyone who reaches a replica's port can start a handshake, and each
/// holds the replica's memory until it ends: past `max_handshakes` under
/// way, a connection is closed on accept. Once the silent ones go, the
/// replica takes clients again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_handshakes_under_way_are_closed_on_accept() {
    let few = TransportConfig {
        max_handshakes: 2,
        // The silent connections below would hold their places this long.
        handshake_timeout: Duration::from_secs(120),
        ..TransportConfig::default()
    };
    // Replica 0 alone: no other replica's connection takes a place.
    let cluster = start(&[0], few).await;
    let silent = [
        TcpStream::connect(cluster.address(0)).await.unwrap(),
        TcpStream::connect(cluster.address(0)).await.unwrap(),
    ];
    // Accepted in order: the silent ones hold both places, so this one is
    // closed without a word.
    assert_closed_on_accept(TcpStream::connect(cluster.address(0)).await.unwrap()).await;
    assert_eq!(
        cluster
            .node(0)
            .metrics()
            .handshakes_over_limit
            .load(Ordering::Relaxed),
        1
    );
    drop(silent);
    // Their handshakes end as they close; then a client gets in (retrying
    // until replica 0 has seen them go) and is answered.
    let key = SecretKey::from_seed([81; 32]);
    let (mut reader, mut writer) = loop {
        let stream = TcpStream::connect(cluster.address(0)).await.unwrap();
        match client_session(&cluster, stream, 0, key.clone()).await {
            Ok(session) => break session,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let answer = ask_status(&mut reader, &mut writer).await;
    assert!(matches!(answer, ReplyMessage::Status(_)), "{answer:?}");
    cluster.shutdown().await;
}

/// A party that opens client connections and leaves them open cannot keep
/// new clients out: when every place is taken, the connection idle longest
/// makes room once it has been idle for `evict_idle_clients_after` (here
/// at once), and is told why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_makes_room_for_a_new_one_when_every_place_is_taken() {
    let one = TransportConfig {
        max_client_connections: 1,
        evict_idle_clients_after: Duration::ZERO,
        ..TransportConfig::default()
    };
    let cluster = start(&[0, 1, 2, 3], one).await;
    let mut idle = RawClient::connect(&cluster, &[0], SecretKey::from_seed([91; 32])).await;
    let mut newcomer = RawClient::connect(&cluster, &[0], SecretKey::from_seed([92; 32])).await;
    let (reader, _) = &mut idle.sessions[0];
    match next_answer(reader).await {
        ReplyMessage::Refused(why) => assert!(why.contains("idle"), "{why}"),
        other => panic!("the idle client is told it made room, not {other:?}"),
    }
    let add = newcomer.batch(vec![(0, 1, Op::Add { key: 1, by: 1 })]);
    newcomer.send(0, &add).await;
    assert_eq!(newcomer.reply(0, 0, 1).await, Ok(1));
    cluster.shutdown().await;
}

/// A stream to replica `to` of `cluster` from the loopback address `local`
/// (any of 127.0.0.0/8 reaches the replica on Linux, and each is a source
/// of its own).
async fn connect_from(cluster: &Cluster, to: ReplicaId, local: [u8; 4]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((local, 0)))
        .expect("a loopback address to bind");
    let address: SocketAddr = cluster.address(to).parse().expect("an IP address and port");
    socket.connect(address).await.unwrap()
}

/// A client's first answer from replica `to`, over a connection from
/// `local`, after asking its status.
async fn status_from(
    cluster: &Cluster,
    to: ReplicaId,
    local: [u8; 4],
    key: SecretKey,
) -> ReplyMessage {
    let stream = connect_from(cluster, to, local).await;
    let (mut reader, mut writer) = client_session(cluster, stream, to, key)
        .await
        .expect("a handshake");
    ask_status(&mut reader, &mut writer).await
}

/// One party starting handshakes from one address cannot take every
/// handshake place: past `max_handshakes_per_source` from its source, its
/// connections are closed on accept, and a client from another address
/// still gets in at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_from_one_source_leave_handshake_places_to_others() {
    let few = TransportConfig {
        max_handshakes_per_source: 2,
        handshake_timeout: Duration::from_secs(120),
        ..TransportConfig::default()
    };
    let cluster = start(&[0], few).await;
    let _silent = [
        connect_from(&cluster, 0, [127, 0, 0, 2]).await,
        connect_from(&cluster, 0, [127, 0, 0, 2]).await,
    ];
    assert_closed_on_accept(connect_from(&cluster, 0, [127, 0, 0, 2]).await).await;
    assert_eq!(
        cluster
            .node(0)
            .metrics()
            .handshakes_over_limit
            .load(Ordering::Relaxed),
        1
    );
    let answer = status_from(&cluster, 0, [127, 0, 0, 1], SecretKey::from_seed([101; 32])).await;
    assert!(matches!(answer, ReplyMessage::Status(_)), "{answer:?}");
    cluster.shutdown().await;
}

/// Without a list of clients, one party connecting clients from one
/// address fills only that source's places: past
/// `max_clients_per_source`, its next client is refused with a reply that
/// names the limit, and a client from another address is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_from_one_source_past_its_limit_are_refused_and_other_sources_are_served() {
    let two = TransportConfig {
        max_clients_per_source: 2,
        ..TransportConfig::default()
    };
    let cluster = start(&[0], two).await;
    // Two clients from 127.0.0.3, their sessions held open.
    let mut held = Vec::new();
    for seed in [113u8, 114] {
        let stream = connect_from(&cluster, 0, [127, 0, 0, 3]).await;
        let (mut reader, mut writer) =
            client_session(&cluster, stream, 0, SecretKey::from_seed([seed; 32]))
                .await
                .expect("a handshake");
        let answer = ask_status(&mut reader, &mut writer).await;
        assert!(matches!(answer, ReplyMessage::Status(_)), "{answer:?}");
        held.push((reader, writer));
    }
    match status_from(&cluster, 0, [127, 0, 0, 3], SecretKey::from_seed([115; 32])).await {
        ReplyMessage::Refused(why) => {
            assert!(why.contains("max_clients_per_source"), "{why}");
            assert!(why.contains("127.0.0.3"), "{why}");
        }
        other => panic!("a third client from the source is refused, not answered {other:?}"),
    }
    let answer = status_from(&cluster, 0, [127, 0, 0, 4], SecretKey::from_seed([116; 32])).await;
    assert!(matches!(answer, ReplyMessage::Status(_)), "{answer:?}");
    assert_eq!(
        cluster
            .node(0)
            .metrics()
            .clients_over_limit
            .load(Ordering::Relaxed),
        1
    );
    cluster.shutdown().await;
}

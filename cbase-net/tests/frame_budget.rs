//! What one party can take of the frame budget that every client's large
//! frames share (`TransportConfig::client_frame_budget`).

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use cbase_net::crypto::SecretKey;
use cbase_net::message::{ClientMessage, ReadRequest, ReplyMessage};
use cbase_net::transport::{self, FrameReader, FrameWriter, Identity, TransportConfig};
use tokio::net::TcpStream;

mod raw_cluster;

use raw_cluster::{Cluster, start};

/// A stream to replica 0 from the loopback address `local` (each address
/// of 127.0.0.0/8 is a source of its own).
async fn connect_from(cluster: &Cluster, local: [u8; 4]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((local, 0))).unwrap();
    socket
        .connect(cluster.address(0).parse().unwrap())
        .await
        .unwrap()
}

async fn session(
    cluster: &Cluster,
    stream: TcpStream,
    key: SecretKey,
) -> (FrameReader, FrameWriter) {
    transport::connect(
        stream,
        &Identity::client(key),
        0,
        &cluster.config,
        &TransportConfig::default(),
    )
    .await
    .expect("a handshake")
    .split()
}

/// Sends a read of `bytes` bytes (one frame larger than `FREE_FRAME`) and
/// waits, up to `within`, for the replica's answer to it.
async fn large_read_answered(
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
    bytes: usize,
    within: Duration,
) -> bool {
    let reads = ClientMessage::Reads(vec![ReadRequest {
        id: 1,
        operation: vec![7; bytes],
    }]);
    writer.send_value(&reads).await.unwrap();
    writer.flush().await.unwrap();
    match tokio::time::timeout(within, reader.recv_value::<ReplyMessage>()).await {
        Ok(answer) => {
            let answer = answer.expect("a frame");
            assert!(matches!(answer, ReplyMessage::Reads(_)), "{answer:?}");
            true
        }
        Err(_) => false,
    }
}

/// Sixteen clients from one address each complete a handshake and send
/// only the 4-byte length prefix of a `max_frame` frame (16 MiB), nothing
/// more. Each prefix takes 16 MiB less 64 KiB from the 256 MiB
/// `client_frame_budget` at once, before any byte of the frame arrives,
/// and keeps it for as long as the connection stays open: there is no
/// deadline for finishing a frame, and the connections are evicted only
/// when the replica runs out of client places. So for 64 bytes sent, one
/// source holds the whole budget and every other client's frame larger
/// than 64 KiB (here a 2 MiB read, well under `max_batch_bytes`-sized
/// requests) waits for good. A source's share of the budget should be
/// bounded (or an unfinished frame should lose its share in time), so a
/// client from another address is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_prefixes_from_one_source_cannot_hold_the_client_frame_budget_for_good() {
    const LARGE: usize = 2 << 20;
    let transport = TransportConfig::default();
    let cluster = start(&[0], transport.clone()).await;
    // Before: another address's large read is answered.
    let stream = connect_from(&cluster, [127, 0, 0, 1]).await;
    let (mut reader, mut writer) = session(&cluster, stream, SecretKey::from_seed([200; 32])).await;
    assert!(
        large_read_answered(&mut reader, &mut writer, LARGE, Duration::from_secs(60)).await,
        "a large read is answered with nobody holding the budget"
    );
    // The attack: sixteen clients from 127.0.0.2, each a length prefix.
    let prefix = u32::try_from(transport.max_frame).unwrap().to_be_bytes();
    let mut held = Vec::new();
    for seed in 0..16u8 {
        let stream = connect_from(&cluster, [127, 0, 0, 2]).await;
        // A second handle on the socket, to write raw bytes after the
        // handshake.
        let std_stream = stream.into_std().unwrap();
        let mut raw = std_stream.try_clone().unwrap();
        let stream = TcpStream::from_std(std_stream).unwrap();
        let (reader, writer) = session(&cluster, stream, SecretKey::from_seed([seed; 32])).await;
        raw.write_all(&prefix).unwrap();
        held.push((raw, reader, writer));
    }
    // After: the same large read from the other address, asked anew on a
    // fresh connection, is not answered.
    let stream = connect_from(&cluster, [127, 0, 0, 1]).await;
    let (mut reader, mut writer) = session(&cluster, stream, SecretKey::from_seed([201; 32])).await;
    assert!(
        large_read_answered(&mut reader, &mut writer, LARGE, Duration::from_secs(30)).await,
        "16 length prefixes from 127.0.0.2 (64 bytes) hold the client frame budget: a 2 MiB \
         frame from 127.0.0.1 was not read in 30 s"
    );
    drop(held);
    cluster.shutdown().await;
}

//! Transport tests on loopback: handshakes, frame round trips, and an
//! adversarial network (a tampering proxy, raw sockets, silent peers).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cbase_core::codec::encode;
use cbase_net::config::{ClusterConfig, ReplicaEntry, ReplicaId};
use cbase_net::crypto::SecretKey;
use cbase_net::transport::{
    self, FrameReader, FrameWriter, Identity, PROTOCOL_VERSION, Role, Session, TransportConfig,
    TransportError,
};
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Every test finishes well within this, or fails.
const LIMIT: Duration = Duration::from_secs(20);

async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("test did not finish in time")
}

fn replica_key(id: ReplicaId) -> SecretKey {
    SecretKey::from_seed([id as u8 + 1; 32])
}

/// A 4-replica cluster whose keys come from fixed seeds.
fn cluster() -> ClusterConfig {
    ClusterConfig {
        f: 1,
        replicas: (0..4)
            .map(|id| ReplicaEntry {
                id,
                address: format!("127.0.0.1:{}", 7001 + id),
                public_key: replica_key(id).public(),
            })
            .collect(),
        clients: None,
    }
}

fn replica(id: ReplicaId) -> Identity {
    Identity::replica(&cluster(), id, replica_key(id)).expect("identity")
}

/// Binds a loopback listener and accepts one connection as `me`.
async fn serve(
    me: Identity,
    config: TransportConfig,
) -> (SocketAddr, JoinHandle<Result<Session, TransportError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await?;
        transport::accept(stream, &me, &cluster(), &config).await
    });
    (addr, task)
}

async fn dial(
    addr: SocketAddr,
    me: &Identity,
    expect: ReplicaId,
    config: &TransportConfig,
) -> Result<Session, TransportError> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    transport::connect(stream, me, expect, &cluster(), config).await
}

/// Connects `client` to a server `server` and returns (client side, server side).
async fn pair(client: Identity, server: Identity, expect: ReplicaId) -> (Session, Session) {
    let config = TransportConfig::default();
    let (addr, task) = serve(server, config.clone()).await;
    let client_side = dial(addr, &client, expect, &config).await.expect("connect");
    let server_side = task.await.expect("join").expect("accept");
    (client_side, server_side)
}

fn payloads() -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| i.to_be_bytes().repeat((i % 50) as usize))
        .collect();
    all.push(Vec::new());
    all.push((0..1024 * 1024).map(|i| (i % 251) as u8).collect());
    all.push(b"last".to_vec());
    all
}

/// Sends `payloads` on `writer` while `reader` receives them.
async fn stream_through(mut writer: FrameWriter, mut reader: FrameReader) {
    let sent = payloads();
    let expected = sent.clone();
    let sender = tokio::spawn(async move {
        for payload in &sent {
            writer.send(payload).await.expect("send");
        }
        writer.flush().await.expect("flush");
        writer
    });
    for (i, want) in expected.iter().enumerate() {
        let got = reader.recv().await.expect("recv");
        assert_eq!(got.len(), want.len(), "frame {i}");
        assert!(got == *want, "frame {i} differs");
    }
    sender.await.expect("join");
}

#[tokio::test]
async fn replicas_handshake_and_exchange_frames_both_ways() {
    bounded(async {
        let (a, b) = pair(replica(0), replica(1), 1).await;
        assert_eq!(a.peer(), Role::Replica(1));
        assert_eq!(b.peer(), Role::Replica(0));
        let (a_reader, a_writer) = a.split();
        let (b_reader, b_writer) = b.split();
        tokio::join!(
            stream_through(a_writer, b_reader),
            stream_through(b_writer, a_reader)
        );
    })
    .await;
}

#[tokio::test]
async fn client_handshakes_with_a_replica() {
    bounded(async {
        let key = SecretKey::generate();
        let public = key.public();
        let (c, r) = pair(Identity::client(key), replica(3), 3).await;
        assert_eq!(c.peer(), Role::Replica(3));
        assert_eq!(r.peer(), Role::Client(public));
        let (c_reader, c_writer) = c.split();
        let (r_reader, r_writer) = r.split();
        tokio::join!(
            stream_through(c_writer, r_reader),
            stream_through(r_writer, c_reader)
        );
    })
    .await;
}

#[tokio::test]
async fn typed_values_and_clean_close() {
    bounded(async {
        let (a, b) = pair(replica(2), replica(0), 0).await;
        let (_a_reader, mut a_writer) = a.split();
        let (mut b_reader, _b_writer) = b.split();
        a_writer
            .send_value(&(7u64, String::from("seven")))
            .await
            .expect("send");
        a_writer.send(b"raw").await.expect("send");
        a_writer.shutdown().await.expect("shutdown");
        let value: (u64, String) = b_reader.recv_value().await.expect("recv");
        assert_eq!(value, (7, "seven".into()));
        assert_eq!(b_reader.recv().await.expect("recv"), b"raw");
        assert!(matches!(b_reader.recv().await, Err(TransportError::Closed)));
        assert!(matches!(b_reader.recv().await, Err(TransportError::Closed)));
    })
    .await;
}

#[tokio::test]
async fn sender_refuses_oversized_payloads_and_stays_usable() {
    bounded(async {
        let (a, b) = pair(replica(0), replica(1), 1).await;
        let (_a_reader, mut a_writer) = a.split();
        let (mut b_reader, _b_writer) = b.split();
        let max = TransportConfig::default().max_frame;
        let err = a_writer.send(&vec![0; max + 1]).await.unwrap_err();
        assert!(
            matches!(err, TransportError::Oversized { len, max: m } if len == max + 1 && m == max)
        );
        a_writer.send(b"fine").await.expect("send");
        a_writer.flush().await.expect("flush");
        assert_eq!(b_reader.recv().await.expect("recv"), b"fine");
    })
    .await;
}

#[tokio::test]
async fn replicas_running_other_agreement_settings_refuse_each_other() {
    bounded(async {
        use cbase_net::ProtocolConfig;
        let ours = ProtocolConfig::default();
        let theirs = ProtocolConfig {
            checkpoint_interval: ours.checkpoint_interval * 2,
            ..ProtocolConfig::default()
        };
        assert_ne!(ours.agreement_digest(), theirs.agreement_digest());
        // Local limits are each replica's own business.
        let roomier = ProtocolConfig {
            max_pending: ours.max_pending * 2,
            max_state_bytes: ours.max_state_bytes / 2,
            ..ProtocolConfig::default()
        };
        assert_eq!(ours.agreement_digest(), roomier.agreement_digest());

        let config = TransportConfig::default();
        let a = replica(0).with_settings(ours.agreement_digest());
        let b = replica(1).with_settings(theirs.agreement_digest());
        let (addr, task) = serve(a.clone(), config.clone()).await;
        let dialled = dial(addr, &b, 0, &config).await;
        let accepted = task.await.expect("join");
        for error in [dialled.err(), accepted.err()] {
            let error = error.expect("refused on both sides");
            assert!(
                matches!(error, TransportError::SettingsMismatch { .. }),
                "{error}"
            );
            assert!(error.to_string().contains("checkpoint_interval"), "{error}");
        }
        // The same settings connect, and clients are not asked for any.
        let same = replica(1).with_settings(ours.agreement_digest());
        let _ = pair(same, a.clone(), 0).await;
        let _ = pair(Identity::client(SecretKey::generate()), a, 0).await;
    })
    .await;
}

#[tokio::test]
async fn replica_without_its_configured_key_is_refused() {
    bounded(async {
        let impostor = Identity {
            role: Role::Replica(2),
            key: SecretKey::generate(),
            settings: [0; 32],
        };
        let config = TransportConfig::default();
        let (addr, task) = serve(replica(0), config.clone()).await;
        let client_side = dial(addr, &impostor, 0, &config).await;
        let server_side = task.await.expect("join");
        assert!(
            matches!(server_side, Err(TransportError::BadSignature)),
            "{server_side:?}"
        );
        // The impostor learns during connect, not at its first recv.
        assert!(
            matches!(
                client_side,
                Err(TransportError::Handshake(_) | TransportError::Io(_))
            ),
            "{client_side:?}"
        );

        // Holding another replica's key is no better.
        let impostor = Identity {
            role: Role::Replica(2),
            key: replica_key(3),
            settings: [0; 32],
        };
        let (addr, task) = serve(replica(0), config.clone()).await;
        let _ = dial(addr, &impostor, 0, &config).await;
        let server_side = task.await.expect("join");
        assert!(
            matches!(server_side, Err(TransportError::BadSignature)),
            "{server_side:?}"
        );

        // Identity::replica catches the mistake locally.
        assert!(Identity::replica(&cluster(), 2, replica_key(3)).is_err());
    })
    .await;
}

#[tokio::test]
async fn client_claiming_someone_elses_key_is_refused() {
    bounded(async {
        let impostor = Identity {
            role: Role::Client(SecretKey::generate().public()),
            key: SecretKey::generate(),
            settings: [0; 32],
        };
        let config = TransportConfig::default();
        let (addr, task) = serve(replica(1), config.clone()).await;
        let _ = dial(addr, &impostor, 1, &config).await;
        let server_side = task.await.expect("join");
        assert!(
            matches!(server_side, Err(TransportError::BadSignature)),
            "{server_side:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn responder_without_its_configured_key_is_refused() {
    bounded(async {
        let impostor = Identity {
            role: Role::Replica(1),
            key: SecretKey::generate(),
            settings: [0; 32],
        };
        let config = TransportConfig::default();
        let (addr, _task) = serve(impostor, config.clone()).await;
        let result = dial(addr, &replica(0), 1, &config).await;
        assert!(
            matches!(result, Err(TransportError::BadSignature)),
            "{result:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn reaching_the_wrong_replica_is_refused() {
    bounded(async {
        let config = TransportConfig::default();
        let (addr, _task) = serve(replica(1), config.clone()).await;
        let result = dial(addr, &replica(0), 2, &config).await;
        match result {
            Err(TransportError::WrongPeer { expected, found }) => {
                assert_eq!(expected, 2);
                assert_eq!(found, Role::Replica(1));
            }
            other => panic!("expected WrongPeer, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn unknown_replicas_are_refused() {
    bounded(async {
        let config = TransportConfig::default();
        let stream = TcpStream::connect(serve(replica(1), config.clone()).await.0)
            .await
            .expect("connect");
        let result = transport::connect(stream, &replica(0), 9, &cluster(), &config).await;
        assert!(
            matches!(result, Err(TransportError::UnknownReplica(9))),
            "{result:?}"
        );

        let stranger = Identity {
            role: Role::Replica(9),
            key: SecretKey::generate(),
            settings: [0; 32],
        };
        let (addr, task) = serve(replica(1), config.clone()).await;
        let _ = dial(addr, &stranger, 1, &config).await;
        let server_side = task.await.expect("join");
        assert!(
            matches!(server_side, Err(TransportError::UnknownReplica(9))),
            "{server_side:?}"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------
// A man in the middle: a proxy that forwards the handshake untouched and hands
// every later client->server frame to a tampering function.

/// Maps (frame index, raw frame bytes) to the raw bytes to forward instead.
type Tamper = Box<dyn FnMut(usize, Vec<u8>) -> Vec<Vec<u8>> + Send>;

fn untouched() -> Tamper {
    Box::new(|_, frame| vec![frame])
}

async fn read_frame(from: &mut OwnedReadHalf, trailer: usize) -> Option<Vec<u8>> {
    let mut header = [0u8; 4];
    from.read_exact(&mut header).await.ok()?;
    let len = u32::from_be_bytes(header) as usize;
    let mut frame = header.to_vec();
    frame.resize(4 + len + trailer, 0);
    from.read_exact(&mut frame[4..]).await.ok()?;
    Some(frame)
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut tamper: Tamper, dribble: bool) {
    // Hello and Auth: forwarded verbatim.
    for _ in 0..2 {
        let Some(message) = read_frame(&mut from, 0).await else {
            return;
        };
        if to.write_all(&message).await.is_err() {
            return;
        }
    }
    let mut index = 0;
    while let Some(frame) = read_frame(&mut from, 32).await {
        for out in tamper(index, frame) {
            if dribble {
                for chunk in out.chunks(16 * 1024) {
                    if to.write_all(chunk).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            } else if to.write_all(&out).await.is_err() {
                return;
            }
        }
        index += 1;
    }
    let _ = to.shutdown().await;
}

/// A proxy in front of `upstream` for one connection.
async fn proxy(upstream: SocketAddr, to_server: Tamper, dribble: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let Ok(server) = TcpStream::connect(upstream).await else {
            return;
        };
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        tokio::spawn(pump(client_read, server_write, to_server, dribble));
        tokio::spawn(pump(server_read, client_write, untouched(), false));
    });
    addr
}

/// Replica 0 connected to replica 1 through a proxy tampering with 0 -> 1.
struct Tampered {
    writer: FrameWriter,
    reader: FrameReader,
    _rest: (FrameReader, FrameWriter),
}

async fn tampered(to_server: Tamper, dribble: bool) -> Tampered {
    let config = TransportConfig::default();
    let (server_addr, task) = serve(replica(1), config.clone()).await;
    let addr = proxy(server_addr, to_server, dribble).await;
    let client = dial(addr, &replica(0), 1, &config).await.expect("connect");
    let server = task.await.expect("join").expect("accept");
    let (client_reader, writer) = client.split();
    let (reader, server_writer) = server.split();
    Tampered {
        writer,
        reader,
        _rest: (client_reader, server_writer),
    }
}

impl Tampered {
    async fn send(&mut self, payloads: &[&[u8]]) {
        for payload in payloads {
            self.writer.send(payload).await.expect("send");
        }
        self.writer.flush().await.expect("flush");
    }
}

#[tokio::test]
async fn the_proxy_alone_changes_nothing() {
    bounded(async {
        let mut t = tampered(untouched(), false).await;
        t.send(&[b"zero", b"one"]).await;
        assert_eq!(t.reader.recv().await.expect("recv"), b"zero");
        assert_eq!(t.reader.recv().await.expect("recv"), b"one");
    })
    .await;
}

#[tokio::test]
async fn flipped_payload_bit_fails_the_mac() {
    bounded(async {
        let mut t = tampered(
            Box::new(|_, mut frame| {
                frame[5] ^= 0x10;
                vec![frame]
            }),
            false,
        )
        .await;
        t.send(&[b"payload"]).await;
        assert!(matches!(t.reader.recv().await, Err(TransportError::BadMac)));
        // The reader is unusable afterwards.
        assert!(matches!(t.reader.recv().await, Err(TransportError::Closed)));
    })
    .await;
}

#[tokio::test]
async fn flipped_mac_bit_fails_the_mac() {
    bounded(async {
        let mut t = tampered(
            Box::new(|_, mut frame| {
                let last = frame.len() - 1;
                frame[last] ^= 0x01;
                vec![frame]
            }),
            false,
        )
        .await;
        t.send(&[b"payload"]).await;
        assert!(matches!(t.reader.recv().await, Err(TransportError::BadMac)));
    })
    .await;
}

#[tokio::test]
async fn replayed_frame_fails_the_mac() {
    bounded(async {
        let mut t = tampered(
            Box::new(|index, frame| {
                if index == 0 {
                    vec![frame.clone(), frame]
                } else {
                    vec![frame]
                }
            }),
            false,
        )
        .await;
        t.send(&[b"transfer 10 coins", b"next"]).await;
        assert_eq!(
            t.reader.recv().await.expect("original"),
            b"transfer 10 coins"
        );
        assert!(matches!(t.reader.recv().await, Err(TransportError::BadMac)));
    })
    .await;
}

#[tokio::test]
async fn frame_replayed_into_another_session_fails_the_mac() {
    bounded(async {
        let captured: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let store = Arc::clone(&captured);
        let mut first = tampered(
            Box::new(move |_, frame| {
                store.lock().expect("lock").push(frame.clone());
                vec![frame]
            }),
            false,
        )
        .await;
        first.send(&[b"transfer 10 coins"]).await;
        assert_eq!(
            first.reader.recv().await.expect("recv"),
            b"transfer 10 coins"
        );
        let old = captured.lock().expect("lock")[0].clone();

        // Same peers, same frame counter (0), same payload: new session keys.
        let mut second = tampered(Box::new(move |_, _| vec![old.clone()]), false).await;
        second.send(&[b"transfer 10 coins"]).await;
        assert!(matches!(
            second.reader.recv().await,
            Err(TransportError::BadMac)
        ));
    })
    .await;
}

#[tokio::test]
async fn reordered_dropped_and_injected_frames_fail_the_mac() {
    bounded(async {
        // Reordered: frame 1 delivered before frame 0.
        let mut held = None;
        let mut t = tampered(
            Box::new(move |index, frame| match index {
                0 => {
                    held = Some(frame);
                    vec![]
                }
                1 => vec![frame, held.take().unwrap_or_default()],
                _ => vec![frame],
            }),
            false,
        )
        .await;
        t.send(&[b"zero", b"one"]).await;
        assert!(matches!(t.reader.recv().await, Err(TransportError::BadMac)));

        // Dropped: frame 0 never arrives.
        let mut t = tampered(
            Box::new(|index, frame| if index == 0 { vec![] } else { vec![frame] }),
            false,
        )
        .await;
        t.send(&[b"zero", b"one"]).await;
        assert!(matches!(t.reader.recv().await, Err(TransportError::BadMac)));

        // Injected: a well-formed frame with a made-up MAC after frame 0.
        let mut t = tampered(
            Box::new(|index, frame| {
                if index == 0 {
                    let mut forged = 5u32.to_be_bytes().to_vec();
                    forged.extend_from_slice(b"forge");
                    forged.extend_from_slice(&[0xAB; 32]);
                    vec![frame, forged]
                } else {
                    vec![frame]
                }
            }),
            false,
        )
        .await;
        t.send(&[b"zero", b"one"]).await;
        assert_eq!(t.reader.recv().await.expect("recv"), b"zero");
        assert!(matches!(t.reader.recv().await, Err(TransportError::BadMac)));
    })
    .await;
}

#[tokio::test]
async fn oversized_length_prefix_is_refused_at_once() {
    bounded(async {
        let mut t = tampered(
            Box::new(|_, _| vec![u32::MAX.to_be_bytes().to_vec()]),
            false,
        )
        .await;
        t.send(&[b"anything"]).await;
        let started = Instant::now();
        let result = t.reader.recv().await;
        assert!(started.elapsed() < Duration::from_secs(1));
        let max = TransportConfig::default().max_frame;
        match result {
            Err(TransportError::Oversized { len, max: m }) => {
                assert_eq!(len, u32::MAX as usize);
                assert_eq!(m, max);
            }
            other => panic!("expected Oversized, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn recv_is_cancel_safe() {
    bounded(async {
        let mut t = tampered(untouched(), true).await;
        let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 253) as u8).collect();
        t.send(&[&big, b"after"]).await;
        let mut cancelled = 0;
        let got = loop {
            match tokio::time::timeout(Duration::from_millis(1), t.reader.recv()).await {
                Ok(result) => break result.expect("recv"),
                Err(_) => cancelled += 1,
            }
        };
        assert!(cancelled > 0, "the frame should have arrived in pieces");
        assert!(got == big);
        assert_eq!(t.reader.recv().await.expect("recv"), b"after");
    })
    .await;
}

// ---------------------------------------------------------------------------
// Peers that do not speak the protocol.

/// A replica accepting one connection, with a short handshake timeout.
async fn short_server() -> (SocketAddr, JoinHandle<Result<Session, TransportError>>) {
    serve(
        replica(1),
        TransportConfig {
            handshake_timeout: Duration::from_millis(500),
            ..TransportConfig::default()
        },
    )
    .await
}

#[tokio::test]
async fn garbage_instead_of_a_hello_fails_the_handshake() {
    bounded(async {
        // Text: the "length" is huge.
        let (addr, task) = short_server().await;
        let mut raw = TcpStream::connect(addr).await.expect("connect");
        raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
        let result = task.await.expect("join");
        assert!(matches!(&result, Err(TransportError::Handshake(m)) if m.contains("handshake message of")), "{result:?}");

        // A small frame that is not a hello.
        let (addr, task) = short_server().await;
        let mut raw = TcpStream::connect(addr).await.expect("connect");
        raw.write_all(&[0, 0, 0, 6, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa])
            .await
            .expect("write");
        let result = task.await.expect("join");
        assert!(matches!(&result, Err(TransportError::Handshake(m)) if m.contains("malformed hello")), "{result:?}");

        // Closing early.
        let (addr, task) = short_server().await;
        let mut raw = TcpStream::connect(addr).await.expect("connect");
        raw.write_all(&[0, 0]).await.expect("write");
        drop(raw);
        let result = task.await.expect("join");
        assert!(matches!(&result, Err(TransportError::Handshake(m)) if m.contains("closed")), "{result:?}");

        // The initiator meets a garbage responder.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(&[0, 0, 0, 3, 1, 2, 3]).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        let result = dial(addr, &replica(0), 1, &TransportConfig::default()).await;
        assert!(matches!(result, Err(TransportError::Handshake(_))), "{result:?}");
    })
    .await;
}

/// Mirrors the transport's private hello message.
#[derive(Serialize)]
struct Hello {
    protocol_version: u16,
    role: Role,
    ephemeral: [u8; 32],
    nonce: [u8; 32],
    settings: [u8; 32],
}

/// Sends a hand-built hello (as replica 0) straight to `addr`.
async fn send_raw_hello(addr: SocketAddr, protocol_version: u16, ephemeral: [u8; 32]) -> TcpStream {
    let mut raw = TcpStream::connect(addr).await.expect("connect");
    let hello = encode(&Hello {
        protocol_version,
        role: Role::Replica(0),
        ephemeral,
        nonce: [0; 32],
        settings: [0; 32],
    })
    .expect("encode");
    let mut frame = (hello.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&hello);
    raw.write_all(&frame).await.expect("write");
    raw
}

#[tokio::test]
async fn protocol_version_mismatch_fails_the_handshake() {
    bounded(async {
        let (addr, task) = short_server().await;
        let _raw = send_raw_hello(addr, PROTOCOL_VERSION + 1, [9; 32]).await;
        let result = task.await.expect("join");
        assert!(
            matches!(&result, Err(TransportError::Handshake(m)) if m.contains(&format!("protocol version {}", PROTOCOL_VERSION + 1))),
            "{result:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn low_order_ephemeral_key_fails_the_handshake() {
    bounded(async {
        let (addr, task) = short_server().await;
        // The all-zero point: every shared secret is zero.
        let _raw = send_raw_hello(addr, PROTOCOL_VERSION, [0; 32]).await;
        let result = task.await.expect("join");
        assert!(
            matches!(&result, Err(TransportError::Handshake(m)) if m.contains("low order")),
            "{result:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn silent_peers_time_out() {
    bounded(async {
        let timeout = Duration::from_millis(300);
        let config = TransportConfig {
            handshake_timeout: timeout,
            ..TransportConfig::default()
        };

        // A responder that never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let holder = tokio::spawn(async move {
            let held = listener.accept().await;
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(held);
        });
        let started = Instant::now();
        let result = dial(addr, &replica(0), 1, &config).await;
        let elapsed = started.elapsed();
        assert!(matches!(result, Err(TransportError::Timeout)), "{result:?}");
        assert!(elapsed >= timeout && elapsed < timeout * 5, "{elapsed:?}");
        holder.abort();

        // An initiator that never speaks.
        let (addr, task) = serve(replica(1), config.clone()).await;
        let _silent = TcpStream::connect(addr).await.expect("connect");
        let started = Instant::now();
        let result = task.await.expect("join");
        let elapsed = started.elapsed();
        assert!(matches!(result, Err(TransportError::Timeout)), "{result:?}");
        assert!(elapsed < timeout * 5, "{elapsed:?}");
    })
    .await;
}

//! A 4-replica cluster started from known keys, attacked by hand-crafted
//! clients and a Byzantine replica: whatever they send is ignored and
//! counted, nothing crashes, and exactly-once holds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cbase_core::{ExecError, ExecutorBuilder, Table, codec};
use cbase_net::config::{ClusterConfig, ReplicaEntry};
use cbase_net::crypto::SecretKey;
use cbase_net::message::{
    ClientBatch, ClientMessage, ClientRequest, Commit, PrePrepare, Prepare, Proposal,
    ReplicaMessage, ReplyMessage, RequestBatch, domain, pre_prepare_header, prepare_header,
};
use cbase_net::protocol::ProtocolConfig;
use cbase_net::runtime::{NodeConfig, ReplicaNode};
use cbase_net::transport::{self, Identity, TransportConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod raw_cluster;

use raw_cluster::*;

async fn value_of(client: &mut RawClient, lane: u32, number: u64, key: u64) -> u64 {
    let batch = client.batch(vec![(lane, number, Op::Get { key })]);
    client.send(0, &batch).await;
    client.reply(0, lane, number).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_batch_runs_only_once_enough_replicas_have_it_and_signed_it_always_does() {
    let cluster = start(&[0, 1, 2, 3], TransportConfig::default()).await;
    let mut client =
        RawClient::connect(&cluster, &[0, 1, 2, 3], SecretKey::from_seed([56; 32])).await;
    let unsigned = |batch: ClientBatch| ClientBatch::unsigned(batch.batch);
    // Unsigned, to the primary alone: no backup could vouch for it, so the
    // primary holds it and proposes nothing.
    let lone = client.batch(vec![(1, 1, Op::Add { key: 5, by: 1 })]);
    client.send(0, &unsigned(lone.clone())).await;
    // Unsigned, to every replica: it runs.
    let everywhere = unsigned(client.batch(vec![(0, 1, Op::Add { key: 6, by: 1 })]));
    for to in 0..4 {
        client.send(to, &everywhere).await;
    }
    assert_eq!(client.reply(0, 0, 1).await, Ok(1));
    assert_eq!(
        value_of(&mut client, 2, 1, 5).await,
        0,
        "the lone batch did not run"
    );
    // The lone batch signed, as a client retransmits it: it runs.
    client.send(0, &lone).await;
    assert_eq!(client.reply(0, 1, 1).await, Ok(1));
    let stats = cluster.node(0).metrics().protocol.lock().clone();
    assert_eq!(stats.bad_signature, 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retransmitted_request_is_executed_once() {
    let cluster = start(&[0, 1, 2, 3], TransportConfig::default()).await;
    let mut client =
        RawClient::connect(&cluster, &[0, 1, 2, 3], SecretKey::from_seed([50; 32])).await;
    let add = client.batch(vec![(0, 1, Op::Add { key: 7, by: 5 })]);
    client.send(0, &add).await;
    assert_eq!(client.reply(0, 0, 1).await, Ok(5));
    // The same signed batch again: to the primary, then to everyone.
    client.send(0, &add).await;
    assert_eq!(
        client.reply(0, 0, 1).await,
        Ok(5),
        "answered from the reply cache"
    );
    for replica in 0..4 {
        client.send(replica, &add).await;
        assert_eq!(client.reply(replica, 0, 1).await, Ok(5));
    }
    // A Byzantine client reusing the number for another operation gets nothing executed.
    let reuse = client.batch(vec![(0, 1, Op::Add { key: 7, by: 100 })]);
    client.send(0, &reuse).await;
    assert_eq!(client.reply(0, 0, 1).await, Ok(5));
    assert_eq!(
        value_of(&mut client, 1, 1, 7).await,
        5,
        "executed exactly once"
    );
    let cached: u64 = (0..4)
        .map(|i| {
            cluster
                .node(i)
                .metrics()
                .cached_replies
                .load(Ordering::Relaxed)
        })
        .sum();
    // The primary had replied before each of the three later sends to it, so
    // those were answered from its cache; a backup may still have been
    // executing when its copy arrived (then it replies after executing).
    assert!(
        cached >= 3,
        "retransmissions were served from the cache ({cached})"
    );
    cluster.shutdown().await;
}

/// A client with a key of its own is the same caller across restarts, and
/// its requests are still executed exactly once: its numbers start from the
/// wall clock, above any it used before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_its_own_key_keeps_exactly_once_across_restarts() {
    let cluster = start(&[0, 1, 2, 3], TransportConfig::default()).await;
    let key = SecretKey::from_seed([52; 32]);
    let connect = || {
        let config = cbase_net::ClientConfig {
            key: Some(key.clone()),
            ..cbase_net::ClientConfig::default()
        };
        cbase_net::NetClient::connect(cluster.config.clone(), config).unwrap()
    };
    let first = connect();
    for expected in 1..=3 {
        let added: u64 = first.call(&Op::Add { key: 9, by: 1 }).await.unwrap();
        assert_eq!(added, expected);
    }
    drop(first);
    // The same identity again (a restarted process): its calls execute.
    let again = connect();
    let added: u64 = again.call(&Op::Add { key: 9, by: 1 }).await.unwrap();
    assert_eq!(added, 4, "executed, not taken for a retransmission");
    cluster.shutdown().await;
}

/// A request numbered below its lane's last (another client using the same
/// key, or a client whose clock went back) is never executed; a replica
/// that executed the lane's last answers why, so the client gets an error,
/// not a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_below_its_lanes_last_number_is_refused_not_executed() {
    let cluster = start(&[0, 1, 2, 3], TransportConfig::default()).await;
    let mut client =
        RawClient::connect(&cluster, &[0, 1, 2, 3], SecretKey::from_seed([53; 32])).await;
    let add = client.batch(vec![(0, 10, Op::Add { key: 4, by: 5 })]);
    client.send(0, &add).await;
    // Every replica executes it (and replies to this client's session).
    for replica in 0..4 {
        assert_eq!(client.reply(replica, 0, 10).await, Ok(5));
    }
    let older = client.batch(vec![(0, 3, Op::Add { key: 4, by: 100 })]);
    for replica in 0..4 {
        client.send(replica, &older).await;
        assert_eq!(
            client.reply(replica, 0, 3).await,
            Err(ExecError::Superseded {
                lane: 0,
                number: 3,
                last: 10
            })
        );
    }
    assert_eq!(value_of(&mut client, 1, 1, 4).await, 5, "never executed");
    cluster.shutdown().await;
}

/// A client may ask a replica for its status (`cbase::app`'s `status`).
/// One answer waits at most per connection: a client that floods queries
/// without reading holds no more of the replica's memory, and its requests
/// still go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_queries_are_answered_and_a_flood_of_them_is_harmless() {
    let cluster = start(&[0, 1, 2, 3], TransportConfig::default()).await;
    let mut client =
        RawClient::connect(&cluster, &[0, 1, 2, 3], SecretKey::from_seed([51; 32])).await;
    let add = client.batch(vec![(0, 1, Op::Add { key: 3, by: 2 })]);
    client.send(0, &add).await;
    assert_eq!(client.reply(0, 0, 1).await, Ok(2));
    {
        let (_, writer) = &mut client.sessions[1];
        for _ in 0..10_000 {
            writer.send_value(&ClientMessage::Status).await.unwrap();
        }
        writer.flush().await.unwrap();
    }
    let get = client.batch(vec![(1, 1, Op::Get { key: 3 })]);
    client.send(1, &get).await;
    let (reader, _) = &mut client.sessions[1];
    let (mut statuses, mut answered) = (0, false);
    while !answered || statuses == 0 {
        let message: ReplyMessage =
            tokio::time::timeout(Duration::from_secs(20), reader.recv_value())
                .await
                .expect("an answer in time")
                .expect("a valid frame");
        match message {
            ReplyMessage::Status(status) => {
                assert_eq!(status.replica, 1);
                assert_eq!(status.view, 0);
                statuses += 1;
            }
            ReplyMessage::Replies(replies) => {
                let reply = replies.iter().find(|r| r.lane == 1 && r.number == 1);
                if let Some(reply) = reply {
                    let value: Result<u64, ExecError> = codec::decode(&reply.result).unwrap();
                    assert_eq!(value, Ok(2));
                    answered = true;
                }
            }
            ReplyMessage::Refused(why) => panic!("refused: {why}"),
            ReplyMessage::Reads(answers) => panic!("answers to reads never sent: {answers:?}"),
        }
    }
    assert!(statuses <= 10_000);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_impersonation_and_oversized_frames_are_counted_and_survived() {
    let small_frames = TransportConfig {
        max_frame: 64 * 1024,
        ..TransportConfig::default()
    };
    let cluster = start(&[0, 1, 2, 3], small_frames).await;

    // Garbage instead of a handshake.
    let mut raw = TcpStream::connect(cluster.address(0)).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: cbase\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut sink)).await;

    // A client claiming to be replica 2 without its key.
    let stream = TcpStream::connect(cluster.address(0)).await.unwrap();
    let impostor = Identity {
        role: transport::Role::Replica(2),
        key: SecretKey::from_seed([77; 32]),
        settings: [0; 32],
    };
    assert!(
        transport::connect(
            stream,
            &impostor,
            0,
            &cluster.config,
            &TransportConfig::default()
        )
        .await
        .is_err()
    );

    // A frame over the replicas' 64 KiB limit.
    let mut big = RawClient::connect(&cluster, &[0], SecretKey::from_seed([51; 32])).await;
    let huge = big.batch(vec![(0, 1, Op::Get { key: 1 })]);
    let mut huge_frame = codec::encode(&ClientMessage::Requests(huge)).unwrap();
    huge_frame.resize(100 * 1024, 0);
    let (_, writer) = &mut big.sessions[0];
    let _ = writer.send(&huge_frame).await;
    let _ = writer.flush().await;

    // An authenticated frame that does not decode.
    let mut junk = RawClient::connect(&cluster, &[0], SecretKey::from_seed([52; 32])).await;
    let (_, writer) = &mut junk.sessions[0];
    writer.send(&[0xff; 40]).await.unwrap();
    writer.flush().await.unwrap();

    // A client relaying another client's signed batch.
    let victim = RawClient::connect(&cluster, &[0], SecretKey::from_seed([53; 32])).await;
    let stolen = victim.batch(vec![(0, 1, Op::Add { key: 9, by: 1 })]);
    let mut thief = RawClient::connect(&cluster, &[0], SecretKey::from_seed([54; 32])).await;
    thief.send(0, &stolen).await;

    let metrics = Arc::clone(cluster.node(0).metrics());
    for _ in 0..500 {
        if metrics.handshake_failures.load(Ordering::Relaxed) >= 2
            && metrics.bad_frames.load(Ordering::Relaxed) >= 1
            && metrics.malformed.load(Ordering::Relaxed) >= 1
            && metrics.impersonations.load(Ordering::Relaxed) >= 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        metrics.handshake_failures.load(Ordering::Relaxed) >= 2,
        "garbage and impostor"
    );
    assert_eq!(
        metrics.bad_frames.load(Ordering::Relaxed),
        1,
        "oversized frame"
    );
    assert_eq!(
        metrics.malformed.load(Ordering::Relaxed),
        1,
        "undecodable frame"
    );
    assert_eq!(
        metrics.impersonations.load(Ordering::Relaxed),
        1,
        "relayed batch"
    );

    // The cluster still serves an honest client, and the stolen batch did nothing.
    let mut honest =
        RawClient::connect(&cluster, &[0, 1, 2, 3], SecretKey::from_seed([55; 32])).await;
    let add = honest.batch(vec![(0, 1, Op::Add { key: 1, by: 1 })]);
    honest.send(0, &add).await;
    assert_eq!(honest.reply(0, 0, 1).await, Ok(1));
    assert_eq!(value_of(&mut honest, 0, 2, 9).await, 0);
    cluster.shutdown().await;
}

/// A proxy that passes the handshake through, then flips a bit in every
/// chunk from client to replica once `tamper` is set.
async fn tampering_proxy(upstream: String, tamper: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(upstream).await.unwrap();
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        });
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(read) = client_read.read(&mut buffer).await {
            if read == 0 {
                break;
            }
            if tamper.load(Ordering::SeqCst) {
                buffer[read - 1] ^= 0x01;
            }
            if server_write.write_all(&buffer[..read]).await.is_err() {
                break;
            }
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_mac_closes_the_connection_and_is_counted() {
    let cluster = start(&[0, 1, 2, 3], TransportConfig::default()).await;
    let tamper = Arc::new(AtomicBool::new(false));
    let proxy = tampering_proxy(cluster.address(0), Arc::clone(&tamper)).await;
    let key = SecretKey::from_seed([60; 32]);
    let stream = TcpStream::connect(proxy).await.unwrap();
    let session = transport::connect(
        stream,
        &Identity::client(key.clone()),
        0,
        &cluster.config,
        &TransportConfig::default(),
    )
    .await
    .unwrap();
    let (_, mut writer) = session.split();
    tamper.store(true, Ordering::SeqCst);
    let batch = ClientBatch::sign(
        RequestBatch {
            client: key.public(),
            requests: vec![ClientRequest {
                lane: 0,
                number: 1,
                operation: codec::encode(&Op::Add { key: 3, by: 1 }).unwrap(),
            }],
        },
        &key,
    );
    writer
        .send_value(&ClientMessage::Requests(batch))
        .await
        .unwrap();
    writer.flush().await.unwrap();
    let metrics = Arc::clone(cluster.node(0).metrics());
    for _ in 0..500 {
        if metrics.bad_frames.load(Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metrics.bad_frames.load(Ordering::Relaxed), 1);
    let mut honest =
        RawClient::connect(&cluster, &[0, 1, 2, 3], SecretKey::from_seed([61; 32])).await;
    assert_eq!(
        value_of(&mut honest, 0, 1, 3).await,
        0,
        "the forged request was never executed"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byzantine_replica_cannot_forge_or_crash_the_others() {
    // Replica 3 is "taken over": the attacker holds its real key.
    let cluster = start(&[0, 1, 2], TransportConfig::default()).await;
    let attacker = Identity {
        role: transport::Role::Replica(3),
        key: secret(3),
        // With its key it also has its configuration.
        settings: protocol(&TransportConfig::default()).agreement_digest(),
    };
    let mut sessions = Vec::new();
    for target in 0..3 {
        let stream = TcpStream::connect(cluster.address(target)).await.unwrap();
        let session = transport::connect(
            stream,
            &attacker,
            target,
            &cluster.config,
            &TransportConfig::default(),
        )
        .await
        .unwrap();
        sessions.push(session.split().1);
    }
    let client = SecretKey::from_seed([70; 32]);
    let batch = ClientBatch::sign(
        RequestBatch {
            client: client.public(),
            requests: vec![ClientRequest {
                lane: 0,
                number: 1,
                operation: codec::encode(&Op::Add { key: 4, by: 1000 }).unwrap(),
            }],
        },
        &client,
    );
    let proposal = Proposal {
        timestamp: 1,
        batches: vec![batch],
    };
    let digest = proposal.digest();
    // A pre-prepare signed by a backup's key, not the primary's.
    let signature = secret(3).sign(domain::PRE_PREPARE, &pre_prepare_header(0, 1, &digest));
    let fake_pre_prepare = ReplicaMessage::PrePrepare(PrePrepare {
        view: 0,
        seq: 1,
        digest,
        proposal: proposal.clone(),
        signature,
    });
    // A prepare claiming to come from replica 1.
    let signature = secret(3).sign(domain::PREPARE, &prepare_header(0, 1, &digest, 1));
    let forged_prepare = ReplicaMessage::Prepare(Prepare {
        view: 0,
        seq: 1,
        digest,
        replica: 1,
        signature,
    });
    // A prepare with a garbage signature, and commits for a slot with no proposal.
    let bad_signature = ReplicaMessage::Prepare(Prepare {
        view: 0,
        seq: 1,
        digest,
        replica: 3,
        signature: secret(9).sign(domain::PREPARE, b"nonsense"),
    });
    let commit = ReplicaMessage::Commit(Commit {
        view: 0,
        seq: 1,
        digest,
        replica: 3,
    });
    // Far beyond the window.
    let far = ReplicaMessage::Commit(Commit {
        view: 0,
        seq: 1 << 40,
        digest,
        replica: 3,
    });
    for writer in &mut sessions {
        for message in [
            &fake_pre_prepare,
            &forged_prepare,
            &bad_signature,
            &commit,
            &far,
        ] {
            writer.send_value(message).await.unwrap();
        }
        writer.flush().await.unwrap();
        // Then garbage, which closes the connection.
        writer.send(&[0xde, 0xad]).await.unwrap();
        writer.flush().await.unwrap();
    }
    for id in 0..3 {
        let metrics = Arc::clone(cluster.node(id).metrics());
        // The connection closes on the garbage before the protocol task has
        // necessarily counted the messages ahead of it: wait for both.
        let counted = || {
            let stats = metrics.protocol.lock().clone();
            metrics.malformed.load(Ordering::Relaxed) > 0
                && stats.wrong_sender >= 1
                && stats.bad_signature >= 2
                && stats.out_of_window >= 1
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !counted() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stats = metrics.protocol.lock().clone();
        assert_eq!(metrics.malformed.load(Ordering::Relaxed), 1, "replica {id}");
        assert!(stats.wrong_sender >= 1, "replica {id}: {stats:?}");
        assert!(stats.bad_signature >= 2, "replica {id}: {stats:?}");
        assert!(stats.out_of_window >= 1, "replica {id}: {stats:?}");
    }
    // The three correct replicas still agree (2f+1 = 3) and never ran the forged request.
    let mut honest = RawClient::connect(&cluster, &[0, 1, 2], SecretKey::from_seed([71; 32])).await;
    assert_eq!(value_of(&mut honest, 0, 1, 4).await, 0);
    cluster.shutdown().await;
}

/// A window whose view-change certificates could not fit a frame, or a
/// proposal limit a frame cannot carry, is refused at start, with the
/// numbers and what to change, instead of a cluster that could never complete
/// a view change or send a full proposal.
#[tokio::test]
async fn sizes_a_frame_cannot_carry_are_refused_at_start() {
    let small_frames = |protocol: ProtocolConfig| NodeConfig {
        id: 0,
        cluster: ClusterConfig {
            f: 1,
            replicas: (0..4u32)
                .map(|id| ReplicaEntry {
                    id,
                    address: format!("127.0.0.1:{}", 9100 + id),
                    public_key: secret(id as u8).public(),
                })
                .collect(),
            clients: None,
        },
        secret: secret(0),
        protocol,
        transport: TransportConfig {
            max_frame: 64 * 1024,
            ..TransportConfig::default()
        },
        executor: ExecutorBuilder::new().workers(1),
        recovering: false,
        restored: false,
        data_dir: None,
    };
    let refusal = |protocol| async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let service = Counter(Counts {
            counts: Table::new(),
        });
        ReplicaNode::start(small_frames(protocol), listener, service)
            .await
            .err()
            .expect("refused")
            .to_string()
    };
    // A window whose new-views would outgrow the frame.
    let message = refusal(ProtocolConfig {
        checkpoint_interval: 4,
        window: 4096,
        max_batch_bytes: 1024,
        ..ProtocolConfig::default()
    })
    .await;
    assert!(
        message.contains("frame limit of 65536 bytes") && message.contains("window"),
        "{message}"
    );
    // A full proposal larger than the frame.
    let message = refusal(ProtocolConfig {
        checkpoint_interval: 4,
        window: 16,
        ..ProtocolConfig::default()
    })
    .await;
    assert!(message.contains("max_batch_bytes"), "{message}");
}

/// A batch with more requests than any proposal may carry could never be
/// ordered: the replica refuses it at once with an error that says so,
/// instead of leaving the client to time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_more_requests_than_a_proposal_carries_is_refused_with_an_error() {
    let cluster = start(&[0, 1, 2, 3], TransportConfig::default()).await;
    let mut client = RawClient::connect(&cluster, &[0], SecretKey::from_seed([57; 32])).await;
    let limit = ProtocolConfig::default().max_batch_requests;
    let requests = (1..=limit as u64 + 1)
        .map(|number| (0, number, Op::Get { key: 1 }))
        .collect();
    let batch = client.batch(requests);
    client.send(0, &batch).await;
    assert_eq!(
        client.reply(0, 0, 1).await,
        Err(ExecError::TooManyRequests {
            requests: limit as u64 + 1,
            limit: limit as u64,
        })
    );
    assert_eq!(
        cluster
            .node(0)
            .metrics()
            .oversized_requests
            .load(Ordering::Relaxed),
        1
    );
    // As many as a proposal carries are fine.
    let requests = (1..=limit as u64)
        .map(|number| (1, number, Op::Get { key: 1 }))
        .collect();
    let batch = client.batch(requests);
    client.send(0, &batch).await;
    assert_eq!(client.reply(0, 1, limit as u64).await, Ok(0));
    cluster.shutdown().await;
}

/// A client that signs its batches with a key other than its own, over its
/// own connection, is faulty: each such batch checked on the protocol's
/// one thread would cost it a verification for nothing. The connection
/// checks it instead, tells the client why and closes; the protocol never
/// sees it, and the cluster goes on serving the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_a_forged_signature_is_cut_off_before_the_protocol() {
    let cluster = start(&[0, 1, 2, 3], TransportConfig::default()).await;
    let mut forger = RawClient::connect(&cluster, &[0], SecretKey::from_seed([61; 32])).await;
    let forged = ClientBatch::sign(
        RequestBatch {
            client: forger.key.public(),
            requests: vec![ClientRequest {
                lane: 0,
                number: 1,
                operation: codec::encode(&Op::Add { key: 3, by: 1 }).unwrap(),
            }],
        },
        &SecretKey::from_seed([62; 32]),
    );
    forger.send(0, &forged).await;
    let (reader, _) = &mut forger.sessions[0];
    let refusal: ReplyMessage = tokio::time::timeout(Duration::from_secs(20), reader.recv_value())
        .await
        .expect("an answer in time")
        .expect("a refusal");
    match refusal {
        ReplyMessage::Refused(why) => assert!(why.contains("signature"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let after: Result<ReplyMessage, _> =
        tokio::time::timeout(Duration::from_secs(20), reader.recv_value())
            .await
            .expect("the connection closes in time");
    assert!(after.is_err(), "the connection is closed, not {after:?}");

    let metrics = Arc::clone(cluster.node(0).metrics());
    assert_eq!(metrics.forged_batches.load(Ordering::Relaxed), 1);
    assert_eq!(
        metrics.protocol.lock().bad_signature,
        0,
        "the protocol never checked it"
    );
    // The forged batch did nothing, and an honest client is served.
    let mut honest =
        RawClient::connect(&cluster, &[0, 1, 2, 3], SecretKey::from_seed([63; 32])).await;
    let add = honest.batch(vec![(0, 1, Op::Add { key: 1, by: 1 })]);
    honest.send(0, &add).await;
    assert_eq!(honest.reply(0, 0, 1).await, Ok(1));
    assert_eq!(value_of(&mut honest, 0, 2, 3).await, 0);
    cluster.shutdown().await;
}

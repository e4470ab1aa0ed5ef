//! A `NetClient` against hand-driven replicas: each completes the real
//! handshake with its cluster key, then refuses or answers as a schedule
//! says, so that what faulty (or briefly overloaded) replicas do to a
//! correct client can be set up exactly.

#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cbase_core::{ExecError, codec};
use cbase_net::config::{ClusterConfig, ReplicaEntry, ReplicaId};
use cbase_net::crypto::SecretKey;
use cbase_net::message::{ClientMessage, Reply, ReplyMessage};
use cbase_net::transport::{self, Identity, TransportConfig};
use cbase_net::{ClientConfig, NetClient};
use support::Put;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

fn secret(id: ReplicaId) -> SecretKey {
    SecretKey::from_seed([id as u8 + 1; 32])
}

/// What a hand-driven replica does on one connection from the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Says it will not serve the client (as a replica whose
    /// `max_client_connections` are all taken does), and closes.
    Refuse,
    /// Answers every request: an empty operation (a session opener) with
    /// `Ok(())`, any other with `Ok(7u64)`.
    Answer,
    /// Reads what the client sends and answers nothing.
    Silent,
    /// Answers every request first, refusing it: a session opener as
    /// expired with a floor of `u64::MAX`, any other as superseded by
    /// number `u64::MAX`.
    Lie,
}

/// What a hand-driven replica reports to the test.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// It completed the handshake of its `n`th connection from the client
    /// (counting from 1).
    Connected(ReplicaId, usize),
    /// It received a batch of requests from the client, signed or not.
    Requests(ReplicaId, bool),
}

/// Addresses for `ids` (in that order in the cluster file), and their
/// listeners by id.
async fn cluster_of(ids: &[ReplicaId]) -> (ClusterConfig, Vec<(ReplicaId, TcpListener)>) {
    let mut replicas = Vec::new();
    let mut listeners = Vec::new();
    for &id in ids {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        replicas.push(ReplicaEntry {
            id,
            address: listener.local_addr().unwrap().to_string(),
            public_key: secret(id).public(),
        });
        listeners.push((id, listener));
    }
    let cluster = ClusterConfig {
        f: 1,
        replicas,
        clients: None,
    };
    cluster.validate().unwrap();
    (cluster, listeners)
}

/// Serves replica `id` on `listener`: its `n`th connection (from 1) goes
/// as `mode(n)` says.
fn serve(
    id: ReplicaId,
    listener: TcpListener,
    cluster: ClusterConfig,
    mode: impl Fn(usize) -> Mode + Send + Sync + 'static,
    events: mpsc::UnboundedSender<Event>,
) {
    let identity = Identity::replica(&cluster, id, secret(id)).unwrap();
    let cluster = Arc::new(cluster);
    let count = Arc::new(AtomicUsize::new(0));
    let mode = Arc::new(mode);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (identity, cluster, count, mode, events) = (
                identity.clone(),
                Arc::clone(&cluster),
                Arc::clone(&count),
                Arc::clone(&mode),
                events.clone(),
            );
            tokio::spawn(async move {
                let config = TransportConfig::default();
                let Ok(session) = transport::accept(stream, &identity, &cluster, &config).await
                else {
                    return;
                };
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let (mut reader, mut writer) = session.split();
                let mode = mode(n);
                if mode == Mode::Refuse {
                    let why = format!(
                        "replica {id} serves 1024 clients already, as many as its \
                         max_client_connections allows, all active; try again later"
                    );
                    let _ = writer.send_value(&ReplyMessage::Refused(why)).await;
                    let _ = writer.flush().await;
                }
                let _ = events.send(Event::Connected(id, n));
                if mode == Mode::Refuse {
                    // Closes after the client has read the refusal.
                    let _ = reader.recv().await;
                    return;
                }
                while let Ok(message) = reader.recv_value::<ClientMessage>().await {
                    let ClientMessage::Requests(batch) = message else {
                        continue;
                    };
                    let _ = events.send(Event::Requests(id, batch.is_signed()));
                    if mode == Mode::Silent {
                        continue;
                    }
                    let replies = batch
                        .batch
                        .requests
                        .iter()
                        .map(|request| Reply {
                            view: 0,
                            lane: request.lane,
                            number: request.number,
                            replica: id,
                            result: if mode == Mode::Lie && request.operation.is_empty() {
                                codec::encode(&Err::<(), ExecError>(ExecError::SessionExpired {
                                    lane: request.lane,
                                    number: request.number,
                                    floor: u64::MAX,
                                }))
                                .unwrap()
                            } else if mode == Mode::Lie {
                                codec::encode(&Err::<u64, ExecError>(ExecError::Superseded {
                                    lane: request.lane,
                                    number: request.number,
                                    last: u64::MAX,
                                }))
                                .unwrap()
                            } else if request.operation.is_empty() {
                                codec::encode(&Ok::<(), ExecError>(())).unwrap()
                            } else {
                                codec::encode(&Ok::<u64, ExecError>(7)).unwrap()
                            },
                        })
                        .collect();
                    if writer
                        .send_value(&ReplyMessage::Replies(replies))
                        .await
                        .is_err()
                        || writer.flush().await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
}

/// Waits (at most a minute, as a safety net) for `wanted`.
async fn wait_for(events: &mut mpsc::UnboundedReceiver<Event>, wanted: &[Event]) {
    let mut missing: Vec<&Event> = wanted.iter().collect();
    tokio::time::timeout(Duration::from_secs(60), async {
        while !missing.is_empty() {
            let event = events.recv().await.unwrap();
            missing.retain(|w| **w != event);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("still waiting for {missing:?}"));
}

/// Refusals a replica sent on an earlier connection must not count against
/// it once it serves the client again: otherwise f faulty replicas that
/// refuse for ever, with f+1 correct ones that refused once (full for a
/// moment) and admitted the client on its next try, make the client fail
/// every call at once as if fewer than f+1 replicas would answer, while
/// three of four serve it.
///
/// Schedule (n = 4, f = 1):
/// 1. Replicas 0 and 1 (correct) refuse the client's first connection:
///    their client connections are all taken, "try again later".
/// 2. Replica 3 (faulty) refuses every connection.
/// 3. The client connects again after its back-off; replicas 0 and 1
///    admit it and answer every request, as replica 2 does all along.
/// 4. The client calls `put`: replicas 0, 1 and 2 would answer alike.
///    Expected: the call returns their result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_refused_once_and_then_admit_the_client_with_one_faulty_refusing_do_not_lock_it_out()
 {
    let (cluster, listeners) = cluster_of(&[0, 1, 2, 3]).await;
    let (events, mut seen) = mpsc::unbounded_channel();
    for (id, listener) in listeners {
        let mode = move |n: usize| match (id, n) {
            (0 | 1, 1) => Mode::Refuse,
            (3, _) => Mode::Refuse,
            _ => Mode::Answer,
        };
        serve(id, listener, cluster.clone(), mode, events.clone());
    }
    let client = NetClient::connect(
        cluster,
        ClientConfig {
            timeout: Duration::from_secs(60),
            ..ClientConfig::default()
        },
    )
    .unwrap();
    // Replicas 0 and 1 admitted the client's second connection; replica 3
    // refused a second time, so its first refusal was taken in long ago.
    wait_for(
        &mut seen,
        &[
            Event::Connected(0, 2),
            Event::Connected(1, 2),
            Event::Connected(2, 1),
            Event::Connected(3, 2),
        ],
    )
    .await;
    let result = client.call::<Put, u64>(&Put(1)).await;
    assert_eq!(
        result.as_ref().map_err(ToString::to_string),
        Ok(&7),
        "replicas 0, 1 and 2 serve the client, yet the call failed"
    );
}

/// With `sign_every_batch`, a batch goes signed to the primary alone:
/// view `v`'s primary is replica `v mod n` by id, whatever the order of
/// the cluster file (which may list replicas in any order). Sent to the
/// replica listed first instead, it goes to a backup; a faulty backup
/// listed first then drops every batch, and each call waits for its first
/// retransmission, for ever, while no view change can help (the primary
/// is correct).
///
/// Schedule (n = 4, f = 1):
/// 1. The cluster file lists replicas 3, 2, 1, 0 in that order (valid).
/// 2. The client, in view 0 (primary: replica 0), sends one call; its
///    first retransmission is an hour away.
/// 3. Expected: replica 0 receives the signed batch first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_signed_batches_the_first_copy_goes_to_view_0s_primary_by_id_not_the_replica_listed_first()
 {
    let (cluster, listeners) = cluster_of(&[3, 2, 1, 0]).await;
    let (events, mut seen) = mpsc::unbounded_channel();
    for (id, listener) in listeners {
        serve(
            id,
            listener,
            cluster.clone(),
            |_| Mode::Silent,
            events.clone(),
        );
    }
    let client = NetClient::connect(
        cluster,
        ClientConfig {
            sign_every_batch: true,
            first_retransmit: Duration::from_secs(3600),
            max_retransmit: Duration::from_secs(3600),
            timeout: Duration::from_secs(7200),
            ..ClientConfig::default()
        },
    )
    .unwrap();
    wait_for(
        &mut seen,
        &[
            Event::Connected(0, 1),
            Event::Connected(1, 1),
            Event::Connected(2, 1),
            Event::Connected(3, 1),
        ],
    )
    .await;
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call::<Put, u64>(&Put(1)).await }
    });
    let first = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Event::Requests(id, signed) = seen.recv().await.unwrap() {
                return (id, signed);
            }
        }
    })
    .await
    .expect("no replica received the batch");
    assert_eq!(
        first,
        (0, true),
        "the signed batch went to replica {} (listed first), not to view 0's primary",
        first.0
    );
    call.abort();
}

/// One faulty replica's refusals are one replica's word: the client acts
/// on a floor or a superseding number only when f+1 replicas report it.
///
/// Schedule (n = 4, f = 1):
/// 1. Replica 3 (faulty) answers every request as soon as it arrives:
///    the session opener as expired with floor `u64::MAX`, every call as
///    superseded by number `u64::MAX` on its lane.
/// 2. Replicas 0, 1 and 2 answer every request with its result.
/// 3. Expected: three calls in a row return the result, the client neither
///    renumbering to the end of the number space nor failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_faulty_replicas_expired_and_superseded_answers_at_the_end_of_the_number_space_are_ignored()
 {
    let (cluster, listeners) = cluster_of(&[0, 1, 2, 3]).await;
    let (events, mut seen) = mpsc::unbounded_channel();
    for (id, listener) in listeners {
        let mode = move |_| if id == 3 { Mode::Lie } else { Mode::Answer };
        serve(id, listener, cluster.clone(), mode, events.clone());
    }
    let client = NetClient::connect(
        cluster,
        ClientConfig {
            timeout: Duration::from_secs(60),
            ..ClientConfig::default()
        },
    )
    .unwrap();
    wait_for(
        &mut seen,
        &[
            Event::Connected(0, 1),
            Event::Connected(1, 1),
            Event::Connected(2, 1),
            Event::Connected(3, 1),
        ],
    )
    .await;
    for key in 0..3 {
        let result = client.call::<Put, u64>(&Put(key)).await;
        assert_eq!(result.map_err(|e| e.to_string()), Ok(7));
    }
}

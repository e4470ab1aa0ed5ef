//! Bounded client sessions: a flood of client identities leaves the client
//! table at its bound, honest clients keep working, and a request of an
//! evicted session is refused with a clear error, never executed twice.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cbase_core::{
    AccessSet, ClientError, Container, Context, ExecError, ExecutorBuilder, Key, Request, Service,
    State, Table, codec,
};
use cbase_net::checkpoint::{ClientTable, SessionLimits};
use cbase_net::crypto::{PublicKey, SecretKey};
use cbase_net::message::{
    ClientBatch, ClientMessage, ClientRequest, Proposal, Reply, ReplyMessage, RequestBatch,
};
use cbase_net::protocol::Committed;
use cbase_net::runtime::execution::{CheckpointRecord, Execution, ReplySink};
use cbase_net::transport::{self, Identity, TransportConfig};
use cbase_net::{ClientConfig, LocalCluster, NetClient, ProtocolConfig};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Adds one to the counter under its key; returns the new count.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Bump(u64);

impl Request for Bump {
    fn access_set(&self) -> AccessSet {
        AccessSet::none().write(Key::entry("counts", &self.0))
    }
    fn method(&self) -> &'static str {
        "bump"
    }
}

#[derive(Default)]
struct Counts {
    counts: Table<u64, u64>,
}

impl State for Counts {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("counts", &self.counts)]
    }
}

#[derive(Default)]
struct Counter(Counts);

impl Service for Counter {
    type Request = Bump;
    type Response = u64;
    fn execute(&self, bump: Bump, _: &Context) -> u64 {
        self.0.counts.upsert(
            bump.0,
            || 0,
            |n| {
                *n += 1;
                *n
            },
        )
    }
    fn state(&self) -> &dyn State {
        &self.0
    }
}

fn limits(max_sessions: usize) -> SessionLimits {
    SessionLimits {
        max_sessions,
        ..SessionLimits::default()
    }
}

async fn cluster(max_sessions: usize) -> LocalCluster {
    LocalCluster::builder()
        .replicas(4)
        .protocol(ProtocolConfig {
            checkpoint_interval: 4,
            window: 16,
            sessions: limits(max_sessions),
            ..ProtocolConfig::default()
        })
        .start(Counter::default)
        .await
        .unwrap()
}

/// A client with a fresh identity that makes one call and goes away, as
/// each of a flood's identities does.
async fn one_call_from_a_new_identity(cluster: &LocalCluster, key: u64) {
    let client = cluster.client().unwrap();
    let _: u64 = client.call(&Bump(key)).await.unwrap();
}

fn now_nanos() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u64::try_from(since.as_nanos()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_identities_leaves_the_table_at_its_bound_and_honest_clients_working() {
    let cluster = cluster(8).await;
    let honest = cluster.client().unwrap();
    let mut count = 0;
    for flood in 0..96u64 {
        one_call_from_a_new_identity(&cluster, 1_000 + flood).await;
        // The honest client calls between every few newcomers, so it is
        // never the least recently used of the 8 sessions kept.
        if flood % 3 == 0 {
            let bumped: u64 = honest.call(&Bump(0)).await.unwrap();
            count += 1;
            assert_eq!(bumped, count);
        }
    }
    for replica in cluster.replicas() {
        let metrics = replica.metrics();
        assert!(metrics.checkpoints_taken.load(Ordering::Relaxed) > 0);
        let sessions = metrics.client_sessions.load(Ordering::Relaxed);
        assert!(sessions <= 8, "{sessions} sessions kept");
        // Eight sessions of a lane or two each, and the floor.
        let bytes = metrics.client_table_bytes.load(Ordering::Relaxed);
        assert!(bytes < 8 * 200, "{bytes} bytes of client table");
    }
    assert!(cluster.checkpoint_agreement().agree());
    cluster.shutdown().await;
}

/// Sends one signed batch to replica 0 on a connection of `key`'s and
/// waits for its answer to (lane, number).
async fn send_raw(
    cluster: &LocalCluster,
    key: &SecretKey,
    batch: &ClientBatch,
    lane: u32,
    number: u64,
) -> Result<u64, ExecError> {
    let config = cluster.config();
    let stream = tokio::net::TcpStream::connect(&config.replicas[0].address)
        .await
        .unwrap();
    let identity = Identity::client(key.clone());
    let (mut reader, mut writer) =
        transport::connect(stream, &identity, 0, config, &TransportConfig::default())
            .await
            .unwrap()
            .split();
    writer
        .send_value(&ClientMessage::Requests(batch.clone()))
        .await
        .unwrap();
    writer.flush().await.unwrap();
    loop {
        let message: ReplyMessage =
            tokio::time::timeout(Duration::from_secs(30), reader.recv_value())
                .await
                .expect("an answer in time")
                .expect("a valid frame");
        if let ReplyMessage::Replies(replies) = message
            && let Some(reply) = replies
                .into_iter()
                .find(|reply| reply.lane == lane && reply.number == number)
        {
            return codec::decode(&reply.result).unwrap();
        }
    }
}

fn bump_batch(key: &SecretKey, lane: u32, number: u64, counter: u64) -> ClientBatch {
    ClientBatch::sign(
        RequestBatch {
            client: key.public(),
            requests: vec![ClientRequest {
                lane,
                number,
                operation: codec::encode(&Bump(counter)).unwrap(),
            }],
        },
        key,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_an_evicted_session_is_refused_and_never_runs_twice() {
    let cluster = cluster(4).await;
    let key = SecretKey::from_seed([61; 32]);
    let number = now_nanos();
    let bump = bump_batch(&key, 0, number, 5);
    assert_eq!(send_raw(&cluster, &key, &bump, 0, number).await, Ok(1));
    // Newcomers fill the table; the client's session is the least
    // recently used and goes.
    for flood in 0..6 {
        one_call_from_a_new_identity(&cluster, 100 + flood).await;
    }
    // The same signed batch again (a late retransmission, or a faulty
    // primary replaying it): refused, not executed.
    let again = send_raw(&cluster, &key, &bump, 0, number).await;
    let Err(ExecError::SessionExpired {
        lane,
        number: refused,
        floor,
    }) = again
    else {
        panic!("{again:?}");
    };
    assert_eq!((lane, refused), (0, number));
    assert!(floor >= number, "floor {floor} below the evicted number");
    // So is an old request on a lane the session never used.
    let other_lane = bump_batch(&key, 7, number - 1, 5);
    assert!(matches!(
        send_raw(&cluster, &key, &other_lane, 7, number - 1).await,
        Err(ExecError::SessionExpired { .. })
    ));
    // The same key through a `NetClient`: a new session, and the counter
    // shows the first bump ran once.
    let client = cluster
        .client_with(ClientConfig {
            key: Some(key.clone()),
            ..ClientConfig::default()
        })
        .unwrap();
    let bumped: u64 = client.call(&Bump(5)).await.unwrap();
    assert_eq!(bumped, 2, "the evicted request ran again");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_session_expired_gets_a_clear_error_and_its_next_calls_work() {
    let cluster = cluster(4).await;
    let client: NetClient = cluster.client().unwrap();
    let _: u64 = client.call(&Bump(9)).await.unwrap();
    for flood in 0..6 {
        one_call_from_a_new_identity(&cluster, 100 + flood).await;
    }
    let error = client.call::<Bump, u64>(&Bump(9)).await.unwrap_err();
    let ClientError::Exec(ExecError::SessionExpired { .. }) = &error else {
        panic!("{error}");
    };
    let message = error.to_string();
    assert!(
        message.contains("no longer keep this client's session"),
        "{message}"
    );
    // Never executed: the next call (in a new session) makes the count 2.
    let bumped: u64 = client.call(&Bump(9)).await.unwrap();
    assert_eq!(bumped, 2);
    cluster.shutdown().await;
}

/// Discards replies; keeps the client table of every checkpoint.
#[derive(Default)]
struct Tables(Mutex<Vec<(u64, ClientTable)>>);

impl ReplySink for Tables {
    fn send(&self, _: &PublicKey, _: Reply) {}
    fn send_read(&self, _: &PublicKey, _: cbase_net::message::ReadReply) {}
    fn checkpoint(&self, record: CheckpointRecord) {
        self.0.lock().push((record.seq, record.clients));
    }
}

/// Batch `seq` from a flood of `identities` fresh keys (one request each)
/// and one request of the honest `client`.
fn flood_batch(
    seq: u64,
    identities: &[PublicKey],
    honest: &PublicKey,
    checkpoint: bool,
) -> Committed {
    // Execution takes committed batches as agreed: agreement checked
    // where they came from, so these need no signature.
    let unsigned = |client: PublicKey, number: u64, counter: u64| {
        ClientBatch::unsigned(RequestBatch {
            client,
            requests: vec![ClientRequest {
                lane: 0,
                number,
                operation: codec::encode(&Bump(counter)).unwrap(),
            }],
        })
    };
    let mut batches: Vec<ClientBatch> = identities
        .iter()
        .enumerate()
        // Numbered as `NetClient`s number, upwards: a number at or below
        // the floor the evictions leave would not start a session at all.
        .map(|(at, key)| unsigned(*key, seq * 1_000_000 + at as u64, 1_000 + at as u64))
        .collect();
    batches.push(unsigned(*honest, seq, 0));
    let proposal = Proposal {
        timestamp: seq * 1_000,
        batches,
    };
    Committed {
        view: 0,
        seq,
        digest: proposal.digest(),
        proposal,
        checkpoint,
    }
}

#[test]
fn a_hundred_thousand_identities_leave_the_client_table_at_its_bound() {
    const IDENTITIES: usize = 100_000;
    const PER_BATCH: usize = 1_000;
    // Above one batch's newcomers, so the honest client, which calls once
    // per batch, is never the least recently used.
    const BOUND: usize = 4_096;
    let honest = SecretKey::from_seed([1; 32]).public();
    // Two replicas executing the same batches must keep the same table.
    let start = || {
        let sink = Arc::new(Tables::default());
        let execution = Execution::start(
            0,
            ExecutorBuilder::new().workers(2),
            Counter::default(),
            Arc::clone(&sink) as Arc<dyn ReplySink>,
            limits(BOUND),
        )
        .unwrap();
        (execution, sink)
    };
    let (mut first, first_tables) = start();
    let (mut second, second_tables) = start();
    let mut seed = [0u8; 32];
    for seq in 1..=(IDENTITIES / PER_BATCH) as u64 {
        let identities: Vec<PublicKey> = (0..PER_BATCH)
            .map(|_| {
                // A different key every time: the counter in the seed.
                for byte in seed.iter_mut() {
                    *byte = byte.wrapping_add(1);
                    if *byte != 0 {
                        break;
                    }
                }
                SecretKey::from_seed(seed).public()
            })
            .collect();
        let checkpoint = seq % 10 == 0;
        first.execute(flood_batch(seq, &identities, &honest, checkpoint));
        second.execute(flood_batch(seq, &identities, &honest, checkpoint));
    }
    first.wait_idle();
    second.wait_idle();
    let tables = first_tables.0.lock().clone();
    assert_eq!(tables.len(), IDENTITIES / PER_BATCH / 10);
    assert_eq!(
        tables,
        *second_tables.0.lock(),
        "replicas keep different tables"
    );
    let sizes: Vec<usize> = tables
        .iter()
        .map(|(_, table)| codec::encode(table).unwrap().len())
        .collect();
    for (seq, table) in &tables {
        assert_eq!(table.sessions(), BOUND, "at checkpoint {seq}");
        // The honest client, active in every batch, was never evicted.
        assert_eq!(table.lane(&honest, 0).map(|r| r.number), Some(*seq));
    }
    // Memory flat: after 10 times as many identities the table is as large
    // as after the first 10,000, up to the numbers' encoded widths (keys
    // and numbers differ, not their count), and each session takes a few
    // dozen bytes (its key, two numbers, one lane).
    let (first_size, last_size) = (sizes[0], sizes[sizes.len() - 1]);
    assert!(
        last_size * 10 < first_size * 11,
        "client table sizes {sizes:?}"
    );
    assert!(last_size < BOUND * 80, "client table sizes {sizes:?}");
    first.shutdown();
    second.shutdown();
}

/// Keeps every reply and the digest of every checkpoint.
#[derive(Default)]
struct Recorded {
    replies: Mutex<Vec<(u32, u64, Vec<u8>)>>,
    digests: Mutex<Vec<(u64, [u8; 32])>>,
}

impl ReplySink for Recorded {
    fn send(&self, _: &PublicKey, reply: Reply) {
        self.replies
            .lock()
            .push((reply.lane, reply.number, reply.result));
    }
    fn send_read(&self, _: &PublicKey, _: cbase_net::message::ReadReply) {}
    fn checkpoint(&self, record: CheckpointRecord) {
        self.digests.lock().push((record.seq, record.digest));
    }
}

/// A faulty primary orders one request twice in a proposal and again in a
/// later one, orders another request under the same number, and orders an
/// older number of the lane after a newer one. Each request runs once,
/// the one reusing a number and the old one never, and two replicas with
/// different worker counts reach the same checkpoint.
#[test]
fn requests_a_faulty_primary_orders_again_run_once_on_every_replica() {
    let key = SecretKey::from_seed([71; 32]);
    let client = key.public();
    let request = |lane: u32, number: u64, counter: u64| {
        ClientBatch::unsigned(RequestBatch {
            client,
            requests: vec![ClientRequest {
                lane,
                number,
                operation: codec::encode(&Bump(counter)).unwrap(),
            }],
        })
    };
    let first = request(0, 10, 7);
    let proposals = [
        vec![first.clone(), first.clone(), request(1, 11, 7)],
        // The replay, and another operation under the same number.
        vec![first.clone(), request(0, 10, 8)],
        // Older than what lane 0 executed.
        vec![request(0, 9, 7)],
        vec![request(0, 12, 7), request(2, 13, 8)],
    ];
    let run = |workers: usize| {
        let sink = Arc::new(Recorded::default());
        let mut execution = Execution::start(
            0,
            ExecutorBuilder::new().workers(workers),
            Counter::default(),
            Arc::clone(&sink) as Arc<dyn ReplySink>,
            SessionLimits::default(),
        )
        .unwrap();
        for (at, batches) in proposals.iter().enumerate() {
            let seq = at as u64 + 1;
            let proposal = Proposal {
                timestamp: seq * 1_000,
                batches: batches.clone(),
            };
            execution.execute(Committed {
                view: 0,
                seq,
                digest: proposal.digest(),
                proposal,
                checkpoint: seq == 4,
            });
        }
        execution.wait_idle();
        execution.shutdown();
        sink
    };
    let (one, four) = (run(1), run(4));
    assert_eq!(*one.digests.lock(), *four.digests.lock());
    assert_eq!(one.digests.lock().len(), 1);
    for sink in [one, four] {
        let replies = sink.replies.lock();
        let answers = |lane: u32, number: u64| -> Vec<Result<u64, ExecError>> {
            replies
                .iter()
                .filter(|(l, n, _)| (*l, *n) == (lane, number))
                .map(|(_, _, result)| codec::decode(result).unwrap())
                .collect()
        };
        // Counter 7: the first request, lane 1's, then lane 0's next.
        assert_eq!(answers(0, 12), vec![Ok(3)]);
        // Counter 8 never moved before lane 2's request.
        assert_eq!(answers(2, 13), vec![Ok(1)]);
        assert!(answers(0, 9).is_empty(), "an old request is not answered");
        assert!(
            answers(0, 10).iter().all(|answer| *answer == Ok(1)),
            "{:?}",
            answers(0, 10)
        );
    }
}

/// A client restarted with the same key must be able to call again: its
/// numbers start at its wall clock, which the documentation promises is
/// above every number it used before unless its clock went back.
///
/// Schedule: another client, whose clock runs ten minutes ahead (or a
/// faulty one; both are within `max_number_ahead`), executes a request and
/// its session is evicted, so the table's floor is ten minutes ahead of the
/// wall clock. Client K opens its session: its opener is refused with that
/// floor, so K numbers its lanes above it and calls. K restarts with the
/// same key, its clock untouched. Its new numbers come from the wall clock
/// again, below those its session (still kept) has on every lane it used:
/// the opener on lane 0 was answered `Superseded`, and so was every call
/// after it, until the wall clock passed the adopted floor or the session
/// idled out (an hour by default, since refused requests do not use it).
/// Now the refusal names the lane's last number, and the client numbers
/// above it and goes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_restarted_with_its_key_after_adopting_a_floor_ahead_of_its_clock_can_call() {
    let cluster = cluster(4).await;
    let ahead = SecretKey::from_seed([81; 32]);
    let number = now_nanos() + 600_000_000_000;
    let bump = bump_batch(&ahead, 0, number, 3);
    assert_eq!(send_raw(&cluster, &ahead, &bump, 0, number).await, Ok(1));
    for flood in 0..6 {
        one_call_from_a_new_identity(&cluster, 200 + flood).await;
    }
    let key = SecretKey::from_seed([82; 32]);
    let config = ClientConfig {
        key: Some(key.clone()),
        timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    };
    let first = cluster.client_with(config.clone()).unwrap();
    let bumped: u64 = first.call(&Bump(8)).await.unwrap();
    assert_eq!(bumped, 1);
    drop(first);
    // The same key, restarted: no clock went back.
    let restarted = cluster.client_with(config).unwrap();
    let again = restarted.call::<Bump, u64>(&Bump(8)).await;
    assert!(
        matches!(again, Ok(2)),
        "a restarted client with an untouched clock cannot call: {again:?}"
    );
    cluster.shutdown().await;
}

/// Correct replicas must answer a request they will never execute with the
/// same bytes, or the client cannot gather f+1 matching answers.
///
/// Schedule: the table keeps two sessions. Client K executes request 100
/// on lane 0; clients A, B, C and D then take a session each, evicting K,
/// A and B in turn, so the floor goes 100, 200, 300. Three correct replicas
/// have executed up to different points (3, 4 and 5) when K's
/// retransmission of request 100 reaches them (a late retransmission, or a
/// client whose session expired while it was idle). Each connection reader
/// answered it from the client table, `SessionExpired`, with the floor it
/// has at that moment: 100, 200 and 300. No two of the answers match, so
/// the client never gets f+1 matching replies: it retransmits (answered
/// from the cache again, with whatever floor each replica has by then)
/// until its call times out, instead of learning its session expired. As
/// long as sessions keep being evicted (a flood of identities), it never
/// learns the floor to number above, so its next calls, still below it,
/// time out too. So it is ordered instead, and gets one floor from every
/// replica, decided in sequence order.
#[test]
fn correct_replicas_at_different_points_refuse_an_expired_request_with_matching_answers() {
    let key = |seed: u8| SecretKey::from_seed([seed; 32]).public();
    let client = key(90);
    let one = |client: PublicKey, number: u64| {
        ClientBatch::unsigned(RequestBatch {
            client,
            requests: vec![ClientRequest {
                lane: 0,
                number,
                operation: codec::encode(&Bump(number)).unwrap(),
            }],
        })
    };
    let proposals = [
        one(client, 100),
        one(key(91), 200),
        one(key(92), 300),
        one(key(93), 400),
        one(key(94), 500),
    ];
    // Each replica's answers to the client, as its sink gets them.
    let replica_at = |id: u32, last: usize| {
        let answers = Arc::new(Answers::default());
        let mut execution = Execution::start(
            id,
            ExecutorBuilder::new().workers(2),
            Counter::default(),
            Arc::clone(&answers) as Arc<dyn ReplySink>,
            limits(2),
        )
        .unwrap();
        let run = |execution: &mut Execution<Counter>, from: usize, to: usize| {
            for (at, batch) in proposals.iter().enumerate().take(to).skip(from) {
                let seq = at as u64 + 1;
                let proposal = Proposal {
                    timestamp: seq * 1_000,
                    batches: vec![batch.clone()],
                };
                execution.execute(Committed {
                    view: 0,
                    seq,
                    digest: proposal.digest(),
                    proposal,
                    checkpoint: false,
                });
            }
            execution.wait_idle();
        };
        run(&mut execution, 0, last);
        (execution, answers, run)
    };
    let mut replicas = [replica_at(0, 3), replica_at(1, 4), replica_at(2, 5)];
    // The retransmission is not answered at the connection, where each
    // replica would read the floor as it is at its own point...
    for (execution, _, _) in &replicas {
        assert!(
            execution
                .shared()
                .cached_replies(&client, &[(0, 100)], 0)
                .is_none(),
            "an expired request is answered at the connection, with the floor of the moment"
        );
    }
    // ...but ordered (here at sequence number 6, after the others), and
    // refused in sequence order.
    let answers: Vec<Vec<u8>> = replicas
        .iter_mut()
        .map(|(execution, answers, run)| {
            run(execution, 0, proposals.len());
            let seq = proposals.len() as u64 + 1;
            let proposal = Proposal {
                timestamp: seq * 1_000,
                batches: vec![one(client, 100)],
            };
            execution.execute(Committed {
                view: 0,
                seq,
                digest: proposal.digest(),
                proposal,
                checkpoint: false,
            });
            execution.wait_idle();
            let to_client = answers.to(&client);
            assert_eq!(to_client.len(), 2, "the reply to 100, then the refusal");
            let decoded: Result<u64, ExecError> = codec::decode(&to_client[1]).unwrap();
            assert!(
                matches!(decoded, Err(ExecError::SessionExpired { .. })),
                "{decoded:?}"
            );
            to_client[1].clone()
        })
        .collect();
    let floors: Vec<String> = answers
        .iter()
        .map(|bytes| {
            format!(
                "{:?}",
                codec::decode::<Result<u64, ExecError>>(bytes).unwrap()
            )
        })
        .collect();
    assert!(
        answers.iter().all(|answer| *answer == answers[0]),
        "three correct replicas refuse the same request with three different answers, so \
         no f+1 match: {floors:?}"
    );
    for (replica, _, _) in replicas {
        replica.shutdown();
    }
}

/// Random schedules against the client table's rules, with tight bounds:
/// no request (key, lane, number) is admitted for execution twice, however
/// sessions are evicted, expired, trimmed and reopened in between; the
/// bounds hold after every step; and a copy rebuilt from the encoding at
/// any point (what a state transfer installs) decides everything after it
/// exactly as the original does, so the use order and lane count it
/// derives are in step with the sessions.
#[test]
fn random_schedules_never_admit_a_request_twice_and_a_decoded_table_decides_alike() {
    use cbase_net::checkpoint::Admission;
    use std::collections::BTreeSet;
    let limits = SessionLimits {
        max_sessions: 3,
        max_lanes: 5,
        max_lanes_per_session: 2,
        max_reply_bytes: 40,
        idle: Duration::from_nanos(40),
        max_number_ahead: Duration::from_nanos(1_000),
    };
    let keys: Vec<PublicKey> = (0..6u8)
        .map(|seed| SecretKey::from_seed([seed + 100; 32]).public())
        .collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    for _schedule in 0..200 {
        let mut table = ClientTable::new();
        let mut copy: Option<ClientTable> = None;
        let mut executed = BTreeSet::new();
        let mut clock = 0u64;
        for step in 0..400 {
            clock += next(6);
            table.expire_idle(clock, &limits);
            if let Some(copy) = copy.as_mut() {
                copy.expire_idle(clock, &limits);
            }
            let key = keys[next(keys.len() as u64) as usize];
            let lane = next(3) as u32;
            // Numbers around the clock: fresh ones, retransmissions, replays.
            let number = (clock + 10).saturating_sub(next(30)).max(1);
            let admission = table.admit(&key, lane, number, clock, &limits);
            if let Some(copy) = copy.as_mut() {
                assert_eq!(copy.admit(&key, lane, number, clock, &limits), admission);
            }
            if admission == Admission::Execute {
                assert!(
                    executed.insert((key, lane, number)),
                    "({lane}, {number}) admitted twice at step {step}"
                );
                let reply = vec![0; next(12) as usize];
                table.lane_mut(&key, lane).unwrap().reply = Some(reply.clone());
                if let Some(copy) = copy.as_mut() {
                    copy.lane_mut(&key, lane).unwrap().reply = Some(reply);
                }
            }
            if step % 16 == 15 {
                table.trim_replies(&limits);
                if let Some(copy) = copy.as_mut() {
                    copy.trim_replies(&limits);
                }
            }
            assert!(table.sessions() <= limits.max_sessions);
            assert!(table.lanes() <= limits.max_lanes);
            if let Some(copy) = &copy {
                assert_eq!(*copy, table);
                assert_eq!(copy.lanes(), table.lanes());
            }
            if step % 50 == 7 {
                let bytes = codec::encode(&table).unwrap();
                copy = Some(codec::decode(&bytes).unwrap());
            }
        }
    }
}

/// The replies a replica sends, per client, in order.
#[derive(Default)]
struct Answers(Mutex<Vec<(PublicKey, Vec<u8>)>>);

impl Answers {
    fn to(&self, client: &PublicKey) -> Vec<Vec<u8>> {
        self.0
            .lock()
            .iter()
            .filter(|(to, _)| to == client)
            .map(|(_, result)| result.clone())
            .collect()
    }
}

impl ReplySink for Answers {
    fn send(&self, client: &PublicKey, reply: Reply) {
        self.0.lock().push((*client, reply.result));
    }
    fn send_read(&self, _: &PublicKey, _: cbase_net::message::ReadReply) {}
    fn checkpoint(&self, _: CheckpointRecord) {}
}

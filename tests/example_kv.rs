//! The key-value store of `examples/kv.rs`: its rules, its operations on a
//! 4-replica cluster against a sequential model (compare-and-swap conflicts
//! and scan order included), and scans under the parallel executor.

#[allow(dead_code)]
#[path = "../examples/kv.rs"]
mod kv;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cbase::prelude::*;
use cbase::{ProtocolConfig, conflicts};
use kv::{KvClient, KvRequest, KvService, MAX_SCAN, Store};

type Model = BTreeMap<String, Vec<u8>>;

/// What a scan must return, computed from the model.
fn model_scan(model: &Model, start: &str, end: Option<&str>, limit: u32) -> Vec<(String, Vec<u8>)> {
    if end.is_some_and(|end| end <= start) {
        return Vec::new();
    }
    let upper = end.map_or(Bound::Unbounded, |end| Bound::Excluded(end.to_owned()));
    model
        .range((Bound::Included(start.to_owned()), upper))
        .take(limit.min(MAX_SCAN) as usize)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[test]
fn point_operations_name_their_key_and_a_scan_reads_the_whole_table() {
    let get = |k: &str| KvRequest::Get { key: k.into() }.access_set();
    let put = |k: &str| {
        KvRequest::Put {
            key: k.into(),
            value: vec![1],
        }
        .access_set()
    };
    let cas = |k: &str| {
        KvRequest::CompareAndSwap {
            key: k.into(),
            expected: None,
            new: vec![1],
        }
        .access_set()
    };
    let scan = KvRequest::Scan {
        start: "a".into(),
        end: Some("b".into()),
        limit: 10,
    }
    .access_set();
    assert_eq!(
        get("k"),
        AccessSet::none().read(Key::entry("entries", &"k".to_owned()))
    );
    assert_eq!(scan, AccessSet::none().read(Key::table("entries")));
    assert!(!conflicts(&put("a"), &put("b")), "different keys");
    assert!(!conflicts(&put("a"), &cas("b")));
    assert!(conflicts(&put("a"), &get("a")), "same key");
    assert!(conflicts(&cas("a"), &put("a")));
    // A scan of [a, b) conflicts even with a put of a key outside it: the
    // rule cannot know which keys a range holds.
    assert!(conflicts(&scan, &put("zzz")));
    assert!(!conflicts(&scan, &get("a")), "reads do not conflict");
    assert!(!conflicts(&scan, &scan));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_on_four_replicas_matches_a_sequential_model() {
    let cluster = LocalCluster::builder()
        .replicas(4)
        .workers(8)
        .protocol(ProtocolConfig {
            checkpoint_interval: 8,
            window: 32,
            ..ProtocolConfig::default()
        })
        .start(|| KvService(Store::default()))
        .await
        .unwrap();
    let kv = KvClient::new(cluster.client().unwrap());

    // The basics, spelled out.
    assert_eq!(kv.get("a".into()).await.unwrap(), None);
    assert_eq!(kv.put("a".into(), b"1".to_vec()).await.unwrap(), None);
    assert_eq!(
        kv.put("a".into(), b"2".to_vec()).await.unwrap(),
        Some(b"1".to_vec())
    );
    assert_eq!(kv.get("a".into()).await.unwrap(), Some(b"2".to_vec()));
    // Compare-and-swap: a stale expectation fails and returns the current value.
    assert_eq!(
        kv.compare_and_swap("a".into(), Some(b"1".to_vec()), b"3".to_vec())
            .await
            .unwrap(),
        Err(Some(b"2".to_vec()))
    );
    assert_eq!(
        kv.get("a".into()).await.unwrap(),
        Some(b"2".to_vec()),
        "unchanged"
    );
    assert_eq!(
        kv.compare_and_swap("a".into(), Some(b"2".to_vec()), b"3".to_vec())
            .await
            .unwrap(),
        Ok(())
    );
    assert_eq!(
        kv.compare_and_swap("new".into(), Some(b"x".to_vec()), b"y".to_vec())
            .await
            .unwrap(),
        Err(None),
        "absent"
    );
    assert_eq!(
        kv.compare_and_swap("new".into(), None, b"y".to_vec())
            .await
            .unwrap(),
        Ok(()),
        "create if absent"
    );
    assert_eq!(
        kv.compare_and_swap("new".into(), None, b"z".to_vec())
            .await
            .unwrap(),
        Err(Some(b"y".to_vec()))
    );
    assert_eq!(kv.delete("new".into()).await.unwrap(), Some(b"y".to_vec()));
    assert_eq!(kv.delete("new".into()).await.unwrap(), None);
    assert_eq!(kv.delete("a".into()).await.unwrap(), Some(b"3".to_vec()));

    // A random sequence of every operation against a model.
    let mut model = Model::new();
    let key = |r: u64| format!("k{:02}", r % 40);
    for i in 0..300u64 {
        let r = mix(i);
        let value = format!("v{i}").into_bytes();
        match (r >> 8) % 6 {
            0 => assert_eq!(kv.get(key(r)).await.unwrap(), model.get(&key(r)).cloned()),
            1 | 2 => assert_eq!(
                kv.put(key(r), value.clone()).await.unwrap(),
                model.insert(key(r), value)
            ),
            3 => assert_eq!(kv.delete(key(r)).await.unwrap(), model.remove(&key(r))),
            4 => {
                let current = model.get(&key(r)).cloned();
                let expected = if r & 1 == 0 {
                    current.clone()
                } else {
                    Some(b"stale".to_vec())
                };
                let result = kv
                    .compare_and_swap(key(r), expected.clone(), value.clone())
                    .await
                    .unwrap();
                if expected == current {
                    assert_eq!(result, Ok(()));
                    model.insert(key(r), value);
                } else {
                    assert_eq!(result, Err(current), "a conflict returns the current value");
                }
            }
            _ => {
                let (start, end) = (key(r), key(r >> 20));
                let end = (r & 2 == 0).then_some(end);
                let limit = (r >> 30) as u32 % 12;
                let found = kv.scan(start.clone(), end.clone(), limit).await.unwrap();
                assert_eq!(found, model_scan(&model, &start, end.as_deref(), limit));
                assert!(found.windows(2).all(|w| w[0].0 < w[1].0), "key order");
            }
        }
    }
    // Edge ranges: empty, inverted, unbounded.
    assert_eq!(
        kv.scan("k10".into(), Some("k10".into()), 5).await.unwrap(),
        vec![]
    );
    assert_eq!(
        kv.scan("k20".into(), Some("k10".into()), 5).await.unwrap(),
        vec![]
    );
    assert_eq!(
        kv.scan(String::new(), None, u32::MAX).await.unwrap(),
        model_scan(&model, "", None, u32::MAX)
    );

    // Concurrent clients on disjoint keys: each predicts its own replies.
    let mut tasks = Vec::new();
    for task in 0..8u64 {
        let kv = kv.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Model::new();
            for i in 0..25u64 {
                let k = format!("t{task}-{}", mix(task * 100 + i) % 5);
                let value = format!("{task}:{i}").into_bytes();
                if i % 3 == 2 {
                    assert_eq!(kv.delete(k.clone()).await.unwrap(), mine.remove(&k));
                } else {
                    assert_eq!(
                        kv.put(k.clone(), value.clone()).await.unwrap(),
                        mine.insert(k, value)
                    );
                }
            }
            mine
        }));
    }
    for task in tasks {
        model.extend(task.await.unwrap());
    }
    assert_eq!(
        kv.scan(String::new(), None, MAX_SCAN).await.unwrap(),
        model_scan(&model, "", None, MAX_SCAN),
        "the final state is the model's"
    );

    // Every replica took the same checkpoints, compared by sequence number: a
    // replica that caught up by state transfer skipped some, and one that
    // lags behind may still be taking the last ones.
    let deadline = Instant::now() + Duration::from_secs(120);
    let agreement = loop {
        let agreement = cluster.checkpoint_agreement();
        if agreement.common >= 2 || Instant::now() > deadline {
            break agreement;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        agreement.agree(),
        "checkpoint digests differ: {agreement:?}"
    );
    assert!(
        agreement.common >= 2,
        "checkpoints every replica took: {agreement:?}"
    );
    cluster.shutdown().await;
}

/// Runs one request list with `workers` workers; returns replies in request
/// order and the final digest.
fn execute(requests: &[KvRequest], workers: usize) -> (Vec<String>, Digest) {
    let replies = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&replies);
    let executor = ExecutorBuilder::new()
        .workers(workers)
        .start(KvService(Store::default()), move |reply| {
            sink.lock()
                .unwrap()
                .push((reply.tag, format!("{:?}", reply.result)));
        })
        .unwrap();
    for (tag, request) in requests.iter().enumerate() {
        executor
            .submit(
                tag as u64,
                Context::new(tag as u64, [0; 32]),
                request.clone(),
            )
            .unwrap();
    }
    executor.wait_idle();
    let digest = executor.service().0.digest();
    let mut replies = std::mem::take(&mut *replies.lock().unwrap());
    replies.sort();
    (replies.into_iter().map(|(_, r)| r).collect(), digest)
}

#[test]
fn scans_among_writes_see_the_same_state_with_one_or_eight_workers() {
    let requests: Vec<KvRequest> = (0..2000u64)
        .map(|i| {
            let r = mix(i);
            let key = format!("k{:03}", r % 200);
            match r % 10 {
                0 => KvRequest::Scan {
                    start: format!("k{:03}", (r >> 10) % 200),
                    end: None,
                    limit: 50,
                },
                1 => KvRequest::Delete { key },
                2 => KvRequest::CompareAndSwap {
                    key,
                    expected: None,
                    new: vec![i as u8],
                },
                3 | 4 => KvRequest::Get { key },
                _ => KvRequest::Put {
                    key,
                    value: i.to_le_bytes().to_vec(),
                },
            }
        })
        .collect();
    let (sequential, digest_1) = execute(&requests, 1);
    let (parallel, digest_8) = execute(&requests, 8);
    assert_eq!(sequential, parallel, "every reply, scans included");
    assert_eq!(digest_1, digest_8);
    assert!(sequential.iter().all(|r| r.starts_with("Ok(")));
}

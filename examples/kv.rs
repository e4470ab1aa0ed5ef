//! A replicated key-value store: point operations on different keys run in
//! parallel; range scans see a consistent cut of the whole table.
//!
//! ```text
//! cargo run --release --example kv                         # 4 replicas + client, in this process
//! cargo run --release --bin cbase-keygen -- --dir deploy   # cluster file + keys
//! cargo run --release --example kv -- --config deploy/cluster.toml --id 0 --key deploy/replica-0.key
//! cargo run --release --example kv -- --config deploy/cluster.toml   # a client
//! ```
//!
//! The client runs a mixed workload (gets, puts, deletes, compare-and-swaps,
//! range scans) from many concurrent tasks. Each task owns its own keys, so
//! it can predict every reply with a sequential model of those keys; at the
//! end a full scan must equal the union of the models. The summary shows
//! operations, throughput, compare-and-swap conflicts, whether every reply and
//! the final state matched the model, and whether every replica's checkpoint
//! digests agree.

#[path = "support/args.rs"]
mod args;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use args::Mode;
use cbase::prelude::*;

/// The most entries one scan returns, whatever limit the client asks for:
/// a reply must fit in a frame.
pub const MAX_SCAN: u32 = 10_000;

// ANCHOR: service
/// A replicated key-value store with string keys and byte-string values.
///
/// Point operations name their key, so operations on different keys are
/// independent and run in parallel on every replica.
///
/// A scan is different: the range `[start, end)` can contain keys that no
/// request has named yet (a `put` of a brand-new key may land inside it), and
/// a rule can only name keys computed from the arguments. So a scan declares
/// the whole table, `#[reads(entries[*])]`: it waits for every earlier write
/// anywhere in the table and holds back every later write until it finishes,
/// so it sees exactly the writes ordered before it. Scans do not conflict with
/// each other or with gets, and point operations on different keys still run
/// in parallel with each other; only writes queue behind a scan.
#[cbase::service]
pub trait Kv {
    /// The value at `key`.
    #[reads(entries[key])]
    fn get(&self, key: String) -> Option<Vec<u8>>;

    /// Sets `key` to `value`; returns the previous value.
    #[writes(entries[key])]
    fn put(&self, key: String, value: Vec<u8>) -> Option<Vec<u8>>;

    /// Removes `key`; returns the value it had.
    #[writes(entries[key])]
    fn delete(&self, key: String) -> Option<Vec<u8>>;

    /// Sets `key` to `new` if its current value is `expected` (`None`: the
    /// key is absent). Otherwise changes nothing and returns the current
    /// value, so the caller can retry with it.
    #[writes(entries[key])]
    fn compare_and_swap(
        &self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<(), Option<Vec<u8>>>;

    /// Up to `limit` entries (at most [`MAX_SCAN`]) with `start <= key < end`
    /// (`end: None`: no upper bound), in key order.
    #[reads(entries[*])]
    fn scan(&self, start: String, end: Option<String>, limit: u32) -> Vec<(String, Vec<u8>)>;
}
// ANCHOR_END: service

// ANCHOR: state
/// The replicated state: one ordered table, named `entries` after its field.
#[derive(Default, cbase::State)]
pub struct Store {
    entries: Table<String, Vec<u8>>,
}
// ANCHOR_END: state

// ANCHOR: impl
impl Kv for Store {
    fn get(&self, key: String) -> Option<Vec<u8>> {
        self.entries.get(&key)
    }

    fn put(&self, key: String, value: Vec<u8>) -> Option<Vec<u8>> {
        self.entries.insert(key, value)
    }

    fn delete(&self, key: String) -> Option<Vec<u8>> {
        self.entries.remove(&key)
    }

    fn compare_and_swap(
        &self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<(), Option<Vec<u8>>> {
        let current = self.entries.get(&key);
        if current != expected {
            return Err(current);
        }
        self.entries.insert(key, new);
        Ok(())
    }

    fn scan(&self, start: String, end: Option<String>, limit: u32) -> Vec<(String, Vec<u8>)> {
        let limit = limit.min(MAX_SCAN) as usize;
        let upper = match end {
            // An empty or inverted range; `BTreeMap::range` would panic on it.
            Some(end) if end <= start => return Vec::new(),
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        let mut found = self.entries.range((Bound::Included(start), upper));
        found.truncate(limit);
        found
    }
}
// ANCHOR_END: impl

const TASKS: u64 = 64;
const KEYS_PER_TASK: u64 = 16;

/// A small deterministic generator, so runs are repeatable.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The key `k` of task `task`. Tasks own disjoint keys, so each task's
/// operations on its keys happen in the order it issues them.
fn key_of(task: u64, k: u64) -> String {
    format!("key-{task:03}-{k:03}")
}

/// What the workload saw.
#[derive(Default)]
struct Tally {
    operations: AtomicU64,
    cas_conflicts: AtomicU64,
    scans: AtomicU64,
    /// Replies that differed from the model (should stay 0).
    mismatches: AtomicU64,
}

/// Runs the workload against `kv`; returns the union of the tasks' models
/// (what the owned keys must hold at the end) and the elapsed time.
async fn workload<I>(
    kv: KvClient<I>,
    ops: u64,
    tally: Arc<Tally>,
) -> Result<(BTreeMap<String, Vec<u8>>, Duration), Box<dyn std::error::Error>>
where
    I: cbase::Invoke<KvRequest, KvResponse> + Clone + 'static,
{
    // Start from a clean slate for the keys this workload owns (a client of a
    // long-running cluster may find them from an earlier run).
    for task in 0..TASKS {
        for k in 0..KEYS_PER_TASK {
            kv.delete(key_of(task, k)).await?;
        }
    }
    let progress = indicatif::ProgressBar::new(ops);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} ops  {per_sec}  eta {eta}")
            .expect("a valid template"),
    );
    let start = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (kv, progress, tally) = (kv.clone(), progress.clone(), Arc::clone(&tally));
        let share = ops / TASKS + u64::from(task < ops % TASKS);
        tasks.push(tokio::spawn(async move {
            let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            let check = |ok: bool| {
                if !ok {
                    tally.mismatches.fetch_add(1, Ordering::Relaxed);
                }
            };
            for i in 0..share {
                let r = mix((task << 32) | i);
                let key = key_of(task, r % KEYS_PER_TASK);
                let value = format!("{task}:{i}").into_bytes();
                match (r >> 16) % 100 {
                    0..40 => check(kv.get(key.clone()).await? == model.get(&key).cloned()),
                    40..70 => {
                        let previous = kv.put(key.clone(), value.clone()).await?;
                        check(previous == model.insert(key, value));
                    }
                    70..80 => check(kv.delete(key.clone()).await? == model.remove(&key)),
                    80..95 => {
                        // Half of the swaps expect a stale value and must fail.
                        let current = model.get(&key).cloned();
                        let expected = if r & 1 == 0 {
                            current.clone()
                        } else {
                            Some(b"stale".to_vec())
                        };
                        let result = kv
                            .compare_and_swap(key.clone(), expected.clone(), value.clone())
                            .await?;
                        if expected == current {
                            check(result.is_ok());
                            model.insert(key, value);
                        } else {
                            tally.cas_conflicts.fetch_add(1, Ordering::Relaxed);
                            check(result == Err(current));
                        }
                    }
                    _ => {
                        // A scan crosses other tasks' keys, which change
                        // concurrently; check the order, and this task's
                        // own keys (which only this task changes) exactly.
                        tally.scans.fetch_add(1, Ordering::Relaxed);
                        let from = key_of(task.saturating_sub(1), 0);
                        let found = kv.scan(from, Some(key_of(task + 1, 0)), 100).await?;
                        check(found.windows(2).all(|w| w[0].0 < w[1].0));
                        let mine: Vec<_> = found
                            .into_iter()
                            .filter(|(k, _)| k.starts_with(&key_of(task, 0)[..8]))
                            .collect();
                        let expected: Vec<_> =
                            model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                        check(mine == expected);
                    }
                }
                tally.operations.fetch_add(1, Ordering::Relaxed);
                progress.inc(1);
            }
            Ok::<_, cbase::ClientError>(model)
        }));
    }
    let mut expected = BTreeMap::new();
    for task in tasks {
        expected.extend(task.await??);
    }
    progress.finish_and_clear();
    Ok((expected, start.elapsed()))
}

/// Compares the store's owned keys with the model; returns how many keys were
/// compared and whether they matched.
async fn final_state_matches<I>(
    kv: &KvClient<I>,
    expected: &BTreeMap<String, Vec<u8>>,
) -> Result<(usize, bool), cbase::ClientError>
where
    I: cbase::Invoke<KvRequest, KvResponse>,
{
    let mut found = Vec::new();
    let mut from = key_of(0, 0);
    let end = key_of(TASKS, 0);
    // Page through the owned range, as a client of a large store would.
    loop {
        let page = kv.scan(from.clone(), Some(end.clone()), 500).await?;
        let Some((last, _)) = page.last() else { break };
        from = format!("{last}\0");
        found.extend(page);
    }
    let expected: Vec<_> = expected
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok((expected.len(), found == expected))
}

fn summary(ops: u64, elapsed: Duration, tally: &Tally, model: (usize, bool)) {
    println!("operations:   {ops}");
    println!("time:         {:.2} s", elapsed.as_secs_f64());
    println!(
        "throughput:   {:.0} operations/s",
        ops as f64 / elapsed.as_secs_f64()
    );
    println!(
        "mix:          {} scans, {} compare-and-swap conflicts (expected ones)",
        tally.scans.load(Ordering::Relaxed),
        tally.cas_conflicts.load(Ordering::Relaxed)
    );
    let mismatches = tally.mismatches.load(Ordering::Relaxed);
    println!(
        "replies:      {}",
        if mismatches == 0 {
            "all match the sequential model".to_owned()
        } else {
            format!("{mismatches} DIFFER from the model")
        }
    );
    println!(
        "final state:  {} keys, {}",
        model.0,
        if model.1 {
            "matches the sequential model"
        } else {
            "DIFFERS from the sequential model"
        }
    );
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cbase::logging::init();
    args::report(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = args::parse_or_exit();
    let ops = cli.ops.unwrap_or(20_000);
    let workers = cli.workers.unwrap_or(16);
    match cli.mode {
        Mode::Local => {
            // ANCHOR: local
            let cluster = LocalCluster::builder()
                .replicas(4)
                .workers(workers)
                .start(|| KvService(Store::default()))
                .await?;
            let kv = KvClient::new(cluster.client()?);
            // ANCHOR_END: local
            println!("4 replicas (f = 1), {workers} workers each, {TASKS} concurrent tasks");
            let tally = Arc::new(Tally::default());
            let (expected, elapsed) = workload(kv.clone(), ops, Arc::clone(&tally)).await?;
            let model = final_state_matches(&kv, &expected).await?;
            summary(ops, elapsed, &tally, model);
            let (checkpoints, agree) = args::digests_agree(&cluster);
            println!(
                "digests:      {checkpoints} checkpoints on every replica, {}",
                if agree { "all agree" } else { "DIFFER" }
            );
            cluster.shutdown().await;
            if !agree || !model.1 || tally.mismatches.load(Ordering::Relaxed) != 0 {
                return Err(
                    "the replicas disagree or the store differs from the sequential model".into(),
                );
            }
        }
        Mode::Replica { config, id, key } => {
            let options = cbase::net::deploy::ReplicaOptions {
                executor: ExecutorBuilder::new().workers(workers),
                data_dir: cli.data.clone(),
                metrics: cli.metrics.clone(),
                listen: cli.listen.clone(),
                ..Default::default()
            };
            let node = cbase::net::deploy::start_replica(
                &config,
                id,
                &key,
                options,
                KvService(Store::default()),
            )
            .await?;
            args::serve_until_interrupted(node).await;
        }
        Mode::Client { config } => {
            let client = cbase::net::deploy::client_from_file(&config, Default::default())?;
            let kv = KvClient::new(client);
            let tally = Arc::new(Tally::default());
            let (expected, elapsed) = workload(kv.clone(), ops, Arc::clone(&tally)).await?;
            let model = final_state_matches(&kv, &expected).await?;
            summary(ops, elapsed, &tally, model);
            if !model.1 || tally.mismatches.load(Ordering::Relaxed) != 0 {
                return Err("the store differs from the sequential model".into());
            }
        }
    }
    Ok(())
}

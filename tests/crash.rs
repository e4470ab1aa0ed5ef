//! Crash tests with real processes: replicas with data directories are
//! killed with SIGKILL at arbitrary points of a workload, one at a time and
//! all four at once, restarted from their directories, and checked:
//! every operation a client saw complete is there, exactly once, and the
//! replicas' checkpoints agree.
//!
//! The test binary plays every role (as `deployment.rs` does): the parent
//! generates the cluster file and keys, and re-runs this binary as each
//! replica and as the client. How many rounds run is bounded
//! (`CBASE_CRASH_ROUNDS`, default 3); when a kill lands is drawn from a
//! seed (`CBASE_CRASH_SEED`), printed on failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cbase::net::config::generate_cluster;
use cbase::net::deploy::{ReplicaOptions, client_from_file, start_replica};
use cbase::prelude::*;

#[cbase::service]
pub trait Ledger {
    /// Records entry `id` under `account`; returns how many it holds.
    #[writes(entries[account])]
    fn record(&self, account: u64, id: u64) -> u64;

    /// How many entries each account holds.
    #[reads(entries[*])]
    fn counts(&self) -> Vec<(u64, u64)>;
}

#[derive(Default, cbase::State)]
pub struct Entries {
    entries: Table<u64, Vec<u64>>,
}

impl Entries {
    /// A ledger that starts with an entry of its own (so the initial state
    /// is not empty: it must reach the disk too).
    fn opened() -> Entries {
        let entries = Entries::default();
        entries.entries.insert(GENESIS, vec![0]);
        entries
    }
}

/// The account of the initial entry; clients record under `0..ACCOUNTS`.
const GENESIS: u64 = 1_000;

impl Ledger for Entries {
    fn record(&self, account: u64, id: u64) -> u64 {
        self.entries.upsert(account, Vec::new, |ids| {
            ids.push(id);
            ids.len() as u64
        })
    }
    fn counts(&self) -> Vec<(u64, u64)> {
        self.entries.fold(Vec::new(), |mut out, account, ids| {
            out.push((*account, ids.len() as u64));
            out
        })
    }
}

const ROLE: &str = "CBASE_CRASH_ROLE";
const DIR: &str = "CBASE_CRASH_DIR";
const ACCOUNTS: u64 = 8;

/// Not a test on its own: the body of the child processes.
#[test]
fn crash_child() {
    let (Ok(role), Ok(dir)) = (std::env::var(ROLE), std::env::var(DIR)) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        if let Some(id) = role.strip_prefix("replica-") {
            let id: u32 = id.parse().unwrap();
            let options = ReplicaOptions {
                executor: ExecutorBuilder::new().workers(4),
                data_dir: Some(dir.join(format!("data-{id}"))),
                ..ReplicaOptions::default()
            };
            let node = start_replica(
                &dir.join("cluster.toml"),
                id,
                &dir.join(format!("replica-{id}.key")),
                options,
                LedgerService(Entries::opened()),
            )
            .await
            .unwrap();
            // Serve until the parent kills us, or until the replica stops on
            // its own (it cannot write its data directory) and says why;
            // never outlive a forgotten test.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(300)) => {}
                why = node.halted() => println!("STOPPED {why}"),
            }
            node.shutdown().await;
        } else if let Some(range) = role.strip_prefix("client-") {
            // Records ids `first..last`, 8 at a time, and prints each one
            // the cluster acknowledged.
            let (first, last) = range.split_once('-').unwrap();
            let (first, last): (u64, u64) = (first.parse().unwrap(), last.parse().unwrap());
            let client = client_from_file(&dir.join("cluster.toml"), Default::default()).unwrap();
            let ledger = LedgerClient::new(client);
            let ids: Vec<u64> = (first..last).collect();
            for chunk in ids.chunks(8) {
                let mut calls = Vec::new();
                for &id in chunk {
                    let ledger = ledger.clone();
                    calls.push(tokio::spawn(async move {
                        (id, ledger.record(id % ACCOUNTS, id).await)
                    }));
                }
                for call in calls {
                    match call.await.unwrap() {
                        (id, Ok(_)) => println!("ACK {id}"),
                        (id, Err(error)) => println!("ERR {id} {error}"),
                    }
                }
            }
            let counts = ledger.counts().await.unwrap();
            assert!(counts.contains(&(GENESIS, 1)), "the initial entry is kept");
            let total: u64 = counts
                .iter()
                .filter(|(account, _)| *account != GENESIS)
                .map(|(_, n)| n)
                .sum();
            println!("TOTAL {total}");
        }
    });
}

/// The tests of this file one at a time: each picks free ports for its
/// cluster, and two picking at once would pick the same.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn free_base_port(count: u16) -> u16 {
    'search: for base in (21_013..60_000).step_by(89) {
        for offset in 0..count {
            if std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_err() {
                continue 'search;
            }
        }
        return base;
    }
    panic!("no free loopback ports");
}

fn spawn_role(role: &str, dir: &Path, stdout: Stdio) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(DIR, dir)
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A role whose files may not grow past `bytes` (`ulimit -f`; the signal
/// that limit raises is ignored, so a write past it fails with "File too
/// large", as a write to a full disk fails with "No space left"): a disk
/// that fills, without needing a small file system.
fn spawn_role_with_file_limit(role: &str, dir: &Path, bytes: u64) -> Child {
    Command::new("sh")
        .args([
            "-c",
            "trap '' XFSZ; ulimit -f \"$BLOCKS\" && exec \"$0\" \"$@\"",
        ])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        // `ulimit -f` counts 512-byte blocks.
        .env("BLOCKS", (bytes / 512).to_string())
        .env(ROLE, role)
        .env(DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The replica processes, killed (SIGKILL) when dropped.
struct Replicas {
    dir: PathBuf,
    children: Vec<Option<Child>>,
}

impl Replicas {
    fn start(dir: &Path) -> Replicas {
        let mut replicas = Replicas {
            dir: dir.to_owned(),
            children: (0..4).map(|_| None).collect(),
        };
        for id in 0..4 {
            replicas.restart(id);
        }
        replicas
    }

    fn kill(&mut self, id: usize) {
        if let Some(mut child) = self.children[id].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self, id: usize) {
        self.kill(id);
        self.children[id] = Some(spawn_role(
            &format!("replica-{id}"),
            &self.dir,
            Stdio::null(),
        ));
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for id in 0..self.children.len() {
            self.kill(id);
        }
    }
}

/// Runs a client process over ids `first..last` until it exits; returns
/// the ids it saw acknowledged and the total it read at the end. While it
/// runs, `meanwhile` is called every 100 ms with the time since it started.
fn run_client(
    dir: &Path,
    first: u64,
    last: u64,
    mut meanwhile: impl FnMut(Duration),
) -> (Vec<u64>, u64) {
    let mut client = spawn_role(&format!("client-{first}-{last}"), dir, Stdio::piped());
    let started = Instant::now();
    loop {
        if let Some(status) = client.try_wait().unwrap() {
            assert!(status.success(), "the client process failed");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "the client did not finish in 240 s"
        );
        meanwhile(started.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut output = String::new();
    std::io::Read::read_to_string(client.stdout.as_mut().unwrap(), &mut output).unwrap();
    for error in output.lines().filter(|l| l.starts_with("ERR ")) {
        eprintln!("client: {error}");
    }
    // The test harness prints its own words before the first line of ours,
    // on the same line: look for the marks anywhere in a line.
    let after = |line: &str, mark: &str| {
        line.find(mark)
            .map(|at| line[at + mark.len()..].trim().to_owned())
    };
    let acked = output
        .lines()
        .filter_map(|l| after(l, "ACK "))
        .map(|id| id.parse().unwrap())
        .collect();
    let total = output
        .lines()
        .find_map(|l| after(l, "TOTAL "))
        .unwrap_or_else(|| panic!("no total in the client's output: {output}"))
        .parse()
        .unwrap();
    (acked, total)
}

/// A small deterministic generator for when kills land.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 29)
}

#[test]
fn replicas_killed_at_any_point_restart_from_their_directories() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let _alone = one_at_a_time();
    let seed: u64 = std::env::var("CBASE_CRASH_SEED")
        .ok()
        .map_or(1, |s| s.parse().unwrap());
    let rounds: u64 = std::env::var("CBASE_CRASH_ROUNDS")
        .ok()
        .map_or(3, |s| s.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    generate_cluster(dir.path(), 4, "127.0.0.1", free_base_port(4), false).unwrap();
    let mut replicas = Replicas::start(dir.path());
    let mut acked_total = 0u64;
    let mut next = 0u64;
    for round in 0..rounds {
        // One replica at a time: killed and restarted while a client works.
        let victim = (mix(seed + round) % 4) as usize;
        let kill_at = Duration::from_millis(200 + mix(seed ^ round) % 1500);
        let mut killed = false;
        let (acked, total) = run_client(dir.path(), next, next + 120, |elapsed| {
            if !killed && elapsed >= kill_at {
                replicas.restart(victim);
                killed = true;
            }
        });
        next += 120;
        acked_total += acked.len() as u64;
        assert_eq!(
            acked.len(),
            120,
            "seed {seed} round {round}: with one replica down at a time every call completes"
        );
        assert_eq!(
            total, acked_total,
            "seed {seed} round {round}: every acknowledged entry, exactly once"
        );

        // Power cut: every replica killed at once, then restarted.
        for id in 0..4 {
            replicas.kill(id);
        }
        for id in 0..4 {
            replicas.restart(id);
        }
        let (acked, total) = run_client(dir.path(), next, next + 8, |_| {});
        next += 8;
        acked_total += acked.len() as u64;
        assert_eq!(
            total, acked_total,
            "seed {seed} round {round}: after every replica restarted, nothing acknowledged is lost"
        );
    }
}

#[test]
fn a_replica_whose_disk_fills_stops_says_why_and_loses_nothing_it_acknowledged() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let _alone = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    generate_cluster(dir.path(), 4, "127.0.0.1", free_base_port(4), false).unwrap();
    let mut replicas = Replicas {
        dir: dir.path().to_owned(),
        children: (0..4).map(|_| None).collect(),
    };
    for id in 0..3 {
        replicas.restart(id);
    }
    // Replica 3's files may grow to 160 KiB: enough to start, not for the
    // workload below (the state grows by 8 bytes a call).
    let mut full = spawn_role_with_file_limit("replica-3", dir.path(), 160 << 10);

    // The others go on without it: every call completes, once.
    let mut acked_total = 0;
    let mut next = 0;
    let mut stopped = None;
    for _ in 0..40 {
        let (acked, total) = run_client(dir.path(), next, next + 200, |_| {});
        next += 200;
        acked_total += acked.len() as u64;
        assert_eq!(
            acked.len(),
            200,
            "with one replica stopped every call completes"
        );
        assert_eq!(total, acked_total, "every acknowledged entry, exactly once");
        if let Some(status) = full.try_wait().unwrap() {
            stopped = Some(status);
            break;
        }
    }
    let sizes: Vec<String> = std::fs::read_dir(dir.path().join("data-3"))
        .map(|files| {
            files
                .flatten()
                .map(|f| {
                    format!(
                        "{:?}: {} bytes",
                        f.file_name(),
                        f.metadata().map_or(0, |m| m.len())
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let status = stopped.unwrap_or_else(|| panic!("replica 3 did not fill its files: {sizes:?}"));
    assert!(
        status.success(),
        "it stopped cleanly, not on a signal: {status}"
    );
    let mut output = String::new();
    std::io::Read::read_to_string(full.stdout.as_mut().unwrap(), &mut output).unwrap();
    let why = output
        .lines()
        .find_map(|line| line.find("STOPPED ").map(|at| line[at + 8..].to_owned()))
        .unwrap_or_else(|| panic!("no reason in replica 3's output: {output}"));
    eprintln!("replica 3 stopped: {why}");
    assert!(
        why.contains("cannot grow") && why.contains("File too large") && why.contains("data-3"),
        "the reason names the error, the file and what to do: {why}"
    );

    // Given room again, it restarts from its directory, catches up, and
    // the cluster keeps everything: a power cut right after, with all
    // four restarted from their directories, loses nothing acknowledged.
    replicas.restart(3);
    let (acked, total) = run_client(dir.path(), next, next + 40, |_| {});
    next += 40;
    acked_total += acked.len() as u64;
    assert_eq!(total, acked_total);
    for id in 0..4 {
        replicas.kill(id);
    }
    for id in 0..4 {
        replicas.restart(id);
    }
    let (acked, total) = run_client(dir.path(), next, next + 8, |_| {});
    acked_total += acked.len() as u64;
    assert_eq!(
        total, acked_total,
        "after the replica that filled its disk restarted, nothing acknowledged is lost"
    );
}

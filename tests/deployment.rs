//! Four replica processes and a client process on loopback, started from a
//! generated cluster file and key files.
//!
//! The test binary plays every role: the parent test generates the files and
//! re-runs this binary as each replica and as the client, choosing the role
//! through an environment variable.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cbase::net::config::generate_cluster;
use cbase::net::deploy::{ReplicaOptions, client_from_file, start_replica};
use cbase::prelude::*;

#[cbase::service]
pub trait Tally {
    #[writes(counts[name])]
    fn add(&self, name: String, by: u64) -> u64;

    #[reads(counts[*])]
    fn total(&self) -> u64;
}

#[derive(Default, cbase::State)]
pub struct Counts {
    counts: Table<String, u64>,
}

impl Tally for Counts {
    fn add(&self, name: String, by: u64) -> u64 {
        self.counts.upsert(
            name,
            || 0,
            |n| {
                *n += by;
                *n
            },
        )
    }
    fn total(&self) -> u64 {
        self.counts.fold(0, |sum, _, n| sum + n)
    }
}

const ROLE: &str = "CBASE_DEPLOYMENT_ROLE";
const DIR: &str = "CBASE_DEPLOYMENT_DIR";

/// Not a test on its own: the body of the child processes.
#[test]
fn deployment_child() {
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
            let key = dir.join(format!("replica-{id}.key"));
            let options = ReplicaOptions {
                executor: ExecutorBuilder::new().workers(4),
                ..ReplicaOptions::default()
            };
            let node = start_replica(
                &dir.join("cluster.toml"),
                id,
                &key,
                options,
                TallyService(Counts::default()),
            )
            .await
            .unwrap();
            // Serve until the parent kills us; never outlive a forgotten test.
            tokio::time::sleep(Duration::from_secs(120)).await;
            node.shutdown().await;
        } else {
            let client = client_from_file(&dir.join("cluster.toml"), Default::default()).unwrap();
            let tally = TallyClient::new(client);
            let mut calls = Vec::new();
            for i in 0..60u64 {
                let tally = tally.clone();
                calls.push(tokio::spawn(async move {
                    tally.add(format!("k{}", i % 6), 1).await.unwrap()
                }));
            }
            for call in calls {
                call.await.unwrap();
            }
            println!("TOTAL={}", tally.total().await.unwrap());
        }
    });
}

fn free_base_port(count: u16) -> u16 {
    'search: for base in (20_000..60_000).step_by(97) {
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
        .args([
            "--exact",
            "deployment_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, role)
        .env(DIR, dir)
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

struct KillOnDrop(Vec<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn four_replica_processes_and_a_client_process() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let generated = generate_cluster(dir.path(), 4, "127.0.0.1", free_base_port(4), false).unwrap();
    assert_eq!(generated.key_paths.len(), 4);
    let _replicas = KillOnDrop(
        (0..4)
            .map(|id| spawn_role(&format!("replica-{id}"), dir.path(), Stdio::null()))
            .collect(),
    );
    let mut client = spawn_role("client", dir.path(), Stdio::piped());
    let started = Instant::now();
    loop {
        if let Some(status) = client.try_wait().unwrap() {
            assert!(status.success(), "the client process failed");
            break;
        }
        if started.elapsed() > Duration::from_secs(90) {
            let _ = client.kill();
            panic!("the client process did not finish in 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut output = String::new();
    std::io::Read::read_to_string(client.stdout.as_mut().unwrap(), &mut output).unwrap();
    assert!(output.contains("TOTAL=60"), "client output: {output}");
}

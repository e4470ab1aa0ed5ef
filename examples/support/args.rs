//! What every example shares: its three ways to run.
//!
//! - no arguments: a local cluster of 4 replicas in this process, and a client;
//! - `--config cluster.toml --id N --key replica-N.key`: one replica, until Ctrl-C;
//! - `--config cluster.toml`: a client of a running cluster.

#![allow(dead_code)]

use std::path::PathBuf;

/// How the example was asked to run.
pub enum Mode {
    /// A local cluster and a client, in this process.
    Local,
    /// One replica from the cluster file and its key.
    Replica {
        config: PathBuf,
        id: u32,
        key: PathBuf,
    },
    /// A client of the cluster in the file.
    Client { config: PathBuf },
}

/// The examples' command line, as clap reads it.
#[derive(clap::Parser, Debug)]
#[command(
    about = "A cbase example: with no arguments, a 4-replica local cluster and a client",
    after_help = "Modes:\n  (no arguments)                                    a 4-replica local cluster and a client\n  \
                  --config cluster.toml --id N --key replica-N.key  one replica (Ctrl-C stops it)\n  \
                  --config cluster.toml                             a client of a running cluster\n"
)]
struct Args {
    /// The cluster file (from cbase-keygen): run a replica (with --id and
    /// --key) or a client of that cluster.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Run this replica of the cluster file.
    #[arg(long, value_name = "N", requires_all = ["config", "key"])]
    id: Option<u32>,
    /// The replica's secret key file.
    #[arg(long, value_name = "FILE", requires_all = ["config", "id"])]
    key: Option<PathBuf>,
    /// How many operations the client runs (per phase for fs).
    #[arg(long, value_name = "N")]
    ops: Option<u64>,
    /// Executor workers per replica.
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Where a replica keeps its files (fs).
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,
    /// Flush every write to the disk (fs).
    #[arg(long)]
    sync: bool,
    /// A replica's data directory: it restarts from there.
    #[arg(long, value_name = "DIR", requires = "id")]
    data: Option<PathBuf>,
    /// Where a replica serves Prometheus metrics (http://ADDR/metrics).
    #[arg(long, value_name = "ADDR", requires = "id")]
    metrics: Option<String>,
    /// Where a replica listens, if not at the cluster file's address (NAT,
    /// containers).
    #[arg(long, value_name = "ADDR", requires = "id")]
    listen: Option<String>,
}

/// Parsed command line: the mode and the example's own options.
pub struct Cli {
    pub mode: Mode,
    /// `--ops N`: how many operations the client runs.
    pub ops: Option<u64>,
    /// `--workers N`: executor workers per replica.
    pub workers: Option<usize>,
    /// `--dir PATH`: where a replica keeps files on disk (the file store).
    pub dir: Option<PathBuf>,
    /// `--sync`: flush every write to the disk (the file store).
    pub sync: bool,
    /// `--data DIR`: the replica's data directory; it restarts from there.
    pub data: Option<PathBuf>,
    /// `--metrics ADDR`: where a replica serves Prometheus metrics.
    pub metrics: Option<String>,
    /// `--listen ADDR`: where a replica listens, if not at the cluster
    /// file's address (NAT, containers).
    pub listen: Option<String>,
}

/// Parses the command line, or exits with what is wrong and the usage
/// (clap's `--help` and errors).
pub fn parse_or_exit() -> Cli {
    let args = <Args as clap::Parser>::parse();
    let mode = match (args.config, args.id, args.key) {
        (Some(config), Some(id), Some(key)) => Mode::Replica { config, id, key },
        (Some(config), _, _) => Mode::Client { config },
        (None, _, _) => Mode::Local,
    };
    Cli {
        mode,
        ops: args.ops,
        workers: args.workers,
        dir: args.dir,
        sync: args.sync,
        data: args.data,
        metrics: args.metrics,
        listen: args.listen,
    }
}

/// Runs a replica until Ctrl-C.
pub async fn serve_until_interrupted(node: cbase::ReplicaNode) {
    println!(
        "replica {} listening on {}; Ctrl-C stops it",
        node.id(),
        node.address()
    );
    let _ = tokio::signal::ctrl_c().await;
    node.shutdown().await;
}

/// Compares the running replicas' checkpoints by sequence number: how many
/// sequence numbers every replica took a checkpoint at, and whether no two
/// replicas' digests differ at any (a replica that caught up by state
/// transfer skipped some checkpoints, so positions would not line up).
pub fn digests_agree(cluster: &cbase::LocalCluster) -> (usize, bool) {
    let agreement = cluster.checkpoint_agreement();
    (agreement.common, agreement.agree())
}

/// Prints an error with its message (not its debug form) and sets the exit code.
pub fn report(result: Result<(), Box<dyn std::error::Error>>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

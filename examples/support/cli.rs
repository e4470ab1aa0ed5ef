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

pub const USAGE: &str = "usage:
  (no arguments)                                   a 4-replica local cluster and a client
  --config cluster.toml --id N --key replica-N.key  run one replica (Ctrl-C stops it)
  --config cluster.toml                            run a client against a running cluster
options: --ops N (client operations; per phase for fs), --workers N (per replica),
         --data DIR (a replica's data directory: it restarts from there),
         --metrics ADDR (a replica serves Prometheus metrics at http://ADDR/metrics),
         --listen ADDR (a replica listens there, not at the cluster file's address),
         --dir PATH (fs: where files live), --sync (fs: flush every write to the disk)";

impl Cli {
    /// Parses `std::env::args`, or explains what is wrong.
    pub fn parse() -> Result<Cli, String> {
        let mut config = None;
        let mut id = None;
        let mut key = None;
        let mut ops = None;
        let mut workers = None;
        let mut dir = None;
        let mut sync = false;
        let mut data = None;
        let mut metrics = None;
        let mut listen = None;
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--config" => config = Some(PathBuf::from(value()?)),
                "--id" => id = Some(value()?.parse::<u32>().map_err(|e| format!("--id: {e}"))?),
                "--key" => key = Some(PathBuf::from(value()?)),
                "--ops" => ops = Some(value()?.parse::<u64>().map_err(|e| format!("--ops: {e}"))?),
                "--workers" => {
                    workers = Some(
                        value()?
                            .parse::<usize>()
                            .map_err(|e| format!("--workers: {e}"))?,
                    )
                }
                "--dir" => dir = Some(PathBuf::from(value()?)),
                "--sync" => sync = true,
                "--data" => data = Some(PathBuf::from(value()?)),
                "--metrics" => metrics = Some(value()?),
                "--listen" => listen = Some(value()?),
                "--help" | "-h" => return Err(String::new()),
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        let mode = match (config, id, key) {
            (None, None, None) => Mode::Local,
            (Some(config), Some(id), Some(key)) => Mode::Replica { config, id, key },
            (Some(config), None, None) => Mode::Client { config },
            (None, ..) => return Err("--id and --key need --config".into()),
            (Some(_), Some(_), None) => return Err("a replica needs --key replica-N.key".into()),
            (Some(_), None, Some(_)) => return Err("a replica needs --id N".into()),
        };
        Ok(Cli {
            mode,
            ops,
            workers,
            dir,
            sync,
            data,
            metrics,
            listen,
        })
    }
}

/// Parses the command line or exits with the usage text.
pub fn parse_or_exit() -> Cli {
    match Cli::parse() {
        Ok(cli) => cli,
        Err(problem) => {
            if !problem.is_empty() {
                eprintln!("error: {problem}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
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

//! A complete program from a service: a local cluster, a replica, one call
//! from the command line, and the cluster's status, behind one `main`.
//!
//! ```no_run
//! # #[cbase::service]
//! # pub trait Counter {
//! #     #[writes(counts[name])]
//! #     fn add(&self, name: String, by: u64) -> u64;
//! # }
//! # #[derive(Default, cbase::State)]
//! # pub struct Counters { counts: cbase::Table<String, u64> }
//! # impl Counter for Counters {
//! #     fn add(&self, name: String, by: u64) -> u64 {
//! #         self.counts.upsert(name, || 0, |n| { *n += by; *n })
//! #     }
//! # }
//! fn main() {
//!     cbase::app::run(|| CounterService(Counters::default()))
//! }
//! ```
//!
//! The program then takes, with `--help` at every level:
//!
//! ```text
//! counter local [--replicas 4] [--cluster-file cluster.toml]
//! counter replica --config cluster.toml --id N --key replica-N.key [--data DIR [--restored]] [--metrics ADDR]
//! counter call add '{"name": "visits", "by": 1}' --config cluster.toml [--key client-ann.key]
//! counter status --config cluster.toml
//! ```
//!
//! `call` takes the method's arguments as a JSON object by argument name
//! (`{"name": "visits", "by": 1}`), an array in order (`["visits", 1]`), or,
//! for a method of one argument, the bare value; it prints the reply as
//! JSON. Keys and cluster files come from `cbase-keygen`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::Serialize;
use serde::de::DeserializeOwned;

use cbase_core::{MethodInfo, Request, Service};
use cbase_net::deploy::{self, ReplicaOptions};
use cbase_net::{ClientConfig, LocalCluster};

/// The command line of a program made with [`run`].
#[derive(Parser, Debug)]
#[command(version, about = "A replicated service built on cbase", long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands of a program made with [`run`].
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Runs a whole cluster in this process until Ctrl-C, and writes its
    /// cluster file so that other processes can call it.
    Local(LocalArgs),
    /// Runs one replica of a cluster until Ctrl-C.
    Replica(ReplicaArgs),
    /// Calls one method of the service and prints the reply as JSON.
    Call(CallArgs),
    /// Asks every replica how it is doing.
    Status(StatusArgs),
}

/// `local`: a cluster in this process.
#[derive(Args, Debug)]
pub struct LocalArgs {
    /// How many replicas (n = 3f+1: 4 tolerates one faulty replica).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub replicas: usize,
    /// Executor workers per replica (default: one per core).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Where to write the cluster file (removed again on Ctrl-C).
    #[arg(long, value_name = "FILE", default_value = "cluster.toml")]
    pub cluster_file: PathBuf,
}

/// `replica`: one replica of a cluster described by files.
#[derive(Args, Debug)]
pub struct ReplicaArgs {
    /// The cluster file (from cbase-keygen).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// This replica's id in the cluster file.
    #[arg(long, value_name = "N")]
    pub id: u32,
    /// This replica's secret key file (from cbase-keygen; readable by its
    /// owner only).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The data directory: the replica keeps its state there and restarts
    /// from it. Without one it keeps everything in memory and gets the
    /// state back from its peers when it restarts.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// The data directory was put back from a copy (a backup) while the
    /// other replicas ran on: start from it, but vote again only once the
    /// peers have said which views they are in.
    #[arg(long, requires = "data")]
    pub restored: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Listen here instead of at the cluster file's address (behind NAT or
    /// in a container, for example 0.0.0.0:7000).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Executor workers (default: one per core).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

/// `call`: one call of any method.
#[derive(Args, Debug)]
pub struct CallArgs {
    /// The method, as named in the service trait.
    pub method: String,
    /// Its arguments as JSON: an object by name, an array in order, or the
    /// bare value of a method's only argument. Omit it for a method without
    /// arguments.
    pub arguments: Option<String>,
    /// The cluster file.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Call as this client (a key file from `cbase-keygen --clients`), the
    /// same caller every time; without it, a fresh identity for this call.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// How long to wait for the reply, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,
}

/// `status`: every replica's view and progress.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The cluster file.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Ask as this client (a key file from `cbase-keygen --clients`): needed
    /// when the cluster file lists the clients it admits.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// How long to wait for each replica, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3)]
    pub wait: u64,
}

/// Why a command failed: printed as `error: ...` with exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The method is not one of the service's.
    #[error("the service has no method `{method}`; its methods are:\n{}", list(.methods))]
    UnknownMethod {
        /// The name given.
        method: String,
        /// The service's methods.
        methods: Vec<MethodInfo>,
    },
    /// The arguments do not decode as the method's.
    #[error("bad arguments for {method}: {problem}")]
    BadArguments {
        /// The method, with its arguments.
        method: MethodInfo,
        /// What is wrong.
        problem: String,
    },
    /// Starting a replica or client from files failed.
    #[error(transparent)]
    Deploy(#[from] deploy::DeployError),
    /// The call failed.
    #[error(transparent)]
    Call(#[from] cbase_core::ClientError),
    /// The local cluster failed to start.
    #[error(transparent)]
    Cluster(#[from] cbase_net::ClusterError),
    /// The replica stopped on its own: it could not write to its data
    /// directory.
    #[error("replica {id} stopped: {why}")]
    Stopped {
        /// The replica.
        id: u32,
        /// Why.
        why: String,
    },
    /// Fewer than 2f+1 replicas answered a status query: the cluster cannot
    /// order requests now.
    #[error(
        "only {answered} of {n} replicas answered; the cluster needs {quorum} to make \
         progress\n{table}"
    )]
    NoQuorum {
        /// The replicas' answers, as `status` prints them.
        table: String,
        /// How many answered.
        answered: usize,
        /// How many replicas the cluster has.
        n: usize,
        /// How many it needs.
        quorum: usize,
    },
    /// Reading or writing a file, or starting the runtime, failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

fn list(methods: &[MethodInfo]) -> String {
    methods
        .iter()
        .map(|method| format!("  {method}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the program: parses the command line (exiting with the usage on a
/// mistake, or with the help it asked for), installs the log subscriber
/// ([`crate::logging::init`]), and runs the command; an error is printed
/// and the process exits with code 1. `make` builds a fresh service: once
/// per replica.
pub fn run<S, F>(make: F)
where
    S: Service,
    S::Request: Serialize + DeserializeOwned,
    S::Response: Serialize + DeserializeOwned,
    F: Fn() -> S,
{
    let matches = command::<S>().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    crate::logging::init();
    // The one place the program's output reaches the terminal: the
    // command's result on standard output, a failure on standard error.
    use std::io::Write;
    match run_command(cli.command, make) {
        Ok(output) => {
            let _ = std::io::stdout().lock().write_all(output.as_bytes());
        }
        Err(error) => {
            let _ = writeln!(std::io::stderr().lock(), "error: {error}");
            std::process::exit(1);
        }
    }
}

/// The command line's definition, with the service's methods listed under
/// `call --help`.
pub fn command<S>() -> clap::Command
where
    S: Service,
{
    let methods = S::Request::methods();
    let command = Cli::command();
    if methods.is_empty() {
        return command;
    }
    let help = format!("Methods:\n{}", list(&methods));
    command.mut_subcommand("call", |call| call.after_help(help))
}

/// Runs one parsed command on a runtime of its own and returns what it has
/// to show (the reply of `call`, the table of `status`; nothing for `local`
/// and `replica`, which log where they listen): what [`run`] does after
/// parsing, for programs that parse their own command line.
pub fn run_command<S, F>(command: Command, make: F) -> Result<String, AppError>
where
    S: Service,
    S::Request: Serialize + DeserializeOwned,
    S::Response: Serialize + DeserializeOwned,
    F: Fn() -> S,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| AppError::Io {
            context: "cannot start the async runtime".into(),
            source,
        })?;
    runtime.block_on(async move {
        match command {
            Command::Local(args) => local(args, make).await.map(|()| String::new()),
            Command::Replica(args) => replica(args, make()).await.map(|()| String::new()),
            Command::Call(args) => call::<S>(&args).await.map(|reply| reply + "\n"),
            Command::Status(args) => {
                let (table, quorum) = status(&args).await?;
                quorum.map(|()| table)
            }
        }
    })
}

async fn local<S, F>(args: LocalArgs, make: F) -> Result<(), AppError>
where
    S: Service,
    S::Request: DeserializeOwned,
    S::Response: Serialize,
    F: Fn() -> S,
{
    let mut builder = LocalCluster::builder().replicas(args.replicas);
    if let Some(workers) = args.workers {
        builder = builder.workers(workers);
    }
    let cluster = builder.start(make).await?;
    write_file(&args.cluster_file, &cluster.config().to_toml())?;
    tracing::info!(
        "{} replicas listening on {}; cluster file {}; Ctrl-C stops them",
        cluster.config().n(),
        cluster
            .config()
            .replicas
            .iter()
            .map(|replica| replica.address.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        args.cluster_file.display()
    );
    wait_for_ctrl_c().await?;
    cluster.shutdown().await;
    let _ = std::fs::remove_file(&args.cluster_file);
    Ok(())
}

async fn replica<S>(args: ReplicaArgs, service: S) -> Result<(), AppError>
where
    S: Service,
    S::Request: DeserializeOwned,
    S::Response: Serialize,
{
    let mut options = ReplicaOptions {
        data_dir: args.data,
        restored: args.restored,
        metrics: args.metrics,
        listen: args.listen,
        ..ReplicaOptions::default()
    };
    if let Some(workers) = args.workers {
        options.executor = options.executor.workers(workers);
    }
    let node = deploy::start_replica(&args.config, args.id, &args.key, options, service).await?;
    tracing::info!(
        "replica {} listening on {}; Ctrl-C stops it",
        node.id(),
        node.address()
    );
    // Until Ctrl-C, or until the replica stops because it cannot write
    // its data directory: then the program exits with the reason.
    let stopped = tokio::select! {
        waited = wait_for_ctrl_c() => {
            waited?;
            None
        }
        why = node.halted() => Some(why),
    };
    let id = node.id();
    node.shutdown().await;
    match stopped {
        None => Ok(()),
        Some(why) => Err(AppError::Stopped { id, why }),
    }
}

/// Makes the request `args` describe, calls it, and returns the reply as
/// JSON.
pub async fn call<S>(args: &CallArgs) -> Result<String, AppError>
where
    S: Service,
    S::Request: Serialize + DeserializeOwned,
    S::Response: Serialize + DeserializeOwned,
{
    let request: S::Request = request_from_json(&args.method, args.arguments.as_deref())?;
    let key = read_key(args.key.as_deref())?;
    let config = ClientConfig {
        timeout: Duration::from_secs(args.timeout),
        key,
        ..ClientConfig::default()
    };
    let client = deploy::client_from_file(&args.config, config)?;
    let response: S::Response = client.call(&request).await?;
    Ok(reply_to_json(&response))
}

/// Decodes a request for `method` from its arguments as JSON (see the
/// module's documentation for the forms accepted).
pub fn request_from_json<R>(method: &str, arguments: Option<&str>) -> Result<R, AppError>
where
    R: Request + DeserializeOwned,
{
    let methods = R::methods();
    let Some(info) = methods.iter().find(|info| info.name == method).cloned() else {
        return Err(AppError::UnknownMethod {
            method: method.to_owned(),
            methods,
        });
    };
    let bad = |problem: String| AppError::BadArguments {
        method: info.clone(),
        problem,
    };
    let arguments = match arguments.map(str::trim) {
        None | Some("") if info.args.is_empty() => serde_json::Value::Object(Default::default()),
        None | Some("") => return Err(bad("none given".into())),
        Some(text) => serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?,
    };
    let by_name = match arguments {
        serde_json::Value::Object(by_name) => by_name,
        serde_json::Value::Array(values) => in_order(&info, values).map_err(bad)?,
        // The bare value of a method's only argument.
        value if info.args.len() == 1 => in_order(&info, vec![value]).map_err(bad)?,
        _ => {
            return Err(bad(
                "give an object by argument name or an array in order".into()
            ));
        }
    };
    let arguments = serde_json::Value::Object(by_name);
    let mut tagged = serde_json::Map::new();
    tagged.insert(info.variant.to_owned(), arguments);
    serde_json::from_value(serde_json::Value::Object(tagged)).map_err(|e| bad(e.to_string()))
}

/// Arguments given in order, named after the method's.
fn in_order(
    info: &MethodInfo,
    values: Vec<serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    if values.len() != info.args.len() {
        return Err(format!(
            "it takes {} argument(s), {} given",
            info.args.len(),
            values.len()
        ));
    }
    Ok(info
        .args
        .iter()
        .map(|(name, _)| (*name).to_owned())
        .zip(values)
        .collect())
}

/// A response as JSON: the method's return value, without the response
/// enum's variant around it.
pub fn reply_to_json<R: Serialize>(response: &R) -> String {
    let value = serde_json::to_value(response).unwrap_or_else(|error| {
        serde_json::Value::String(format!("(the reply cannot be shown as JSON: {error})"))
    });
    let value = match value {
        serde_json::Value::Object(mut tagged) if tagged.len() == 1 => {
            let (_, inner) = tagged.iter_mut().next().expect("one entry");
            inner.take()
        }
        other => other,
    };
    serde_json::to_string_pretty(&value).expect("JSON values always print")
}

/// Asks every replica for its status; returns the table to print and
/// whether a quorum answered.
pub async fn status(args: &StatusArgs) -> Result<(String, Result<(), AppError>), AppError> {
    let cluster =
        cbase_net::ClusterConfig::load(&args.config).map_err(deploy::DeployError::from)?;
    let wait = Duration::from_secs(args.wait.max(1));
    let key = read_key(args.key.as_deref())?;
    let transport = cbase_net::transport::TransportConfig::default();
    let reports = cbase_net::status::query(&cluster, &transport, key, wait).await;
    let table = status_table(&reports);
    let answered = reports.iter().filter(|r| r.status.is_ok()).count();
    let quorum = if answered >= cluster.quorum() {
        Ok(())
    } else {
        Err(AppError::NoQuorum {
            table: table.clone(),
            answered,
            n: cluster.n(),
            quorum: cluster.quorum(),
        })
    };
    Ok((table, quorum))
}

/// One line per replica: view, progress and latest stable checkpoint, or
/// why it did not answer.
pub fn status_table(reports: &[cbase_net::status::StatusReport]) -> String {
    let mut rows = vec![[
        "replica".to_string(),
        "address".into(),
        "view".into(),
        "recovering".into(),
        "delivered".into(),
        "stable".into(),
        "checkpoints".into(),
        "transfers".into(),
    ]];
    let mut problems = Vec::new();
    for report in reports {
        match &report.status {
            Ok(status) => rows.push([
                report.replica.to_string(),
                report.address.clone(),
                status.view.to_string(),
                if status.recovering { "yes" } else { "no" }.into(),
                status.delivered.to_string(),
                status.stable.map_or("-".into(), |(seq, digest)| {
                    format!("{seq} ({})", cbase_net::crypto::short_hex(&digest))
                }),
                status.checkpoints_taken.to_string(),
                status.states_installed.to_string(),
            ]),
            Err(why) => {
                rows.push([
                    report.replica.to_string(),
                    report.address.clone(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
                problems.push(format!("replica {}: {why}", report.replica));
            }
        }
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    let mut table = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        table.push_str(cells.join("  ").trim_end());
        table.push('\n');
    }
    for problem in problems {
        table.push_str(&problem);
        table.push('\n');
    }
    table
}

/// The client key in `path`, if one was given.
fn read_key(path: Option<&Path>) -> Result<Option<cbase_net::crypto::SecretKey>, AppError> {
    path.map(|path| {
        cbase_net::crypto::SecretKey::read_file(path)
            .map_err(|error| AppError::Deploy(deploy::DeployError::from(error)))
    })
    .transpose()
}

fn write_file(path: &Path, text: &str) -> Result<(), AppError> {
    std::fs::write(path, text).map_err(|source| AppError::Io {
        context: format!("cannot write {}", path.display()),
        source,
    })
}

async fn wait_for_ctrl_c() -> Result<(), AppError> {
    tokio::signal::ctrl_c()
        .await
        .map_err(|source| AppError::Io {
            context: "cannot wait for Ctrl-C".into(),
            source,
        })
}

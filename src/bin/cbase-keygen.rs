//! Writes a cluster file and one secret key file per replica.
//!
//! ```text
//! cbase-keygen --dir deploy --replicas 4 --host 127.0.0.1 --base-port 7000
//! cbase-keygen --dir deploy --hosts 10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4
//! ```
//!
//! Each replica then starts with `--config deploy/cluster.toml --id N --key
//! deploy/replica-N.key`; clients need only `cluster.toml`. Secret keys are
//! written readable by their owner only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Writes a cbase cluster file (cluster.toml) and one secret key file per
/// replica (replica-N.key) into a directory.
///
/// Give every replica its key file (and nobody else), and every replica and
/// client the cluster file.
#[derive(Parser, Debug)]
#[command(name = "cbase-keygen", version, about, long_about)]
struct Args {
    /// Where to write the files (created if needed).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// How many replicas: n = 3f+1 tolerates f faulty ones (4 tolerates 1, 7
    /// tolerates 2). Not with --hosts, which gives one host per replica.
    #[arg(long, value_name = "N", default_value_t = 4, conflicts_with = "hosts")]
    replicas: usize,
    /// The host every replica listens on, each at its own port.
    #[arg(
        long,
        value_name = "HOST",
        default_value = "127.0.0.1",
        conflicts_with = "hosts"
    )]
    host: String,
    /// One host per replica, comma-separated (replica 0 first); replicas on
    /// different hosts all listen on the base port.
    #[arg(long, value_name = "HOST,HOST,...", value_delimiter = ',')]
    hosts: Vec<String>,
    /// The first port.
    #[arg(long, value_name = "PORT", default_value_t = 7000)]
    base_port: u16,
    /// Replace the files if they exist.
    #[arg(long)]
    force: bool,
    /// Write a cluster that tolerates no faulty replica (2 or 3 replicas):
    /// more machines than one, and no more safety.
    #[arg(long)]
    allow_no_faults: bool,
    /// Also write a key file per client name (client-NAME.key), comma-
    /// separated: a client started with its key is the same caller across
    /// restarts (`--key` of a program's `call`, `ClientConfig::key`).
    #[arg(long, value_name = "NAME,NAME,...", value_delimiter = ',')]
    clients: Vec<String>,
    /// Write only the client keys of --clients, into a directory that
    /// already has its cluster.
    #[arg(long, requires = "clients", conflicts_with_all = ["hosts", "allow_no_faults"])]
    only_clients: bool,
}

fn main() -> ExitCode {
    cbase::logging::init();
    let args = Args::parse();
    match run(args) {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cbase-keygen: {error}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<String, String> {
    let mut message = if args.only_clients {
        String::new()
    } else {
        write_cluster(&args)?
    };
    for name in &args.clients {
        let (path, public) = cbase::net::config::generate_client_key(&args.dir, name, args.force)
            .map_err(|e| e.to_string())?;
        if !message.is_empty() {
            message.push('\n');
        }
        message.push_str(&format!(
            "wrote {} (public key {})",
            path.display(),
            public.to_hex()
        ));
    }
    Ok(message)
}

/// Writes the cluster file and the replicas' key files.
fn write_cluster(args: &Args) -> Result<String, String> {
    let hosts = if args.hosts.is_empty() {
        vec![args.host.clone(); args.replicas]
    } else {
        args.hosts.clone()
    };
    let n = hosts.len();
    if (2..4).contains(&n) && !args.allow_no_faults {
        return Err(format!(
            "{n} replicas tolerate no faulty replica (f = 0), no more than one would: \
             tolerating f faulty replicas takes n = 3f+1, so use 4 replicas (f = 1) or 7 \
             (f = 2); --allow-no-faults writes it anyway"
        ));
    }
    let generated =
        cbase::net::config::generate_cluster_on(&args.dir, &hosts, args.base_port, args.force)
            .map_err(|e| e.to_string())?;
    let mut message = format!(
        "wrote {} (n = {}, f = {})",
        generated.config_path.display(),
        generated.config.n(),
        generated.config.f
    );
    for path in &generated.key_paths {
        message.push_str(&format!("\nwrote {}", path.display()));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("cbase-keygen").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_reads_as_documented() {
        <Args as clap::CommandFactory>::command().debug_assert();
        let args = parse(&["--dir", "d", "--hosts", "a,b,c,d", "--base-port", "9000"]).unwrap();
        assert_eq!(args.hosts, ["a", "b", "c", "d"]);
        assert_eq!(args.base_port, 9000);
        let error = parse(&["--dir", "d", "--hosts", "a,b", "--host", "x"]).unwrap_err();
        assert!(error.to_string().contains("cannot be used with"), "{error}");
        assert!(parse(&["--replicas", "4"]).is_err(), "--dir is required");
    }

    #[test]
    fn client_keys_are_written_with_the_cluster_or_alone() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("deploy");
        let at = out.to_str().unwrap();
        let said = run(parse(&["--dir", at, "--clients", "alice,bob-2"]).unwrap()).unwrap();
        assert!(said.contains("cluster.toml"), "{said}");
        for name in ["alice", "bob-2"] {
            let path = out.join(format!("client-{name}.key"));
            let key = cbase::net::crypto::SecretKey::read_file(&path).unwrap();
            assert!(said.contains(&key.public().to_hex()), "{said}");
        }
        // Another client for the same cluster, leaving the cluster alone.
        let cluster = std::fs::read_to_string(out.join("cluster.toml")).unwrap();
        let said =
            run(parse(&["--dir", at, "--clients", "carol", "--only-clients"]).unwrap()).unwrap();
        assert!(!said.contains("cluster.toml"), "{said}");
        assert!(out.join("client-carol.key").exists());
        assert_eq!(
            std::fs::read_to_string(out.join("cluster.toml")).unwrap(),
            cluster
        );
        let again = run(parse(&["--dir", at, "--clients", "carol", "--only-clients"]).unwrap());
        assert!(again.unwrap_err().contains("--force"));
        let bad = run(parse(&["--dir", at, "--clients", "../x", "--only-clients"]).unwrap());
        assert!(bad.unwrap_err().contains("letters, digits"));
        assert!(
            parse(&["--dir", at, "--only-clients"]).is_err(),
            "--only-clients needs --clients"
        );
    }

    #[test]
    fn a_cluster_that_tolerates_no_fault_is_refused_unless_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("three");
        let args = parse(&["--dir", out.to_str().unwrap(), "--replicas", "3"]).unwrap();
        let error = run(args).unwrap_err();
        assert!(
            error.contains("f = 0") && error.contains("--allow-no-faults"),
            "{error}"
        );
        assert!(!out.exists(), "nothing written");
        let args = parse(&[
            "--dir",
            out.to_str().unwrap(),
            "--replicas",
            "3",
            "--allow-no-faults",
        ])
        .unwrap();
        assert!(run(args).unwrap().contains("(n = 3, f = 0)"));
        // One replica is a test setup, not a mistake.
        let one = dir.path().join("one");
        let args = parse(&["--dir", one.to_str().unwrap(), "--replicas", "1"]).unwrap();
        assert!(run(args).unwrap().contains("(n = 1, f = 0)"));
    }

    #[test]
    fn overwriting_names_force_and_bad_hosts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("d");
        let dir_arg = out.to_str().unwrap();
        run(parse(&["--dir", dir_arg]).unwrap()).unwrap();
        let error = run(parse(&["--dir", dir_arg]).unwrap()).unwrap_err();
        assert!(error.contains("--force"), "{error}");
        run(parse(&["--dir", dir_arg, "--force"]).unwrap()).unwrap();
        let error =
            run(parse(&["--dir", dir_arg, "--force", "--host", "a host"]).unwrap()).unwrap_err();
        assert!(error.contains("is not a host"), "{error}");
    }
}

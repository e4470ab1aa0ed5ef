//! Writes a cluster file and one secret key file per replica.
//!
//! ```text
//! cbase-keygen --dir deploy --replicas 4 --host 127.0.0.1 --base-port 7000
//! ```
//!
//! Each replica then starts with `--config deploy/cluster.toml --id N --key
//! deploy/replica-N.key`; clients need only `cluster.toml`. Secret keys are
//! written readable by their owner only.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: cbase-keygen --dir DIR [--replicas N (4)] [--host HOST (127.0.0.1)] [--base-port PORT (7000)] [--force]";

fn main() -> ExitCode {
    cbase::logging::init();
    match run(std::env::args().skip(1).collect()) {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cbase-keygen: {error}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<String>) -> Result<String, String> {
    let mut dir = None;
    let mut replicas = 4usize;
    let mut host = "127.0.0.1".to_owned();
    let mut base_port = 7000u16;
    let mut force = false;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--replicas" => replicas = value()?.parse().map_err(|e| format!("--replicas: {e}"))?,
            "--host" => host = value()?,
            "--base-port" => {
                base_port = value()?.parse().map_err(|e| format!("--base-port: {e}"))?
            }
            "--force" => force = true,
            "--help" | "-h" => return Ok(USAGE.to_owned()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let dir = dir.ok_or("--dir is required")?;
    let generated = cbase::net::config::generate_cluster(&dir, replicas, &host, base_port, force)
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

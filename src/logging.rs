//! Logs for programs built on cbase.
//!
//! The library logs through [`tracing`](https://docs.rs/tracing): a replica
//! says when it starts, enters a view, takes and stabilizes a checkpoint and
//! fetches state (`info`; each step of a checkpoint at `debug`), and when a replica it needs is unreachable, a
//! peer is refused or serves bad state (`warn`); a client warns when a
//! replica it needs is unreachable. Nothing is printed until a program
//! installs a subscriber; [`init`] installs the usual one.

use tracing_subscriber::EnvFilter;

/// Prints log lines to standard error, filtered by the `RUST_LOG`
/// environment variable (for example `RUST_LOG=debug` or
/// `RUST_LOG=cbase_net=debug,info`), `info` and above when it is unset.
/// Does nothing if the program installed a subscriber already.
///
/// ```
/// cbase::logging::init();
/// ```
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal, not for a file or a pipe.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

//! Free loopback ports for tests that start replicas at fixed addresses.
//!
//! Ports are taken below the kernel's ephemeral range: a port in it that is
//! free now may be given at any moment to an outgoing connection (every
//! test here opens many) or a listener on port 0, and a test that then
//! binds it fails with "address in use". Below the range only tests that
//! pick ports themselves compete, and they start from different places.

use std::sync::atomic::{AtomicU16, Ordering};

/// Where the kernel's ephemeral range starts (Linux's default if unknown).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// The lowest port handed out.
const LOWEST: u16 = 10_000;

/// The next candidate: spread by process, so that test binaries running at
/// the same time start in different places, then walking up.
fn next_candidate(span: u16) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let room = ephemeral_start().saturating_sub(LOWEST).max(span + 1);
    let start = (std::process::id() % u32::from(room)) as u16;
    let offset = NEXT.fetch_add(span, Ordering::Relaxed);
    LOWEST + (start.wrapping_add(offset)) % (room - span)
}

/// The first of `n` consecutive ports nobody listens on now.
pub fn free_ports(n: u16) -> u16 {
    for _ in 0..10_000 {
        let base = next_candidate(n);
        if (base..base + n).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports below the ephemeral range");
}

//! Byte strings encoded per byte (serde's way for a `Vec<u8>`) against in one
//! piece ([`cbase_core::codec::bytes`]), side by side in one run: the same
//! output, at different costs.
//!
//! `cargo bench -p cbase-core --bench codec` (add `-- --quick` for a short
//! run). For each shape it encodes and decodes both ways, alternating, and
//! prints the medians:
//! - a 1 MiB byte string (a request as large as a default batch may be),
//! - a snapshot of 10^5 entries with 100-byte values (a checkpoint, as a
//!   state transfer ships it and a data directory stores it).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use cbase_core::codec;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct PerByte(Vec<u8>);

#[derive(Serialize, Deserialize)]
struct OnePiece(#[serde(with = "cbase_core::codec::bytes")] Vec<u8>);

type Named = Vec<(String, BTreeMap<Vec<u8>, Vec<u8>>)>;

#[derive(Serialize, Deserialize)]
struct EntriesPerByte(Named);

#[derive(Serialize, Deserialize)]
struct EntriesOnePiece(#[serde(with = "cbase_core::codec::bytes::named_maps")] Named);

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Median encode and decode times of `value` over `rounds`.
fn time<T: Serialize + serde::de::DeserializeOwned>(value: &T, rounds: usize) -> [Duration; 2] {
    let (mut encode, mut decode) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let start = Instant::now();
        let bytes = codec::encode(black_box(value)).expect("encodes");
        encode.push(start.elapsed());
        let start = Instant::now();
        let back: T = codec::decode(black_box(&bytes)).expect("decodes");
        decode.push(start.elapsed());
        drop(black_box(back));
    }
    [median(encode), median(decode)]
}

fn row(shape: &str, per_byte: [Duration; 2], one_piece: [Duration; 2]) {
    for (what, at) in [("encode", 0), ("decode", 1)] {
        println!(
            "| {shape} | {what} | {:.2} ms | {:.2} ms | {:.1}x |",
            per_byte[at].as_secs_f64() * 1e3,
            one_piece[at].as_secs_f64() * 1e3,
            per_byte[at].as_secs_f64() / one_piece[at].as_secs_f64()
        );
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, entries) = if quick { (3, 10_000) } else { (15, 100_000) };

    let payload: Vec<u8> = (0..1 << 20).map(|at: u32| (at % 251) as u8).collect();
    let (plain, fast) = (PerByte(payload.clone()), OnePiece(payload));
    assert_eq!(
        codec::encode(&plain).unwrap(),
        codec::encode(&fast).unwrap(),
        "both ways write the same bytes"
    );

    let map: BTreeMap<Vec<u8>, Vec<u8>> = (0..entries as u64)
        .map(|key| {
            let mut value = vec![0u8; 100];
            value[..8].copy_from_slice(&key.to_le_bytes());
            (codec::encode(&key).unwrap(), value)
        })
        .collect();
    let named = vec![("values".to_string(), map)];
    let (plain_state, fast_state) = (EntriesPerByte(named.clone()), EntriesOnePiece(named));
    assert_eq!(
        codec::encode(&plain_state).unwrap(),
        codec::encode(&fast_state).unwrap(),
        "both ways write the same bytes"
    );

    // Alternate, so that load from elsewhere falls on both alike.
    let (mut request, mut state) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for _ in 0..3 {
        request[0].push(time(&plain, rounds));
        request[1].push(time(&fast, rounds));
        state[0].push(time(&plain_state, rounds / 3));
        state[1].push(time(&fast_state, rounds / 3));
    }
    let pick = |runs: &Vec<[Duration; 2]>| {
        [
            median(runs.iter().map(|r| r[0]).collect()),
            median(runs.iter().map(|r| r[1]).collect()),
        ]
    };
    println!("| shape | way | per byte | in one piece | per byte / one piece |");
    println!("|---|---|---:|---:|---:|");
    row("1 MiB byte string", pick(&request[0]), pick(&request[1]));
    row(
        &format!("snapshot of {entries} entries, 100-byte values"),
        pick(&state[0]),
        pick(&state[1]),
    );
}

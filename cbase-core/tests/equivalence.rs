//! A bank workload gives identical replies and an identical state digest with
//! one worker (the sequential baseline) and with sixteen, over many seeds;
//! and the digest kept up to date as requests commit is always the one
//! computed from scratch over the final state (checked in `run_bank`).

mod common;

use common::{BankRequest, run_bank};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn workload(seed: u64, len: usize) -> Vec<BankRequest> {
    let mut rng = StdRng::seed_from_u64(seed);
    let accounts = 24u64;
    let mut requests: Vec<BankRequest> = (0..accounts)
        .map(|id| BankRequest::Open { id, amount: 100 })
        .collect();
    let id = |rng: &mut StdRng| rng.gen_range(0..accounts + 2); // sometimes unknown
    for _ in 0..len {
        let request = match rng.gen_range(0..100) {
            0..40 => BankRequest::Transfer {
                from: id(&mut rng),
                to: id(&mut rng),
                amount: rng.gen_range(0..60),
            },
            40..50 => BankRequest::Settle {
                moves: (0..rng.gen_range(0..5))
                    .map(|_| (id(&mut rng), id(&mut rng), rng.gen_range(0..30)))
                    .collect(),
            },
            50..62 => BankRequest::Charge { id: id(&mut rng) },
            62..82 => BankRequest::Balance { id: id(&mut rng) },
            82..90 => BankRequest::Exists { id: id(&mut rng) },
            90..96 => BankRequest::Total,
            96..98 => BankRequest::Lottery,
            _ => BankRequest::Explode { id: id(&mut rng) },
        };
        requests.push(request);
    }
    requests
}

#[test]
fn sequential_and_parallel_runs_agree() {
    for seed in 0..40 {
        let requests = workload(seed, 1500);
        let (sequential, sequential_digest) = run_bank(1, requests.clone());
        let (parallel, parallel_digest) = run_bank(16, requests);
        for (tag, (s, p)) in sequential.iter().zip(&parallel).enumerate() {
            assert_eq!(s, p, "seed {seed}: reply {tag} differs");
        }
        assert_eq!(
            sequential_digest, parallel_digest,
            "seed {seed}: states diverged"
        );
    }
}

#[test]
fn money_is_conserved() {
    let mut requests = workload(7, 3000);
    requests.push(BankRequest::Total);
    let explosions = requests
        .iter()
        .filter(|r| matches!(r, BankRequest::Explode { .. }))
        .count() as u64;
    let (replies, _) = run_bank(8, requests);
    let total = replies.last().unwrap().clone().unwrap().unwrap();
    // An explosion debits one unit and then panics: the debit is dropped.
    assert!(explosions > 0);
    assert_eq!(total, 24 * 100);
}

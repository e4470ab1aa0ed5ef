//! Every decoder of network input, fed random and mutated bytes: no panic,
//! and no allocation out of proportion to the input.
//!
//! `FUZZ_INPUTS=N` sets how many inputs each decoder gets (default 50,000,
//! a few seconds); the seed is printed so a failure replays exactly with
//! `FUZZ_SEED=S`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use cbase_core::codec;
use cbase_net::crypto::SecretKey;
use cbase_net::message::{
    ClientBatch, ClientMessage, ClientRequest, Commit, MAX_BATCH_REQUESTS, PrePrepare, Prepare,
    Proposal, READS_PER_FRAME, ReplicaMessage, Reply, ReplyMessage, RequestBatch, domain,
    pre_prepare_header,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Counts live heap bytes and the high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The heap counters are the whole process's: tests that read them run one
/// at a time, or one's allocations land in the other's peak.
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn measuring() -> std::sync::MutexGuard<'static, ()> {
    MEASURING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn inputs() -> usize {
    std::env::var("FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000)
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_cba5e)
}

/// Valid encodings of every message kind, to mutate.
fn corpus() -> Vec<Vec<u8>> {
    let client = SecretKey::from_seed([3; 32]);
    let primary = SecretKey::from_seed([1; 32]);
    let batch = ClientBatch::sign(
        RequestBatch {
            client: client.public(),
            requests: vec![
                ClientRequest {
                    lane: 1,
                    number: 7,
                    operation: vec![1, 2, 3],
                },
                ClientRequest {
                    lane: 2,
                    number: 9,
                    operation: vec![],
                },
            ],
        },
        &client,
    );
    let proposal = Proposal {
        timestamp: 42,
        batches: vec![batch.clone()],
    };
    let digest = proposal.digest();
    let signature = primary.sign(domain::PRE_PREPARE, &pre_prepare_header(0, 1, &digest));
    let messages = vec![
        codec::encode(&ReplicaMessage::PrePrepare(PrePrepare {
            view: 0,
            seq: 1,
            digest,
            proposal,
            signature,
        })),
        codec::encode(&ReplicaMessage::Prepare(Prepare {
            view: 0,
            seq: 1,
            digest,
            replica: 2,
            signature,
        })),
        codec::encode(&ReplicaMessage::Commit(Commit {
            view: 0,
            seq: 1,
            digest,
            replica: 2,
        })),
        codec::encode(&ReplicaMessage::Forward(batch.clone())),
        codec::encode(&ClientMessage::Requests(batch)),
        codec::encode(&ClientMessage::Service {
            service: "Bank".to_string(),
            fingerprint: 0x0123_4567_89ab_cdef,
        }),
        codec::encode(&ReplyMessage::Refused("not admitted".to_string())),
        codec::encode(&ReplyMessage::Replies(vec![Reply {
            view: 0,
            lane: 1,
            number: 7,
            replica: 0,
            result: vec![0, 1],
        }])),
    ];
    messages
        .into_iter()
        .map(|m| m.expect("valid messages encode"))
        .collect()
}

fn mutate(rng: &mut StdRng, corpus: &[Vec<u8>]) -> Vec<u8> {
    match rng.gen_range(0..5) {
        // Pure noise.
        0 => (0..rng.gen_range(0..256)).map(|_| rng.r#gen()).collect(),
        // A valid message with bytes flipped.
        1 => {
            let mut bytes = corpus[rng.gen_range(0..corpus.len())].clone();
            for _ in 0..rng.gen_range(1..8) {
                if !bytes.is_empty() {
                    let at = rng.gen_range(0..bytes.len());
                    bytes[at] ^= 1 << rng.gen_range(0..8);
                }
            }
            bytes
        }
        // Truncated.
        2 => {
            let bytes = &corpus[rng.gen_range(0..corpus.len())];
            bytes[..rng.gen_range(0..bytes.len().max(1))].to_vec()
        }
        // A huge length claim spliced in (varint 0xFD + u64).
        3 => {
            let mut bytes = corpus[rng.gen_range(0..corpus.len())].clone();
            let at = rng.gen_range(0..bytes.len().max(1));
            let mut claim = vec![0xFD];
            // Spread over the magnitudes, so that claims under the codec's
            // decode limit (256 MiB) come often, not one time in 2^36.
            let magnitude = rng.gen_range(20..64);
            let claim_len = (1u64 << magnitude) | rng.gen_range(0..1u64 << magnitude);
            claim.extend_from_slice(&claim_len.to_le_bytes());
            bytes.splice(at..at, claim);
            bytes
        }
        // Random bytes overwritten in place.
        _ => {
            let mut bytes = corpus[rng.gen_range(0..corpus.len())].clone();
            let at = rng.gen_range(0..bytes.len().max(1));
            let end = (at + rng.gen_range(1..16)).min(bytes.len());
            for byte in &mut bytes[at..end] {
                *byte = rng.r#gen();
            }
            bytes
        }
    }
}

#[test]
fn network_decoders_survive_random_and_mutated_input() {
    let _alone = measuring();
    let (count, seed) = (inputs(), seed());
    eprintln!("fuzzing each decoder with {count} inputs, FUZZ_SEED={seed}");
    let corpus = corpus();
    let mut rng = StdRng::seed_from_u64(seed);
    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let mut decoded = [0usize; 3];
    for _ in 0..count {
        let input = mutate(&mut rng, &corpus);
        decoded[0] += codec::decode::<ReplicaMessage>(&input).is_ok() as usize;
        decoded[1] += codec::decode::<ClientMessage>(&input).is_ok() as usize;
        decoded[2] += codec::decode::<ReplyMessage>(&input).is_ok() as usize;
        // A decoded message must survive the checks the protocol applies.
        if let Ok(ClientMessage::Requests(batch)) = codec::decode::<ClientMessage>(&input) {
            let _ = batch.verify();
        }
    }
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!("decoded (replica, client, reply): {decoded:?}; peak extra heap {peak} bytes");
    // Inputs are under 1 KiB; decoders may pre-allocate a little, never the
    // gigabytes a length prefix can claim.
    assert!(
        peak < 16 * 1024 * 1024,
        "a decoder allocated {peak} bytes for a small input"
    );
    assert!(
        decoded.iter().sum::<usize>() > 0,
        "the mutations never produced a valid message"
    );
}

/// The encoding of `message` with its last sequence (encoded empty, then
/// followed by `tail`) replaced by `count` copies of `element`.
fn with_elements(message: &[u8], tail: usize, count: usize, element: &[u8]) -> Vec<u8> {
    let head = &message[..message.len() - tail - 1];
    let mut frame = head.to_vec();
    frame.extend(codec::encode(&(count as u64)).unwrap());
    for _ in 0..count {
        frame.extend_from_slice(element);
    }
    frame.extend_from_slice(&message[message.len() - tail..]);
    frame
}

/// The most heap `decode` takes at once for `frame`, and whether it decoded.
fn peak_decoding<T: serde::de::DeserializeOwned>(frame: &[u8]) -> (usize, bool) {
    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let decoded = codec::decode::<T>(frame).is_ok();
    (
        PEAK.load(Ordering::Relaxed).saturating_sub(baseline),
        decoded,
    )
}

/// A frame of the largest size a replica takes (16 MiB) full of requests
/// with empty operations, 3 bytes each on the wire and 40 in memory, or of
/// reads, 2 bytes each and 32 in memory: decoding it must not take memory
/// out of proportion to the frame. Sequences longer than any batch or frame
/// may hold are refused from their length prefix.
#[test]
fn frames_of_many_tiny_elements_are_refused_without_amplifying_memory() {
    let _alone = measuring();
    const FRAME: usize = 16 << 20;
    let client = SecretKey::from_seed([3; 32]).public();
    let empty_batch = codec::encode(&ClientMessage::Requests(ClientBatch {
        batch: RequestBatch {
            client,
            requests: Vec::new(),
        },
        signature: None,
    }))
    .unwrap();
    // After the requests: the signature, `None`.
    let requests = with_elements(&empty_batch, 1, FRAME / 3, &[0, 0, 0]);
    let (peak, decoded) = peak_decoding::<ClientMessage>(&requests);
    assert!(!decoded, "{} requests in one batch", FRAME / 3);
    assert!(peak < 1 << 20, "decoding a 16 MiB frame took {peak} bytes");

    let empty_reads = codec::encode(&ClientMessage::Reads(Vec::new())).unwrap();
    let reads = with_elements(&empty_reads, 0, FRAME / 2, &[0, 0]);
    let (peak, decoded) = peak_decoding::<ClientMessage>(&reads);
    assert!(!decoded, "{} reads in one frame", FRAME / 2);
    assert!(peak < 1 << 20, "decoding a 16 MiB frame took {peak} bytes");

    // What a batch and a frame may hold still decodes.
    let most = with_elements(&empty_batch, 1, MAX_BATCH_REQUESTS, &[0, 0, 0]);
    assert!(matches!(
        codec::decode::<ClientMessage>(&most),
        Ok(ClientMessage::Requests(batch)) if batch.batch.requests.len() == MAX_BATCH_REQUESTS
    ));
    let most = with_elements(&empty_reads, 0, READS_PER_FRAME, &[0, 0]);
    assert!(matches!(
        codec::decode::<ClientMessage>(&most),
        Ok(ClientMessage::Reads(reads)) if reads.len() == READS_PER_FRAME
    ));

    // A faulty replica's answers to a client, likewise.
    let empty_replies = codec::encode(&ReplyMessage::Replies(Vec::new())).unwrap();
    let replies = with_elements(&empty_replies, 0, FRAME / 5, &[0, 0, 0, 0, 0]);
    let (peak, decoded) = peak_decoding::<ReplyMessage>(&replies);
    assert!(!decoded, "{} replies in one frame", FRAME / 5);
    assert!(peak < 1 << 20, "decoding a 16 MiB frame took {peak} bytes");
}

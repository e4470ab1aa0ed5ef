//! Requests into batches: a client's requests issued together travel as
//! one batch, sized without encoding it so that it stays within the
//! replicas' limits ([`batch_and_sign`]).

use std::sync::Arc;

use cbase_core::codec;
use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{BatchTicket, ClientConfig, Framed, SentBatch, Shared};
use crate::crypto::SecretKey;
use crate::message::{ClientBatch, ClientMessage, ClientRequest, RequestBatch};

/// Encoded sizes of one client's signed batches, computed without encoding
/// them (the codec's varint encoding makes them easy to add up).
#[derive(Clone, Copy, Debug)]
pub(super) struct BatchSizes {
    /// The encoded size of a signed batch with no requests.
    empty: usize,
}

impl BatchSizes {
    /// The sizes of batches signed by `key`.
    pub(super) fn new(key: &SecretKey) -> BatchSizes {
        let empty = ClientBatch::sign(
            RequestBatch {
                client: key.public(),
                requests: Vec::new(),
            },
            key,
        );
        BatchSizes {
            empty: codec::encode(&empty)
                .expect("request batches always encode")
                .len(),
        }
    }

    /// The encoded size of `request` within a batch.
    pub(super) fn request(request: &ClientRequest) -> usize {
        varint_len(u64::from(request.lane))
            + varint_len(request.number)
            + BatchSizes::operation(&request.operation)
    }

    /// The encoded size of a request's `operation` field.
    pub(super) fn operation(operation: &[u8]) -> usize {
        varint_len(operation.len() as u64) + operation.len()
    }

    /// The encoded size of a signed batch of `count` requests whose own
    /// sizes add up to `request_bytes`.
    pub(super) fn batch(&self, count: usize, request_bytes: usize) -> usize {
        // The empty batch's request count takes one byte.
        self.empty - 1 + varint_len(count as u64) + request_bytes
    }
}

/// The bytes the codec's varint encoding of `value` takes.
fn varint_len(value: u64) -> usize {
    match value {
        0..=250 => 1,
        251..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// The requests of the batch being filled, and their size.
struct Filling {
    count: usize,
    request_bytes: usize,
}

impl Filling {
    /// Whether a request of `bytes` bytes joins the batch, within `max_batch`
    /// requests and `limit` bytes. The first request always does (the caller
    /// checked that it fits alone).
    fn admit(&mut self, bytes: usize, sizes: &BatchSizes, max_batch: usize, limit: usize) -> bool {
        let fits = self.count == 0
            || (self.count < max_batch
                && sizes.batch(self.count + 1, self.request_bytes + bytes) <= limit);
        if fits {
            self.count += 1;
            self.request_bytes += bytes;
        }
        fits
    }
}

/// Signs whatever requests are ready as one batch and sends it to the primary,
/// keeping at most `batches_in_flight` batches unanswered. A batch takes
/// requests as long as it stays within `max_batch` requests and
/// `max_request_bytes` bytes; the request that would not fit starts the next.
pub(super) async fn batch_and_sign(
    key: SecretKey,
    sizes: BatchSizes,
    mut requests: mpsc::UnboundedReceiver<(ClientRequest, oneshot::Sender<Framed>)>,
    connections: Vec<mpsc::Sender<Arc<Vec<u8>>>>,
    shared: Arc<Shared>,
    config: ClientConfig,
) {
    let in_flight = Arc::new(Semaphore::new(config.batches_in_flight));
    let mut held_over = None;
    loop {
        let first = match held_over.take() {
            Some(first) => first,
            None => match requests.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        // While earlier batches are unanswered, requests pile up in the channel.
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let (max_batch, limit) = (config.max_batch, config.max_request_bytes);
        let mut filling = Filling {
            count: 0,
            request_bytes: 0,
        };
        filling.admit(BatchSizes::request(&first.0), &sizes, max_batch, limit);
        let mut ready = vec![first];
        while ready.len() < max_batch {
            match requests.try_recv() {
                Ok(next) => {
                    if filling.admit(BatchSizes::request(&next.0), &sizes, max_batch, limit) {
                        ready.push(next);
                    } else {
                        held_over = Some(next);
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let (requests_in_batch, waiters): (Vec<_>, Vec<_>) = ready.into_iter().unzip();
        let batch = RequestBatch {
            client: key.public(),
            requests: requests_in_batch,
        };
        let first = if config.sign_every_batch {
            ClientBatch::sign(batch.clone(), &key)
        } else {
            ClientBatch::unsigned(batch.clone())
        };
        let frame = Arc::new(
            codec::encode(&ClientMessage::Requests(first)).expect("requests always encode"),
        );
        let sent = Arc::new(SentBatch {
            batch,
            key: key.clone(),
            first: Arc::clone(&frame),
            signed: std::sync::OnceLock::new(),
        });
        // Released by the batch's calls: when the first completes, or when
        // the linger time passes (see `run_on_lane`).
        let ticket = BatchTicket(Arc::new(Mutex::new(Some(permit))));
        // A full queue means the replica is not keeping up; the
        // retransmission timer will send the batch, signed, to every replica.
        if config.sign_every_batch {
            let view = shared.view.load(std::sync::atomic::Ordering::Relaxed);
            // Connections are in replica id order (see `NetClient::connect`).
            let primary = &connections[(view % connections.len() as u64) as usize];
            let _ = primary.try_send(Arc::clone(&sent.first));
        } else {
            // Unsigned, each copy authenticated by its connection: every
            // replica must have it from the client itself (see the
            // protocol's vouching rule).
            for connection in &connections {
                let _ = connection.try_send(Arc::clone(&sent.first));
            }
        }
        for waiter in waiters {
            let _ = waiter.send((Arc::clone(&sent), ticket.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(lane: u32, number: u64, len: usize) -> ClientRequest {
        ClientRequest {
            lane,
            number,
            operation: vec![3; len],
        }
    }

    fn encoded_batch(key: &SecretKey, requests: Vec<ClientRequest>) -> usize {
        let batch = ClientBatch::sign(
            RequestBatch {
                client: key.public(),
                requests,
            },
            key,
        );
        codec::encode(&batch).unwrap().len()
    }

    #[test]
    fn batch_sizes_are_the_encoded_sizes() {
        let key = SecretKey::from_seed([5; 32]);
        let sizes = BatchSizes::new(&key);
        let lanes = [0, 250, 251, 70_000, u32::MAX];
        let numbers = [1, 250, 251, 65_535, 65_536, 1 << 32, u64::MAX];
        let lens = [0, 1, 250, 251, 65_536, 100_000];
        let mut all = Vec::new();
        for (i, &len) in lens.iter().enumerate() {
            for (j, &lane) in lanes.iter().enumerate() {
                let one = request(lane, numbers[(i + j) % numbers.len()], len);
                let bytes = BatchSizes::request(&one);
                assert_eq!(
                    sizes.batch(1, bytes),
                    encoded_batch(&key, vec![one.clone()])
                );
                all.push(one);
            }
        }
        // Batches of up to 300 requests: the request count takes 1 or 3 bytes.
        let small: Vec<_> = (0..300).map(|i| request(i, u64::from(i) + 1, 7)).collect();
        for count in [0, 1, 2, 250, 251, 300] {
            let requests = small[..count].to_vec();
            let bytes = requests.iter().map(BatchSizes::request).sum();
            assert_eq!(sizes.batch(count, bytes), encoded_batch(&key, requests));
        }
        let bytes = all.iter().map(BatchSizes::request).sum();
        assert_eq!(sizes.batch(all.len(), bytes), encoded_batch(&key, all));
    }

    #[test]
    fn batches_are_split_within_the_limit_and_no_request_is_refused_for_its_neighbours() {
        let key = SecretKey::from_seed([6; 32]);
        let sizes = BatchSizes::new(&key);
        let limit = 10_000;
        let max_batch = 8;
        // Each fits alone; many do not fit together.
        let lens: Vec<usize> = (0..200)
            .map(|i| [10, 3_000, 9_800, 600, 4_999][i % 5])
            .collect();
        let queue: Vec<_> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| request(i as u32 % 4, i as u64 + 1, len))
            .collect();
        for one in &queue {
            assert!(sizes.batch(1, BatchSizes::request(one)) <= limit);
        }
        // The batching loop: take requests while they fit, hold one over.
        let mut batches: Vec<Vec<ClientRequest>> = Vec::new();
        let mut next = queue.iter().peekable();
        while next.peek().is_some() {
            let mut filling = Filling {
                count: 0,
                request_bytes: 0,
            };
            let mut batch = Vec::new();
            while let Some(one) = next.peek() {
                if !filling.admit(BatchSizes::request(one), &sizes, max_batch, limit) {
                    break;
                }
                batch.push((*one).clone());
                next.next();
            }
            assert!(
                !batch.is_empty(),
                "a batch takes at least its first request"
            );
            batches.push(batch);
        }
        assert!(batches.len() > 200 / max_batch, "the limit split batches");
        assert!(
            batches.iter().any(|b| b.len() > 1),
            "small requests share batches"
        );
        let mut sent = Vec::new();
        for batch in batches {
            assert!(batch.len() <= max_batch);
            let bytes = encoded_batch(&key, batch.clone());
            assert!(bytes <= limit, "a batch of {bytes} bytes");
            sent.extend(batch);
        }
        assert_eq!(sent, queue, "every request is sent, in order");
    }
}

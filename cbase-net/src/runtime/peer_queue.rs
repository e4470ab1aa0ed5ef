//! Frames waiting to be written to one peer replica, bounded in bytes.
//!
//! A peer that stops reading its connection (a faulty one, or one on a
//! link that stalled) leaves what is sent to it queued here. Counting
//! frames alone let that be up to 65,536 frames of up to a frame's size
//! each: a faulty peer asking for state parts (up to 64 a second, each
//! answered with a frame) and reading nothing could make a replica hold a
//! gigabyte more every second. So the queue is bounded in bytes too; a frame
//! that does not fit is dropped, as one sent to a peer that is down is (the
//! protocol recovers lost messages: retransmitted requests, status
//! messages, view changes, state transfers asked again). The first frame
//! always fits, so a peer that reads gets even the largest.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::byte_bound::ByteBound;

/// The most bytes waiting for one peer.
pub const PEER_QUEUE_BYTES: usize = 64 << 20;

/// The most frames waiting for one peer.
const PEER_QUEUE_FRAMES: usize = 65_536;

/// The sending side of one peer's queue; cloning shares it.
#[derive(Clone, Debug)]
pub struct PeerQueue {
    frames: mpsc::Sender<Arc<Vec<u8>>>,
    bytes: Arc<ByteBound>,
}

/// The writer's side: takes frames, and gives their bytes back once
/// written.
#[derive(Debug)]
pub struct PeerOutbox {
    pub frames: mpsc::Receiver<Arc<Vec<u8>>>,
    bytes: Arc<ByteBound>,
}

/// A fresh, empty queue for one peer.
pub fn peer_queue() -> (PeerQueue, PeerOutbox) {
    let (frames, receiver) = mpsc::channel(PEER_QUEUE_FRAMES);
    let bytes = Arc::new(ByteBound::new(PEER_QUEUE_BYTES));
    (
        PeerQueue {
            frames,
            bytes: Arc::clone(&bytes),
        },
        PeerOutbox {
            frames: receiver,
            bytes,
        },
    )
}

impl PeerQueue {
    /// Queues `frame` if it fits; false if it was dropped.
    pub fn try_send(&self, frame: Arc<Vec<u8>>) -> bool {
        let len = frame.len();
        if self.bytes.reserve(len).is_none() {
            return false;
        }
        if self.frames.try_send(frame).is_err() {
            self.bytes.release(len);
            return false;
        }
        true
    }
}

impl PeerOutbox {
    /// The frames of `bytes` bytes taken off the queue were written (or
    /// given up on).
    pub fn written(&self, bytes: usize) {
        self.bytes.release(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that reads nothing: what waits for it stays within the bound
    /// whatever is sent, and what it reads makes room again.
    #[test]
    fn what_waits_for_a_peer_that_reads_nothing_is_bounded_in_bytes() {
        let (queue, mut outbox) = peer_queue();
        let frame = Arc::new(vec![0u8; 16 << 20]);
        let queued = (0..1_000)
            .filter(|_| queue.try_send(Arc::clone(&frame)))
            .count();
        assert_eq!(queued * frame.len(), PEER_QUEUE_BYTES);
        let taken = outbox.frames.try_recv().unwrap();
        outbox.written(taken.len());
        assert!(queue.try_send(Arc::clone(&frame)), "room again");
        assert!(!queue.try_send(frame));
        // The first frame fits whatever its size.
        let (empty, _outbox) = peer_queue();
        assert!(empty.try_send(Arc::new(vec![0u8; 2 * PEER_QUEUE_BYTES])));
        assert!(!empty.try_send(Arc::new(vec![0u8; 1])));
    }
}

//! Serving this replica's recent checkpoints to peers that fell behind, one
//! chunk of the encoded checkpoint per request (see the protocol's
//! `state_transfer` module for the receiving side).

use std::sync::Arc;

use crate::message::{ReplicaMessage, Seq};

use super::checkpoints::CheckpointStore;

/// The most state bytes in one reply: large enough that a reply's fixed
/// costs (a request, a frame, a MAC) are negligible, small enough that one
/// reply does not hold a connection for long.
const STATE_CHUNK: usize = 1 << 20;

/// Room left in a frame for the reply's other fields (message tag, sequence
/// number, offset, total and chunk length, each at most a 10-byte varint).
const REPLY_OVERHEAD: usize = 64;

/// Encodes checkpoints on demand and cuts them into frame-sized chunks.
#[derive(Debug)]
pub(super) struct StateServer {
    chunk: usize,
    /// The checkpoint encoded last: a transfer asks for every chunk of the
    /// same one, so it is encoded once, not once per chunk.
    encoded: Option<(Seq, Arc<Vec<u8>>)>,
}

impl StateServer {
    /// A server whose replies fit in frames of `max_frame` bytes.
    pub(super) fn new(max_frame: usize) -> StateServer {
        StateServer {
            chunk: chunk_len(max_frame),
            encoded: None,
        }
    }

    /// The reply carrying the chunk of checkpoint `seq` that starts at
    /// `offset`; `None` if this replica no longer has that checkpoint or the
    /// offset is past its end (a confused or lying peer: nothing to send).
    /// The checkpoint is materialized and encoded once, for its first chunk.
    pub(super) fn reply(
        &mut self,
        store: &CheckpointStore,
        seq: Seq,
        offset: u64,
    ) -> Option<ReplicaMessage> {
        let encoded = match &self.encoded {
            Some((cached, bytes)) if *cached == seq => Arc::clone(bytes),
            _ => {
                let (_, materialize) = store.get(seq)?;
                let bytes = Arc::new(
                    cbase_core::codec::encode(&*materialize.build())
                        .expect("checkpoints always encode"),
                );
                self.encoded = Some((seq, Arc::clone(&bytes)));
                bytes
            }
        };
        let start = usize::try_from(offset)
            .ok()
            .filter(|&s| s < encoded.len())?;
        let end = encoded.len().min(start + self.chunk);
        Some(ReplicaMessage::StateReply {
            seq,
            offset,
            total: encoded.len() as u64,
            chunk: encoded[start..end].to_vec(),
        })
    }
}

/// The state bytes per reply for frames of at most `max_frame` bytes.
fn chunk_len(max_frame: usize) -> usize {
    STATE_CHUNK
        .min(max_frame.saturating_sub(REPLY_OVERHEAD))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::CheckpointState;
    use cbase_core::Snapshot;

    /// A store holding checkpoint `seq`, whose one container holds one
    /// entry of `bytes` bytes.
    fn store(seq: Seq, bytes: usize) -> CheckpointStore {
        let entries = [(vec![1u8], vec![7u8; bytes])].into();
        let snapshot = Snapshot::from_parts(vec![("t".to_owned(), entries)]);
        let state = CheckpointState::new(snapshot, Default::default(), 1_000 + seq);
        CheckpointStore::new(seq, state.digest(), state)
    }

    #[test]
    fn chunks_fit_the_frame_and_reassemble_to_the_checkpoint() {
        let max_frame = 4096;
        let recent = store(8, 20_000);
        let mut server = StateServer::new(max_frame);
        let mut assembled = Vec::new();
        let mut replies = 0;
        loop {
            let message = server
                .reply(&recent, 8, assembled.len() as u64)
                .expect("the checkpoint is here");
            let frame = cbase_core::codec::encode(&message).unwrap();
            assert!(frame.len() <= max_frame, "{} > {max_frame}", frame.len());
            let ReplicaMessage::StateReply {
                offset,
                total,
                chunk,
                ..
            } = message
            else {
                panic!("a state reply");
            };
            assert_eq!(offset, assembled.len() as u64);
            assembled.extend_from_slice(&chunk);
            replies += 1;
            if assembled.len() as u64 == total {
                break;
            }
        }
        assert!(replies > 4, "the state spans several chunks");
        let state: CheckpointState = cbase_core::codec::decode(&assembled).unwrap();
        assert_eq!(state.digest(), recent.get(8).unwrap().0);
    }

    #[test]
    fn unknown_checkpoints_and_offsets_past_the_end_get_nothing() {
        let recent = store(8, 3);
        let mut server = StateServer::new(1 << 20);
        assert!(server.reply(&recent, 16, 0).is_none());
        assert!(server.reply(&recent, 8, 1 << 40).is_none());
        assert!(server.reply(&recent, 8, u64::MAX).is_none());
        assert!(server.reply(&recent, 8, 0).is_some());
    }

    #[test]
    fn tiny_frames_still_carry_a_byte() {
        assert_eq!(chunk_len(10), 1);
        assert_eq!(chunk_len(16 << 20), STATE_CHUNK);
    }
}
